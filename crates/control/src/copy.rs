//! COPY and ADD: choosing sources inside a source root, and writing them into an image root
//! without ever leaving it.
//!
//! Both roots may hold hostile symlinks (a build context is user data; an image root holds
//! whatever earlier RUN steps made). Every path is therefore resolved component by component
//! with symlinks interpreted *inside* the root (`..` and absolute targets are clamped to it), the
//! way a process chrooted there would see them. No container runs on the image root while a COPY
//! writes to it, so the resolution cannot race.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

const MAX_SYMLINK_HOPS: usize = 40;

/// Resolves an in-root path to a host path, following symlinks inside `root`. Missing trailing
/// components are kept as written. With `follow_last` false, a symlink in the last component is
/// not followed (the returned path is the link itself).
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut todo: VecDeque<OsString> = components(Path::new(path));
    let mut hops = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            stack.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&stack);
        candidate.push(&name);
        let is_last = todo.is_empty();
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !is_last) => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links in {path}"
                    )));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    stack.clear();
                }
                let mut next = components(&target);
                next.extend(todo);
                todo = next;
            }
            _ => stack.push(name),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&stack);
    Ok(out)
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Joins an in-image path and a child name.
fn child(path: &str, name: &OsStr) -> String {
    format!("{}/{}", path.trim_end_matches('/'), name.to_string_lossy())
}

/// Creates an in-root directory and its missing parents (mode 0755, owner root, or `owner` for
/// the directories it creates). Returns the host path.
pub fn mkdir_p_in_root(root: &Path, path: &str, owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
    let mut sofar = String::new();
    let mut host = root.to_path_buf();
    for name in components(Path::new(path)) {
        sofar = child(&sofar, &name);
        host = resolve_in_root(root, &sofar, true)?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{sofar} exists in the image and is not a directory"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&host)?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))?;
                if let Some((uid, gid)) = owner {
                    lchown(&host, Some(uid), Some(gid))?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(host)
}

/// How copied entries are owned and moded.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Owner of copied entries; when `None`, root, or the source's owner with
    /// `preserve_owner`.
    pub owner: Option<(u32, u32)>,
    /// Keep the source's owner when no owner is given (copies from a stage or image; build
    /// context files always become root's, as in Docker).
    pub preserve_owner: bool,
    /// Mode for copied entries instead of the source's.
    pub chmod: Option<u32>,
}

/// Copies the source entry `src` (never following a symlink at `src`) to the in-root path
/// `dest`. An existing directory at `dest` is merged into when `src` is a directory, and
/// replaced otherwise.
pub fn copy_entry(src: &Path, root: &Path, dest: &str, opts: &CopyOptions) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let target = resolve_in_root(root, dest, false)?;
    let existing = fs::symlink_metadata(&target).ok();
    if meta.is_dir() {
        match &existing {
            Some(e) if e.is_dir() => {}
            Some(_) => {
                fs::remove_file(&target)?;
                fs::create_dir(&target)?;
            }
            None => fs::create_dir(&target)?,
        }
        let mut names: Vec<OsString> = fs::read_dir(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            copy_entry(&src.join(&name), root, &child(dest, &name), opts)?;
        }
        // The directory itself may have been resolved through a symlink; re-resolve.
        let target = resolve_in_root(root, dest, true)?;
        finish(&target, &meta, opts, false)?;
        return Ok(());
    }
    if let Some(e) = existing {
        if e.is_dir() {
            fs::remove_dir_all(&target)?;
        } else {
            fs::remove_file(&target)?;
        }
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, &target)?;
        finish(&target, &meta, opts, true)
    } else if meta.is_file() {
        let mut input = fs::File::open(src)?;
        let mut output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)?;
        io::copy(&mut input, &mut output)?;
        drop(output);
        finish(&target, &meta, opts, false)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file, directory or symlink",
                src.display()
            ),
        ))
    }
}

fn finish(target: &Path, meta: &fs::Metadata, opts: &CopyOptions, symlink: bool) -> io::Result<()> {
    let (uid, gid) = match opts.owner {
        Some(o) => o,
        None if opts.preserve_owner => (meta.uid(), meta.gid()),
        None => (0, 0),
    };
    lchown(target, Some(uid), Some(gid))?;
    if symlink {
        return Ok(());
    }
    let mode = opts.chmod.unwrap_or(meta.mode() & 0o7777);
    fs::set_permissions(target, fs::Permissions::from_mode(mode))?;
    let f = fs::File::open(target)?;
    if let Ok(mtime) = meta.modified() {
        f.set_modified(mtime)?;
    }
    Ok(())
}

/// A source chosen for COPY: its display name and host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// As matched, relative to the source root.
    pub name: String,
    /// Host path (the entry itself; a symlink is not followed).
    pub path: PathBuf,
}

/// Why a COPY source could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The pattern climbs out of the root.
    #[error("COPY source {0:?} is outside the build context")]
    Outside(String),
    /// Nothing matched.
    #[error("COPY source {0:?} not found in the build context")]
    NotFound(String),
    /// An I/O failure.
    #[error("reading COPY source {0:?}: {1}")]
    Io(String, io::Error),
}

/// Expands COPY source patterns inside `root`. Plain paths resolve like paths inside the root;
/// patterns with `*`, `?` or `[` match entries whose every parent is a real directory (never a
/// symlink), so a glob cannot reach outside the root.
pub fn expand_sources(root: &Path, patterns: &[String]) -> Result<Vec<Source>, SourceError> {
    let mut out = Vec::new();
    for pattern in patterns {
        let clean = lexical_clean(pattern).ok_or_else(|| SourceError::Outside(pattern.clone()))?;
        if !clean.contains(['*', '?', '[']) {
            let path = resolve_in_root(root, &clean, true)
                .map_err(|e| SourceError::Io(pattern.clone(), e))?;
            if fs::symlink_metadata(&path).is_err() {
                return Err(SourceError::NotFound(pattern.clone()));
            }
            out.push(Source {
                name: if clean.is_empty() { ".".into() } else { clean },
                path,
            });
            continue;
        }
        let matcher = glob::Pattern::new(&clean).map_err(|e| {
            SourceError::Io(
                pattern.clone(),
                io::Error::new(io::ErrorKind::InvalidInput, e.msg.to_string()),
            )
        })?;
        let depth = clean.split('/').count();
        let mut found = Vec::new();
        walk_matches(root, "", depth, &matcher, &mut found)
            .map_err(|e| SourceError::Io(pattern.clone(), e))?;
        if found.is_empty() {
            return Err(SourceError::NotFound(pattern.clone()));
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(found);
    }
    Ok(out)
}

fn walk_matches(
    dir: &Path,
    rel: &str,
    depth: usize,
    m: &glob::Pattern,
    out: &mut Vec<Source>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_name = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let level = rel_name.split('/').count();
        let opts = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        if level == depth {
            if m.matches_with(&rel_name, opts) {
                out.push(Source {
                    name: rel_name,
                    path: entry.path(),
                });
            }
        } else if entry.file_type()?.is_dir() {
            walk_matches(&entry.path(), &rel_name, depth, m, out)?;
        }
    }
    Ok(())
}

/// Normalizes a relative source path lexically: drops `.` and leading `/`, applies `..`, and
/// returns `None` when `..` would climb above the root.
fn lexical_clean(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// A digest of the sources' names, types, modes and contents (the build-cache identity of a
/// COPY from the context).
pub fn hash_sources(sources: &[Source]) -> io::Result<String> {
    let mut h = Sha256::new();
    for s in sources {
        h.update(s.name.as_bytes());
        h.update([0]);
        hash_tree(&s.path, Path::new(""), &mut h)?;
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_tree(path: &Path, rel: &Path, h: &mut Sha256) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    h.update(rel.as_os_str().as_encoded_bytes());
    h.update(format!("\0{:o}\0", meta.mode()).as_bytes());
    if meta.file_type().is_symlink() {
        h.update(fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if meta.is_file() {
        let mut f = fs::File::open(path)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if meta.is_dir() {
        let mut names: Vec<OsString> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for n in names {
            hash_tree(&path.join(&n), &rel.join(&n), h)?;
        }
    }
    h.update([0xff]);
    Ok(())
}

/// Whether a file starts like a tar archive (plain or gzip), for ADD's unpacking.
pub fn looks_like_tar(path: &Path) -> bool {
    let mut buf = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let Ok(n) = read_full(&mut f, &mut buf) else {
        return false;
    };
    (n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b) || (n == 512 && &buf[257..262] == b"ustar")
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        fs::create_dir_all(&outside).expect("mkdir");
        symlink("usr/bin", root.join("bin")).expect("symlink");
        symlink("/", root.join("evil-abs")).expect("symlink");
        symlink("../../..", root.join("usr/evil-rel")).expect("symlink");
        (t, root, outside)
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let (_t, root, _) = tree();
        assert_eq!(
            resolve_in_root(&root, "/bin/sh", true).expect("r"),
            root.join("usr/bin/sh")
        );
        assert_eq!(
            resolve_in_root(&root, "/evil-abs/etc/passwd", true).expect("r"),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(&root, "/usr/evil-rel/outside/x", true).expect("r"),
            root.join("outside/x")
        );
        assert_eq!(
            resolve_in_root(&root, "../../x", true).expect("r"),
            root.join("x")
        );
        assert_eq!(
            resolve_in_root(&root, "/bin", false).expect("r"),
            root.join("bin")
        );
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let (_t, root, _) = tree();
        symlink("loop", root.join("loop")).expect("symlink");
        assert!(resolve_in_root(&root, "/loop/x", true).is_err());
    }

    #[test]
    fn copies_through_image_symlinks_without_escaping() {
        let (t, root, outside) = tree();
        let src = t.path().join("src.txt");
        fs::write(&src, "hello").expect("write");
        let opts = CopyOptions::default();
        copy_entry(&src, &root, "/bin/tool", &opts).expect("copy");
        assert_eq!(
            fs::read_to_string(root.join("usr/bin/tool")).expect("read"),
            "hello"
        );
        mkdir_p_in_root(&root, "/evil-abs/outside", None).expect("mkdir");
        copy_entry(&src, &root, "/evil-abs/outside/x", &opts).expect("copy");
        assert!(root.join("outside/x").exists());
        assert!(
            !outside.join("x").exists(),
            "nothing written outside the root"
        );
    }

    #[test]
    fn directory_copies_merge_and_keep_symlinks() {
        let (t, root, _) = tree();
        let src = t.path().join("srcdir");
        fs::create_dir_all(src.join("sub")).expect("mkdir");
        fs::write(src.join("sub/a"), "a").expect("write");
        symlink("/etc/shadow", src.join("link")).expect("symlink");
        fs::set_permissions(src.join("sub/a"), fs::Permissions::from_mode(0o751)).expect("chmod");
        mkdir_p_in_root(&root, "/app", None).expect("mkdir");
        fs::write(root.join("app/keep"), "k").expect("write");
        copy_entry(&src, &root, "/app", &CopyOptions::default()).expect("copy");
        assert_eq!(
            fs::read_to_string(root.join("app/sub/a")).expect("read"),
            "a"
        );
        assert_eq!(
            fs::symlink_metadata(root.join("app/sub/a"))
                .expect("meta")
                .mode()
                & 0o777,
            0o751
        );
        assert_eq!(
            fs::read_link(root.join("app/link")).expect("link"),
            PathBuf::from("/etc/shadow")
        );
        assert!(root.join("app/keep").exists(), "merge keeps existing files");
        let opts = CopyOptions {
            owner: Some((1234, 4321)),
            chmod: Some(0o600),
            preserve_owner: false,
        };
        copy_entry(&src.join("sub/a"), &root, "/app/owned", &opts).expect("copy");
        let m = fs::symlink_metadata(root.join("app/owned")).expect("meta");
        if rustix_is_root() {
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1234, 4321, 0o600));
        }
    }

    fn rustix_is_root() -> bool {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    #[test]
    fn sources_expand_globs_and_refuse_escapes() {
        let t = tempfile::tempdir().expect("tempdir");
        let ctx = t.path();
        fs::create_dir_all(ctx.join("src/deep")).expect("mkdir");
        fs::write(ctx.join("a.py"), "").expect("write");
        fs::write(ctx.join("b.py"), "").expect("write");
        fs::write(ctx.join("c.txt"), "").expect("write");
        fs::write(ctx.join("src/x.py"), "").expect("write");
        fs::write(ctx.join("src/deep/y.py"), "").expect("write");
        symlink("/etc", ctx.join("hostetc")).expect("symlink");
        let names = |pats: &[&str]| -> Vec<String> {
            let pats: Vec<String> = pats.iter().map(|s| s.to_string()).collect();
            expand_sources(ctx, &pats)
                .expect("expand")
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(names(&["*.py"]), vec!["a.py", "b.py"]);
        assert_eq!(names(&["src/*.py"]), vec!["src/x.py"]);
        assert_eq!(names(&["./c.txt", "src"]), vec!["c.txt", "src"]);
        assert_eq!(names(&["."]), vec!["."]);
        assert!(matches!(
            expand_sources(ctx, &["../x".into()]),
            Err(SourceError::Outside(_))
        ));
        assert!(matches!(
            expand_sources(ctx, &["src/../../x".into()]),
            Err(SourceError::Outside(_))
        ));
        assert!(matches!(
            expand_sources(ctx, &["nope".into()]),
            Err(SourceError::NotFound(_))
        ));
        assert!(matches!(
            expand_sources(ctx, &["*.rs".into()]),
            Err(SourceError::NotFound(_))
        ));
        // A glob never descends through a symlink; a plain path through one stays in the root.
        assert!(matches!(
            expand_sources(ctx, &["hostetc/pass*".into()]),
            Err(SourceError::NotFound(_))
        ));
        let s = expand_sources(ctx, &["hostetc/passwd".into()]);
        assert!(matches!(s, Err(SourceError::NotFound(_))), "{s:?}");
    }

    #[test]
    fn source_hash_follows_content() {
        let t = tempfile::tempdir().expect("tempdir");
        fs::write(t.path().join("a"), "1").expect("write");
        let src = vec![Source {
            name: "a".into(),
            path: t.path().join("a"),
        }];
        let h1 = hash_sources(&src).expect("hash");
        assert_eq!(h1, hash_sources(&src).expect("hash"));
        fs::write(t.path().join("a"), "2").expect("write");
        assert_ne!(h1, hash_sources(&src).expect("hash"));
    }
}
