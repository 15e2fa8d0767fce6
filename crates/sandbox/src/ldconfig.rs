//! Regenerating a root file system's dynamic-linker cache (`/etc/ld.so.cache`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::bootstrap::find_tool;
use crate::error::SandboxError;

/// How long ldconfig may take before it is killed.
const LDCONFIG_TIMEOUT: Duration = Duration::from_secs(60);

/// Rebuilds `root/etc/ld.so.cache` from the libraries and `/etc/ld.so.conf` under `root`, with
/// the host's `ldconfig -X -r root`: ldconfig chroots into `root` (so links inside resolve
/// there), reads library headers and writes only the cache file; `-X` leaves library symlinks
/// alone. No program from `root` runs. Returns `false`, doing nothing, when `root` has no
/// `/etc/ld.so.conf` (not a glibc system).
pub async fn regenerate_ld_cache(root: &Path) -> Result<bool, SandboxError> {
    match std::fs::symlink_metadata(root.join("etc/ld.so.conf")) {
        Ok(md) if md.is_file() => {}
        _ => return Ok(false),
    }
    let tool = find_tool("ldconfig").ok_or_else(|| SandboxError::BinaryMissing {
        command: "ldconfig".into(),
        path: "ldconfig".into(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let display = format!("{} -X -r {}", tool.display(), root.display());
    let child = Command::new(&tool)
        .arg("-X")
        .arg("-r")
        .arg(root)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SandboxError::Spawn {
            command: display.clone(),
            source,
        })?;
    let out = tokio::time::timeout(LDCONFIG_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| SandboxError::CommandFailed {
            command: display.clone(),
            status: format!("timed out after {} s", LDCONFIG_TIMEOUT.as_secs()),
            output: String::new(),
        })?
        .map_err(|source| SandboxError::Wait {
            command: display.clone(),
            source,
        })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(SandboxError::CommandFailed {
            command: display,
            status: out.status.to_string(),
            output: text.chars().take(2000).collect(),
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tree_without_ld_so_conf_is_left_alone() {
        let dir = tempfile::tempdir().expect("test");
        assert!(!regenerate_ld_cache(dir.path()).await.expect("test"));
        assert!(!dir.path().join("etc/ld.so.cache").exists());
    }

    #[tokio::test]
    async fn root_the_cache_lists_libraries_of_the_tree() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: ldconfig -r needs root to chroot");
            return;
        }
        let dir = tempfile::tempdir().expect("test");
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).expect("test");
        std::fs::create_dir_all(root.join("opt/lib")).expect("test");
        std::fs::write(root.join("etc/ld.so.conf"), "/opt/lib\n").expect("test");
        // A real shared library copied from the host into a directory only this tree has.
        let host_lib = [
            "/lib/x86_64-linux-gnu/libz.so.1",
            "/usr/lib/x86_64-linux-gnu/libz.so.1",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists());
        let Some(host_lib) = host_lib else {
            eprintln!("skipped: no libz.so.1 on the host to copy");
            return;
        };
        std::fs::copy(host_lib, root.join("opt/lib/libz.so.1")).expect("test");
        assert!(regenerate_ld_cache(root).await.expect("test"));
        let cache = std::fs::read(root.join("etc/ld.so.cache")).expect("test");
        let needle = b"/opt/lib/libz.so.1";
        assert!(
            cache.windows(needle.len()).any(|w| w == needle),
            "the cache points at the tree's library directory"
        );
    }
}
