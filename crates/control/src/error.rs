use strata_types::ErrorKind;

/// Errors of Strata's use cases.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is invalid; the message says why and what would be right.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist.
    #[error("{what} {name:?} not found")]
    NotFound {
        /// `image`, `runtime`...
        what: &'static str,
        /// Its name or reference.
        name: String,
    },
    /// The thing already exists.
    #[error("{what} {name:?} already exists")]
    AlreadyExists {
        /// `image`, `runtime`...
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The runtime could not load the function (import error, missing handler...).
    #[error("{}: {}", .error.error_type, .error.error_message)]
    InitFailed {
        /// The runtime's report, in the Lambda error shape.
        error: strata_types::api::InvokeError,
    },
    /// The thing is still used.
    #[error("{what} {name:?} is in use by {users}")]
    InUse {
        /// `runtime`, `volume`...
        what: &'static str,
        /// Its name.
        name: String,
        /// Who uses it.
        users: String,
    },
    /// The request conflicts with what exists (e.g. packages that put different content at one
    /// path); the message names what conflicts.
    #[error("{0}")]
    Conflict(String),
    /// A build step exited non-zero.
    #[error("line {line}: {instruction} failed with exit code {exit_code}{}", tail_text(.tail))]
    StepFailed {
        /// Dockerfile line.
        line: usize,
        /// The instruction.
        instruction: String,
        /// Its exit code.
        exit_code: i32,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// A build step ran past its time limit.
    #[error("line {line}: {instruction} timed out after {seconds} s")]
    StepTimedOut {
        /// Dockerfile line.
        line: usize,
        /// The instruction.
        instruction: String,
        /// The limit.
        seconds: u64,
    },
    /// A COPY or ADD failed.
    #[error("line {line}: {message}")]
    Copy {
        /// Dockerfile line.
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// An unexpected failure inside Strata.
    #[error("internal error: {0}")]
    Internal(String),
    /// A file-system operation failed.
    #[error("cannot {op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The Dockerfile is invalid.
    #[error(transparent)]
    Dockerfile(#[from] strata_dockerfile::DockerfileError),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] strata_meta::MetaError),
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    /// Running a container or mounting failed.
    #[error(transparent)]
    Sandbox(#[from] strata_sandbox::SandboxError),
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last output:\n{}", tail.join("\n"))
    }
}

impl ControlError {
    /// An I/O error with what was being done.
    pub fn io(op: impl Into<String>, source: std::io::Error) -> ControlError {
        ControlError::Io {
            op: op.into(),
            source,
        }
    }

    /// The error's kind, for mapping to API statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ControlError::Invalid(_)
            | ControlError::StepFailed { .. }
            | ControlError::StepTimedOut { .. }
            | ControlError::Copy { .. } => ErrorKind::InvalidArgument,
            ControlError::NotFound { .. } => ErrorKind::NotFound,
            ControlError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            ControlError::InUse { .. } => ErrorKind::FailedPrecondition,
            ControlError::Conflict(_) => ErrorKind::Conflict,
            ControlError::InitFailed { .. } => ErrorKind::InvalidArgument,
            ControlError::Io { .. } | ControlError::Internal(_) => ErrorKind::Internal,
            ControlError::Dockerfile(e) => e.kind(),
            ControlError::Meta(e) => e.kind(),
            ControlError::Store(e) => e.kind(),
            ControlError::Sandbox(e) => e.kind(),
        }
    }
}
