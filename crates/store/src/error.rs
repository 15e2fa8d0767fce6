use std::io;
use std::path::PathBuf;

use strata_types::{Digest, ErrorKind};

/// Everything that can go wrong in the store, named for the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation inside the store failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the store was doing, e.g. "write blob".
        action: &'static str,
        /// The path it was working on.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The image archive given to import could not be opened.
    #[error("open archive {}: {source}", path.display())]
    OpenArchive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No blob with that digest is stored.
    #[error("blob {digest} not found")]
    BlobNotFound { digest: Digest },
    /// No layer with that digest is stored.
    #[error("layer {digest} not found")]
    LayerNotFound { digest: Digest },
    /// A staged directory cannot become a layer.
    #[error("cannot commit {} as a layer: {reason}", path.display())]
    CommitLayer { path: PathBuf, reason: String },
    /// An archive entry is hostile or malformed (escapes the destination, goes through a symlink,
    /// links to something outside, names an impossible whiteout...).
    #[error("archive entry {entry:?} rejected: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    /// An archive exceeds one of the extraction limits.
    #[error("archive entry {entry:?}: {limit} limit of {max} exceeded")]
    LimitExceeded {
        entry: String,
        limit: &'static str,
        max: u64,
    },
    /// Writing an archive entry to disk failed.
    #[error("extract archive entry {entry:?}: {source}")]
    ExtractEntry {
        entry: String,
        #[source]
        source: io::Error,
    },
    /// The archive stream itself could not be read (truncated, corrupt, not a tar).
    #[error("read archive: {source}")]
    ReadArchive {
        #[source]
        source: io::Error,
    },
    /// The stream uses a compression Strata does not read.
    #[error("{format}-compressed archives are not supported: decompress it first or use gzip or an uncompressed tar")]
    UnsupportedCompression { format: &'static str },
    /// Content does not hash to the digest it was named or described by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    /// An image archive is malformed: missing or invalid index, manifest, config or blob.
    #[error("invalid image archive {}: {reason}", archive.display())]
    InvalidImage { archive: PathBuf, reason: String },
    /// Something is still mounted inside a directory the store was asked to remove.
    #[error("cannot remove {}: {} is still mounted", path.display(), mount.display())]
    StillMounted { path: PathBuf, mount: PathBuf },
    /// No function code with that digest is stored.
    #[error("function code {digest} not found")]
    CodeNotFound { digest: Digest },
    /// An uploaded function code package is in none of the accepted formats.
    #[error("{} is not a function code package: {reason}; upload a directory, a .zip, a .tar or a .tar.gz", path.display())]
    UnsupportedCodeArchive { path: PathBuf, reason: String },
    /// An overlay upper dir uses an overlayfs feature that cannot be turned into a layer.
    #[error("cannot normalize overlay upper entry {}: {reason}", path.display())]
    UnsupportedOverlay { path: PathBuf, reason: String },
}

impl StoreError {
    /// The error kind this maps to at Strata's boundaries.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Io { .. } | StoreError::ExtractEntry { .. } => ErrorKind::Internal,
            StoreError::OpenArchive { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::InvalidArgument,
            },
            StoreError::BlobNotFound { .. }
            | StoreError::LayerNotFound { .. }
            | StoreError::CodeNotFound { .. } => ErrorKind::NotFound,
            StoreError::CommitLayer { .. } => ErrorKind::FailedPrecondition,
            StoreError::UnsafeEntry { .. }
            | StoreError::ReadArchive { .. }
            | StoreError::UnsupportedCompression { .. }
            | StoreError::DigestMismatch { .. }
            | StoreError::InvalidImage { .. }
            | StoreError::UnsupportedCodeArchive { .. } => ErrorKind::InvalidArgument,
            StoreError::LimitExceeded { .. } => ErrorKind::TooLarge,
            StoreError::UnsupportedOverlay { .. } | StoreError::StillMounted { .. } => {
                ErrorKind::FailedPrecondition
            }
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// `map_err` helper: `.map_err(io_err("write blob", &path))`.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::io(action, path, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_failure() {
        let d = Digest::from_bytes(&[1; 32]);
        assert_eq!(
            StoreError::BlobNotFound { digest: d.clone() }.kind(),
            ErrorKind::NotFound
        );
        let mismatch = StoreError::DigestMismatch {
            what: "layer 1".into(),
            expected: d.clone(),
            actual: Digest::from_bytes(&[2; 32]),
        };
        assert_eq!(mismatch.kind(), ErrorKind::InvalidArgument);
        assert!(mismatch.to_string().contains("layer 1"));
        let limit = StoreError::LimitExceeded {
            entry: "big".into(),
            limit: "file size",
            max: 1,
        };
        assert_eq!(limit.kind(), ErrorKind::TooLarge);
        let io = StoreError::io("write blob", "/x", io::Error::other("disk"));
        assert_eq!(io.kind(), ErrorKind::Internal);
        assert_eq!(io.to_string(), "write blob /x: disk");
    }
}
