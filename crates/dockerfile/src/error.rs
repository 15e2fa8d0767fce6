use strata_types::ErrorKind;

use crate::words::ExpandError;

/// Why a Dockerfile could not be parsed or planned. Every variant but [`NoFrom`] names the
/// 1-based line of the instruction at fault.
///
/// [`NoFrom`]: DockerfileError::NoFrom
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    /// The keyword is not a Dockerfile instruction.
    #[error("line {line}: unknown instruction \"{keyword}\"")]
    UnknownInstruction { line: usize, keyword: String },

    /// A real Dockerfile feature that Strata builds do not support, e.g. `ONBUILD`,
    /// `RUN --mount`, a heredoc or `ADD` from a URL.
    #[error("line {line}: {feature} is not supported{}", hint_suffix(.hint))]
    Unsupported {
        line: usize,
        feature: String,
        hint: Option<String>,
    },

    /// The instruction's arguments have the wrong shape.
    #[error("line {line}: {keyword} {message}")]
    Malformed {
        line: usize,
        keyword: String,
        message: String,
    },

    /// An instruction other than `ARG` before the first `FROM`.
    #[error("line {line}: {keyword} comes before the first FROM; only ARG may")]
    BeforeFrom { line: usize, keyword: String },

    /// The file has no `FROM` at all.
    #[error("the Dockerfile has no FROM instruction; start a stage with FROM <image>")]
    NoFrom,

    /// A word could not be expanded, e.g. an unterminated `${`.
    #[error("line {line}: {keyword}: cannot expand \"{word}\": {source}")]
    Expansion {
        line: usize,
        keyword: String,
        word: String,
        source: ExpandError,
    },

    /// `FROM` names neither a build stage nor an image or runtime the resolver knows.
    #[error("line {line}: FROM \"{name}\": no image, runtime or build stage named \"{name}\"")]
    UnknownBase { line: usize, name: String },

    /// `COPY --from` names neither a build stage nor an image or runtime the resolver knows.
    #[error(
        "line {line}: {keyword} --from=\"{name}\": no image, runtime or build stage named \"{name}\""
    )]
    UnknownCopySource {
        line: usize,
        keyword: String,
        name: String,
    },

    /// A stage reference (`FROM`, `COPY --from`) names the stage itself, a later stage or a stage
    /// index that does not exist.
    #[error("line {line}: {reference} {problem}")]
    StageReference {
        line: usize,
        reference: String,
        problem: String,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_deref()
        .map(|h| format!(" ({h})"))
        .unwrap_or_default()
}

impl DockerfileError {
    /// The 1-based line of the instruction at fault, if the error is about one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            DockerfileError::UnknownInstruction { line, .. }
            | DockerfileError::Unsupported { line, .. }
            | DockerfileError::Malformed { line, .. }
            | DockerfileError::BeforeFrom { line, .. }
            | DockerfileError::Expansion { line, .. }
            | DockerfileError::UnknownBase { line, .. }
            | DockerfileError::UnknownCopySource { line, .. }
            | DockerfileError::StageReference { line, .. } => Some(*line),
            DockerfileError::NoFrom => None,
        }
    }

    /// The error kind: `NotFound` for a base or `COPY --from` source nothing resolves,
    /// `InvalidArgument` for everything else (the Dockerfile itself is wrong).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DockerfileError::UnknownBase { .. } | DockerfileError::UnknownCopySource { .. } => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::InvalidArgument,
        }
    }

    pub(crate) fn malformed(line: usize, keyword: &str, message: impl Into<String>) -> Self {
        DockerfileError::Malformed {
            line,
            keyword: keyword.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(line: usize, feature: impl Into<String>, hint: Option<&str>) -> Self {
        DockerfileError::Unsupported {
            line,
            feature: feature.into(),
            hint: hint.map(str::to_string),
        }
    }
}
