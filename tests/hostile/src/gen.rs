//! Byte-level builders for crafted archives: raw tar headers (any name, any size claim, GNU long
//! names, PAX records, GNU sparse maps), raw zips, multi-member gzip bombs built from one cached
//! member, and minimal docker-save and OCI layout wrappers around a layer blob.
//!
//! Nothing here validates its input: producing archives the normal writers refuse is the point.

use std::io::Write;
use std::sync::OnceLock;

use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::{Compression, Crc};
use sha2::{Digest as _, Sha256};

/// The mtime written into every generated header.
pub const MTIME: u64 = 1_700_000_000;

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// Any raw type flag.
    Raw(u8),
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char(..) => b'3',
            Kind::Block(..) => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
            Kind::Raw(f) => f,
        }
    }
}

/// Writes `v` into a numeric header field: octal when it fits, GNU base-256 otherwise.
fn num(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let octal = format!("{v:0digits$o}");
    if octal.len() <= digits {
        field[..digits].copy_from_slice(octal.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        let be = v.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&be);
        field[0] = 0x80;
    }
}

fn checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// One raw 512-byte GNU header. `name` and `link` are truncated to 100 bytes (use
/// [`Tar::entry`], which adds GNU long name records, for longer ones).
pub fn header(name: &[u8], kind: Kind, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    num(&mut h[100..108], u64::from(mode));
    num(&mut h[108..116], 0);
    num(&mut h[116..124], 0);
    num(&mut h[124..136], size);
    num(&mut h[136..148], MTIME);
    h[156] = kind.flag();
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(b"ustar  \0");
    if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = kind {
        num(&mut h[329..337], u64::from(ma));
        num(&mut h[337..345], u64::from(mi));
    }
    checksum(&mut h);
    h
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// One PAX record: `<len> <key>=<value>\n`, where len counts the whole record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// An in-memory tar built one raw entry at a time.
#[derive(Debug, Default, Clone)]
pub struct Tar {
    out: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends raw bytes (a header, content, anything).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// Any entry; names and targets over 100 bytes get GNU long name / long link records.
    pub fn entry(
        &mut self,
        name: &[u8],
        kind: Kind,
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        if name.len() > 100 {
            self.long(b'L', name);
        }
        if link.len() > 100 {
            self.long(b'K', link);
        }
        self.out
            .extend_from_slice(&header(name, kind, data.len() as u64, link, mode));
        self.out.extend_from_slice(data);
        pad(&mut self.out);
        self
    }

    fn long(&mut self, flag: u8, value: &[u8]) {
        let mut v = value.to_vec();
        v.push(0);
        self.out.extend_from_slice(&header(
            b"././@LongLink",
            Kind::Raw(flag),
            v.len() as u64,
            b"",
            0o644,
        ));
        self.out.extend_from_slice(&v);
        pad(&mut self.out);
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), Kind::File, b"", data, 0o644)
    }

    pub fn file_b(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        self.entry(name, Kind::File, b"", data, 0o644)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name.as_bytes(), Kind::Dir, b"", b"", 0o755)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            name.as_bytes(),
            Kind::Symlink,
            target.as_bytes(),
            b"",
            0o777,
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            name.as_bytes(),
            Kind::Hardlink,
            target.as_bytes(),
            b"",
            0o644,
        )
    }

    pub fn kind(&mut self, name: &str, kind: Kind) -> &mut Self {
        self.entry(name.as_bytes(), kind, b"", b"", 0o644)
    }

    /// PAX records applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.entry(b"././@PaxHeader", Kind::Raw(b'x'), b"", &data, 0o644)
    }

    /// The archive so far, with its end-of-archive marker.
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = self.out.clone();
        b.extend_from_slice(&[0u8; 1024]);
        b
    }

    /// The archive so far without an end marker (to splice more raw content after it).
    pub fn unterminated(&self) -> Vec<u8> {
        self.out.clone()
    }
}

/// A GNU sparse entry (`S`) whose map holds one 512-byte chunk ending at `real_size`: a hole of
/// `real_size - 512` bytes, then data.
pub fn sparse_entry(name: &str, real_size: u64) -> Vec<u8> {
    let mut h = header(name.as_bytes(), Kind::Raw(b'S'), 512, b"", 0o644);
    // First sparse descriptor: the last 512 bytes; then isextended = 0 and the real size.
    num(&mut h[386..398], real_size - 512);
    num(&mut h[398..410], 512);
    h[482] = 0;
    num(&mut h[483..495], real_size);
    checksum(&mut h);
    let mut out = h.to_vec();
    out.extend_from_slice(&[b'x'; 512]);
    out
}

// ---- gzip ----

/// Gzip of `bytes` in one member.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

const ZERO_MEMBER_BYTES: u64 = 16 << 20;

/// One gzip member holding 16 MiB of zeros (about 16 KiB), built once.
fn zero_member() -> &'static [u8] {
    static MEMBER: OnceLock<Vec<u8>> = OnceLock::new();
    MEMBER.get_or_init(|| {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(ZERO_MEMBER_BYTES >> 20) {
            e.write_all(&chunk).expect("gzip");
        }
        e.finish().expect("gzip")
    })
}

/// A multi-member gzip stream: `prefix`, then `zeros` zero bytes (rounded up to 16 MiB), built
/// by repeating one cached member — 10 GiB of zeros take about 10 MiB and no compression time.
pub fn gz_then_zeros(prefix: &[u8], zeros: u64) -> Vec<u8> {
    let member = zero_member();
    let n = zeros.div_ceil(ZERO_MEMBER_BYTES);
    let mut out = if prefix.is_empty() {
        Vec::new()
    } else {
        gz(prefix)
    };
    out.reserve(member.len() * n as usize);
    for _ in 0..n {
        out.extend_from_slice(member);
    }
    out
}

/// A gzip of `n` repetitions of `byte`, compressed while streaming.
pub fn gz_repeat(prefix: &[u8], byte: u8, n: u64) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(prefix).expect("gzip");
    let chunk = vec![byte; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        e.write_all(&chunk[..k]).expect("gzip");
        left -= k as u64;
    }
    e.finish().expect("gzip")
}

// ---- zip ----

/// One raw zip entry.
#[derive(Debug, Clone)]
pub struct ZipEntry {
    pub name: Vec<u8>,
    /// Content as stored in the archive (already deflated when `deflated`).
    pub stored: Vec<u8>,
    /// Uncompressed size and crc written into the headers.
    pub size: u64,
    pub crc: u32,
    pub deflated: bool,
    /// Full unix mode (type bits included), stored in the external attributes.
    pub mode: u32,
}

impl ZipEntry {
    /// A stored entry.
    pub fn stored(name: &[u8], data: &[u8], mode: u32) -> ZipEntry {
        let mut crc = Crc::new();
        crc.update(data);
        ZipEntry {
            name: name.to_vec(),
            stored: data.to_vec(),
            size: data.len() as u64,
            crc: crc.sum(),
            deflated: false,
            mode,
        }
    }

    /// A deflated entry of `n` repetitions of `byte`, compressed while streaming.
    pub fn deflated_repeat(name: &[u8], byte: u8, n: u64, mode: u32) -> ZipEntry {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
        let mut crc = Crc::new();
        let chunk = vec![byte; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            e.write_all(&chunk[..k]).expect("deflate");
            crc.update(&chunk[..k]);
            left -= k as u64;
        }
        ZipEntry {
            name: name.to_vec(),
            stored: e.finish().expect("deflate"),
            size: n,
            crc: crc.sum(),
            deflated: true,
            mode,
        }
    }
}

pub const S_IFREG: u32 = 0o100_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFIFO: u32 = 0o010_000;
pub const S_IFCHR: u32 = 0o020_000;

/// A zip (no zip64) of raw entries, in order, duplicates and all.
pub fn zip(entries: &[ZipEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let method: u16 = if e.deflated { 8 } else { 0 };
        let mut local = Vec::new();
        local.extend_from_slice(b"PK\x03\x04");
        local.extend_from_slice(&20u16.to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(&method.to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes()); // time
        local.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
        local.extend_from_slice(&e.crc.to_le_bytes());
        local.extend_from_slice(&(e.stored.len() as u32).to_le_bytes());
        local.extend_from_slice(&(e.size as u32).to_le_bytes());
        local.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(&e.name);
        out.extend_from_slice(&local);
        out.extend_from_slice(&e.stored);

        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&(3u16 << 8 | 20).to_le_bytes()); // made by unix
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&method.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0x21u16.to_le_bytes());
        central.extend_from_slice(&e.crc.to_le_bytes());
        central.extend_from_slice(&(e.stored.len() as u32).to_le_bytes());
        central.extend_from_slice(&(e.size as u32).to_le_bytes());
        central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // extra
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
        central.extend_from_slice(&(e.mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&e.name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    let n = entries.len().min(0xffff) as u16;
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

// ---- image archives ----

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A plain tar of regular members, written with the `tar` crate.
fn outer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        b.append_data(&mut h, name, *data).expect("append");
    }
    b.into_inner().expect("finish")
}

fn config(diff_id: Option<&str>) -> Vec<u8> {
    let diff_ids: Vec<String> = diff_id.map(|d| format!("sha256:{d}")).into_iter().collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json")
}

/// A `docker save` archive holding one layer `blob`. `diff_id` is the sha256 hex of the
/// uncompressed layer; docker archives require it.
pub fn docker_save(blob: &[u8], diff_id: &str) -> Vec<u8> {
    let cfg = config(Some(diff_id));
    let cfg_name = format!("{}.json", sha256_hex(&cfg));
    let layer_name = format!("{}/layer.tar", sha256_hex(blob));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": cfg_name,
        "RepoTags": ["hostile:latest"],
        "Layers": [layer_name],
    }]))
    .expect("json");
    outer(&[
        ("manifest.json", &manifest),
        (&cfg_name, &cfg),
        (&layer_name, blob),
    ])
}

/// An OCI image layout archive holding one layer `blob` (its descriptor digest is computed;
/// the config lists no diff_ids, which OCI import allows).
pub fn oci_layout(blob: &[u8]) -> Vec<u8> {
    let cfg = config(None);
    let desc = |media: &str, bytes: &[u8]| {
        serde_json::json!({
            "mediaType": media,
            "digest": format!("sha256:{}", sha256_hex(bytes)),
            "size": bytes.len(),
        })
    };
    let gzipped = blob.starts_with(&[0x1f, 0x8b]);
    let layer_media = if gzipped {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &cfg),
        "layers": [desc(layer_media, blob)],
    }))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [desc("application/vnd.oci.image.manifest.v1+json", &manifest)],
    }))
    .expect("json");
    let blob_name = |b: &[u8]| format!("blobs/sha256/{}", sha256_hex(b));
    outer(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", &index),
        (&blob_name(&manifest), &manifest),
        (&blob_name(&cfg), &cfg),
        (&blob_name(blob), blob),
    ])
}
