//! Function code packages: an uploaded zip, tar or tar.gz unpacked once, safely, into
//! `code/<hex>` (see [`Store::import_code`](crate::Store::import_code)), to be bind-mounted
//! read-only at `/var/task`.
//!
//! An archive is untrusted input. Every entry must pass these rules, or the import fails with a
//! typed [`StoreError`] naming the entry ([`StoreError::UnsafeEntry`], kind invalid argument;
//! [`StoreError::LimitExceeded`], kind too large), and nothing is left behind:
//!
//! - Names: no absolute path, no `..` component (also not behind a backslash, `..\x`), no NUL, no
//!   empty name, at most [`CodeLimits::max_path_len`] bytes and [`CodeLimits::max_depth`]
//!   components, no `.wh.` component (reserved for image layer whiteouts), and no path listed
//!   twice. Zip names written with `\` separators by Windows tools are read with `/`.
//! - Types: regular files, directories and symlinks only (plus tar hardlinks). A symlink's target,
//!   resolved relative to the link's directory, must stay inside the code root — first lexically
//!   while unpacking, then again after unpacking by following every link in the unpacked tree, so
//!   chains of links cannot climb out either. A tar hardlink must name an earlier regular file.
//! - Sizes: every [`CodeLimits`] cap is enforced while streaming, on declared sizes and on bytes
//!   actually produced; a zip entry producing more (or fewer) bytes than it declares is rejected
//!   the moment it does. Whole entries are never buffered.
//!
//! Unpacking reuses the safe extractor of [`crate::archive`]: every file is created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` under directory handles opened one component at a time without
//! following symlinks, so nothing is ever written through a link or outside the scratch dir.
//!
//! The unpacked tree is then normalized so the same code gives the same digest whatever the
//! archive format or tool: owner root:root (when Strata runs as root; otherwise its own user),
//! mode 0755 for directories and for files with any execute bit, 0644 for other files, no setuid,
//! setgid or sticky bits, no xattrs, and every mtime (the root's included) set to
//! [`CODE_MTIME`], 1980-01-01T00:00:00Z — the earliest time a zip can hold, so the tree can be
//! zipped again by any tool.
//!
//! Rejections are counted by reason ([`rejected_counts`]) so the platform can report them.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;
use rustix::fs::{AtFlags, Gid, Timespec, Timestamps, Uid};
use strata_types::Digest;
use zip::{CompressionMethod, ZipArchive};

use crate::archive::{
    self, EntryInfo, EntryKind, ExtractOptions, Extractor, Hooks, Limits, Whiteouts,
};
use crate::error::{io_err, StoreError};

/// The mtime of every entry of a normalized code tree: 1980-01-01T00:00:00Z.
pub const CODE_MTIME: i64 = 315_532_800;

/// Compression-ratio checks ignore the first MiB of unpacked content: tiny files of repeated
/// bytes legitimately compress far better than [`CodeLimits::max_ratio`].
pub const RATIO_FLOOR_BYTES: u64 = 1 << 20;

/// How many symlinks one path may pass through when checking where a link points (as Linux).
const MAX_SYMLINK_HOPS: u32 = 40;

/// The name used for limits of the archive as a whole rather than of one entry.
const WHOLE_ARCHIVE: &str = "(whole archive)";

/// Caps on one uploaded code package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLimits {
    /// Size of the uploaded archive file.
    pub max_archive_bytes: u64,
    /// Total bytes of file content once unpacked.
    pub max_unpacked_bytes: u64,
    /// Number of archive entries.
    pub max_entries: u64,
    /// Size of one unpacked file.
    pub max_file_bytes: u64,
    /// Unpacked / compressed size, for each zip entry and for the archive as a whole (beyond
    /// [`RATIO_FLOOR_BYTES`]).
    pub max_ratio: u64,
    /// Length in bytes of an entry name or link target.
    pub max_path_len: usize,
    /// Number of components of an entry name.
    pub max_depth: usize,
}

impl Default for CodeLimits {
    /// 256 MiB archive, 512 MiB unpacked, 20,000 entries, 256 MiB per file, ratio 200,
    /// 1024-byte names, 64 levels.
    fn default() -> Self {
        CodeLimits {
            max_archive_bytes: 256 << 20,
            max_unpacked_bytes: 512 << 20,
            max_entries: 20_000,
            max_file_bytes: 256 << 20,
            max_ratio: 200,
            max_path_len: 1024,
            max_depth: 64,
        }
    }
}

/// The container formats a code package may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeFormat {
    /// A zip; entries stored or deflated.
    Zip,
    /// An uncompressed (ustar, GNU or PAX) tar.
    Tar,
    /// A gzip-compressed tar.
    TarGz,
}

impl CodeFormat {
    /// Recognizes the format by content, not by file name: zip by `PK\x03\x04` (or the empty
    /// zip's `PK\x05\x06`), gzip by `1f 8b`, tar by `ustar` at offset 257.
    pub fn sniff(path: &Path) -> Result<CodeFormat, StoreError> {
        let file = File::open(path).map_err(|source| StoreError::OpenArchive {
            path: path.to_path_buf(),
            source,
        })?;
        let mut head = Vec::with_capacity(512);
        file.take(512)
            .read_to_end(&mut head)
            .map_err(io_err("read code archive", path))?;
        let format =
            Self::from_head(&head).map_err(|reason| StoreError::UnsupportedCodeArchive {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(format)
    }

    fn from_head(head: &[u8]) -> Result<CodeFormat, String> {
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Ok(CodeFormat::Zip)
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Ok(CodeFormat::TarGz)
        } else if head.get(257..262) == Some(&b"ustar"[..]) {
            Ok(CodeFormat::Tar)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
            || head.starts_with(b"BZh")
        {
            Err("zstd, xz and bzip2 compression are not supported".into())
        } else if head.is_empty() {
            Err("the file is empty".into())
        } else {
            Err("the content is not a zip, a tar or a gzip stream".into())
        }
    }
}

/// What the store knows about an imported code package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeMeta {
    /// The tree digest of the normalized tree; also its directory name under `code/`.
    pub digest: Digest,
    /// Sum of the sizes of the regular files.
    pub size_bytes: u64,
    /// Number of entries below the code root.
    pub entries: u64,
}

/// Why a code package was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a zip, tar or tar.gz, or an unsupported zip compression method.
    Format,
    /// A truncated or corrupt archive, or an entry whose content contradicts its header.
    Corrupt,
    /// An absolute name, a `..` component, NUL, an empty or reserved name.
    Path,
    /// A name or link target longer than the limit.
    PathTooLong,
    /// A name with more components than the limit.
    TooDeep,
    /// The same path listed twice.
    Duplicate,
    /// A symlink pointing out of the code root (or without a target).
    Link,
    /// A hardlink to anything but an earlier regular file.
    Hardlink,
    /// A device node, fifo, socket or unknown entry type.
    EntryType,
    /// An encrypted zip entry.
    Encrypted,
    /// Zip entries sharing compressed data.
    Overlapping,
    /// More entries than [`CodeLimits::max_entries`].
    TooManyEntries,
    /// A file over [`CodeLimits::max_file_bytes`].
    FileTooLarge,
    /// More content than [`CodeLimits::max_unpacked_bytes`].
    UnpackedTooLarge,
    /// An archive file over [`CodeLimits::max_archive_bytes`].
    ArchiveTooLarge,
    /// An entry or archive expanding more than [`CodeLimits::max_ratio`].
    CompressionRatio,
    /// Any other unsafe entry (e.g. one written through a symlinked parent).
    Unsafe,
}

impl RejectReason {
    /// Every reason, in the order [`rejected_counts`] reports them.
    pub const ALL: [RejectReason; 17] = [
        RejectReason::Format,
        RejectReason::Corrupt,
        RejectReason::Path,
        RejectReason::PathTooLong,
        RejectReason::TooDeep,
        RejectReason::Duplicate,
        RejectReason::Link,
        RejectReason::Hardlink,
        RejectReason::EntryType,
        RejectReason::Encrypted,
        RejectReason::Overlapping,
        RejectReason::TooManyEntries,
        RejectReason::FileTooLarge,
        RejectReason::UnpackedTooLarge,
        RejectReason::ArchiveTooLarge,
        RejectReason::CompressionRatio,
        RejectReason::Unsafe,
    ];

    /// A stable snake_case name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Format => "format",
            RejectReason::Corrupt => "corrupt",
            RejectReason::Path => "path",
            RejectReason::PathTooLong => "path_too_long",
            RejectReason::TooDeep => "too_deep",
            RejectReason::Duplicate => "duplicate",
            RejectReason::Link => "link",
            RejectReason::Hardlink => "hardlink",
            RejectReason::EntryType => "entry_type",
            RejectReason::Encrypted => "encrypted",
            RejectReason::Overlapping => "overlapping",
            RejectReason::TooManyEntries => "too_many_entries",
            RejectReason::FileTooLarge => "file_too_large",
            RejectReason::UnpackedTooLarge => "unpacked_too_large",
            RejectReason::ArchiveTooLarge => "archive_too_large",
            RejectReason::CompressionRatio => "compression_ratio",
            RejectReason::Unsafe => "unsafe",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The reason for an error that no rule classified; `None` for internal failures (disk,
    /// permissions), which are not the archive's fault.
    fn of(e: &StoreError) -> Option<RejectReason> {
        Some(match e {
            StoreError::UnsupportedCodeArchive { .. }
            | StoreError::UnsupportedCompression { .. } => RejectReason::Format,
            StoreError::ReadArchive { .. } => RejectReason::Corrupt,
            StoreError::UnsafeEntry { .. } => RejectReason::Unsafe,
            StoreError::LimitExceeded { limit, .. } => match *limit {
                "entry count" => RejectReason::TooManyEntries,
                "file size" => RejectReason::FileTooLarge,
                "total size" => RejectReason::UnpackedTooLarge,
                // A directory, link or device entry claiming content it cannot have.
                "unread entry data" => RejectReason::Corrupt,
                "archive size" => RejectReason::ArchiveTooLarge,
                "compression ratio" => RejectReason::CompressionRatio,
                "path depth" => RejectReason::TooDeep,
                _ => RejectReason::PathTooLong,
            },
            _ => return None,
        })
    }
}

static REJECTED: [AtomicU64; RejectReason::ALL.len()] =
    [const { AtomicU64::new(0) }; RejectReason::ALL.len()];

/// How many code packages this process rejected, per reason (every reason listed, zeros
/// included), e.g. `("path", 3)`.
pub fn rejected_counts() -> Vec<(&'static str, u64)> {
    RejectReason::ALL
        .iter()
        .map(|r| (r.as_str(), REJECTED[r.index()].load(Ordering::Relaxed)))
        .collect()
}

fn record(reason: RejectReason) {
    REJECTED[reason.index()].fetch_add(1, Ordering::Relaxed);
}

/// Unpacks `archive` into `staged` (which must not exist; its parent is a private scratch dir)
/// and normalizes it. Counts a rejection when the archive is at fault.
pub(crate) fn unpack(archive: &Path, staged: &Path, limits: &CodeLimits) -> Result<(), StoreError> {
    let mut policy = Policy::new(limits);
    let result = unpack_with(archive, staged, limits, &mut policy);
    if let Err(e) = &result {
        if let Some(reason) = policy.reason.get().or_else(|| RejectReason::of(e)) {
            record(reason);
            tracing::info!(archive = %archive.display(), reason = reason.as_str(), error = %e,
                "rejected function code");
        }
    }
    result
}

fn unpack_with(
    archive: &Path,
    staged: &Path,
    limits: &CodeLimits,
    policy: &mut Policy<'_>,
) -> Result<(), StoreError> {
    let md = fs::metadata(archive).map_err(|source| StoreError::OpenArchive {
        path: archive.to_path_buf(),
        source,
    })?;
    if !md.is_file() {
        return Err(StoreError::UnsupportedCodeArchive {
            path: archive.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    let archive_len = md.len();
    if archive_len > limits.max_archive_bytes {
        return Err(policy.too_large(
            RejectReason::ArchiveTooLarge,
            WHOLE_ARCHIVE.as_bytes(),
            "archive size",
            limits.max_archive_bytes,
        ));
    }
    let format = CodeFormat::sniff(archive)?;
    fs::create_dir(staged).map_err(io_err("create code staging dir", staged))?;
    match format {
        CodeFormat::Zip => unpack_zip(archive, archive_len, staged, limits, policy)?,
        CodeFormat::Tar | CodeFormat::TarGz => {
            unpack_tar(archive, archive_len, format, staged, limits, policy)?
        }
    }
    check_links(staged, policy)?;
    normalize(staged)
}

// ---- rules shared by every format ----

/// The per-entry rules, and what has been seen so far.
struct Policy<'l> {
    limits: &'l CodeLimits,
    /// Every normalized path listed so far.
    seen: HashSet<Vec<u8>>,
    /// Normalized paths of regular files so far (hardlink targets).
    files: HashSet<Vec<u8>>,
    /// The reason of the rejection this policy made, if it made one.
    reason: Cell<Option<RejectReason>>,
    /// Whether `\` separates components, as in zips written by Windows tools.
    backslash_separates: bool,
}

impl<'l> Policy<'l> {
    fn new(limits: &'l CodeLimits) -> Self {
        Policy {
            limits,
            seen: HashSet::new(),
            files: HashSet::new(),
            reason: Cell::new(None),
            backslash_separates: false,
        }
    }

    fn reject(&self, reason: RejectReason, entry: &[u8], msg: impl Into<String>) -> StoreError {
        self.reason.set(Some(reason));
        StoreError::UnsafeEntry {
            entry: lossy(entry),
            reason: msg.into(),
        }
    }

    fn too_large(
        &self,
        reason: RejectReason,
        entry: &[u8],
        limit: &'static str,
        max: u64,
    ) -> StoreError {
        self.reason.set(Some(reason));
        StoreError::LimitExceeded {
            entry: lossy(entry),
            limit,
            max,
        }
    }

    /// Checks an entry name and splits it into components (empty and `.` dropped).
    fn components(&self, raw: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let reject = |msg: &str| self.reject(RejectReason::Path, raw, msg);
        if raw.is_empty() {
            return Err(reject("empty name"));
        }
        if raw.contains(&0) {
            return Err(reject("NUL byte in name"));
        }
        if raw.len() > self.limits.max_path_len {
            return Err(self.too_large(
                RejectReason::PathTooLong,
                raw,
                "name length",
                self.limits.max_path_len as u64,
            ));
        }
        if raw.starts_with(b"/") {
            return Err(reject(
                "absolute path; names must be relative to the code root",
            ));
        }
        let mut comps = Vec::new();
        let sep = |b: &u8| *b == b'/' || (self.backslash_separates && *b == b'\\');
        for c in raw.split(sep) {
            match c {
                b"" | b"." => continue,
                b".." => return Err(reject("`..` component; names must stay below the root")),
                c if c.split(|b| *b == b'\\').any(|p| p == b"..") => {
                    return Err(reject("`..` behind a backslash (`..\\`)"))
                }
                c if c.starts_with(b".wh.") => {
                    return Err(reject(
                        "`.wh.` names are reserved for image layer whiteouts",
                    ))
                }
                c => comps.push(c.to_vec()),
            }
        }
        if comps.len() > self.limits.max_depth {
            return Err(self.too_large(
                RejectReason::TooDeep,
                raw,
                "path depth",
                self.limits.max_depth as u64,
            ));
        }
        Ok(comps)
    }

    /// Checks one entry (for a symlink only its name: see [`Self::symlink_target`]) and
    /// returns its components.
    fn entry(&mut self, raw: &[u8], kind: EntryKind) -> Result<Vec<Vec<u8>>, StoreError> {
        let comps = self.components(raw)?;
        if comps.is_empty() {
            if kind == EntryKind::Dir {
                return Ok(comps); // `./`: the root itself
            }
            return Err(self.reject(
                RejectReason::Path,
                raw,
                "only a directory can name the root",
            ));
        }
        match kind {
            EntryKind::Dir | EntryKind::File | EntryKind::Symlink | EntryKind::Hardlink => {}
            EntryKind::Special => {
                return Err(self.reject(
                    RejectReason::EntryType,
                    raw,
                    "device nodes, fifos and sockets are not allowed in function code; only \
                     files, directories and symlinks are",
                ))
            }
            EntryKind::Other => {
                return Err(self.reject(
                    RejectReason::EntryType,
                    raw,
                    "unsupported entry type; only files, directories and symlinks are allowed",
                ))
            }
        }
        let key = comps.join(&b'/');
        if !self.seen.insert(key.clone()) {
            return Err(self.reject(
                RejectReason::Duplicate,
                raw,
                "duplicate entry: this path is listed more than once",
            ));
        }
        if matches!(kind, EntryKind::File | EntryKind::Hardlink) {
            self.files.insert(key);
        }
        Ok(comps)
    }

    /// Checks a symlink target: relative, and staying inside the root when resolved lexically
    /// from the link's directory.
    fn symlink_target(
        &self,
        raw: &[u8],
        comps: &[Vec<u8>],
        target: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let reject = |msg: &str| self.reject(RejectReason::Link, raw, msg);
        let target = target.unwrap_or_default();
        if target.is_empty() {
            return Err(reject("symlink without a target"));
        }
        if target.contains(&0) {
            return Err(reject("NUL byte in symlink target"));
        }
        if target.len() > self.limits.max_path_len {
            return Err(self.too_large(
                RejectReason::PathTooLong,
                raw,
                "link target length",
                self.limits.max_path_len as u64,
            ));
        }
        if target.starts_with(b"/") {
            return Err(reject(&format!(
                "symlink target {:?} is absolute; no link may point out of the code root",
                lossy(target)
            )));
        }
        let mut depth = comps.len().saturating_sub(1);
        for c in target.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." if depth == 0 => {
                    return Err(reject(&format!(
                        "symlink target {:?} climbs out of the code root; no link may point out",
                        lossy(target)
                    )))
                }
                b".." => depth -= 1,
                _ => depth += 1,
            }
        }
        Ok(())
    }

    /// Checks a tar hardlink target: an earlier regular file of the archive.
    fn hardlink_target(&self, raw: &[u8], target: Option<&[u8]>) -> Result<(), StoreError> {
        let target = target.unwrap_or_default();
        let out = |msg: String| self.reject(RejectReason::Hardlink, raw, msg);
        let bad = target.is_empty()
            || target.contains(&0)
            || target.starts_with(b"/")
            || target.split(|b| *b == b'/').any(|c| c == b"..");
        if bad {
            return Err(out(format!(
                "hardlink target {:?} is not a file of the archive; hardlinks may only point \
                 to an earlier regular file",
                lossy(target)
            )));
        }
        let key = target
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect::<Vec<_>>()
            .join(&b'/');
        if !self.files.contains(&key) {
            return Err(out(format!(
                "hardlink target {:?} is not an earlier regular file of the archive",
                lossy(target)
            )));
        }
        Ok(())
    }

    /// The whole tar-entry check.
    fn tar_entry(&mut self, e: &EntryInfo<'_>) -> Result<(), StoreError> {
        let comps = self.entry(e.name, e.kind)?;
        match e.kind {
            EntryKind::Symlink => self.symlink_target(e.name, &comps, e.link),
            EntryKind::Hardlink => self.hardlink_target(e.name, e.link),
            _ => Ok(()),
        }
    }
}

// ---- tar and tar.gz ----

fn unpack_tar(
    archive: &Path,
    archive_len: u64,
    format: CodeFormat,
    staged: &Path,
    limits: &CodeLimits,
    policy: &mut Policy<'_>,
) -> Result<(), StoreError> {
    let file = File::open(archive).map_err(|source| StoreError::OpenArchive {
        path: archive.to_path_buf(),
        source,
    })?;
    let tripped = Rc::new(Cell::new(false));
    let mut reader: Box<dyn Read> = match format {
        CodeFormat::TarGz => {
            let cap = archive_len
                .saturating_mul(limits.max_ratio)
                .max(RATIO_FLOOR_BYTES);
            let gz = MultiGzDecoder::new(BufReader::new(file));
            let mut capped = Capped {
                inner: gz,
                left: cap,
                tripped: tripped.clone(),
            };
            let mut head = Vec::with_capacity(512);
            (&mut capped)
                .take(512)
                .read_to_end(&mut head)
                .map_err(|source| StoreError::ReadArchive { source })?;
            if head.len() == 512 && head.get(257..262) != Some(&b"ustar"[..]) {
                return Err(StoreError::UnsupportedCodeArchive {
                    path: archive.to_path_buf(),
                    reason: "the gzip stream does not hold a tar archive".into(),
                });
            }
            Box::new(io::Cursor::new(head).chain(capped))
        }
        _ => Box::new(BufReader::new(file)),
    };
    let tar_limits = Limits {
        max_bytes: limits.max_unpacked_bytes,
        max_entries: limits.max_entries,
        max_file_bytes: limits.max_file_bytes,
        max_path_len: limits.max_path_len,
    };
    let mut check = |e: &EntryInfo<'_>| policy.tar_entry(e);
    let mut hooks = Hooks {
        check: &mut check,
        xattrs: false,
    };
    let result = archive::extract_tar_with(
        &mut reader,
        staged,
        Whiteouts::Keep,
        &ExtractOptions::default(),
        &tar_limits,
        &mut hooks,
    );
    match result {
        Err(_) if tripped.get() => Err(policy.too_large(
            RejectReason::CompressionRatio,
            WHOLE_ARCHIVE.as_bytes(),
            "compression ratio",
            limits.max_ratio,
        )),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

/// Fails reads once more than `left` bytes came through, remembering that it did.
struct Capped<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.tripped.set(true);
            return Err(io::Error::other("decompressed stream exceeds the size cap"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

// ---- zip ----

/// One zip entry, checked before anything is written.
struct ZipPlan {
    name: String,
    comps: Vec<Vec<u8>>,
    kind: EntryKind,
    executable: bool,
    declared: u64,
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

fn zip_error(e: zip::result::ZipError) -> StoreError {
    match e {
        zip::result::ZipError::Io(source) => StoreError::ReadArchive { source },
        e => StoreError::ReadArchive {
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        },
    }
}

fn unpack_zip(
    archive: &Path,
    archive_len: u64,
    staged: &Path,
    limits: &CodeLimits,
    policy: &mut Policy<'_>,
) -> Result<(), StoreError> {
    let file = File::open(archive).map_err(|source| StoreError::OpenArchive {
        path: archive.to_path_buf(),
        source,
    })?;
    policy.backslash_separates = true;
    zip64_preflight(&file, archive_len, limits, policy)?;
    let reader = BufReader::new(
        file.try_clone()
            .map_err(io_err("open code archive", archive))?,
    );
    let mut zip = ZipArchive::new(reader).map_err(zip_error)?;
    if zip.len() as u64 > limits.max_entries {
        return Err(policy.too_large(
            RejectReason::TooManyEntries,
            WHOLE_ARCHIVE.as_bytes(),
            "entry count",
            limits.max_entries,
        ));
    }
    central_directory_preflight(&file, &zip, limits, policy)?;

    // First pass: every rule that needs no content, before anything is written.
    let mut plans = Vec::with_capacity(zip.len());
    let mut ranges = Vec::with_capacity(zip.len());
    let mut declared_total = 0u64;
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i).map_err(zip_error)?;
        let name = f.name().to_string();
        let raw = name.as_bytes();
        if f.encrypted() {
            return Err(policy.reject(
                RejectReason::Encrypted,
                raw,
                "encrypted entries are not supported",
            ));
        }
        let method = f.compression();
        if method != CompressionMethod::Stored && method != CompressionMethod::Deflated {
            return Err(policy.reject(
                RejectReason::Format,
                raw,
                format!("compression method {method} is not supported; use deflate or store"),
            ));
        }
        let mode = f.unix_mode().unwrap_or(0);
        let is_dir_name = raw.ends_with(b"/") || raw.ends_with(b"\\");
        let kind = match mode & S_IFMT {
            S_IFLNK if !is_dir_name => EntryKind::Symlink,
            S_IFDIR => EntryKind::Dir,
            0 | S_IFREG if is_dir_name => EntryKind::Dir,
            0 | S_IFREG => EntryKind::File,
            S_IFLNK => {
                return Err(policy.reject(
                    RejectReason::Corrupt,
                    raw,
                    "a name ending in `/` marked as a symlink",
                ))
            }
            _ => EntryKind::Special,
        };
        let comps = policy.entry(raw, kind)?;
        let declared = f.size();
        let compressed = f.compressed_size();
        if kind == EntryKind::File {
            if declared > limits.max_file_bytes {
                return Err(policy.too_large(
                    RejectReason::FileTooLarge,
                    raw,
                    "file size",
                    limits.max_file_bytes,
                ));
            }
            if declared
                > compressed
                    .saturating_mul(limits.max_ratio)
                    .max(RATIO_FLOOR_BYTES)
            {
                return Err(policy.too_large(
                    RejectReason::CompressionRatio,
                    raw,
                    "compression ratio",
                    limits.max_ratio,
                ));
            }
            declared_total = declared_total.saturating_add(declared);
            if declared_total > limits.max_unpacked_bytes {
                return Err(policy.too_large(
                    RejectReason::UnpackedTooLarge,
                    raw,
                    "total size",
                    limits.max_unpacked_bytes,
                ));
            }
        }
        if compressed > 0 {
            ranges.push((
                f.header_start(),
                f.data_start().saturating_add(compressed),
                i,
            ));
        }
        plans.push(ZipPlan {
            name,
            comps,
            kind,
            executable: mode & 0o111 != 0,
            declared,
        });
    }
    let whole_cap = archive_len
        .saturating_mul(limits.max_ratio)
        .max(RATIO_FLOOR_BYTES);
    if declared_total > whole_cap {
        return Err(policy.too_large(
            RejectReason::CompressionRatio,
            WHOLE_ARCHIVE.as_bytes(),
            "compression ratio",
            limits.max_ratio,
        ));
    }
    ranges.sort_unstable();
    if let Some(w) = ranges.windows(2).find(|w| w[1].0 < w[0].1) {
        return Err(policy.reject(
            RejectReason::Overlapping,
            plans[w[1].2].name.as_bytes(),
            "entries overlap: their data is shared with another entry (a zip bomb technique)",
        ));
    }

    // Second pass: write, counting the bytes actually produced.
    let tar_limits = Limits {
        max_bytes: limits.max_unpacked_bytes,
        max_entries: limits.max_entries,
        max_file_bytes: limits.max_file_bytes,
        max_path_len: limits.max_path_len,
    };
    let opts = ExtractOptions::default();
    let mut x = Extractor::new(staged, Whiteouts::Keep, &opts, &tar_limits)?;
    for (i, plan) in plans.iter().enumerate() {
        let raw = plan.name.as_bytes();
        match plan.kind {
            EntryKind::Dir => {
                if !plan.comps.is_empty() {
                    x.put_dir(&plan.name, &plan.comps, 0o755, CODE_MTIME)?;
                }
            }
            EntryKind::File => {
                let f = zip.by_index(i).map_err(zip_error)?;
                // One byte past the claim is enough to know the claim was a lie.
                let mut content = f.take(plan.declared.saturating_add(1));
                let mode = if plan.executable { 0o755 } else { 0o644 };
                let n = x.put_file(
                    &mut content,
                    plan.declared,
                    &plan.name,
                    &plan.comps,
                    mode,
                    CODE_MTIME,
                )?;
                if n != plan.declared {
                    let what = if n > plan.declared { "more" } else { "fewer" };
                    return Err(policy.reject(
                        RejectReason::Corrupt,
                        raw,
                        format!(
                            "entry holds {what} bytes than the {} it declares",
                            plan.declared
                        ),
                    ));
                }
            }
            EntryKind::Symlink => {
                let f = zip.by_index(i).map_err(zip_error)?;
                let mut target = Vec::new();
                f.take(limits.max_path_len as u64 + 1)
                    .read_to_end(&mut target)
                    .map_err(|source| StoreError::ReadArchive { source })?;
                policy.symlink_target(raw, &plan.comps, Some(&target))?;
                x.put_symlink(&target, &plan.name, &plan.comps, CODE_MTIME)?;
            }
            EntryKind::Hardlink | EntryKind::Special | EntryKind::Other => {
                return Err(policy.reject(RejectReason::EntryType, raw, "unsupported entry type"))
            }
        }
    }
    x.finish_dirs()?;
    debug_assert!(x.written() <= limits.max_unpacked_bytes);
    Ok(())
}

/// Zip64 end records may claim any number of entries, and the zip reader reserves memory for
/// the claim before reading a single entry. Refuse any such record (wherever it sits, since the
/// reader searches the whole file) claiming more than the entry limit.
fn zip64_preflight(
    file: &File,
    archive_len: u64,
    limits: &CodeLimits,
    policy: &Policy<'_>,
) -> Result<(), StoreError> {
    const SIG: &[u8] = b"PK\x06\x06";
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < archive_len {
        let n = read_at(file, &mut buf, pos)?;
        if n < SIG.len() {
            break;
        }
        for (i, w) in buf[..n].windows(SIG.len()).enumerate() {
            if w != SIG {
                continue;
            }
            let mut rec = [0u8; 40];
            if read_at(file, &mut rec, pos + i as u64)? < rec.len() {
                continue;
            }
            let field = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rec[at..at + 8]);
                u64::from_le_bytes(b)
            };
            if field(24).max(field(32)) > limits.max_entries {
                return Err(policy.too_large(
                    RejectReason::TooManyEntries,
                    WHOLE_ARCHIVE.as_bytes(),
                    "entry count",
                    limits.max_entries,
                ));
            }
        }
        // Overlap by the signature length minus one so no signature straddles two reads.
        pos += (n - (SIG.len() - 1)) as u64;
    }
    Ok(())
}

/// The zip reader keys entries by name, silently keeping one of two entries with the same name.
/// Walk the central directory records themselves and refuse duplicates (and records the end
/// record did not count).
fn central_directory_preflight<R: Read + io::Seek>(
    file: &File,
    zip: &ZipArchive<R>,
    limits: &CodeLimits,
    policy: &Policy<'_>,
) -> Result<(), StoreError> {
    let mut names: HashSet<Vec<u8>> = HashSet::with_capacity(zip.len());
    let mut pos = zip.central_directory_start();
    let mut records = 0usize;
    loop {
        let mut head = [0u8; 46];
        if read_at(file, &mut head, pos)? < head.len() || head[..4] != b"PK\x01\x02"[..] {
            break;
        }
        records += 1;
        let len = |at: usize| u64::from(u16::from_le_bytes([head[at], head[at + 1]]));
        let (name_len, extra_len, comment_len) = (len(28), len(30), len(32));
        if name_len > limits.max_path_len as u64 {
            return Err(policy.too_large(
                RejectReason::PathTooLong,
                WHOLE_ARCHIVE.as_bytes(),
                "name length",
                limits.max_path_len as u64,
            ));
        }
        let mut name = vec![0u8; name_len as usize];
        if read_at(file, &mut name, pos + 46)? < name.len() {
            break;
        }
        if !names.insert(name.clone()) {
            return Err(policy.reject(
                RejectReason::Duplicate,
                &name,
                "duplicate entry: this name is listed more than once",
            ));
        }
        if records > zip.len() {
            return Err(policy.reject(
                RejectReason::Corrupt,
                &name,
                "the central directory holds more entries than its end record counts",
            ));
        }
        pos += 46 + name_len + extra_len + comment_len;
    }
    if records != zip.len() {
        return Err(policy.reject(
            RejectReason::Corrupt,
            WHOLE_ARCHIVE.as_bytes(),
            "the central directory does not match its end record",
        ));
    }
    Ok(())
}

/// Reads as much of `buf` as the file holds at `pos`.
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> Result<usize, StoreError> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(StoreError::ReadArchive { source }),
        }
    }
    Ok(done)
}

// ---- after unpacking ----

/// Follows every symlink of the unpacked tree the way the kernel would, through other links,
/// and refuses any that leaves the root: lexical checks alone miss chains such as
/// `a/b/up -> ../..` used as `x -> a/b/up/..`.
fn check_links(root: &Path, policy: &Policy<'_>) -> Result<(), StoreError> {
    for item in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let entry = item.map_err(|e| {
            StoreError::io(
                "walk unpacked code",
                e.path().unwrap_or(root),
                io::Error::other(e.to_string()),
            )
        })?;
        if !entry.path_is_symlink() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).map_err(|_| {
            StoreError::io(
                "walk unpacked code",
                entry.path(),
                io::Error::other("outside root"),
            )
        })?;
        let comps: Vec<Vec<u8>> = rel.iter().map(|c| c.as_bytes().to_vec()).collect();
        let name = rel.as_os_str().as_bytes();
        if let Err(msg) = resolve_in_root(root, &comps) {
            return Err(policy.reject(RejectReason::Link, name, msg));
        }
    }
    Ok(())
}

/// Resolves the symlink at `link` (components below `root`) component by component, following
/// links found on the way. `Err` when the resolution climbs above `root`, meets an absolute
/// target, or passes through too many links.
fn resolve_in_root(root: &Path, link: &[Vec<u8>]) -> Result<(), String> {
    let mut stack: Vec<Vec<u8>> = link.to_vec();
    let mut pending: Vec<Vec<u8>> = Vec::new(); // reversed: next component last
    let mut hops = 0;
    let mut follow = true; // false once a component is missing: the rest is plain lexical
    let mut current = stack.pop();
    // Start by "following" the link itself.
    loop {
        if let Some(c) = current.take() {
            stack.push(c);
            let path = join_under(root, &stack);
            let md = if follow {
                fs::symlink_metadata(&path).ok()
            } else {
                None
            };
            match md {
                Some(md) if md.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err("too many levels of symlinks".into());
                    }
                    let target = fs::read_link(&path).map_err(|e| format!("read symlink: {e}"))?;
                    let target = target.as_os_str().as_bytes();
                    if target.starts_with(b"/") {
                        return Err(format!(
                            "symlink chain reaches absolute target {:?}; no link may point out \
                             of the code root",
                            lossy(target)
                        ));
                    }
                    stack.pop();
                    for c in target.split(|b| *b == b'/').rev() {
                        pending.push(c.to_vec());
                    }
                }
                Some(_) => {}
                None => follow = false,
            }
        }
        let Some(next) = pending.pop() else {
            return Ok(());
        };
        match next.as_slice() {
            b"" | b"." => {}
            b".." => {
                if stack.pop().is_none() {
                    return Err(
                        "symlink resolves out of the code root (through other links); \
                                no link may point out"
                            .into(),
                    );
                }
            }
            _ => current = Some(next),
        }
    }
}

fn join_under(root: &Path, comps: &[Vec<u8>]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}

/// Applies the normalized metadata (see the module docs) to every entry, root included.
fn normalize(root: &Path) -> Result<(), StoreError> {
    let as_root = rustix::process::geteuid().is_root();
    let t = Timespec {
        tv_sec: CODE_MTIME,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    // Directories come before their contents, so one made unreadable by the archive is opened up
    // before the walk descends into it.
    for item in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = item.map_err(|e| {
            StoreError::io(
                "walk unpacked code",
                e.path().unwrap_or(root),
                io::Error::other(e.to_string()),
            )
        })?;
        let path = entry.path();
        let md = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
        let ft = md.file_type();
        let mode = if ft.is_dir() {
            Some(0o755)
        } else if ft.is_file() {
            Some(if md.mode() & 0o111 != 0 { 0o755 } else { 0o644 })
        } else if ft.is_symlink() {
            None
        } else {
            return Err(StoreError::UnsafeEntry {
                entry: lossy(path.as_os_str().as_bytes()),
                reason: "not a file, directory or symlink".into(),
            });
        };
        if as_root {
            rustix::fs::chownat(
                rustix::fs::CWD,
                path,
                Some(Uid::ROOT),
                Some(Gid::ROOT),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| StoreError::io("chown", path, e.into()))?;
        }
        if let Some(mode) = mode {
            // Not a symlink (lstat above), in a scratch tree only this process writes to.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", path))?;
        }
        rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| StoreError::io("set mtime", path, e.into()))?;
    }
    Ok(())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_check(limits: &CodeLimits, name: &str, kind: EntryKind) -> Result<(), StoreError> {
        let mut p = Policy::new(limits);
        p.entry(name.as_bytes(), kind).map(|_| ())
    }

    #[test]
    fn default_limits() {
        let l = CodeLimits::default();
        assert_eq!(l.max_archive_bytes, 256 * 1024 * 1024);
        assert_eq!(l.max_unpacked_bytes, 512 * 1024 * 1024);
        assert_eq!(l.max_entries, 20_000);
        assert_eq!(l.max_file_bytes, 256 * 1024 * 1024);
        assert_eq!(l.max_ratio, 200);
        assert_eq!(l.max_path_len, 1024);
        assert_eq!(l.max_depth, 64);
    }

    #[test]
    fn sniffs_by_content() {
        assert_eq!(
            CodeFormat::from_head(b"PK\x03\x04rest"),
            Ok(CodeFormat::Zip)
        );
        assert_eq!(CodeFormat::from_head(b"PK\x05\x06"), Ok(CodeFormat::Zip));
        assert_eq!(
            CodeFormat::from_head(&[0x1f, 0x8b, 8]),
            Ok(CodeFormat::TarGz)
        );
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(CodeFormat::from_head(&tar), Ok(CodeFormat::Tar));
        assert!(CodeFormat::from_head(b"#!/bin/sh\n").is_err());
        assert!(CodeFormat::from_head(b"").is_err());
        assert!(CodeFormat::from_head(b"BZh91AY").is_err());
    }

    #[test]
    fn names_are_checked() {
        let l = CodeLimits::default();
        for ok in ["a", "./a/b", "a//b/", "dir/.hidden", "a..b", "..a"] {
            policy_check(&l, ok, EntryKind::File).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "/abs",
            "../x",
            "a/../b",
            "a/../../x",
            "..\\x",
            "a\\..\\..\\x",
            "a\0b",
            ".wh.x",
            "a/.wh..wh..opq",
        ] {
            let err = policy_check(&l, bad, EntryKind::File).expect_err(bad);
            assert_eq!(
                err.kind(),
                strata_types::ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        let deep = vec!["d"; 65].join("/");
        let err = policy_check(&l, &deep, EntryKind::File).expect_err("deep");
        assert_eq!(err.kind(), strata_types::ErrorKind::TooLarge);
        let long = "x".repeat(1025);
        let err = policy_check(&l, &long, EntryKind::File).expect_err("long");
        assert_eq!(err.kind(), strata_types::ErrorKind::TooLarge);
        assert!(policy_check(&l, "./", EntryKind::Dir).is_ok());
        assert!(policy_check(&l, "./", EntryKind::File).is_err());
        assert!(policy_check(&l, "dev", EntryKind::Special).is_err());
    }

    #[test]
    fn duplicates_and_hardlinks() {
        let l = CodeLimits::default();
        let mut p = Policy::new(&l);
        p.entry(b"a/b", EntryKind::File).expect("first");
        let err = p.entry(b"./a//b", EntryKind::File).expect_err("dup");
        assert!(err.to_string().contains("duplicate"));
        assert_eq!(p.reason.get(), Some(RejectReason::Duplicate));
        assert!(p.hardlink_target(b"h", Some(b"./a/b")).is_ok());
        assert!(p.hardlink_target(b"h", Some(b"a")).is_err(), "a directory");
        assert!(p.hardlink_target(b"h", Some(b"/etc/passwd")).is_err());
        assert!(p.hardlink_target(b"h", Some(b"../a/b")).is_err());
        assert!(p.hardlink_target(b"h", Some(b"later")).is_err());
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        let l = CodeLimits::default();
        let p = Policy::new(&l);
        let comps =
            |s: &str| -> Vec<Vec<u8>> { s.split('/').map(|c| c.as_bytes().to_vec()).collect() };
        let check = |link: &str, target: &str| {
            p.symlink_target(link.as_bytes(), &comps(link), Some(target.as_bytes()))
        };
        assert!(check("a/b/l", "../../x").is_ok());
        assert!(check("a/b/l", "./c/../d").is_ok());
        assert!(check("l", "x/../y").is_ok());
        assert!(check("a/b/l", "../../../x").is_err());
        assert!(check("l", "../x").is_err());
        assert!(check("l", "x/../../y").is_err());
        assert!(check("l", "/etc/passwd").is_err());
        assert!(check("l", "").is_err());
    }

    #[test]
    fn resolution_follows_chains() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        // Each link is fine on its own, lexically.
        symlink("../..", root.join("a/b/up")).expect("symlink");
        symlink("a/b/up/..", root.join("x")).expect("symlink");
        symlink("a/b/up/a", root.join("ok")).expect("symlink");
        symlink("loop2", root.join("loop1")).expect("symlink");
        symlink("loop1", root.join("loop2")).expect("symlink");
        symlink("missing/../../..", root.join("a/dangling")).expect("symlink");
        let c = |s: &str| -> Vec<Vec<u8>> { s.split('/').map(|c| c.as_bytes().to_vec()).collect() };
        assert!(resolve_in_root(&root, &c("a/b/up")).is_ok());
        assert!(resolve_in_root(&root, &c("ok")).is_ok());
        let err = resolve_in_root(&root, &c("x")).expect_err("chain climbs out");
        assert!(err.contains("out of the code root"), "{err}");
        assert!(resolve_in_root(&root, &c("loop1")).is_err());
        assert!(resolve_in_root(&root, &c("a/dangling")).is_err());
    }

    #[test]
    fn counters_name_every_reason() {
        let before = rejected_counts();
        assert_eq!(before.len(), RejectReason::ALL.len());
        record(RejectReason::Duplicate);
        let after = rejected_counts();
        let get = |v: &[(&str, u64)]| {
            v.iter()
                .find(|(n, _)| *n == "duplicate")
                .map(|(_, c)| *c)
                .unwrap_or_default()
        };
        assert!(get(&after) > get(&before));
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "ALL is in declaration order");
        }
    }
}
