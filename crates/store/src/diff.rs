//! From a captured overlay upper dir to a canonical, composable layer; lookups through a stack.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{io_err, StoreError};
use crate::fsutil::{self, OPAQUE_XATTR};

const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const METACOPY_XATTR: &[u8] = b"trusted.overlay.metacopy";
const REDIRECT_XATTR: &[u8] = b"trusted.overlay.redirect";

/// Turns an overlay upper dir captured after a build step into a canonical layer, in place:
///
/// - drops the `trusted.overlay.opaque` marker on every directory that did not exist as a
///   directory in the lower stack (a dir the step created), keeps it where the dir already existed
///   (a real replacement);
/// - removes overlay-internal xattrs other than opaque (`trusted.overlay.origin`, `.impure`, ...);
///   a `.metacopy` or `.redirect` xattr (overlay mounted with `metacopy=on` or `redirect_dir=on`)
///   cannot be represented in a layer and is an error;
/// - removes paths in `exclude` (absolute in-image paths like `/etc/resolv.conf`) when present
///   in the upper, whatever their type (never following symlinks on the way);
/// - drops whiteouts that hide nothing in the lower stack;
/// - prunes empty directories that only exist in the upper because overlay copied them up: no
///   opaque marker, no xattrs, and the lower stack has a directory there with the same mode and
///   owner (only the mtime would differ).
///
/// Returns whether the resulting upper is empty: an empty diff makes no layer.
pub fn normalize_upper(
    upper: &Path,
    lowers_top_first: &[PathBuf],
    exclude: &[&str],
) -> Result<bool, StoreError> {
    for path in exclude {
        remove_excluded(upper, path)?;
    }
    // The upper's root is never part of a layer's identity; overlay may still mark it.
    for name in fsutil::list_xattrs(upper).map_err(io_err("list xattrs", upper))? {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            fsutil::remove_xattr(upper, &name).map_err(io_err("remove xattr", upper))?;
        }
    }
    // Children before parents, so a directory emptied by exclusions or pruning can be pruned.
    let walk = walkdir::WalkDir::new(upper)
        .follow_links(false)
        .min_depth(1)
        .contents_first(true);
    for item in walk {
        let entry = item.map_err(|e| {
            let path = e.path().unwrap_or(upper).to_path_buf();
            StoreError::io("walk upper dir", path, io::Error::other(e.to_string()))
        })?;
        let path = entry.path();
        let rel = path
            .strip_prefix(upper)
            .map_err(|_| StoreError::io("walk upper dir", path, io::Error::other("outside")))?;
        let in_image = format!("/{}", rel.to_string_lossy());
        let is_dir = entry.file_type().is_dir();
        let mut names = fsutil::list_xattrs(path).map_err(io_err("list xattrs", path))?;
        let mut remaining = names.len();
        for name in names.drain(..) {
            if !name.starts_with(OVERLAY_XATTR_PREFIX) {
                continue;
            }
            if name == METACOPY_XATTR || name == REDIRECT_XATTR {
                return Err(StoreError::UnsupportedOverlay {
                    path: path.to_path_buf(),
                    reason: format!(
                        "{} is set: mount build overlays without metacopy and redirect_dir",
                        String::from_utf8_lossy(&name)
                    ),
                });
            }
            let keep = name == OPAQUE_XATTR.as_bytes()
                && is_dir
                && lower_dir(lowers_top_first, &in_image).is_some();
            if !keep {
                fsutil::remove_xattr(path, &name).map_err(io_err("remove xattr", path))?;
                remaining -= 1;
            }
        }
        if is_dir && remaining == 0 {
            prune_if_copied_up(path, &in_image, lowers_top_first)?;
        } else if entry.file_type().is_char_device()
            && lookup(lowers_top_first, &in_image).is_none()
        {
            // A whiteout that hides nothing below (the step created and deleted the path) would
            // only ever hide a sibling package's file in a composition.
            let md = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
            if fsutil::is_whiteout(&md) {
                fs::remove_file(path).map_err(io_err("remove", path))?;
            }
        }
    }
    let mut entries = fs::read_dir(upper).map_err(io_err("read dir", upper))?;
    Ok(entries.next().is_none())
}

/// Removes `path` from the upper if it is there, without following symlinks on the way.
fn remove_excluded(upper: &Path, path: &str) -> Result<(), StoreError> {
    let Some(comps) = fsutil::split_image_path(path) else {
        return Ok(());
    };
    let Some((last, parents)) = comps.split_last() else {
        return Ok(()); // "/" itself is never excluded
    };
    let mut host = upper.to_path_buf();
    for c in parents {
        host.push(c);
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {}
            _ => return Ok(()), // absent, or not reachable without following a symlink
        }
    }
    host.push(last);
    match fs::symlink_metadata(&host) {
        Ok(md) if md.is_dir() => fsutil::remove_tree(&host).map_err(io_err("remove", &host)),
        Ok(_) => fs::remove_file(&host).map_err(io_err("remove", &host)),
        Err(_) => Ok(()),
    }
}

/// The lower stack's directory at `in_image`, if it has one.
fn lower_dir(lowers_top_first: &[PathBuf], in_image: &str) -> Option<fs::Metadata> {
    let host = lookup(lowers_top_first, in_image)?;
    fs::symlink_metadata(host).ok().filter(|md| md.is_dir())
}

fn prune_if_copied_up(
    path: &Path,
    in_image: &str,
    lowers_top_first: &[PathBuf],
) -> Result<(), StoreError> {
    let mut children = fs::read_dir(path).map_err(io_err("read dir", path))?;
    if children.next().is_some() {
        return Ok(());
    }
    let Some(lower) = lower_dir(lowers_top_first, in_image) else {
        return Ok(());
    };
    let md = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    let same = md.mode() == lower.mode() && md.uid() == lower.uid() && md.gid() == lower.gid();
    if same {
        fs::remove_dir(path).map_err(io_err("remove", path))?;
    }
    Ok(())
}

/// Looks up an in-image path in a stack of layer dirs (top first), honouring whiteouts (char 0:0)
/// and opaque dirs on the way: returns the host path of the visible entry, or `None` if absent or
/// whited out. Symlinks are never followed: a path through a symlink is not found.
pub fn lookup(lowers_top_first: &[PathBuf], path: &str) -> Option<PathBuf> {
    let comps = fsutil::split_image_path(path)?;
    let top = lowers_top_first.first()?;
    if comps.is_empty() {
        return Some(top.clone());
    }
    'layers: for layer in lowers_top_first {
        let mut host = layer.clone();
        for (i, c) in comps.iter().enumerate() {
            host.push(c);
            let md = match fs::symlink_metadata(&host) {
                Ok(md) => md,
                // Not in this layer: look below, unless an ancestor here was opaque (checked
                // when we went through it).
                Err(_) => continue 'layers,
            };
            if fsutil::is_whiteout(&md) {
                return None;
            }
            if i + 1 == comps.len() {
                return Some(host);
            }
            if !md.is_dir() {
                // A file or symlink hides everything below that name.
                return None;
            }
            if fsutil::is_opaque(&host).unwrap_or(false) {
                // Lower layers are hidden below this dir: only this layer can have the rest.
                return lookup_within(&host, &comps[i + 1..]);
            }
        }
    }
    None
}

/// The rest of a lookup inside a single directory that hides everything below it.
fn lookup_within(dir: &Path, rest: &[&str]) -> Option<PathBuf> {
    let mut host = dir.to_path_buf();
    for (i, c) in rest.iter().enumerate() {
        host.push(c);
        let md = fs::symlink_metadata(&host).ok()?;
        if fsutil::is_whiteout(&md) {
            return None;
        }
        if i + 1 < rest.len() && !md.is_dir() {
            return None;
        }
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn whiteout(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .expect("mknod whiteout");
    }

    fn set_opaque(path: &Path) {
        rustix::fs::lsetxattr(path, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
            .expect("set opaque");
    }

    #[test]
    fn lookup_finds_topmost_and_refuses_symlinked_parents() {
        let t = tempfile::tempdir().expect("tempdir");
        let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
        fs::create_dir_all(top.join("etc")).expect("mkdir");
        fs::create_dir_all(bottom.join("etc")).expect("mkdir");
        fs::write(top.join("etc/a"), b"top").expect("write");
        fs::write(bottom.join("etc/a"), b"bottom").expect("write");
        fs::write(bottom.join("etc/b"), b"bottom").expect("write");
        symlink("/etc", bottom.join("link")).expect("symlink");
        let stack = vec![top.clone(), bottom.clone()];
        assert_eq!(lookup(&stack, "/etc/a"), Some(top.join("etc/a")));
        assert_eq!(lookup(&stack, "etc/b"), Some(bottom.join("etc/b")));
        assert_eq!(lookup(&stack, "/etc/c"), None);
        assert_eq!(lookup(&stack, "/link"), Some(bottom.join("link")));
        assert_eq!(
            lookup(&stack, "/link/passwd"),
            None,
            "never through a symlink"
        );
        assert_eq!(lookup(&stack, "/etc/../x"), None);
        assert_eq!(lookup(&stack, "/"), Some(top.clone()));
        assert_eq!(lookup(&[], "/etc"), None);
    }

    #[test]
    fn lookup_honours_whiteouts_and_opaque_dirs_root() {
        if !fsutil::is_root() {
            println!("skipped: whiteouts and trusted.* xattrs need root");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
        fs::create_dir_all(top.join("etc")).expect("mkdir");
        fs::create_dir_all(top.join("opt")).expect("mkdir");
        fs::create_dir_all(bottom.join("etc")).expect("mkdir");
        fs::create_dir_all(bottom.join("opt/pkg")).expect("mkdir");
        fs::create_dir_all(bottom.join("var/lib")).expect("mkdir");
        fs::write(bottom.join("etc/gone"), b"x").expect("write");
        fs::write(bottom.join("opt/pkg/f"), b"x").expect("write");
        fs::write(bottom.join("var/lib/f"), b"x").expect("write");
        whiteout(&top.join("etc/gone"));
        whiteout(&top.join("var"));
        set_opaque(&top.join("opt"));
        fs::write(top.join("opt/new"), b"x").expect("write");
        let stack = vec![top.clone(), bottom.clone()];
        assert_eq!(lookup(&stack, "/etc/gone"), None);
        assert_eq!(lookup(&stack, "/var/lib/f"), None, "whited-out ancestor");
        assert_eq!(lookup(&stack, "/opt/pkg/f"), None, "hidden by opaque dir");
        assert_eq!(lookup(&stack, "/opt/new"), Some(top.join("opt/new")));
        assert_eq!(
            lookup(std::slice::from_ref(&bottom), "/opt/pkg/f"),
            Some(bottom.join("opt/pkg/f"))
        );
    }

    #[test]
    fn normalize_upper_keeps_real_replacements_only_root() {
        if !fsutil::is_root() {
            println!("skipped: trusted.overlay.* xattrs need root");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let (upper, lower) = (t.path().join("upper"), t.path().join("lower"));
        fs::create_dir_all(lower.join("usr/lib/python3")).expect("mkdir");
        fs::create_dir_all(lower.join("etc")).expect("mkdir");
        fs::write(lower.join("etc/resolv.conf"), b"nameserver 1.1.1.1").expect("write");
        // Replaced dir (existed below), created dir, created file with origin xattr.
        fs::create_dir_all(upper.join("usr/lib/python3")).expect("mkdir");
        fs::create_dir_all(upper.join("usr/lib/newpkg")).expect("mkdir");
        fs::write(upper.join("usr/lib/newpkg/mod.py"), b"x").expect("write");
        set_opaque(&upper.join("usr/lib/python3"));
        set_opaque(&upper.join("usr/lib/newpkg"));
        rustix::fs::lsetxattr(
            upper.join("usr/lib/newpkg/mod.py"),
            "trusted.overlay.origin",
            b"\x00\xfb",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("origin");
        fs::create_dir_all(upper.join("etc")).expect("mkdir");
        fs::write(upper.join("etc/resolv.conf"), b"nameserver 10.0.0.1").expect("write");
        fs::create_dir_all(upper.join("etc/hosts")).expect("mkdir"); // excluded whatever its type

        let empty = normalize_upper(
            &upper,
            std::slice::from_ref(&lower),
            &["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"],
        )
        .expect("normalize");
        assert!(!empty);
        assert!(fsutil::is_opaque(&upper.join("usr/lib/python3")).expect("xattr"));
        assert!(!fsutil::is_opaque(&upper.join("usr/lib/newpkg")).expect("xattr"));
        assert_eq!(
            fsutil::get_xattr(
                &upper.join("usr/lib/newpkg/mod.py"),
                b"trusted.overlay.origin"
            )
            .expect("xattr"),
            None
        );
        assert!(!upper.join("etc/resolv.conf").exists());
        assert!(!upper.join("etc/hosts").exists());
        // /etc only held excluded files and exists below with the same mode: pruned.
        assert!(!upper.join("etc").exists());
        assert!(upper.join("usr/lib/newpkg/mod.py").exists());
    }

    #[test]
    fn normalize_upper_drops_whiteouts_that_hide_nothing_root() {
        if !fsutil::is_root() {
            println!("skipped: whiteouts (mknod) need root");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let (upper, lower) = (t.path().join("upper"), t.path().join("lower"));
        fs::create_dir_all(lower.join("etc")).expect("mkdir");
        fs::write(lower.join("etc/old"), b"x").expect("write");
        fs::create_dir_all(upper.join("etc")).expect("mkdir");
        whiteout(&upper.join("etc/old"));
        whiteout(&upper.join("etc/never-existed"));
        let empty = normalize_upper(&upper, std::slice::from_ref(&lower), &[]).expect("normalize");
        assert!(!empty);
        let md = fs::symlink_metadata(upper.join("etc/old")).expect("kept");
        assert!(fsutil::is_whiteout(&md), "a real deletion stays");
        assert!(fs::symlink_metadata(upper.join("etc/never-existed")).is_err());
    }

    #[test]
    fn normalize_upper_detects_empty_diffs() {
        let t = tempfile::tempdir().expect("tempdir");
        let (upper, lower) = (t.path().join("upper"), t.path().join("lower"));
        fs::create_dir_all(lower.join("etc")).expect("mkdir");
        fs::create_dir_all(upper.join("etc")).expect("mkdir");
        fs::write(upper.join("etc/hostname"), b"build").expect("write");
        assert!(
            normalize_upper(&upper, std::slice::from_ref(&lower), &["/etc/hostname"])
                .expect("normalize")
        );

        // A directory the step created stays, even empty: it is content.
        fs::create_dir_all(upper.join("data")).expect("mkdir");
        assert!(!normalize_upper(&upper, std::slice::from_ref(&lower), &[]).expect("normalize"));
        assert!(upper.join("data").is_dir());
    }

    #[test]
    fn exclude_never_follows_symlinks() {
        let t = tempfile::tempdir().expect("tempdir");
        let (upper, outside) = (t.path().join("upper"), t.path().join("outside"));
        fs::create_dir_all(&upper).expect("mkdir");
        fs::create_dir_all(&outside).expect("mkdir");
        fs::write(outside.join("resolv.conf"), b"host file").expect("write");
        symlink(&outside, upper.join("etc")).expect("symlink");
        let empty = normalize_upper(&upper, &[], &["/etc/resolv.conf"]).expect("normalize");
        assert!(!empty);
        assert!(
            outside.join("resolv.conf").exists(),
            "must not delete through the symlink"
        );
    }
}
