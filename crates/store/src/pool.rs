//! The file pool `files/<key>`: identical regular files across layers and code trees stored
//! once, as hardlinks to one inode.
//!
//! A pool key is the sha256 (hex) of
//!
//! ```text
//! strata-pool-v1\n
//! sha256 <content sha256 hex>\n
//! mode <st_mode & 0o7777, octal>\n
//! owner <uid>:<gid>\n
//! mtime <seconds>\n
//! ```
//!
//! Hardlinks share one inode, so everything a tree digest records about a regular file except
//! its name — content, permission bits, owner and mtime seconds — must be in the key: two layers
//! can only share a file if sharing changes neither one's identity. mtime matters beyond the
//! digest too: Python validates `.pyc` files against the source's mtime. Files with xattrs
//! (capabilities, overlay markers) or with more than one link (hardlinked inside their own tree)
//! and empty files are never pooled.
//!
//! Invariants, and why a crash or a concurrent garbage collection is harmless:
//!
//! - A pool entry is only ever created by `link(2)` of a file that is already complete and on
//!   disk (after the commit's `syncfs`), so no entry can hold partial content. Files whose entry
//!   already exists are linked to it *before* the `syncfs`, so their duplicate copies are
//!   dropped before they are ever written back.
//! - Every file in a committed tree is either its own copy or a link to a pool entry whose
//!   metadata matched on link; which one never changes the tree's digest (directory timestamps
//!   touched by the relinking are restored).
//! - An entry whose link count is 1 is referenced by nothing and may be removed
//!   ([`collect`]). A commit racing with that removal either links before it (then its tree holds
//!   its own link to the inode, still valid; only that file's future sharing is lost) or gets
//!   `ENOENT` and links its own copy as the new entry.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps};
use sha2::{Digest as _, Sha256};

use crate::error::{io_err, StoreError};
use crate::fsutil;
use crate::tree::{Walked, WalkedTree};

/// How many times a commit retries when the pool entry it wanted vanished and reappeared.
const ATTEMPTS: usize = 3;

/// The pool key of a regular file with content digest `sha256_hex` and metadata `md`.
pub(crate) fn pool_key(sha256_hex: &str, md: &fs::Metadata) -> String {
    let mut h = Sha256::new();
    h.update(
        format!(
            "strata-pool-v1\nsha256 {sha256_hex}\nmode {:o}\nowner {}:{}\nmtime {}\n",
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            md.mtime()
        )
        .as_bytes(),
    );
    hex::encode(h.finalize())
}

/// What deduplicating one tree did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DedupOutcome {
    /// Files replaced by a link to an existing pool entry.
    pub linked: u64,
    /// Bytes those files no longer take.
    pub linked_bytes: u64,
    /// Files that became new pool entries.
    pub pooled: u64,
    /// Eligible files kept as their own copy (too many links, permission, metadata mismatch).
    pub kept: u64,
}

/// Whether a walked entry may share an inode with identical files of other trees.
fn eligible(w: &Walked) -> bool {
    w.md.is_file()
        && w.md.len() > 0
        && w.md.nlink() == 1
        && w.xattrs.is_empty()
        && w.sha256.is_some()
}

/// Links every eligible regular file of the staged tree `root` (walked as `tree`) with the pool
/// in `files`, in two phases around `sync`, which must make the staged tree's files durable
/// (`syncfs`):
///
/// 1. before `sync`, files whose pool entry already exists are replaced by links to it. Entries
///    are complete on disk by construction, and a duplicate dropped before it is written back
///    never costs a disk write (nor, on filesystems that discard freed blocks, a slow free);
/// 2. after `sync`, the remaining files become pool entries (or link to an entry another commit
///    added meanwhile). Only synced files ever become entries.
///
/// Timestamps of directories whose entries changed are restored, so the tree digest is
/// unchanged.
pub(crate) fn dedup_tree(
    files: &Path,
    root: &Path,
    tree: &WalkedTree,
    sync: &dyn Fn() -> Result<(), StoreError>,
) -> Result<DedupOutcome, StoreError> {
    let mut out = DedupOutcome::default();
    // Parents (relative paths) whose entries changed: their timestamps are restored.
    let mut touched: BTreeSet<&[u8]> = BTreeSet::new();
    let mut pending: Vec<(&Walked, PathBuf, PathBuf)> = Vec::new();
    for w in tree.entries.iter().filter(|w| eligible(w)) {
        let Some(sha) = &w.sha256 else { continue };
        let entry = files.join(pool_key(sha, &w.md));
        let file = root.join(OsStr::from_bytes(&w.rel));
        match link_to_entry(&entry, &file, &w.md)? {
            Relink::Missing => pending.push((w, entry, file)),
            linked => {
                out.count(Placed::from(linked), w);
                touched.insert(parent_of(&w.rel));
            }
        }
    }
    sync()?;
    for (w, entry, file) in pending {
        let placed = add_entry(&entry, &file, &w.md)?;
        if !matches!(placed, Placed::Pooled) {
            touched.insert(parent_of(&w.rel));
        }
        out.count(placed, w);
    }
    for parent in &touched {
        if parent.is_empty() {
            continue; // the root's own timestamps are not part of any identity
        }
        let Ok(i) = tree
            .entries
            .binary_search_by(|w| w.rel.as_slice().cmp(parent))
        else {
            continue;
        };
        let md = &tree.entries[i].md;
        let dir = root.join(OsStr::from_bytes(parent));
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: md.atime(),
                tv_nsec: md.atime_nsec() as _,
            },
            last_modification: Timespec {
                tv_sec: md.mtime(),
                tv_nsec: md.mtime_nsec() as _,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, &dir, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| StoreError::io("restore timestamps of", &dir, e.into()))?;
    }
    if out.pooled > 0 {
        fsutil::fsync_dir(files).map_err(io_err("fsync", files))?;
    }
    Ok(out)
}

impl DedupOutcome {
    fn count(&mut self, placed: Placed, w: &Walked) {
        match placed {
            Placed::Linked => {
                self.linked += 1;
                self.linked_bytes += w.md.len();
            }
            Placed::Pooled => self.pooled += 1,
            Placed::Kept => self.kept += 1,
        }
    }
}

/// The relative path of an entry's parent (empty for the root).
fn parent_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => &rel[..i],
        None => &rel[..0],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// Replaced by a link to an existing entry.
    Linked,
    /// Became the entry.
    Pooled,
    /// Kept as its own copy.
    Kept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relink {
    /// The file is now a link to the entry.
    Done,
    /// No such entry.
    Missing,
    /// Kept as its own copy.
    Kept,
}

impl From<Relink> for Placed {
    fn from(l: Relink) -> Placed {
        match l {
            Relink::Done => Placed::Linked,
            Relink::Missing | Relink::Kept => Placed::Kept,
        }
    }
}

/// Errors after which a file simply keeps its own copy: too many links, a directory we may not
/// write (not root), hardlinks refused by the filesystem or by `fs.protected_hardlinks`.
fn keeps_copy(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(e.raw_os_error(), Some(c) if [Errno::MLINK, Errno::ACCESS, Errno::PERM, Errno::XDEV,
        Errno::NOSPC, Errno::DQUOT].iter().any(|x| x.raw_os_error() == c))
}

/// Replaces `file` by a link to pool entry `entry` (a temporary link in the same directory,
/// checked against `md`, renamed over the file).
fn link_to_entry(entry: &Path, file: &Path, md: &fs::Metadata) -> Result<Relink, StoreError> {
    let Some(dir) = file.parent() else {
        return Ok(Relink::Kept);
    };
    for _ in 0..ATTEMPTS {
        let tmp = dir.join(fsutil::unique_name(".strata-dedup"));
        match fs::hard_link(entry, &tmp) {
            Ok(()) => {
                let linked = fs::symlink_metadata(&tmp).map_err(io_err("stat", &tmp))?;
                let xattrs = fsutil::list_xattrs(&tmp).map_err(io_err("list xattrs", &tmp))?;
                let same = linked.is_file()
                    && linked.mode() == md.mode()
                    && linked.uid() == md.uid()
                    && linked.gid() == md.gid()
                    && linked.mtime() == md.mtime()
                    && linked.len() == md.len()
                    && xattrs.is_empty();
                if !same {
                    // Someone changed a stored file in place; never spread that.
                    fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
                    tracing::warn!(entry = %entry.display(),
                        "pool entry metadata does not match its key; keeping a separate copy");
                    return Ok(Relink::Kept);
                }
                if let Err(e) = fs::rename(&tmp, file) {
                    let _ = fs::remove_file(&tmp);
                    return Err(StoreError::io("replace with pooled file", file, e));
                }
                return Ok(Relink::Done);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue, // name clash: retry
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Relink::Missing),
            Err(e) if keeps_copy(&e) => return Ok(Relink::Kept),
            Err(e) => return Err(StoreError::io("link from file pool", entry, e)),
        }
    }
    Ok(Relink::Kept)
}

/// Makes the synced `file` the pool entry `entry`, or links it to the entry if another commit
/// (or an identical file earlier in the same tree) created it first.
fn add_entry(entry: &Path, file: &Path, md: &fs::Metadata) -> Result<Placed, StoreError> {
    for _ in 0..ATTEMPTS {
        match fs::hard_link(file, entry) {
            Ok(()) => return Ok(Placed::Pooled),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match link_to_entry(entry, file, md)? {
                    // Collected between our two links: try to become the entry again.
                    Relink::Missing => continue,
                    linked => return Ok(Placed::from(linked)),
                }
            }
            Err(e) if keeps_copy(&e) => return Ok(Placed::Kept),
            Err(e) => return Err(StoreError::io("add to file pool", entry, e)),
        }
    }
    Ok(Placed::Kept)
}

/// Removes pool entries that nothing links to any more (link count 1). Returns the number of
/// entries removed and their total size. Anything in `files/` that is not a regular file is
/// left alone (and logged).
pub(crate) fn collect(files: &Path) -> Result<(u64, u64), StoreError> {
    let mut removed = 0u64;
    let mut bytes = 0u64;
    for item in fs::read_dir(files).map_err(io_err("read dir", files))? {
        let item = item.map_err(io_err("read dir", files))?;
        let path = item.path();
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("stat", path, e)),
        };
        if !md.is_file() {
            tracing::warn!(path = %path.display(), "ignoring stray entry in the file pool");
            continue;
        }
        if md.nlink() != 1 {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                removed += 1;
                bytes += md.len();
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove pool entry", path, e)),
        }
    }
    if removed > 0 {
        fsutil::fsync_dir(files).map_err(io_err("fsync", files))?;
    }
    Ok((removed, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::walk_tree;
    use std::os::unix::fs::PermissionsExt;

    fn no_sync() -> Result<(), StoreError> {
        Ok(())
    }

    fn set_mtime(path: &Path, secs: i64) {
        let t = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .expect("utimensat");
    }

    #[test]
    fn key_covers_content_mode_owner_and_mtime() {
        let t = tempfile::tempdir().expect("tempdir");
        let f = t.path().join("f");
        fs::write(&f, b"x").expect("write");
        set_mtime(&f, 100);
        let md = fs::metadata(&f).expect("stat");
        let base = pool_key("aa", &md);
        assert_eq!(base.len(), 64);
        assert_eq!(pool_key("aa", &md), base, "deterministic");
        assert_ne!(pool_key("ab", &md), base, "content");
        set_mtime(&f, 101);
        assert_ne!(
            pool_key("aa", &fs::metadata(&f).expect("stat")),
            base,
            "mtime"
        );
        set_mtime(&f, 100);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).expect("chmod");
        assert_ne!(
            pool_key("aa", &fs::metadata(&f).expect("stat")),
            base,
            "mode"
        );
    }

    #[test]
    fn dedup_links_identical_files_and_keeps_different_ones() {
        let t = tempfile::tempdir().expect("tempdir");
        let files = t.path().join("files");
        fs::create_dir(&files).expect("mkdir");
        let make = |name: &str, mtime: i64| {
            let root = t.path().join(name);
            fs::create_dir_all(root.join("lib")).expect("mkdir");
            fs::write(root.join("lib/a.so"), b"shared library").expect("write");
            fs::write(root.join("lib/own"), name.as_bytes()).expect("write");
            fs::write(root.join("empty"), b"").expect("write");
            set_mtime(&root.join("lib/a.so"), mtime);
            set_mtime(&root.join("lib/own"), 100);
            set_mtime(&root.join("lib"), 100);
            root
        };
        let one = make("one", 100);
        let w1 = walk_tree(&one).expect("walk");
        let o1 = dedup_tree(&files, &one, &w1, &no_sync).expect("dedup");
        assert_eq!(
            o1,
            DedupOutcome {
                pooled: 2,
                ..Default::default()
            }
        );
        let two = make("two", 100);
        let w2 = walk_tree(&two).expect("walk");
        let o2 = dedup_tree(&files, &two, &w2, &no_sync).expect("dedup");
        assert_eq!(o2.linked, 1);
        assert_eq!(o2.linked_bytes, 14);
        assert_eq!(o2.pooled, 1, "its own file");
        let ino = |p: &Path| fs::metadata(p).expect("stat").ino();
        assert_eq!(ino(&one.join("lib/a.so")), ino(&two.join("lib/a.so")));
        assert_ne!(ino(&one.join("lib/own")), ino(&two.join("lib/own")));
        assert_ne!(
            ino(&one.join("empty")),
            ino(&two.join("empty")),
            "empty files are not pooled"
        );
        assert_eq!(
            walk_tree(&two).expect("walk").meta,
            w2.meta,
            "digest unchanged"
        );
        assert_eq!(fs::metadata(two.join("lib")).expect("stat").mtime(), 100);

        // A different mtime is a different pool entry.
        let three = make("three", 200);
        let w3 = walk_tree(&three).expect("walk");
        let o3 = dedup_tree(&files, &three, &w3, &no_sync).expect("dedup");
        assert_eq!(o3.linked, 0);
        assert_ne!(ino(&one.join("lib/a.so")), ino(&three.join("lib/a.so")));

        // Files hardlinked inside their own tree stay as they are.
        let four = make("four", 100);
        fs::hard_link(four.join("lib/a.so"), four.join("lib/b.so")).expect("link");
        let w4 = walk_tree(&four).expect("walk");
        let o4 = dedup_tree(&files, &four, &w4, &no_sync).expect("dedup");
        assert_eq!(o4.linked, 0);
        assert_eq!(
            fs::metadata(four.join("lib/a.so")).expect("stat").nlink(),
            2
        );

        // Nothing collectable while every entry is used; removing trees frees their entries.
        assert_eq!(collect(&files).expect("collect"), (0, 0));
        fs::remove_dir_all(&three).expect("rm");
        assert_eq!(collect(&files).expect("collect"), (2, 14 + 5));
        fs::remove_dir_all(&one).expect("rm");
        assert_eq!(collect(&files).expect("collect"), (1, 3), "one/lib/own");
        fs::remove_dir_all(&two).expect("rm");
        assert_eq!(collect(&files).expect("collect"), (2, 14 + 3));
        fs::remove_dir_all(&four).expect("rm");
        assert_eq!(collect(&files).expect("collect"), (1, 4), "four/lib/own");
        assert_eq!(fs::read_dir(&files).expect("ls").count(), 0);
    }

    #[test]
    fn a_tampered_entry_is_not_linked_and_the_digest_stays() {
        let t = tempfile::tempdir().expect("tempdir");
        let files = t.path().join("files");
        fs::create_dir(&files).expect("mkdir");
        let root = t.path().join("tree");
        fs::create_dir_all(root.join("d")).expect("mkdir");
        fs::write(root.join("d/f"), b"content").expect("write");
        set_mtime(&root.join("d/f"), 100);
        set_mtime(&root.join("d"), 100);
        let walked = walk_tree(&root).expect("walk");
        let key = pool_key(
            walked.entries[1].sha256.as_deref().expect("sha"),
            &walked.entries[1].md,
        );
        // An entry under the right key whose metadata no longer matches it.
        fs::write(files.join(&key), b"content").expect("write");
        fs::set_permissions(files.join(&key), fs::Permissions::from_mode(0o600)).expect("chmod");
        let out = dedup_tree(&files, &root, &walked, &no_sync).expect("dedup");
        assert_eq!(out.kept, 1);
        assert_eq!(walk_tree(&root).expect("walk").meta, walked.meta);
        assert_eq!(fs::read_dir(root.join("d")).expect("ls").count(), 1);
    }

    #[test]
    fn entries_are_added_linked_or_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let files = t.path().join("files");
        fs::create_dir(&files).expect("mkdir");
        let write = |name: &str| {
            let p = t.path().join(name);
            fs::write(&p, b"content").expect("write");
            set_mtime(&p, 100);
            let md = fs::metadata(&p).expect("stat");
            (p, md)
        };
        let entry = files.join("k");
        let (f, fmd) = write("f");
        assert_eq!(
            link_to_entry(&entry, &f, &fmd).expect("link"),
            Relink::Missing
        );
        assert_eq!(add_entry(&entry, &f, &fmd).expect("add"), Placed::Pooled);
        assert_eq!(fs::metadata(&entry).expect("stat").ino(), fmd.ino());
        // Someone else added the entry first: link to it.
        let (g, gmd) = write("g");
        assert_eq!(add_entry(&entry, &g, &gmd).expect("add"), Placed::Linked);
        assert_eq!(fs::metadata(&g).expect("stat").ino(), fmd.ino());
        // A mismatching entry (changed in place) is never linked.
        let (h, hmd) = write("h");
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(add_entry(&entry, &h, &hmd).expect("add"), Placed::Kept);
        assert_eq!(link_to_entry(&entry, &h, &hmd).expect("link"), Relink::Kept);
        assert_ne!(fs::metadata(&h).expect("stat").ino(), fmd.ino());
        assert_eq!(
            fs::read_dir(t.path()).expect("ls").count(),
            4,
            "no temp link left"
        );
    }

    #[test]
    fn only_synced_files_become_entries() {
        let t = tempfile::tempdir().expect("tempdir");
        let files = t.path().join("files");
        fs::create_dir(&files).expect("mkdir");
        let make = |name: &str, own: &str| {
            let root = t.path().join(name);
            fs::create_dir_all(&root).expect("mkdir");
            fs::write(root.join("shared"), b"shared").expect("write");
            fs::write(root.join("own"), own).expect("write");
            set_mtime(&root.join("shared"), 100);
            set_mtime(&root.join("own"), 100);
            root
        };
        let one = make("one", "1");
        dedup_tree(&files, &one, &walk_tree(&one).expect("walk"), &no_sync).expect("dedup");
        let two = make("two", "2");
        let walked = walk_tree(&two).expect("walk");
        let synced = std::cell::Cell::new(false);
        let sync = || {
            // Before the sync: the existing entry is already linked, the new file not pooled.
            assert_eq!(
                fs::metadata(two.join("shared")).expect("stat").ino(),
                fs::metadata(one.join("shared")).expect("stat").ino()
            );
            assert_eq!(fs::metadata(two.join("own")).expect("stat").nlink(), 1);
            assert_eq!(fs::read_dir(&files).expect("ls").count(), 2);
            synced.set(true);
            Ok(())
        };
        let out = dedup_tree(&files, &two, &walked, &sync).expect("dedup");
        assert!(synced.get());
        assert_eq!((out.linked, out.pooled), (1, 1));
        assert_eq!(fs::metadata(two.join("own")).expect("stat").nlink(), 2);
    }
}
