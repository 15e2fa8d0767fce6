//! The packages scenario's report: summaries, the storage accounting, the targets next to them,
//! a table for people and the raw figures as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::{Load, Machine};
use crate::packages::{mib, PackagesPlan, PackagesSamples, UpdateOp};
use crate::stats::Summary;

/// Composition target: every runtime composed from built packages, milliseconds.
pub const COMPOSE_MAX_MS: f64 = 500.0;
/// Storage target: the store's growth over the distinct content of the packages.
pub const STORE_RATIO: f64 = 1.2;
/// Update and rollback target when the packages exist, p99, milliseconds.
pub const UPDATE_P99_MS: f64 = 100.0;

/// One target, and whether the measured figure meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is measured.
    pub target: String,
    /// The limit.
    pub limit: f64,
    /// Its unit: `ms`, `x` (a ratio), `of N`.
    pub unit: String,
    /// The measured figure; `None` when there was nothing to measure (a MISS).
    pub measured: Option<f64>,
    /// Whether the measured figure is at most the limit.
    pub pass: bool,
}

impl Check {
    fn at_most(target: &str, limit: f64, unit: &str, measured: Option<f64>) -> Check {
        Check {
            target: target.into(),
            limit,
            unit: unit.into(),
            measured,
            pass: measured.is_some_and(|m| m <= limit),
        }
    }

    fn all(target: &str, ok: usize, of: usize) -> Check {
        Check {
            target: target.into(),
            limit: of as f64,
            unit: format!("of {of}"),
            measured: Some(ok as f64),
            pass: of > 0 && ok == of,
        }
    }

    fn measured_text(&self) -> String {
        match self.measured {
            Some(m) if self.unit == "ms" => format!("{m:.1} ms"),
            Some(m) if self.unit == "x" => format!("{m:.3}x"),
            Some(m) => format!("{m} {}", self.unit),
            None => "nothing measured".into(),
        }
    }

    fn verdict(&self) -> String {
        let limit = if self.unit.starts_with("of") {
            format!("all {}", self.limit)
        } else if self.unit == "x" {
            format!("<= {}x", self.limit)
        } else {
            format!("<= {} {}", self.limit, self.unit)
        };
        format!("{limit} {}", if self.pass { "PASS" } else { "MISS" })
    }
}

/// The storage accounting, bytes.
#[derive(Debug, Clone, Serialize)]
pub struct StorageReport {
    /// Layers of the library's packages, summed (each package once).
    pub package_layers_bytes: u64,
    /// Distinct file content the library added to the store: the union of distinct package
    /// content (files with the same content counted once, content the store held before not
    /// counted).
    pub package_distinct_bytes: u64,
    /// Growth of the store's physical bytes from before the library to after the library.
    pub physical_packages_bytes: u64,
    /// Growth of the store's physical bytes from before the library to after every runtime was
    /// composed: packages, merge layers and runtime records together.
    pub physical_packages_runtimes_bytes: u64,
    /// `physical_packages_runtimes_bytes / package_distinct_bytes`: the target's ratio.
    pub physical_to_distinct: f64,
    /// Merge layers of the composed runtimes, summed.
    pub merge_layers_bytes: u64,
    /// Every composed runtime counted as a full image (base included), summed.
    pub runtimes_full_bytes: u64,
    /// Every composed runtime's layers above the base, summed: what storing each runtime as
    /// its own image would take over one shared base.
    pub runtimes_own_bytes: u64,
    /// `runtimes_full_bytes / physical_packages_runtimes_bytes`.
    pub full_to_physical: f64,
    /// `runtimes_own_bytes / physical_packages_runtimes_bytes`.
    pub own_to_physical: f64,
    /// Growth of physical bytes during the updates and rollbacks.
    pub physical_updates_bytes: u64,
    /// The runtimes built from scratch: their layers above the base, summed.
    pub scratch_own_bytes: u64,
    /// The same runtimes composed: their layers above the base, summed.
    pub scratch_composed_own_bytes: u64,
    /// Growth of physical bytes during the builds from scratch (after the file pool shared
    /// what it could).
    pub physical_scratch_bytes: Option<u64>,
}

/// Updates of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateGroup {
    /// What the group is.
    pub what: String,
    /// Its latencies.
    pub summary: Option<Summary>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct PackagesReport {
    /// When the benchmark ran.
    pub date: String,
    /// The server measured.
    pub server: String,
    /// Where it ran.
    pub machine: Machine,
    /// How much was measured.
    pub plan: PackagesPlan,
    /// Package build times.
    pub package_builds: Option<Summary>,
    /// Composition of runtimes from built packages.
    pub compose: Option<Summary>,
    /// The same, the server's own times (from its log).
    pub compose_server: Option<Summary>,
    /// Updates to a package set never composed before.
    pub update_new: Option<Summary>,
    /// Updates to a package set composed before.
    pub update_cached: Option<Summary>,
    /// Updates to a new set, the server's own times (from its log).
    pub update_new_server: Option<Summary>,
    /// Updates to a set composed before, the server's own times (from its log).
    pub update_cached_server: Option<Summary>,
    /// Rollbacks.
    pub rollback: Option<Summary>,
    /// Updates by operation and kind.
    pub update_groups: Vec<UpdateGroup>,
    /// Builds from scratch.
    pub scratch: Option<Summary>,
    /// Per runtime built from scratch: compose time / build time.
    pub compose_to_scratch: Option<Summary>,
    /// Storage.
    pub storage: StorageReport,
    /// The targets.
    pub targets: Vec<Check>,
    /// Every sample.
    pub samples: PackagesSamples,
}

fn delta(after: u64, before: u64) -> u64 {
    after.saturating_sub(before)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl PackagesReport {
    /// Summarizes the samples and judges the targets.
    pub fn new(
        date: String,
        server: String,
        machine: Machine,
        plan: PackagesPlan,
        samples: PackagesSamples,
    ) -> PackagesReport {
        let s = &samples;
        let of = |v: Vec<f64>| Summary::of(&v);
        let package_builds = of(s.library.iter().map(|p| p.build_ms).collect());
        let compose = of(s.compose.iter().map(|c| c.ms).collect());
        let update_new = of(s
            .updates
            .iter()
            .filter(|u| u.new_set)
            .map(|u| u.ms)
            .collect());
        let update_cached = of(s
            .updates
            .iter()
            .filter(|u| !u.new_set)
            .map(|u| u.ms)
            .collect());
        let rollback = of(s.rollbacks.iter().map(|r| r.ms).collect());
        let compose_server = of(s.compose.iter().filter_map(|c| c.server_ms).collect());
        let update_new_server = of(s
            .updates
            .iter()
            .filter(|u| u.new_set)
            .filter_map(|u| u.server_ms)
            .collect());
        let update_cached_server = of(s
            .updates
            .iter()
            .filter(|u| !u.new_set)
            .filter_map(|u| u.server_ms)
            .collect());
        let mut update_groups = Vec::new();
        for op in [UpdateOp::Add, UpdateOp::Remove, UpdateOp::Set] {
            for new_set in [true, false] {
                let v: Vec<f64> = s
                    .updates
                    .iter()
                    .filter(|u| u.op == op && u.new_set == new_set)
                    .map(|u| u.ms)
                    .collect();
                if v.is_empty() {
                    continue;
                }
                update_groups.push(UpdateGroup {
                    what: format!(
                        "--{} ({})",
                        match op {
                            UpdateOp::Add => "add",
                            UpdateOp::Remove => "remove",
                            UpdateOp::Set => "set",
                        },
                        if new_set {
                            "new set"
                        } else {
                            "set composed before"
                        }
                    ),
                    summary: Summary::of(&v),
                });
            }
        }
        let scratch = of(s.scratch.iter().map(|x| x.ms).collect());
        let compose_to_scratch = of(s
            .scratch
            .iter()
            .filter(|x| x.ms > 0.0)
            .map(|x| x.compose_ms / x.ms)
            .collect());

        let st = &s.storage;
        let physical_packages_runtimes_bytes =
            delta(st.after_runtimes.physical_bytes, st.before.physical_bytes);
        let package_distinct_bytes = delta(
            st.after_packages.distinct_content_bytes,
            st.before.distinct_content_bytes,
        );
        let runtimes_full_bytes = s.compose.iter().map(|c| c.size_bytes).sum();
        let runtimes_own_bytes = s.compose.iter().map(|c| c.own_bytes).sum();
        let storage = StorageReport {
            package_layers_bytes: s.library.iter().map(|p| p.layer_bytes).sum(),
            package_distinct_bytes,
            physical_packages_bytes: delta(
                st.after_packages.physical_bytes,
                st.before.physical_bytes,
            ),
            physical_packages_runtimes_bytes,
            physical_to_distinct: ratio(physical_packages_runtimes_bytes, package_distinct_bytes),
            merge_layers_bytes: s.compose.iter().filter_map(|c| c.merge_layer_bytes).sum(),
            runtimes_full_bytes,
            runtimes_own_bytes,
            full_to_physical: ratio(runtimes_full_bytes, physical_packages_runtimes_bytes),
            own_to_physical: ratio(runtimes_own_bytes, physical_packages_runtimes_bytes),
            physical_updates_bytes: delta(
                st.after_updates.physical_bytes,
                st.after_runtimes.physical_bytes,
            ),
            scratch_own_bytes: s.scratch.iter().map(|x| x.own_bytes).sum(),
            scratch_composed_own_bytes: s.scratch.iter().map(|x| x.composed_own_bytes).sum(),
            physical_scratch_bytes: st
                .after_scratch
                .as_ref()
                .map(|a| delta(a.physical_bytes, st.after_updates.physical_bytes)),
        };

        let targets = vec![
            Check::at_most(
                "compose per runtime (max)",
                COMPOSE_MAX_MS,
                "ms",
                compose.map(|c| c.max_ms),
            ),
            Check::at_most(
                "store growth / distinct package content",
                STORE_RATIO,
                "x",
                (package_distinct_bytes > 0).then_some(storage.physical_to_distinct),
            ),
            Check::at_most(
                "update to a new package set p99",
                UPDATE_P99_MS,
                "ms",
                update_new.map(|u| u.p99_ms),
            ),
            Check::at_most(
                "update to a set composed before p99",
                UPDATE_P99_MS,
                "ms",
                update_cached.map(|u| u.p99_ms),
            ),
            Check::at_most(
                "rollback p99",
                UPDATE_P99_MS,
                "ms",
                rollback.map(|u| u.p99_ms),
            ),
            Check::all(
                "composed runtimes run a function using every package",
                s.checks.iter().filter(|c| c.ok).count(),
                s.checks.len(),
            ),
        ];
        PackagesReport {
            date,
            server,
            machine,
            plan,
            package_builds,
            compose,
            compose_server,
            update_new,
            update_cached,
            update_new_server,
            update_cached_server,
            rollback,
            update_groups,
            scratch,
            compose_to_scratch,
            storage,
            targets,
            samples,
        }
    }

    /// The targets missed, as `target: measured (limit)`.
    pub fn misses(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|c| !c.pass)
            .map(|c| format!("{}: {} ({})", c.target, c.measured_text(), c.verdict()))
            .collect()
    }

    /// The report as a table for people.
    pub fn render(&self) -> String {
        let m = &self.machine;
        let p = &self.plan;
        let s = &self.samples;
        let st = &self.storage;
        let mut out = String::new();
        let _ = writeln!(out, "Strata packages benchmark");
        let _ = writeln!(out, "date:     {}", self.date);
        let _ = writeln!(
            out,
            "machine:  {} CPUs ({}), {:.1} GiB memory, Linux {}",
            m.cpus,
            if m.cpu_model.is_empty() {
                "unknown model"
            } else {
                &m.cpu_model
            },
            m.memory_bytes as f64 / f64::from(1u32 << 30),
            m.kernel
        );
        let _ = writeln!(out, "load:     {}", load_text(&s.load));
        let _ = writeln!(out, "server:   {}", self.server);
        let _ = writeln!(
            out,
            "plan:     {} package versions on {}; {} runtimes of {} to {} packages (seed {}); updates and rollbacks on {} runtimes; from scratch: {}",
            s.library.len(),
            s.base,
            s.compose.len(),
            p.min_packages,
            p.max_packages,
            p.seed,
            p.updated.min(s.compose.len()),
            s.scratch_selection
        );

        let _ = writeln!(out);
        let _ = writeln!(out, "1. library (each package built once on {})", s.base);
        let _ = writeln!(
            out,
            "  {:<18} {:<24} {:<14} {:>9} {:>10} {:>8}",
            "package", "installs", "requires", "build s", "layer MiB", "entries"
        );
        for l in &s.library {
            let _ = writeln!(
                out,
                "  {:<18} {:<24} {:<14} {:>9.1} {:>10.1} {:>8}{}",
                l.package,
                l.installs,
                if l.requires.is_empty() {
                    "-".to_string()
                } else {
                    l.requires.join(",")
                },
                l.build_ms / 1000.0,
                mib(l.layer_bytes),
                l.layer_entries,
                if l.built { "" } else { "  (build cache)" }
            );
        }
        let _ = writeln!(
            out,
            "  {:<18} {:<24} {:<14} {:>9.1} {:>10.1}",
            "total",
            "",
            "",
            s.library.iter().map(|l| l.build_ms).sum::<f64>() / 1000.0,
            mib(st.package_layers_bytes)
        );

        let header = |out: &mut String| {
            let _ = writeln!(
                out,
                "  {:<40} {:>5} {:>9} {:>9} {:>9} {:>9}   target",
                "measurement", "runs", "p50 ms", "p99 ms", "mean ms", "max ms"
            );
        };
        let t = |i: usize| self.targets.get(i).map(Check::verdict).unwrap_or_default();

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "2. composition (POST /v1/runtimes with packages; every package built)"
        );
        header(&mut out);
        row(&mut out, "compose a runtime", self.compose, t(0));
        if self.compose_server.is_some() {
            row(
                &mut out,
                "  server's own time (log, whole ms)",
                self.compose_server,
                String::new(),
            );
        }
        let _ = writeln!(
            out,
            "  {:<22} {:>10} {:>10} {:>9} {:>9}  packages (requirements added)",
            "runtime", "compose ms", "scratch s", "speedup", "own MiB"
        );
        for c in &s.compose {
            let scratch = s.scratch.iter().find(|x| x.composed == c.runtime);
            let _ = writeln!(
                out,
                "  {:<22} {:>10.1} {:>10} {:>9} {:>9.1}  {}{}",
                c.runtime,
                c.ms,
                scratch.map_or("-".into(), |x| format!("{:.1}", x.ms / 1000.0)),
                scratch.map_or("-".into(), |x| format!("{:.0}x", x.ms / c.ms.max(0.001))),
                mib(c.own_bytes),
                c.packages.join(","),
                if c.new_set {
                    ""
                } else {
                    "  (set composed before)"
                }
            );
        }
        for c in &s.checks {
            let _ = writeln!(
                out,
                "  function on {}: {} (first invoke {:.0} ms) {}",
                c.runtime,
                if c.ok { "ok" } else { "FAILED" },
                c.first_invoke_ms,
                c.answer
            );
        }

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "3. storage (store statistics before the library, after it, after the composition)"
        );
        let line = |out: &mut String, name: &str, bytes: u64, note: String| {
            let _ = writeln!(out, "  {:<52} {:>10.1} MiB  {}", name, mib(bytes), note);
        };
        line(
            &mut out,
            "package layers, summed",
            st.package_layers_bytes,
            format!("{} layers", s.library.len()),
        );
        line(
            &mut out,
            "distinct package content (union)",
            st.package_distinct_bytes,
            "distinct_content_bytes growth over the library".into(),
        );
        line(
            &mut out,
            "store growth: library",
            st.physical_packages_bytes,
            "physical_bytes".into(),
        );
        line(
            &mut out,
            "store growth: library + composed runtimes",
            st.physical_packages_runtimes_bytes,
            format!(
                "{:.3}x the distinct content   {}",
                st.physical_to_distinct,
                t(1)
            ),
        );
        line(
            &mut out,
            "  of which merge layers of the runtimes",
            st.merge_layers_bytes,
            String::new(),
        );
        line(
            &mut out,
            "runtimes as full images, summed",
            st.runtimes_full_bytes,
            format!("{:.1}x the store growth", st.full_to_physical),
        );
        line(
            &mut out,
            "runtimes' own layers over one shared base, summed",
            st.runtimes_own_bytes,
            format!("{:.1}x the store growth", st.own_to_physical),
        );
        line(
            &mut out,
            "store growth: updates and rollbacks",
            st.physical_updates_bytes,
            format!(
                "{} updates, {} rollbacks",
                s.updates.len(),
                s.rollbacks.len()
            ),
        );
        if !s.scratch.is_empty() {
            line(
                &mut out,
                "built from scratch: own layers, summed",
                st.scratch_own_bytes,
                format!(
                    "{} runtimes; composed: {:.1} MiB",
                    s.scratch.len(),
                    mib(st.scratch_composed_own_bytes)
                ),
            );
            if let Some(b) = st.physical_scratch_bytes {
                line(
                    &mut out,
                    "store growth: builds from scratch",
                    b,
                    "after the file pool shared identical files".into(),
                );
            }
        }

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "4. updates and rollbacks (every package exists; new set: the merge layer is generated)"
        );
        header(&mut out);
        row(&mut out, "update, new package set", self.update_new, t(2));
        row(
            &mut out,
            "update, set composed before",
            self.update_cached,
            t(3),
        );
        row(&mut out, "rollback", self.rollback, t(4));
        if self.update_new_server.is_some() || self.update_cached_server.is_some() {
            row(
                &mut out,
                "  server: update, new package set",
                self.update_new_server,
                String::new(),
            );
            row(
                &mut out,
                "  server: update, set composed before",
                self.update_cached_server,
                String::new(),
            );
        }
        for g in &self.update_groups {
            row(&mut out, &format!("  {}", g.what), g.summary, String::new());
        }
        let fresh_merges = s
            .updates
            .iter()
            .filter(|u| u.new_set && u.new_merge_layer == Some(true))
            .count();
        let cached_reused = s
            .updates
            .iter()
            .filter(|u| !u.new_set && u.new_merge_layer == Some(false))
            .count();
        let _ = writeln!(
            out,
            "  merge layers: {} of {} updates to new sets made a layer no runtime had (the others made one identical to an existing layer: same Debian packages); {} of {} updates to sets composed before reused one",
            fresh_merges,
            s.updates.iter().filter(|u| u.new_set).count(),
            cached_reused,
            s.updates.iter().filter(|u| !u.new_set).count()
        );

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "5. from scratch (the equivalent Dockerfile: FROM {}, then every recipe; no cache)",
            s.base
        );
        match (self.scratch, self.compose_to_scratch) {
            (Some(b), Some(r)) => {
                let _ = writeln!(
                    out,
                    "  {:<40} {:>5} {:>9} {:>9} {:>9} {:>9}",
                    "measurement", "runs", "p50", "p99", "mean", "max"
                );
                let _ = writeln!(
                    out,
                    "  {:<40} {:>5} {:>8.1}s {:>8.1}s {:>8.1}s {:>8.1}s",
                    "build from scratch",
                    b.runs,
                    b.p50_ms / 1000.0,
                    b.p99_ms / 1000.0,
                    b.mean_ms / 1000.0,
                    b.max_ms / 1000.0
                );
                let _ = writeln!(
                    out,
                    "  {:<40} {:>5} {:>8.2}% {:>8.2}% {:>8.2}% {:>8.2}%",
                    "compose time / build time",
                    r.runs,
                    r.p50_ms * 100.0,
                    r.p99_ms * 100.0,
                    r.mean_ms * 100.0,
                    r.max_ms * 100.0
                );
                let speedups: Vec<f64> = s
                    .scratch
                    .iter()
                    .filter(|x| x.compose_ms > 0.0)
                    .map(|x| x.ms / x.compose_ms)
                    .collect();
                if let Some(sp) = Summary::of(&speedups) {
                    let _ = writeln!(
                        out,
                        "  composing was {:.0}x faster at the median ({:.0}x to {:.0}x)",
                        sp.p50_ms, sp.min_ms, sp.max_ms
                    );
                }
            }
            _ => {
                let _ = writeln!(out, "  not measured");
            }
        }

        let misses = self.misses();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "targets met: {} of {}",
            self.targets.len() - misses.len(),
            self.targets.len()
        );
        for miss in &misses {
            let _ = writeln!(out, "  MISS {miss}");
        }
        out
    }
}

fn row(out: &mut String, name: &str, x: Option<Summary>, target: String) {
    match x {
        Some(x) => {
            let _ = writeln!(
                out,
                "  {:<40} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2}   {}",
                name, x.runs, x.p50_ms, x.p99_ms, x.mean_ms, x.max_ms, target
            );
        }
        None => {
            let _ = writeln!(out, "  {:<40} {:>5}   {:>40}", name, 0, target);
        }
    }
}

fn load_text(load: &[Load]) -> String {
    load.iter()
        .map(|l| format!("{} {:.2}", l.at, l.one))
        .collect::<Vec<_>>()
        .join(", ")
        + " (1-minute load average as each part began)"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::{
        ComposeSample, FunctionCheck, PackageSample, Probe, RollbackSample, ScratchSample,
        StorageSamples, UpdateSample,
    };
    use strata_types::api::StoreStats;

    fn stats(physical: u64, distinct: u64) -> StoreStats {
        StoreStats {
            logical_bytes: 0,
            physical_bytes: physical,
            allocated_bytes: physical,
            ratio: 0.0,
            distinct_content_bytes: distinct,
            layers: 0,
            pool_files: 0,
            dedup_saved_bytes: 0,
            images: 1,
            runtimes: 0,
            packages: 0,
        }
    }

    fn compose(name: &str, ms: f64, own: u64) -> ComposeSample {
        ComposeSample {
            runtime: name.into(),
            picks: vec!["curl@1".into(), "jq@1".into()],
            packages: vec!["curl@1".into(), "jq@1".into()],
            ms,
            server_ms: Some(ms - 1.0),
            new_set: true,
            steps_run: 0,
            layers: 7,
            size_bytes: 100 + own,
            own_bytes: own,
            merge_layer_bytes: Some(1),
        }
    }

    fn update(ms: f64, op: UpdateOp, new_set: bool) -> UpdateSample {
        UpdateSample {
            runtime: "r".into(),
            from: 1,
            to: 2,
            op,
            arg: "x@1".into(),
            packages: vec![],
            new_set,
            new_merge_layer: Some(new_set),
            ms,
            server_ms: None,
        }
    }

    fn samples() -> PackagesSamples {
        PackagesSamples {
            base: "python3@1".into(),
            base_bytes: 100,
            load: vec![],
            library: vec![PackageSample {
                package: "curl@1".into(),
                kind: "apt",
                installs: "apt curl".into(),
                requires: vec![],
                build_ms: 6000.0,
                built: true,
                layer_bytes: 1000,
                layer_entries: 10,
            }],
            compose: vec![compose("a@1", 100.0, 50), compose("b@1", 600.0, 70)],
            checks: vec![FunctionCheck {
                runtime: "a".into(),
                probes: vec![Probe::Bin("curl")],
                ok: true,
                answer: serde_json::json!({"missing": []}),
                first_invoke_ms: 50.0,
            }],
            updates: vec![
                update(80.0, UpdateOp::Add, true),
                update(120.0, UpdateOp::Remove, true),
                update(2.0, UpdateOp::Add, false),
            ],
            rollbacks: vec![RollbackSample {
                runtime: "r".into(),
                from: 2,
                target: 1,
                to: 3,
                ms: 5.0,
            }],
            scratch_selection: "all".into(),
            scratch: vec![ScratchSample {
                composed: "a@1".into(),
                runtime: "s@1".into(),
                packages: vec![],
                ms: 10_000.0,
                compose_ms: 100.0,
                layers: 9,
                size_bytes: 300,
                own_bytes: 200,
                composed_own_bytes: 50,
            }],
            storage: StorageSamples {
                before: stats(10_000, 5_000),
                after_packages: stats(11_000, 6_000),
                after_runtimes: stats(11_100, 6_050),
                after_updates: stats(11_150, 6_060),
                after_scratch: Some(stats(11_400, 6_100)),
            },
            cleanup: None,
        }
    }

    fn plan() -> PackagesPlan {
        PackagesPlan {
            runtimes: 2,
            min_packages: 2,
            max_packages: 6,
            updated: 1,
            scratch: None,
            scratch_budget_s: 2400.0,
            seed: 1,
        }
    }

    fn machine() -> Machine {
        Machine {
            cpus: 2,
            cpu_model: String::new(),
            memory_bytes: 1 << 30,
            kernel: "6.1".into(),
        }
    }

    #[test]
    fn storage_is_measured_as_growth_over_distinct_package_content() {
        let r = PackagesReport::new("d".into(), "s".into(), machine(), plan(), samples());
        let st = &r.storage;
        assert_eq!(st.package_distinct_bytes, 1_000);
        assert_eq!(st.physical_packages_bytes, 1_000);
        assert_eq!(st.physical_packages_runtimes_bytes, 1_100);
        assert!((st.physical_to_distinct - 1.1).abs() < 1e-9);
        assert_eq!(st.runtimes_own_bytes, 120);
        assert_eq!(st.runtimes_full_bytes, 320);
        assert_eq!(st.physical_updates_bytes, 50);
        assert_eq!(st.physical_scratch_bytes, Some(250));
        assert_eq!(st.merge_layers_bytes, 2);
    }

    #[test]
    fn targets_are_judged_and_rendered() {
        let r = PackagesReport::new("d".into(), "s".into(), machine(), plan(), samples());
        let pass: Vec<bool> = r.targets.iter().map(|c| c.pass).collect();
        // compose max 600 > 500; storage 1.1 <= 1.2; new-set updates p99 120 > 100; cached
        // 2 ms; rollback 5 ms; 1 of 1 function.
        assert_eq!(pass, [false, true, false, true, true, true]);
        assert_eq!(r.update_new.expect("ok").runs, 2);
        assert_eq!(r.update_cached.expect("ok").runs, 1);
        assert_eq!(r.update_groups.len(), 3);
        assert!((r.compose_to_scratch.expect("ok").p50_ms - 0.01).abs() < 1e-9);
        let text = r.render();
        assert!(text.contains("targets met: 4 of 6"), "{text}");
        assert!(
            text.contains("MISS compose per runtime (max): 600.0 ms"),
            "{text}"
        );
        assert!(text.contains("composing was 100x faster"), "{text}");
        assert!(text.contains("1.100x the distinct content"), "{text}");
        assert_eq!(r.compose_server.expect("server times").max_ms, 599.0);
        assert!(text.contains("server's own time"), "{text}");
        assert!(r.update_new_server.is_none());
        let json = serde_json::to_value(&r).expect("ok");
        assert_eq!(json["samples"]["compose"][1]["ms"], 600.0);
        assert_eq!(json["targets"][1]["unit"], "x");
    }

    #[test]
    fn nothing_measured_is_a_miss() {
        let mut s = samples();
        s.checks.clear();
        s.rollbacks.clear();
        let r = PackagesReport::new("d".into(), "s".into(), machine(), plan(), s);
        assert!(!r.targets[4].pass, "no rollback measured");
        assert!(!r.targets[5].pass, "no function checked");
        assert!(r.render().contains("nothing measured"));
    }
}
