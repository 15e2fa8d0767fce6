//! Import of image archives: OCI image layouts, `docker save` archives and plain rootfs tars.
//!
//! The archive is indexed once (member name → offset and size), then JSON documents and layer
//! blobs are read straight from their offsets, so memory stays bounded whatever the layer sizes.
//! A compressed archive is first decompressed into the store's scratch space.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use strata_types::{Digest, ImageConfig};

use crate::archive::{self, extract_tar, open_maybe_compressed, ExtractOptions, Limits, Whiteouts};
use crate::error::{io_err, StoreError};
use crate::store::{ScratchDir, Store};
use crate::tree::LayerMeta;

/// The kind of archive that was imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`).
    OciLayout,
    /// A `docker save` archive (`manifest.json`, layer tars, config JSON).
    DockerArchive,
    /// A plain root filesystem tar: one layer, default config.
    RootfsTar,
}

/// The result of an import: the image's config and its layers, committed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub format: ArchiveFormat,
    pub config: ImageConfig,
    /// Bottom first.
    pub layers: Vec<LayerMeta>,
}

/// Largest JSON document (index, manifest, config) read from an archive.
const MAX_JSON_BYTES: u64 = 16 << 20;
/// How many symlinks inside an archive are followed to find a member.
const MAX_LINK_HOPS: usize = 16;
/// Most bytes a layer may hold after its tar end-of-archive marker: record padding (GNU tar pads
/// to 10 KiB records by default), never content.
const MAX_TRAILING_BYTES: u64 = 1 << 20;

const INDEX_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Imports an image archive file: an OCI image layout, a `docker save` archive, or, when neither
/// marker file (`oci-layout`, `manifest.json`) is present, a plain root filesystem tar (one
/// layer). The archive itself may be gzip-compressed, and so may its layers.
///
/// Every blob read is verified: OCI manifests, configs and layers against their descriptors'
/// digests and sizes, layers against the config's `rootfs.diff_ids` (sha256 of the uncompressed
/// tar), a docker config against its file name when that is a digest. All layers are extracted
/// (with [`Whiteouts::Oci`], owners preserved) and verified before any is committed, so a
/// corrupted archive leaves no layer behind. A plain rootfs tar is extracted with
/// [`Whiteouts::Keep`]. `progress` receives human messages such as `layer 2/5: 12.3MiB`.
pub fn import_archive(
    store: &Store,
    archive: &Path,
    skip_device_nodes: bool,
    progress: &mut dyn FnMut(String),
) -> Result<ImportedImage, StoreError> {
    let work = store.scratch_dir("import")?;
    let tar_path = decompress_if_needed(archive, &work, progress)?;
    let index = ArchiveIndex::scan(&tar_path, archive)?;
    if index.entries == 0 {
        return Err(index.invalid("the archive has no entries".into()));
    }
    let ctx = Ctx {
        store,
        index: &index,
        skip_device_nodes,
    };
    let (format, config, staged) =
        if index.files.contains_key("oci-layout") && index.files.contains_key("index.json") {
            let (config, staged) = ctx.oci(progress)?;
            (ArchiveFormat::OciLayout, config, staged)
        } else if index.files.contains_key("manifest.json") {
            let (config, staged) = ctx.docker(progress)?;
            (ArchiveFormat::DockerArchive, config, staged)
        } else {
            let size = std::fs::metadata(&tar_path).map(|m| m.len()).unwrap_or(0);
            progress(format!("rootfs: {}", human_bytes(size)));
            let mut file = File::open(&tar_path).map_err(|source| StoreError::OpenArchive {
                path: archive.to_path_buf(),
                source,
            })?;
            let dir = store.scratch_dir("layer")?;
            let opts = ExtractOptions {
                skip_device_nodes,
                preserve_owner: true,
            };
            let stats = extract_tar(
                &mut file,
                dir.path(),
                Whiteouts::Keep,
                &opts,
                &Limits::default(),
            )?;
            report_skipped(&stats.skipped, progress);
            (ArchiveFormat::RootfsTar, ImageConfig::default(), vec![dir])
        };
    let mut layers = Vec::with_capacity(staged.len());
    for dir in staged {
        let meta = store.commit_layer(dir.path())?;
        dir.keep();
        layers.push(meta);
    }
    progress(format!("imported {} layer(s)", layers.len()));
    Ok(ImportedImage {
        format,
        config,
        layers,
    })
}

/// `12.3 MiB`, `512 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn report_skipped(skipped: &[String], progress: &mut dyn FnMut(String)) {
    if !skipped.is_empty() {
        let first: Vec<&str> = skipped.iter().take(3).map(String::as_str).collect();
        progress(format!(
            "skipped {} entries ({}{})",
            skipped.len(),
            first.join(", "),
            if skipped.len() > 3 { ", ..." } else { "" }
        ));
    }
}

/// Returns the path of an uncompressed tar: the archive itself, or a decompressed copy in `work`.
fn decompress_if_needed(
    archive: &Path,
    work: &ScratchDir,
    progress: &mut dyn FnMut(String),
) -> Result<PathBuf, StoreError> {
    let open_err = |source| StoreError::OpenArchive {
        path: archive.to_path_buf(),
        source,
    };
    let mut file = File::open(archive).map_err(open_err)?;
    let mut head = Vec::with_capacity(6);
    (&mut file)
        .take(6)
        .read_to_end(&mut head)
        .map_err(open_err)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    // Refuses the compressions Strata does not read, with a clear message.
    open_maybe_compressed(Box::new(io::Cursor::new(head)))?;
    if !gzip {
        return Ok(archive.to_path_buf());
    }
    progress("decompressing archive".to_string());
    let file = File::open(archive).map_err(open_err)?;
    let mut reader = open_maybe_compressed(Box::new(file))?;
    let out_path = work.path().join("archive.tar");
    let mut out = File::create(&out_path).map_err(io_err("create", &out_path))?;
    let max = Limits::default().max_bytes;
    let copied = io::copy(&mut (&mut reader).take(max + 1), &mut out)
        .map_err(|source| StoreError::ReadArchive { source })?;
    if copied > max {
        return Err(StoreError::LimitExceeded {
            entry: archive.display().to_string(),
            limit: "decompressed archive size",
            max,
        });
    }
    Ok(out_path)
}

/// Where a regular member's content lies in the (uncompressed) archive.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

enum Link {
    /// Relative to the link's directory, or absolute from the archive root.
    Symbolic(String),
    /// From the archive root.
    Hard(String),
}

struct ArchiveIndex {
    /// The uncompressed tar to read members from.
    tar: PathBuf,
    /// The archive as the caller named it, for messages.
    archive: PathBuf,
    files: HashMap<String, Member>,
    links: HashMap<String, Link>,
    /// Entries seen in the archive, whatever their type.
    entries: u64,
}

fn member_name(raw: &[u8]) -> Option<String> {
    let comps = archive::normalize(raw).ok()?;
    let joined = comps.join(&b'/');
    String::from_utf8(joined).ok()
}

impl ArchiveIndex {
    fn scan(tar: &Path, archive: &Path) -> Result<ArchiveIndex, StoreError> {
        let file = File::open(tar).map_err(|source| StoreError::OpenArchive {
            path: archive.to_path_buf(),
            source,
        })?;
        let mut ar = tar::Archive::new(file);
        let mut index = ArchiveIndex {
            tar: tar.to_path_buf(),
            archive: archive.to_path_buf(),
            files: HashMap::new(),
            links: HashMap::new(),
            entries: 0,
        };
        let limits = Limits::default();
        let entries = ar
            .entries_with_seek()
            .map_err(|source| StoreError::ReadArchive { source })?;
        for (n, entry) in entries.enumerate() {
            let entry = entry.map_err(|source| StoreError::ReadArchive { source })?;
            index.entries += 1;
            if n as u64 >= limits.max_entries {
                return Err(StoreError::LimitExceeded {
                    entry: archive.display().to_string(),
                    limit: "entry count",
                    max: limits.max_entries,
                });
            }
            let Some(name) = member_name(&entry.path_bytes()) else {
                continue;
            };
            let etype = entry.header().entry_type();
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned());
            if etype.is_file() || etype.is_contiguous() {
                index.files.insert(
                    name.clone(),
                    Member {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                );
                index.links.remove(&name);
            } else if etype.is_symlink() {
                if let Some(t) = target {
                    index.files.remove(&name);
                    index.links.insert(name, Link::Symbolic(t));
                }
            } else if etype.is_hard_link() {
                if let Some(t) = target {
                    index.files.remove(&name);
                    index.links.insert(name, Link::Hard(t));
                }
            }
        }
        Ok(index)
    }

    fn invalid(&self, reason: String) -> StoreError {
        StoreError::InvalidImage {
            archive: self.archive.clone(),
            reason,
        }
    }

    /// Finds a member by name, following links inside the archive. Returns the final name too.
    fn resolve(&self, name: &str) -> Result<(String, Member), StoreError> {
        let mut cur = member_name(name.as_bytes())
            .ok_or_else(|| self.invalid(format!("bad member name {name:?}")))?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(m) = self.files.get(&cur) {
                return Ok((cur, *m));
            }
            let next = match self.links.get(&cur) {
                Some(Link::Hard(t)) => t.clone(),
                Some(Link::Symbolic(t)) if t.starts_with('/') => t.clone(),
                Some(Link::Symbolic(t)) => match cur.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{t}"),
                    None => t.clone(),
                },
                None => return Err(self.invalid(format!("{name:?} is missing from the archive"))),
            };
            cur = member_name(next.as_bytes())
                .ok_or_else(|| self.invalid(format!("{name:?} links outside the archive")))?;
        }
        Err(self.invalid(format!("{name:?}: too many levels of links")))
    }

    fn open(&self, m: Member) -> Result<io::Take<File>, StoreError> {
        let mut f = File::open(&self.tar).map_err(io_err("open", &self.tar))?;
        f.seek(SeekFrom::Start(m.offset))
            .map_err(io_err("seek in", &self.tar))?;
        Ok(f.take(m.size))
    }

    /// Reads a small member (a JSON document) whole.
    fn read_small(&self, name: &str) -> Result<(String, Vec<u8>), StoreError> {
        let (final_name, m) = self.resolve(name)?;
        if m.size > MAX_JSON_BYTES {
            return Err(self.invalid(format!(
                "{name:?} is {} bytes, more than a JSON document may be ({MAX_JSON_BYTES})",
                m.size
            )));
        }
        let mut buf = Vec::with_capacity(m.size as usize);
        self.open(m)?
            .read_to_end(&mut buf)
            .map_err(io_err("read", &self.tar))?;
        if buf.len() as u64 != m.size {
            return Err(self.invalid(format!("{name:?} is truncated")));
        }
        Ok((final_name, buf))
    }

    fn json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| self.invalid(format!("{what}: {e}")))
    }
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct OciManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<ContainerConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

fn is_linux_amd64(os: &str, arch: &str) -> bool {
    os == "linux" && arch == "amd64"
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::from_bytes(&Sha256::digest(bytes).into())
}

/// Maps an OCI/Docker image config to Strata's [`ImageConfig`].
fn map_config(cfg: ConfigFile, index: &ArchiveIndex) -> Result<ImageConfig, StoreError> {
    let c = cfg.config.unwrap_or_default();
    let mut out = ImageConfig::default();
    for kv in c.env.unwrap_or_default() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| index.invalid(format!("config Env entry {kv:?} is not KEY=VALUE")))?;
        out.set_env(k, v);
    }
    out.workdir = c.working_dir.unwrap_or_default();
    out.user = c.user.unwrap_or_default();
    out.cmd = c.cmd;
    out.entrypoint = c.entrypoint;
    out.labels = c.labels.unwrap_or_default();
    out.exposed_ports = c.exposed_ports.unwrap_or_default().into_keys().collect();
    Ok(out)
}

/// A reader that hashes and counts what passes through it; the state is shared so it can be read
/// after the reader is buried inside a decompressor.
struct HashingReader {
    inner: Box<dyn Read>,
    state: Rc<RefCell<(Sha256, u64)>>,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.borrow_mut();
        s.0.update(&buf[..n]);
        s.1 += n as u64;
        Ok(n)
    }
}

fn hashing(inner: Box<dyn Read>) -> (HashingReader, Rc<RefCell<(Sha256, u64)>>) {
    let state = Rc::new(RefCell::new((Sha256::new(), 0u64)));
    (
        HashingReader {
            inner,
            state: state.clone(),
        },
        state,
    )
}

fn finish(state: &Rc<RefCell<(Sha256, u64)>>) -> (Digest, u64) {
    let s = state.borrow();
    (Digest::from_bytes(&s.0.clone().finalize().into()), s.1)
}

/// What a layer blob must hash to.
struct Expect {
    blob: Option<Digest>,
    size: Option<u64>,
    diff_id: Option<Digest>,
}

struct Ctx<'a> {
    store: &'a Store,
    index: &'a ArchiveIndex,
    skip_device_nodes: bool,
}

impl Ctx<'_> {
    fn parse_digest(&self, what: &str, s: &str) -> Result<Digest, StoreError> {
        s.parse().map_err(|_| {
            self.index
                .invalid(format!("{what} has unsupported digest {s:?}"))
        })
    }

    /// Reads an OCI blob named by a descriptor and checks its digest and size.
    fn blob(&self, what: &str, d: &Descriptor) -> Result<Vec<u8>, StoreError> {
        let digest = self.parse_digest(what, &d.digest)?;
        let (_, bytes) = self
            .index
            .read_small(&format!("blobs/sha256/{}", digest.hex()))?;
        let actual = sha256(&bytes);
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                what: what.to_string(),
                expected: digest,
                actual,
            });
        }
        if let Some(size) = d.size {
            if size != bytes.len() as u64 {
                return Err(self.index.invalid(format!(
                    "{what} is {} bytes, its descriptor says {size}",
                    bytes.len()
                )));
            }
        }
        Ok(bytes)
    }

    fn oci(
        &self,
        progress: &mut dyn FnMut(String),
    ) -> Result<(ImageConfig, Vec<ScratchDir>), StoreError> {
        let (_, bytes) = self.index.read_small("index.json")?;
        let mut idx: OciIndex = self.index.json("index.json", &bytes)?;
        let mut depth = 0;
        let manifest: OciManifest = loop {
            let pick = idx
                .manifests
                .iter()
                .position(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| is_linux_amd64(&p.os, &p.architecture))
                })
                .unwrap_or(0);
            if idx.manifests.is_empty() {
                return Err(self.index.invalid("index lists no manifests".into()));
            }
            let desc = idx.manifests.swap_remove(pick);
            let bytes = self.blob("manifest", &desc)?;
            if INDEX_MEDIA_TYPES.contains(&desc.media_type.as_str()) {
                depth += 1;
                if depth > 4 {
                    return Err(self.index.invalid("image indexes nested too deep".into()));
                }
                idx = self.index.json("nested index", &bytes)?;
                continue;
            }
            break self.index.json("manifest", &bytes)?;
        };
        let cfg_bytes = self.blob("config", &manifest.config)?;
        let cfg: ConfigFile = self.index.json("config", &cfg_bytes)?;
        let diff_ids = self.diff_ids(&cfg, manifest.layers.len(), false)?;
        let total = manifest.layers.len();
        let mut staged = Vec::with_capacity(total);
        for (i, desc) in manifest.layers.iter().enumerate() {
            let what = format!("layer {}/{total}", i + 1);
            if desc.media_type.ends_with("+zstd") {
                return Err(StoreError::UnsupportedCompression { format: "zstd" });
            }
            let digest = self.parse_digest(&what, &desc.digest)?;
            let name = format!("blobs/sha256/{}", digest.hex());
            let expect = Expect {
                blob: Some(digest),
                size: desc.size,
                diff_id: diff_ids.get(i).cloned(),
            };
            staged.push(self.stage_layer(&name, &what, expect, progress)?);
        }
        Ok((map_config(cfg, self.index)?, staged))
    }

    fn docker(
        &self,
        progress: &mut dyn FnMut(String),
    ) -> Result<(ImageConfig, Vec<ScratchDir>), StoreError> {
        let (_, bytes) = self.index.read_small("manifest.json")?;
        let manifests: Vec<DockerManifest> = self.index.json("manifest.json", &bytes)?;
        if manifests.is_empty() {
            return Err(self.index.invalid("manifest.json lists no images".into()));
        }
        let mut chosen: Option<(&DockerManifest, ConfigFile)> = None;
        for m in &manifests {
            let (final_name, bytes) = self.index.read_small(&m.config)?;
            // Docker names the config after its digest: verify when it does.
            let base = final_name.rsplit('/').next().unwrap_or_default();
            let stem = base.strip_suffix(".json").unwrap_or(base);
            if let Ok(expected) = Digest::from_hex(stem) {
                let actual = sha256(&bytes);
                if actual != expected {
                    return Err(StoreError::DigestMismatch {
                        what: format!("config {}", m.config),
                        expected,
                        actual,
                    });
                }
            }
            let cfg: ConfigFile = self.index.json(&m.config, &bytes)?;
            let amd64 = is_linux_amd64(&cfg.os, &cfg.architecture);
            if chosen.is_none() || amd64 {
                chosen = Some((m, cfg));
                if amd64 {
                    break;
                }
            }
        }
        let Some((manifest, cfg)) = chosen else {
            return Err(self.index.invalid("manifest.json lists no images".into()));
        };
        let diff_ids = self.diff_ids(&cfg, manifest.layers.len(), true)?;
        let total = manifest.layers.len();
        let mut staged = Vec::with_capacity(total);
        for (i, name) in manifest.layers.iter().enumerate() {
            let what = format!("layer {}/{total}", i + 1);
            let (final_name, _) = self.index.resolve(name)?;
            let blob = final_name
                .strip_prefix("blobs/sha256/")
                .and_then(|h| Digest::from_hex(h).ok());
            let expect = Expect {
                blob,
                size: None,
                diff_id: diff_ids.get(i).cloned(),
            };
            staged.push(self.stage_layer(name, &what, expect, progress)?);
        }
        Ok((map_config(cfg, self.index)?, staged))
    }

    /// The config's diff_ids, checked against the number of layers.
    fn diff_ids(
        &self,
        cfg: &ConfigFile,
        layers: usize,
        required: bool,
    ) -> Result<Vec<Digest>, StoreError> {
        let ids = cfg
            .rootfs
            .as_ref()
            .map(|r| r.diff_ids.as_slice())
            .unwrap_or_default();
        if ids.is_empty() && !required {
            return Ok(Vec::new());
        }
        if ids.len() != layers {
            return Err(self.index.invalid(format!(
                "config lists {} diff_ids for {layers} layers",
                ids.len()
            )));
        }
        ids.iter()
            .map(|s| self.parse_digest("config diff_id", s))
            .collect()
    }

    /// Extracts one layer blob into a scratch dir and verifies it; nothing is committed here.
    fn stage_layer(
        &self,
        name: &str,
        what: &str,
        expect: Expect,
        progress: &mut dyn FnMut(String),
    ) -> Result<ScratchDir, StoreError> {
        let (_, member) = self.index.resolve(name)?;
        progress(format!("{what}: {}", human_bytes(member.size)));
        let (raw, blob_state) = hashing(Box::new(self.index.open(member)?));
        let (mut tar, tar_state) = hashing(open_maybe_compressed(Box::new(raw))?);
        let dir = self.store.scratch_dir("layer")?;
        let opts = ExtractOptions {
            skip_device_nodes: self.skip_device_nodes,
            preserve_owner: true,
        };
        let stats = extract_tar(
            &mut tar,
            dir.path(),
            Whiteouts::Oci,
            &opts,
            &Limits::default(),
        )?;
        report_skipped(&stats.skipped, progress);
        // The digests cover every byte, including the tar's end padding; anything longer than
        // padding is refused rather than decompressed without bound.
        let trailing = io::copy(
            &mut (&mut tar).take(MAX_TRAILING_BYTES + 1),
            &mut io::sink(),
        )
        .map_err(|source| StoreError::ReadArchive { source })?;
        drop(tar);
        if trailing > MAX_TRAILING_BYTES {
            archive::record(archive::RejectReason::TrailingData);
            return Err(StoreError::LimitExceeded {
                entry: format!("{what} ({name})"),
                limit: "trailing data",
                max: MAX_TRAILING_BYTES,
            });
        }
        let (blob_digest, blob_size) = finish(&blob_state);
        if blob_size != member.size {
            return Err(self.index.invalid(format!("{what} ({name}) is truncated")));
        }
        if let Some(size) = expect.size {
            if size != blob_size {
                return Err(self.index.invalid(format!(
                    "{what} ({name}) is {blob_size} bytes, its descriptor says {size}"
                )));
            }
        }
        if let Some(expected) = expect.blob {
            if expected != blob_digest {
                return Err(StoreError::DigestMismatch {
                    what: format!("{what} ({name})"),
                    expected,
                    actual: blob_digest,
                });
            }
        }
        if let Some(expected) = expect.diff_id {
            let (actual, _) = finish(&tar_state);
            if expected != actual {
                return Err(StoreError::DigestMismatch {
                    what: format!("{what} ({name}) uncompressed content"),
                    expected,
                    actual,
                });
            }
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_maps_docker_fields() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{
            "Env":["PATH=/usr/bin","A=b=c"],"WorkingDir":"/app","User":"1000:1000",
            "Cmd":["python3","app.py"],"Entrypoint":null,"Labels":{"k":"v"},
            "ExposedPorts":{"8080/tcp":{},"53/udp":{}}},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg: ConfigFile = serde_json::from_slice(json).expect("parse");
        let index = ArchiveIndex {
            tar: PathBuf::new(),
            archive: PathBuf::from("x.tar"),
            files: HashMap::new(),
            links: HashMap::new(),
            entries: 0,
        };
        let c = map_config(cfg, &index).expect("map");
        assert_eq!(c.get_env("A"), Some("b=c"));
        assert_eq!(c.get_env("PATH"), Some("/usr/bin"));
        assert_eq!(c.workdir, "/app");
        assert_eq!(c.user, "1000:1000");
        assert_eq!(
            c.cmd,
            Some(vec!["python3".to_string(), "app.py".to_string()])
        );
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(
            c.exposed_ports,
            vec!["53/udp".to_string(), "8080/tcp".to_string()]
        );

        let bad: ConfigFile =
            serde_json::from_slice(br#"{"config":{"Env":["NOEQUALS"]}}"#).expect("parse");
        assert!(map_config(bad, &index).is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(12_897_485), "12.3 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn member_names_are_normalized() {
        assert_eq!(
            member_name(b"./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(
            member_name(b"/manifest.json").as_deref(),
            Some("manifest.json")
        );
        assert_eq!(member_name(b"../x"), None);
    }
}
