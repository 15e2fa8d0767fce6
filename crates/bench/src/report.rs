//! The benchmark's report: summaries, the targets next to them, a table for people and the raw
//! figures as JSON.

use std::fmt::Write as _;

use anyhow::Context;
use serde::Serialize;

use crate::functions::{Plan, Samples};
use crate::machine::Machine;
use crate::stats::Summary;

/// Deploy latency target: `POST /v1/functions` p50.
pub const DEPLOY_P50_MS: f64 = 50.0;
/// Warm platform overhead target: warm invoke p50 minus the health baseline p50.
pub const OVERHEAD_P50_MS: f64 = 1.0;
/// Cold invocation target: the first invocation of a fresh function, p50.
pub const COLD_P50_MS: f64 = 150.0;

/// One target, and whether the measured figure meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What is measured, e.g. `deploy p50`.
    pub target: &'static str,
    /// The limit, milliseconds.
    pub limit_ms: f64,
    /// The measured figure, milliseconds.
    pub measured_ms: f64,
    /// Whether measured ≤ limit.
    pub pass: bool,
}

impl Verdict {
    fn new(target: &'static str, limit_ms: f64, measured_ms: f64) -> Verdict {
        Verdict {
            target,
            limit_ms,
            measured_ms,
            pass: measured_ms <= limit_ms,
        }
    }
}

/// The figures of one language.
#[derive(Debug, Clone, Serialize)]
pub struct LangReport {
    /// `POST /v1/functions`.
    pub deploy: Summary,
    /// First invocation of a fresh function.
    pub cold: Summary,
    /// Sequential invocations of a warm function.
    pub warm: Summary,
    /// Sequential `GET /v1/health` on the same client.
    pub baseline: Summary,
    /// Warm p50 − baseline p50.
    pub warm_overhead_p50_ms: f64,
    /// Warm p50 / baseline p50.
    pub warm_to_baseline_ratio: f64,
    /// Warm invocations per second of the sequential loop.
    pub warm_throughput_per_s: f64,
    /// Health checks per second of the sequential loop.
    pub baseline_throughput_per_s: f64,
    /// The targets.
    pub targets: Vec<Verdict>,
    /// Every sample.
    pub samples: Samples,
}

impl LangReport {
    /// Summarizes one language's samples.
    pub fn new(samples: Samples) -> anyhow::Result<LangReport> {
        let summary = |v: &[f64], what: &str| {
            Summary::of(v).with_context(|| format!("no {what} samples for {}", samples.runtime))
        };
        let deploy = summary(&samples.deploy_ms, "deploy")?;
        let cold = summary(&samples.cold_ms, "cold invocation")?;
        let warm = summary(&samples.warm_ms, "warm invocation")?;
        let baseline = summary(&samples.baseline_ms, "health")?;
        let overhead = warm.p50_ms - baseline.p50_ms;
        let per_s = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        Ok(LangReport {
            deploy,
            cold,
            warm,
            baseline,
            warm_overhead_p50_ms: overhead,
            warm_to_baseline_ratio: warm.p50_ms / baseline.p50_ms,
            warm_throughput_per_s: per_s(samples.warm_ms.len(), samples.warm_loop_s),
            baseline_throughput_per_s: per_s(samples.baseline_ms.len(), samples.baseline_loop_s),
            targets: vec![
                Verdict::new("deploy p50", DEPLOY_P50_MS, deploy.p50_ms),
                Verdict::new("warm platform overhead p50", OVERHEAD_P50_MS, overhead),
                Verdict::new("cold invocation p50", COLD_P50_MS, cold.p50_ms),
            ],
            samples,
        })
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the benchmark ran.
    pub date: String,
    /// The server measured.
    pub server: String,
    /// Where it ran.
    pub machine: Machine,
    /// How much was measured.
    pub plan: Plan,
    /// One entry per language.
    pub languages: Vec<LangReport>,
}

impl Report {
    /// The targets missed, as `runtime: target (measured > limit)`.
    pub fn misses(&self) -> Vec<String> {
        self.languages
            .iter()
            .flat_map(|l| {
                l.targets.iter().filter(|v| !v.pass).map(move |v| {
                    format!(
                        "{}: {} {:.2} ms > {} ms",
                        l.samples.runtime, v.target, v.measured_ms, v.limit_ms
                    )
                })
            })
            .collect()
    }

    /// The report as a table for people.
    pub fn render(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "Strata functions benchmark");
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
        let _ = writeln!(out, "server:   {}", self.server);
        let _ = writeln!(
            out,
            "plan:     {} fresh functions per language; {} sequential warm invocations and {} health checks after {} warm-up requests",
            self.plan.functions, self.plan.warm, self.plan.warm, self.plan.warmup
        );
        for l in &self.languages {
            render_language(&mut out, l);
        }
        let total: usize = self.languages.iter().map(|l| l.targets.len()).sum();
        let misses = self.misses();
        let _ = writeln!(out);
        let _ = writeln!(out, "targets met: {} of {total}", total - misses.len());
        for miss in &misses {
            let _ = writeln!(out, "  MISS {miss}");
        }
        out
    }
}

fn render_language(out: &mut String, l: &LangReport) {
    let s = &l.samples;
    let verdict = |i: usize| {
        l.targets
            .get(i)
            .map(|v| {
                format!(
                    "p50 <= {} ms  {}",
                    v.limit_ms,
                    if v.pass { "PASS" } else { "MISS" }
                )
            })
            .unwrap_or_default()
    };
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} (runtime {}, handler {})",
        s.runtime, s.runtime, s.handler
    );
    let _ = writeln!(
        out,
        "  {:<30} {:>5} {:>10} {:>10} {:>10}   target",
        "measurement", "runs", "p50 ms", "p99 ms", "mean ms"
    );
    let row = |out: &mut String, name: &str, x: &Summary, target: String| {
        let _ = writeln!(
            out,
            "  {:<30} {:>5} {:>10.2} {:>10.2} {:>10.2}   {}",
            name, x.runs, x.p50_ms, x.p99_ms, x.mean_ms, target
        );
    };
    row(out, "deploy (POST /v1/functions)", &l.deploy, verdict(0));
    row(out, "cold invoke (first, fresh fn)", &l.cold, verdict(2));
    row(out, "warm invoke", &l.warm, String::new());
    row(out, "baseline GET /v1/health", &l.baseline, String::new());
    let _ = writeln!(
        out,
        "  {:<30} {:>5} {:>10.2} {:>10} {:>10}   {}",
        "warm platform overhead",
        "",
        l.warm_overhead_p50_ms,
        "",
        "",
        verdict(1)
    );
    let _ = writeln!(
        out,
        "  (warm p50 - baseline p50; warm/baseline = {:.2}x)",
        l.warm_to_baseline_ratio
    );
    let _ = writeln!(
        out,
        "  warm throughput: {:.0} invocations/s sequential (health baseline {:.0} requests/s)",
        l.warm_throughput_per_s, l.baseline_throughput_per_s
    );
    let _ = writeln!(
        out,
        "  x-strata-cold-start mismatches: {} of {} first invocations not 'true', {} of {} warm not 'false'",
        s.cold_header_mismatches,
        s.cold_ms.len(),
        s.warm_header_mismatches,
        s.warm_ms.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::Lang;

    fn samples(deploy: f64, cold: f64, warm: f64, baseline: f64) -> Samples {
        Samples {
            lang: Lang::Python,
            runtime: "python3",
            handler: "app.handler",
            deploy_ms: vec![deploy; 3],
            cold_ms: vec![cold; 3],
            cold_header_mismatches: 1,
            warm_ms: vec![warm; 10],
            warm_loop_s: 0.01,
            warm_header_mismatches: 0,
            baseline_ms: vec![baseline; 10],
            baseline_loop_s: 0.005,
        }
    }

    fn report(l: LangReport) -> Report {
        Report {
            date: "2000-01-01 00:00:00 UTC".into(),
            server: "http://127.0.0.1:1".into(),
            machine: Machine {
                cpus: 2,
                cpu_model: String::new(),
                memory_bytes: 1 << 30,
                kernel: "6.1".into(),
            },
            plan: Plan {
                functions: 3,
                warm: 10,
                warmup: 2,
            },
            languages: vec![l],
        }
    }

    #[test]
    fn overhead_is_warm_minus_baseline_and_targets_are_judged() {
        let l = LangReport::new(samples(20.0, 400.0, 1.5, 0.25)).expect("report");
        assert_eq!(l.warm_overhead_p50_ms, 1.25);
        assert_eq!(l.warm_to_baseline_ratio, 6.0);
        assert_eq!(l.warm_throughput_per_s, 1000.0);
        let pass: Vec<bool> = l.targets.iter().map(|v| v.pass).collect();
        assert_eq!(pass, [true, false, false]);

        let r = report(l);
        assert_eq!(r.misses().len(), 2);
        let text = r.render();
        assert!(text.contains("targets met: 1 of 3"), "{text}");
        assert!(text.contains("PASS") && text.contains("MISS"), "{text}");
        assert!(
            text.contains("1 of 3 first invocations not 'true'"),
            "{text}"
        );
    }

    #[test]
    fn all_targets_met() {
        let l = LangReport::new(samples(10.0, 100.0, 0.75, 0.25)).expect("report");
        let r = report(l);
        assert!(r.misses().is_empty());
        assert!(r.render().contains("targets met: 3 of 3"));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["languages"][0]["samples"]["deploy_ms"][0], 10.0);
        assert_eq!(
            json["languages"][0]["targets"][2]["target"],
            "cold invocation p50"
        );
    }
}
