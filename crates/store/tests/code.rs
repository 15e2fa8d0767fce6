//! Function code import: the same tree gives the same digest in every format, and every hostile
//! archive is refused with a typed error while nothing outside the store changes, `code/` gains
//! nothing and `tmp/` is left empty.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{listing, RawTar};
use flate2::write::{DeflateEncoder, GzEncoder};
use strata_store::code::{rejected_counts, CodeFormat, CodeLimits, CodeMeta, CODE_MTIME};
use strata_store::{Store, StoreError};
use strata_types::ErrorKind;
use tar::EntryType;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

const SENTINEL: &[u8] = b"do not touch";

/// A store next to a sentinel file and an empty `outside` dir; archives live in another dir.
struct Env {
    t: tempfile::TempDir,
    archives: tempfile::TempDir,
    store: Store,
    sentinel: PathBuf,
    outside: PathBuf,
    before: BTreeSet<PathBuf>,
}

impl Env {
    fn new() -> Env {
        let t = tempfile::tempdir().expect("tempdir");
        let archives = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&t.path().join("store")).expect("open store");
        let sentinel = t.path().join("sentinel");
        fs::write(&sentinel, SENTINEL).expect("sentinel");
        let outside = t.path().join("outside");
        fs::create_dir(&outside).expect("outside");
        let before = listing(t.path(), &t.path().join("store"));
        Env {
            t,
            archives,
            store,
            sentinel,
            outside,
            before,
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.archives.path().join(name);
        fs::write(&p, bytes).expect("write archive");
        p
    }

    fn import(&self, path: &Path, limits: &CodeLimits) -> Result<CodeMeta, StoreError> {
        self.store.import_code(path, limits)
    }

    /// Imports hostile `bytes` (after checking its format sniffs as `format`, when given) and
    /// checks the import failed and left everything as it was. Returns the error.
    fn reject(&self, name: &str, bytes: &[u8], limits: &CodeLimits) -> StoreError {
        let path = self.write(name, bytes);
        let code_before = self.store.list_code().expect("list code");
        let err = self
            .import(&path, limits)
            .expect_err("hostile archive must be rejected");
        self.assert_untouched(&code_before);
        err
    }

    fn assert_untouched(&self, code_before: &[strata_types::Digest]) {
        assert_eq!(
            fs::read(&self.sentinel).expect("sentinel"),
            SENTINEL,
            "sentinel modified"
        );
        assert!(fs::symlink_metadata(&self.sentinel)
            .expect("sentinel")
            .is_file());
        assert_eq!(
            fs::read_dir(&self.outside).expect("outside").count(),
            0,
            "something written outside"
        );
        assert_eq!(
            listing(self.t.path(), &self.t.path().join("store")),
            self.before,
            "something created or removed outside the store"
        );
        assert_eq!(
            self.store.list_code().expect("list code"),
            code_before,
            "code/ changed"
        );
        let code_dir = self.store.root().join("code");
        assert_eq!(
            fs::read_dir(&code_dir).expect("code dir").count(),
            code_before.len(),
            "stray entry in code/"
        );
        let tmp: Vec<_> = fs::read_dir(self.store.tmp_dir())
            .expect("tmp")
            .map(|e| e.expect("entry").path())
            .collect();
        assert!(tmp.is_empty(), "tmp/ not empty: {tmp:?}");
    }
}

fn assert_invalid(err: &StoreError, entry: &str) {
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let msg = err.to_string();
    // Entry names are quoted (and escaped) in messages.
    assert!(
        msg.contains(entry) || msg.contains(&format!("{entry:?}")),
        "error {msg:?} should name {entry:?}"
    );
}

fn assert_too_large(err: &StoreError, limit: &str) {
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(limit),
        "error {msg:?} should mention {limit:?}"
    );
}

// ---- archive builders ----

fn zip_opts(mode: u32) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(mode)
        .last_modified_time(DateTime::from_date_and_time(2021, 6, 7, 8, 9, 10).expect("date"))
}

/// A zip written by the `zip` crate. Entries: (name, content or symlink target, mode);
/// a name ending in `/` is a directory, mode 0o120777 a symlink.
fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut w = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content, mode) in entries {
        if name.ends_with('/') {
            w.add_directory(*name, zip_opts(*mode)).expect("dir");
        } else if mode & 0o170000 == 0o120000 {
            let target = std::str::from_utf8(content).expect("utf8 target");
            w.add_symlink(*name, target, zip_opts(0o777))
                .expect("symlink");
        } else {
            w.start_file(*name, zip_opts(*mode)).expect("start");
            w.write_all(content).expect("write");
        }
    }
    w.finish().expect("finish").into_inner()
}

/// A zip assembled byte by byte, for what the `zip` crate refuses to write.
#[derive(Default)]
struct RawZip {
    data: Vec<u8>,
    cd: Vec<u8>,
    count: u16,
    offsets: Vec<u32>,
}

struct RawEntry<'a> {
    name: &'a [u8],
    /// Bytes as stored (already deflated for method 8).
    stored: &'a [u8],
    method: u16,
    crc: u32,
    declared: u32,
    /// Full unix mode, type bits included.
    mode: u32,
}

impl RawZip {
    fn entry(&mut self, e: RawEntry<'_>) -> &mut Self {
        let offset = self.data.len() as u32;
        let d = &mut self.data;
        d.extend_from_slice(b"PK\x03\x04");
        d.extend_from_slice(&20u16.to_le_bytes()); // version needed
        d.extend_from_slice(&0u16.to_le_bytes()); // flags
        d.extend_from_slice(&e.method.to_le_bytes());
        d.extend_from_slice(&[0, 0, 0x21, 0]); // time, date (1980-01-01)
        d.extend_from_slice(&e.crc.to_le_bytes());
        d.extend_from_slice(&(e.stored.len() as u32).to_le_bytes());
        d.extend_from_slice(&e.declared.to_le_bytes());
        d.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        d.extend_from_slice(&0u16.to_le_bytes()); // extra
        d.extend_from_slice(e.name);
        d.extend_from_slice(e.stored);
        self.offsets.push(offset);
        self.cd_record(&e, offset);
        self
    }

    /// A second central directory record for the local entry `index` under another name.
    fn alias(&mut self, index: usize, e: RawEntry<'_>) -> &mut Self {
        let offset = self.offsets[index];
        self.cd_record(&e, offset);
        self
    }

    fn cd_record(&mut self, e: &RawEntry<'_>, offset: u32) {
        let c = &mut self.cd;
        c.extend_from_slice(b"PK\x01\x02");
        c.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by unix
        c.extend_from_slice(&20u16.to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes());
        c.extend_from_slice(&e.method.to_le_bytes());
        c.extend_from_slice(&[0, 0, 0x21, 0]);
        c.extend_from_slice(&e.crc.to_le_bytes());
        c.extend_from_slice(&(e.stored.len() as u32).to_le_bytes());
        c.extend_from_slice(&e.declared.to_le_bytes());
        c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attrs
        c.extend_from_slice(&(e.mode << 16).to_le_bytes());
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(e.name);
        self.count += 1;
    }

    fn file(&mut self, name: &str, content: &[u8], mode: u32) -> &mut Self {
        self.entry(stored(name.as_bytes(), content, mode))
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.data.clone();
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&self.cd);
        out.extend_from_slice(b"PK\x05\x06");
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&(self.cd.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }
}

fn crc(b: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(b);
    c.sum()
}

fn stored<'a>(name: &'a [u8], content: &'a [u8], mode: u32) -> RawEntry<'a> {
    RawEntry {
        name,
        stored: content,
        method: 0,
        crc: crc(content),
        declared: content.len() as u32,
        mode,
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// The reference tree as a tar with arbitrary owners, mtimes and modes.
fn reference_tar() -> Vec<u8> {
    RawTar::new()
        .dir("./")
        .dir("bin/")
        .file_meta("bin/run", b"#!/bin/sh\necho hi\n", 0o700, 1000, 1000, 5)
        .file_meta("index.js", b"exports.handler = () => 1;\n", 0o600, 42, 7, 1)
        .dir("lib/deep/")
        .file_meta("lib/deep/data.json", b"{}", 0o664, 0, 0, 99)
        .symlink("lib/current", "deep/data.json")
        .bytes()
}

/// The same tree as a zip from the `zip` crate, with its own modes and times.
fn reference_zip() -> Vec<u8> {
    zip_of(&[
        ("bin/", b"", 0o755),
        ("bin/run", b"#!/bin/sh\necho hi\n", 0o755),
        ("index.js", b"exports.handler = () => 1;\n", 0o644),
        ("lib/", b"", 0o700),
        ("lib/deep/", b"", 0o755),
        ("lib/deep/data.json", b"{}", 0o600),
        ("lib/current", b"deep/data.json", 0o120777),
    ])
}

// ---- the happy path ----

#[test]
fn same_tree_same_digest_in_every_format() {
    let env = Env::new();
    let limits = CodeLimits::default();
    let tar = reference_tar();
    let zip = reference_zip();
    // A zip listing no directories at all, with files stored uncompressed.
    let mut bare = RawZip::default();
    bare.file("index.js", b"exports.handler = () => 1;\n", 0o100644)
        .file("bin/run", b"#!/bin/sh\necho hi\n", 0o100711)
        .file("lib/deep/data.json", b"{}", 0o100444)
        .entry(stored(b"lib/current", b"deep/data.json", 0o120777));

    let paths = [
        env.write("code.tar", &tar),
        env.write("code.tar.gz", &gz(&tar)),
        env.write("code.zip", &zip),
        env.write("bare.zip", &bare.bytes()),
    ];
    assert_eq!(
        CodeFormat::sniff(&paths[0]).expect("sniff"),
        CodeFormat::Tar
    );
    assert_eq!(
        CodeFormat::sniff(&paths[1]).expect("sniff"),
        CodeFormat::TarGz
    );
    assert_eq!(
        CodeFormat::sniff(&paths[2]).expect("sniff"),
        CodeFormat::Zip
    );

    let metas: Vec<CodeMeta> = paths
        .iter()
        .map(|p| env.import(p, &limits).expect("import"))
        .collect();
    for (m, p) in metas.iter().zip(&paths) {
        assert_eq!(m, &metas[0], "{} differs", p.display());
    }
    let meta = &metas[0];
    assert_eq!(
        meta.entries, 7,
        "bin, bin/run, index.js, lib, lib/deep, data.json, current"
    );
    assert_eq!(meta.size_bytes, 18 + 27 + 2);
    assert_eq!(
        env.store.list_code().expect("list"),
        vec![meta.digest.clone()]
    );
    assert!(env.store.has_code(&meta.digest));

    let root = env.store.code_path(&meta.digest);
    assert_eq!(root, env.store.root().join("code").join(meta.digest.hex()));
    let mode = |p: &str| fs::symlink_metadata(root.join(p)).expect("stat").mode() & 0o7777;
    assert_eq!(mode("bin/run"), 0o755, "any exec bit gives 0755");
    assert_eq!(mode("index.js"), 0o644);
    assert_eq!(mode("lib/deep/data.json"), 0o644);
    assert_eq!(mode("lib"), 0o755);
    assert_eq!(mode(""), 0o755, "the root too");
    for p in [
        "",
        "bin",
        "bin/run",
        "index.js",
        "lib/current",
        "lib/deep/data.json",
    ] {
        let md = fs::symlink_metadata(root.join(p)).expect("stat");
        assert_eq!(md.mtime(), CODE_MTIME, "{p}");
    }
    assert_eq!(
        fs::read_link(root.join("lib/current")).expect("symlink kept"),
        Path::new("deep/data.json")
    );
    assert_eq!(
        fs::read(root.join("lib/current")).expect("read through link"),
        b"{}"
    );

    // Idempotent: importing again reuses the directory.
    let again = env.import(&paths[2], &limits).expect("again");
    assert_eq!(&again, meta);
    env.assert_untouched(std::slice::from_ref(&meta.digest));
}

#[test]
fn different_content_gives_a_different_digest_and_remove_works() {
    let env = Env::new();
    let limits = CodeLimits::default();
    let a = env.write("a.zip", &zip_of(&[("index.js", b"1", 0o644)]));
    let b = env.write("b.zip", &zip_of(&[("index.js", b"2", 0o644)]));
    let x = env.write("x.zip", &zip_of(&[("index.js", b"1", 0o755)]));
    let da = env.import(&a, &limits).expect("a").digest;
    let db = env.import(&b, &limits).expect("b").digest;
    let dx = env.import(&x, &limits).expect("x").digest;
    assert_ne!(da, db, "content counts");
    assert_ne!(da, dx, "the exec bit counts");
    assert_eq!(env.store.list_code().expect("list").len(), 3);
    env.store.remove_code(&db).expect("remove");
    assert!(!env.store.has_code(&db));
    let err = env.store.remove_code(&db).expect_err("twice");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    env.assert_untouched(&{
        let mut v = vec![da, dx];
        v.sort();
        v
    });
}

#[test]
fn empty_zip_is_an_empty_tree() {
    let env = Env::new();
    let empty = env.write("empty.zip", &RawZip::default().bytes());
    assert_eq!(CodeFormat::sniff(&empty).expect("sniff"), CodeFormat::Zip);
    let meta = env.import(&empty, &CodeLimits::default()).expect("import");
    assert_eq!(meta.entries, 0);
}

#[test]
fn normalized_owner_is_root() {
    if !common::is_root() {
        println!("skipped: chown to root:root needs root");
        return;
    }
    let env = Env::new();
    let path = env.write("code.tar", &reference_tar());
    let meta = env.import(&path, &CodeLimits::default()).expect("import");
    let root = env.store.code_path(&meta.digest);
    for item in walkdir::WalkDir::new(&root) {
        let item = item.expect("walk");
        let md = fs::symlink_metadata(item.path()).expect("stat");
        assert_eq!((md.uid(), md.gid()), (0, 0), "{}", item.path().display());
    }
}

// ---- hostile names ----

#[test]
fn climbing_absolute_and_backslash_names_are_rejected() {
    let env = Env::new();
    let limits = CodeLimits::default();
    let before = rejected_counts();
    for name in ["../evil", "a/../../evil", "/abs", "..\\evil", "a/../b"] {
        let mut z = RawZip::default();
        z.file("ok.txt", b"fine", 0o100644)
            .file(name, b"pwned", 0o100644);
        let err = env.reject("evil.zip", &z.bytes(), &limits);
        assert_invalid(&err, name);

        let mut t = RawTar::new();
        t.file("ok.txt", b"fine").file(name, b"pwned");
        let err = env.reject("evil.tar", &t.bytes(), &limits);
        assert_invalid(&err, name);
    }
    let counted = |v: &[(&str, u64)]| {
        v.iter()
            .find(|(n, _)| *n == "path")
            .map(|(_, c)| *c)
            .unwrap_or_default()
    };
    assert!(counted(&rejected_counts()) >= counted(&before) + 10);
}

#[test]
fn nul_empty_deep_and_long_names_are_rejected() {
    let env = Env::new();
    let limits = CodeLimits::default();
    let mut z = RawZip::default();
    z.file("a\0b", b"x", 0o100644);
    assert_invalid(&env.reject("nul.zip", &z.bytes(), &limits), "NUL");
    let mut z = RawZip::default();
    z.file("", b"x", 0o100644);
    assert_invalid(&env.reject("empty.zip", &z.bytes(), &limits), "empty name");

    let deep = vec!["d"; 65].join("/");
    let z = zip_of(&[(deep.as_str(), b"x", 0o644)]);
    assert_too_large(&env.reject("deep.zip", &z, &limits), "path depth");
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    t.append_data(&mut h, &deep, &b"x"[..]).expect("append");
    let t = t.into_inner().expect("tar");
    assert_too_large(&env.reject("deep.tar", &t, &limits), "path depth");

    let long = "x".repeat(1025);
    let z = zip_of(&[(long.as_str(), b"x", 0o644)]);
    assert_too_large(&env.reject("long.zip", &z, &limits), "name length");
}

#[test]
fn whiteout_names_are_rejected() {
    let env = Env::new();
    let z = zip_of(&[("dir/.wh.file", b"x", 0o644)]);
    assert_invalid(&env.reject("wh.zip", &z, &CodeLimits::default()), ".wh.");
}

// ---- links ----

#[test]
fn symlinks_pointing_out_are_rejected() {
    let env = Env::new();
    let limits = CodeLimits::default();
    let outside = env.outside.to_str().expect("utf8").to_string();
    for target in [
        "/etc/passwd",
        "../../x",
        "../../../outside",
        outside.as_str(),
    ] {
        // The link, then a file written through it: the link alone is refused already.
        let mut z = RawZip::default();
        z.entry(stored(b"a/link", target.as_bytes(), 0o120777))
            .file("a/link/pwned", b"x", 0o100644);
        let err = env.reject("link.zip", &z.bytes(), &limits);
        assert_invalid(&err, "a/link");
        assert!(err.to_string().contains("point out"), "{err}");

        let mut t = RawTar::new();
        t.symlink("a/link", target).file("a/link/pwned", b"x");
        let err = env.reject("link.tar", &t.bytes(), &limits);
        assert_invalid(&err, "a/link");
    }
}

#[test]
fn symlink_chains_that_climb_out_are_rejected() {
    let env = Env::new();
    // Each link is inside on its own; `x` goes through `up` and lands above the root.
    let mut t = RawTar::new();
    t.symlink("a/b/up", "../..").symlink("x", "a/b/up/..");
    let err = env.reject("chain.tar", &t.bytes(), &CodeLimits::default());
    assert_invalid(&err, "x");
    assert!(err.to_string().contains("out of the code root"), "{err}");
}

#[test]
fn files_through_an_internal_symlink_are_rejected() {
    let env = Env::new();
    let mut z = RawZip::default();
    z.file("real/keep", b"x", 0o100644)
        .entry(stored(b"link", b"real", 0o120777))
        .file("link/pwned", b"x", 0o100644);
    let err = env.reject("through.zip", &z.bytes(), &CodeLimits::default());
    assert_invalid(&err, "link/pwned");
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[test]
fn hardlinks_out_or_to_later_entries_are_rejected() {
    let env = Env::new();
    let limits = CodeLimits::default();
    for target in ["/etc/passwd", "../../etc/passwd", "later", "dir"] {
        let mut t = RawTar::new();
        t.dir("dir/").hardlink("h", target).file("later", b"x");
        let err = env.reject("hard.tar", &t.bytes(), &limits);
        assert_invalid(&err, "h");
        assert!(err.to_string().contains("hardlink"), "{err}");
    }
    // A hardlink to an earlier regular file is fine and unpacks as a copy would.
    let mut t = RawTar::new();
    t.file("a", b"same").hardlink("b", "a");
    let path = env.write("ok.tar", &t.bytes());
    let linked = env
        .import(&path, &limits)
        .expect("hardlink to earlier file");
    let copy = env.write(
        "copy.zip",
        &zip_of(&[("a", b"same", 0o644), ("b", b"same", 0o644)]),
    );
    assert_eq!(env.import(&copy, &limits).expect("copy"), linked);
}

// ---- types ----

#[test]
fn devices_fifos_and_sockets_are_rejected() {
    let env = Env::new();
    let limits = CodeLimits::default();
    let mut t = RawTar::new();
    t.device("dev/null", EntryType::Char, 1, 3);
    assert_invalid(&env.reject("dev.tar", &t.bytes(), &limits), "dev/null");
    let mut t = RawTar::new();
    t.device("disk", EntryType::Block, 8, 0);
    assert_invalid(&env.reject("blk.tar", &t.bytes(), &limits), "disk");
    let mut t = RawTar::new();
    t.fifo("pipe");
    assert_invalid(&env.reject("fifo.tar", &t.bytes(), &limits), "pipe");
    for (name, mode) in [("chr", 0o020644), ("fifo", 0o010644), ("sock", 0o140644)] {
        let mut z = RawZip::default();
        z.file(name, b"", mode);
        let err = env.reject("dev.zip", &z.bytes(), &limits);
        assert_invalid(&err, name);
        assert!(err.to_string().contains("device nodes"), "{err}");
    }
}

// ---- duplicates and overlaps ----

#[test]
fn duplicate_entries_are_rejected() {
    let env = Env::new();
    let limits = CodeLimits::default();
    let mut z = RawZip::default();
    z.file("index.js", b"first", 0o100644)
        .file("index.js", b"second", 0o100644);
    assert_invalid(&env.reject("dup.zip", &z.bytes(), &limits), "index.js");
    let mut z = RawZip::default();
    z.file("a/b", b"first", 0o100644)
        .file("./a//b", b"second", 0o100644);
    let err = env.reject("dup2.zip", &z.bytes(), &limits);
    assert_invalid(&err, "./a//b");
    assert!(err.to_string().contains("duplicate"), "{err}");

    let mut t = RawTar::new();
    t.file("index.js", b"first").file("./index.js", b"second");
    let err = env.reject("dup.tar", &t.bytes(), &limits);
    assert_invalid(&err, "./index.js");
    assert!(err.to_string().contains("duplicate"), "{err}");
}

#[test]
fn overlapping_zip_entries_are_rejected() {
    let env = Env::new();
    let data = vec![7u8; 1000];
    let mut z = RawZip::default();
    z.file("a", &data, 0o100644)
        .alias(0, stored(b"b", &data, 0o100644));
    let err = env.reject("overlap.zip", &z.bytes(), &CodeLimits::default());
    assert_invalid(&err, "overlap");
}

// ---- sizes ----

/// Peak resident memory of this process in KiB, after resetting the peak where allowed.
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn zip_bomb_is_rejected_with_bounded_memory() {
    let env = Env::new();
    let limits = CodeLimits::default();
    // One 1 GiB entry of zeros, deflated while streaming: about 1 MiB on disk.
    let path = env.archives.path().join("bomb.zip");
    {
        let file = fs::File::create(&path).expect("create");
        let mut w = ZipWriter::new(file);
        w.start_file(
            "zeros",
            SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .compression_level(Some(1)),
        )
        .expect("start");
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            w.write_all(&chunk).expect("write");
        }
        w.finish().expect("finish");
    }
    let size = fs::metadata(&path).expect("stat").len();
    assert!(size < 16 << 20, "bomb is small: {size}");

    reset_peak_rss();
    let err = env.import(&path, &limits).expect_err("bomb");
    assert_too_large(&err, "file size");
    env.assert_untouched(&[]);

    // The same bomb claiming to be 1000 bytes: stopped once it produces more than it claims.
    let mut bytes = fs::read(&path).expect("read");
    patch_declared_sizes(&mut bytes, b"zeros", 1000);
    let err = env.reject("liar-bomb.zip", &bytes, &limits);
    assert_invalid(&err, "zeros");
    assert!(err.to_string().contains("more bytes"), "{err}");
    drop(bytes);

    // Claiming 200 MiB, within the file limit: over a 10x compression ratio.
    let mut bytes = fs::read(&path).expect("read");
    patch_declared_sizes(&mut bytes, b"zeros", 200 << 20);
    let ratio10 = CodeLimits {
        max_ratio: 10,
        ..CodeLimits::default()
    };
    let err = env.reject("ratio-bomb.zip", &bytes, &ratio10);
    assert_too_large(&err, "compression ratio");

    // With the ratio allowed, 100 MiB really stream through to disk, and one byte more stops it.
    patch_declared_sizes(&mut bytes, b"zeros", 100 << 20);
    let ratio1000 = CodeLimits {
        max_ratio: 1000,
        ..CodeLimits::default()
    };
    let err = env.reject("long-bomb.zip", &bytes, &ratio1000);
    assert_invalid(&err, "zeros");
    drop(bytes);

    let peak = peak_rss_kib();
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
}

/// Rewrites the uncompressed size of entry `name` in its local header and central record (the
/// zip crate writes no zip64 extra for a 1 GiB entry).
fn patch_declared_sizes(bytes: &mut [u8], name: &[u8], size: u32) {
    let local = bytes
        .windows(4)
        .position(|w| w == b"PK\x03\x04")
        .expect("local header");
    assert_eq!(&bytes[local + 30..local + 30 + name.len()], name);
    bytes[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    let cd = bytes
        .windows(4)
        .rposition(|w| w == b"PK\x01\x02")
        .expect("central record");
    assert_eq!(&bytes[cd + 46..cd + 46 + name.len()], name);
    bytes[cd + 24..cd + 28].copy_from_slice(&size.to_le_bytes());
}

#[test]
fn lying_declared_sizes_are_stopped() {
    let env = Env::new();
    let content = vec![b'x'; 100 << 10];
    // Claims 10 bytes, holds 100 KiB (stored, so the reader hands over all of it).
    let mut z = RawZip::default();
    z.entry(RawEntry {
        declared: 10,
        ..stored(b"liar", &content, 0o100644)
    });
    let err = env.reject("liar.zip", &z.bytes(), &CodeLimits::default());
    assert_invalid(&err, "liar");
    assert!(err.to_string().contains("more bytes than the 10"), "{err}");

    // Claims more than it holds.
    let mut z = RawZip::default();
    z.entry(RawEntry {
        declared: 200 << 10,
        ..stored(b"short", &content, 0o100644)
    });
    let err = env.reject("short.zip", &z.bytes(), &CodeLimits::default());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    // A small claim but a per-file cap below the real size: the cap stops it.
    let limits = CodeLimits {
        max_file_bytes: 64 << 10,
        ..CodeLimits::default()
    };
    let mut z = RawZip::default();
    z.entry(RawEntry {
        declared: 1000,
        ..stored(b"capped", &content, 0o100644)
    });
    let err = env.reject("capped.zip", &z.bytes(), &limits);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    // In a tar, a header claiming more than the per-file limit is refused before reading.
    let mut t = RawTar::new();
    t.file_claiming("big", 70 << 10, b"x");
    assert_too_large(&env.reject("big.tar", &t.bytes(), &limits), "file size");
}

#[test]
fn gzip_bomb_is_rejected_at_the_ratio() {
    let env = Env::new();
    // 64 MiB of zeros in a tar.gz of about 64 KiB: the ratio cap (200x) stops it at ~13 MiB.
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut t = tar::Builder::new(&mut e);
        let mut h = tar::Header::new_gnu();
        h.set_size(64 << 20);
        h.set_mode(0o644);
        t.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), 64 << 20),
        )
        .expect("append");
        t.finish().expect("finish");
    }
    let bytes = e.finish().expect("gzip");
    let err = env.reject("bomb.tar.gz", &bytes, &CodeLimits::default());
    assert_too_large(&err, "compression ratio");
}

#[test]
fn too_many_entries_and_too_many_bytes_are_rejected() {
    let env = Env::new();
    let limits = CodeLimits {
        max_entries: 5,
        ..CodeLimits::default()
    };
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, &[u8], u32)> = names
        .iter()
        .map(|n| (n.as_str(), &b"x"[..], 0o644))
        .collect();
    assert_too_large(
        &env.reject("many.zip", &zip_of(&entries), &limits),
        "entry count",
    );
    let mut t = RawTar::new();
    for n in &names {
        t.file(n, b"x");
    }
    assert_too_large(&env.reject("many.tar", &t.bytes(), &limits), "entry count");

    let limits = CodeLimits {
        max_unpacked_bytes: 1000,
        ..CodeLimits::default()
    };
    let big = vec![b'y'; 600];
    let z = zip_of(&[("a", &big, 0o644), ("b", &big, 0o644)]);
    assert_too_large(&env.reject("total.zip", &z, &limits), "total size");
    let mut t = RawTar::new();
    t.file("a", &big).file("b", &big);
    assert_too_large(&env.reject("total.tar", &t.bytes(), &limits), "total size");

    let limits = CodeLimits {
        max_archive_bytes: 100,
        ..CodeLimits::default()
    };
    assert_too_large(
        &env.reject("huge.zip", &zip_of(&[("a", &big, 0o644)]), &limits),
        "archive size",
    );
}

#[test]
fn zip64_end_record_claiming_many_entries_is_rejected() {
    let env = Env::new();
    let mut bytes = RawZip::default().file("a", b"x", 0o100644).bytes();
    // A zip64 end record claiming 2^40 entries, placed before the real end record.
    let eocd = bytes.len() - 22;
    let mut rec = Vec::new();
    rec.extend_from_slice(b"PK\x06\x06");
    rec.extend_from_slice(&44u64.to_le_bytes());
    rec.extend_from_slice(&[45, 3, 45, 0]);
    rec.extend_from_slice(&[0; 8]);
    rec.extend_from_slice(&(1u64 << 40).to_le_bytes());
    rec.extend_from_slice(&(1u64 << 40).to_le_bytes());
    rec.extend_from_slice(&[0; 16]);
    bytes.splice(eocd..eocd, rec);
    let err = env.reject("zip64.zip", &bytes, &CodeLimits::default());
    assert_too_large(&err, "entry count");
}

// ---- formats ----

#[test]
fn non_archives_get_a_clear_format_error() {
    let env = Env::new();
    let limits = CodeLimits::default();
    for (name, bytes) in [
        ("script.sh", &b"#!/bin/sh\necho not an archive\n"[..]),
        ("empty", &b""[..]),
        ("data.bz2", &b"BZh91AY&SY"[..]),
    ] {
        let err = env.reject(name, bytes, &limits);
        assert!(
            matches!(err, StoreError::UnsupportedCodeArchive { .. }),
            "{err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let msg = err.to_string();
        assert!(
            msg.contains(".zip") && msg.contains(".tar") && msg.contains(".tar.gz"),
            "{msg}"
        );
    }
    // gzip, but not of a tar.
    let err = env.reject("notar.gz", &gz(&vec![b'z'; 4096]), &limits);
    assert!(err.to_string().contains("does not hold a tar"), "{err}");
    // A truncated zip.
    let zip = reference_zip();
    let err = env.reject("cut.zip", &zip[..zip.len() / 2], &limits);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    // A missing file.
    let err = env
        .store
        .import_code(&env.archives.path().join("nope.zip"), &limits)
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn zip_with_windows_separators_unpacks_with_slashes() {
    let env = Env::new();
    let mut z = RawZip::default();
    z.file("lib\\util.js", b"u", 0o100644);
    let path = env.write("win.zip", &z.bytes());
    let meta = env.import(&path, &CodeLimits::default()).expect("import");
    let root = env.store.code_path(&meta.digest);
    assert_eq!(fs::read(root.join("lib/util.js")).expect("read"), b"u");
}

#[test]
fn deflated_raw_entries_unpack() {
    // A hand-made deflated entry, so the raw builder is known to produce readable zips.
    let env = Env::new();
    let content = b"hello hello hello hello".repeat(10);
    let mut e = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&content).expect("deflate");
    let deflated = e.finish().expect("deflate");
    let mut z = RawZip::default();
    z.entry(RawEntry {
        name: b"greeting",
        stored: &deflated,
        method: 8,
        crc: crc(&content),
        declared: content.len() as u32,
        mode: 0o100755,
    });
    let path = env.write("raw.zip", &z.bytes());
    let meta = env.import(&path, &CodeLimits::default()).expect("import");
    let f = env.store.code_path(&meta.digest).join("greeting");
    assert_eq!(fs::read(&f).expect("read"), content);
    assert_eq!(
        fs::metadata(&f).expect("stat").permissions().mode() & 0o7777,
        0o755
    );
}
