//! Safe extraction of untrusted tar streams into a directory.
//!
//! Every filesystem operation is made relative to a directory file descriptor reached from the
//! destination root one component at a time with `O_NOFOLLOW`, so no entry can make Strata write
//! through a symlink or outside the destination, whatever the archive contains.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use crate::error::StoreError;
use crate::fsutil::OPAQUE_XATTR;

/// Caps enforced while extracting; exceeding one fails the extraction with
/// [`StoreError::LimitExceeded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of file content, both as declared by headers and as actually written.
    pub max_bytes: u64,
    /// Number of archive entries.
    pub max_entries: u64,
    /// Size of one file (sparse files count at their full size).
    pub max_file_bytes: u64,
    /// Length in bytes of an entry name or link target.
    pub max_path_len: usize,
}

impl Default for Limits {
    /// 8 GiB total, 2,000,000 entries, 4 GiB per file, 4096-byte names.
    fn default() -> Self {
        Limits {
            max_bytes: 8 << 30,
            max_entries: 2_000_000,
            max_file_bytes: 4 << 30,
            max_path_len: 4096,
        }
    }
}

/// How `.wh.` names are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// OCI layer semantics: `.wh.<name>` becomes an overlay whiteout (character device 0:0)
    /// `<name>`, `.wh..wh..opq` marks its parent directory opaque (`trusted.overlay.opaque=y`).
    Oci,
    /// Plain extraction (a root filesystem, function code). A `.wh.` name would turn into a
    /// whiteout the moment the tree is exported as a layer, so such names are rejected.
    Keep,
}

/// Knobs of [`extract_tar`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Skip character and block device entries (e.g. a bootstrapped rootfs's `/dev`), recording
    /// them in [`ApplyStats::skipped`]; otherwise they are created, which needs root.
    pub skip_device_nodes: bool,
    /// Apply the entries' uid and gid; otherwise everything belongs to the extracting user.
    pub preserve_owner: bool,
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Archive entries seen (including skipped ones).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers created.
    pub whiteouts: u64,
    /// Entries deliberately not extracted, each with the reason.
    pub skipped: Vec<String>,
}

const WH_PREFIX: &[u8] = b".wh.";
const WH_META_PREFIX: &[u8] = b".wh..wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const CAPABILITY_PAX: &[u8] = b"SCHILY.xattr.security.capability";

/// Most bytes the tar reader may consume between two entries: the previous entry's padding,
/// headers, GNU long names and links, PAX records and GNU sparse maps. The tar reader holds long
/// names and PAX records in memory whole, so a header claiming gigabytes would otherwise be read
/// into memory before any limit is checked.
pub const MAX_ENTRY_METADATA_BYTES: u64 = 1 << 20;

/// Longest path the kernel resolves (`PATH_MAX`, terminating NUL included).
const PATH_MAX: usize = 4096;
/// Longest name of one path component (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// Room kept below `PATH_MAX` for the tree's final home: a staged layer or code tree is renamed
/// to a longer path (`layers/<64 hex>`) and walked by path afterwards.
const PATH_HEADROOM: usize = 256;

/// Why [`extract_tar`] rejected an untrusted layer or root filesystem tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// An empty name, a NUL byte, a `..` climbing above the root, or a non-directory naming the
    /// root.
    Path,
    /// An entry below a symlink or a non-directory.
    Parent,
    /// A link without a valid target, or a hardlink to anything but an already extracted regular
    /// file.
    Link,
    /// An impossible whiteout, or a `.wh.` name where whiteouts are not allowed.
    Whiteout,
    /// A 0:0 character device, invalid device numbers or an unknown entry type.
    EntryType,
    /// An unreadable mode, mtime, owner or PAX record.
    Header,
    /// A truncated or corrupt stream.
    Corrupt,
    /// More entries than [`Limits::max_entries`].
    TooManyEntries,
    /// A file over [`Limits::max_file_bytes`].
    FileTooLarge,
    /// More content than [`Limits::max_bytes`].
    TotalTooLarge,
    /// A name or link target over [`Limits::max_path_len`].
    PathTooLong,
    /// Headers, long names, PAX records or ignored entry content over
    /// [`MAX_ENTRY_METADATA_BYTES`].
    MetadataTooLarge,
    /// Data after a layer's end-of-archive marker beyond record padding.
    TrailingData,
}

impl RejectReason {
    /// Every reason, in the order [`rejected_counts`] reports them.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::Path,
        RejectReason::Parent,
        RejectReason::Link,
        RejectReason::Whiteout,
        RejectReason::EntryType,
        RejectReason::Header,
        RejectReason::Corrupt,
        RejectReason::TooManyEntries,
        RejectReason::FileTooLarge,
        RejectReason::TotalTooLarge,
        RejectReason::PathTooLong,
        RejectReason::MetadataTooLarge,
        RejectReason::TrailingData,
    ];

    /// A stable snake_case name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Path => "path",
            RejectReason::Parent => "parent",
            RejectReason::Link => "link",
            RejectReason::Whiteout => "whiteout",
            RejectReason::EntryType => "entry_type",
            RejectReason::Header => "header",
            RejectReason::Corrupt => "corrupt",
            RejectReason::TooManyEntries => "too_many_entries",
            RejectReason::FileTooLarge => "file_too_large",
            RejectReason::TotalTooLarge => "total_too_large",
            RejectReason::PathTooLong => "path_too_long",
            RejectReason::MetadataTooLarge => "metadata_too_large",
            RejectReason::TrailingData => "trailing_data",
        }
    }

    /// The reason for an extraction error; `None` for failures that are not the archive's fault
    /// (disk, permissions).
    pub(crate) fn of(e: &StoreError) -> Option<RejectReason> {
        Some(match e {
            StoreError::ReadArchive { .. } | StoreError::UnsupportedCompression { .. } => {
                RejectReason::Corrupt
            }
            StoreError::LimitExceeded { limit, .. } => match *limit {
                "entry count" => RejectReason::TooManyEntries,
                "file size" => RejectReason::FileTooLarge,
                "total size" => RejectReason::TotalTooLarge,
                "entry metadata size" | "unread entry data" => RejectReason::MetadataTooLarge,
                "trailing data" => RejectReason::TrailingData,
                _ => RejectReason::PathTooLong,
            },
            // The messages are all written in this module; the order matters ("a 0:0 character
            // device is an overlay whiteout" is an entry type problem).
            StoreError::UnsafeEntry { reason, .. } => {
                if reason.contains("device") || reason.contains("entry type") {
                    RejectReason::EntryType
                } else if reason.contains("in header") {
                    RejectReason::Header
                } else if reason.starts_with("parent ") {
                    RejectReason::Parent
                } else if reason.contains("link") {
                    RejectReason::Link
                } else if reason.contains("whiteout") || reason.contains(".wh.") {
                    RejectReason::Whiteout
                } else {
                    RejectReason::Path
                }
            }
            _ => return None,
        })
    }
}

static REJECTED: [AtomicU64; RejectReason::ALL.len()] =
    [const { AtomicU64::new(0) }; RejectReason::ALL.len()];

/// How many tars [`extract_tar`] (and so image import) rejected in this process, per reason
/// (every reason listed, zeros included), e.g. `("link", 2)`.
pub fn rejected_counts() -> Vec<(&'static str, u64)> {
    RejectReason::ALL
        .iter()
        .map(|r| (r.as_str(), REJECTED[*r as usize].load(Ordering::Relaxed)))
        .collect()
}

/// Counts a rejection of an untrusted tar.
pub(crate) fn record(reason: RejectReason) {
    REJECTED[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Shared state of a [`Metered`] reader: how many bytes may still be read, when armed.
#[derive(Default)]
struct Meter {
    left: Cell<Option<u64>>,
    tripped: Cell<bool>,
}

impl Meter {
    fn arm(&self, max: u64) {
        self.left.set(Some(max));
    }

    fn disarm(&self) {
        self.left.set(None);
    }
}

/// Fails reads beyond the budget while its [`Meter`] is armed.
struct Metered<'r> {
    inner: &'r mut dyn Read,
    meter: Rc<Meter>,
}

impl Read for Metered<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.meter.left.get() else {
            return self.inner.read(buf);
        };
        if left == 0 && !buf.is_empty() {
            self.meter.tripped.set(true);
            return Err(io::Error::other("entry headers exceed the metadata cap"));
        }
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.meter.left.set(Some(left - n as u64));
        Ok(n)
    }
}

/// Extracts an untrusted tar stream into `dest` (an empty dir) without ever writing outside it.
///
/// Names are normalized (leading `/` and `./` dropped, so absolute names land inside `dest`);
/// a `..` that climbs above the root, an empty name, a NUL byte, a parent that is a symlink or not
/// a directory, a hardlink to anything but an already extracted regular file, and impossible
/// whiteouts are rejected with [`StoreError::UnsafeEntry`] naming the entry. A later entry
/// replaces an earlier one at the same path (a directory over a directory merges). Symlinks are
/// created as given and never followed. Mode, mtime, owner (with `preserve_owner`) and the
/// `security.capability` xattr (from PAX `SCHILY.xattr.*`) are applied without following
/// symlinks; directory metadata is applied last. Directories the archive does not list get mode
/// 0755 and mtime 0, so the same archive always yields the same tree digest.
///
/// Memory and work stay bounded whatever the headers claim: the headers, GNU long names and PAX
/// records of one entry, and content a non-file entry claims, are capped at
/// [`MAX_ENTRY_METADATA_BYTES`]; a name with a component over 255 bytes, or whose full path
/// would come within 256 bytes of `PATH_MAX`, is refused. Rejections are counted by reason
/// ([`rejected_counts`]).
pub fn extract_tar(
    reader: &mut dyn Read,
    dest: &Path,
    whiteouts: Whiteouts,
    opts: &ExtractOptions,
    limits: &Limits,
) -> Result<ApplyStats, StoreError> {
    let mut accept_all = |_: &EntryInfo<'_>| Ok(());
    let mut hooks = Hooks {
        check: &mut accept_all,
        xattrs: true,
    };
    let result = extract_tar_with(reader, dest, whiteouts, opts, limits, &mut hooks);
    if let Err(e) = &result {
        if let Some(reason) = RejectReason::of(e) {
            record(reason);
            tracing::info!(dest = %dest.display(), reason = reason.as_str(), error = %e,
                "rejected tar");
        }
    }
    result
}

/// What an entry is, as seen by an [`Hooks::check`] before it is extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File,
    Symlink,
    Hardlink,
    /// Character or block device, fifo, socket.
    Special,
    /// Anything else (an unknown tar type flag).
    Other,
}

/// One archive entry offered to [`Hooks::check`]: its raw name and, for links, raw target.
#[derive(Debug)]
pub(crate) struct EntryInfo<'a> {
    pub name: &'a [u8],
    pub kind: EntryKind,
    pub link: Option<&'a [u8]>,
}

/// Extra policy for callers stricter than plain extraction (function code).
pub(crate) struct Hooks<'a> {
    /// Called for every entry before anything is written for it; an error stops extraction.
    pub check: &'a mut dyn FnMut(&EntryInfo<'_>) -> Result<(), StoreError>,
    /// Whether `security.capability` from PAX records is applied.
    pub xattrs: bool,
}

/// [`extract_tar`] with [`Hooks`].
pub(crate) fn extract_tar_with(
    reader: &mut dyn Read,
    dest: &Path,
    whiteouts: Whiteouts,
    opts: &ExtractOptions,
    limits: &Limits,
    hooks: &mut Hooks<'_>,
) -> Result<ApplyStats, StoreError> {
    let mut x = Extractor::new(dest, whiteouts, opts, limits)?;
    x.xattrs = hooks.xattrs;
    let meter = Rc::new(Meter::default());
    let mut archive = tar::Archive::new(Metered {
        inner: reader,
        meter: meter.clone(),
    });
    let mut entries = archive
        .entries()
        .map_err(|source| StoreError::ReadArchive { source })?;
    loop {
        // Between two entries the tar reader consumes only headers, padding, GNU long names and
        // PAX records; it holds the last two in memory whole, so they are metered.
        meter.arm(MAX_ENTRY_METADATA_BYTES);
        let item = entries.next();
        meter.disarm();
        let Some(item) = item else { break };
        let mut entry = item.map_err(|source| {
            if meter.tripped.get() {
                StoreError::LimitExceeded {
                    entry: "(entry headers)".into(),
                    limit: "entry metadata size",
                    max: MAX_ENTRY_METADATA_BYTES,
                }
            } else {
                StoreError::ReadArchive { source }
            }
        })?;
        x.stats.entries += 1;
        if x.stats.entries > limits.max_entries {
            return Err(StoreError::LimitExceeded {
                entry: lossy(&entry.path_bytes()),
                limit: "entry count",
                max: limits.max_entries,
            });
        }
        let etype = entry.header().entry_type();
        if !etype.is_pax_global_extensions() {
            let name = entry.path_bytes().into_owned();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            let kind = if etype.is_dir() || (etype.is_file() && name.ends_with(b"/")) {
                EntryKind::Dir
            } else if etype.is_file() || etype.is_contiguous() || etype.is_gnu_sparse() {
                EntryKind::File
            } else if etype.is_symlink() {
                EntryKind::Symlink
            } else if etype.is_hard_link() {
                EntryKind::Hardlink
            } else if etype.is_character_special() || etype.is_block_special() || etype.is_fifo() {
                EntryKind::Special
            } else {
                EntryKind::Other
            };
            (hooks.check)(&EntryInfo {
                name: &name,
                kind,
                link: link.as_deref(),
            })?;
        }
        x.apply(&mut entry)?;
        x.skip_rest(&mut entry)?;
    }
    x.finish_dirs()?;
    Ok(x.stats)
}

/// Sniffs the stream: gzip is decompressed, an uncompressed tar passes through, zstd, xz and
/// bzip2 are refused with [`StoreError::UnsupportedCompression`].
pub fn open_maybe_compressed(mut r: Box<dyn Read>) -> Result<Box<dyn Read>, StoreError> {
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(StoreError::ReadArchive { source }),
        }
    }
    let head = &head[..n];
    let stream = io::Cursor::new(head.to_vec()).chain(r);
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(stream))))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(StoreError::UnsupportedCompression { format: "zstd" })
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(StoreError::UnsupportedCompression { format: "xz" })
    } else if head.starts_with(b"BZh") {
        Err(StoreError::UnsupportedCompression { format: "bzip2" })
    } else {
        Ok(Box::new(stream))
    }
}

/// Splits an entry name into components: empty and `.` components dropped, `..` applied
/// lexically. `Err` when a `..` would climb above the root.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("`..` climbs above the archive root".into());
                }
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn timestamps(secs: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Metadata a directory gets once all entries are written.
struct DirMeta {
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
}

impl DirMeta {
    fn implicit() -> Self {
        DirMeta {
            mode: 0o755,
            owner: None,
            mtime: 0,
        }
    }
}

/// The metadata of one entry, read from its header and PAX records.
struct EntryMeta {
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
    capability: Option<Vec<u8>>,
}

impl EntryMeta {
    /// Mode and mtime only: owned by the extracting user, no xattrs.
    fn plain(mode: u32, mtime: i64) -> Self {
        EntryMeta {
            mode,
            owner: None,
            mtime,
            capability: None,
        }
    }
}

pub(crate) struct Extractor<'a> {
    root: OwnedFd,
    /// Length of the destination's path, to keep every extracted path below `PATH_MAX`.
    dest_len: usize,
    whiteouts: Whiteouts,
    opts: &'a ExtractOptions,
    limits: &'a Limits,
    stats: ApplyStats,
    /// Directories created or listed so far, by relative path, with their final metadata.
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    declared: u64,
    written: u64,
    /// Whether `security.capability` from PAX records is applied.
    xattrs: bool,
}

impl<'a> Extractor<'a> {
    /// An extractor writing below `dest`, an existing (empty) directory.
    pub(crate) fn new(
        dest: &Path,
        whiteouts: Whiteouts,
        opts: &'a ExtractOptions,
        limits: &'a Limits,
    ) -> Result<Self, StoreError> {
        let root = rustix::fs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StoreError::io("open extraction root", dest, e.into()))?;
        Ok(Extractor {
            root,
            dest_len: dest.as_os_str().len(),
            whiteouts,
            opts,
            limits,
            stats: ApplyStats::default(),
            dirs: BTreeMap::new(),
            declared: 0,
            written: 0,
            xattrs: true,
        })
    }

    /// Refuses a name the kernel could not resolve below the destination: a component over
    /// `NAME_MAX` bytes, or a full path (destination included) within [`PATH_HEADROOM`] of
    /// `PATH_MAX`, which would later fail every path-based walk of the tree.
    fn check_path(&self, name: &str, comps: &[Vec<u8>]) -> Result<(), StoreError> {
        if comps.iter().any(|c| c.len() > NAME_MAX) {
            return Err(StoreError::LimitExceeded {
                entry: name.to_string(),
                limit: "name component length",
                max: NAME_MAX as u64,
            });
        }
        let len = comps.iter().map(|c| c.len() + 1).sum::<usize>();
        let max = PATH_MAX.saturating_sub(PATH_HEADROOM + self.dest_len + 1);
        if len > max {
            return Err(StoreError::LimitExceeded {
                entry: name.to_string(),
                limit: "path length below the destination",
                max: max as u64,
            });
        }
        Ok(())
    }

    /// Bytes of file content written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Reads and discards whatever `entry` holds that extracting it did not read (directories,
    /// links and special files may claim content): at most [`MAX_ENTRY_METADATA_BYTES`], so a
    /// header claiming gigabytes of ignored content is refused instead of decompressed.
    fn skip_rest<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), StoreError> {
        let n = io::copy(
            &mut entry.take(MAX_ENTRY_METADATA_BYTES + 1),
            &mut io::sink(),
        )
        .map_err(|source| StoreError::ReadArchive { source })?;
        if n > MAX_ENTRY_METADATA_BYTES {
            return Err(StoreError::LimitExceeded {
                entry: lossy(&entry.path_bytes()),
                limit: "unread entry data",
                max: MAX_ENTRY_METADATA_BYTES,
            });
        }
        Ok(())
    }

    /// Creates directory `comps` (mode `mode`, mtime `mtime`, applied by [`Self::finish_dirs`]).
    pub(crate) fn put_dir(
        &mut self,
        name: &str,
        comps: &[Vec<u8>],
        mode: u32,
        mtime: i64,
    ) -> Result<(), StoreError> {
        self.check_path(name, comps)?;
        let meta = EntryMeta::plain(mode, mtime);
        self.directory(name, comps, meta)
    }

    /// Creates regular file `comps` from `reader`, which claims `declared` bytes; the caps of
    /// [`Limits`] are enforced on both the claim and the bytes actually read.
    pub(crate) fn put_file(
        &mut self,
        reader: &mut dyn Read,
        declared: u64,
        name: &str,
        comps: &[Vec<u8>],
        mode: u32,
        mtime: i64,
    ) -> Result<u64, StoreError> {
        self.check_path(name, comps)?;
        let Some((base, parents)) = comps.split_last() else {
            return Err(StoreError::UnsafeEntry {
                entry: name.to_string(),
                reason: "only a directory can name the archive root".into(),
            });
        };
        self.write_file(
            reader,
            declared,
            name,
            parents,
            base,
            EntryMeta::plain(mode, mtime),
        )
    }

    /// Creates symlink `comps` pointing at `target` (never followed).
    pub(crate) fn put_symlink(
        &mut self,
        target: &[u8],
        name: &str,
        comps: &[Vec<u8>],
        mtime: i64,
    ) -> Result<(), StoreError> {
        self.check_path(name, comps)?;
        let Some((base, parents)) = comps.split_last() else {
            return Err(StoreError::UnsafeEntry {
                entry: name.to_string(),
                reason: "only a directory can name the archive root".into(),
            });
        };
        let target = self.check_link_target(Some(target.into()), name)?;
        self.make_symlink(&target, name, parents, base, EntryMeta::plain(0o777, mtime))
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), StoreError> {
        let raw = entry.path_bytes().into_owned();
        let name = lossy(&raw);
        let reject = |reason: &str| StoreError::UnsafeEntry {
            entry: name.clone(),
            reason: reason.to_string(),
        };
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            self.stats
                .skipped
                .push(format!("{name}: global PAX header"));
            return Ok(());
        }
        if raw.is_empty() {
            return Err(reject("empty name"));
        }
        if raw.contains(&0) {
            return Err(reject("NUL byte in name"));
        }
        if raw.len() > self.limits.max_path_len {
            return Err(StoreError::LimitExceeded {
                entry: name,
                limit: "name length",
                max: self.limits.max_path_len as u64,
            });
        }
        let comps = normalize(&raw).map_err(|r| reject(&r))?;
        self.check_path(&name, &comps)?;
        let meta = self.entry_meta(entry, &name)?;

        if let Some((base, parents)) = comps.split_last() {
            if parents.iter().any(|c| c.starts_with(WH_PREFIX)) {
                return Err(reject("a whiteout name cannot be a directory"));
            }
            if base.starts_with(WH_PREFIX) {
                return match self.whiteouts {
                    Whiteouts::Keep => Err(reject(
                        "`.wh.` names are whiteouts and are only allowed in image layers",
                    )),
                    Whiteouts::Oci => self.whiteout(&name, parents, base, meta.mtime),
                };
            }
        }

        // Old tars mark directories with a trailing slash on a regular entry.
        let is_dir = etype.is_dir() || (etype.is_file() && raw.ends_with(b"/"));
        if is_dir {
            return self.directory(&name, &comps, meta);
        }
        let Some((base, parents)) = comps.split_last() else {
            return Err(reject("only a directory can name the archive root"));
        };
        if etype.is_file() || etype.is_contiguous() || etype.is_gnu_sparse() {
            self.regular(entry, &name, parents, base, meta)
        } else if etype.is_symlink() {
            self.symlink(entry, &name, parents, base, meta)
        } else if etype.is_hard_link() {
            self.hardlink(entry, &name, &comps)
        } else if etype.is_character_special() || etype.is_block_special() || etype.is_fifo() {
            self.special(entry, &name, parents, base, meta)
        } else {
            Err(reject(&format!(
                "unsupported entry type {:?}",
                char::from(etype.as_byte())
            )))
        }
    }

    fn entry_meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<EntryMeta, StoreError> {
        let bad = |what: &str, e: io::Error| StoreError::UnsafeEntry {
            entry: name.to_string(),
            reason: format!("invalid {what} in header: {e}"),
        };
        let h = entry.header();
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut mtime = i64::try_from(h.mtime().map_err(|e| bad("mtime", e))?).unwrap_or(i64::MAX);
        let owner = if self.opts.preserve_owner {
            let uid = h.uid().map_err(|e| bad("uid", e))?;
            let gid = h.gid().map_err(|e| bad("gid", e))?;
            match (u32::try_from(uid), u32::try_from(gid)) {
                (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => Some((u, g)),
                _ => return Err(bad("owner", io::Error::other(format!("{uid}:{gid}")))),
            }
        } else {
            None
        };
        let mut capability = None;
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|source| StoreError::ReadArchive { source })?
        {
            for ext in exts {
                let ext = ext.map_err(|source| StoreError::ReadArchive { source })?;
                match ext.key_bytes() {
                    b"mtime" => {
                        let v = lossy(ext.value_bytes());
                        let secs = v.split('.').next().unwrap_or_default();
                        mtime = secs
                            .parse()
                            .map_err(|_| bad("PAX mtime", io::Error::other(v.clone())))?;
                    }
                    CAPABILITY_PAX => capability = Some(ext.value_bytes().to_vec()),
                    _ => {}
                }
            }
        }
        Ok(EntryMeta {
            mode,
            owner,
            mtime,
            capability,
        })
    }

    /// Opens the directory `comps` below the root, one component at a time without following
    /// symlinks. With `create`, missing directories are made (mode 0755, mtime 0 at the end);
    /// without, a missing component gives `None`.
    fn walk(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
        entry: &str,
    ) -> Result<Option<OwnedFd>, StoreError> {
        let io_fail = |source: io::Error| StoreError::ExtractEntry {
            entry: entry.to_string(),
            source,
        };
        let mut cur = rustix::fs::openat(&self.root, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| io_fail(e.into()))?;
        for (i, c) in comps.iter().enumerate() {
            match rustix::fs::openat(&cur, os(c), DIR_FLAGS, Mode::empty()) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) if create => {
                    rustix::fs::mkdirat(&cur, os(c), Mode::from_raw_mode(0o755))
                        .map_err(|e| io_fail(e.into()))?;
                    self.dirs
                        .entry(join(&comps[..=i]))
                        .or_insert_with(DirMeta::implicit);
                    cur = rustix::fs::openat(&cur, os(c), DIR_FLAGS, Mode::empty())
                        .map_err(|e| io_fail(e.into()))?;
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    let is_link = rustix::fs::statat(&cur, os(c), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                    let what = if is_link {
                        "is a symlink"
                    } else {
                        "is not a directory"
                    };
                    return Err(StoreError::UnsafeEntry {
                        entry: entry.to_string(),
                        reason: format!("parent {:?} {what}", lossy(&join(&comps[..=i]))),
                    });
                }
                Err(e) => return Err(io_fail(e.into())),
            }
        }
        Ok(Some(cur))
    }

    /// Like [`Self::walk`] with `create`, which never returns `None`.
    fn parent_dir(&mut self, comps: &[Vec<u8>], entry: &str) -> Result<OwnedFd, StoreError> {
        self.walk(comps, true, entry)?
            .ok_or_else(|| StoreError::ExtractEntry {
                entry: entry.to_string(),
                source: io::Error::other("parent directory vanished"),
            })
    }

    /// Removes whatever is at `parents/base` (recursively for a directory). Returns whether
    /// something was there.
    fn remove_existing(
        &mut self,
        parent: &OwnedFd,
        parents: &[Vec<u8>],
        base: &[u8],
        entry: &str,
    ) -> Result<bool, StoreError> {
        let existed = match rustix::fs::statat(parent, os(base), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => false,
            Ok(_) => {
                remove_at(parent.as_fd(), os(base)).map_err(|source| StoreError::ExtractEntry {
                    entry: entry.to_string(),
                    source,
                })?;
                true
            }
            Err(e) => {
                return Err(StoreError::ExtractEntry {
                    entry: entry.to_string(),
                    source: e.into(),
                })
            }
        };
        if existed {
            let mut path = join(parents);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(base);
            let mut prefix = path.clone();
            prefix.push(b'/');
            self.dirs
                .retain(|k, _| k != &path && !k.starts_with(&prefix));
        }
        Ok(existed)
    }

    fn whiteout(
        &mut self,
        entry: &str,
        parents: &[Vec<u8>],
        base: &[u8],
        mtime: i64,
    ) -> Result<(), StoreError> {
        let io_fail = |source: io::Error| StoreError::ExtractEntry {
            entry: entry.to_string(),
            source,
        };
        if base == WH_OPAQUE {
            if parents.is_empty() {
                return Err(StoreError::UnsafeEntry {
                    entry: entry.to_string(),
                    reason: "an opaque marker on the layer root is not supported".into(),
                });
            }
            let dir = self.parent_dir(parents, entry)?;
            rustix::fs::fsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| io_fail(e.into()))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if base.starts_with(WH_META_PREFIX) {
            self.stats
                .skipped
                .push(format!("{entry}: aufs metadata, not an OCI whiteout"));
            return Ok(());
        }
        let target = &base[WH_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(StoreError::UnsafeEntry {
                entry: entry.to_string(),
                reason: "whiteout of an empty name, `.` or `..`".into(),
            });
        }
        let parent = self.parent_dir(parents, entry)?;
        self.remove_existing(&parent, parents, target, entry)?;
        rustix::fs::mknodat(
            &parent,
            os(target),
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| io_fail(e.into()))?;
        rustix::fs::utimensat(
            &parent,
            os(target),
            &timestamps(mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_fail(e.into()))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn directory(
        &mut self,
        entry: &str,
        comps: &[Vec<u8>],
        meta: EntryMeta,
    ) -> Result<(), StoreError> {
        if let Some((base, parents)) = comps.split_last() {
            let parent = self.parent_dir(parents, entry)?;
            let existing = rustix::fs::statat(&parent, os(base), AtFlags::SYMLINK_NOFOLLOW);
            let is_dir = matches!(&existing, Ok(st)
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory);
            if !is_dir {
                self.remove_existing(&parent, parents, base, entry)?;
                // Owner-only until the end, so extraction can always write inside it.
                rustix::fs::mkdirat(&parent, os(base), Mode::from_raw_mode(0o700)).map_err(
                    |e| StoreError::ExtractEntry {
                        entry: entry.to_string(),
                        source: e.into(),
                    },
                )?;
            }
        }
        self.dirs.insert(
            join(comps),
            DirMeta {
                mode: meta.mode,
                owner: meta.owner,
                mtime: meta.mtime,
            },
        );
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        parents: &[Vec<u8>],
        base: &[u8],
        meta: EntryMeta,
    ) -> Result<(), StoreError> {
        let declared = entry.size().max(entry.header().entry_size().unwrap_or(0));
        self.write_file(entry, declared, name, parents, base, meta)
            .map(|_| ())
    }

    /// Writes one regular file from `reader`, enforcing the size limits on the declared size and
    /// on the bytes actually read. Returns the bytes written.
    fn write_file(
        &mut self,
        reader: &mut dyn Read,
        declared: u64,
        name: &str,
        parents: &[Vec<u8>],
        base: &[u8],
        meta: EntryMeta,
    ) -> Result<u64, StoreError> {
        let limits = self.limits;
        let too_big = |limit: &'static str, max: u64| StoreError::LimitExceeded {
            entry: name.to_string(),
            limit,
            max,
        };
        if declared > limits.max_file_bytes {
            return Err(too_big("file size", limits.max_file_bytes));
        }
        self.declared = self.declared.saturating_add(declared);
        if self.declared > limits.max_bytes {
            return Err(too_big("total size", limits.max_bytes));
        }
        let io_fail = |source: io::Error| StoreError::ExtractEntry {
            entry: name.to_string(),
            source,
        };
        let parent = self.parent_dir(parents, name)?;
        self.remove_existing(&parent, parents, base, name)?;
        let fd = rustix::fs::openat(
            &parent,
            os(base),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_fail(e.into()))?;
        let mut file = File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        let mut file_bytes = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(StoreError::ReadArchive { source }),
            };
            file_bytes += n as u64;
            self.written += n as u64;
            if file_bytes > limits.max_file_bytes {
                return Err(too_big("file size", limits.max_file_bytes));
            }
            if self.written > limits.max_bytes {
                return Err(too_big("total size", limits.max_bytes));
            }
            file.write_all(&buf[..n]).map_err(io_fail)?;
        }
        self.stats.bytes += file_bytes;
        if let Some((uid, gid)) = meta.owner {
            rustix::fs::fchown(&file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| io_fail(e.into()))?;
        }
        // After chown, which clears setuid bits and capabilities.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode)).map_err(|e| io_fail(e.into()))?;
        if let Some(cap) = meta.capability.as_ref().filter(|_| self.xattrs) {
            rustix::fs::fsetxattr(&file, "security.capability", cap, XattrFlags::empty())
                .map_err(|e| io_fail(e.into()))?;
        }
        rustix::fs::futimens(&file, &timestamps(meta.mtime)).map_err(|e| io_fail(e.into()))?;
        Ok(file_bytes)
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        parents: &[Vec<u8>],
        base: &[u8],
        meta: EntryMeta,
    ) -> Result<(), StoreError> {
        let target = self.link_target(entry, name)?;
        self.make_symlink(&target, name, parents, base, meta)
    }

    fn make_symlink(
        &mut self,
        target: &[u8],
        name: &str,
        parents: &[Vec<u8>],
        base: &[u8],
        meta: EntryMeta,
    ) -> Result<(), StoreError> {
        let parent = self.parent_dir(parents, name)?;
        self.remove_existing(&parent, parents, base, name)?;
        rustix::fs::symlinkat(os(target), &parent, os(base)).map_err(|e| {
            StoreError::ExtractEntry {
                entry: name.to_string(),
                source: e.into(),
            }
        })?;
        // Symlinks have no mode of their own; owner and mtime never follow the link.
        self.set_meta_at(&parent, base, &meta, false, name)
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        comps: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let reject = |reason: String| StoreError::UnsafeEntry {
            entry: name.to_string(),
            reason,
        };
        let target = self.link_target(entry, name)?;
        let tcomps = normalize(&target).map_err(|r| reject(format!("hardlink target: {r}")))?;
        let Some((tbase, tparents)) = tcomps.split_last() else {
            return Err(reject("hardlink to the archive root".into()));
        };
        if tcomps == comps {
            return Err(reject("hardlink to itself".into()));
        }
        let not_extracted = || {
            reject(format!(
                "hardlink target {:?} has not been extracted",
                lossy(&target)
            ))
        };
        let tparent = match self.walk(tparents, false, name)? {
            Some(fd) => fd,
            None => return Err(not_extracted()),
        };
        match rustix::fs::statat(&tparent, os(tbase), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            Ok(_) => {
                return Err(reject(format!(
                    "hardlink target {:?} is not a regular file",
                    lossy(&target)
                )))
            }
            Err(Errno::NOENT) => return Err(not_extracted()),
            Err(e) => {
                return Err(StoreError::ExtractEntry {
                    entry: name.to_string(),
                    source: e.into(),
                })
            }
        }
        let Some((base, parents)) = comps.split_last() else {
            return Err(reject("a hardlink cannot name the archive root".into()));
        };
        let parent = self.parent_dir(parents, name)?;
        self.remove_existing(&parent, parents, base, name)?;
        // linkat without AT_SYMLINK_FOLLOW never follows a symlink.
        rustix::fs::linkat(&tparent, os(tbase), &parent, os(base), AtFlags::empty()).map_err(|e| {
            StoreError::ExtractEntry {
                entry: name.to_string(),
                source: e.into(),
            }
        })
    }

    fn special<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        parents: &[Vec<u8>],
        base: &[u8],
        meta: EntryMeta,
    ) -> Result<(), StoreError> {
        let etype = entry.header().entry_type();
        let (file_type, dev) = if etype.is_fifo() {
            (FileType::Fifo, 0)
        } else {
            if self.opts.skip_device_nodes {
                self.stats.skipped.push(format!("{name}: device node"));
                return Ok(());
            }
            let bad = |e: io::Error| StoreError::UnsafeEntry {
                entry: name.to_string(),
                reason: format!("invalid device number: {e}"),
            };
            let major = entry.header().device_major().map_err(bad)?.unwrap_or(0);
            let minor = entry.header().device_minor().map_err(bad)?.unwrap_or(0);
            if etype.is_character_special() {
                if major == 0 && minor == 0 {
                    return Err(StoreError::UnsafeEntry {
                        entry: name.to_string(),
                        reason: "a 0:0 character device is an overlay whiteout; layers must \
                                 use `.wh.` names"
                            .into(),
                    });
                }
                (FileType::CharacterDevice, rustix::fs::makedev(major, minor))
            } else {
                (FileType::BlockDevice, rustix::fs::makedev(major, minor))
            }
        };
        let parent = self.parent_dir(parents, name)?;
        self.remove_existing(&parent, parents, base, name)?;
        rustix::fs::mknodat(
            &parent,
            os(base),
            file_type,
            Mode::from_raw_mode(meta.mode),
            dev,
        )
        .map_err(|e| StoreError::ExtractEntry {
            entry: name.to_string(),
            source: e.into(),
        })?;
        self.set_meta_at(&parent, base, &meta, true, name)
    }

    /// Owner, mode (unless `with_mode` is false, for symlinks) and mtime of a just-created
    /// non-directory entry.
    fn set_meta_at(
        &self,
        parent: &OwnedFd,
        base: &[u8],
        meta: &EntryMeta,
        with_mode: bool,
        name: &str,
    ) -> Result<(), StoreError> {
        let io_fail = |e: Errno| StoreError::ExtractEntry {
            entry: name.to_string(),
            source: e.into(),
        };
        if let Some((uid, gid)) = meta.owner {
            rustix::fs::chownat(
                parent,
                os(base),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io_fail)?;
        }
        if with_mode {
            // Not a symlink: it was just created by mknodat in a directory only we write to.
            rustix::fs::chmodat(
                parent,
                os(base),
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(io_fail)?;
        }
        rustix::fs::utimensat(
            parent,
            os(base),
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_fail)
    }

    fn link_target<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        name: &str,
    ) -> Result<Vec<u8>, StoreError> {
        self.check_link_target(entry.link_name_bytes(), name)
    }

    fn check_link_target(
        &self,
        target: Option<std::borrow::Cow<'_, [u8]>>,
        name: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let reject = |reason: &str| StoreError::UnsafeEntry {
            entry: name.to_string(),
            reason: reason.to_string(),
        };
        let target = target.map(|t| t.into_owned()).unwrap_or_default();
        if target.is_empty() {
            return Err(reject("link without a target"));
        }
        if target.contains(&0) {
            return Err(reject("NUL byte in link target"));
        }
        // symlinkat refuses targets of PATH_MAX bytes or more.
        if target.len() > self.limits.max_path_len.min(PATH_MAX - 1) {
            return Err(StoreError::LimitExceeded {
                entry: name.to_string(),
                limit: "link target length",
                max: self.limits.max_path_len as u64,
            });
        }
        Ok(target)
    }

    /// Applies directory metadata, deepest first, once every entry is written.
    pub(crate) fn finish_dirs(&mut self) -> Result<(), StoreError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, meta) in dirs.iter().rev() {
            let name = lossy(path);
            let comps: Vec<Vec<u8>> = if path.is_empty() {
                Vec::new()
            } else {
                path.split(|b| *b == b'/').map(<[u8]>::to_vec).collect()
            };
            let Some(fd) = self.walk(&comps, false, &name)? else {
                continue;
            };
            let io_fail = |e: Errno| StoreError::ExtractEntry {
                entry: name.clone(),
                source: e.into(),
            };
            if let Some((uid, gid)) = meta.owner {
                rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(io_fail)?;
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode)).map_err(io_fail)?;
            rustix::fs::futimens(&fd, &timestamps(meta.mtime)).map_err(io_fail)?;
        }
        Ok(())
    }
}

/// Removes `name` in `parent`, recursively for a directory, never following symlinks.
fn remove_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(parent, name, AtFlags::empty())?);
    }
    let dir = rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    let mut children = Vec::new();
    for item in rustix::fs::Dir::read_from(&dir)? {
        let item = item?;
        let n = item.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push(n.to_vec());
        }
    }
    for child in children {
        remove_at(dir.as_fd(), os(&child))?;
    }
    Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_and_refuses_climbing() {
        let n = |s: &str| normalize(s.as_bytes());
        assert_eq!(n("./a/b/"), Ok(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(n("/etc/x"), Ok(vec![b"etc".to_vec(), b"x".to_vec()]));
        assert_eq!(n("a/../b"), Ok(vec![b"b".to_vec()]));
        assert_eq!(n("./"), Ok(vec![]));
        assert!(n("../x").is_err());
        assert!(n("a/../../x").is_err());
        assert!(n("/..").is_err());
    }

    #[test]
    fn sniffs_compression() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"plain text inside").expect("gzip");
        let gz = gz.finish().expect("gzip");
        let mut out = String::new();
        open_maybe_compressed(Box::new(io::Cursor::new(gz)))
            .expect("gzip ok")
            .read_to_string(&mut out)
            .expect("read");
        assert_eq!(out, "plain text inside");

        let mut out = String::new();
        open_maybe_compressed(Box::new(io::Cursor::new(b"ab".to_vec())))
            .expect("short plain ok")
            .read_to_string(&mut out)
            .expect("read");
        assert_eq!(out, "ab");

        let zstd = vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0];
        let err = open_maybe_compressed(Box::new(io::Cursor::new(zstd))).err();
        assert!(matches!(
            err,
            Some(StoreError::UnsupportedCompression { format: "zstd" })
        ));
    }

    #[test]
    fn rejections_are_classified_and_counted() {
        let unsafe_entry = |reason: &str| StoreError::UnsafeEntry {
            entry: "e".into(),
            reason: reason.into(),
        };
        let limit = |limit: &'static str| StoreError::LimitExceeded {
            entry: "e".into(),
            limit,
            max: 1,
        };
        let cases = [
            (unsafe_entry("`..` climbs above the archive root"), "path"),
            (unsafe_entry("empty name"), "path"),
            (unsafe_entry("parent \"l\" is a symlink"), "parent"),
            (
                unsafe_entry("hardlink target \"s\" is not a regular file"),
                "link",
            ),
            (unsafe_entry("link without a target"), "link"),
            (
                unsafe_entry("a whiteout name cannot be a directory"),
                "whiteout",
            ),
            (
                unsafe_entry("whiteout of an empty name, `.` or `..`"),
                "whiteout",
            ),
            (
                unsafe_entry("a 0:0 character device is an overlay whiteout; layers must use"),
                "entry_type",
            ),
            (unsafe_entry("unsupported entry type 'Z'"), "entry_type"),
            (unsafe_entry("invalid mode in header: x"), "header"),
            (limit("entry count"), "too_many_entries"),
            (limit("file size"), "file_too_large"),
            (limit("total size"), "total_too_large"),
            (limit("name length"), "path_too_long"),
            (limit("name component length"), "path_too_long"),
            (limit("entry metadata size"), "metadata_too_large"),
            (limit("unread entry data"), "metadata_too_large"),
            (limit("trailing data"), "trailing_data"),
        ];
        for (e, want) in cases {
            assert_eq!(
                RejectReason::of(&e).map(RejectReason::as_str),
                Some(want),
                "{e}"
            );
        }
        let internal = StoreError::io("write", "/x", io::Error::other("disk"));
        assert_eq!(RejectReason::of(&internal), None);

        let names: Vec<&str> = rejected_counts().iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), RejectReason::ALL.len());
        let before = rejected_counts();
        record(RejectReason::Whiteout);
        let after = rejected_counts();
        let i = names.iter().position(|n| *n == "whiteout").expect("listed");
        assert!(after[i].1 > before[i].1);
    }

    #[test]
    fn metered_reader_trips_past_its_budget() {
        let meter = Rc::new(Meter::default());
        let mut src = io::repeat(7).take(10_000);
        let mut r = Metered {
            inner: &mut src,
            meter: meter.clone(),
        };
        let mut buf = [0u8; 4096];
        meter.arm(5000);
        assert_eq!(r.read(&mut buf).expect("within budget"), 4096);
        assert_eq!(r.read(&mut buf).expect("rest of budget"), 904);
        assert!(r.read(&mut buf).is_err());
        assert!(meter.tripped.get());
        meter.disarm();
        assert_eq!(r.read(&mut buf).expect("unmetered"), 4096);
    }

    #[test]
    fn default_limits() {
        let l = Limits::default();
        assert_eq!(l.max_bytes, 8 * 1024 * 1024 * 1024);
        assert_eq!(l.max_entries, 2_000_000);
        assert_eq!(l.max_file_bytes, 4 * 1024 * 1024 * 1024);
        assert_eq!(l.max_path_len, 4096);
    }
}
