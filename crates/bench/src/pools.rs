//! The pools scenarios, on Python hello functions of runtime `python3`:
//!
//! 1. **Cold, generic pool warm** — the runtime's pool set to min 4 max 8; each fresh function's
//!    first invocation is timed once the pool has at least 2 ready generic instances, and told a
//!    pool hit or a pool miss by the server's `strata_cold_starts_total` counters.
//!
//!    Then, as a diagnostic without a target, the same again waiting also until no instance is
//!    starting: the cost of a pool hit when no pool refill competes with it for the CPUs.
//! 2. **Cold, nothing warm** — the pool set to min 0 max 0 and empty; every first invocation is a
//!    full start (a pool miss).
//! 3. **Warm throughput** — one function kept at 8 instances (`min_instances` = `max_instances` =
//!    8, concurrency 1) driven by concurrent keep-alive clients, next to the same loop against
//!    `GET /v1/health` (the HTTP floor).
//! 4. **Burst** — many new functions invoked for the first time at the same moment.
//!
//! Every function deployed here is removed before [`measure`] returns, and the runtime's pool is
//! left at the default bounds (min 1 max 8), whether the measurement succeeded or not.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use strata_types::api::{CreateFunctionSpec, FunctionConfig, FunctionStats, Scaling};

use crate::client::Strata;
use crate::functions::{check_result, code_tar, ms, Lang, EVENT};
use crate::machine::Load;
use crate::prom;

/// The runtime every pools scenario runs on.
pub const RUNTIME: &str = "python3";
/// The pool bounds the benchmark leaves the runtime at: the server's defaults.
pub const DEFAULT_POOL: (u32, u32) = (1, 8);
/// Pool bounds while the pool is warm (scenario 1).
pub const WARM_POOL: (u32, u32) = (4, 8);
/// Ready generic instances waited for before the pool is called warm.
pub const WARM_POOL_READY: u64 = 4;
/// Ready generic instances waited for before each first invocation of scenario 1.
pub const READY_BEFORE_INVOKE: u64 = 2;

/// How long to wait for the pool or a function's instances to reach a wanted state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// How often `/metrics` or a function's description is read while waiting.
const POLL: Duration = Duration::from_millis(20);

/// How much to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PoolsPlan {
    /// Fresh functions cold-invoked in scenarios 1 and 2 (each).
    pub functions: usize,
    /// Concurrent clients of scenario 3.
    pub clients: usize,
    /// Untimed seconds before scenario 3's timed window.
    pub warmup_s: f64,
    /// Timed seconds of scenario 3 (for the invocations and again for the health checks).
    pub duration_s: f64,
    /// Instances of scenario 3's function (its `min_instances` and `max_instances`).
    pub warm_instances: u32,
    /// New functions invoked at once in scenario 4.
    pub burst: usize,
}

/// How the server says a cold start was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A generic pool instance was taken and specialized.
    PoolHit,
    /// No pool instance was ready; an instance was started from nothing.
    PoolMiss,
    /// Neither counter moved by exactly one (the invocation failed, or the metrics disagree).
    Unknown,
}

impl Kind {
    /// The kind from the change of a function's `pool_hit` and `pool_miss` counters.
    pub fn from_deltas(hits: u64, misses: u64) -> Kind {
        match (hits, misses) {
            (1, 0) => Kind::PoolHit,
            (0, 1) => Kind::PoolMiss,
            _ => Kind::Unknown,
        }
    }
}

/// Where the server says the time of a function's only invocation went, from the function's
/// description (`stats.mean_*_ms` — the mean of one invocation is that invocation), milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerPhases {
    /// Waiting for capacity.
    pub queue_ms: f64,
    /// Taking a pool instance and specializing it: code bind mount, cgroup limits, the
    /// `Specialize` frame, and the bootstrap importing the handler.
    pub specialize_ms: f64,
    /// Starting an instance from nothing until the handler was loaded (pool misses).
    pub init_ms: f64,
    /// Event sent to result.
    pub run_ms: f64,
}

impl ServerPhases {
    fn of(s: &FunctionStats) -> ServerPhases {
        ServerPhases {
            queue_ms: s.mean_queue_ms,
            specialize_ms: s.mean_specialize_ms,
            init_ms: s.mean_init_ms,
            run_ms: s.mean_run_ms,
        }
    }
}

/// The first invocation of one fresh function (scenarios 1 and 2).
#[derive(Debug, Clone, Serialize)]
pub struct ColdSample {
    /// The function.
    pub function: String,
    /// `POST /v1/functions/{name}/invoke` until the whole answer was read, milliseconds.
    pub ms: f64,
    /// The `x-strata-cold-start` header.
    pub cold_header: Option<bool>,
    /// Pool hit or miss, from `/metrics`.
    pub kind: Kind,
    /// Ready generic instances just before the invocation.
    pub generic_before: u64,
    /// Instances starting (pool refills included) just before the invocation.
    pub starting_before: u64,
    /// The server's own phases of the invocation.
    pub server: Option<ServerPhases>,
}

/// One timed loop of scenario 3, all clients together.
#[derive(Debug, Clone, Serialize)]
pub struct LoopSamples {
    /// What each request was.
    pub request: String,
    /// Successful requests that completed inside the timed window.
    pub completed: usize,
    /// The timed window, seconds.
    pub window_s: f64,
    /// Latency of each successful request that started inside the window, milliseconds.
    pub latency_ms: Vec<f64>,
    /// Requests started inside the window that failed (any error, 429 included).
    pub errors: usize,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Successful invocations whose `x-strata-cold-start` header was not `false`.
    pub header_mismatches: usize,
}

/// Scenario 3.
#[derive(Debug, Clone, Serialize)]
pub struct WarmSamples {
    /// The function.
    pub function: String,
    /// Its instances (from its description) before the timed loops.
    pub instances_before: u64,
    /// Its instances after them.
    pub instances_after: u64,
    /// Its cold starts after the loops, as its description counts them.
    pub cold_starts: u64,
    /// The invocation loop.
    pub invoke: LoopSamples,
    /// The same loop against `GET /v1/health`.
    pub health: LoopSamples,
}

/// One first invocation of scenario 4.
#[derive(Debug, Clone, Serialize)]
pub struct BurstSample {
    /// The function.
    pub function: String,
    /// Milliseconds from the release of the barrier to the whole answer.
    pub ms: f64,
    /// Whether the invocation answered `{"hello":"bench"}`.
    pub ok: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// The `x-strata-cold-start` header.
    pub cold_header: Option<bool>,
    /// Pool hit or miss, from `/metrics`.
    pub kind: Kind,
    /// The server's own phases of the invocation.
    pub server: Option<ServerPhases>,
}

/// Scenario 4.
#[derive(Debug, Clone, Serialize)]
pub struct BurstSamples {
    /// Ready generic instances when the burst was released.
    pub generic_before: u64,
    /// From the release of the barrier to the last answer, milliseconds.
    pub wall_ms: f64,
    /// One per function.
    pub samples: Vec<BurstSample>,
}

/// Every raw figure of the pools scenarios.
#[derive(Debug, Clone, Serialize)]
pub struct PoolsSamples {
    /// Scenario 1: first invocations with the pool warm.
    pub pool_warm: Vec<ColdSample>,
    /// Scenario 1, diagnostic: the same, each once nothing was starting (no refill in flight).
    pub pool_warm_quiet: Vec<ColdSample>,
    /// Scenario 2: first invocations with nothing warm.
    pub nothing_warm: Vec<ColdSample>,
    /// Scenario 3.
    pub warm: WarmSamples,
    /// Scenario 4.
    pub burst: BurstSamples,
    /// Load averages as each scenario began, and at the end.
    pub load: Vec<Load>,
}

/// Runs the four scenarios, then removes every function deployed and leaves the pool at its
/// default bounds. `run_id` keeps the names of concurrent or leftover runs apart.
pub fn measure(strata: &Strata, plan: PoolsPlan, run_id: &str) -> anyhow::Result<PoolsSamples> {
    if plan.functions == 0 || plan.clients == 0 || plan.burst == 0 || plan.warm_instances == 0 {
        bail!("--cold-functions, --clients, --burst and the warm instances must be at least 1");
    }
    if !(plan.duration_s > 0.0 && plan.warmup_s >= 0.0) {
        bail!("--duration must be above 0 and --warmup-secs at least 0");
    }
    let mut run = Run {
        strata,
        run_id,
        created: Vec::new(),
    };
    let outcome = run.all(plan);
    let mut cleanup = run.remove_all();
    if let Err(e) = strata.set_pool(RUNTIME, DEFAULT_POOL.0, DEFAULT_POOL.1) {
        eprintln!("warning: {e:#}");
        cleanup = cleanup.and(Err(e));
    }
    let samples = outcome?;
    cleanup.context("cleaning up after the pools scenarios")?;
    Ok(samples)
}

struct Run<'a> {
    strata: &'a Strata,
    run_id: &'a str,
    /// Functions deployed and not removed yet.
    created: Vec<String>,
}

impl Run<'_> {
    fn all(&mut self, plan: PoolsPlan) -> anyhow::Result<PoolsSamples> {
        let mut load = vec![Load::read("start")];
        // A pool exists only for a runtime some function uses: this function, never invoked,
        // keeps the python3 pool alive between the scenarios' own functions.
        let anchor = self.name("anchor", 0);
        self.deploy(&anchor, Scaling::default())?;

        eprintln!("==> pools 1/4: cold start with the python3 pool warm");
        load.push(Load::read("pool warm"));
        let pool_warm = self.cold_pool_warm(plan.functions, false)?;
        self.remove_all_but(&anchor)?;
        eprintln!("==> pools 1/4 (diagnostic): the same, with no pool refill in flight");
        let pool_warm_quiet = self.cold_pool_warm(plan.functions, true)?;
        self.remove_all_but(&anchor)?;

        eprintln!("==> pools 2/4: cold start with nothing warm");
        load.push(Load::read("nothing warm"));
        let nothing_warm = self.cold_nothing_warm(plan.functions);
        // Restored before anything else can fail.
        let restored = self
            .strata
            .set_pool(RUNTIME, DEFAULT_POOL.0, DEFAULT_POOL.1);
        let nothing_warm = nothing_warm?;
        restored?;
        self.remove_all_but(&anchor)?;

        eprintln!(
            "==> pools 3/4: warm throughput, {} instances, {} clients",
            plan.warm_instances, plan.clients
        );
        load.push(Load::read("warm throughput"));
        let warm = self.warm_throughput(plan)?;
        self.remove_all_but(&anchor)?;

        eprintln!("==> pools 4/4: burst of {} new functions", plan.burst);
        load.push(Load::read("burst"));
        let burst = self.burst(plan.burst)?;
        load.push(Load::read("end"));
        Ok(PoolsSamples {
            pool_warm,
            pool_warm_quiet,
            nothing_warm,
            warm,
            burst,
            load,
        })
    }

    fn name(&self, what: &str, i: usize) -> String {
        format!("bench-pools-{}-{what}-{i}", self.run_id)
    }

    /// Deploys a Python hello function whose code names it (so no code is shared).
    fn deploy(&mut self, name: &str, scaling: Scaling) -> anyhow::Result<()> {
        let spec = CreateFunctionSpec {
            name: name.to_string(),
            config: FunctionConfig {
                runtime: RUNTIME.into(),
                handler: Lang::Python.handler().into(),
                scaling,
                ..FunctionConfig::default()
            },
        };
        self.strata
            .create_function(&spec, code_tar(Lang::Python, name)?)?;
        self.created.push(name.to_string());
        Ok(())
    }

    /// Removes every function still deployed; the first failure is returned after trying all.
    fn remove_all(&mut self) -> anyhow::Result<()> {
        self.remove_where(|_| true)
    }

    fn remove_all_but(&mut self, keep: &str) -> anyhow::Result<()> {
        self.remove_where(|n| n != keep)
    }

    fn remove_where(&mut self, go: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let mut result = Ok(());
        let mut kept = Vec::new();
        let mut removed = 0;
        for name in std::mem::take(&mut self.created) {
            if !go(&name) {
                kept.push(name);
                continue;
            }
            match self.strata.delete_function(&name) {
                Ok(()) => removed += 1,
                Err(e) => {
                    eprintln!("warning: {e:#}");
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        self.created = kept;
        if removed > 0 {
            eprintln!("    removed {removed} functions");
        }
        result
    }

    /// Polls `/metrics` until `done` holds; returns the text that satisfied it.
    fn wait_metrics(&self, what: &str, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let text = self.strata.metrics()?;
            if done(&text) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {}s waiting for {what} (generic {}, starting {})",
                    SETTLE_TIMEOUT.as_secs(),
                    prom::instances(&text, "generic"),
                    prom::instances(&text, "starting")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Times the first invocation of a function deployed just before, and reads how the server
    /// served it. `before` is the `/metrics` text read just before.
    fn first_invoke(&self, name: &str, before: &str) -> anyhow::Result<ColdSample> {
        let t = Instant::now();
        let first = self.strata.invoke(name, EVENT);
        let elapsed = ms(t);
        let first = first.with_context(|| format!("the first invocation of {name}"))?;
        check_result(name, &first.body)?;
        let after = self.strata.metrics()?;
        let delta = |kind| {
            prom::cold_starts(&after, name, kind)
                .saturating_sub(prom::cold_starts(before, name, kind))
        };
        Ok(ColdSample {
            function: name.to_string(),
            ms: elapsed,
            cold_header: first.cold,
            kind: Kind::from_deltas(delta("pool_hit"), delta("pool_miss")),
            generic_before: prom::instances(before, "generic"),
            starting_before: prom::instances(before, "starting"),
            server: self.phases(name),
        })
    }

    /// The server's phases of a function's only invocation; `None` (with a warning) when its
    /// description cannot be read.
    fn phases(&self, name: &str) -> Option<ServerPhases> {
        match self.strata.describe_function(name) {
            Ok(f) => Some(ServerPhases::of(&f.stats)),
            Err(e) => {
                eprintln!("warning: {e:#}");
                None
            }
        }
    }

    /// Scenario 1; with `quiet`, each first invocation also waits until no instance is starting.
    fn cold_pool_warm(&mut self, n: usize, quiet: bool) -> anyhow::Result<Vec<ColdSample>> {
        self.strata.set_pool(RUNTIME, WARM_POOL.0, WARM_POOL.1)?;
        self.wait_metrics(&format!("{WARM_POOL_READY} ready generic instances"), |m| {
            prom::instances(m, "generic") >= WARM_POOL_READY
        })?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let name = self.name(if quiet { "quiet" } else { "hit" }, i);
            self.deploy(&name, Scaling::default())?;
            let before = self.wait_metrics(
                &format!("{READY_BEFORE_INVOKE} ready generic instances"),
                |m| {
                    prom::instances(m, "generic") >= READY_BEFORE_INVOKE
                        && (!quiet || prom::instances(m, "starting") == 0)
                },
            )?;
            out.push(self.first_invoke(&name, &before)?);
            progress("deployed and cold-invoked", i, n);
        }
        Ok(out)
    }

    /// Scenario 2. The caller restores the pool.
    fn cold_nothing_warm(&mut self, n: usize) -> anyhow::Result<Vec<ColdSample>> {
        self.strata.set_pool(RUNTIME, 0, 0)?;
        self.wait_metrics("an empty pool", |m| {
            prom::instances(m, "generic") == 0 && prom::instances(m, "starting") == 0
        })?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let name = self.name("miss", i);
            self.deploy(&name, Scaling::default())?;
            let before = self.strata.metrics()?;
            out.push(self.first_invoke(&name, &before)?);
            progress("deployed and cold-invoked", i, n);
        }
        Ok(out)
    }

    /// Scenario 3.
    fn warm_throughput(&mut self, plan: PoolsPlan) -> anyhow::Result<WarmSamples> {
        let name = self.name("warm", 0);
        let n = plan.warm_instances;
        self.deploy(
            &name,
            Scaling {
                min_instances: n,
                max_instances: n,
                concurrency: 1,
                idle_timeout_ms: None,
                max_queue: 100,
            },
        )?;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let instances_before = loop {
            let have = self.strata.describe_function(&name)?.stats.instances;
            let starting = prom::instances(&self.strata.metrics()?, "starting");
            if have >= u64::from(n) && starting == 0 {
                break have;
            }
            if Instant::now() >= deadline {
                bail!("timed out waiting for {name} to run {n} instances (it has {have}, {starting} starting)");
            }
            std::thread::sleep(POLL);
        };
        eprintln!("    {name} runs {instances_before} instances");

        let warmup = Duration::from_secs_f64(plan.warmup_s);
        let window = Duration::from_secs_f64(plan.duration_s);
        let invoke = drive(
            self.strata,
            plan.clients,
            warmup,
            window,
            &format!("POST /v1/functions/{name}/invoke"),
            |c| {
                let r = c.invoke(&name, EVENT)?;
                check_result(&name, &r.body)?;
                Ok(r.cold == Some(false))
            },
        )?;
        eprintln!(
            "    {} invocations in {:.1}s, {} errors",
            invoke.completed, invoke.window_s, invoke.errors
        );
        let health = drive(
            self.strata,
            plan.clients,
            warmup,
            window,
            "GET /v1/health",
            |c| c.health().map(|()| true),
        )?;
        eprintln!(
            "    {} health checks in {:.1}s",
            health.completed, health.window_s
        );
        let after = self.strata.describe_function(&name)?;
        Ok(WarmSamples {
            function: name,
            instances_before,
            instances_after: after.stats.instances,
            cold_starts: after.stats.cold_starts,
            invoke,
            health,
        })
    }

    /// Scenario 4.
    fn burst(&mut self, n: usize) -> anyhow::Result<BurstSamples> {
        // The pool at rest: its minimum ready, nothing starting.
        let min = u64::from(DEFAULT_POOL.0);
        self.wait_metrics("the pool at rest", |m| {
            prom::instances(m, "generic") >= min && prom::instances(m, "starting") == 0
        })?;
        let names: Vec<String> = (0..n).map(|i| self.name("burst", i)).collect();
        for (i, name) in names.iter().enumerate() {
            self.deploy(name, Scaling::default())?;
            progress("deployed", i, n);
        }
        let before = self.strata.metrics()?;
        let clients = names
            .iter()
            .map(|_| self.strata.fresh())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let barrier = Barrier::new(n + 1);
        let (released, mut samples) = std::thread::scope(|s| {
            let handles: Vec<_> = names
                .iter()
                .zip(&clients)
                .map(|(name, c)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let t = Instant::now();
                        let r = c
                            .invoke(name, EVENT)
                            .and_then(|r| check_result(name, &r.body).map(|()| r));
                        let elapsed = ms(t);
                        let (ok, error, cold_header) = match r {
                            Ok(r) => (true, None, r.cold),
                            Err(e) => (false, Some(format!("{e:#}")), None),
                        };
                        (
                            t,
                            BurstSample {
                                function: name.clone(),
                                ms: elapsed,
                                ok,
                                error,
                                cold_header,
                                kind: Kind::Unknown,
                                server: None,
                            },
                        )
                    })
                })
                .collect();
            barrier.wait();
            let released = Instant::now();
            let samples: Vec<(Instant, BurstSample)> = handles
                .into_iter()
                .map(|h| h.join().expect("a burst thread panicked"))
                .collect();
            (released, samples)
        });
        let after = self.strata.metrics()?;
        let wall_ms = samples
            .iter()
            .map(|(t, s)| (t.saturating_duration_since(released).as_secs_f64() * 1000.0) + s.ms)
            .fold(0.0, f64::max);
        for (_, s) in &mut samples {
            let delta = |kind| {
                prom::cold_starts(&after, &s.function, kind).saturating_sub(prom::cold_starts(
                    &before,
                    &s.function,
                    kind,
                ))
            };
            s.kind = Kind::from_deltas(delta("pool_hit"), delta("pool_miss"));
            if s.ok {
                s.server = self.phases(&s.function);
            }
        }
        let samples: Vec<BurstSample> = samples.into_iter().map(|(_, s)| s).collect();
        eprintln!(
            "    {} of {n} first invocations succeeded",
            samples.iter().filter(|s| s.ok).count()
        );
        Ok(BurstSamples {
            generic_before: prom::instances(&before, "generic"),
            wall_ms,
            samples,
        })
    }
}

fn progress(what: &str, i: usize, n: usize) {
    if (i + 1).is_multiple_of(10) || i + 1 == n {
        eprintln!("    {what} {}/{n}", i + 1);
    }
}

/// Runs `request` in a loop on `clients` threads, each with its own keep-alive client, for
/// `warmup` untimed and then `window` timed. `request` answers whether the response was as
/// expected (for invocations: a warm one).
fn drive(
    strata: &Strata,
    clients: usize,
    warmup: Duration,
    window: Duration,
    what: &str,
    request: impl Fn(&Strata) -> anyhow::Result<bool> + Sync,
) -> anyhow::Result<LoopSamples> {
    let conns = (0..clients)
        .map(|_| strata.fresh())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let barrier = Barrier::new(clients);
    #[derive(Default)]
    struct Tally {
        completed: usize,
        latency_ms: Vec<f64>,
        errors: usize,
        first_error: Option<String>,
        mismatches: usize,
    }
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter()
            .map(|c| {
                let barrier = &barrier;
                let request = &request;
                s.spawn(move || {
                    let mut t = Tally::default();
                    barrier.wait();
                    let w0 = Instant::now() + warmup;
                    let w1 = w0 + window;
                    loop {
                        let start = Instant::now();
                        if start >= w1 {
                            break;
                        }
                        let r = request(c);
                        let end = Instant::now();
                        let timed = start >= w0;
                        match r {
                            Ok(expected) => {
                                if end >= w0 && end <= w1 {
                                    t.completed += 1;
                                }
                                if timed {
                                    t.latency_ms.push((end - start).as_secs_f64() * 1000.0);
                                    if !expected {
                                        t.mismatches += 1;
                                    }
                                }
                            }
                            Err(e) => {
                                if timed {
                                    t.errors += 1;
                                    if t.first_error.is_none() {
                                        t.first_error = Some(format!("{e:#}"));
                                    }
                                }
                            }
                        }
                    }
                    t
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });
    let mut out = LoopSamples {
        request: what.to_string(),
        completed: 0,
        window_s: window.as_secs_f64(),
        latency_ms: Vec::new(),
        errors: 0,
        first_error: None,
        header_mismatches: 0,
    };
    for t in tallies {
        out.completed += t.completed;
        out.latency_ms.extend(t.latency_ms);
        out.errors += t.errors;
        out.header_mismatches += t.mismatches;
        if out.first_error.is_none() {
            out.first_error = t.first_error;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_counter_deltas() {
        assert_eq!(Kind::from_deltas(1, 0), Kind::PoolHit);
        assert_eq!(Kind::from_deltas(0, 1), Kind::PoolMiss);
        assert_eq!(Kind::from_deltas(0, 0), Kind::Unknown);
        assert_eq!(Kind::from_deltas(1, 1), Kind::Unknown);
    }

    #[test]
    fn kinds_serialize_as_the_metric_labels() {
        assert_eq!(
            serde_json::to_value(Kind::PoolHit).expect("json"),
            "pool_hit"
        );
        assert_eq!(
            serde_json::to_value(Kind::PoolMiss).expect("json"),
            "pool_miss"
        );
    }
}
