//! `strata-bench`: measures deploy, cold and warm invocation latency of hello functions against a
//! running Strata server, prints a table with the targets next to the figures, and optionally
//! writes the raw figures as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use strata_bench::client::Strata;
use strata_bench::functions::{self, Lang, Plan};
use strata_bench::machine::{utc_now, Machine};
use strata_bench::report::{LangReport, Report};

/// Strata's functions benchmark.
#[derive(Parser, Debug)]
#[command(name = "strata-bench", version)]
struct Args {
    /// Server URL.
    #[arg(long, env = "STRATA_URL", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// API token.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: String,
    /// Fresh functions deployed and cold-invoked per language.
    #[arg(long, default_value_t = 30)]
    functions: usize,
    /// Timed sequential warm invocations (and health checks) per language.
    #[arg(long, default_value_t = 1000)]
    warm: usize,
    /// Untimed requests before the warm loops.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Languages, comma-separated: python, node.
    #[arg(long, value_delimiter = ',', default_value = "python,node")]
    lang: Vec<Lang>,
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

fn run(a: Args) -> anyhow::Result<()> {
    if a.functions == 0 || a.warm == 0 {
        anyhow::bail!("--functions and --warm must be at least 1");
    }
    let strata = Strata::new(&a.server, &a.token)?;
    strata.health()?;
    let plan = Plan {
        functions: a.functions,
        warm: a.warm,
        warmup: a.warmup,
    };
    let run_id = format!("{}", std::process::id());
    let mut languages = Vec::new();
    for lang in a.lang {
        eprintln!("==> {} ({})", lang.runtime(), lang.handler());
        let samples = functions::measure(&strata, lang, plan, &run_id)?;
        languages.push(LangReport::new(samples)?);
    }
    let report = Report {
        date: utc_now(),
        server: a.server,
        machine: Machine::read(),
        plan,
        languages,
    };
    print!("{}", report.render());
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("==> raw figures written to {}", path.display());
    }
    Ok(())
}
