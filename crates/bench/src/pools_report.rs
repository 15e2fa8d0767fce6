//! The pools scenarios' report: summaries, the targets next to them, a table for people and the
//! raw figures as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::{Load, Machine};
use crate::pools::{
    ColdSample, Kind, LoopSamples, PoolsPlan, PoolsSamples, ServerPhases, WARM_POOL,
};
use crate::stats::Summary;

/// Pool-hit cold start target, p50.
pub const HIT_P50_MS: f64 = 5.0;
/// Pool-hit cold start target, p99.
pub const HIT_P99_MS: f64 = 20.0;
/// Full cold start (nothing warm) target, p50.
pub const MISS_P50_MS: f64 = 60.0;
/// Warm throughput target with the function at its instances, requests per second.
pub const WARM_REQ_PER_S: f64 = 3000.0;

/// One target, and whether the measured figure meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is measured.
    pub target: String,
    /// `<=` or `>=`.
    pub op: &'static str,
    /// The limit.
    pub limit: f64,
    /// Its unit: `ms`, `req/s`, `of N`.
    pub unit: String,
    /// The measured figure; `None` when there was nothing to measure (a MISS).
    pub measured: Option<f64>,
    /// Whether the measured figure meets the limit.
    pub pass: bool,
}

impl Check {
    fn at_most(target: &str, limit: f64, unit: &str, measured: Option<f64>) -> Check {
        Check {
            target: target.into(),
            op: "<=",
            limit,
            unit: unit.into(),
            measured,
            pass: measured.is_some_and(|m| m <= limit),
        }
    }

    fn at_least(target: &str, limit: f64, unit: &str, measured: Option<f64>) -> Check {
        Check {
            target: target.into(),
            op: ">=",
            limit,
            unit: unit.into(),
            measured,
            pass: measured.is_some_and(|m| m >= limit),
        }
    }

    fn limit_text(&self) -> String {
        if self.unit.starts_with("of") {
            format!("all {}", self.limit)
        } else {
            format!("{} {} {}", self.op, self.limit, self.unit)
        }
    }

    fn verdict(&self) -> String {
        format!(
            "{} {}",
            self.limit_text(),
            if self.pass { "PASS" } else { "MISS" }
        )
    }

    fn measured_text(&self) -> String {
        match self.measured {
            Some(m) if self.unit == "ms" => format!("{m:.2} ms"),
            Some(m) if self.unit == "req/s" => format!("{m:.0} req/s"),
            Some(m) => format!("{m} {}", self.unit),
            None => "nothing measured".into(),
        }
    }
}

/// The server's phases of first invocations, each over the invocations it applies to.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Waiting for capacity, every invocation.
    pub queue: Option<Summary>,
    /// Specializing a pool instance, pool hits.
    pub specialize: Option<Summary>,
    /// Starting an instance from nothing, pool misses.
    pub init: Option<Summary>,
    /// Running the handler, every invocation.
    pub run: Option<Summary>,
}

impl PhaseReport {
    fn new<'a>(of: impl Iterator<Item = (Kind, Option<&'a ServerPhases>)> + Clone) -> PhaseReport {
        let pick = |k: Option<Kind>, f: fn(&ServerPhases) -> f64| {
            let v: Vec<f64> = of
                .clone()
                .filter(|(kind, _)| k.is_none_or(|k| k == *kind))
                .filter_map(|(_, p)| p.map(f))
                .collect();
            Summary::of(&v)
        };
        PhaseReport {
            queue: pick(None, |p| p.queue_ms),
            specialize: pick(Some(Kind::PoolHit), |p| p.specialize_ms),
            init: pick(Some(Kind::PoolMiss), |p| p.init_ms),
            run: pick(None, |p| p.run_ms),
        }
    }
}

/// First invocations of fresh functions (scenarios 1 and 2), by how they were served.
#[derive(Debug, Clone, Serialize)]
pub struct ColdReport {
    /// Every first invocation.
    pub all: Option<Summary>,
    /// Those the server served from the pool.
    pub pool_hits: Option<Summary>,
    /// Those it served with a full start.
    pub pool_misses: Option<Summary>,
    /// Pool hits that ran with no instance starting anywhere (no pool refill competing).
    pub pool_hits_no_refill: Option<Summary>,
    /// Number of pool hits.
    pub hits: usize,
    /// Number of pool misses.
    pub misses: usize,
    /// Neither.
    pub unknown: usize,
    /// First invocations whose `x-strata-cold-start` header was not `true`.
    pub header_mismatches: usize,
    /// The server's phases.
    pub server: PhaseReport,
}

impl ColdReport {
    fn new(s: &[ColdSample]) -> ColdReport {
        let pick = |f: &dyn Fn(&ColdSample) -> bool| {
            s.iter().filter(|x| f(x)).map(|x| x.ms).collect::<Vec<_>>()
        };
        let count = |k: Kind| s.iter().filter(|x| x.kind == k).count();
        ColdReport {
            all: Summary::of(&pick(&|_| true)),
            pool_hits: Summary::of(&pick(&|x| x.kind == Kind::PoolHit)),
            pool_misses: Summary::of(&pick(&|x| x.kind == Kind::PoolMiss)),
            pool_hits_no_refill: Summary::of(&pick(&|x| {
                x.kind == Kind::PoolHit && x.starting_before == 0
            })),
            hits: count(Kind::PoolHit),
            misses: count(Kind::PoolMiss),
            unknown: count(Kind::Unknown),
            header_mismatches: s.iter().filter(|x| x.cold_header != Some(true)).count(),
            server: PhaseReport::new(s.iter().map(|x| (x.kind, x.server.as_ref()))),
        }
    }
}

/// One loop of scenario 3.
#[derive(Debug, Clone, Serialize)]
pub struct LoopReport {
    /// Successful requests per second in the timed window.
    pub req_per_s: f64,
    /// Their latency.
    pub latency: Option<Summary>,
    /// Failed requests.
    pub errors: usize,
}

impl LoopReport {
    fn new(s: &LoopSamples) -> LoopReport {
        LoopReport {
            req_per_s: if s.window_s > 0.0 {
                s.completed as f64 / s.window_s
            } else {
                0.0
            },
            latency: Summary::of(&s.latency_ms),
            errors: s.errors,
        }
    }
}

/// Scenario 3.
#[derive(Debug, Clone, Serialize)]
pub struct WarmReport {
    /// The function's invocations.
    pub invoke: LoopReport,
    /// `GET /v1/health`, the HTTP floor.
    pub health: LoopReport,
    /// Health requests per second over invocations per second.
    pub health_to_invoke_ratio: f64,
}

/// Scenario 4.
#[derive(Debug, Clone, Serialize)]
pub struct BurstReport {
    /// Functions invoked at once.
    pub functions: usize,
    /// First invocations that answered correctly.
    pub succeeded: usize,
    /// Latency of the successful ones.
    pub latency: Option<Summary>,
    /// Pool hits.
    pub hits: usize,
    /// Pool misses.
    pub misses: usize,
    /// Neither (failed invocations, mostly).
    pub unknown: usize,
    /// Successful first invocations whose `x-strata-cold-start` header was not `true`.
    pub header_mismatches: usize,
    /// The server's phases of the successful ones.
    pub server: PhaseReport,
}

/// The whole pools report.
#[derive(Debug, Clone, Serialize)]
pub struct PoolsReport {
    /// When the benchmark ran.
    pub date: String,
    /// The server measured.
    pub server: String,
    /// Where it ran.
    pub machine: Machine,
    /// How much was measured.
    pub plan: PoolsPlan,
    /// Scenario 1.
    pub pool_warm: ColdReport,
    /// Scenario 1 with no pool refill in flight (diagnostic, no target).
    pub pool_warm_quiet: ColdReport,
    /// Scenario 2.
    pub nothing_warm: ColdReport,
    /// Scenario 3.
    pub warm: WarmReport,
    /// Scenario 4.
    pub burst: BurstReport,
    /// The targets.
    pub targets: Vec<Check>,
    /// Every sample.
    pub samples: PoolsSamples,
}

impl PoolsReport {
    /// Summarizes the samples and judges the targets.
    pub fn new(
        date: String,
        server: String,
        machine: Machine,
        plan: PoolsPlan,
        samples: PoolsSamples,
    ) -> PoolsReport {
        let pool_warm = ColdReport::new(&samples.pool_warm);
        let pool_warm_quiet = ColdReport::new(&samples.pool_warm_quiet);
        let nothing_warm = ColdReport::new(&samples.nothing_warm);
        let invoke = LoopReport::new(&samples.warm.invoke);
        let health = LoopReport::new(&samples.warm.health);
        let warm = WarmReport {
            health_to_invoke_ratio: if invoke.req_per_s > 0.0 {
                health.req_per_s / invoke.req_per_s
            } else {
                0.0
            },
            invoke,
            health,
        };
        let b = &samples.burst.samples;
        let ok: Vec<f64> = b.iter().filter(|s| s.ok).map(|s| s.ms).collect();
        let burst = BurstReport {
            functions: b.len(),
            succeeded: ok.len(),
            latency: Summary::of(&ok),
            hits: b.iter().filter(|s| s.kind == Kind::PoolHit).count(),
            misses: b.iter().filter(|s| s.kind == Kind::PoolMiss).count(),
            unknown: b.iter().filter(|s| s.kind == Kind::Unknown).count(),
            header_mismatches: b
                .iter()
                .filter(|s| s.ok && s.cold_header != Some(true))
                .count(),
            server: PhaseReport::new(b.iter().map(|s| (s.kind, s.server.as_ref()))),
        };
        let n_cold = samples.nothing_warm.len();
        let targets = vec![
            Check::at_most(
                "cold, pool warm: pool-hit p50",
                HIT_P50_MS,
                "ms",
                pool_warm.pool_hits.map(|s| s.p50_ms),
            ),
            Check::at_most(
                "cold, pool warm: pool-hit p99",
                HIT_P99_MS,
                "ms",
                pool_warm.pool_hits.map(|s| s.p99_ms),
            ),
            Check::at_most(
                "cold, nothing warm: p50",
                MISS_P50_MS,
                "ms",
                nothing_warm.all.map(|s| s.p50_ms),
            ),
            Check::at_least(
                "cold, nothing warm: pool misses",
                n_cold as f64,
                &format!("of {n_cold}"),
                Some(nothing_warm.misses as f64),
            ),
            Check::at_least(
                "warm throughput",
                WARM_REQ_PER_S,
                "req/s",
                Some(warm.invoke.req_per_s),
            ),
            Check::at_least(
                "burst: first invocations succeeded",
                burst.functions as f64,
                &format!("of {}", burst.functions),
                Some(burst.succeeded as f64),
            ),
        ];
        PoolsReport {
            date,
            server,
            machine,
            plan,
            pool_warm,
            pool_warm_quiet,
            nothing_warm,
            warm,
            burst,
            targets,
            samples,
        }
    }

    /// The targets missed, as `target: measured (limit)`.
    pub fn misses(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|c| !c.pass)
            .map(|c| {
                format!(
                    "{}: {} (target {})",
                    c.target,
                    c.measured_text(),
                    c.limit_text()
                )
            })
            .collect()
    }

    /// The report as a table for people.
    pub fn render(&self) -> String {
        let m = &self.machine;
        let p = &self.plan;
        let s = &self.samples;
        let mut out = String::new();
        let _ = writeln!(out, "Strata pools benchmark");
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
            "plan:     runtime python3, handler app.handler; {} fresh functions per cold path; {} clients x {} s after {} s warm-up on {} instances; burst of {} new functions",
            p.functions, p.clients, p.duration_s, p.warmup_s, p.warm_instances, p.burst
        );

        let header = |out: &mut String| {
            let _ = writeln!(
                out,
                "  {:<34} {:>5} {:>9} {:>9} {:>9} {:>9}   target",
                "measurement", "runs", "p50 ms", "p99 ms", "mean ms", "max ms"
            );
        };
        let t = |i: usize| self.targets.get(i).map(Check::verdict).unwrap_or_default();

        let c = &self.pool_warm;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "1. cold start, generic pool warm (pool min {} max {}; >= 2 ready generic instances before each first invoke)",
            WARM_POOL.0, WARM_POOL.1
        );
        header(&mut out);
        row(
            &mut out,
            "pool-hit first invokes",
            c.pool_hits,
            format!("{}; {}", t(0), t(1)),
        );
        row(
            &mut out,
            "  of which no refill in flight",
            c.pool_hits_no_refill,
            String::new(),
        );
        row(
            &mut out,
            "pool-miss first invokes",
            c.pool_misses,
            String::new(),
        );
        row(&mut out, "all first invokes", c.all, String::new());
        phase_rows(&mut out, &c.server);
        let _ = writeln!(
            out,
            "  pool hits {} / misses {} / unknown {} of {}; x-strata-cold-start not 'true': {}",
            c.hits,
            c.misses,
            c.unknown,
            s.pool_warm.len(),
            c.header_mismatches
        );

        let c = &self.pool_warm_quiet;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "1b. the same, each first invoke once no instance was starting (no pool refill competing; diagnostic, no target)"
        );
        header(&mut out);
        row(
            &mut out,
            "pool-hit first invokes",
            c.pool_hits,
            String::new(),
        );
        row(&mut out, "all first invokes", c.all, String::new());
        phase_rows(&mut out, &c.server);
        let _ = writeln!(
            out,
            "  pool hits {} / misses {} / unknown {} of {}; x-strata-cold-start not 'true': {}",
            c.hits,
            c.misses,
            c.unknown,
            s.pool_warm_quiet.len(),
            c.header_mismatches
        );

        let c = &self.nothing_warm;
        let _ = writeln!(out);
        let _ = writeln!(out, "2. cold start, nothing warm (pool min 0 max 0, empty)");
        header(&mut out);
        row(&mut out, "all first invokes", c.all, t(2));
        row(
            &mut out,
            "pool-miss first invokes",
            c.pool_misses,
            String::new(),
        );
        phase_rows(&mut out, &c.server);
        let _ = writeln!(
            out,
            "  pool misses {} of {} ({}); hits {}, unknown {}; x-strata-cold-start not 'true': {}",
            c.misses,
            s.nothing_warm.len(),
            t(3),
            c.hits,
            c.unknown,
            c.header_mismatches
        );

        let w = &self.warm;
        let ws = &s.warm;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "3. warm throughput ({} instances, concurrency 1; {} keep-alive clients, {} s after {} s warm-up)",
            ws.instances_before, p.clients, p.duration_s, p.warmup_s
        );
        let _ = writeln!(
            out,
            "  {:<34} {:>8} {:>9} {:>9} {:>9} {:>7}   target",
            "loop", "requests", "req/s", "p50 ms", "p99 ms", "errors"
        );
        let lrow =
            |out: &mut String, name: &str, l: &LoopReport, ls: &LoopSamples, target: String| {
                let (p50, p99) = l.latency.map_or((0.0, 0.0), |x| (x.p50_ms, x.p99_ms));
                let _ = writeln!(
                    out,
                    "  {:<34} {:>8} {:>9.0} {:>9.2} {:>9.2} {:>7}   {}",
                    name, ls.completed, l.req_per_s, p50, p99, l.errors, target
                );
            };
        lrow(
            &mut out,
            "invoke (POST .../invoke)",
            &w.invoke,
            &ws.invoke,
            t(4),
        );
        lrow(
            &mut out,
            "baseline GET /v1/health",
            &w.health,
            &ws.health,
            String::new(),
        );
        let _ = writeln!(
            out,
            "  health/invoke = {:.2}x; instances after {}; x-strata-cold-start not 'false': {}",
            w.health_to_invoke_ratio, ws.instances_after, ws.invoke.header_mismatches
        );
        if let Some(e) = ws
            .invoke
            .first_error
            .as_ref()
            .or(ws.health.first_error.as_ref())
        {
            let _ = writeln!(out, "  first error: {e}");
        }

        let b = &self.burst;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "4. burst: {} new functions invoked for the first time at once ({} ready generic instances at release)",
            b.functions, s.burst.generic_before
        );
        header(&mut out);
        row(&mut out, "successful first invokes", b.latency, t(5));
        phase_rows(&mut out, &b.server);
        let _ = writeln!(
            out,
            "  succeeded {} of {}; pool hits {} / misses {} / unknown {}; all answered after {:.0} ms; x-strata-cold-start not 'true': {}",
            b.succeeded,
            b.functions,
            b.hits,
            b.misses,
            b.unknown,
            s.burst.wall_ms,
            b.header_mismatches
        );
        if let Some(e) = s.burst.samples.iter().find_map(|x| x.error.as_ref()) {
            let _ = writeln!(out, "  first error: {e}");
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

/// One row of a latency table.
fn row(out: &mut String, name: &str, x: Option<Summary>, target: String) {
    match x {
        Some(x) => {
            let _ = writeln!(
                out,
                "  {:<34} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2}   {}",
                name, x.runs, x.p50_ms, x.p99_ms, x.mean_ms, x.max_ms, target
            );
        }
        None => {
            let _ = writeln!(out, "  {:<34} {:>5}   {:>40}", name, 0, target);
        }
    }
}

/// The server's phases under a table, for the phases that were measured.
fn phase_rows(out: &mut String, p: &PhaseReport) {
    for (name, x) in [
        ("  server: queue", p.queue),
        ("  server: specialize (pool hits)", p.specialize),
        ("  server: init (pool misses)", p.init),
        ("  server: run (handler)", p.run),
    ] {
        if x.is_some() {
            row(out, name, x, String::new());
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
    use crate::pools::{BurstSample, BurstSamples, WarmSamples};

    fn cold(ms: f64, kind: Kind, starting: u64) -> ColdSample {
        ColdSample {
            function: "f".into(),
            ms,
            cold_header: Some(true),
            kind,
            generic_before: 2,
            starting_before: starting,
            server: Some(ServerPhases {
                queue_ms: 0.0,
                specialize_ms: if kind == Kind::PoolHit { ms / 2.0 } else { 0.0 },
                init_ms: if kind == Kind::PoolMiss {
                    ms / 2.0
                } else {
                    0.0
                },
                run_ms: 1.0,
            }),
        }
    }

    fn looped(completed: usize, latency: f64, errors: usize) -> LoopSamples {
        LoopSamples {
            request: "x".into(),
            completed,
            window_s: 5.0,
            latency_ms: vec![latency; completed],
            errors,
            first_error: None,
            header_mismatches: 0,
        }
    }

    fn burst(ok: usize, failed: usize) -> BurstSamples {
        let sample = |ok: bool, kind| BurstSample {
            function: "b".into(),
            ms: 100.0,
            ok,
            error: (!ok).then(|| "HTTP 429".to_string()),
            cold_header: ok.then_some(true),
            kind,
            server: None,
        };
        let mut samples: Vec<BurstSample> = (0..ok).map(|_| sample(true, Kind::PoolMiss)).collect();
        samples.extend((0..failed).map(|_| sample(false, Kind::Unknown)));
        BurstSamples {
            generic_before: 1,
            wall_ms: 900.0,
            samples,
        }
    }

    fn report(hit_ms: f64, miss_ms: f64, invocations: usize, failed: usize) -> PoolsReport {
        let samples = PoolsSamples {
            pool_warm: vec![
                cold(hit_ms, Kind::PoolHit, 0),
                cold(hit_ms, Kind::PoolHit, 1),
                cold(200.0, Kind::PoolMiss, 0),
            ],
            pool_warm_quiet: vec![cold(hit_ms, Kind::PoolHit, 0); 2],
            nothing_warm: vec![cold(miss_ms, Kind::PoolMiss, 0); 4],
            warm: WarmSamples {
                function: "w".into(),
                instances_before: 8,
                instances_after: 8,
                cold_starts: 8,
                invoke: looped(invocations, 2.0, 0),
                health: looped(50_000, 0.2, 0),
            },
            burst: burst(50 - failed, failed),
            load: vec![Load {
                at: "start".into(),
                one: 2.5,
                five: 2.0,
                fifteen: 1.0,
            }],
        };
        PoolsReport::new(
            "2000-01-01 00:00:00 UTC".into(),
            "http://127.0.0.1:1".into(),
            Machine {
                cpus: 2,
                cpu_model: String::new(),
                memory_bytes: 1 << 30,
                kernel: "6.1".into(),
            },
            PoolsPlan {
                functions: 4,
                clients: 16,
                warmup_s: 1.0,
                duration_s: 5.0,
                warm_instances: 8,
                burst: 50,
            },
            samples,
        )
    }

    #[test]
    fn all_targets_met() {
        let r = report(3.0, 50.0, 20_000, 0);
        assert_eq!(r.pool_warm.hits, 2);
        assert_eq!(r.pool_warm.misses, 1);
        assert_eq!(r.pool_warm.pool_hits_no_refill.map(|s| s.runs), Some(1));
        assert_eq!(r.warm.invoke.req_per_s, 4000.0);
        assert_eq!(r.warm.health_to_invoke_ratio, 2.5);
        assert!(r.misses().is_empty(), "{:?}", r.misses());
        let text = r.render();
        assert!(text.contains("targets met: 6 of 6"), "{text}");
        assert!(text.contains("start 2.50"), "{text}");
        assert_eq!(r.pool_warm.server.specialize.map(|s| s.p50_ms), Some(1.5));
        assert_eq!(r.nothing_warm.server.init.map(|s| s.runs), Some(4));
        assert!(text.contains("server: specialize (pool hits)"), "{text}");
        assert!(text.contains("1b. the same"), "{text}");
        assert_eq!(r.pool_warm_quiet.hits, 2);
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["samples"]["pool_warm"][0]["kind"], "pool_hit");
        assert_eq!(json["targets"][4]["target"], "warm throughput");
    }

    #[test]
    fn misses_are_named_with_the_measured_figure() {
        let r = report(8.0, 90.0, 10_000, 3);
        let pass: Vec<bool> = r.targets.iter().map(|c| c.pass).collect();
        assert_eq!(pass, [false, true, false, true, false, false]);
        let misses = r.misses();
        assert!(misses[0].contains("8.00 ms"), "{misses:?}");
        assert!(misses[2].contains("2000 req/s"), "{misses:?}");
        assert!(misses[3].contains("47 of 50"), "{misses:?}");
        let text = r.render();
        assert!(text.contains("targets met: 2 of 6"), "{text}");
        assert!(text.contains("first error: HTTP 429"), "{text}");
    }

    #[test]
    fn no_pool_hits_is_a_miss() {
        let mut r = report(3.0, 50.0, 20_000, 0);
        r.samples.pool_warm = vec![cold(100.0, Kind::PoolMiss, 0)];
        let r = PoolsReport::new(r.date, r.server, r.machine, r.plan, r.samples);
        assert!(!r.targets[0].pass && r.targets[0].measured.is_none());
        assert!(
            r.misses()[0].contains("nothing measured"),
            "{:?}",
            r.misses()
        );
    }
}
