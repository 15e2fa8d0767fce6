//! Layer identity: the tree digest of an unpacked directory.

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use sha2::{Digest as _, Sha256};
use strata_types::Digest;

use crate::error::{io_err, StoreError};
use crate::fsutil;

/// What the store knows about an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerMeta {
    /// The tree digest (see [`tree_digest`]); also the layer's directory name.
    pub digest: Digest,
    /// Sum of the sizes of the regular files (hardlinks counted once per name).
    pub size_bytes: u64,
    /// Number of entries below the layer root (the root itself not counted).
    pub entries: u64,
}

/// The version line that starts every serialization; bump it if the format ever changes.
const FORMAT_HEADER: &[u8] = b"strata-tree-v1\n";

/// Computes the tree digest of `dir`: Strata's layer identity.
///
/// The digest is the sha256 of this serialization (format `strata-tree-v1`):
///
/// ```text
/// strata-tree-v1\n
/// then, for every entry below `dir` (the root itself is not an entry), sorted by relative path
/// compared as bytes:
///   path <n>:<relative path bytes>\n
///   type <file|dir|symlink|char|block|fifo|socket>\n
///   mode <permission bits incl. setuid/setgid/sticky, octal>\n
///   owner <uid>:<gid>\n
///   mtime <seconds since the epoch, signed decimal>\n
///   size <bytes>\n sha256 <64 hex of the content>\n     (regular files only)
///   target <n>:<link target bytes>\n                     (symlinks only)
///   rdev <major>:<minor>\n                               (char and block devices only)
///   xattr <n>:<name> <m>:<value>\n                       (one per xattr, sorted by name bytes)
///   end\n
/// ```
///
/// `<n>:` is the decimal byte length of the raw bytes that follow, so any byte may appear in a
/// name, target or value. Overlay whiteouts are `char` entries with rdev `0:0`; opaque dirs carry
/// `xattr 22:trusted.overlay.opaque 1:y`. Hardlinked files are hashed as independent regular
/// files. Symlinks are never followed; nanoseconds, atime and ctime are not part of the digest.
/// Only xattrs the caller can list are included (all of them when running as root).
pub fn tree_digest(dir: &Path) -> Result<LayerMeta, StoreError> {
    walk_tree(dir).map(|w| w.meta)
}

/// One entry below a walked tree's root, with everything the digest, the manifest and the file
/// pool need, so a commit reads each file once.
#[derive(Debug)]
pub(crate) struct Walked {
    /// Path relative to the walked root, as raw bytes.
    pub rel: Vec<u8>,
    /// lstat of the entry at walk time.
    pub md: fs::Metadata,
    /// sha256 (hex) of a regular file's content.
    pub sha256: Option<String>,
    /// A symlink's target bytes.
    pub target: Option<Vec<u8>>,
    /// xattrs (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Walked {
    /// Whether the entry is a directory marked `trusted.overlay.opaque=y`.
    pub fn is_opaque(&self) -> bool {
        self.md.is_dir()
            && self
                .xattrs
                .iter()
                .any(|(n, v)| n == fsutil::OPAQUE_XATTR.as_bytes() && v == b"y")
    }
}

/// A tree read in one pass: its identity and its entries, sorted by relative path bytes.
#[derive(Debug)]
pub(crate) struct WalkedTree {
    pub meta: LayerMeta,
    pub entries: Vec<Walked>,
}

/// Walks `dir` (never following symlinks), hashing every regular file once, and computes the
/// tree digest described at [`tree_digest`].
pub(crate) fn walk_tree(dir: &Path) -> Result<WalkedTree, StoreError> {
    let md = fs::symlink_metadata(dir).map_err(io_err("stat layer dir", dir))?;
    if !md.is_dir() {
        return Err(StoreError::CommitLayer {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let mut entries: Vec<Walked> = Vec::new();
    let mut size_bytes = 0u64;
    for item in walkdir::WalkDir::new(dir).follow_links(false).min_depth(1) {
        let entry = item.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            StoreError::io("walk layer dir", path, io::Error::other(e.to_string()))
        })?;
        let path = entry.path();
        let rel = path
            .strip_prefix(dir)
            .map_err(|_| StoreError::io("walk layer dir", path, io::Error::other("outside root")))?
            .as_os_str()
            .as_bytes()
            .to_vec();
        let md = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
        let walked = read_entry(path, rel, md)?;
        if walked.md.is_file() {
            size_bytes += walked.md.len();
        }
        entries.push(walked);
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut h = Sha256::new();
    h.update(FORMAT_HEADER);
    for w in &entries {
        h.update(entry_record(w));
    }
    Ok(WalkedTree {
        meta: LayerMeta {
            digest: Digest::from_bytes(&h.finalize().into()),
            size_bytes,
            entries: entries.len() as u64,
        },
        entries,
    })
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// Reads what the digest needs about one entry: content hash, link target, xattrs.
fn read_entry(path: &Path, rel: Vec<u8>, mut md: fs::Metadata) -> Result<Walked, StoreError> {
    let ft = md.file_type();
    let mut sha256 = None;
    let mut target = None;
    if ft.is_file() {
        let (hex, size) = hash_file(path)?;
        if size != md.len() {
            // Changed while we read it: describe what was hashed.
            md = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
            if md.len() != size {
                return Err(StoreError::io(
                    "hash",
                    path,
                    io::Error::other("file changed size while being hashed"),
                ));
            }
        }
        sha256 = Some(hex);
    } else if ft.is_symlink() {
        let t = fs::read_link(path).map_err(io_err("read symlink", path))?;
        target = Some(t.into_os_string().into_vec());
    }
    let mut names = fsutil::list_xattrs(path).map_err(io_err("list xattrs", path))?;
    names.sort();
    let mut xattrs = Vec::with_capacity(names.len());
    for name in names {
        // An xattr removed between list and get simply does not count.
        if let Some(value) = fsutil::get_xattr(path, &name).map_err(io_err("read xattr", path))? {
            xattrs.push((name, value));
        }
    }
    Ok(Walked {
        rel,
        md,
        sha256,
        target,
        xattrs,
    })
}

/// One entry's serialized record (see [`tree_digest`]).
fn entry_record(w: &Walked) -> Vec<u8> {
    let md = &w.md;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    let mut r = Vec::with_capacity(128 + w.rel.len());
    r.extend_from_slice(b"path ");
    push_bytes(&mut r, &w.rel);
    r.extend_from_slice(
        format!(
            "\ntype {kind}\nmode {:o}\nowner {}:{}\nmtime {}\n",
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            md.mtime()
        )
        .as_bytes(),
    );
    if let Some(hex) = &w.sha256 {
        r.extend_from_slice(format!("size {}\nsha256 {hex}\n", md.len()).as_bytes());
    } else if let Some(target) = &w.target {
        r.extend_from_slice(b"target ");
        push_bytes(&mut r, target);
        r.push(b'\n');
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = md.rdev();
        r.extend_from_slice(
            format!(
                "rdev {}:{}\n",
                rustix::fs::major(rdev),
                rustix::fs::minor(rdev)
            )
            .as_bytes(),
        );
    }
    for (name, value) in &w.xattrs {
        r.extend_from_slice(b"xattr ");
        push_bytes(&mut r, name);
        r.push(b' ');
        push_bytes(&mut r, value);
        r.push(b'\n');
    }
    r.extend_from_slice(b"end\n");
    r
}

/// sha256 (hex) and length of a regular file's content, opened without following symlinks.
fn hash_file(path: &Path) -> Result<(String, u64), StoreError> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| StoreError::io("open for hashing", path, e.into()))?;
    let mut f = fs::File::from(fd);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("read for hashing", path, e)),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn set_mtime(path: &Path, secs: i64) {
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &ts,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .expect("utimensat");
    }

    /// Builds the same small tree every time, with fixed mtimes.
    fn make_tree(root: &Path) {
        fs::create_dir_all(root.join("etc/sub")).expect("mkdir");
        fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").expect("write");
        fs::write(root.join("etc-a"), b"sorting").expect("write");
        fs::set_permissions(root.join("etc/hosts"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        symlink("hosts", root.join("etc/link")).expect("symlink");
        for p in ["etc/hosts", "etc-a", "etc/link", "etc/sub", "etc"] {
            set_mtime(&root.join(p), 1_700_000_000);
        }
    }

    #[test]
    fn stable_across_copies_and_counts_entries() {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        make_tree(&a);
        make_tree(&b);
        let da = tree_digest(&a).expect("digest a");
        let db = tree_digest(&b).expect("digest b");
        assert_eq!(da, db);
        assert_eq!(da.entries, 5);
        assert_eq!(da.size_bytes, 20 + 7);
        // The root's own metadata is not part of the identity.
        set_mtime(&b, 42);
        assert_eq!(tree_digest(&b).expect("digest").digest, da.digest);
    }

    #[test]
    fn changes_with_content_mode_mtime_target() {
        let t = tempfile::tempdir().expect("tempdir");
        let a = t.path().join("a");
        make_tree(&a);
        let base = tree_digest(&a).expect("digest").digest;

        fs::write(a.join("etc/hosts"), b"127.0.0.2 localhost\n").expect("write");
        set_mtime(&a.join("etc/hosts"), 1_700_000_000);
        let content = tree_digest(&a).expect("digest").digest;
        assert_ne!(content, base, "content change must change the digest");

        fs::set_permissions(a.join("etc/hosts"), fs::Permissions::from_mode(0o4755))
            .expect("chmod");
        let mode = tree_digest(&a).expect("digest").digest;
        assert_ne!(mode, content, "mode change must change the digest");

        set_mtime(&a.join("etc/hosts"), 1_700_000_001);
        let mtime = tree_digest(&a).expect("digest").digest;
        assert_ne!(mtime, mode, "mtime change must change the digest");

        fs::remove_file(a.join("etc/link")).expect("rm");
        symlink("hostz", a.join("etc/link")).expect("symlink");
        set_mtime(&a.join("etc/link"), 1_700_000_000);
        set_mtime(&a.join("etc"), 1_700_000_000);
        let target = tree_digest(&a).expect("digest").digest;
        assert_ne!(
            target, mtime,
            "symlink target change must change the digest"
        );

        // Putting the old target back restores the old digest: nothing else changed.
        fs::remove_file(a.join("etc/link")).expect("rm");
        symlink("hosts", a.join("etc/link")).expect("symlink");
        set_mtime(&a.join("etc/link"), 1_700_000_000);
        set_mtime(&a.join("etc"), 1_700_000_000);
        assert_eq!(tree_digest(&a).expect("digest").digest, mtime);
    }

    #[test]
    fn changes_with_xattr() {
        let t = tempfile::tempdir().expect("tempdir");
        let a = t.path().join("a");
        make_tree(&a);
        let base = tree_digest(&a).expect("digest").digest;
        let path = a.join("etc/sub");
        if let Err(e) = rustix::fs::lsetxattr(
            &path,
            "user.strata.test",
            b"1",
            rustix::fs::XattrFlags::empty(),
        ) {
            println!("skipped: this filesystem refuses user xattrs ({e})");
            return;
        }
        let with = tree_digest(&a).expect("digest").digest;
        assert_ne!(with, base, "xattr must change the digest");
        rustix::fs::lsetxattr(
            &path,
            "user.strata.test",
            b"2",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr");
        assert_ne!(
            tree_digest(&a).expect("digest").digest,
            with,
            "xattr value counts"
        );
        fsutil::remove_xattr(&path, b"user.strata.test").expect("rm xattr");
        assert_eq!(tree_digest(&a).expect("digest").digest, base);
    }

    #[test]
    fn hardlinks_hash_as_regular_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        make_tree(&a);
        make_tree(&b);
        fs::hard_link(a.join("etc/hosts"), a.join("copy")).expect("link");
        fs::copy(b.join("etc/hosts"), b.join("copy")).expect("copy");
        fs::set_permissions(b.join("copy"), fs::Permissions::from_mode(0o644)).expect("chmod");
        set_mtime(&b.join("copy"), 1_700_000_000);
        let da = tree_digest(&a).expect("digest");
        let db = tree_digest(&b).expect("digest");
        assert_eq!(da.digest, db.digest);
        assert_eq!(da.size_bytes, 20 + 7 + 20);
    }

    #[test]
    fn refuses_a_file() {
        let t = tempfile::tempdir().expect("tempdir");
        let f = t.path().join("f");
        fs::write(&f, b"x").expect("write");
        assert!(tree_digest(&f).is_err());
    }
}
