//! The on-disk store: `blobs/sha256/<hex>`, `layers/<hex>`, `code/<hex>` and `tmp/` under one
//! root.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_types::Digest;

use crate::code::{self, CodeLimits, CodeMeta};
use crate::error::{io_err, StoreError};
use crate::fsutil;
use crate::tree::{tree_digest, LayerMeta};

/// The content-addressed store rooted at one directory of the data dir.
///
/// Every object is written under `tmp/`, made durable, renamed into place and its parent
/// directory fsynced, so a crash never leaves a half-written blob or layer visible.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    blobs: PathBuf,
    layers: PathBuf,
    code: PathBuf,
    tmp: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`: `root/{blobs/sha256,layers,code,tmp}`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
            blobs: root.join("blobs").join("sha256"),
            layers: root.join("layers"),
            code: root.join("code"),
            tmp: root.join("tmp"),
        };
        for dir in [&store.blobs, &store.layers, &store.code, &store.tmp] {
            fs::create_dir_all(dir).map_err(io_err("create store dir", dir))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's scratch directory, `root/tmp`.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    // ---- blobs ----

    /// Streams `reader` into a new blob and returns its digest and size. Storing content that is
    /// already present is a no-op that returns the same digest.
    pub fn put_blob(&self, reader: &mut dyn Read) -> Result<(Digest, u64), StoreError> {
        let tmp = TempPath(self.tmp.join(fsutil::unique_name("blob")));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp.0)
            .map_err(io_err("create temp blob", &tmp.0))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("read blob content for", &tmp.0, e)),
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(io_err("write blob", &tmp.0))?;
            size += n as u64;
        }
        file.sync_all().map_err(io_err("fsync blob", &tmp.0))?;
        drop(file);
        let digest = Digest::from_bytes(&hasher.finalize().into());
        let dest = self.blob_path(&digest);
        if dest.is_file() {
            return Ok((digest, size)); // `tmp` is removed on drop
        }
        fs::rename(&tmp.0, &dest).map_err(io_err("rename blob into", &dest))?;
        tmp.disarm();
        fsutil::fsync_dir(&self.blobs).map_err(io_err("fsync", &self.blobs))?;
        Ok((digest, size))
    }

    /// Stores `bytes` as a blob.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        self.put_blob(&mut &bytes[..]).map(|(d, _)| d)
    }

    /// Where the blob `d` lives (whether or not it is stored).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// Whether blob `d` is stored.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Opens blob `d` for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<fs::File, StoreError> {
        let path = self.blob_path(d);
        fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound { digest: d.clone() },
            _ => StoreError::io("open blob", path, e),
        })
    }

    /// Deletes blob `d`.
    pub fn remove_blob(&self, d: &Digest) -> Result<(), StoreError> {
        let path = self.blob_path(d);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobNotFound { digest: d.clone() })
            }
            Err(e) => return Err(StoreError::io("remove blob", path, e)),
        }
        fsutil::fsync_dir(&self.blobs).map_err(io_err("fsync", &self.blobs))
    }

    /// All stored blobs, sorted.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, StoreError> {
        list_digests(&self.blobs)
    }

    // ---- scratch space ----

    /// A fresh directory `root/tmp/<prefix>-<random>`, removed when the returned guard drops.
    pub fn scratch_dir(&self, prefix: &str) -> Result<ScratchDir, StoreError> {
        loop {
            let path = self.tmp.join(fsutil::unique_name(prefix));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path, keep: false }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io("create scratch dir", path, e)),
            }
        }
    }

    /// Removes everything in `tmp/`: leftovers of a crash. Call at startup, after unmounting
    /// anything that might still be mounted there; an entry with a live mount inside is refused
    /// ([`StoreError::StillMounted`]) rather than deleted through the mount.
    pub fn clean_tmp(&self) -> Result<(), StoreError> {
        let entries = fs::read_dir(&self.tmp).map_err(io_err("read dir", &self.tmp))?;
        for entry in entries {
            let entry = entry.map_err(io_err("read dir", &self.tmp))?;
            let path = entry.path();
            let mounts =
                fsutil::mounts_under(&path).map_err(io_err("read mountinfo for", &path))?;
            if let Some(mount) = mounts.into_iter().next() {
                return Err(StoreError::StillMounted { path, mount });
            }
            fsutil::remove_tree(&path).map_err(io_err("remove", &path))?;
        }
        Ok(())
    }

    // ---- layers ----

    /// Turns the staged directory `staged` (on the store's filesystem, normally a scratch dir)
    /// into the layer named by its tree digest. If that layer already exists, `staged` is deleted
    /// and the existing layer's meta returned.
    pub fn commit_layer(&self, staged: &Path) -> Result<LayerMeta, StoreError> {
        self.commit_tree(staged, &self.layers)
    }

    /// Renames `staged` to `<into>/<tree digest hex>` durably (syncfs, rename, fsync of `into`),
    /// or deletes it when that tree is already there.
    fn commit_tree(&self, staged: &Path, into: &Path) -> Result<LayerMeta, StoreError> {
        let md = fs::symlink_metadata(staged).map_err(io_err("stat staged layer", staged))?;
        if !md.is_dir() {
            return Err(StoreError::CommitLayer {
                path: staged.to_path_buf(),
                reason: "not a directory".into(),
            });
        }
        let into_md = fs::metadata(into).map_err(io_err("stat", into))?;
        if md.dev() != into_md.dev() {
            return Err(StoreError::CommitLayer {
                path: staged.to_path_buf(),
                reason: format!(
                    "not on the store's filesystem ({}); stage layers under {}",
                    into.display(),
                    self.tmp.display()
                ),
            });
        }
        let meta = tree_digest(staged)?;
        let dest = into.join(meta.digest.hex());
        if fs::symlink_metadata(&dest).is_ok() {
            fsutil::remove_tree(staged).map_err(io_err("remove staged layer", staged))?;
            return Ok(meta);
        }
        // Make every file of the staged tree durable before it becomes visible.
        let dir = fs::File::open(into).map_err(io_err("open", into))?;
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::io("syncfs", into, e.into()))?;
        match fs::rename(staged, &dest) {
            Ok(()) => {}
            // Someone committed the same layer meanwhile.
            Err(e)
                if fs::symlink_metadata(&dest).is_ok()
                    && matches!(
                        e.raw_os_error(),
                        Some(code) if code == rustix::io::Errno::NOTEMPTY.raw_os_error()
                            || code == rustix::io::Errno::EXIST.raw_os_error()
                    ) =>
            {
                fsutil::remove_tree(staged).map_err(io_err("remove staged layer", staged))?;
                return Ok(meta);
            }
            Err(e) => return Err(StoreError::io("rename tree into", dest, e)),
        }
        dir.sync_all().map_err(io_err("fsync", into))?;
        tracing::debug!(tree = %meta.digest, dir = %into.display(), entries = meta.entries,
            "committed tree");
        Ok(meta)
    }

    /// Where layer `d` lives (whether or not it is stored).
    pub fn layer_path(&self, d: &Digest) -> PathBuf {
        self.layers.join(d.hex())
    }

    /// Whether layer `d` is stored.
    pub fn has_layer(&self, d: &Digest) -> bool {
        fs::symlink_metadata(self.layer_path(d)).is_ok_and(|m| m.is_dir())
    }

    /// Deletes layer `d`: first renamed into `tmp/` (so a crash never leaves a half-deleted layer
    /// under `layers/`), then removed.
    pub fn remove_layer(&self, d: &Digest) -> Result<(), StoreError> {
        let path = self.layer_path(d);
        let doomed = self
            .tmp
            .join(fsutil::unique_name(&format!("rm-{}", d.short())));
        match fs::rename(&path, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::LayerNotFound { digest: d.clone() })
            }
            Err(e) => return Err(StoreError::io("move layer out of", path, e)),
        }
        fsutil::fsync_dir(&self.layers).map_err(io_err("fsync", &self.layers))?;
        fsutil::remove_tree(&doomed).map_err(io_err("remove", &doomed))
    }

    /// All stored layers, sorted.
    pub fn list_layers(&self) -> Result<Vec<Digest>, StoreError> {
        list_digests(&self.layers)
    }

    // ---- function code ----

    /// Unpacks an uploaded code archive (zip, tar or tar.gz, see
    /// [`CodeFormat::sniff`](crate::code::CodeFormat::sniff)) into a
    /// scratch dir, normalizes it and commits it to `code/<hex>`, named by its tree digest.
    /// Idempotent: the same content gives the same digest and an existing dir is reused. Never
    /// writes outside the scratch dir; on any error nothing is left behind. See [`crate::code`]
    /// for the rules an archive must follow.
    pub fn import_code(&self, archive: &Path, limits: &CodeLimits) -> Result<CodeMeta, StoreError> {
        let scratch = self.scratch_dir("code")?;
        let staged = scratch.path().join("tree");
        code::unpack(archive, &staged, limits)?;
        let meta = self.commit_tree(&staged, &self.code)?;
        tracing::info!(code = %meta.digest, entries = meta.entries, bytes = meta.size_bytes,
            "imported function code");
        Ok(CodeMeta {
            digest: meta.digest,
            size_bytes: meta.size_bytes,
            entries: meta.entries,
        })
    }

    /// Where function code `d` lives (whether or not it is stored): `code/<hex>`.
    pub fn code_path(&self, d: &Digest) -> PathBuf {
        self.code.join(d.hex())
    }

    /// Whether function code `d` is stored.
    pub fn has_code(&self, d: &Digest) -> bool {
        fs::symlink_metadata(self.code_path(d)).is_ok_and(|m| m.is_dir())
    }

    /// Deletes function code `d`: renamed into `tmp/` first, then removed.
    pub fn remove_code(&self, d: &Digest) -> Result<(), StoreError> {
        let path = self.code_path(d);
        let doomed = self
            .tmp
            .join(fsutil::unique_name(&format!("rm-code-{}", d.short())));
        match fs::rename(&path, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::CodeNotFound { digest: d.clone() })
            }
            Err(e) => return Err(StoreError::io("move code out of", path, e)),
        }
        fsutil::fsync_dir(&self.code).map_err(io_err("fsync", &self.code))?;
        fsutil::remove_tree(&doomed).map_err(io_err("remove", &doomed))
    }

    /// All stored function code trees, sorted.
    pub fn list_code(&self) -> Result<Vec<Digest>, StoreError> {
        list_digests(&self.code)
    }
}

fn list_digests(dir: &Path) -> Result<Vec<Digest>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        let entry = entry.map_err(io_err("read dir", dir))?;
        let name = entry.file_name();
        match name.to_str().map(Digest::from_hex) {
            Some(Ok(d)) => out.push(d),
            _ => tracing::warn!(path = %entry.path().display(), "ignoring stray entry in store"),
        }
    }
    out.sort();
    Ok(out)
}

/// A temporary file path removed on drop unless disarmed.
struct TempPath(PathBuf);

impl TempPath {
    fn disarm(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// A directory under the store's `tmp/`, removed recursively (never following symlinks) when
/// dropped unless [`ScratchDir::keep`] was called. A scratch dir with something still mounted
/// inside is left alone (and logged) rather than deleted through the mount.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory: the caller takes over its removal.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        match fsutil::mounts_under(&self.path) {
            Ok(mounts) if mounts.is_empty() => {}
            Ok(mounts) => {
                tracing::warn!(path = %self.path.display(), mount = %mounts[0].display(),
                    "not removing scratch dir: something is still mounted inside");
                return;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "not removing scratch dir: cannot read mountinfo");
                return;
            }
        }
        if let Err(e) = fsutil::remove_tree(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove scratch dir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_entries(store: &Store) -> Vec<PathBuf> {
        fs::read_dir(store.tmp_dir())
            .expect("read tmp")
            .map(|e| e.expect("entry").path())
            .collect()
    }

    #[test]
    fn blob_round_trip_is_idempotent_and_leaves_no_temp() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&t.path().join("store")).expect("open");
        let (d, size) = store.put_blob(&mut &b"hello strata"[..]).expect("put");
        assert_eq!(size, 12);
        assert_eq!(
            d.hex(),
            hex::encode(Sha256::digest(b"hello strata")).as_str()
        );
        assert!(store.has_blob(&d));
        assert_eq!(
            fs::read(store.blob_path(&d)).expect("read"),
            b"hello strata"
        );
        let again = store.put_blob_bytes(b"hello strata").expect("put again");
        assert_eq!(again, d);
        assert_eq!(store.list_blobs().expect("list"), vec![d.clone()]);
        assert!(tmp_entries(&store).is_empty(), "no temp file left behind");
        let mut s = String::new();
        store
            .open_blob(&d)
            .expect("open")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "hello strata");

        store.remove_blob(&d).expect("remove");
        assert!(!store.has_blob(&d));
        let err = store.remove_blob(&d).expect_err("second remove");
        assert_eq!(err.kind(), strata_types::ErrorKind::NotFound);
        assert!(store.open_blob(&d).is_err());
    }

    #[test]
    fn failed_blob_read_leaves_no_temp() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("network down"))
            }
        }
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("open");
        assert!(store.put_blob(&mut Failing).is_err());
        assert!(tmp_entries(&store).is_empty());
        assert!(store.list_blobs().expect("list").is_empty());
    }

    #[test]
    fn commit_layer_renames_into_place_and_is_idempotent() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("open");
        let make = || {
            let s = store.scratch_dir("stage").expect("scratch");
            fs::create_dir(s.path().join("etc")).expect("mkdir");
            fs::write(s.path().join("etc/motd"), b"hi").expect("write");
            // Fixed mtimes on both entries, or a second boundary between the two calls would
            // change the digest.
            for p in ["etc/motd", "etc"] {
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    s.path().join(p),
                    &rustix::fs::Timestamps {
                        last_access: rustix::fs::Timespec {
                            tv_sec: 1,
                            tv_nsec: 0,
                        },
                        last_modification: rustix::fs::Timespec {
                            tv_sec: 1,
                            tv_nsec: 0,
                        },
                    },
                    rustix::fs::AtFlags::empty(),
                )
                .expect("utimens");
            }
            s
        };
        let first = make();
        let meta = store.commit_layer(first.path()).expect("commit");
        assert!(!first.path().exists(), "staged dir was renamed");
        assert!(store.has_layer(&meta.digest));
        assert_eq!(meta.entries, 2);
        assert_eq!(meta.size_bytes, 2);
        let layer = store.layer_path(&meta.digest);
        assert_eq!(fs::read(layer.join("etc/motd")).expect("read"), b"hi");
        assert_eq!(tree_digest(&layer).expect("digest"), meta);

        let second = make();
        let again = store.commit_layer(second.path()).expect("commit again");
        assert_eq!(again, meta);
        assert!(!second.path().exists(), "duplicate staged dir deleted");
        assert_eq!(
            store.list_layers().expect("list"),
            vec![meta.digest.clone()]
        );
        drop((first, second));
        assert!(tmp_entries(&store).is_empty());

        store.remove_layer(&meta.digest).expect("remove");
        assert!(!store.has_layer(&meta.digest));
        assert!(tmp_entries(&store).is_empty());
        assert_eq!(
            store.remove_layer(&meta.digest).expect_err("gone").kind(),
            strata_types::ErrorKind::NotFound
        );
    }

    #[test]
    fn commit_layer_refuses_a_file() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("open");
        let f = store.tmp_dir().join("file");
        fs::write(&f, b"x").expect("write");
        let err = store.commit_layer(&f).expect_err("file");
        assert!(matches!(err, StoreError::CommitLayer { .. }));
    }

    #[test]
    fn scratch_dirs_are_removed_unless_kept_and_clean_tmp_empties() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("open");
        let s = store.scratch_dir("work").expect("scratch");
        assert!(s.path().starts_with(store.tmp_dir()));
        assert!(s
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("work-")));
        fs::create_dir(s.path().join("d")).expect("mkdir");
        let path = s.path().to_path_buf();
        drop(s);
        assert!(!path.exists());

        let kept = store.scratch_dir("kept").expect("scratch").keep();
        assert!(kept.is_dir());
        fs::write(store.tmp_dir().join("stray"), b"x").expect("write");
        store.clean_tmp().expect("clean");
        assert!(tmp_entries(&store).is_empty());
    }

    #[test]
    fn clean_tmp_refuses_live_mounts_root() {
        if !fsutil::is_root() {
            println!("skipped: mounting a tmpfs needs root");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("open");
        let mnt = store.tmp_dir().join("instance/rootfs");
        fs::create_dir_all(&mnt).expect("mkdir");
        if let Err(e) = rustix::mount::mount(
            "tmpfs",
            &mnt,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        ) {
            println!("skipped: cannot mount a tmpfs here ({e})");
            return;
        }
        fs::write(mnt.join("precious"), b"x").expect("write");
        let result = store.clean_tmp();
        let still = mnt.join("precious").exists();
        // Unmount before asserting, so a failure never leaks a mount.
        rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).expect("umount");
        let err = result.expect_err("mounted");
        assert!(matches!(err, StoreError::StillMounted { .. }), "{err}");
        assert!(still, "nothing deleted through the mount");
        store.clean_tmp().expect("clean after unmount");
        assert!(tmp_entries(&store).is_empty());
    }

    #[test]
    fn listing_ignores_stray_names() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("open");
        fs::create_dir(t.path().join("layers/not-a-digest")).expect("mkdir");
        assert!(store.list_layers().expect("list").is_empty());
    }
}
