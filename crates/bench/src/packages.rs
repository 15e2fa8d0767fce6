//! The packages scenario: a library of apt and pip packages built once on the built-in
//! `python3` runtime, runtimes composed from fixed combinations of them, updates and rollbacks
//! of those runtimes, and, as the baseline, the same runtimes built from their whole Dockerfile
//! without the build cache.
//!
//! 1. **Library** — each package of [`LIBRARY`] is created and built (`POST /v1/packages`),
//!    requirements first; its build time and layer size are recorded.
//! 2. **Composition** — [`combinations`] picks distinct sets of 2–6 packages (their requirements
//!    added by the server), none composed before, and each is created as a runtime
//!    (`POST /v1/runtimes` with `packages`). Two of them then run a function that uses every
//!    package they hold, so the figures are those of working runtimes.
//! 3. **Updates and rollbacks** — on several runtimes: `--add`, `--remove` and `--set`, each
//!    once to a package set never composed before (the merge layer is generated) and once to a
//!    set composed before (the merge layer comes from the cache), and rollbacks.
//! 4. **From scratch** — the Dockerfile equivalent to a composed runtime (`FROM` the base, then
//!    every package's recipe in order) built with `no_cache`.
//!
//! The store's statistics are read before the library, after it, after the composition, after
//! the updates and after the builds from scratch, so the storage of packages and composed
//! runtimes is measured before the builds from scratch add theirs.
//!
//! Every runtime, package and function created here is removed before [`measure`] returns, and
//! the store is then collected, whether the measurement succeeded or not.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;
use strata_types::api::{
    CreateFunctionSpec, CreatePackageSpec, CreateRuntimeSpec, FunctionConfig, GcReport, LayerInfo,
    RuntimeInfo, StoreStats, UpdateRuntimeRequest,
};

use crate::client::Strata;
use crate::functions::{ms, EVENT};
use crate::machine::Load;

/// The runtime every package is built on and every runtime is composed on: the built-in Python
/// runtime, whose Lambda bootstrap lets the composed runtimes run functions.
pub const BASE: &str = "python3";

/// What a probe function checks to tell that a package is present in a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Probe {
    /// A program on `PATH`.
    Bin(&'static str),
    /// A Python module that must import.
    Module(&'static str),
}

/// One package version of the benchmark's library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LibPackage {
    /// Package name.
    pub name: &'static str,
    /// Version label.
    pub version: &'static str,
    /// Debian packages it installs.
    pub apt: &'static [&'static str],
    /// Python requirements it installs with pip.
    pub pip: &'static [&'static str],
    /// Packages it is built on and needs (`name@version`).
    pub requires: &'static [&'static str],
    /// How a function tells it is there.
    pub probe: Probe,
}

impl LibPackage {
    /// `name@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// `apt` or `pip`.
    pub fn kind(&self) -> &'static str {
        if self.pip.is_empty() {
            "apt"
        } else {
            "pip"
        }
    }

    /// What it installs, e.g. `apt imagemagick` or `pip pandas==2.2.2`.
    pub fn installs(&self) -> String {
        let list = if self.pip.is_empty() {
            self.apt
        } else {
            self.pip
        };
        format!("{} {}", self.kind(), list.join(" "))
    }
}

/// The library, requirements before the packages that need them. Python requirements are pinned
/// at the top level (their own dependencies take pip's newest match); `pandas` is built on
/// `numpy` so numpy is installed once. `requests@2.32.3` is the version runtimes are upgraded to.
pub const LIBRARY: &[LibPackage] = &[
    LibPackage {
        name: "curl",
        version: "1",
        apt: &["curl"],
        pip: &[],
        requires: &[],
        probe: Probe::Bin("curl"),
    },
    LibPackage {
        name: "git",
        version: "1",
        apt: &["git"],
        pip: &[],
        requires: &[],
        probe: Probe::Bin("git"),
    },
    LibPackage {
        name: "jq",
        version: "1",
        apt: &["jq"],
        pip: &[],
        requires: &[],
        probe: Probe::Bin("jq"),
    },
    LibPackage {
        name: "sqlite3",
        version: "1",
        apt: &["sqlite3"],
        pip: &[],
        requires: &[],
        probe: Probe::Bin("sqlite3"),
    },
    LibPackage {
        name: "imagemagick",
        version: "1",
        apt: &["imagemagick"],
        pip: &[],
        requires: &[],
        probe: Probe::Bin("convert"),
    },
    LibPackage {
        name: "pip",
        version: "1",
        apt: &["python3-pip"],
        pip: &[],
        requires: &[],
        probe: Probe::Module("pip"),
    },
    LibPackage {
        name: "requests",
        version: "2.31.0",
        apt: &[],
        pip: &["requests==2.31.0"],
        requires: &["pip@1"],
        probe: Probe::Module("requests"),
    },
    LibPackage {
        name: "requests",
        version: "2.32.3",
        apt: &[],
        pip: &["requests==2.32.3"],
        requires: &["pip@1"],
        probe: Probe::Module("requests"),
    },
    LibPackage {
        name: "numpy",
        version: "1.26.4",
        apt: &[],
        pip: &["numpy==1.26.4"],
        requires: &["pip@1"],
        probe: Probe::Module("numpy"),
    },
    LibPackage {
        name: "pandas",
        version: "2.2.2",
        apt: &[],
        pip: &["pandas==2.2.2"],
        requires: &["numpy@1.26.4"],
        probe: Probe::Module("pandas"),
    },
    LibPackage {
        name: "pillow",
        version: "10.4.0",
        apt: &[],
        pip: &["pillow==10.4.0"],
        requires: &["pip@1"],
        probe: Probe::Module("PIL"),
    },
    LibPackage {
        name: "flask",
        version: "3.0.3",
        apt: &[],
        pip: &["flask==3.0.3"],
        requires: &["pip@1"],
        probe: Probe::Module("flask"),
    },
];

/// The packages runtimes are combined from (pip comes in as a requirement; runtimes start on the
/// older requests so they can be upgraded).
pub const COMBINABLE: &[&str] = &[
    "curl@1",
    "git@1",
    "jq@1",
    "sqlite3@1",
    "imagemagick@1",
    "requests@2.31.0",
    "numpy@1.26.4",
    "pandas@2.2.2",
    "pillow@10.4.0",
    "flask@3.0.3",
];

/// The upgrade `--set` applies: from the first version to the second.
pub const UPGRADE: (&str, &str) = ("requests@2.31.0", "requests@2.32.3");

/// Runtimes built from scratch when the estimate of building all of them exceeds the budget.
pub const SCRATCH_SAMPLE: usize = 5;

/// A build from scratch takes longer than its packages' builds added up (each `apt-get update`
/// and the package lists it downloads are committed as layers): about 1.4 times in trial runs.
/// The estimate that decides how many runtimes to build from scratch uses this factor.
pub const SCRATCH_ESTIMATE_FACTOR: f64 = 1.5;

/// A library package by reference.
pub fn lib(reference: &str) -> anyhow::Result<&'static LibPackage> {
    LIBRARY
        .iter()
        .find(|p| p.reference() == reference)
        .with_context(|| format!("{reference} is not in the benchmark's library"))
}

fn name_of(reference: &str) -> &str {
    reference.split_once('@').map_or(reference, |(n, _)| n)
}

/// Packages with their requirements first (depth first, in the order given), each once: the
/// order in which the server stacks them.
pub fn closure(refs: &[String]) -> anyhow::Result<Vec<String>> {
    fn visit(r: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
        let p = lib(r)?;
        if let Some(seen) = out.iter().find(|o| name_of(o) == p.name) {
            if *seen != p.reference() {
                bail!("two versions of {} wanted: {seen} and {r}", p.name);
            }
            return Ok(());
        }
        for req in p.requires {
            visit(req, out)?;
        }
        out.push(p.reference());
        Ok(())
    }
    let mut out = Vec::new();
    for r in refs {
        visit(r, &mut out)?;
    }
    Ok(out)
}

/// A set of packages to compose: the packages asked for, and what the server stacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Combo {
    /// The packages asked for, in [`COMBINABLE`] order.
    pub picks: Vec<String>,
    /// With their requirements, in stacking order.
    pub closure: Vec<String>,
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `count` sets of packages from `pool`, sizes cycling from `min` to `max`, whose stacks (with
/// requirements) are all different and none in `taken`. The same arguments give the same sets.
pub fn combinations(
    pool: &[&str],
    min: usize,
    max: usize,
    count: usize,
    seed: u64,
    taken: &HashSet<Vec<String>>,
) -> anyhow::Result<Vec<Combo>> {
    if min == 0 || min > max || max > pool.len() {
        bail!(
            "runtime sizes {min}..={max} do not fit a library of {} combinable packages",
            pool.len()
        );
    }
    let mut rng = Rng::new(seed);
    let mut seen: HashSet<Vec<String>> = taken.clone();
    let mut out = Vec::with_capacity(count);
    let mut attempts = 0;
    while out.len() < count {
        attempts += 1;
        if attempts > 100_000 {
            bail!(
                "found only {} distinct package sets of {min} to {max} packages; ask for fewer runtimes",
                out.len()
            );
        }
        let k = min + out.len() % (max - min + 1);
        let mut idx: Vec<usize> = (0..pool.len()).collect();
        for i in 0..k {
            let j = i + rng.below(pool.len() - i);
            idx.swap(i, j);
        }
        let mut chosen = idx[..k].to_vec();
        chosen.sort_unstable();
        let picks: Vec<String> = chosen.iter().map(|&i| pool[i].to_string()).collect();
        let stack = closure(&picks)?;
        if seen.insert(stack.clone()) {
            out.push(Combo {
                picks,
                closure: stack,
            });
        }
    }
    Ok(out)
}

/// Which runtimes to build from scratch: `n` of `total`, evenly spread, first included.
pub fn spread(total: usize, n: usize) -> Vec<usize> {
    let n = n.min(total);
    (0..n).map(|i| i * total / n).collect()
}

/// How much to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PackagesPlan {
    /// Runtimes composed.
    pub runtimes: usize,
    /// Fewest packages asked for per runtime.
    pub min_packages: usize,
    /// Most packages asked for per runtime.
    pub max_packages: usize,
    /// Runtimes updated and rolled back.
    pub updated: usize,
    /// Runtimes built from scratch; `None`: all of them when the estimate fits the budget, else
    /// [`SCRATCH_SAMPLE`].
    pub scratch: Option<usize>,
    /// The budget of the builds from scratch, seconds.
    pub scratch_budget_s: f64,
    /// Seed of the combinations.
    pub seed: u64,
}

/// The server's own times of compositions and updates, from its log: `runtime=NAME@VERSION`
/// → milliseconds, from the lines `package runtime created` and `runtime updated`.
pub fn server_times(log: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        if !line.contains("package runtime created") && !line.contains("runtime updated") {
            continue;
        }
        let plain = strip_ansi(line);
        let field = |key: &str| {
            plain
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(|v| v.trim_matches('"').to_string())
        };
        if let (Some(runtime), Some(ms)) = (field("runtime="), field("ms=")) {
            if let Ok(ms) = ms.parse::<f64>() {
                out.insert(runtime, ms);
            }
        }
    }
    out
}

/// A log line without its terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl PackagesSamples {
    /// Fills in the server's own times from its log.
    pub fn add_server_times(&mut self, log: &str) {
        let times = server_times(log);
        for c in &mut self.compose {
            c.server_ms = times.get(&c.runtime).copied();
        }
        for u in &mut self.updates {
            u.server_ms = times.get(&format!("{}@{}", u.runtime, u.to)).copied();
        }
    }
}

/// One package of the library, built.
#[derive(Debug, Clone, Serialize)]
pub struct PackageSample {
    /// `name@version`.
    pub package: String,
    /// `apt` or `pip`.
    pub kind: &'static str,
    /// What it installs.
    pub installs: String,
    /// Its requirements.
    pub requires: Vec<String>,
    /// `POST /v1/packages` until the result, milliseconds.
    pub build_ms: f64,
    /// Whether a recipe step ran (false: the server's build cache served it).
    pub built: bool,
    /// Bytes of file content in its layer.
    pub layer_bytes: u64,
    /// Entries in its layer.
    pub layer_entries: u64,
}

/// One runtime created by composition.
#[derive(Debug, Clone, Serialize)]
pub struct ComposeSample {
    /// `name@version`.
    pub runtime: String,
    /// The packages asked for.
    pub picks: Vec<String>,
    /// The packages stacked.
    pub packages: Vec<String>,
    /// `POST /v1/runtimes` until the result, milliseconds.
    pub ms: f64,
    /// The server's own time (its log line `package runtime created ... ms=`), when its log
    /// was read.
    pub server_ms: Option<f64>,
    /// Whether this package stack was composed for the first time.
    pub new_set: bool,
    /// Recipe steps run during the composition (0: every package was built already).
    pub steps_run: usize,
    /// Layers of the runtime.
    pub layers: usize,
    /// Bytes of all its layers: the runtime as a full image.
    pub size_bytes: u64,
    /// Bytes of its layers above the base.
    pub own_bytes: u64,
    /// Bytes of its merge layer (none when the packages needed no merging).
    pub merge_layer_bytes: Option<u64>,
}

/// A function run on a composed runtime that uses every package the runtime has.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionCheck {
    /// The runtime.
    pub runtime: String,
    /// Programs and modules looked for.
    pub probes: Vec<Probe>,
    /// Whether every program was found and every module imported.
    pub ok: bool,
    /// What the function answered.
    pub answer: serde_json::Value,
    /// The first invocation, milliseconds.
    pub first_invoke_ms: f64,
}

/// What an update did to the package list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateOp {
    /// `--add`.
    Add,
    /// `--remove`.
    Remove,
    /// `--set` (an upgrade).
    Set,
}

/// One `runtime update`.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateSample {
    /// The runtime's name.
    pub runtime: String,
    /// The version updated.
    pub from: u32,
    /// The version made.
    pub to: u32,
    /// What changed.
    pub op: UpdateOp,
    /// The argument, e.g. `flask@3.0.3`.
    pub arg: String,
    /// The packages of the new version.
    pub packages: Vec<String>,
    /// Whether this package stack was composed for the first time (else its merge layer is a
    /// cache hit).
    pub new_set: bool,
    /// Whether the new version's merge layer is one no earlier runtime had.
    pub new_merge_layer: Option<bool>,
    /// `POST /v1/runtimes/{name}/update` until the result, milliseconds.
    pub ms: f64,
    /// The server's own time (its log line `runtime updated ... ms=`), when its log was read.
    pub server_ms: Option<f64>,
}

/// One `runtime rollback`.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackSample {
    /// The runtime's name.
    pub runtime: String,
    /// The newest version before the rollback.
    pub from: u32,
    /// The version rolled back to.
    pub target: u32,
    /// The version made (with the target's layers).
    pub to: u32,
    /// `POST /v1/runtimes/{name}/rollback` until the answer, milliseconds.
    pub ms: f64,
}

/// One runtime built from its whole Dockerfile without the build cache.
#[derive(Debug, Clone, Serialize)]
pub struct ScratchSample {
    /// The composed runtime it is equivalent to.
    pub composed: String,
    /// The runtime built.
    pub runtime: String,
    /// The packages whose recipes it runs.
    pub packages: Vec<String>,
    /// `POST /v1/runtimes` (Dockerfile, `no_cache`) until the result, milliseconds.
    pub ms: f64,
    /// The composition of the same packages, milliseconds.
    pub compose_ms: f64,
    /// Its layers.
    pub layers: usize,
    /// Bytes of all its layers.
    pub size_bytes: u64,
    /// Bytes of its layers above the base.
    pub own_bytes: u64,
    /// Bytes of the composed runtime's layers above the base.
    pub composed_own_bytes: u64,
}

/// The store's statistics at each stage.
#[derive(Debug, Clone, Serialize)]
pub struct StorageSamples {
    /// Before the library.
    pub before: StoreStats,
    /// After the library.
    pub after_packages: StoreStats,
    /// After the composition.
    pub after_runtimes: StoreStats,
    /// After the updates and rollbacks.
    pub after_updates: StoreStats,
    /// After the builds from scratch.
    pub after_scratch: Option<StoreStats>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct PackagesSamples {
    /// The base, pinned (`python3@N`).
    pub base: String,
    /// Bytes of the base's layers.
    pub base_bytes: u64,
    /// Load averages as each part began.
    pub load: Vec<Load>,
    /// The library.
    pub library: Vec<PackageSample>,
    /// Runtimes composed.
    pub compose: Vec<ComposeSample>,
    /// Functions run on composed runtimes.
    pub checks: Vec<FunctionCheck>,
    /// Updates.
    pub updates: Vec<UpdateSample>,
    /// Rollbacks.
    pub rollbacks: Vec<RollbackSample>,
    /// Why these runtimes were built from scratch.
    pub scratch_selection: String,
    /// Builds from scratch.
    pub scratch: Vec<ScratchSample>,
    /// The store.
    pub storage: StorageSamples,
    /// What collecting the store freed after everything was removed.
    pub cleanup: Option<GcReport>,
}

/// What the scenario created, to remove.
#[derive(Default)]
struct Created {
    functions: Vec<String>,
    runtimes: Vec<String>,
    packages: Vec<String>,
}

impl Created {
    /// Removes everything (functions, runtimes, then packages, dependents first) and collects
    /// the store. Goes on past failures and reports the first.
    fn remove(&mut self, strata: &Strata) -> anyhow::Result<GcReport> {
        let mut first: Option<anyhow::Error> = None;
        let mut note = |r: anyhow::Result<()>| {
            if let Err(e) = r {
                eprintln!("warning: {e:#}");
                first.get_or_insert(e);
            }
        };
        for f in self.functions.drain(..) {
            note(strata.delete_function(&f));
        }
        let runtimes = self.runtimes.len();
        for r in self.runtimes.drain(..) {
            note(strata.delete_runtime(&r));
        }
        let packages = self.packages.len();
        for p in self.packages.drain(..).rev() {
            note(strata.delete_package(&p));
        }
        eprintln!("    removed {runtimes} runtimes and {packages} packages");
        match first {
            Some(e) => Err(e.context("removing what the packages scenario created")),
            None => strata.store_gc(),
        }
    }
}

/// A composed runtime as the updates see it.
struct Live {
    name: String,
    version: u32,
    parent: Option<u32>,
    picks: Vec<String>,
    packages: Vec<String>,
    /// Layers of every version.
    versions: BTreeMap<u32, Vec<String>>,
}

/// Runs the scenario, then removes what it created. `run_id` keeps the names of concurrent or
/// leftover runs apart.
pub fn measure(
    strata: &Strata,
    plan: PackagesPlan,
    run_id: &str,
) -> anyhow::Result<PackagesSamples> {
    let mut created = Created::default();
    let outcome = measure_inner(strata, plan, run_id, &mut created);
    let cleanup = created.remove(strata);
    let mut samples = outcome?;
    samples.cleanup = Some(cleanup?);
    samples.load.push(Load::read("end"));
    Ok(samples)
}

fn measure_inner(
    strata: &Strata,
    plan: PackagesPlan,
    run_id: &str,
    created: &mut Created,
) -> anyhow::Result<PackagesSamples> {
    if plan.runtimes == 0 {
        bail!("--runtimes must be at least 1");
    }
    // Refuse to touch packages that are not the scenario's own.
    let names: HashSet<&str> = LIBRARY.iter().map(|p| p.name).collect();
    let clash: Vec<String> = strata
        .packages()?
        .into_iter()
        .filter(|p| names.contains(p.name.as_str()))
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    if !clash.is_empty() {
        bail!(
            "the packages scenario creates and removes packages named {}; the server already has {}: run it against a server without them (scripts/bench starts a fresh one)",
            LIBRARY
                .iter()
                .map(|p| p.name)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", "),
            clash.join(", ")
        );
    }
    let base_info = strata.runtime(BASE).with_context(|| {
        format!("the packages scenario needs the built-in runtime {BASE} (strata bootstrap)")
    })?;
    let base = format!("{}@{}", base_info.name, base_info.version);
    let base_layers = base_info.layers.len();
    let mut load = vec![Load::read("start")];

    let before = strata.store_stats()?;

    // 1. The library.
    eprintln!("==> library: {} packages on {base}", LIBRARY.len());
    load.push(Load::read("library"));
    let mut library = Vec::new();
    let mut known_layers: HashSet<String> = HashSet::new();
    for p in LIBRARY {
        let spec = CreatePackageSpec {
            name: p.name.into(),
            version: Some(p.version.into()),
            base: base.clone(),
            apt: p.apt.iter().map(|s| s.to_string()).collect(),
            pip: p.pip.iter().map(|s| s.to_string()).collect(),
            requires: p.requires.iter().map(|s| s.to_string()).collect(),
            ..CreatePackageSpec::default()
        };
        let done = strata.create_package(&spec)?;
        let build_ms = done.ms;
        created.packages.push(p.reference());
        let info = done.result;
        let layer = info
            .builds
            .iter()
            .find(|b| b.base == base)
            .and_then(|b| b.layer.clone());
        if let Some(l) = &layer {
            known_layers.insert(l.digest.to_string());
        }
        let sample = PackageSample {
            package: p.reference(),
            kind: p.kind(),
            installs: p.installs(),
            requires: info.requires.clone(),
            build_ms,
            built: done.steps.iter().any(|(_, cached)| !cached),
            layer_bytes: layer.as_ref().map_or(0, |l| l.size_bytes),
            layer_entries: layer.as_ref().map_or(0, |l| l.entries),
        };
        eprintln!(
            "    {:<18} {:>7.1} s  {:>6.1} MiB{}",
            sample.package,
            build_ms / 1000.0,
            mib(sample.layer_bytes),
            if sample.built { "" } else { "  (build cache)" }
        );
        library.push(sample);
    }
    let after_packages = strata.store_stats()?;

    // 2. Composition. Package builds composed each package's requirements already.
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    for p in LIBRARY.iter().filter(|p| !p.requires.is_empty()) {
        let reqs: Vec<String> = p.requires.iter().map(|s| s.to_string()).collect();
        seen.insert(closure(&reqs)?);
    }
    let combos = combinations(
        COMBINABLE,
        plan.min_packages,
        plan.max_packages,
        plan.runtimes,
        plan.seed,
        &seen,
    )?;
    eprintln!("==> composing {} runtimes on {base}", combos.len());
    load.push(Load::read("compose"));
    let mut compose = Vec::new();
    let mut lives = Vec::new();
    for (i, c) in combos.iter().enumerate() {
        let name = format!("pkgbench-{run_id}-{i:02}");
        let spec = CreateRuntimeSpec {
            name: name.clone(),
            dockerfile: String::new(),
            base: Some(base.clone()),
            packages: c.picks.clone(),
            layered: false,
            build_args: BTreeMap::new(),
            resources: Default::default(),
            no_cache: false,
        };
        let done = strata.create_runtime(&spec)?;
        let elapsed = done.ms;
        created.runtimes.push(name.clone());
        let info = done.result;
        if info.packages != c.closure {
            bail!(
                "runtime {name}: the server stacked {:?}, expected {:?} (requirements first, in the order asked)",
                info.packages,
                c.closure
            );
        }
        let new_set = seen.insert(info.packages.clone());
        let merge = merge_layer(&info);
        let sample = ComposeSample {
            runtime: format!("{}@{}", info.name, info.version),
            picks: c.picks.clone(),
            packages: info.packages.clone(),
            ms: elapsed,
            server_ms: None,
            new_set,
            steps_run: done.steps.iter().filter(|(_, cached)| !cached).count(),
            layers: info.layers.len(),
            size_bytes: info.size_bytes,
            own_bytes: own_bytes(&info, base_layers),
            merge_layer_bytes: merge.map(|l| l.size_bytes),
        };
        eprintln!(
            "    {:<22} {:>7.1} ms  {}",
            sample.runtime,
            elapsed,
            c.picks.join(",")
        );
        for l in &info.layers {
            known_layers.insert(l.digest.to_string());
        }
        let mut versions = BTreeMap::new();
        versions.insert(info.version, digests(&info));
        lives.push(Live {
            name,
            version: info.version,
            parent: info.parent,
            picks: c.picks.clone(),
            packages: info.packages.clone(),
            versions,
        });
        compose.push(sample);
    }
    let after_runtimes = strata.store_stats()?;

    // Composed runtimes must work: a function using every package of the first runtime and of
    // the one with the most packages.
    let mut check_on = vec![0];
    if let Some((most, _)) = compose
        .iter()
        .enumerate()
        .max_by_key(|(i, c)| (c.packages.len(), usize::MAX - i))
    {
        if most != 0 {
            check_on.push(most);
        }
    }
    let mut checks = Vec::new();
    for i in check_on {
        checks.push(check_function(
            strata,
            &lives[i].name,
            &compose[i].packages,
            &format!("pkgbench-{run_id}-fn-{i:02}"),
            created,
        )?);
    }

    // 3. Updates and rollbacks.
    let updated = plan.updated.min(lives.len());
    eprintln!("==> updates and rollbacks on {updated} runtimes");
    load.push(Load::read("updates"));
    let mut updates = Vec::new();
    let mut rollbacks = Vec::new();
    for (i, live) in lives.iter_mut().take(updated).enumerate() {
        let add = COMBINABLE
            .iter()
            .cycle()
            .skip(i % COMBINABLE.len())
            .take(COMBINABLE.len())
            .find(|r| !live.packages.iter().any(|p| name_of(p) == name_of(r)))
            .map(|r| r.to_string());
        let Some(add) = add else {
            continue;
        };
        let mut u = Updater {
            strata,
            live,
            seen: &mut seen,
            known_layers: &mut known_layers,
        };
        // A set never composed, back, the same set again (cached), a removal (new set), back,
        // then the removal of the added package (the original set: cached).
        updates.push(u.update(UpdateOp::Add, &add)?);
        rollbacks.push(u.rollback()?);
        updates.push(u.update(UpdateOp::Add, &add)?);
        let remove = u.removable(&add);
        if let Some(remove) = &remove {
            updates.push(u.update(UpdateOp::Remove, remove)?);
            rollbacks.push(u.rollback()?);
        }
        updates.push(u.update(UpdateOp::Remove, &add)?);
        if u.live.packages.iter().any(|p| p == UPGRADE.0) {
            updates.push(u.update(UpdateOp::Set, UPGRADE.1)?);
            rollbacks.push(u.rollback()?);
        }
    }
    let after_updates = strata.store_stats()?;
    eprintln!(
        "    {} updates ({} to new package sets), {} rollbacks",
        updates.len(),
        updates.iter().filter(|u| u.new_set).count(),
        rollbacks.len()
    );

    // 4. From scratch.
    let estimate_s: Vec<f64> = compose
        .iter()
        .map(|c| {
            c.packages
                .iter()
                .filter_map(|p| library.iter().find(|l| &l.package == p))
                .map(|l| l.build_ms / 1000.0)
                .sum::<f64>()
                * SCRATCH_ESTIMATE_FACTOR
        })
        .collect();
    let total_estimate: f64 = estimate_s.iter().sum();
    let (picked, scratch_selection) = match plan.scratch {
        Some(0) => (Vec::new(), "none (asked for)".to_string()),
        Some(n) => (
            spread(compose.len(), n),
            format!(
                "{} of {} runtimes, evenly spread (asked for)",
                n.min(compose.len()),
                compose.len()
            ),
        ),
        None if total_estimate <= plan.scratch_budget_s => (
            spread(compose.len(), compose.len()),
            format!(
                "all {} runtimes (estimated {:.0} s from the package build times, within the {:.0} s budget)",
                compose.len(),
                total_estimate,
                plan.scratch_budget_s
            ),
        ),
        None => (
            spread(compose.len(), SCRATCH_SAMPLE),
            format!(
                "{} of {} runtimes, evenly spread (building all was estimated at {:.0} s from the package build times, over the {:.0} s budget)",
                SCRATCH_SAMPLE.min(compose.len()),
                compose.len(),
                total_estimate,
                plan.scratch_budget_s
            ),
        ),
    };
    eprintln!("==> from scratch: {scratch_selection}");
    load.push(Load::read("scratch"));
    let mut recipes: BTreeMap<String, String> = BTreeMap::new();
    let mut scratch = Vec::new();
    for i in picked {
        let c = &compose[i];
        let mut dockerfile = format!("FROM {base}\n");
        for p in &c.packages {
            if !recipes.contains_key(p) {
                recipes.insert(p.clone(), strata.package(p)?.recipe);
            }
            dockerfile.push_str(&format!("# package {p}\n{}", recipes[p]));
        }
        let name = format!("pkgbench-{run_id}-scratch-{i:02}");
        let spec = CreateRuntimeSpec {
            name: name.clone(),
            dockerfile,
            base: None,
            packages: Vec::new(),
            layered: false,
            build_args: BTreeMap::new(),
            resources: Default::default(),
            no_cache: true,
        };
        let done = strata.create_runtime(&spec)?;
        let elapsed = done.ms;
        let info = done.result;
        created.runtimes.push(name.clone());
        eprintln!(
            "    {:<22} {:>7.1} s  (composed in {:.1} ms)",
            format!("{}@{}", info.name, info.version),
            elapsed / 1000.0,
            c.ms
        );
        scratch.push(ScratchSample {
            composed: c.runtime.clone(),
            runtime: format!("{}@{}", info.name, info.version),
            packages: c.packages.clone(),
            ms: elapsed,
            compose_ms: c.ms,
            layers: info.layers.len(),
            size_bytes: info.size_bytes,
            own_bytes: own_bytes(&info, base_layers),
            composed_own_bytes: c.own_bytes,
        });
    }
    let after_scratch = if scratch.is_empty() {
        None
    } else {
        Some(strata.store_stats()?)
    };

    Ok(PackagesSamples {
        base,
        base_bytes: base_info.size_bytes,
        load,
        library,
        compose,
        checks,
        updates,
        rollbacks,
        scratch_selection,
        scratch,
        storage: StorageSamples {
            before,
            after_packages,
            after_runtimes,
            after_updates,
            after_scratch,
        },
        cleanup: None,
    })
}

/// Updates and rollbacks of one runtime, with the bookkeeping that tells new package sets from
/// ones composed before and checks what the server made.
struct Updater<'a> {
    strata: &'a Strata,
    live: &'a mut Live,
    seen: &'a mut HashSet<Vec<String>>,
    known_layers: &'a mut HashSet<String>,
}

impl Updater<'_> {
    /// A package the runtime was asked for (not `except`) that nothing else in it requires.
    fn removable(&self, except: &str) -> Option<String> {
        self.live
            .picks
            .iter()
            .rev()
            .filter(|p| p.as_str() != except)
            .find(|p| {
                !self
                    .live
                    .packages
                    .iter()
                    .any(|other| lib(other).is_ok_and(|o| o.requires.iter().any(|r| r == *p)))
            })
            .cloned()
    }

    fn update(&mut self, op: UpdateOp, arg: &str) -> anyhow::Result<UpdateSample> {
        let mut list = self.live.packages.clone();
        let mut req = UpdateRuntimeRequest::default();
        match op {
            UpdateOp::Add => {
                list.push(arg.to_string());
                req.add.push(arg.to_string());
            }
            UpdateOp::Remove => {
                list.retain(|p| name_of(p) != name_of(arg));
                req.remove.push(name_of(arg).to_string());
            }
            UpdateOp::Set => {
                for p in list.iter_mut().filter(|p| name_of(p) == name_of(arg)) {
                    *p = arg.to_string();
                }
                req.set.push(arg.to_string());
            }
        }
        let expected = closure(&list)?;
        let name = self.live.name.clone();
        let done = self.strata.update_runtime(&name, &req)?;
        let elapsed = done.ms;
        let info = done.result;
        if info.packages != expected {
            bail!(
                "updating runtime {name} ({op:?} {arg}): the server stacked {:?}, expected {:?}",
                info.packages,
                expected
            );
        }
        if info.parent != Some(self.live.version) {
            bail!(
                "updating runtime {name}: version {} was made from {:?}, expected {}",
                info.version,
                info.parent,
                self.live.version
            );
        }
        let new_set = self.seen.insert(expected.clone());
        let new_merge_layer =
            merge_layer(&info).map(|l| !self.known_layers.contains(&l.digest.to_string()));
        for l in &info.layers {
            self.known_layers.insert(l.digest.to_string());
        }
        let sample = UpdateSample {
            runtime: name,
            from: self.live.version,
            to: info.version,
            op,
            arg: arg.to_string(),
            packages: info.packages.clone(),
            new_set,
            new_merge_layer,
            ms: elapsed,
            server_ms: None,
        };
        self.live.version = info.version;
        self.live.parent = info.parent;
        self.live.packages = info.packages.clone();
        self.live.versions.insert(info.version, digests(&info));
        Ok(sample)
    }

    fn rollback(&mut self) -> anyhow::Result<RollbackSample> {
        let name = self.live.name.clone();
        let Some(target) = self.live.parent else {
            bail!(
                "runtime {name}@{} has no version to roll back to",
                self.live.version
            );
        };
        let t = Instant::now();
        let done = self.strata.rollback_runtime(&name, None);
        let elapsed = ms(t);
        let info = done?;
        let want = self.live.versions.get(&target).cloned().unwrap_or_default();
        if digests(&info) != want {
            bail!(
                "rolling runtime {name} back to version {target}: version {} does not have its layers",
                info.version
            );
        }
        let sample = RollbackSample {
            runtime: name,
            from: self.live.version,
            target,
            to: info.version,
            ms: elapsed,
        };
        self.live.version = info.version;
        self.live.parent = info.parent;
        self.live.packages = info.packages.clone();
        self.live.versions.insert(info.version, want);
        Ok(sample)
    }
}

/// Deploys a function that looks for every program and imports every module the packages
/// provide, invokes it once and removes it.
fn check_function(
    strata: &Strata,
    runtime: &str,
    packages: &[String],
    function: &str,
    created: &mut Created,
) -> anyhow::Result<FunctionCheck> {
    let probes: Vec<Probe> = packages
        .iter()
        .map(|p| lib(p).map(|l| l.probe))
        .collect::<anyhow::Result<_>>()?;
    let code = probe_tar(&probes)?;
    let spec = CreateFunctionSpec {
        name: function.to_string(),
        config: FunctionConfig {
            runtime: runtime.into(),
            handler: "app.handler".into(),
            ..FunctionConfig::default()
        },
    };
    strata.create_function(&spec, code)?;
    created.functions.push(function.to_string());
    let t = Instant::now();
    let answer = strata.invoke(function, EVENT);
    let first_invoke_ms = ms(t);
    let answer: serde_json::Value = serde_json::from_slice(&answer?.body)
        .with_context(|| format!("function {function} answered with non-JSON"))?;
    let ok = answer["missing"].as_array().is_some_and(|a| a.is_empty())
        && answer["failed"].as_object().is_some_and(|o| o.is_empty());
    eprintln!(
        "    function on {runtime}: {} ({first_invoke_ms:.0} ms) {answer}",
        if ok { "ok" } else { "FAILED" }
    );
    strata.delete_function(function)?;
    created.functions.retain(|f| f != function);
    Ok(FunctionCheck {
        runtime: runtime.to_string(),
        probes,
        ok,
        answer,
        first_invoke_ms,
    })
}

/// The probe function's code: `app.py` with the programs and modules to look for.
pub fn probe_source(probes: &[Probe]) -> String {
    let quote = |v: Vec<&str>| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bins = quote(
        probes
            .iter()
            .filter_map(|p| match p {
                Probe::Bin(b) => Some(*b),
                Probe::Module(_) => None,
            })
            .collect(),
    );
    let modules = quote(
        probes
            .iter()
            .filter_map(|p| match p {
                Probe::Module(m) => Some(*m),
                Probe::Bin(_) => None,
            })
            .collect(),
    );
    format!(
        "import importlib, shutil\n\
         BINS = [{bins}]\n\
         MODULES = [{modules}]\n\
         def handler(event, context):\n    \
             missing = [b for b in BINS if shutil.which(b) is None]\n    \
             failed, versions = {{}}, {{}}\n    \
             for m in MODULES:\n        \
                 try:\n            \
                     versions[m] = str(getattr(importlib.import_module(m), \"__version__\", \"\"))\n        \
                 except Exception as e:\n            \
                     failed[m] = repr(e)\n    \
             return {{\"missing\": missing, \"failed\": failed, \"versions\": versions}}\n"
    )
}

fn probe_tar(probes: &[Probe]) -> anyhow::Result<Vec<u8>> {
    let text = probe_source(probes);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut header, "app.py", text.as_bytes())
        .context("packing the probe function")?;
    b.into_inner().context("packing the probe function")
}

/// The runtime's merge layer: its top layer, when a merge layer made it.
fn merge_layer(info: &RuntimeInfo) -> Option<&LayerInfo> {
    info.layers.last().filter(|l| l.created_by == "merge layer")
}

fn digests(info: &RuntimeInfo) -> Vec<String> {
    info.layers.iter().map(|l| l.digest.to_string()).collect()
}

fn own_bytes(info: &RuntimeInfo, base_layers: usize) -> u64 {
    info.layers
        .iter()
        .skip(base_layers)
        .map(|l| l.size_bytes)
        .sum()
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_library_is_consistent() {
        let names: HashSet<&str> = LIBRARY.iter().map(|p| p.name).collect();
        assert!(names.len() >= 10, "at least 10 packages");
        for (i, p) in LIBRARY.iter().enumerate() {
            assert!(
                p.apt.is_empty() != p.pip.is_empty(),
                "{}: apt or pip",
                p.name
            );
            for r in p.requires {
                let at = LIBRARY.iter().position(|q| q.reference() == *r);
                assert!(at.is_some_and(|at| at < i), "{r} comes before {}", p.name);
            }
            if !p.pip.is_empty() {
                // pip packages stand on the pip package, directly or through another.
                assert!(closure(&[p.reference()])
                    .expect("ok")
                    .contains(&"pip@1".to_string()));
            }
        }
        for c in COMBINABLE {
            assert!(lib(c).is_ok(), "{c}");
        }
        assert!(lib(UPGRADE.0).is_ok() && lib(UPGRADE.1).is_ok());
        assert!(COMBINABLE.contains(&UPGRADE.0) && !COMBINABLE.contains(&UPGRADE.1));
    }

    #[test]
    fn closure_puts_requirements_first_once() {
        assert_eq!(
            closure(&s(&["curl@1", "pandas@2.2.2", "flask@3.0.3"])).expect("ok"),
            s(&[
                "curl@1",
                "pip@1",
                "numpy@1.26.4",
                "pandas@2.2.2",
                "flask@3.0.3"
            ])
        );
        // Asking for a requirement after the package that needs it adds nothing.
        assert_eq!(
            closure(&s(&["pandas@2.2.2", "numpy@1.26.4"])).expect("ok"),
            s(&["pip@1", "numpy@1.26.4", "pandas@2.2.2"])
        );
        let err = closure(&s(&["requests@2.31.0", "requests@2.32.3"])).expect_err("fails");
        assert!(
            err.to_string().contains("two versions of requests"),
            "{err}"
        );
        assert!(closure(&s(&["nope@1"])).is_err());
    }

    #[test]
    fn combinations_are_deterministic_distinct_and_sized() {
        let taken: HashSet<Vec<String>> = [s(&["pip@1"]), s(&["pip@1", "numpy@1.26.4"])]
            .into_iter()
            .collect();
        let a = combinations(COMBINABLE, 2, 6, 20, 7, &taken).expect("ok");
        let b = combinations(COMBINABLE, 2, 6, 20, 7, &taken).expect("ok");
        assert_eq!(a, b, "the same seed gives the same sets");
        assert_eq!(a.len(), 20);
        let stacks: HashSet<&Vec<String>> = a.iter().map(|c| &c.closure).collect();
        assert_eq!(stacks.len(), 20, "every stack differs");
        for (i, c) in a.iter().enumerate() {
            assert_eq!(c.picks.len(), 2 + i % 5, "sizes cycle 2..=6");
            assert!(!taken.contains(&c.closure));
            assert_eq!(c.closure, closure(&c.picks).expect("ok"));
            let mut order: Vec<usize> = c
                .picks
                .iter()
                .map(|p| COMBINABLE.iter().position(|q| q == p).expect("ok"))
                .collect();
            let sorted = {
                let mut o = order.clone();
                o.sort_unstable();
                o
            };
            assert_eq!(order, sorted, "picks keep the library's order");
            order.dedup();
            assert_eq!(order.len(), c.picks.len(), "no package twice");
        }
        let other = combinations(COMBINABLE, 2, 6, 20, 8, &taken).expect("ok");
        assert_ne!(a, other, "another seed gives other sets");
    }

    #[test]
    fn combinations_refuse_impossible_requests() {
        let none = HashSet::new();
        assert!(combinations(COMBINABLE, 0, 3, 1, 1, &none).is_err());
        assert!(combinations(COMBINABLE, 4, 3, 1, 1, &none).is_err());
        assert!(combinations(COMBINABLE, 2, 11, 1, 1, &none).is_err());
        // Only 3 sets of 2 exist in a pool of 3.
        let err = combinations(&["curl@1", "git@1", "jq@1"], 2, 2, 4, 1, &none).expect_err("fails");
        assert!(err.to_string().contains("found only 3"), "{err}");
    }

    #[test]
    fn spread_picks_evenly_from_the_first() {
        assert_eq!(spread(20, 5), vec![0, 4, 8, 12, 16]);
        assert_eq!(spread(20, 2), vec![0, 10]);
        assert_eq!(spread(3, 5), vec![0, 1, 2]);
        assert_eq!(spread(20, 0), Vec::<usize>::new());
    }

    #[test]
    fn server_times_come_from_the_log_lines() {
        let log = "\u{1b}[2m2026-11-28T03:25:30Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m strata_control::compose: package runtime created \u{1b}[3mruntime\u{1b}[0m\u{1b}[2m=\u{1b}[0mpkgbench-1-00@1 \u{1b}[3mkind\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"composed\" \u{1b}[3mms\u{1b}[0m\u{1b}[2m=\u{1b}[0m36\n\
                   2026-11-28T03:25:31Z INFO strata_control::compose: runtime updated runtime=pkgbench-1-00@2 from=1 ms=47\n\
                   2026-11-28T03:25:31Z INFO strata_control::compose: runtime rolled back runtime=pkgbench-1-00@3 to=1\n\
                   2026-11-28T03:25:31Z INFO strata_control::runtimes: runtime created runtime=python3@1 layers=4\n";
        let t = server_times(log);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t.get("pkgbench-1-00@1"), Some(&36.0));
        assert_eq!(t.get("pkgbench-1-00@2"), Some(&47.0));
    }

    #[test]
    fn probe_source_lists_programs_and_modules() {
        let src = probe_source(&[Probe::Bin("jq"), Probe::Module("PIL"), Probe::Module("pip")]);
        assert!(src.contains("BINS = [\"jq\"]"), "{src}");
        assert!(src.contains("MODULES = [\"PIL\", \"pip\"]"), "{src}");
        assert!(src.contains("def handler(event, context):"));
        assert!(probe_source(&[]).contains("BINS = []"));
    }
}
