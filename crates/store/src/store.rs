//! The on-disk store: `blobs/sha256/<hex>`, `layers/<hex>`, `code/<hex>`, the file pool
//! `files/<key>`, layer manifests `manifests/<hex>` and `tmp/` under one root.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use strata_types::Digest;

use crate::code::{self, CodeLimits, CodeMeta};
use crate::error::{io_err, StoreError};
use crate::fsutil;
use crate::manifest::Manifest;
use crate::pool;
use crate::tree::{walk_tree, LayerMeta, WalkedTree};

/// The in-memory manifest cache holds at most this many manifest entries in total (the most
/// recently used manifests; roughly 150 bytes each).
const MANIFEST_CACHE_ENTRIES: usize = 400_000;

/// The content-addressed store rooted at one directory of the data dir.
///
/// Every object is written under `tmp/`, made durable, renamed into place and its parent
/// directory fsynced, so a crash never leaves a half-written blob or layer visible.
///
/// Regular files of committed layers and code trees are deduplicated through the file pool
/// `files/` (hardlinks, see [`Store::commit_layer`]); [`Store::collect_files`] removes pool
/// entries nothing uses any more. Clones share one in-memory manifest cache.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    blobs: PathBuf,
    layers: PathBuf,
    code: PathBuf,
    files: PathBuf,
    manifests: PathBuf,
    tmp: PathBuf,
    cache: Arc<Mutex<ManifestCache>>,
}

/// Physical and logical space used by the store (see [`Store::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Layers stored under `layers/`.
    pub layers: u64,
    /// Function code trees stored under `code/`.
    pub code_trees: u64,
    /// Blobs stored under `blobs/`.
    pub blobs: u64,
    /// Entries of the file pool `files/`.
    pub pool_files: u64,
    /// Pool entries nothing links to any more: what [`Store::collect_files`] would remove.
    pub pool_unreferenced: u64,
    /// Sum of the sizes of the regular files on disk, each inode counted once.
    pub apparent_bytes: u64,
    /// Space allocated on disk (`st_blocks * 512`) for every file, directory and symlink, each
    /// inode counted once.
    pub allocated_bytes: u64,
    /// Sum of the sizes of every regular file name outside the pool (in layers, code trees,
    /// blobs and manifests), as if nothing were shared.
    pub logical_bytes: u64,
    /// Bytes saved by hardlinks: `logical_bytes` minus the sizes of the distinct inodes behind
    /// those names.
    pub dedup_saved_bytes: u64,
}

/// Recently used manifests, bounded by their total number of entries.
#[derive(Default)]
struct ManifestCache {
    map: HashMap<Digest, (Arc<Manifest>, u64)>,
    tick: u64,
    entries: usize,
}

impl fmt::Debug for ManifestCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestCache")
            .field("manifests", &self.map.len())
            .field("entries", &self.entries)
            .finish()
    }
}

impl ManifestCache {
    fn get(&mut self, d: &Digest) -> Option<Arc<Manifest>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(d).map(|(m, used)| {
            *used = tick;
            Arc::clone(m)
        })
    }

    fn insert(&mut self, d: &Digest, m: Arc<Manifest>) {
        self.remove(d);
        while !self.map.is_empty() && self.entries + m.len() > MANIFEST_CACHE_ENTRIES {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.remove(&k),
                None => break,
            }
        }
        self.tick += 1;
        self.entries += m.len();
        self.map.insert(d.clone(), (m, self.tick));
    }

    fn remove(&mut self, d: &Digest) {
        if let Some((m, _)) = self.map.remove(d) {
            self.entries -= m.len();
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`:
    /// `root/{blobs/sha256,layers,code,files,manifests,tmp}`. The file pool `files/` is made
    /// mode 0700: it holds setuid binaries of every layer under names no one else should reach.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
            blobs: root.join("blobs").join("sha256"),
            layers: root.join("layers"),
            code: root.join("code"),
            files: root.join("files"),
            manifests: root.join("manifests"),
            tmp: root.join("tmp"),
            cache: Arc::default(),
        };
        for dir in [
            &store.blobs,
            &store.layers,
            &store.code,
            &store.files,
            &store.manifests,
            &store.tmp,
        ] {
            fs::create_dir_all(dir).map_err(io_err("create store dir", dir))?;
        }
        fs::set_permissions(&store.files, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &store.files))?;
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
    ///
    /// Before the layer becomes visible its regular files are deduplicated through the file pool
    /// (see the `files/` rules in ADR 0010): every non-empty file without xattrs and with a single
    /// link is replaced by a hardlink to the pool entry with the same content, mode, owner and
    /// mtime, or becomes that entry. The tree digest is unchanged by this. The layer's
    /// [`Manifest`] is written at the same time.
    pub fn commit_layer(&self, staged: &Path) -> Result<LayerMeta, StoreError> {
        let (meta, walked) = self.commit_tree(staged, &self.layers)?;
        let digest = meta.digest.clone();
        if self.cached_manifest(&digest).is_none() {
            let manifest = Arc::new(Manifest::from_walk(&walked));
            if let Err(e) = self.save_manifest(&digest, &manifest) {
                // Only a cache: recomputed from the layer on demand.
                tracing::warn!(layer = %digest, error = %e, "could not write layer manifest");
            }
            self.cache().insert(&digest, manifest);
        }
        Ok(meta)
    }

    /// Renames `staged` to `<into>/<tree digest hex>` durably (links to existing pool entries,
    /// syncfs, new pool entries, rename, fsync of `into`), or deletes it when that tree is already there. Returns the walk too, so
    /// callers can derive a manifest without reading the tree again.
    fn commit_tree(
        &self,
        staged: &Path,
        into: &Path,
    ) -> Result<(LayerMeta, WalkedTree), StoreError> {
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
        let walked = walk_tree(staged)?;
        let meta = walked.meta.clone();
        let dest = into.join(meta.digest.hex());
        if fs::symlink_metadata(&dest).is_ok() {
            fsutil::remove_tree(staged).map_err(io_err("remove staged layer", staged))?;
            return Ok((meta, walked));
        }
        // Make every file of the staged tree durable before it becomes visible, and before any
        // of its files becomes a pool entry (an entry must never have partial content). Files
        // that already have an entry are linked first, so their copies are never written back.
        let dir = fs::File::open(into).map_err(io_err("open", into))?;
        // A small tree (a merge layer, function code) is made durable file by file: syncfs
        // would also wait for every other writer's dirty data on the filesystem.
        let small = walked.entries.len() <= SMALL_TREE_ENTRIES
            && walked.meta.size_bytes <= SMALL_TREE_BYTES;
        let sync = || {
            if small {
                fsync_tree(staged, &walked)
            } else {
                rustix::fs::syncfs(&dir).map_err(|e| StoreError::io("syncfs", into, e.into()))
            }
        };
        let dedup = pool::dedup_tree(&self.files, staged, &walked, &sync)?;
        tracing::debug!(tree = %meta.digest, linked = dedup.linked, saved_bytes = dedup.linked_bytes,
            pooled = dedup.pooled, kept = dedup.kept, "deduplicated files");
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
                return Ok((meta, walked));
            }
            Err(e) => return Err(StoreError::io("rename tree into", dest, e)),
        }
        dir.sync_all().map_err(io_err("fsync", into))?;
        tracing::debug!(tree = %meta.digest, dir = %into.display(), entries = meta.entries,
            "committed tree");
        Ok((meta, walked))
    }

    /// Where layer `d` lives (whether or not it is stored).
    pub fn layer_path(&self, d: &Digest) -> PathBuf {
        self.layers.join(d.hex())
    }

    /// Whether layer `d` is stored.
    pub fn has_layer(&self, d: &Digest) -> bool {
        fs::symlink_metadata(self.layer_path(d)).is_ok_and(|m| m.is_dir())
    }

    /// Deletes layer `d` and its manifest: first renamed into `tmp/` (so a crash never leaves a
    /// half-deleted layer under `layers/`), then removed. Pool entries it was the last user of
    /// stay until [`Store::collect_files`].
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
        self.cache().remove(d);
        let manifest = self.manifest_path(d);
        match fs::remove_file(&manifest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove layer manifest", manifest, e)),
        }
        fsutil::remove_tree(&doomed).map_err(io_err("remove", &doomed))
    }

    // ---- manifests, file pool, space ----

    /// The manifest of layer `layer`: every entry with type, mode, owner, mtime and content
    /// digest, sorted by path. Served from memory, else from `manifests/<hex>`, else computed
    /// from the layer (reading and hashing every file; the layer's digest is verified on the way)
    /// and cached in both places.
    pub fn manifest(&self, layer: &Digest) -> Result<Arc<Manifest>, StoreError> {
        if !self.has_layer(layer) {
            return Err(StoreError::LayerNotFound {
                digest: layer.clone(),
            });
        }
        if let Some(m) = self.cached_manifest(layer) {
            return Ok(m);
        }
        let path = self.manifest_path(layer);
        match fs::read(&path) {
            Ok(bytes) => {
                let decoded = String::from_utf8(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|text| Manifest::decode(&text, layer));
                match decoded {
                    Ok(m) => {
                        let m = Arc::new(m);
                        self.cache().insert(layer, Arc::clone(&m));
                        return Ok(m);
                    }
                    Err(reason) => tracing::warn!(layer = %layer, %reason,
                        "ignoring unreadable layer manifest; recomputing it"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("read layer manifest", path, e)),
        }
        let walked = match walk_tree(&self.layer_path(layer)) {
            Ok(w) => w,
            Err(_) if !self.has_layer(layer) => {
                return Err(StoreError::LayerNotFound {
                    digest: layer.clone(),
                })
            }
            Err(e) => return Err(e),
        };
        if walked.meta.digest != *layer {
            return Err(StoreError::DigestMismatch {
                what: format!("stored layer {}", self.layer_path(layer).display()),
                expected: layer.clone(),
                actual: walked.meta.digest,
            });
        }
        let m = Arc::new(Manifest::from_walk(&walked));
        if let Err(e) = self.save_manifest(layer, &m) {
            tracing::warn!(layer = %layer, error = %e, "could not write layer manifest");
        }
        self.cache().insert(layer, Arc::clone(&m));
        Ok(m)
    }

    /// The logical size of layer `d`: the sum of the sizes of its regular files, every name
    /// counted fully whether or not its content is shared with other layers.
    pub fn layer_size(&self, d: &Digest) -> Result<u64, StoreError> {
        Ok(self.manifest(d)?.file_bytes())
    }

    /// Removes file pool entries that no layer or code tree links to any more (link count 1),
    /// and manifests of layers that are no longer stored. Returns the number of pool entries
    /// removed and the bytes they held.
    ///
    /// Safe while layers are being committed: a commit that loses its pool entry to this
    /// collection links its own copy as the new entry, and one that linked just before keeps a
    /// valid file (see ADR 0010).
    pub fn collect_files(&self) -> Result<(u64, u64), StoreError> {
        let (removed, bytes) = pool::collect(&self.files)?;
        for entry in fs::read_dir(&self.manifests).map_err(io_err("read dir", &self.manifests))? {
            let entry = entry.map_err(io_err("read dir", &self.manifests))?;
            let path = entry.path();
            let layer = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok());
            let stale = match &layer {
                Some(d) => !self.has_layer(d),
                None => true,
            };
            if stale {
                if let Some(d) = &layer {
                    self.cache().remove(d);
                }
                match fsutil::remove_tree(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("remove stale manifest", path, e)),
                }
            }
        }
        if removed > 0 {
            tracing::info!(files = removed, bytes, "collected unused pool files");
        }
        Ok((removed, bytes))
    }

    /// Space used by the store: walks `layers/`, `files/`, `blobs/`, `code/` and `manifests/`
    /// (not `tmp/`), counting each inode once, and reports apparent and allocated bytes, the
    /// logical size of every file name outside the pool, and what hardlinks save.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        struct Inode {
            size: u64,
            names: u64,
        }
        let mut stats = StoreStats {
            layers: self.list_layers()?.len() as u64,
            code_trees: self.list_code()?.len() as u64,
            blobs: self.list_blobs()?.len() as u64,
            ..StoreStats::default()
        };
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut files: HashMap<(u64, u64), Inode> = HashMap::new();
        for (dir, is_pool) in [
            (&self.layers, false),
            (&self.files, true),
            (&self.blobs, false),
            (&self.code, false),
            (&self.manifests, false),
        ] {
            for item in walkdir::WalkDir::new(dir)
                .follow_links(false)
                .same_file_system(true)
                .min_depth(1)
            {
                let entry = match item {
                    Ok(e) => e,
                    // Removed while we walked (a concurrent layer removal): not used any more.
                    Err(e)
                        if e.io_error()
                            .is_some_and(|io| io.kind() == io::ErrorKind::NotFound) =>
                    {
                        continue
                    }
                    Err(e) => {
                        let path = e.path().unwrap_or(dir).to_path_buf();
                        return Err(StoreError::io(
                            "walk store",
                            path,
                            io::Error::other(e.to_string()),
                        ));
                    }
                };
                let md = match entry.metadata() {
                    Ok(md) => md,
                    Err(_) => continue,
                };
                let key = (md.dev(), md.ino());
                if seen.insert(key) {
                    stats.allocated_bytes += md.blocks() * 512;
                    if md.is_file() {
                        stats.apparent_bytes += md.len();
                    }
                }
                if !md.is_file() {
                    continue;
                }
                if is_pool && entry.depth() == 1 {
                    stats.pool_files += 1;
                    if md.nlink() == 1 {
                        stats.pool_unreferenced += 1;
                    }
                    continue;
                }
                stats.logical_bytes += md.len();
                files
                    .entry(key)
                    .or_insert(Inode {
                        size: md.len(),
                        names: 0,
                    })
                    .names += 1;
            }
        }
        stats.dedup_saved_bytes = files
            .values()
            .map(|i| i.size * i.names.saturating_sub(1))
            .sum();
        Ok(stats)
    }

    /// Where the cached manifest of layer `d` lives: `manifests/<hex>`.
    fn manifest_path(&self, d: &Digest) -> PathBuf {
        self.manifests.join(d.hex())
    }

    fn cache(&self) -> MutexGuard<'_, ManifestCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached_manifest(&self, d: &Digest) -> Option<Arc<Manifest>> {
        self.cache().get(d)
    }

    /// Writes `manifests/<hex>` atomically: a temp file under `tmp/`, fsync, rename.
    fn save_manifest(&self, d: &Digest, m: &Manifest) -> Result<(), StoreError> {
        let tmp = TempPath(self.tmp.join(fsutil::unique_name("manifest")));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp.0)
            .map_err(io_err("create temp manifest", &tmp.0))?;
        file.write_all(m.encode(d).as_bytes())
            .map_err(io_err("write manifest", &tmp.0))?;
        file.sync_all().map_err(io_err("fsync manifest", &tmp.0))?;
        drop(file);
        let dest = self.manifest_path(d);
        fs::rename(&tmp.0, &dest).map_err(io_err("rename manifest into", &dest))?;
        tmp.disarm();
        Ok(())
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
        let (meta, _) = self.commit_tree(&staged, &self.code)?;
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

/// Trees with at most this many entries and bytes are synced file by file at commit.
const SMALL_TREE_ENTRIES: usize = 256;
const SMALL_TREE_BYTES: u64 = 16 << 20;

/// fsyncs every regular file and directory of a walked tree (the root included).
fn fsync_tree(root: &Path, walked: &crate::tree::WalkedTree) -> Result<(), StoreError> {
    use std::os::unix::ffi::OsStrExt;
    for e in &walked.entries {
        if e.md.is_file() || e.md.is_dir() {
            let path = root.join(std::ffi::OsStr::from_bytes(&e.rel));
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", &path))?;
        }
    }
    fsutil::fsync_dir(root).map_err(io_err("fsync", root))
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
    use crate::tree::tree_digest;

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
