//! Helpers shared by the store's integration tests: raw tar building (including names the `tar`
//! crate's builder refuses) and small filesystem checks.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

pub const MTIME: u64 = 1_700_000_000;

/// Builds a tar in memory, one raw header at a time.
pub struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for RawTar {
    fn default() -> Self {
        RawTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }
}

fn header(name: &[u8], kind: EntryType, size: u64, link: &[u8], mode: u32) -> Header {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "name too long for a raw header"
        );
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// One PAX record: `<len> <key>=<value>\n`, where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn file(&mut self, name: &str, content: &[u8]) -> &mut Self {
        self.file_mode(name, content, 0o644)
    }

    pub fn file_mode(&mut self, name: &str, content: &[u8], mode: u32) -> &mut Self {
        let h = header(
            name.as_bytes(),
            EntryType::Regular,
            content.len() as u64,
            b"",
            mode,
        );
        self.builder.append(&h, content).expect("append");
        self
    }

    /// A file whose header has arbitrary uid/gid/mtime.
    pub fn file_meta(
        &mut self,
        name: &str,
        content: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        let mut h = header(
            name.as_bytes(),
            EntryType::Regular,
            content.len() as u64,
            b"",
            mode,
        );
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_cksum();
        self.builder.append(&h, content).expect("append");
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.dir_mtime(name, MTIME)
    }

    pub fn dir_mtime(&mut self, name: &str, mtime: u64) -> &mut Self {
        let mut h = header(name.as_bytes(), EntryType::Directory, 0, b"", 0o755);
        h.set_mtime(mtime);
        h.set_cksum();
        self.builder.append(&h, &b""[..]).expect("append");
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = header(
            name.as_bytes(),
            EntryType::Symlink,
            0,
            target.as_bytes(),
            0o777,
        );
        self.builder.append(&h, &b""[..]).expect("append");
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = header(
            name.as_bytes(),
            EntryType::Link,
            0,
            target.as_bytes(),
            0o644,
        );
        self.builder.append(&h, &b""[..]).expect("append");
        self
    }

    pub fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = header(name.as_bytes(), kind, 0, b"", 0o666);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_cksum();
        self.builder.append(&h, &b""[..]).expect("append");
        self
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        let h = header(name.as_bytes(), EntryType::Fifo, 0, b"", 0o644);
        self.builder.append(&h, &b""[..]).expect("append");
        self
    }

    /// A header that claims `size` bytes but is followed by `content` (possibly shorter).
    pub fn file_claiming(&mut self, name: &str, size: u64, content: &[u8]) -> &mut Self {
        let h = header(name.as_bytes(), EntryType::Regular, size, b"", 0o644);
        let mut padded = content.to_vec();
        padded.resize(size.min(1 << 20) as usize, 0);
        self.builder.append(&h, &padded[..]).expect("append");
        self
    }

    /// PAX records that apply to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
        }
        let h = header(
            b"././@PaxHeader",
            EntryType::XHeader,
            data.len() as u64,
            b"",
            0o644,
        );
        self.builder.append(&h, &data[..]).expect("append");
        self
    }

    pub fn bytes(&mut self) -> Vec<u8> {
        let mut b = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        b.finish().expect("finish");
        b.into_inner().expect("into_inner")
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Every path under `root`, relative, not descending into `skip`.
pub fn listing(root: &Path, skip: &Path) -> BTreeSet<PathBuf> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.path() != skip)
        .map(|e| {
            e.expect("walk")
                .path()
                .strip_prefix(root)
                .expect("prefix")
                .to_path_buf()
        })
        .collect()
}

/// A destination dir next to a sentinel file, checking nothing escapes.
pub struct Sandbox {
    pub t: tempfile::TempDir,
    pub dest: PathBuf,
    pub sentinel: PathBuf,
    before: BTreeSet<PathBuf>,
}

pub const SENTINEL: &[u8] = b"do not touch";

impl Sandbox {
    pub fn new() -> Sandbox {
        let t = tempfile::tempdir().expect("tempdir");
        let dest = t.path().join("dest");
        fs::create_dir(&dest).expect("mkdir dest");
        let sentinel = t.path().join("sentinel");
        fs::write(&sentinel, SENTINEL).expect("write sentinel");
        fs::create_dir(t.path().join("outside")).expect("mkdir outside");
        let before = listing(t.path(), &dest);
        Sandbox {
            t,
            dest,
            sentinel,
            before,
        }
    }

    /// The sentinel is untouched and nothing was created outside `dest`.
    pub fn assert_contained(&self) {
        assert_eq!(
            fs::read(&self.sentinel).expect("sentinel"),
            SENTINEL,
            "sentinel modified"
        );
        let md = fs::symlink_metadata(&self.sentinel).expect("sentinel");
        assert!(md.is_file(), "sentinel replaced");
        assert_eq!(
            listing(self.t.path(), &self.dest),
            self.before,
            "something was created or removed outside dest"
        );
    }
}
