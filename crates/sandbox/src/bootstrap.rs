//! Bootstrapping a Debian root filesystem into a tarball.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::error::SandboxError;
use crate::mount::{mounts_under, unmount};
use crate::output::{pump, Tail};
use crate::Stream;

/// How many output lines a failed bootstrap reports.
const ERROR_TAIL_LINES: usize = 20;

/// Where tools are looked for besides `PATH` (root's sbin dirs are not always on it).
const TOOL_DIRS: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Bootstraps a minimal Debian `suite` from `mirror` into the tarball `out`, with the extra
/// packages `include`.
///
/// Prefers `mmdebstrap --variant=minbase --mode=root --format=tar`; without mmdebstrap, runs
/// `debootstrap --variant=minbase` into a scratch directory next to `out` and tars it. Progress
/// lines go to `on_output`. The tarball appears at `out` only when complete; a failure reports
/// the last 20 output lines and leaves nothing behind.
pub async fn debootstrap_tar(
    suite: &str,
    include: &[String],
    mirror: &str,
    out: &Path,
    on_output: &mut (dyn FnMut(Stream, String) + Send),
) -> Result<(), SandboxError> {
    validate_bootstrap_args(suite, include, mirror)?;
    let partial = sibling(out, ".partial");
    let mut tail = Tail::new(ERROR_TAIL_LINES);
    let mut tee = |s: Stream, line: String| {
        tail.push(&line);
        on_output(s, line);
    };
    let fail = |status: String, tail: &Tail| SandboxError::Bootstrap {
        suite: suite.to_string(),
        mirror: mirror.to_string(),
        out: out.to_path_buf(),
        status,
        output: tail.joined(),
    };

    let result = if let Some(mmdebstrap) = find_tool("mmdebstrap") {
        let mut cmd = Command::new(&mmdebstrap);
        cmd.args(["--variant=minbase", "--mode=root", "--format=tar"]);
        if !include.is_empty() {
            cmd.arg(format!("--include={}", include.join(",")));
        }
        cmd.arg(suite).arg(&partial).arg(mirror);
        run_tool(cmd, "mmdebstrap", &mmdebstrap, &mut tee).await
    } else if let Some(debootstrap) = find_tool("debootstrap") {
        debootstrap_then_tar(
            &debootstrap,
            suite,
            include,
            mirror,
            out,
            &partial,
            &mut tee,
        )
        .await
    } else {
        Err(SandboxError::BinaryMissing {
            command: "mmdebstrap or debootstrap".to_string(),
            path: PathBuf::from("mmdebstrap"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    };
    let result = match result {
        Ok(Some(status)) => Err(fail(status, &tail)),
        Ok(None) => std::fs::rename(&partial, out)
            .map_err(|e| fail(format!("renaming the tarball: {e}"), &tail)),
        Err(e) => Err(e),
    };
    if result.is_err() {
        remove_if_exists(&partial);
    }
    result
}

/// Runs `debootstrap` into `<out>.rootfs`, tars it to `partial`, and removes the directory
/// (after unmounting anything debootstrap left mounted in it).
async fn debootstrap_then_tar(
    debootstrap: &Path,
    suite: &str,
    include: &[String],
    mirror: &str,
    out: &Path,
    partial: &Path,
    tee: &mut (dyn FnMut(Stream, String) + Send),
) -> Result<Option<String>, SandboxError> {
    let scratch = sibling(out, ".rootfs");
    remove_tree(&scratch)?;
    let mut cmd = Command::new(debootstrap);
    cmd.arg("--variant=minbase");
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    cmd.arg(suite).arg(&scratch).arg(mirror);
    let mut result = run_tool(cmd, "debootstrap", debootstrap, tee).await;
    if let Ok(None) = result {
        let tar = find_tool("tar").unwrap_or_else(|| PathBuf::from("tar"));
        let mut cmd = Command::new(&tar);
        cmd.arg("--numeric-owner")
            .arg("-C")
            .arg(&scratch)
            .arg("-cf")
            .arg(partial)
            .arg(".");
        result = run_tool(cmd, "tar", &tar, tee).await;
    }
    let cleaned = remove_tree(&scratch);
    let status = result?;
    cleaned?;
    Ok(status)
}

/// Runs a tool with output streamed; `Ok(None)` on success, `Ok(Some(status))` on failure.
async fn run_tool(
    mut cmd: Command,
    name: &str,
    path: &Path,
    tee: &mut (dyn FnMut(Stream, String) + Send),
) -> Result<Option<String>, SandboxError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            SandboxError::BinaryMissing {
                command: name.to_string(),
                path: path.to_path_buf(),
                source: e,
            }
        }
        _ => SandboxError::Spawn {
            command: name.to_string(),
            source: e,
        },
    })?;
    tracing::info!(command = name, "bootstrap tool started");
    let status = pump(&mut child, name, tee).await?;
    Ok(if status.success() {
        None
    } else {
        Some(format!("{name}: {status}"))
    })
}

fn validate_bootstrap_args(
    suite: &str,
    include: &[String],
    mirror: &str,
) -> Result<(), SandboxError> {
    let invalid = |reason: String| SandboxError::InvalidSpec {
        id: suite.to_string(),
        reason,
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c))
    };
    if !word(suite) || suite.starts_with('-') {
        return Err(invalid(format!(
            "suite {suite:?} must be a Debian suite name such as bookworm"
        )));
    }
    if let Some(bad) = include.iter().find(|p| !word(p) || p.starts_with('-')) {
        return Err(invalid(format!(
            "package {bad:?} must be a Debian package name such as python3-minimal"
        )));
    }
    if mirror.is_empty() || mirror.starts_with('-') || mirror.contains(char::is_whitespace) {
        return Err(invalid(format!(
            "mirror {mirror:?} must be a URL such as http://deb.debian.org/debian"
        )));
    }
    Ok(())
}

pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(TOOL_DIRS.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    out.with_file_name(name)
}

fn remove_if_exists(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "removing a partial tarball failed");
        }
    }
}

/// Removes a scratch tree, unmounting whatever was left mounted in it first so the removal
/// never descends into a host filesystem.
fn remove_tree(dir: &Path) -> Result<(), SandboxError> {
    if !dir.exists() {
        return Ok(());
    }
    for m in mounts_under(dir)? {
        unmount(&m)?;
    }
    std::fs::remove_dir_all(dir).map_err(|source| SandboxError::RemoveDir {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_option_like_arguments() {
        assert!(validate_bootstrap_args(
            "bookworm",
            &["python3-minimal".into()],
            "http://deb.debian.org/debian"
        )
        .is_ok());
        assert!(validate_bootstrap_args("--help", &[], "http://m").is_err());
        assert!(validate_bootstrap_args("bookworm", &["a,b".into()], "http://m").is_err());
        assert!(validate_bootstrap_args("bookworm", &["--x".into()], "http://m").is_err());
        assert!(validate_bootstrap_args("bookworm", &[], "http://m x").is_err());
        assert!(validate_bootstrap_args("bookworm", &[], "").is_err());
    }

    #[test]
    fn sibling_names() {
        assert_eq!(
            sibling(Path::new("/x/base.tar"), ".partial"),
            PathBuf::from("/x/base.tar.partial")
        );
    }
}
