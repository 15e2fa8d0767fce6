//! Runs one input against one extractor inside a [`Sandbox`] and checks the invariants:
//!
//! - the result is a typed rejection (kind invalid argument or too large) or a success whose
//!   tree lies below the destination;
//! - every path of the sandbox outside the work dir — the victim files and dirs the hostile
//!   inputs aim at — keeps its type, content, mode, owner, mtime, ctime, inode and link count,
//!   and nothing appears or disappears there;
//! - for image and code import: the store's `tmp/` is empty afterwards, and a rejected input
//!   committed no layer, code tree or stray entry;
//! - rejections are counted: exactly one more in `code::rejected_counts()` for code, in
//!   `archive::rejected_counts()` for a layer the safe extractor refused.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Cursor, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use strata_store::archive::{self, extract_tar, ExtractOptions, Limits, Whiteouts};
use strata_store::code::{self, CodeLimits};
use strata_store::{Store, StoreError};
use strata_types::{ErrorKind, ImageConfig};

/// The extractors every input is run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `archive::extract_tar` with OCI whiteouts.
    ExtractOci,
    /// `archive::extract_tar` with plain extraction (`.wh.` names refused).
    ExtractKeep,
    /// `import::import_archive` of a docker-save archive holding the layer.
    ImportDocker,
    /// `import::import_archive` of an OCI layout archive holding the layer.
    ImportOci,
    /// `Store::import_code` of the tar.
    CodeTar,
    /// `Store::import_code` of the tar, gzipped.
    CodeTarGz,
    /// `Store::import_code` of the zip form.
    CodeZip,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::ExtractOci,
        Target::ExtractKeep,
        Target::ImportDocker,
        Target::ImportOci,
        Target::CodeTar,
        Target::CodeTarGz,
        Target::CodeZip,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Target::ExtractOci => "tar/oci",
            Target::ExtractKeep => "tar/keep",
            Target::ImportDocker => "img/docker",
            Target::ImportOci => "img/oci",
            Target::CodeTar => "code/tar",
            Target::CodeTarGz => "code/tgz",
            Target::CodeZip => "code/zip",
        }
    }

    /// Whether running it needs root (whiteouts are 0:0 device nodes, import applies owners).
    pub fn needs_root(self) -> bool {
        matches!(
            self,
            Target::ExtractOci | Target::ExtractKeep | Target::ImportDocker | Target::ImportOci
        )
    }
}

pub fn is_root() -> bool {
    // The effective uid, second field of `Uid:` in /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A temp dir holding the files hostile inputs aim at, and a work dir for one run at a time.
///
/// Layout: `victim/` (a dir with `passwd`, a 0400 `perm400` and `exists-outside`),
/// `victim-link -> victim`, `sentinel`, an empty `outside/`, and `work/` (recreated per run,
/// excluded from the snapshot).
pub struct Sandbox {
    dir: tempfile::TempDir,
    before: BTreeMap<PathBuf, String>,
}

impl Sandbox {
    pub fn new() -> io::Result<Sandbox> {
        Self::new_in(&std::env::temp_dir())
    }

    pub fn new_in(parent: &Path) -> io::Result<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix("strata-hostile-")
            .tempdir_in(parent)?;
        let base = dir.path();
        let victim = base.join("victim");
        fs::create_dir(&victim)?;
        fs::write(victim.join("passwd"), b"root:x:0:0:victim\n")?;
        fs::write(victim.join("perm400"), b"...")?;
        fs::set_permissions(victim.join("perm400"), fs::Permissions::from_mode(0o400))?;
        fs::write(victim.join("exists-outside"), b"...")?;
        fs::set_permissions(
            victim.join("exists-outside"),
            fs::Permissions::from_mode(0o640),
        )?;
        fs::write(base.join("sentinel"), b"do not touch")?;
        fs::create_dir(base.join("outside"))?;
        std::os::unix::fs::symlink("victim", base.join("victim-link"))?;
        let mut sb = Sandbox {
            dir,
            before: BTreeMap::new(),
        };
        sb.before = sb.snapshot()?;
        Ok(sb)
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// Absolute path of the victim directory.
    pub fn victim(&self) -> PathBuf {
        self.base().join("victim")
    }

    fn work(&self) -> PathBuf {
        self.base().join("work")
    }

    /// Type, content hash or link target, mode, owner, size, inode, link count, mtime and ctime of
    /// every path outside `work/`.
    fn snapshot(&self) -> io::Result<BTreeMap<PathBuf, String>> {
        let base = self.base();
        let work = self.work();
        let mut out = BTreeMap::new();
        for item in walkdir::WalkDir::new(base)
            .follow_links(false)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| e.path() != work)
        {
            let item = item.map_err(io::Error::other)?;
            let path = item.path();
            let md = fs::symlink_metadata(path)?;
            let ft = md.file_type();
            let what = if ft.is_file() {
                format!(
                    "file sha256={}",
                    hex::encode(Sha256::digest(fs::read(path)?))
                )
            } else if ft.is_symlink() {
                format!("symlink -> {:?}", fs::read_link(path)?)
            } else if ft.is_dir() {
                "dir".to_string()
            } else {
                "special".to_string()
            };
            let fp = format!(
                "{what} mode={:o} owner={}:{} size={} ino={} nlink={} mtime={}.{} ctime={}.{}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.size(),
                md.ino(),
                md.nlink(),
                md.mtime(),
                md.mtime_nsec(),
                md.ctime(),
                md.ctime_nsec()
            );
            out.insert(path.strip_prefix(base).unwrap_or(path).to_path_buf(), fp);
        }
        Ok(out)
    }

    /// `Err` describing every difference outside `work/` since the sandbox was made.
    pub fn check(&self) -> Result<(), String> {
        let now = self.snapshot().map_err(|e| format!("snapshot: {e}"))?;
        if now == self.before {
            return Ok(());
        }
        let mut diffs = Vec::new();
        for (p, fp) in &self.before {
            match now.get(p) {
                None => diffs.push(format!("removed {}", p.display())),
                Some(n) if n != fp => diffs.push(format!("changed {}: {fp} -> {n}", p.display())),
                _ => {}
            }
        }
        for p in now.keys().filter(|p| !self.before.contains_key(*p)) {
            diffs.push(format!("created {}", p.display()));
        }
        Err(format!(
            "ESCAPE outside the destination: {}",
            diffs.join("; ")
        ))
    }

    /// A fresh, empty work dir.
    fn fresh_work(&self) -> io::Result<PathBuf> {
        let work = self.work();
        if fs::symlink_metadata(&work).is_ok() {
            fs::remove_dir_all(&work)?;
        }
        fs::create_dir(&work)?;
        Ok(work)
    }

    /// Removes the work dir of the last run.
    pub fn reset(&self) -> io::Result<()> {
        let work = self.work();
        if fs::symlink_metadata(&work).is_ok() {
            fs::remove_dir_all(&work)?;
        }
        Ok(())
    }
}

/// What happened to one input on one extractor, once the invariants held.
#[derive(Debug)]
pub enum Outcome {
    /// Refused with a typed error.
    Rejected {
        error: String,
        kind: ErrorKind,
        /// The counter that went up, e.g. `code:path` or `layer:link`.
        counted: Option<String>,
    },
    /// Accepted; the resulting tree (extraction dest, committed layer or code dir) is `root`.
    Contained { root: PathBuf },
}

impl Outcome {
    pub fn is_rejected(&self) -> bool {
        matches!(self, Outcome::Rejected { .. })
    }
}

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Limits of the direct `extract_tar` runs (image import always uses the defaults).
    pub layer_limits: Limits,
    pub code_limits: CodeLimits,
    /// Whether rejection counters must move by exactly one (only when nothing else in the
    /// process extracts concurrently).
    pub check_counters: bool,
    /// Whether an error must be typed (invalid argument or too large) rather than internal.
    pub require_typed: bool,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            layer_limits: Limits::default(),
            code_limits: CodeLimits::default(),
            check_counters: true,
            require_typed: true,
        }
    }
}

fn total(counts: &[(&'static str, u64)]) -> u64 {
    counts.iter().map(|(_, n)| n).sum()
}

fn delta(before: &[(&'static str, u64)], after: &[(&'static str, u64)]) -> Vec<String> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, a)| format!("{}+{}", b.0, a.1 - b.1))
        .collect()
}

fn list_dir(p: &Path) -> Vec<String> {
    fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `input` (already in the form `target` reads: a tar or gzip stream for extraction, an
/// image archive for import, a code archive for code import) and checks every invariant. The
/// work dir stays in place until [`Sandbox::reset`] so the caller can inspect the tree.
pub fn run(sb: &Sandbox, target: Target, input: &[u8], opts: &RunOpts) -> Result<Outcome, String> {
    let work = sb.fresh_work().map_err(|e| format!("work dir: {e}"))?;
    let layers_before = archive::rejected_counts();
    let code_before = code::rejected_counts();
    let (result, store) = match target {
        Target::ExtractOci | Target::ExtractKeep => {
            let dest = work.join("dest");
            fs::create_dir(&dest).map_err(|e| format!("dest: {e}"))?;
            let wh = if target == Target::ExtractOci {
                Whiteouts::Oci
            } else {
                Whiteouts::Keep
            };
            let r = match archive::open_maybe_compressed(Box::new(Cursor::new(input.to_vec()))) {
                Ok(mut reader) => extract_tar(
                    &mut reader,
                    &dest,
                    wh,
                    &ExtractOptions::default(),
                    &opts.layer_limits,
                )
                .map(|_| dest),
                Err(e) => Err(e),
            };
            (r, None)
        }
        Target::ImportDocker | Target::ImportOci => {
            let store = Store::open(&work.join("store")).map_err(|e| format!("store: {e}"))?;
            let path = work.join("image.tar");
            fs::write(&path, input).map_err(|e| format!("write input: {e}"))?;
            // As the control plane imports: device nodes skipped.
            let r =
                strata_store::import::import_archive(&store, &path, true, &mut |_| {}).map(|img| {
                    match img.layers.first() {
                        Some(l) => store.layer_path(&l.digest),
                        None => store.root().join("layers"),
                    }
                });
            (r, Some(store))
        }
        Target::CodeTar | Target::CodeTarGz | Target::CodeZip => {
            let store = Store::open(&work.join("store")).map_err(|e| format!("store: {e}"))?;
            let path = work.join("code.archive");
            fs::write(&path, input).map_err(|e| format!("write input: {e}"))?;
            let r = store
                .import_code(&path, &opts.code_limits)
                .map(|m| store.code_path(&m.digest));
            (r, Some(store))
        }
    };
    sb.check()?;
    let layers_after = archive::rejected_counts();
    let code_after = code::rejected_counts();
    let layer_delta = total(&layers_after) - total(&layers_before);
    let code_delta = total(&code_after) - total(&code_before);
    let is_code = matches!(
        target,
        Target::CodeTar | Target::CodeTarGz | Target::CodeZip
    );

    if let Some(store) = &store {
        let tmp = list_dir(store.tmp_dir());
        if !tmp.is_empty() {
            return Err(format!("store tmp/ not empty afterwards: {tmp:?}"));
        }
        let stray_code = list_dir(&store.root().join("code"));
        let stray_layers = list_dir(&store.root().join("layers"));
        if result.is_err() && (!stray_code.is_empty() || !stray_layers.is_empty()) {
            return Err(format!(
                "rejected input left committed objects: code {stray_code:?}, layers {stray_layers:?}"
            ));
        }
    }

    match result {
        Ok(root) => {
            let root_md = fs::symlink_metadata(&root).map_err(|e| format!("result root: {e}"))?;
            if !root_md.is_dir() || !root.starts_with(&work) {
                return Err(format!(
                    "result root {} is not a dir under work",
                    root.display()
                ));
            }
            if opts.check_counters && (layer_delta != 0 || code_delta != 0) {
                return Err(format!(
                    "accepted input counted as rejected (layer +{layer_delta}, code +{code_delta})"
                ));
            }
            Ok(Outcome::Contained { root })
        }
        Err(e) => {
            let kind = e.kind();
            if opts.require_typed
                && !matches!(kind, ErrorKind::InvalidArgument | ErrorKind::TooLarge)
            {
                return Err(format!("untyped rejection ({kind:?}): {e}"));
            }
            let counted = if is_code {
                if opts.check_counters && (code_delta != 1 || layer_delta != 0) {
                    return Err(format!(
                        "code rejection counted {code_delta} time(s) (layer +{layer_delta}): {e}"
                    ));
                }
                delta(&code_before, &code_after)
                    .first()
                    .map(|d| format!("code:{d}"))
            } else {
                let from_extractor = matches!(e, StoreError::UnsafeEntry { .. })
                    || matches!(target, Target::ExtractOci | Target::ExtractKeep)
                        && !matches!(e, StoreError::UnsupportedCompression { .. });
                if opts.check_counters
                    && (layer_delta > 1 || (from_extractor && layer_delta != 1) || code_delta != 0)
                {
                    return Err(format!(
                        "layer rejection counted {layer_delta} time(s) (code +{code_delta}): {e}"
                    ));
                }
                delta(&layers_before, &layers_after)
                    .first()
                    .map(|d| format!("layer:{d}"))
            };
            Ok(Outcome::Rejected {
                error: e.to_string(),
                kind,
                counted,
            })
        }
    }
}

// ---- fuzz entry points (also replayed on stable by tests/fuzz_regressions.rs) ----

fn fuzz_sandbox() -> Sandbox {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    Sandbox::new_in(&parent).expect("sandbox")
}

fn fuzz_opts() -> RunOpts {
    RunOpts {
        // Small caps keep each execution fast; the logic under test is the same.
        layer_limits: Limits {
            max_bytes: 64 << 20,
            max_entries: 10_000,
            max_file_bytes: 32 << 20,
            max_path_len: 4096,
        },
        code_limits: CodeLimits {
            max_unpacked_bytes: 64 << 20,
            max_file_bytes: 32 << 20,
            ..CodeLimits::default()
        },
        check_counters: true,
        require_typed: true,
    }
}

fn fuzz_one(targets: &[Target], data: &[u8]) {
    let sb = fuzz_sandbox();
    let opts = fuzz_opts();
    for &t in targets {
        if let Err(violation) = run(&sb, t, data, &opts) {
            panic!("{}: {violation}", t.label());
        }
        sb.reset().expect("reset");
    }
}

/// Arbitrary bytes as a (possibly gzipped) tar, extracted with OCI and plain whiteouts.
pub fn fuzz_tar_extract(data: &[u8]) {
    fuzz_one(&[Target::ExtractOci, Target::ExtractKeep], data);
}

/// Arbitrary bytes as an uploaded code package (zip, tar or tar.gz by content).
pub fn fuzz_code_import(data: &[u8]) {
    fuzz_one(&[Target::CodeZip], data);
}

/// Arbitrary bytes as an image archive (docker-save, OCI layout or plain rootfs tar).
pub fn fuzz_oci_import(data: &[u8]) {
    fuzz_one(&[Target::ImportOci], data);
}

/// The longest a Dockerfile may take to parse and plan.
pub const DOCKERFILE_BUDGET: Duration = Duration::from_secs(1);

/// Arbitrary bytes as a Dockerfile: parsed, then planned with a resolver that knows one image.
/// Returns how long it took; panics past [`DOCKERFILE_BUDGET`].
pub fn fuzz_dockerfile(data: &[u8]) -> Duration {
    let start = Instant::now();
    let text = String::from_utf8_lossy(data);
    if let Ok(df) = strata_dockerfile::parse(&text) {
        let resolve = |name: &str| (name == "debian-bookworm").then(ImageConfig::default);
        let _ = strata_dockerfile::plan(&df, &BTreeMap::new(), &resolve);
    }
    let took = start.elapsed();
    assert!(
        took < DOCKERFILE_BUDGET,
        "dockerfile took {took:?} (input {} bytes)",
        data.len()
    );
    took
}

/// Reads at most `max` bytes of a file (regression inputs are small).
pub fn read_input(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    fs::File::open(path)?.take(max).read_to_end(&mut v)?;
    Ok(v)
}
