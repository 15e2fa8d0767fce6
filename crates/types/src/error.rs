use serde::{Deserialize, Serialize};

/// The small set of error kinds every Strata boundary maps its errors to.
///
/// Each kind maps to exactly one HTTP status in the API crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The named thing does not exist.
    NotFound,
    /// A thing with that name or identity already exists.
    AlreadyExists,
    /// The request itself is wrong: bad syntax, bad value, unsupported feature.
    InvalidArgument,
    /// The request is well formed but the system is not in a state that allows it.
    FailedPrecondition,
    /// Concurrent or conflicting changes.
    Conflict,
    /// The request is too large.
    TooLarge,
    /// The caller is not authenticated.
    Unauthenticated,
    /// A dependency (runc, the mirror, the disk) is not available right now.
    Unavailable,
    /// A bug or an unexpected failure inside Strata.
    Internal,
}

impl ErrorKind {
    /// The snake_case name used in JSON errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
