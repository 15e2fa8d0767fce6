//! The one error type of the sandbox boundary.

use std::io;
use std::path::PathBuf;

use strata_types::ErrorKind;

/// A failed sandbox operation, named for the operation, with its context.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A container plan the runtime would reject or misread.
    #[error("invalid container spec {id:?}: {reason}")]
    InvalidSpec {
        /// The container id.
        id: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A required program (runc, mmdebstrap, debootstrap, tar) is not installed.
    #[error("{command} is not available at {path:?}: {source}")]
    BinaryMissing {
        /// The program's role, e.g. `runc`.
        command: String,
        /// The path or name that was tried.
        path: PathBuf,
        /// The spawn error.
        source: io::Error,
    },
    /// Starting a program failed for another reason than it being missing.
    #[error("starting {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The spawn error.
        source: io::Error,
    },
    /// A program ran and exited unsuccessfully.
    #[error("{command} failed ({status}): {output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended, e.g. `exit status: 1`.
        status: String,
        /// The last lines of its output.
        output: String,
    },
    /// Reading a program's output or waiting for it failed.
    #[error("waiting for {command}: {source}")]
    Wait {
        /// The command line.
        command: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing the OCI bundle (config.json) failed.
    #[error("writing the bundle of container {id} at {path:?}: {source}")]
    WriteBundle {
        /// The container id.
        id: String,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The runtime could not start the container (bad rootfs, missing executable, cgroup error).
    #[error("starting container {id}: {message}")]
    StartContainer {
        /// The container id.
        id: String,
        /// The runtime's error messages.
        message: String,
    },
    /// `runc delete --force` failed.
    #[error("deleting container {id}: {message}")]
    DeleteContainer {
        /// The container id.
        id: String,
        /// The runtime's error output.
        message: String,
    },
    /// `runc list` failed or printed something unexpected.
    #[error("listing containers in {root:?}: {message}")]
    ListContainers {
        /// The runtime's state root.
        root: PathBuf,
        /// The runtime's error output.
        message: String,
    },
    /// `runc --version` printed something unexpected.
    #[error("reading the version of {binary:?}: {message}")]
    RuntimeVersion {
        /// The runtime binary.
        binary: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Mounting an overlay failed.
    #[error("mounting an overlay of {lowers} lower dirs at {target:?}: {source}{detail}")]
    MountOverlay {
        /// The mount point.
        target: PathBuf,
        /// How many lower dirs were stacked.
        lowers: usize,
        /// The kernel's own message, if it gave one (prefixed with `: `).
        detail: String,
        /// The system error.
        source: io::Error,
    },
    /// The overlay cannot be expressed with the kernel's mount options.
    #[error("cannot mount an overlay at {target:?}: {reason}")]
    OverlayUnsupported {
        /// The mount point.
        target: PathBuf,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A read-only bind mount failed.
    #[error("bind-mounting {from:?} read-only at {target:?}: {source}")]
    BindMount {
        /// The source directory.
        from: PathBuf,
        /// The mount point.
        target: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// Mounting a size-capped tmpfs failed.
    #[error("mounting a {size_bytes}-byte tmpfs at {target:?}: {source}")]
    Tmpfs {
        /// The mount point.
        target: PathBuf,
        /// Its size cap.
        size_bytes: u64,
        /// The system error.
        source: io::Error,
    },
    /// Making a directory a shared, propagating mount point failed.
    #[error("making {path:?} a shared mount point: {source}")]
    SharedMount {
        /// The directory.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// Binding a directory onto a (propagating) mount point failed.
    #[error("bind-mounting {from:?} at {target:?} (read-only: {readonly}): {source}")]
    BindInto {
        /// The source directory.
        from: PathBuf,
        /// The mount point.
        target: PathBuf,
        /// Whether a read-only mount was asked for.
        readonly: bool,
        /// The system error.
        source: io::Error,
    },
    /// Unmounting failed, even lazily.
    #[error("unmounting {target:?}: {source}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// Reading a host file (mount table, cgroup files) failed.
    #[error("reading {path:?}: {source}")]
    ReadHost {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading a file inside a root filesystem failed.
    #[error("reading {path} in root filesystem {rootfs:?}: {source}")]
    ReadRootfs {
        /// The root filesystem.
        rootfs: PathBuf,
        /// The path inside it.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A `USER` value that does not parse.
    #[error("invalid user {user:?}: {reason}")]
    InvalidUser {
        /// The value as given.
        user: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A user name that the root filesystem's `/etc/passwd` does not define.
    #[error("unknown user {user:?}: not in /etc/passwd of {rootfs:?}; use a defined name or a numeric uid")]
    UnknownUser {
        /// The user name.
        user: String,
        /// The root filesystem.
        rootfs: PathBuf,
    },
    /// A group name that the root filesystem's `/etc/group` does not define.
    #[error("unknown group {group:?}: not in /etc/group of {rootfs:?}; use a defined name or a numeric gid")]
    UnknownGroup {
        /// The group name.
        group: String,
        /// The root filesystem.
        rootfs: PathBuf,
    },
    /// Bootstrapping a Debian root filesystem failed.
    #[error("bootstrapping {suite} from {mirror} into {out:?} failed ({status}); last output:\n{output}")]
    Bootstrap {
        /// The Debian suite.
        suite: String,
        /// The mirror URL.
        mirror: String,
        /// The tarball being written.
        out: PathBuf,
        /// How the tool ended.
        status: String,
        /// Its last output lines.
        output: String,
    },
    /// Removing a scratch directory failed.
    #[error("removing {path:?}: {source}")]
    RemoveDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing a cgroup file (a limit) failed; a missing file means the container's cgroup
    /// does not exist.
    #[error("writing {value:?} to {path:?}: {source}")]
    WriteCgroup {
        /// The cgroup file (or the cgroup path, when no hierarchy carries the controller).
        path: PathBuf,
        /// The value written.
        value: String,
        /// The system error.
        source: io::Error,
    },
    /// Removing a leftover cgroup failed.
    #[error("removing cgroup {path:?}: {source}")]
    RemoveCgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// A git fetch request the policy refuses, or whose ref or directory does not exist.
    #[error("{reason}")]
    GitRejected {
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A git command failed.
    #[error("{command} failed ({status}): {output}")]
    GitFailed {
        /// The git subcommand, e.g. `git archive`.
        command: String,
        /// How it ended.
        status: String,
        /// Its last output lines.
        output: String,
    },
    /// Fetching from git took longer than allowed.
    #[error("fetching from git took longer than {seconds} s and was stopped")]
    GitTimeout {
        /// The limit.
        seconds: u64,
    },
    /// The fetched repository grew past the size limit.
    #[error("the git repository is larger than {limit_bytes} bytes; the fetch was stopped")]
    GitTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// Function networking cannot be set up as configured (bridge owned by someone else,
    /// overlapping subnet, bad names).
    #[error("function network: {reason}")]
    Network {
        /// What is wrong and what would be right.
        reason: String,
    },
}

impl SandboxError {
    /// The small kind this error maps to at the API boundary.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::InvalidSpec { .. }
            | SandboxError::InvalidUser { .. }
            | SandboxError::UnknownUser { .. }
            | SandboxError::UnknownGroup { .. }
            | SandboxError::GitRejected { .. } => ErrorKind::InvalidArgument,
            SandboxError::GitTimeout { .. } => ErrorKind::Unavailable,
            SandboxError::GitTooLarge { .. } => ErrorKind::TooLarge,
            SandboxError::StartContainer { message, .. }
                if message.contains(crate::runc::ID_IN_USE) =>
            {
                ErrorKind::AlreadyExists
            }
            // The program the plan names does not exist or cannot be executed.
            SandboxError::StartContainer { message, .. } if message.contains("exec:") => {
                ErrorKind::InvalidArgument
            }
            SandboxError::BinaryMissing { .. } => ErrorKind::Unavailable,
            SandboxError::OverlayUnsupported { .. } | SandboxError::Network { .. } => {
                ErrorKind::FailedPrecondition
            }
            SandboxError::WriteCgroup { source, .. }
                if source.kind() == io::ErrorKind::NotFound =>
            {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let missing = SandboxError::BinaryMissing {
            command: "runc".into(),
            path: "/usr/bin/runc".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(missing.kind(), ErrorKind::Unavailable);
        let unknown = SandboxError::UnknownUser {
            user: "app".into(),
            rootfs: "/r".into(),
        };
        assert_eq!(unknown.kind(), ErrorKind::InvalidArgument);
        assert!(unknown.to_string().contains("app"));
        let exec = SandboxError::StartContainer {
            id: "c".into(),
            message: "exec: \"/nope\": stat /nope: no such file or directory".into(),
        };
        assert_eq!(exec.kind(), ErrorKind::InvalidArgument);
        let cg = SandboxError::StartContainer {
            id: "c".into(),
            message: "cgroup busy".into(),
        };
        assert_eq!(cg.kind(), ErrorKind::Internal);
    }
}
