//! Platform metrics in the Prometheus text format (`/metrics`): invocations, errors, durations,
//! cold starts by kind, instances by state, queue depth, and the phases of an invocation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the duration histograms.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// A gauge computed at render time: name, help text, labels, value.
pub type Gauge = (&'static str, &'static str, Labels, f64);

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The registry. Cheap to update from the invocation path (one short lock).
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// How an invocation found its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// An idle instance of the function was reused.
    Warm,
    /// A generic pool instance was taken and specialized.
    PoolHit,
    /// No pool instance was ready: an instance was started from nothing.
    PoolMiss,
}

impl Start {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Warm => "warm",
            Start::PoolHit => "pool_hit",
            Start::PoolMiss => "pool_miss",
        }
    }
}

/// Time spent in each phase of one invocation, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    /// Waiting for capacity.
    pub queue: f64,
    /// Taking a pool instance and specializing it (code mounted, limits set, the agent told).
    pub specialize: f64,
    /// Starting an instance and its runtime until the handler is loaded.
    pub init: f64,
    /// From sending the event to the result (for a pool hit, including loading the handler).
    pub run: f64,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records a finished invocation.
    pub fn invocation(
        &self,
        function: &str,
        outcome: &str,
        start: Start,
        total_s: f64,
        phases: &Phases,
    ) {
        self.with(|m| {
            let f = function.to_string();
            *m.counters
                .entry((
                    "strata_invocations_total",
                    vec![("function", f.clone()), ("outcome", outcome.into())],
                ))
                .or_default() += 1;
            if outcome != "ok" {
                *m.counters
                    .entry((
                        "strata_invocation_errors_total",
                        vec![("function", f.clone())],
                    ))
                    .or_default() += 1;
            }
            if start != Start::Warm {
                *m.counters
                    .entry((
                        "strata_cold_starts_total",
                        vec![("function", f.clone()), ("kind", start.as_str().into())],
                    ))
                    .or_default() += 1;
            }
            m.histograms
                .entry(("strata_invocation_duration_seconds", vec![("function", f)]))
                .or_default()
                .observe(total_s);
            for (phase, v) in [
                ("queue", phases.queue),
                ("specialize", phases.specialize),
                ("init", phases.init),
                ("run", phases.run),
            ] {
                m.histograms
                    .entry((
                        "strata_invocation_phase_seconds",
                        vec![("phase", phase.into())],
                    ))
                    .or_default()
                    .observe(v);
            }
        });
    }

    /// Renders every metric, with gauges computed by the caller, in the Prometheus text format.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        let help: &[(&str, &str, &str)] = &[
            ("strata_invocations_total", "counter", "Invocations by function and outcome."),
            ("strata_invocation_errors_total", "counter", "Failed invocations by function."),
            ("strata_cold_starts_total", "counter", "Invocations that needed a new or specialized instance, by kind (pool_hit, pool_miss)."),
            ("strata_invocation_duration_seconds", "histogram", "Invocation wall time by function."),
            ("strata_invocation_phase_seconds", "histogram", "Time in each phase of an invocation: queue, specialize, init, run."),
        ];
        self.with(|m| {
            for (name, kind, text) in help {
                let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
                for ((n, labels), v) in m.counters.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{n}{} {v}", fmt_labels(labels, None));
                }
                for ((n, labels), h) in m.histograms.iter().filter(|((n, _), _)| n == name) {
                    for (i, b) in BUCKETS.iter().enumerate() {
                        let c = h.counts.get(i).copied().unwrap_or(0);
                        let _ = writeln!(
                            out,
                            "{n}_bucket{} {c}",
                            fmt_labels(labels, Some(&b.to_string()))
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{n}_bucket{} {}",
                        fmt_labels(labels, Some("+Inf")),
                        h.count
                    );
                    let _ = writeln!(out, "{n}_sum{} {}", fmt_labels(labels, None), h.sum);
                    let _ = writeln!(out, "{n}_count{} {}", fmt_labels(labels, None), h.count);
                }
            }
        });
        let mut seen = std::collections::BTreeSet::new();
        for (name, text, labels, v) in gauges {
            if seen.insert(*name) {
                let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} gauge");
            }
            let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        let p = Phases {
            queue: 0.0,
            specialize: 0.002,
            init: 0.0,
            run: 0.003,
        };
        m.invocation("hello", "ok", Start::PoolHit, 0.004, &p);
        m.invocation("hello", "timeout", Start::Warm, 2.0, &p);
        let text = m.render(&[(
            "strata_instances",
            "Instances by state.",
            vec![("state", "generic".into())],
            3.0,
        )]);
        assert!(
            text.contains("strata_invocations_total{function=\"hello\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strata_invocation_errors_total{function=\"hello\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strata_cold_starts_total{function=\"hello\",kind=\"pool_hit\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("kind=\"warm\""),
            "warm starts are not cold starts"
        );
        assert!(
            text.contains(
                "strata_invocation_duration_seconds_bucket{function=\"hello\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strata_invocation_duration_seconds_bucket{function=\"hello\",le=\"+Inf\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("strata_invocation_duration_seconds_count{function=\"hello\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("strata_invocation_phase_seconds_count{phase=\"run\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE strata_instances gauge\nstrata_instances{state=\"generic\"} 3"),
            "{text}"
        );
        assert_eq!(
            fmt_labels(&vec![("f", "a\"b".into())], None),
            "{f=\"a\\\"b\"}"
        );
    }
}
