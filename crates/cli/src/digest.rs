//! The digest the server will give a code directory, computed locally so `strata up` uploads
//! code only when it changed.
//!
//! The server unpacks an upload and normalizes it (owner root, modes 0755/0644, every mtime
//! 1980-01-01, no xattrs) before taking its tree digest (format `strata-tree-v1`, documented at
//! `strata_store::tree_digest`). This module serializes the same records for the files the CLI
//! would pack (`.dockerignore` honoured), with the normalized attributes, without copying
//! anything. A server that normalizes differently (one not running as root keeps its own
//! owner) simply gets the upload and finds it unchanged itself.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use sha2::Digest as _;
use strata_types::Digest;

/// The mtime of every normalized code entry: 1980-01-01T00:00:00Z.
const CODE_MTIME: i64 = 315_532_800;

enum Kind {
    Dir,
    File {
        size: u64,
        sha256: String,
        exec: bool,
    },
    Symlink(Vec<u8>),
}

/// The tree digest of `dir` as the server will store it, with entries owned by `owner`.
pub fn code_digest(dir: &Path, owner: (u32, u32)) -> anyhow::Result<Digest> {
    let ignore = crate::context::Ignore::load(dir)?;
    let mut entries: BTreeMap<Vec<u8>, Kind> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let rel = entry.path().strip_prefix(dir).context("walking the code")?;
        if ignore.ignored(&rel.to_string_lossy()) {
            continue;
        }
        // A file kept inside an ignored directory (`!dir/file`) arrives with its parents
        // made by the unpacker.
        for parent in rel.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                entries
                    .entry(parent.as_os_str().as_bytes().to_vec())
                    .or_insert(Kind::Dir);
            }
        }
        let md = std::fs::symlink_metadata(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let kind = if md.is_dir() {
            Kind::Dir
        } else if md.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path())
                .with_context(|| format!("reading link {}", entry.path().display()))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if md.is_file() {
            let (size, sha256) = hash(entry.path())?;
            Kind::File {
                size,
                sha256,
                exec: md.permissions().mode() & 0o111 != 0,
            }
        } else {
            anyhow::bail!(
                "{} is not a file, directory or symlink: function code cannot hold it",
                entry.path().display()
            );
        };
        entries.insert(rel.as_os_str().as_bytes().to_vec(), kind);
    }
    let mut h = sha2::Sha256::new();
    h.update(b"strata-tree-v1\n");
    for (rel, kind) in &entries {
        let mut r = Vec::with_capacity(128 + rel.len());
        r.extend_from_slice(b"path ");
        push_bytes(&mut r, rel);
        let (kind_name, mode) = match kind {
            Kind::Dir => ("dir", 0o755),
            Kind::File { exec: true, .. } => ("file", 0o755),
            Kind::File { .. } => ("file", 0o644),
            Kind::Symlink(_) => ("symlink", 0o777),
        };
        r.extend_from_slice(
            format!(
                "\ntype {kind_name}\nmode {mode:o}\nowner {}:{}\nmtime {CODE_MTIME}\n",
                owner.0, owner.1
            )
            .as_bytes(),
        );
        match kind {
            Kind::File { size, sha256, .. } => {
                r.extend_from_slice(format!("size {size}\nsha256 {sha256}\n").as_bytes())
            }
            Kind::Symlink(target) => {
                r.extend_from_slice(b"target ");
                push_bytes(&mut r, target);
                r.push(b'\n');
            }
            Kind::Dir => {}
        }
        r.extend_from_slice(b"end\n");
        h.update(&r);
    }
    Ok(Digest::from_bytes(&h.finalize().into()))
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn hash(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Applies the server's normalization to a copy, as `strata_store::code` does.
    fn normalize(root: &Path, as_root: bool) {
        for e in walkdir::WalkDir::new(root).follow_links(false) {
            let e = e.expect("walk");
            let p = e.path();
            let md = std::fs::symlink_metadata(p).expect("stat");
            if as_root {
                std::os::unix::fs::lchown(p, Some(0), Some(0)).expect("chown");
            }
            if md.is_dir() {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            } else if md.is_file() {
                let m = if md.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
            }
            let t = rustix_time(p);
            assert!(t, "set mtime of {}", p.display());
        }
    }

    fn rustix_time(p: &Path) -> bool {
        std::process::Command::new("touch")
            .args(["-h", "-d", "@315532800"])
            .arg(p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn matches_the_store_digest_of_the_normalized_upload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("code");
        std::fs::create_dir_all(d.join("pkg/sub")).expect("mkdir");
        std::fs::create_dir_all(d.join("build/keep")).expect("mkdir");
        std::fs::create_dir_all(d.join("empty")).expect("mkdir");
        std::fs::write(d.join("app.py"), "print(1)\n").expect("write");
        std::fs::write(d.join("run.sh"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(d.join("run.sh"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::fs::write(d.join("pkg/sub/x.txt"), "x").expect("write");
        std::fs::write(d.join("secret.txt"), "s").expect("write");
        std::fs::write(d.join("build/keep/a"), "a").expect("write");
        std::fs::write(d.join("build/drop"), "b").expect("write");
        std::fs::write(
            d.join(".dockerignore"),
            "secret.txt\nbuild\n!build/keep/a\n",
        )
        .expect("write");
        symlink("pkg/sub/x.txt", d.join("link")).expect("symlink");

        // What the server stores: the packed upload, unpacked and normalized.
        let tar = tempfile::tempfile().expect("tar");
        crate::context::pack(&d, &tar).expect("pack");
        let mut tar = tar;
        std::io::Seek::rewind(&mut tar).expect("rewind");
        let out = dir.path().join("unpacked");
        std::fs::create_dir(&out).expect("mkdir");
        tar::Archive::new(tar).unpack(&out).expect("unpack");
        let as_root = rustix_is_root();
        normalize(&out, as_root);
        let stored = strata_store::tree_digest(&out).expect("digest");
        let owner = if as_root {
            (0, 0)
        } else {
            let md = std::fs::metadata(&out).expect("stat");
            (
                std::os::unix::fs::MetadataExt::uid(&md),
                std::os::unix::fs::MetadataExt::gid(&md),
            )
        };
        assert_eq!(code_digest(&d, owner).expect("predicted"), stored.digest);

        // Any change to content, modes or names changes it.
        let before = code_digest(&d, owner).expect("digest");
        std::fs::write(d.join("app.py"), "print(2)\n").expect("write");
        assert_ne!(code_digest(&d, owner).expect("digest"), before);
        // An ignored file does not count.
        let before = code_digest(&d, owner).expect("digest");
        std::fs::write(d.join("secret.txt"), "changed").expect("write");
        assert_eq!(code_digest(&d, owner).expect("digest"), before);
    }

    fn rustix_is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
    }
}
