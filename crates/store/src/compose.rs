//! Rules for composing independently built package layers: which paths are merged rather than
//! compared ([`merge_rule`]), which are never part of a package ([`VOLATILE`],
//! [`remove_volatile`]), what counts as a conflict ([`find_conflicts`]), and the merges
//! themselves for dpkg/apt state ([`merge_stanzas`]) and line lists ([`merge_lines`]).
//!
//! A runtime composed from packages stacks the base image's layers, one layer per package (each
//! built against the base alone) and a generated **merge layer** on top that holds the merged
//! versions of the paths with a merge rule. Everything here is pure — functions over manifests
//! and file contents — except [`remove_volatile`], which edits a captured upper dir. See ADR 0010.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io_err, StoreError};
use crate::fsutil;
use crate::manifest::{Entry, EntryKind, Manifest};

/// How the merge layer reconciles a path that several packages write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeRule {
    /// dpkg's `status` / `available`: union of deb822 stanzas keyed by Package and Architecture
    /// ([`merge_stanzas`]).
    DpkgStatus,
    /// apt's `extended_states`: the same stanza union ([`merge_stanzas`]).
    AptExtendedStates,
    /// A list of lines (dpkg `triggers/File`, `statoverride`): union, first occurrence order
    /// ([`merge_lines`]).
    LineUnion,
    /// Derived from the composed tree: the caller regenerates it (`ldconfig` for
    /// `/etc/ld.so.cache`).
    Regenerated,
    /// A Python bytecode cache file: differing copies are not a conflict, the topmost wins
    /// (Python revalidates it against its source).
    PycCache,
    /// Transient package-manager state (dpkg `-old` backups, locks, pending triggers, npm's
    /// hidden lockfile): never a conflict, and the merge layer takes no package's copy (it keeps
    /// the base's, or none).
    Drop,
}

/// The merge rule for the in-image absolute path `path` (as in a [`Manifest`]: `/etc/x`), or
/// `None` when packages must agree on its content.
pub fn merge_rule(path: &str) -> Option<MergeRule> {
    match path {
        "/var/lib/dpkg/status" | "/var/lib/dpkg/available" => return Some(MergeRule::DpkgStatus),
        "/var/lib/apt/extended_states" => return Some(MergeRule::AptExtendedStates),
        "/var/lib/dpkg/triggers/File" | "/var/lib/dpkg/statoverride" => {
            return Some(MergeRule::LineUnion)
        }
        "/etc/ld.so.cache" => return Some(MergeRule::Regenerated),
        "/var/lib/dpkg/status-old"
        | "/var/lib/dpkg/available-old"
        | "/var/lib/dpkg/triggers/Lock"
        | "/var/lib/dpkg/triggers/Unincorp" => return Some(MergeRule::Drop),
        _ => {}
    }
    if let Some(name) = path.strip_prefix("/var/lib/dpkg/") {
        if name.starts_with("lock") && !name.contains('/') {
            return Some(MergeRule::Drop);
        }
    }
    if path.ends_with("/node_modules/.package-lock.json") {
        return Some(MergeRule::Drop);
    }
    if path.ends_with(".pyc") {
        let mut comps = path.rsplit('/');
        let _file = comps.next();
        if comps.next() == Some("__pycache__") {
            return Some(MergeRule::PycCache);
        }
    }
    None
}

/// In-image paths left out of every package layer at build time: caches, logs, scratch space,
/// dpkg backups and locks. A directory here is volatile with everything below it (prefix
/// semantics on whole components: `/tmp` covers `/tmp/x`, not `/tmpfoo`).
pub const VOLATILE: &[&str] = &[
    "/var/cache/apt",
    "/var/lib/apt/lists",
    "/var/cache/debconf",
    "/var/cache/ldconfig",
    "/var/log",
    "/root/.cache",
    "/root/.npm",
    "/tmp",
    "/var/tmp",
    "/run",
    "/var/lib/dpkg/status-old",
    "/var/lib/dpkg/available-old",
    "/var/lib/dpkg/lock",
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/triggers/Lock",
];

/// Whether the in-image path `path` is, or is below, one of [`VOLATILE`].
pub fn is_volatile(path: &str) -> bool {
    VOLATILE.iter().any(|v| {
        path.strip_prefix(v)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Deletes the [`VOLATILE`] paths from a captured upper dir (normally after
/// [`normalize_upper`](crate::diff::normalize_upper)), never following symlinks on the way: a
/// volatile directory loses its contents and then the directory itself unless it is opaque (an
/// opaque directory replaces the base's and stays, empty); any other entry there (file, symlink,
/// whiteout) is removed. A path reachable only through a symlink is left alone.
pub fn remove_volatile(upper: &Path) -> Result<(), StoreError> {
    for path in VOLATILE {
        remove_volatile_path(upper, path)?;
    }
    Ok(())
}

fn remove_volatile_path(upper: &Path, path: &str) -> Result<(), StoreError> {
    let Some(comps) = fsutil::split_image_path(path) else {
        return Ok(());
    };
    let Some((last, parents)) = comps.split_last() else {
        return Ok(());
    };
    let mut host = upper.to_path_buf();
    for c in parents {
        host.push(c);
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {}
            _ => return Ok(()), // absent, or only reachable through a symlink
        }
    }
    host.push(last);
    let md = match fs::symlink_metadata(&host) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("stat", host, e)),
    };
    if !md.is_dir() {
        return fs::remove_file(&host).map_err(io_err("remove volatile", &host));
    }
    for child in fs::read_dir(&host).map_err(io_err("read dir", &host))? {
        let child = child.map_err(io_err("read dir", &host))?.path();
        fsutil::remove_tree(&child).map_err(io_err("remove volatile", &child))?;
    }
    if !fsutil::is_opaque(&host).map_err(io_err("read xattrs of", &host))? {
        fs::remove_dir(&host).map_err(io_err("remove volatile", &host))?;
    }
    Ok(())
}

/// Packages that cannot be composed as they are: they disagree about `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The in-image path (for [`find_conflicts`]) or the stanza key `package:arch` (for
    /// [`merge_stanzas`]).
    pub path: String,
    /// Every package involved, in the order they were given.
    pub packages: Vec<String>,
    /// What each package has there, for a person to read.
    pub detail: String,
}

/// Collects conflicts by path, so each path gets one [`Conflict`].
#[derive(Default)]
struct Conflicts {
    by_path: BTreeMap<String, (Vec<usize>, Vec<String>)>,
}

impl Conflicts {
    fn add(&mut self, path: &str, packages: &[usize], detail: String) {
        let (pkgs, details) = self.by_path.entry(path.to_string()).or_default();
        pkgs.extend_from_slice(packages);
        details.push(detail);
    }

    fn finish(self, names: &[&str]) -> Vec<Conflict> {
        self.by_path
            .into_iter()
            .map(|(path, (mut pkgs, details))| {
                pkgs.sort_unstable();
                pkgs.dedup();
                let mut packages: Vec<String> = Vec::with_capacity(pkgs.len());
                for i in pkgs {
                    let name = names[i].to_string();
                    if !packages.contains(&name) {
                        packages.push(name);
                    }
                }
                Conflict {
                    path,
                    packages,
                    detail: details.join("; "),
                }
            })
            .collect()
    }
}

/// Whether two packages' entries at one path can be stacked in any order: directories always
/// can (their mode, owner and opaqueness do not matter here; what an opaque directory hides is
/// checked separately), everything else must be [`Entry::same_content`].
fn compatible(a: &Entry, b: &Entry) -> bool {
    match (&a.kind, &b.kind) {
        (EntryKind::Dir { .. }, EntryKind::Dir { .. }) => true,
        _ => a.same_content(b),
    }
}

/// Finds what keeps the given package layers (each built against the same base) from being
/// stacked in any order. `parts` pairs a package reference with its layer's manifest.
///
/// A path is a conflict when it has no [`merge_rule`] and
/// - two packages have entries there that are not compatible: different content, type, mode or
///   owner ([`Entry::same_content`]; mtimes are ignored, so identical files are fine), or a
///   directory in one and anything else in another. Two directories never conflict, even with
///   different modes or owners (the topmost one's metadata shows; that is harmless for
///   composition);
/// - or one package removes it — a whiteout there or at a parent, or an opaque directory at a
///   parent — while another provides something there. Such a conflict is reported at the
///   removed path (the whiteout or the opaque directory) and names the first hidden entry.
///
/// The result is sorted by path, one [`Conflict`] per path naming every package involved (in
/// the order of `parts`). Manifests must be sorted by path, as [`Manifest`]s from the store are.
/// One hash lookup per entry: linear in the total number of entries.
pub fn find_conflicts(parts: &[(String, &Manifest)]) -> Vec<Conflict> {
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    let mut conflicts = Conflicts::default();
    // Paths whose entry removes what lower layers have below them: (path, part).
    let mut removers: Vec<(&str, usize)> = Vec::new();

    // One pass over every entry: the first entry seen at each path, and whether a later one
    // disagreed with it. Most paths occur once; nothing is allocated per path.
    let total: usize = parts.iter().map(|(_, m)| m.entries.len()).sum();
    let mut by_path: HashMap<&str, (&Entry, bool)> = HashMap::with_capacity(total);
    let mut disagreeing: Vec<&str> = Vec::new();
    for (i, (_, m)) in parts.iter().enumerate() {
        for e in &m.entries {
            if matches!(
                e.kind,
                EntryKind::Whiteout | EntryKind::Dir { opaque: true }
            ) {
                removers.push((e.path.as_str(), i));
            }
            match by_path.entry(e.path.as_str()) {
                MapEntry::Vacant(v) => {
                    v.insert((e, false));
                }
                MapEntry::Occupied(mut o) => {
                    let (first, flagged) = o.get_mut();
                    if !*flagged && !compatible(first, e) {
                        *flagged = true;
                        disagreeing.push(e.path.as_str());
                    }
                }
            }
        }
    }
    removers.retain(|(path, _)| merge_rule(path).is_none());
    for path in disagreeing {
        if merge_rule(path).is_some() {
            continue;
        }
        let group: Vec<(usize, &Entry)> = parts
            .iter()
            .enumerate()
            .filter_map(|(i, (_, m))| m.get(path).map(|e| (i, e)))
            .collect();
        let involved: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
        let detail = group
            .iter()
            .map(|(i, e)| format!("{}: {}", names[*i], e.describe()))
            .collect::<Vec<_>>()
            .join(", ");
        conflicts.add(path, &involved, detail);
    }

    for (path, a) in removers {
        let mine = parts[a].1;
        let what = match mine.get(path).map(|e| &e.kind) {
            Some(EntryKind::Whiteout) => "deletes",
            _ => "replaces (opaque directory)",
        };
        for (b, (name, theirs)) in parts.iter().enumerate() {
            if b == a {
                continue;
            }
            let mut hidden = theirs.below(path).iter().filter(|e| {
                !matches!(e.kind, EntryKind::Whiteout)
                    && merge_rule(&e.path).is_none()
                    && mine.get(&e.path).is_none()
            });
            let Some(first) = hidden.next() else { continue };
            let more = hidden.count();
            let detail = if more == 0 {
                format!("{} {what} {path}, hiding {name}'s {}", names[a], first.path)
            } else {
                format!(
                    "{} {what} {path}, hiding {name}'s {} and {more} more entries",
                    names[a], first.path
                )
            };
            conflicts.add(path, &[a, b], detail);
        }
    }
    conflicts.finish(&names)
}

/// One deb822 stanza: its key and its exact text (lines joined by `\n`, no trailing newline).
struct Stanza<'a> {
    package: &'a str,
    arch: &'a str,
    text: String,
}

/// Splits deb822 text into stanzas. Blank (empty or whitespace-only) lines separate stanzas;
/// continuation lines (starting with a space or tab) are kept exactly. Every stanza must have a
/// Package field.
fn parse_stanzas(text: &str) -> Result<Vec<Stanza<'_>>, String> {
    let mut out = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        if line.trim().is_empty() {
            flush_stanza(&mut lines, &mut out)?;
        } else {
            lines.push(line);
        }
    }
    flush_stanza(&mut lines, &mut out)?;
    Ok(out)
}

/// Turns the collected lines of one stanza into a [`Stanza`].
fn flush_stanza<'a>(lines: &mut Vec<&'a str>, out: &mut Vec<Stanza<'a>>) -> Result<(), String> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut package = None;
    let mut arch = "";
    for line in lines.iter() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("Package") {
            package = Some(value.trim());
        } else if name.eq_ignore_ascii_case("Architecture") {
            arch = value.trim();
        }
    }
    let Some(package) = package.filter(|p| !p.is_empty()) else {
        return Err(format!(
            "stanza starting {:?} has no Package field",
            lines[0]
        ));
    };
    out.push(Stanza {
        package,
        arch,
        text: lines.join("\n"),
    });
    lines.clear();
    Ok(())
}

/// `Version 1.2-3, Status install ok installed` for conflict details.
fn stanza_summary(text: &str) -> String {
    let field = |want: &str| {
        text.split('\n').find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case(want)
                .then(|| value.trim().to_string())
        })
    };
    match (field("Version"), field("Status")) {
        (Some(v), Some(s)) => format!("Version {v}, Status {s}"),
        (Some(v), None) => format!("Version {v}"),
        (None, Some(s)) => format!("Status {s}"),
        (None, None) => "a different stanza".into(),
    }
}

/// Merges deb822 files keyed by Package and Architecture — dpkg's `status`/`available`, apt's
/// `extended_states` — from the base image's copy and each package's copy (`parts`: package
/// reference and content). Each part is the whole file as the package's build left it, so for
/// every key a part either leaves the base's stanza as it was, changes it (installs, upgrades),
/// adds it, or — when `base` is given and the part lacks a base stanza — removes it (dpkg
/// rewrites the whole file, so a missing stanza was purged; apt drops a package marked manual
/// from `extended_states`).
///
/// Per key: no part changed it → the base's stanza; every changing part made the same change
/// (byte-identical stanza, or all removed it) → that change; parts disagree → a [`Conflict`]
/// whose `path` is the key (`package:arch`, or `package` without an Architecture field) naming
/// every changing part. Stanzas are compared exactly (they come from the same `.deb` when two
/// packages install the same dependency).
///
/// The output lists stanzas sorted by Package then Architecture (byte order), separated by one
/// blank line, with continuation lines exactly as given and a trailing newline (empty output
/// when no stanza remains). A stanza without a Package field, or a key listed twice with
/// different content in one input, is a conflict too.
pub fn merge_stanzas(
    base: Option<&str>,
    parts: &[(String, &str)],
) -> Result<String, Vec<Conflict>> {
    const BASE: &str = "base";
    let mut conflicts = Vec::new();
    // key -> (base stanza, each part's stanza)
    type Slots = (Option<String>, Vec<Option<String>>);
    let mut keys: BTreeMap<(&str, &str), Slots> = BTreeMap::new();
    let mut inputs: Vec<(&str, &str)> = Vec::with_capacity(parts.len() + 1);
    if let Some(b) = base {
        inputs.push((BASE, b));
    }
    inputs.extend(parts.iter().map(|(n, t)| (n.as_str(), *t)));
    let offset = usize::from(base.is_some());
    for (k, (name, text)) in inputs.iter().enumerate() {
        let stanzas = match parse_stanzas(text) {
            Ok(s) => s,
            Err(reason) => {
                conflicts.push(Conflict {
                    path: "(malformed stanza)".into(),
                    packages: vec![name.to_string()],
                    detail: reason,
                });
                continue;
            }
        };
        for st in stanzas {
            let slots = keys
                .entry((st.package, st.arch))
                .or_insert_with(|| (None, vec![None; parts.len()]));
            let slot = if k < offset {
                &mut slots.0
            } else {
                &mut slots.1[k - offset]
            };
            match slot {
                Some(existing) if *existing != st.text => conflicts.push(Conflict {
                    path: key_name(st.package, st.arch),
                    packages: vec![name.to_string()],
                    detail: format!(
                        "{name} lists {} twice with different content",
                        key_name(st.package, st.arch)
                    ),
                }),
                Some(_) => {}
                None => *slot = Some(st.text),
            }
        }
    }
    let mut out: Vec<String> = Vec::with_capacity(keys.len());
    for ((package, arch), (base_text, part_texts)) in keys {
        // Each changing part and its outcome: Some(text) or None (removed).
        let changes: Vec<(usize, Option<&String>)> = part_texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match (&base_text, t) {
                (Some(b), Some(t)) if b == t => None,
                (Some(_), None) if base.is_some() => Some((i, None)),
                (_, None) => None,
                (_, Some(t)) => Some((i, Some(t))),
            })
            .collect();
        let result = match changes.first() {
            None => base_text.as_ref(),
            Some((_, first)) if changes.iter().all(|(_, c)| c == first) => *first,
            Some(_) => {
                let mut detail: Vec<String> = changes
                    .iter()
                    .map(|(i, c)| match c {
                        Some(t) => format!("{}: {}", parts[*i].0, stanza_summary(t)),
                        None => format!("{}: removed", parts[*i].0),
                    })
                    .collect();
                if let Some(b) = &base_text {
                    detail.push(format!("base: {}", stanza_summary(b)));
                }
                let mut packages: Vec<String> = Vec::new();
                for (i, _) in &changes {
                    if !packages.contains(&parts[*i].0) {
                        packages.push(parts[*i].0.clone());
                    }
                }
                conflicts.push(Conflict {
                    path: key_name(package, arch),
                    packages,
                    detail: format!(
                        "packages disagree about Debian package {}: {}",
                        key_name(package, arch),
                        detail.join(", ")
                    ),
                });
                continue;
            }
        };
        if let Some(t) = result {
            out.push(t.clone());
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort_by(|a, b| a.path.cmp(&b.path));
        return Err(conflicts);
    }
    if out.is_empty() {
        return Ok(String::new());
    }
    let mut text = out.join("\n\n");
    text.push('\n');
    Ok(text)
}

fn key_name(package: &str, arch: &str) -> String {
    if arch.is_empty() {
        package.to_string()
    } else {
        format!("{package}:{arch}")
    }
}

/// Merges line lists (dpkg `triggers/File`, `statoverride`): the base's lines in order, then each
/// part's lines not seen yet, in part order. Blank lines are dropped; lines are compared exactly.
/// The result ends with a newline unless it is empty.
pub fn merge_lines(base: Option<&str>, parts: &[&str]) -> String {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = String::new();
    for text in base.into_iter().chain(parts.iter().copied()) {
        for line in text.split('\n') {
            if line.trim().is_empty() || !seen.insert(line) {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        }
    }

    fn file(path: &str, content: &str) -> Entry {
        entry(
            path,
            EntryKind::File {
                size: content.len() as u64,
                sha256: hex::encode(Sha256::digest(content.as_bytes())),
            },
        )
    }

    fn dir(path: &str) -> Entry {
        let mut e = entry(path, EntryKind::Dir { opaque: false });
        e.mode = 0o755;
        e
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest::from_entries(entries)
    }

    fn parts<'a>(ms: &[(&str, &'a Manifest)]) -> Vec<(String, &'a Manifest)> {
        ms.iter().map(|(n, m)| (n.to_string(), *m)).collect()
    }

    #[test]
    fn merge_rules_by_path() {
        use MergeRule::*;
        let cases = [
            ("/var/lib/dpkg/status", Some(DpkgStatus)),
            ("/var/lib/dpkg/available", Some(DpkgStatus)),
            ("/var/lib/apt/extended_states", Some(AptExtendedStates)),
            ("/var/lib/dpkg/triggers/File", Some(LineUnion)),
            ("/var/lib/dpkg/statoverride", Some(LineUnion)),
            ("/etc/ld.so.cache", Some(Regenerated)),
            (
                "/usr/lib/python3/dist-packages/requests/__pycache__/api.cpython-311.pyc",
                Some(PycCache),
            ),
            ("/usr/lib/python3/dist-packages/requests/api.pyc", None),
            ("/usr/lib/__pycache__/x.py", None),
            ("/var/lib/dpkg/status-old", Some(Drop)),
            ("/var/lib/dpkg/available-old", Some(Drop)),
            ("/var/lib/dpkg/lock", Some(Drop)),
            ("/var/lib/dpkg/lock-frontend", Some(Drop)),
            ("/var/lib/dpkg/triggers/Lock", Some(Drop)),
            ("/var/lib/dpkg/triggers/Unincorp", Some(Drop)),
            ("/usr/lib/node_modules/.package-lock.json", Some(Drop)),
            ("/app/node_modules/.package-lock.json", Some(Drop)),
            ("/app/package-lock.json", None),
            ("/var/lib/dpkg/info/curl.list", None),
            ("/var/lib/dpkg/locked/x", None),
            ("/etc/ld.so.conf", None),
            ("/var/lib/dpkg/status/x", None),
        ];
        for (path, want) in cases {
            assert_eq!(merge_rule(path), want, "{path}");
        }
    }

    #[test]
    fn volatile_prefixes_match_whole_components() {
        assert!(is_volatile("/tmp"));
        assert!(is_volatile("/tmp/x/y"));
        assert!(!is_volatile("/tmpfoo"));
        assert!(is_volatile("/var/cache/apt/archives/curl.deb"));
        assert!(is_volatile("/var/lib/apt/lists/lock"));
        assert!(!is_volatile("/var/lib/apt/extended_states"));
        assert!(is_volatile("/var/lib/dpkg/lock-frontend"));
        assert!(!is_volatile("/var/lib/dpkg/status"));
        assert!(is_volatile("/root/.cache/pip/http/x"));
        assert!(!is_volatile("/root/.bashrc"));
    }

    #[test]
    fn remove_volatile_empties_and_removes_without_following_symlinks() {
        let t = tempfile::tempdir().expect("tempdir");
        let upper = t.path().join("upper");
        let outside = t.path().join("outside");
        fs::create_dir_all(outside.join("pip")).expect("mkdir");
        fs::write(outside.join("pip/keep"), b"x").expect("write");
        fs::create_dir_all(upper.join("var/cache/apt/archives/partial")).expect("mkdir");
        fs::write(upper.join("var/cache/apt/pkgcache.bin"), b"cache").expect("write");
        fs::create_dir_all(upper.join("var/log/apt")).expect("mkdir");
        fs::write(upper.join("var/log/dpkg.log"), b"log").expect("write");
        fs::create_dir_all(upper.join("var/lib/dpkg")).expect("mkdir");
        fs::write(upper.join("var/lib/dpkg/status"), b"Package: x\n").expect("write");
        fs::write(upper.join("var/lib/dpkg/status-old"), b"Package: x\n").expect("write");
        fs::write(upper.join("var/lib/dpkg/lock-frontend"), b"").expect("write");
        fs::create_dir_all(upper.join("root")).expect("mkdir");
        std::os::unix::fs::symlink(&outside, upper.join("root/.cache")).expect("symlink");
        std::os::unix::fs::symlink(&outside, upper.join("run")).expect("symlink");
        fs::create_dir_all(upper.join("usr/bin")).expect("mkdir");
        fs::write(upper.join("usr/bin/curl"), b"elf").expect("write");

        remove_volatile(&upper).expect("remove");
        assert!(!upper.join("var/cache/apt").exists());
        assert!(
            upper.join("var/cache").is_dir(),
            "only the volatile dir goes"
        );
        assert!(!upper.join("var/log").exists());
        assert!(!upper.join("var/lib/dpkg/status-old").exists());
        assert!(!upper.join("var/lib/dpkg/lock-frontend").exists());
        assert!(upper.join("var/lib/dpkg/status").exists());
        assert!(upper.join("usr/bin/curl").exists());
        // A volatile path that is a symlink is removed as a link; nothing behind it is touched.
        assert!(fs::symlink_metadata(upper.join("root/.cache")).is_err());
        assert!(fs::symlink_metadata(upper.join("run")).is_err());
        assert!(outside.join("pip/keep").exists());
        // Idempotent.
        remove_volatile(&upper).expect("again");
    }

    #[test]
    fn remove_volatile_never_descends_through_a_symlinked_parent() {
        let t = tempfile::tempdir().expect("tempdir");
        let upper = t.path().join("upper");
        let outside = t.path().join("outside");
        fs::create_dir_all(outside.join("log")).expect("mkdir");
        fs::write(outside.join("log/keep"), b"x").expect("write");
        fs::create_dir_all(&upper).expect("mkdir");
        std::os::unix::fs::symlink(&outside, upper.join("var")).expect("symlink");
        remove_volatile(&upper).expect("remove");
        assert!(outside.join("log/keep").exists());
        assert!(fs::symlink_metadata(upper.join("var")).is_ok());
    }

    #[test]
    fn remove_volatile_keeps_an_opaque_dir_empty_root() {
        if !crate::fsutil::is_root() {
            println!("skipped: trusted.overlay.opaque needs root");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let upper = t.path().join("upper");
        fs::create_dir_all(upper.join("tmp/sub")).expect("mkdir");
        fs::write(upper.join("tmp/sub/f"), b"x").expect("write");
        rustix::fs::lsetxattr(
            upper.join("tmp"),
            fsutil::OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr");
        remove_volatile(&upper).expect("remove");
        assert!(upper.join("tmp").is_dir(), "opaque replacement stays");
        assert_eq!(fs::read_dir(upper.join("tmp")).expect("ls").count(), 0);
    }

    #[test]
    fn identical_files_and_dirs_do_not_conflict() {
        let mut other_mtime = file("/usr/lib/libkrb5.so.3", "krb5");
        other_mtime.mtime += 3600;
        let mut private_dir = dir("/usr/share/doc");
        private_dir.mode = 0o700;
        let a = manifest(vec![
            dir("/usr"),
            dir("/usr/share/doc"),
            file("/usr/lib/libkrb5.so.3", "krb5"),
            file("/usr/bin/curl", "curl"),
        ]);
        let b = manifest(vec![
            dir("/usr"),
            private_dir,
            other_mtime,
            file("/usr/lib/python3/requests.py", "requests"),
        ]);
        assert_eq!(
            find_conflicts(&parts(&[("curl", &a), ("requests", &b)])),
            vec![]
        );
    }

    #[test]
    fn different_content_type_mode_or_owner_conflicts_once_per_path() {
        let mut suid = file("/usr/bin/tool", "v1");
        suid.mode = 0o4755;
        let mut link = entry(
            "/usr/bin/python3",
            EntryKind::Symlink {
                target: "python3.11".into(),
            },
        );
        link.mode = 0o777;
        let a = manifest(vec![
            file("/etc/app.conf", "a"),
            file("/usr/bin/tool", "v1"),
            file("/usr/bin/python3", "binary"),
            file("/opt/x", "same"),
        ]);
        let b = manifest(vec![
            file("/etc/app.conf", "b"),
            suid,
            link,
            file("/opt/x", "same"),
        ]);
        let c = manifest(vec![file("/etc/app.conf", "a"), dir("/usr/bin/tool")]);
        let got = find_conflicts(&parts(&[("a@1", &a), ("b@1", &b), ("c@2", &c)]));
        let paths: Vec<&str> = got.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/etc/app.conf", "/usr/bin/python3", "/usr/bin/tool"]
        );
        assert_eq!(
            got[0].packages,
            vec!["a@1", "b@1", "c@2"],
            "every package at the path"
        );
        assert!(
            got[0].detail.contains("b@1: file 1 bytes"),
            "{}",
            got[0].detail
        );
        assert_eq!(got[1].packages, vec!["a@1", "b@1"]);
        assert!(
            got[1].detail.contains("symlink to \"python3.11\""),
            "{}",
            got[1].detail
        );
        assert_eq!(got[2].packages, vec!["a@1", "b@1", "c@2"]);
        assert!(got[2].detail.contains("mode 4755"), "{}", got[2].detail);
        assert!(
            got[2].detail.contains("c@2: directory"),
            "{}",
            got[2].detail
        );
        // Deterministic regardless of order.
        let again = find_conflicts(&parts(&[("a@1", &a), ("b@1", &b), ("c@2", &c)]));
        assert_eq!(got, again);
    }

    #[test]
    fn merge_rule_paths_never_conflict() {
        let a = manifest(vec![
            file("/var/lib/dpkg/status", "Package: a\n"),
            file("/etc/ld.so.cache", "cache a"),
            file("/usr/lib/python3/x/__pycache__/m.cpython-311.pyc", "pyc a"),
            file("/var/lib/dpkg/lock-frontend", ""),
            file("/usr/lib/node_modules/.package-lock.json", "{}"),
        ]);
        let b = manifest(vec![
            file("/var/lib/dpkg/status", "Package: b\n"),
            file("/etc/ld.so.cache", "cache b"),
            file("/usr/lib/python3/x/__pycache__/m.cpython-311.pyc", "pyc b"),
            entry("/var/lib/dpkg/lock-frontend", EntryKind::Whiteout),
            file("/usr/lib/node_modules/.package-lock.json", "{\"x\":1}"),
        ]);
        assert_eq!(find_conflicts(&parts(&[("a", &a), ("b", &b)])), vec![]);
        // The same pyc outside __pycache__ is an ordinary file.
        let c = manifest(vec![file("/usr/lib/python3/x/m.pyc", "1")]);
        let d = manifest(vec![file("/usr/lib/python3/x/m.pyc", "2")]);
        assert_eq!(find_conflicts(&parts(&[("c", &c), ("d", &d)])).len(), 1);
    }

    #[test]
    fn whiteouts_and_opaque_dirs_that_hide_another_package_conflict() {
        let mut opaque = dir("/usr/share/doc/pkg");
        opaque.kind = EntryKind::Dir { opaque: true };
        let remover = manifest(vec![
            entry("/etc/motd", EntryKind::Whiteout),
            entry("/usr/lib/old", EntryKind::Whiteout),
            opaque,
            file("/usr/share/doc/pkg/README", "new"),
            entry("/var/gone", EntryKind::Whiteout),
        ]);
        let provider = manifest(vec![
            file("/etc/motd", "hello"),
            dir("/usr/lib/old"),
            file("/usr/lib/old/a", "a"),
            file("/usr/lib/old/b", "b"),
            dir("/usr/share/doc/pkg"),
            file("/usr/share/doc/pkg/README", "new"),
            file("/usr/share/doc/pkg/changelog", "log"),
        ]);
        // Another package deleting the same path agrees with the remover.
        let also_deletes = manifest(vec![entry("/var/gone", EntryKind::Whiteout)]);
        let got = find_conflicts(&parts(&[
            ("remover", &remover),
            ("provider", &provider),
            ("also", &also_deletes),
        ]));
        let paths: Vec<&str> = got.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/etc/motd", "/usr/lib/old", "/usr/share/doc/pkg"]
        );
        for c in &got {
            assert_eq!(c.packages, vec!["remover", "provider"], "{c:?}");
        }
        assert!(
            got[1].detail.contains(
                "remover deletes /usr/lib/old, hiding provider's /usr/lib/old/a and 1 more"
            ),
            "{}",
            got[1].detail
        );
        assert!(got[2].detail.contains("replaces (opaque directory) /usr/share/doc/pkg, hiding provider's /usr/share/doc/pkg/changelog"), "{}", got[2].detail);
        assert!(
            !got[2].detail.contains("README"),
            "files the remover provides itself are fine"
        );
    }

    #[test]
    fn conflicts_scale_to_twenty_packages() {
        // 20 packages of 10,000 entries: half shared identically, one conflicting file each.
        let manifests: Vec<Manifest> = (0..20)
            .map(|p| {
                let mut entries = Vec::with_capacity(10_001);
                for i in 0..5_000 {
                    entries.push(file(&format!("/usr/lib/shared/{i:05}.so"), "same"));
                    entries.push(file(&format!("/usr/lib/pkg{p}/{i:05}.py"), "own"));
                }
                entries.push(file("/etc/conflict", &format!("package {p}")));
                Manifest::from_entries(entries)
            })
            .collect();
        let names: Vec<String> = (0..20).map(|p| format!("pkg{p}")).collect();
        let input: Vec<(String, &Manifest)> = names.iter().cloned().zip(manifests.iter()).collect();
        let mut fastest = std::time::Duration::MAX;
        let mut got = Vec::new();
        for _ in 0..3 {
            let start = std::time::Instant::now();
            got = find_conflicts(&input);
            fastest = fastest.min(start.elapsed());
        }
        println!("find_conflicts: 20 x 10,001 entries in {fastest:?} (fastest of 3)");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "/etc/conflict");
        assert_eq!(got[0].packages, names);
    }

    const BASE: &str = "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\nDescription: base\n files\n .\n more\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n";

    #[test]
    fn stanza_union_adds_replaces_and_sorts() {
        let curl = format!("{BASE}\nPackage: curl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.88.1-10\nDescription: tool\n  with continuation\n\tand a tab\n .\n");
        let requests = format!("Package: python3-requests\nStatus: install ok installed\nArchitecture: all\nVersion: 2.28.1\n\n{BASE}\n\n");
        let upgraded = BASE.replace("2.36-9", "2.36-9+deb12u4");
        let merged = merge_stanzas(
            Some(BASE),
            &[
                ("curl".into(), curl.as_str()),
                ("requests".into(), requests.as_str()),
                ("libc-up".into(), upgraded.as_str()),
            ],
        )
        .expect("merge");
        let want = "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\nDescription: base\n files\n .\n more\n\n\
Package: curl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.88.1-10\nDescription: tool\n  with continuation\n\tand a tab\n .\n\n\
Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\n\
Package: python3-requests\nStatus: install ok installed\nArchitecture: all\nVersion: 2.28.1\n";
        assert_eq!(merged, want);
    }

    #[test]
    fn stanza_union_keys_on_architecture_and_shares_identical_installs() {
        let dep = "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.11\n";
        let dep386 = dep.replace("amd64", "i386");
        let a = format!("{dep}\nPackage: curl\nArchitecture: amd64\nVersion: 1\n");
        let b = format!("{dep}\n{dep386}\nPackage: wget\nArchitecture: amd64\nVersion: 1\n");
        let merged = merge_stanzas(None, &[("a".into(), a.as_str()), ("b".into(), b.as_str())])
            .expect("identical dependency stanzas are fine");
        let order: Vec<&str> = merged
            .split("\n\n")
            .map(|s| s.lines().next().unwrap_or_default())
            .collect();
        assert_eq!(
            order,
            vec![
                "Package: curl",
                "Package: libssl3",
                "Package: libssl3",
                "Package: wget"
            ]
        );
        assert!(merged.contains("Architecture: amd64\nVersion: 3.0.11\n\nPackage: libssl3\nStatus: install ok installed\nArchitecture: i386"));
        assert!(merged.ends_with("Version: 1\n") && !merged.ends_with("\n\n"));
    }

    #[test]
    fn stanza_conflicts_name_the_key_and_both_parts() {
        let a = format!("{BASE}\nPackage: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.11\n");
        let b = format!("{BASE}\nPackage: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.13\n");
        let c = format!("{BASE}\nPackage: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.11\n");
        let err = merge_stanzas(
            Some(BASE),
            &[
                ("a".into(), a.as_str()),
                ("b".into(), b.as_str()),
                ("c".into(), c.as_str()),
            ],
        )
        .expect_err("conflict");
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].path, "libssl3:amd64");
        assert_eq!(err[0].packages, vec!["a", "b", "c"]);
        assert!(
            err[0].detail.contains("a: Version 3.0.11"),
            "{}",
            err[0].detail
        );
        assert!(
            err[0].detail.contains("b: Version 3.0.13"),
            "{}",
            err[0].detail
        );
    }

    #[test]
    fn stanza_removed_by_a_part_is_dropped_unless_another_changed_it() {
        let libc_only =
            "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n";
        let merged = merge_stanzas(
            Some(BASE),
            &[("purger".into(), libc_only), ("noop".into(), BASE)],
        )
        .expect("merge");
        assert_eq!(merged, libc_only);
        let upgraded = BASE.replace("12.4", "12.5");
        let err = merge_stanzas(
            Some(BASE),
            &[
                ("purger".into(), libc_only),
                ("upgrader".into(), upgraded.as_str()),
            ],
        )
        .expect_err("removed vs upgraded");
        assert_eq!(err[0].path, "base-files:amd64");
        assert_eq!(err[0].packages, vec!["purger", "upgrader"]);
        assert!(
            err[0].detail.contains("purger: removed"),
            "{}",
            err[0].detail
        );
        // Without a base, absence means nothing.
        let union = merge_stanzas(None, &[("purger".into(), libc_only), ("all".into(), BASE)])
            .expect("merge");
        assert_eq!(union, BASE);
    }

    #[test]
    fn stanza_merge_refuses_malformed_input_and_handles_empty() {
        let err = merge_stanzas(None, &[("bad".into(), "Version: 1\n")]).expect_err("no Package");
        assert_eq!(err[0].packages, vec!["bad"]);
        assert!(err[0].detail.contains("no Package field"));
        let twice = "Package: a\nVersion: 1\n\nPackage: a\nVersion: 2\n";
        let err = merge_stanzas(None, &[("dup".into(), twice)]).expect_err("twice");
        assert!(err[0].detail.contains("twice"), "{}", err[0].detail);
        assert_eq!(merge_stanzas(Some(""), &[]).expect("empty"), "");
        // apt extended_states: no Status, only Auto-Installed.
        let ext = "Package: libfoo\nArchitecture: amd64\nAuto-Installed: 1\n";
        assert_eq!(
            merge_stanzas(Some("\n"), &[("p".into(), ext)]).expect("merge"),
            ext
        );
    }

    #[test]
    fn line_union_keeps_order_and_dedups() {
        let base = "root root 4755 /usr/bin/a\n\nroot root 0755 /usr/bin/b\n";
        let merged = merge_lines(
            Some(base),
            &[
                "root root 0755 /usr/bin/b\nroot adm 2755 /usr/bin/c",
                "/usr/lib/x ldconfig\n",
            ],
        );
        assert_eq!(
            merged,
            "root root 4755 /usr/bin/a\nroot root 0755 /usr/bin/b\nroot adm 2755 /usr/bin/c\n/usr/lib/x ldconfig\n"
        );
        assert_eq!(merge_lines(None, &[]), "");
        assert_eq!(merge_lines(None, &["a\n", "a"]), "a\n");
    }
}
