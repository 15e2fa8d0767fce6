//! Small filesystem helpers shared by the store's modules: xattrs without following symlinks,
//! directory fsync, unique names, best-effort tree removal, in-image path splitting.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

/// The xattr overlayfs uses to mark a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Names of all xattrs of `path` (never following a symlink), in the order the kernel lists them.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    loop {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            // The list grew between the two calls: ask again.
            Err(e) if e == rustix::io::Errno::RANGE => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The value of xattr `name` on `path` (never following a symlink), `None` when unset.
pub fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    loop {
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(n) => n,
            Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::NOTSUP => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; size];
        if size == 0 {
            return Ok(Some(buf));
        }
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e == rustix::io::Errno::RANGE => continue,
            Err(e) if e == rustix::io::Errno::NODATA => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes xattr `name` from `path` without following a symlink.
pub fn remove_xattr(path: &Path, name: &[u8]) -> io::Result<()> {
    match rustix::fs::lremovexattr(path, OsStr::from_bytes(name)) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NODATA => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` carries `trusted.overlay.opaque=y`.
pub fn is_opaque(path: &Path) -> io::Result<bool> {
    Ok(get_xattr(path, OPAQUE_XATTR.as_bytes())?.as_deref() == Some(b"y"))
}

/// Whether this (lstat) metadata is an overlay whiteout: a character device 0:0.
pub fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Flushes a directory's entries to disk.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

/// A name that no other call in any process is likely to produce: `<prefix>-<16 hex>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let out = h.finalize();
    format!("{prefix}-{}", hex::encode(&out[..8]))
}

/// Removes `path` and everything under it, never following symlinks. A missing path is fine.
/// Directories without write or search permission (possible when not root) are opened up first.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            // Open up directories we may not write or search into, then try again.
            for entry in walkdir::WalkDir::new(path)
                .follow_links(false)
                .into_iter()
                .flatten()
            {
                if entry.file_type().is_dir() {
                    let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
                }
            }
            fs::remove_dir_all(path).map_err(|_| first)
        }
    }
}

/// Mount points at or below `path`, from `/proc/self/mountinfo`. Removing a tree with a live
/// mount inside would delete the mounted content, so removals check this first.
pub fn mounts_under(path: &Path) -> io::Result<Vec<PathBuf>> {
    let Ok(base) = fs::canonicalize(path) else {
        return Ok(Vec::new()); // nothing there, nothing mounted there
    };
    let info = fs::read("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in info.split(|b| *b == b'\n') {
        // Fields: id parent major:minor root mount-point options ...
        let Some(field) = line.split(|b| *b == b' ').nth(4) else {
            continue;
        };
        let mount_point = PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(field)));
        if mount_point.starts_with(&base) {
            out.push(mount_point);
        }
    }
    Ok(out)
}

/// Decodes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (field[i + 1] - b'0') as u32 * 64
                + (field[i + 2] - b'0') as u32 * 8
                + (field[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// Whether the current process runs with effective uid 0.
#[cfg(test)]
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Splits an absolute or relative in-image path (`/etc/hosts`, `etc/hosts`) into components,
/// dropping empty and `.` components. `None` when a component is `..` or contains NUL: such
/// paths never name anything inside a layer.
pub fn split_image_path(path: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c if c.contains('\0') => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape_mountinfo(b"/a\\040b"), b"/a b");
        assert_eq!(unescape_mountinfo(b"/plain\\"), b"/plain\\");
        // The root filesystem is mounted at or above any path; `/proc` is below `/`.
        let under_root = mounts_under(Path::new("/")).expect("mountinfo");
        assert!(
            under_root.iter().any(|m| m == Path::new("/proc")),
            "{under_root:?}"
        );
        let t = tempfile::tempdir().expect("tempdir");
        assert!(mounts_under(t.path()).expect("mountinfo").is_empty());
    }

    #[test]
    fn unique_names_differ_and_keep_prefix() {
        let a = unique_name("x");
        let b = unique_name("x");
        assert_ne!(a, b);
        assert!(a.starts_with("x-") && a.len() == 2 + 16);
    }

    #[test]
    fn split_image_path_normalizes_and_refuses_dotdot() {
        assert_eq!(
            split_image_path("/etc//hosts/."),
            Some(vec!["etc", "hosts"])
        );
        assert_eq!(split_image_path("./a/b"), Some(vec!["a", "b"]));
        assert_eq!(split_image_path("/"), Some(vec![]));
        assert_eq!(split_image_path("/a/../b"), None);
    }

    #[test]
    fn remove_tree_removes_without_following_symlinks() {
        let t = tempfile::tempdir().expect("tempdir");
        let outside = t.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("keep"), b"x").expect("write");
        let victim = t.path().join("victim");
        fs::create_dir_all(victim.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(&outside, victim.join("sub/link")).expect("symlink");
        fs::set_permissions(victim.join("sub"), fs::Permissions::from_mode(0o500)).expect("chmod");
        remove_tree(&victim).expect("remove");
        assert!(!victim.exists());
        assert!(outside.join("keep").exists());
        remove_tree(&victim).expect("missing is fine");
    }
}
