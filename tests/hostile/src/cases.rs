//! The hostile corpus: every case, its forms (tar, tar.gz, zip) and the expected outcome on each
//! extractor. Built deterministically from the sandbox paths (absolute targets point at the
//! sandbox's victim dir), so nothing binary is checked in.
//!
//! Expectations are seven characters, one per [`Target`] in [`Target::ALL`] order
//! (`tar/oci tar/keep img/docker img/oci code/tar code/tgz code/zip`): `R` typed rejection,
//! `C` contained (accepted, everything below the destination), `-` not applicable.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use strata_store::archive::Limits;

use crate::gen::{self, gz, Kind, Tar, ZipEntry, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG};
use crate::harness::Target;

/// A check of the tree an accepted input produced.
pub type Check = fn(&Path) -> Result<(), String>;

pub struct Case {
    pub name: String,
    /// What the case tries.
    pub idea: &'static str,
    /// The uncompressed tar form (layers, code tar; gzipped for code tar.gz).
    pub tar: Option<Vec<u8>>,
    /// A form that only exists compressed (bombs): used instead of `tar` by every tar reader.
    pub tar_gz: Option<Vec<u8>>,
    pub zip: Option<Vec<u8>>,
    pub expect: &'static str,
    pub check: Option<Check>,
    /// Limits for the direct `extract_tar` runs, when not the defaults.
    pub layer_limits: Option<Limits>,
    /// Whether image import applies (floods are too slow at the default 2,000,000-entry cap).
    pub import: bool,
    /// A decompression or memory bomb: peak RSS and time are recorded and bounded.
    pub bomb: bool,
}

impl Case {
    fn new(name: &str, idea: &'static str, expect: &'static str) -> Case {
        assert_eq!(expect.len(), 7, "{name}: expectation needs 7 outcomes");
        Case {
            name: name.to_string(),
            idea,
            tar: None,
            tar_gz: None,
            zip: None,
            expect,
            check: None,
            layer_limits: None,
            import: true,
            bomb: false,
        }
    }

    fn tar(mut self, t: &Tar) -> Case {
        self.tar = Some(t.bytes());
        self
    }

    fn tar_bytes(mut self, b: Vec<u8>) -> Case {
        self.tar = Some(b);
        self
    }

    fn gz_only(mut self, b: Vec<u8>) -> Case {
        self.tar_gz = Some(b);
        self
    }

    fn zip(mut self, entries: &[ZipEntry]) -> Case {
        self.zip = Some(gen::zip(entries));
        self
    }

    fn check(mut self, c: Check) -> Case {
        self.check = Some(c);
        self
    }

    fn bomb(mut self) -> Case {
        self.bomb = true;
        self
    }

    /// The expected outcome on `t`: `'R'`, `'C'` or `'-'`.
    pub fn expected(&self, t: Target) -> char {
        let i = Target::ALL.iter().position(|x| *x == t).unwrap_or(0);
        let c = self.expect.as_bytes()[i] as char;
        if self.input(t).is_none() {
            '-'
        } else {
            c
        }
    }

    /// The bytes `t` reads for this case, or `None` when the case has no such form.
    pub fn input(&self, t: Target) -> Option<Vec<u8>> {
        let layer = || self.tar_gz.clone().or_else(|| self.tar.clone());
        match t {
            Target::ExtractOci | Target::ExtractKeep => layer(),
            Target::ImportDocker if self.import => {
                let blob = layer()?;
                let diff_id = match &self.tar {
                    Some(t) if self.tar_gz.is_none() => gen::sha256_hex(t),
                    // Bombs: the importer must stop before it could check a digest.
                    _ => gen::sha256_hex(b"not the diff id"),
                };
                Some(gen::docker_save(&blob, &diff_id))
            }
            Target::ImportOci if self.import => Some(gen::oci_layout(&layer()?)),
            Target::ImportDocker | Target::ImportOci => None,
            Target::CodeTar => {
                if self.tar_gz.is_some() {
                    None
                } else {
                    self.tar.clone()
                }
            }
            Target::CodeTarGz => self.tar_gz.clone().or_else(|| self.tar.as_deref().map(gz)),
            Target::CodeZip => self.zip.clone(),
        }
    }
}

/// `../` repeated enough to climb from any destination to `/`.
fn up() -> String {
    "../".repeat(40)
}

/// `path` (absolute) as a relative path climbing from anywhere.
fn climb(path: &Path) -> String {
    format!(
        "{}{}",
        up(),
        path.display().to_string().trim_start_matches('/')
    )
}

fn f(name: &str, data: &[u8]) -> ZipEntry {
    ZipEntry::stored(name.as_bytes(), data, S_IFREG | 0o644)
}

fn zlink(name: &str, target: &str) -> ZipEntry {
    ZipEntry::stored(name.as_bytes(), target.as_bytes(), S_IFLNK | 0o777)
}

fn zdir(name: &str) -> ZipEntry {
    ZipEntry::stored(name.as_bytes(), b"", S_IFDIR | 0o755)
}

fn file_is(root: &Path, rel: &str, content: &[u8]) -> Result<(), String> {
    let p = root.join(rel);
    let md = fs::symlink_metadata(&p).map_err(|e| format!("{rel}: {e}"))?;
    if !md.is_file() {
        return Err(format!("{rel} is not a regular file"));
    }
    let got = fs::read(&p).map_err(|e| format!("{rel}: {e}"))?;
    if got != content {
        return Err(format!(
            "{rel}: unexpected content {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    Ok(())
}

fn is_symlink(root: &Path, rel: &str) -> Result<(), String> {
    let md = fs::symlink_metadata(root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
    if md.file_type().is_symlink() {
        Ok(())
    } else {
        Err(format!("{rel} is not a symlink"))
    }
}

fn is_whiteout(root: &Path, rel: &str) -> Result<(), String> {
    let md = fs::symlink_metadata(root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
    if md.file_type().is_char_device() && md.rdev() == 0 {
        Ok(())
    } else {
        Err(format!("{rel} is not a 0:0 whiteout"))
    }
}

fn same_inode(root: &Path, a: &str, b: &str) -> Result<(), String> {
    let ia = fs::symlink_metadata(root.join(a)).map_err(|e| format!("{a}: {e}"))?;
    let ib = fs::symlink_metadata(root.join(b)).map_err(|e| format!("{b}: {e}"))?;
    if ia.ino() == ib.ino() && ia.is_file() {
        Ok(())
    } else {
        Err(format!("{a} and {b} are not one regular file"))
    }
}

const ALL_R: &str = "RRRRRRR";
/// Layers accept (contained), code refuses.
const LAYERS_C: &str = "CCCCRRR";
/// OCI-whiteout extractors accept, plain extraction and code refuse.
const OCI_C: &str = "CRCCRRR";

/// Every case, built against `victim` (the sandbox's absolute victim dir).
pub fn all(victim: &Path) -> Vec<Case> {
    let v = victim.display().to_string();
    let vpasswd = format!("{v}/passwd");
    let vrel = climb(victim);
    let mut out = containerd_breakouts(&v, &vrel);

    // ---- names ----
    out.push(
        Case::new("dotdot-plain", "`../escape`", ALL_R)
            .tar(Tar::new().file("../escape", b"pwned"))
            .zip(&[f("../escape", b"pwned")]),
    );
    out.push(
        Case::new("dotdot-nested", "`a/b/../../../escape`", ALL_R)
            .tar(Tar::new().file("a/b/../../../escape", b"pwned"))
            .zip(&[f("a/b/../../../escape", b"pwned")]),
    );
    out.push(
        Case::new("dotdot-deep", "40 x `../` then the victim's passwd", ALL_R)
            .tar(Tar::new().file(&format!("{}victim/passwd", up()), b"pwned"))
            .zip(&[f(&format!("{}victim/passwd", up()), b"pwned")]),
    );
    out.push(
        Case::new(
            "dotdot-backslash",
            "`..\\escape`, `a\\..\\..\\escape`: one literal name on Linux, refused for code",
            "CCCCRRR",
        )
        .tar(
            Tar::new()
                .file("..\\escape", b"x")
                .file("a\\..\\..\\escape", b"y"),
        )
        .zip(&[f("..\\escape", b"x")])
        .check(|r| file_is(r, "..\\escape", b"x")),
    );
    out.push(
        Case::new(
            "absolute-name",
            "a file named by the victim's absolute path: lands inside the destination",
            LAYERS_C,
        )
        .tar(Tar::new().file(&vpasswd, b"pwned"))
        .zip(&[f(&vpasswd, b"pwned")])
        .check(|r| {
            let hits = walkdir::WalkDir::new(r)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_name() == "passwd")
                .count();
            if hits == 1 {
                Ok(())
            } else {
                Err(format!(
                    "expected the absolute name inside the tree, found {hits}"
                ))
            }
        }),
    );
    out.push(
        Case::new("absolute-dotdot", "`/../escape`", ALL_R)
            .tar(Tar::new().file("/../escape", b"pwned"))
            .zip(&[f("/../escape", b"pwned")]),
    );
    out.push(
        Case::new(
            "nul-in-name",
            "NUL inside a GNU long name and a PAX path",
            ALL_R,
        )
        .tar(
            Tar::new()
                .entry(
                    format!("{}\0/../../escape", "n".repeat(120)).as_bytes(),
                    Kind::File,
                    b"",
                    b"x",
                    0o644,
                )
                .pax(&[("path", b"a\0../../escape")])
                .file("placeholder", b"x"),
        )
        .zip(&[ZipEntry::stored(b"a\0b", b"x", S_IFREG | 0o644)]),
    );
    out.push(
        Case::new("nul-in-pax-path", "NUL inside a PAX path only", ALL_R).tar(
            Tar::new()
                .pax(&[("path", b"a\0../../escape")])
                .file("placeholder", b"x"),
        ),
    );
    out.push(
        Case::new("empty-name", "a file with an empty name", ALL_R)
            .tar(Tar::new().file("", b"x"))
            .zip(&[f("", b"x")]),
    );
    out.push(
        Case::new("dot-file", "a regular file named `.` (the root)", ALL_R)
            .tar(Tar::new().file(".", b"x"))
            .zip(&[f("./", b"x"), f(".", b"x")]),
    );
    out.push(
        Case::new(
            "pax-path-override",
            "header says `safe`, PAX path says `../escape`",
            ALL_R,
        )
        .tar(Tar::new().pax(&[("path", b"../escape")]).file("safe", b"x")),
    );

    // ---- symlinks ----
    out.push(
        Case::new(
            "symlink-abs-write",
            "symlink to the victim dir, then a file through it",
            ALL_R,
        )
        .tar(Tar::new().symlink("l", &v).file("l/passwd", b"pwned"))
        .zip(&[zlink("l", &v), f("l/passwd", b"pwned")]),
    );
    out.push(
        Case::new(
            "symlink-rel-write",
            "symlink climbing to the victim, then a file through it",
            ALL_R,
        )
        .tar(Tar::new().symlink("l", &vrel).file("l/passwd", b"pwned"))
        .zip(&[zlink("l", &vrel), f("l/passwd", b"pwned")]),
    );
    out.push(
        Case::new(
            "symlink-chain",
            "`a -> b`, `b -> ../..`, then a file through `a`",
            ALL_R,
        )
        .tar(
            Tar::new()
                .symlink("b", &format!("../..{}", &vrel[2..]))
                .symlink("a", "b")
                .file("a/escape", b"pwned"),
        )
        .zip(&[
            zlink("b", "../.."),
            zlink("a", "b"),
            f("a/escape", b"pwned"),
        ]),
    );
    out.push(
        Case::new(
            "symlink-chain-lexical",
            "`d/up -> ..` and `x -> d/up/..`: lexically inside, really above the root",
            "CCCCRRR",
        )
        .tar(
            Tar::new()
                .dir("d")
                .symlink("d/up", "..")
                .symlink("x", "d/up/.."),
        )
        .zip(&[zdir("d/"), zlink("d/up", ".."), zlink("x", "d/up/..")])
        .check(|r| is_symlink(r, "x")),
    );
    out.push(
        Case::new(
            "symlink-abs-dangling",
            "an absolute symlink nothing goes through: kept in layers, refused for code",
            LAYERS_C,
        )
        .tar(Tar::new().symlink("etc", &v))
        .zip(&[zlink("etc", &v)])
        .check(|r| is_symlink(r, "etc")),
    );
    out.push(
        Case::new(
            "symlink-replaced-by-file",
            "file, symlink to the victim's passwd at the same name, then the file again",
            LAYERS_C,
        )
        .tar(
            Tar::new()
                .file("f", b"one")
                .symlink("f", &vpasswd)
                .file("f", b"pwned"),
        )
        .zip(&[f("f", b"one"), zlink("f", &vpasswd), f("f", b"pwned")])
        .check(|r| file_is(r, "f", b"pwned")),
    );
    out.push(
        Case::new(
            "symlink-then-hardlink-through",
            "symlink to the victim dir, then a hardlink to `l/passwd`",
            ALL_R,
        )
        .tar(Tar::new().symlink("l", &v).hardlink("h", "l/passwd")),
    );

    // ---- hardlinks ----
    out.push(
        Case::new(
            "hardlink-abs",
            "hardlink to the victim's absolute passwd",
            ALL_R,
        )
        .tar(Tar::new().hardlink("h", &vpasswd)),
    );
    out.push(
        Case::new(
            "hardlink-rel-climb",
            "hardlink climbing to the victim's passwd",
            ALL_R,
        )
        .tar(Tar::new().hardlink("h", &format!("{vrel}/passwd"))),
    );
    out.push(
        Case::new(
            "hardlink-to-symlink",
            "hardlink to a symlink pointing at the victim",
            ALL_R,
        )
        .tar(Tar::new().symlink("s", &vpasswd).hardlink("h", "s")),
    );
    out.push(
        Case::new(
            "hardlink-to-later-entry",
            "hardlink before its target is extracted",
            ALL_R,
        )
        .tar(Tar::new().hardlink("h", "f").file("f", b"x")),
    );
    out.push(
        Case::new("hardlink-to-dir", "hardlink to a directory", ALL_R)
            .tar(Tar::new().dir("d").hardlink("h", "d")),
    );
    out.push(
        Case::new("hardlink-to-itself", "hardlink naming itself", ALL_R)
            .tar(Tar::new().hardlink("h", "h")),
    );

    // ---- metadata through symlinks ----
    out.push(
        Case::new(
            "chmod-through-symlink",
            "symlink to the 0400 victim file, then a 0777 directory and file of the same name",
            LAYERS_C,
        )
        .tar(
            Tar::new()
                .symlink("l", &format!("{v}/perm400"))
                .entry(b"l", Kind::Dir, b"", b"", 0o777)
                .symlink("m", &format!("{v}/perm400"))
                .entry(b"m", Kind::File, b"", b"", 0o777),
        )
        .check(|r| file_is(r, "m", b"")),
    );
    out.push(
        Case::new(
            "chown-utime-through-symlink",
            "symlink to the victim file listed again with a new owner and mtime (PAX)",
            LAYERS_C,
        )
        .tar(
            Tar::new()
                .symlink("l", &vpasswd)
                .pax(&[("uid", b"4242"), ("gid", b"4242"), ("mtime", b"1")])
                .symlink("l", &vpasswd),
        )
        .check(|r| is_symlink(r, "l")),
    );
    out.push(
        Case::new(
            "dir-meta-after-swap",
            "a 0777 directory replaced by a symlink to the victim dir: deferred directory \
             metadata must not follow it",
            LAYERS_C,
        )
        .tar(
            Tar::new()
                .entry(b"d", Kind::Dir, b"", b"", 0o777)
                .file("d/x", b"x")
                .symlink("d", &v),
        )
        .check(|r| is_symlink(r, "d")),
    );

    // ---- OCI whiteouts ----
    out.push(
        Case::new("wh-opaque-root", "`.wh..wh..opq` on the layer root", ALL_R)
            .tar(Tar::new().file(".wh..wh..opq", b"")),
    );
    out.push(
        Case::new(
            "wh-slash-name",
            "`.wh.a/b`: a whiteout name used as a directory",
            ALL_R,
        )
        .tar(Tar::new().file(".wh.a/b", b"")),
    );
    out.push(
        Case::new(
            "wh-opaque-through-symlink",
            "symlink to the victim dir, then `l/.wh..wh..opq`",
            ALL_R,
        )
        .tar(Tar::new().symlink("l", &v).file("l/.wh..wh..opq", b"")),
    );
    out.push(
        Case::new(
            "wh-dir-then-file",
            "`.wh.d` then `d/f` inside the whited-out dir",
            ALL_R,
        )
        .tar(Tar::new().file(".wh.d", b"").file("d/f", b"x")),
    );
    out.push(
        Case::new(
            "wh-of-dir",
            "a directory with a file, then its whiteout: removed inside the destination",
            OCI_C,
        )
        .tar(Tar::new().dir("d").file("d/f", b"x").file(".wh.d", b""))
        .check(|r| is_whiteout(r, "d")),
    );
    out.push(
        Case::new(
            "wh-aufs-meta",
            "`.wh..wh.plnk` aufs metadata: skipped in OCI layers",
            OCI_C,
        )
        .tar(Tar::new().file(".wh..wh.plnk", b"")),
    );

    // ---- devices, fifos, unknown types ----
    out.push(
        Case::new(
            "char-device",
            "character device 1:3 (created by root extraction)",
            LAYERS_C,
        )
        .tar(Tar::new().kind("null", Kind::Char(1, 3)))
        .zip(&[ZipEntry::stored(b"null", b"", S_IFCHR | 0o666)]),
    );
    out.push(
        Case::new("block-device", "block device 8:0", LAYERS_C)
            .tar(Tar::new().kind("sda", Kind::Block(8, 0))),
    );
    out.push(
        Case::new(
            "char-0-0",
            "a literal 0:0 character device not named `.wh.` (image import skips device nodes)",
            "RRCCRRR",
        )
        .tar(Tar::new().kind("notawhiteout", Kind::Char(0, 0))),
    );
    out.push(
        Case::new("fifo", "a FIFO (refused in code uploads)", LAYERS_C)
            .tar(Tar::new().kind("p", Kind::Fifo))
            .zip(&[ZipEntry::stored(b"p", b"", S_IFIFO | 0o644)]),
    );
    out.push(
        Case::new("unknown-type", "an entry with type flag `Z`", ALL_R)
            .tar(Tar::new().kind("z", Kind::Raw(b'Z'))),
    );

    // ---- duplicates ----
    out.push(
        Case::new(
            "dup-same-name",
            "the same file twice: the later wins in layers",
            LAYERS_C,
        )
        .tar(Tar::new().file("f", b"one").file("f", b"two"))
        .zip(&[f("f", b"one"), f("f", b"two")])
        .check(|r| file_is(r, "f", b"two")),
    );
    out.push(
        Case::new(
            "dup-file-then-dir",
            "file `x`, then directory `x` and `x/y`",
            LAYERS_C,
        )
        .tar(Tar::new().file("x", b"one").dir("x").file("x/y", b"y"))
        .zip(&[f("x", b"one"), zdir("x/"), f("x/y", b"y")])
        .check(|r| file_is(r, "x/y", b"y")),
    );
    out.push(
        Case::new(
            "dup-dir-then-file",
            "directory `x` with `x/y`, then file `x`",
            LAYERS_C,
        )
        .tar(Tar::new().dir("x").file("x/y", b"y").file("x", b"one"))
        .zip(&[zdir("x/"), f("x/y", b"y"), f("x", b"one")])
        .check(|r| file_is(r, "x", b"one")),
    );

    // ---- sizes and counts ----
    out.push(
        Case::new(
            "gzip-zeros-10g",
            "gzip of 10 GiB of zeros: an empty tar followed by 10 GiB of padding",
            "CCRR-R-",
        )
        .gz_only(gen::gz_then_zeros(b"", 10 << 30))
        .bomb(),
    );
    out.push(
        Case::new(
            "gzip-file-claims-10g",
            "gzip: a file header claiming 10 GiB, then 10 GiB of zeros",
            "RRRR-R-",
        )
        .gz_only(gen::gz_then_zeros(
            &gen::header(b"zeros", Kind::File, 10 << 30, b"", 0o644),
            10 << 30,
        ))
        .bomb(),
    );
    out.push(
        Case::new(
            "gzip-dir-claims-10g",
            "gzip: a directory header claiming 10 GiB of (ignored) content, then 10 GiB of zeros",
            "RRRR-R-",
        )
        .gz_only(gen::gz_then_zeros(
            &gen::header(b"d/", Kind::Dir, 10 << 30, b"", 0o755),
            10 << 30,
        ))
        .bomb(),
    );
    out.push(
        Case::new(
            "gnu-longname-512m",
            "gzip: a GNU long-name record claiming 512 MiB (the tar reader buffers it whole)",
            "RRRR-R-",
        )
        .gz_only(gen::gz_repeat(
            &gen::header(b"././@LongLink", Kind::Raw(b'L'), 512 << 20, b"", 0o644),
            b'a',
            512 << 20,
        ))
        .bomb(),
    );
    out.push(
        Case::new(
            "pax-header-512m",
            "gzip: a PAX header claiming 512 MiB (buffered whole by the tar reader)",
            "RRRR-R-",
        )
        .gz_only(gen::gz_repeat(
            &gen::header(b"././@PaxHeader", Kind::Raw(b'x'), 512 << 20, b"", 0o644),
            b'a',
            512 << 20,
        ))
        .bomb(),
    );
    out.push(
        Case {
            zip: Some(gen::zip(&[ZipEntry::deflated_repeat(
                b"zeros",
                0,
                64 << 20,
                S_IFREG | 0o644,
            )])),
            ..Case::new(
                "zip-ratio-bomb",
                "one zip entry: 64 MiB of zeros in ~64 KiB",
                ALL_R,
            )
        }
        .bomb(),
    );
    out.push(
        Case::new(
            "sparse-1tib",
            "GNU sparse entry claiming a 1 TiB file",
            ALL_R,
        )
        .tar_bytes({
            let mut b = gen::sparse_entry("sparse", 1 << 40);
            b.extend_from_slice(&[0u8; 1024]);
            b
        }),
    );
    out.push(
        Case::new(
            "file-claims-more-than-held",
            "a header claiming 1000 bytes, stream ends",
            ALL_R,
        )
        .tar_bytes({
            let mut b = gen::header(b"short", Kind::File, 1000, b"", 0o644).to_vec();
            b.extend_from_slice(b"only this");
            b
        }),
    );
    out.push(
        Case::new("bad-checksum", "a header with a wrong checksum", ALL_R).tar_bytes({
            let mut h = gen::header(b"f", Kind::File, 0, b"", 0o644);
            h[148] = b'7';
            let mut b = h.to_vec();
            b.extend_from_slice(&[0u8; 1024]);
            b
        }),
    );
    out.push({
        let mut t = Tar::new();
        for i in 0..200_000 {
            t.file(&format!("f/{i:06}"), b"");
        }
        let zip_entries: Vec<ZipEntry> =
            (0..30_000).map(|i| f(&format!("f/{i:06}"), b"")).collect();
        Case {
            layer_limits: Some(Limits {
                max_entries: 20_000,
                ..Limits::default()
            }),
            import: false,
            ..Case::new(
                "entry-flood",
                "200,000 empty files (zip: 30,000) against a 20,000-entry limit",
                ALL_R,
            )
            .tar(&t)
            .zip(&zip_entries)
        }
    });
    out.push({
        let name = vec!["a".repeat(200); 25].join("/");
        Case::new("long-path-5000", "a 5,024-byte name (GNU long name)", ALL_R)
            .tar(Tar::new().file(&name, b"x"))
            .zip(&[f(&name, b"x")])
    });
    out.push({
        let name = "c".repeat(300);
        Case::new(
            "long-component-300",
            "one 300-byte component (over NAME_MAX, under the path limit)",
            ALL_R,
        )
        .tar(Tar::new().file(&name, b"x"))
        .zip(&[f(&name, b"x")])
    });
    out.push({
        let name = format!("{}f", "d/".repeat(100));
        Case::new(
            "deep-100",
            "a file 100 directories deep (code allows 64)",
            LAYERS_C,
        )
        .tar(Tar::new().file(&name, b"x"))
        .zip(&[f(&name, b"x")])
        .check(|r| file_is(r, &format!("{}f", "d/".repeat(100)), b"x"))
    });
    out.push({
        let name = format!("{}f", "d/".repeat(2040));
        Case::new(
            "deep-2040",
            "a file 2,040 directories deep (4,081-byte name): its full path would reach PATH_MAX",
            ALL_R,
        )
        .tar(Tar::new().file(&name, b"x"))
    });
    out.push(
        Case::new(
            "long-symlink-target-escape",
            "a symlink whose 300-byte GNU long-link target climbs out",
            LAYERS_C,
        )
        .tar(Tar::new().symlink(
            "l",
            &format!("{}{}", "../".repeat(100), v.trim_start_matches('/')),
        ))
        .check(|r| is_symlink(r, "l")),
    );
    out
}

/// containerd's `TestBreakouts` (33 cases), ported: targets that containerd resolves inside its
/// root point here at the sandbox's victim dir (absolute `v` or climbing `vrel`), which is
/// harsher. A pre-existing tree (containerd's `apply`) becomes leading entries of the archive.
fn containerd_breakouts(v: &str, vrel: &str) -> Vec<Case> {
    let vp = format!("{v}/passwd");
    let mut out = Vec::new();
    let cd = |name: &str, idea: &'static str, expect: &'static str| {
        Case::new(&format!("cd-{name}"), idea, expect)
    };
    out.push(
        cd(
            "SymlinkAbsolute",
            "symlink to an absolute dir, file through it",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .symlink("localetc", v)
                .file("/localetc/unbroken", b"x"),
        )
        .zip(&[
            zdir("etc/"),
            zlink("localetc", v),
            f("localetc/unbroken", b"x"),
        ]),
    );
    out.push(
        cd(
            "SymlinkUpAndOut",
            "symlink `/dummy/../<climb>`, file through it",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .dir("dummy")
                .symlink("localetc", &format!("/dummy/../{vrel}"))
                .file("/localetc/unbroken", b"x"),
        ),
    );
    out.push(
        cd(
            "SymlinkMultipleAbsolute",
            "two absolute symlinks chained, file through",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .dir("dummy")
                .symlink("/dummy/etc", v)
                .symlink("localetc", "/dummy/etc")
                .file("/dummy/etc/unbroken", b"x"),
        ),
    );
    out.push(
        cd(
            "SymlinkMultipleRelative",
            "absolute then relative symlink, file through",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .dir("dummy")
                .symlink("/dummy/etc", v)
                .symlink("localetc", "./dummy/etc")
                .file("/dummy/etc/unbroken", b"x"),
        ),
    );
    out.push(
        cd(
            "SymlinkEmptyFile",
            "empty file written through an absolute symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("etc/emptied", b"notempty")
                .symlink("localetc", v)
                .file("/localetc/passwd", b""),
        ),
    );
    out.push(
        cd(
            "HardlinkRelative",
            "hardlink through a climbing symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .dir("breakouts")
                .symlink("breakouts/d1", &format!("../{vrel}"))
                .hardlink("breakouts/mypasswd", "/breakouts/d1/passwd"),
        ),
    );
    out.push(
        cd(
            "HardlinkDownAndOut",
            "hardlink through `../downandout/../..` symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .dir("breakouts")
                .dir("downandout")
                .symlink("breakouts/d1", &format!("../downandout/../{vrel}"))
                .hardlink("breakouts/mypasswd", "/breakouts/d1/passwd"),
        ),
    );
    out.push(
        cd(
            "HardlinkAbsolute",
            "hardlink through an absolute symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("localetc", v)
                .hardlink("localpasswd", "/localetc/passwd"),
        ),
    );
    out.push(
        cd(
            "HardlinkRelativeLong",
            "hardlink through a long climbing symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("localetc", vrel)
                .hardlink("localpasswd", "/localetc/passwd"),
        ),
    );
    out.push(
        cd(
            "HardlinkRelativeUpAndOut",
            "hardlink through `upandout/../..` symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("localetc", &format!("upandout/../{vrel}"))
                .hardlink("localpasswd", "/localetc/passwd"),
        ),
    );
    out.push(
        cd(
            "HardlinkDirectRelative",
            "hardlink target climbing out",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .hardlink("localpasswd", &format!("{vrel}/passwd")),
        ),
    );
    out.push(
        cd(
            "HardlinkDirectAbsolute",
            "hardlink to `/etc/passwd`: resolved inside the destination for layers",
            LAYERS_C,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .hardlink("localpasswd", "/etc/passwd"),
        )
        .check(|r| same_inode(r, "localpasswd", "etc/passwd")),
    );
    out.push(
        cd("SymlinkParentDirectory", "a symlink named `..`", ALL_R).tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("..", v)
                .hardlink("localpasswd", "/etc/passwd"),
        ),
    );
    out.push(
        cd(
            "SymlinkEmptyFilename",
            "a symlink with an empty name",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("", v)
                .hardlink("localpasswd", "/etc/passwd"),
        ),
    );
    out.push(
        cd(
            "SymlinkParentRelative",
            "symlink `localetc/sub/..` then a link under it",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("localetc/sub/..", v)
                .hardlink("/localetc/localpasswd", "/etc/passwd"),
        ),
    );
    out.push(
        cd(
            "SymlinkSlashEnded",
            "directory `localetc/`, link under it",
            LAYERS_C,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .dir("localetc/")
                .hardlink("/localetc/localpasswd", "/etc/passwd"),
        )
        .check(|r| same_inode(r, "localetc/localpasswd", "etc/passwd")),
    );
    out.push(
        cd(
            "SymlinkOverrideDirectory",
            "directory replaced by an absolute symlink, link under it",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .dir("localetc/")
                .symlink("localetc", v)
                .hardlink("/localetc/localpasswd", "/etc/passwd"),
        ),
    );
    out.push(
        cd(
            "SymlinkOverrideDirectoryRelative",
            "directory replaced by a climbing symlink, link under it",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .dir("localetc/")
                .symlink("localetc", vrel)
                .hardlink("/localetc/localpasswd", "/etc/passwd"),
        ),
    );
    out.push(
        cd(
            "DirectoryOverrideSymlink",
            "symlink replaced by a directory, link under it: inside for layers",
            LAYERS_C,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("localetc", v)
                .dir("/localetc/")
                .hardlink("/localetc/localpasswd", "/etc/passwd"),
        )
        .check(|r| same_inode(r, "localetc/localpasswd", "etc/passwd")),
    );
    out.push(
        cd(
            "DirectoryOverrideSymlinkAndHardlink",
            "symlink `localetc -> etc` replaced by a directory holding a new file",
            LAYERS_C,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("localetc", "etc")
                .dir("/localetc/")
                .file("/localetc/localpasswd", b"different"),
        )
        .check(|r| {
            file_is(r, "etc/passwd", b"inside")?;
            file_is(r, "localetc/localpasswd", b"different")
        }),
    );
    out.push(
        cd("WhiteoutRootParent", "`.wh...` (whiteout of `..`)", ALL_R).tar(
            Tar::new()
                .dir("etc")
                .file("etc/passwd", b"inside")
                .file(".wh...", b""),
        ),
    );
    out.push(
        cd("WhiteoutParent", "`etc/.wh...`", ALL_R).tar(
            Tar::new()
                .dir("etc")
                .file("etc/passwd", b"inside")
                .file("etc/.wh...", b""),
        ),
    );
    out.push(
        cd("WhiteoutRoot", "`.wh..` (whiteout of `.`)", ALL_R).tar(
            Tar::new()
                .dir("etc")
                .file("etc/passwd", b"inside")
                .file(".wh..", b""),
        ),
    );
    out.push(
        cd("WhiteoutCurrentDirectory", "`etc/.wh..`", ALL_R).tar(
            Tar::new()
                .dir("etc")
                .file("etc/passwd", b"inside")
                .file("etc/.wh..", b""),
        ),
    );
    out.push(
        cd(
            "WhiteoutSymlink",
            "whiteout of a symlink to the victim: removes the link only",
            OCI_C,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("etc/passwd", b"all users")
                .symlink("localetc", v)
                .file(".wh.localetc", b""),
        )
        .check(|r| {
            file_is(r, "etc/passwd", b"all users")?;
            is_whiteout(r, "localetc")
        }),
    );
    out.push(
        cd(
            "WhiteoutSymlinkPath",
            "whiteout through a symlinked parent",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("etc/whitedout", b"x")
                .symlink("localetc", v)
                .file("localetc/.wh.passwd", b""),
        ),
    );
    out.push(
        cd(
            "WhiteoutDirectoryName",
            "`.wh.etc/somefile`: whiteout name as a directory",
            ALL_R,
        )
        .tar(Tar::new().dir("etc").file(".wh.etc/somefile", b"non-empty")),
    );
    out.push(
        cd(
            "WhiteoutDeadSymlinkParent",
            "whiteout under a dangling absolute symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .symlink("localetc", "/dne")
                .file("localetc/.wh.etc", b""),
        ),
    );
    out.push(
        cd(
            "WhiteoutRelativePath",
            "`dne/../.wh.etc`: normalizes to a whiteout of `etc` inside",
            OCI_C,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("etc/passwd", b"all users")
                .symlink("localetc", "/dne")
                .file("dne/../.wh.etc", b""),
        )
        .check(|r| is_whiteout(r, "etc")),
    );
    out.push(
        cd(
            "HardlinkSymlinkBeforeCreateTarget",
            "hardlink to a symlink whose target appears later",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .symlink("localpasswd", &vp)
                .hardlink("localpasswd-dup", "localpasswd")
                .file("/etc/passwd", b"after"),
        ),
    );
    out.push(
        cd(
            "HardlinkSymlinkRelative",
            "hardlink to a climbing symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("passwdlink", &format!("{vrel}/passwd"))
                .hardlink("localpasswd", "/passwdlink"),
        ),
    );
    out.push(
        cd(
            "HardlinkSymlinkAbsolute",
            "hardlink to an absolute symlink",
            ALL_R,
        )
        .tar(
            Tar::new()
                .dir("etc")
                .file("/etc/passwd", b"inside")
                .symlink("passwdlink", &vp)
                .hardlink("localpasswd", "/passwdlink"),
        ),
    );
    out.push(
        cd(
            "HardlinkSymlinkChmod",
            "symlink named by an outside path to a 0400 file, hardlinked (mode must stay 0400)",
            ALL_R,
        )
        .tar(
            Tar::new()
                .symlink(&format!("{v}/exists-outside"), &format!("{v}/perm400"))
                .hardlink("sketchylink", &format!("{v}/exists-outside")),
        ),
    );
    out
}
