//! Per-layer manifests: every entry of a layer with its type, mode, owner, mtime and content
//! digest, so composition can compare layers without walking or hashing their trees.
//!
//! A manifest is derived from the layer's directory (see [`Store::manifest`](crate::Store::manifest)):
//! written when the layer is committed (the commit already hashed every file), cached on disk at
//! `manifests/<hex>` in the compact text format below and in memory, and recomputed from the
//! layer whenever the cached copy is missing or unreadable.
//!
//! Paths are in-image absolute paths (`/usr/bin/curl`). A path that is not valid UTF-8 is
//! converted lossily (invalid bytes become U+FFFD), so two such paths may collapse into one
//! entry; ASCII and UTF-8 paths round-trip exactly. The same holds for symlink targets.
//!
//! # On-disk format (`strata-manifest-v1`)
//!
//! ```text
//! strata-manifest-v1 <layer digest hex>\n
//! one line per entry, sorted by path bytes; fields separated by a tab:
//!   f  <mode octal> <uid> <gid> <mtime> <path> <size> <sha256 hex>   regular file
//!   d  <mode octal> <uid> <gid> <mtime> <path> <0|1 opaque>          directory
//!   l  <mode octal> <uid> <gid> <mtime> <path> <target>              symlink
//!   w  <mode octal> <uid> <gid> <mtime> <path>                       whiteout (char 0:0)
//!   o  <mode octal> <uid> <gid> <mtime> <path>                       fifo, device or socket
//! end <number of entries>\n
//! ```
//!
//! In paths and targets, `\` is written `\\`, a tab `\t`, a newline `\n` and a carriage return
//! `\r`. A file that does not parse (or names another layer) is ignored and rewritten.

use std::fmt::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use serde::Serialize;
use strata_types::Digest;

use crate::fsutil;
use crate::tree::WalkedTree;

/// The first word of a manifest file; bump it if the format ever changes.
const HEADER: &str = "strata-manifest-v1";

/// Every entry of one layer, sorted by path (compared as bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// The entries, sorted by [`Entry::path`] bytes, one per path.
    pub entries: Vec<Entry>,
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// In-image absolute path, e.g. `/usr/bin/curl` (lossy for non-UTF-8 names, see the module
    /// docs).
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits, including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// The type of an [`Entry`] and its type-specific content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// sha256 of the content, lowercase hex.
        sha256: String,
    },
    /// A directory; `opaque` when it hides everything below it in lower layers
    /// (`trusted.overlay.opaque=y`).
    Dir { opaque: bool },
    /// A symbolic link (never followed).
    Symlink { target: String },
    /// An overlay whiteout (character device 0:0): the path is deleted from the layers below.
    Whiteout,
    /// A fifo, socket, or a device other than a whiteout. Device numbers are not recorded.
    Other,
}

impl Manifest {
    /// A manifest of `entries` in any order: sorts them by path. When a path appears twice, the
    /// last one given wins.
    pub fn from_entries(mut entries: Vec<Entry>) -> Manifest {
        // Stable sort keeps the given order among equal paths; keep the last of each run.
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
        for e in entries {
            match out.last_mut() {
                Some(last) if last.path == e.path => *last = e,
                _ => out.push(e),
            }
        }
        Manifest { entries: out }
    }

    /// The entry at the in-image absolute path `path` (`/etc/hosts`), if the layer has one.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Entries strictly below the directory `dir` (`/usr/lib` gives `/usr/lib/x`, not
    /// `/usr/libexec`), in path order.
    pub fn below(&self, dir: &str) -> &[Entry] {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let start = self
            .entries
            .partition_point(|e| e.path.as_bytes() < prefix.as_bytes());
        let len = self.entries[start..]
            .iter()
            .take_while(|e| e.path.starts_with(&prefix))
            .count();
        &self.entries[start..start + len]
    }

    /// Sum of the sizes of the regular files: the layer's logical size.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the layer has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The manifest of a tree just walked.
    pub(crate) fn from_walk(tree: &WalkedTree) -> Manifest {
        let entries = tree
            .entries
            .iter()
            .map(|w| {
                let md = &w.md;
                let ft = md.file_type();
                let kind = if let Some(sha) = &w.sha256 {
                    EntryKind::File {
                        size: md.len(),
                        sha256: sha.clone(),
                    }
                } else if ft.is_dir() {
                    EntryKind::Dir {
                        opaque: w.is_opaque(),
                    }
                } else if let Some(t) = &w.target {
                    EntryKind::Symlink {
                        target: String::from_utf8_lossy(t).into_owned(),
                    }
                } else if ft.is_char_device() && fsutil::is_whiteout(md) {
                    EntryKind::Whiteout
                } else {
                    EntryKind::Other
                };
                let mut path = String::with_capacity(w.rel.len() + 1);
                path.push('/');
                path.push_str(&String::from_utf8_lossy(&w.rel));
                Entry {
                    path,
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: md.mtime(),
                }
            })
            .collect();
        // Sorted by raw bytes already; lossy conversion may reorder or merge non-UTF-8 names.
        Manifest::from_entries(entries)
    }

    /// The on-disk form (see the module docs) of the manifest of layer `layer`.
    pub(crate) fn encode(&self, layer: &Digest) -> String {
        let mut out = String::with_capacity(64 + self.entries.len() * 96);
        let _ = writeln!(out, "{HEADER} {}", layer.hex());
        for e in &self.entries {
            let tag = match e.kind {
                EntryKind::File { .. } => 'f',
                EntryKind::Dir { .. } => 'd',
                EntryKind::Symlink { .. } => 'l',
                EntryKind::Whiteout => 'w',
                EntryKind::Other => 'o',
            };
            let _ = write!(
                out,
                "{tag}\t{:o}\t{}\t{}\t{}\t",
                e.mode, e.uid, e.gid, e.mtime
            );
            escape_into(&mut out, &e.path);
            match &e.kind {
                EntryKind::File { size, sha256 } => {
                    let _ = write!(out, "\t{size}\t{sha256}");
                }
                EntryKind::Dir { opaque } => {
                    let _ = write!(out, "\t{}", u8::from(*opaque));
                }
                EntryKind::Symlink { target } => {
                    out.push('\t');
                    escape_into(&mut out, target);
                }
                EntryKind::Whiteout | EntryKind::Other => {}
            }
            out.push('\n');
        }
        let _ = writeln!(out, "end {}", self.entries.len());
        out
    }

    /// Parses the on-disk form; `Err` says what is wrong (the caller recomputes).
    pub(crate) fn decode(text: &str, layer: &Digest) -> Result<Manifest, String> {
        let mut lines = text.split('\n');
        let header = lines.next().unwrap_or_default();
        if header != format!("{HEADER} {}", layer.hex()) {
            return Err(format!("unexpected header {header:?}"));
        }
        let mut entries = Vec::new();
        let mut count = None;
        for (n, line) in lines.enumerate() {
            if count.is_some() {
                if line.is_empty() {
                    continue;
                }
                return Err(format!("line {}: content after the end line", n + 2));
            }
            if let Some(c) = line.strip_prefix("end ") {
                count = Some(c.parse::<usize>().map_err(|e| format!("end line: {e}"))?);
                continue;
            }
            entries.push(decode_line(line).map_err(|e| format!("line {}: {e}", n + 2))?);
        }
        match count {
            Some(c) if c == entries.len() => {}
            Some(c) => {
                return Err(format!(
                    "end line says {c} entries, found {}",
                    entries.len()
                ))
            }
            None => return Err("no end line (truncated)".into()),
        }
        let sorted = entries
            .windows(2)
            .all(|w| w[0].path.as_bytes() < w[1].path.as_bytes());
        if !sorted {
            return Err("entries are not sorted by path".into());
        }
        Ok(Manifest { entries })
    }
}

impl Entry {
    /// Same content, type, mode and owner (mtime ignored): identical for composition purposes.
    ///
    /// Two whiteouts are always the same (their mode and owner carry no meaning). Two
    /// directories must agree on mode, owner and opaqueness. [`EntryKind::Other`] entries compare
    /// by mode and owner only (device numbers are not recorded).
    pub fn same_content(&self, other: &Entry) -> bool {
        let meta = self.mode == other.mode && self.uid == other.uid && self.gid == other.gid;
        match (&self.kind, &other.kind) {
            (EntryKind::Whiteout, EntryKind::Whiteout) => true,
            (a, b) => a == b && meta,
        }
    }

    /// A short description for conflict reports: `file 1234 bytes sha256 0a1b2c3d4e5f mode 0644
    /// owner 0:0`.
    pub fn describe(&self) -> String {
        let meta = format!("mode {:04o} owner {}:{}", self.mode, self.uid, self.gid);
        match &self.kind {
            EntryKind::File { size, sha256 } => {
                let short = sha256.get(..12).unwrap_or(sha256);
                format!("file {size} bytes sha256 {short} {meta}")
            }
            EntryKind::Dir { opaque: true } => format!("opaque directory {meta}"),
            EntryKind::Dir { opaque: false } => format!("directory {meta}"),
            EntryKind::Symlink { target } => {
                format!("symlink to {target:?} owner {}:{}", self.uid, self.gid)
            }
            EntryKind::Whiteout => "whiteout (deletes the path)".into(),
            EntryKind::Other => format!("special file (fifo, socket or device) {meta}"),
        }
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => return Err(format!("bad escape \\{other:?}")),
        }
    }
    Ok(out)
}

fn decode_line(line: &str) -> Result<Entry, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let want = match fields.first().copied() {
        Some("f") => 8,
        Some("d" | "l") => 7,
        Some("w" | "o") => 6,
        other => return Err(format!("unknown entry type {other:?}")),
    };
    if fields.len() != want {
        return Err(format!("{} fields, expected {want}", fields.len()));
    }
    let num = |i: usize, what: &str| -> Result<u64, String> {
        fields[i]
            .parse::<u64>()
            .map_err(|e| format!("{what} {:?}: {e}", fields[i]))
    };
    let mode = u32::from_str_radix(fields[1], 8).map_err(|e| format!("mode: {e}"))?;
    let uid = u32::try_from(num(2, "uid")?).map_err(|e| format!("uid: {e}"))?;
    let gid = u32::try_from(num(3, "gid")?).map_err(|e| format!("gid: {e}"))?;
    let mtime = fields[4]
        .parse::<i64>()
        .map_err(|e| format!("mtime: {e}"))?;
    let path = unescape(fields[5])?;
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not absolute"));
    }
    let kind = match fields[0] {
        "f" => {
            let sha256 = fields[7];
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("bad sha256 {sha256:?}"));
            }
            EntryKind::File {
                size: num(6, "size")?,
                sha256: sha256.to_string(),
            }
        }
        "d" => EntryKind::Dir {
            opaque: match fields[6] {
                "0" => false,
                "1" => true,
                o => return Err(format!("bad opaque flag {o:?}")),
            },
        },
        "l" => EntryKind::Symlink {
            target: unescape(fields[6])?,
        },
        "w" => EntryKind::Whiteout,
        _ => EntryKind::Other,
    };
    Ok(Entry {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn file(path: &str, content: &str) -> Entry {
        use sha2::{Digest as _, Sha256};
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size: content.len() as u64,
                sha256: hex::encode(Sha256::digest(content.as_bytes())),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        }
    }

    fn sample() -> Manifest {
        let mut dir = file("/usr/lib/x", "");
        dir.kind = EntryKind::Dir { opaque: true };
        dir.mode = 0o755;
        let mut link = file("/usr/bin/we\tird\nname\\", "");
        link.kind = EntryKind::Symlink {
            target: "../lib/\\tx".into(),
        };
        link.mode = 0o777;
        let mut wh = file("/etc/gone", "");
        wh.kind = EntryKind::Whiteout;
        wh.mode = 0;
        let mut fifo = file("/run/fifo", "");
        fifo.kind = EntryKind::Other;
        fifo.mtime = -5;
        let mut suid = file("/usr/bin/su", "binary");
        suid.mode = 0o4755;
        suid.uid = 1000;
        suid.gid = 4_000_000_000;
        Manifest::from_entries(vec![
            suid,
            dir,
            link,
            wh,
            fifo,
            file("/usr/lib/x/é.py", "print()"),
        ])
    }

    #[test]
    fn encode_decode_round_trips() {
        let m = sample();
        let d = Digest::from_bytes(&[7; 32]);
        let text = m.encode(&d);
        assert!(text.starts_with("strata-manifest-v1 0707"));
        assert!(text.ends_with("end 6\n"));
        let back = Manifest::decode(&text, &d).expect("decode");
        assert_eq!(back, m);
        // Another layer's manifest is refused.
        assert!(Manifest::decode(&text, &Digest::from_bytes(&[8; 32])).is_err());
    }

    #[test]
    fn decode_refuses_damage() {
        let m = sample();
        let d = Digest::from_bytes(&[7; 32]);
        let text = m.encode(&d);
        let truncated = &text[..text.len() / 2];
        assert!(Manifest::decode(truncated, &d).is_err());
        let no_end = text.replace("end 6\n", "");
        assert!(Manifest::decode(&no_end, &d).is_err());
        let wrong_count = text.replace("end 6\n", "end 5\n");
        assert!(Manifest::decode(&wrong_count, &d).is_err());
        let bad_type = text.replacen("\nf\t", "\nq\t", 1);
        assert!(Manifest::decode(&bad_type, &d).is_err());
        assert!(Manifest::decode("", &d).is_err());
    }

    #[test]
    fn get_below_and_file_bytes() {
        let m = sample();
        assert_eq!(m.len(), 6);
        assert_eq!(
            m.entries
                .iter()
                .map(|e| e.path.as_str())
                .collect::<Vec<_>>(),
            vec![
                "/etc/gone",
                "/run/fifo",
                "/usr/bin/su",
                "/usr/bin/we\tird\nname\\",
                "/usr/lib/x",
                "/usr/lib/x/é.py"
            ]
        );
        assert_eq!(m.get("/usr/bin/su").map(|e| e.mode), Some(0o4755));
        assert!(m.get("/usr/bin").is_none());
        assert_eq!(m.file_bytes(), 6 + 7);
        let below: Vec<_> = m.below("/usr/lib/x").iter().map(|e| &e.path).collect();
        assert_eq!(below, vec!["/usr/lib/x/é.py"]);
        assert_eq!(m.below("/usr/").len(), 4);
        assert!(m.below("/usr/lib/x/é.py").is_empty());
    }

    #[test]
    fn from_entries_keeps_the_last_duplicate() {
        let m = Manifest::from_entries(vec![file("/b", "1"), file("/a", "x"), file("/b", "2")]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("/b"), Some(&file("/b", "2")));
    }

    #[test]
    fn same_content_ignores_mtime_only() {
        let a = file("/x", "hello");
        let mut b = a.clone();
        b.mtime += 100;
        assert!(a.same_content(&b));
        b.mode = 0o755;
        assert!(!a.same_content(&b), "mode counts");
        let mut c = a.clone();
        c.uid = 1;
        assert!(!a.same_content(&c), "owner counts");
        assert!(!a.same_content(&file("/x", "hellO")), "content counts");
        let mut w1 = a.clone();
        w1.kind = EntryKind::Whiteout;
        let mut w2 = c.clone();
        w2.kind = EntryKind::Whiteout;
        assert!(w1.same_content(&w2));
        assert!(!w1.same_content(&a));
        let mut d1 = a.clone();
        d1.kind = EntryKind::Dir { opaque: false };
        let mut d2 = d1.clone();
        assert!(d1.same_content(&d2));
        d2.kind = EntryKind::Dir { opaque: true };
        assert!(!d1.same_content(&d2));
        assert!(a
            .describe()
            .starts_with("file 5 bytes sha256 2cf24dba5fb0 mode 0644"));
    }
}
