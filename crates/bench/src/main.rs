//! `strata-bench`: measures a running Strata server and prints a table with the targets next to
//! the figures, optionally writing the raw figures as JSON. Scenarios: `functions` (deploy, cold
//! and warm invocation latency of hello functions), `pools` (cold starts with the generic pool
//! warm and with nothing warm, warm throughput at 8 instances, a burst of new functions), `all`
//! (both), and `packages` (environment packages: composition, storage, updates, rollbacks and
//! builds from scratch; not part of `all`: it downloads from the Debian mirror and PyPI and
//! takes tens of minutes).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde::Serialize;
use strata_bench::client::Strata;
use strata_bench::functions::{self, Lang, Plan};
use strata_bench::machine::{utc_now, Machine};
use strata_bench::packages::{self as pkgs, PackagesPlan};
use strata_bench::packages_report::PackagesReport;
use strata_bench::pools::{self, PoolsPlan};
use strata_bench::pools_report::PoolsReport;
use strata_bench::report::{LangReport, Report};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Deploy, cold and warm invocation latency per language.
    Functions,
    /// Generic pools: cold starts with the pool warm and with nothing warm, warm throughput, burst.
    Pools,
    /// Both, functions first.
    All,
    /// Environment packages: a library built once, runtimes composed from it, updates,
    /// rollbacks, the store's size, and the same runtimes built from scratch. Not in `all`.
    Packages,
}

/// Strata's benchmark.
#[derive(Parser, Debug)]
#[command(name = "strata-bench", version)]
struct Args {
    /// Server URL.
    #[arg(long, env = "STRATA_URL", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// API token.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: String,
    /// Scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// functions: fresh functions deployed and cold-invoked per language.
    #[arg(long, default_value_t = 30)]
    functions: usize,
    /// functions: timed sequential warm invocations (and health checks) per language.
    #[arg(long, default_value_t = 1000)]
    warm: usize,
    /// functions: untimed requests before the warm loops.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// functions: languages, comma-separated: python, node.
    #[arg(long, value_delimiter = ',', default_value = "python,node")]
    lang: Vec<Lang>,
    /// pools: fresh functions cold-invoked with the pool warm, and again with nothing warm.
    #[arg(long, default_value_t = 40)]
    cold_functions: usize,
    /// pools: concurrent keep-alive clients of the warm throughput loop.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// pools: timed seconds of the warm throughput loop (and of its health baseline).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// pools: untimed seconds before each throughput loop.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// pools: instances the throughput function is held at (min = max instances).
    #[arg(long, default_value_t = 8)]
    warm_instances: u32,
    /// pools: new functions invoked for the first time at once.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    /// packages: runtimes composed from the library.
    #[arg(long, default_value_t = 20)]
    runtimes: usize,
    /// packages: fewest packages asked for per runtime.
    #[arg(long, default_value_t = 2)]
    min_packages: usize,
    /// packages: most packages asked for per runtime.
    #[arg(long, default_value_t = 6)]
    max_packages: usize,
    /// packages: runtimes updated and rolled back.
    #[arg(long, default_value_t = 12)]
    updated: usize,
    /// packages: runtimes built from their whole Dockerfile without cache (default: all when
    /// the estimate fits --scratch-budget, else 5).
    #[arg(long)]
    scratch: Option<usize>,
    /// packages: seconds the builds from scratch may take by estimate.
    #[arg(long, default_value_t = 2400.0)]
    scratch_budget: f64,
    /// packages: seed of the package combinations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// packages: a shorter run: 2 builds from scratch, updates on 5 runtimes.
    #[arg(long)]
    quick: bool,
    /// packages: the server's log, read at the end for its own composition and update times.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Write the raw figures to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The JSON written with `--json`: the one scenario's report, or both under their names.
#[derive(Serialize)]
#[serde(untagged)]
enum Output {
    Functions(Report),
    Pools(Box<PoolsReport>),
    Packages(Box<PackagesReport>),
    All {
        functions: Report,
        pools: Box<PoolsReport>,
    },
}

fn run(a: Args) -> anyhow::Result<()> {
    let strata = Strata::new(&a.server, &a.token)?;
    strata.health()?;
    let run_id = format!("{}", std::process::id());
    let want_functions = matches!(a.scenario, Scenario::Functions | Scenario::All);
    let want_pools = matches!(a.scenario, Scenario::Pools | Scenario::All);
    if a.scenario == Scenario::Packages {
        return run_packages(&strata, &a, &run_id);
    }

    let mut functions_report = None;
    if want_functions {
        if a.functions == 0 || a.warm == 0 {
            anyhow::bail!("--functions and --warm must be at least 1");
        }
        let plan = Plan {
            functions: a.functions,
            warm: a.warm,
            warmup: a.warmup,
        };
        let mut languages = Vec::new();
        for lang in a.lang.iter().copied() {
            eprintln!("==> {} ({})", lang.runtime(), lang.handler());
            let samples = functions::measure(&strata, lang, plan, &run_id)?;
            languages.push(LangReport::new(samples)?);
        }
        let report = Report {
            date: utc_now(),
            server: a.server.clone(),
            machine: Machine::read(),
            plan,
            languages,
        };
        print!("{}", report.render());
        functions_report = Some(report);
    }

    let mut pools_report = None;
    if want_pools {
        let plan = PoolsPlan {
            functions: a.cold_functions,
            clients: a.clients,
            warmup_s: a.warmup_secs,
            duration_s: a.duration,
            warm_instances: a.warm_instances,
            burst: a.burst,
        };
        let date = utc_now();
        let samples = pools::measure(&strata, plan, &run_id)?;
        let report = PoolsReport::new(date, a.server.clone(), Machine::read(), plan, samples);
        if functions_report.is_some() {
            println!();
        }
        print!("{}", report.render());
        pools_report = Some(Box::new(report));
    }

    if let Some(path) = a.json {
        let out = match (functions_report, pools_report) {
            (Some(functions), Some(pools)) => Output::All { functions, pools },
            (Some(f), None) => Output::Functions(f),
            (None, Some(p)) => Output::Pools(p),
            (None, None) => anyhow::bail!("no scenario ran"),
        };
        let text = serde_json::to_string_pretty(&out)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("==> raw figures written to {}", path.display());
    }
    Ok(())
}

fn run_packages(strata: &Strata, a: &Args, run_id: &str) -> anyhow::Result<()> {
    let plan = PackagesPlan {
        runtimes: a.runtimes,
        min_packages: a.min_packages,
        max_packages: a.max_packages,
        updated: if a.quick { a.updated.min(5) } else { a.updated },
        scratch: if a.quick {
            Some(a.scratch.unwrap_or(2).min(2))
        } else {
            a.scratch
        },
        scratch_budget_s: a.scratch_budget,
        seed: a.seed,
    };
    let date = utc_now();
    let mut samples = pkgs::measure(strata, plan, run_id)?;
    if let Some(path) = &a.server_log {
        let log = std::fs::read_to_string(path)
            .with_context(|| format!("reading the server log {}", path.display()))?;
        samples.add_server_times(&log);
    }
    let report = PackagesReport::new(date, a.server.clone(), Machine::read(), plan, samples);
    print!("{}", report.render());
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&Output::Packages(Box::new(report)))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("==> raw figures written to {}", path.display());
    }
    Ok(())
}
