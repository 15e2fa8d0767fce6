//! The hostile-input corpus against every extractor. One test on purpose: rejection counters and
//! peak RSS are process-wide, so the cases run one after another.
//!
//! As root every extractor runs; otherwise only function code import does (whiteouts are device
//! nodes and image import applies owners), and the skipped part is printed.

use std::fs;
use std::time::{Duration, Instant};

use strata_hostile_tests::cases::{self, Case};
use strata_hostile_tests::harness::{is_root, run, Outcome, RunOpts, Sandbox, Target};

/// Peak RSS allowed while a bomb is being refused.
const BOMB_RSS_KIB: u64 = 256 * 1024;
/// Time allowed to refuse one bomb on one extractor (debug build).
const BOMB_TIME: Duration = Duration::from_secs(10);

fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

fn status_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident memory since the last reset (the corpus itself, held in memory, included).
fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

struct Row {
    case: String,
    cells: Vec<String>,
    note: String,
}

#[test]
fn hostile_corpus_root() {
    let root = is_root();
    if !root {
        println!(
            "hostile_corpus_root: not running as root: layer extraction and image import are \
             skipped (whiteouts are device nodes, import applies owners); running code import only"
        );
    }
    let sb = Sandbox::new().expect("sandbox");
    let corpus: Vec<Case> = cases::all(&sb.victim());
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let (mut tried, mut rejected, mut contained) = (0u32, 0u32, 0u32);
    let mut max_bomb_rss = 0u64;
    let mut max_bomb_time = Duration::ZERO;
    let mut max_bomb_growth = 0u64;
    let mut breakouts = 0;

    for case in &corpus {
        if case.name.starts_with("cd-") {
            breakouts += 1;
        }
        let mut cells = Vec::new();
        let mut notes = Vec::new();
        for t in Target::ALL {
            let expected = case.expected(t);
            let Some(input) = case.input(t) else {
                cells.push("-".to_string());
                continue;
            };
            if t.needs_root() && !root {
                cells.push("skip".to_string());
                continue;
            }
            let opts = RunOpts {
                layer_limits: case.layer_limits.clone().unwrap_or_default(),
                ..RunOpts::default()
            };
            reset_peak_rss();
            let rss_before = rss_kib();
            let start = Instant::now();
            let result = run(&sb, t, &input, &opts);
            let took = start.elapsed();
            let rss = peak_rss_kib();
            tried += 1;
            let got = match &result {
                Ok(Outcome::Rejected { .. }) => 'R',
                Ok(Outcome::Contained { .. }) => 'C',
                Err(_) => '!',
            };
            match &result {
                Err(violation) => {
                    failures.push(format!("{} on {}: {violation}", case.name, t.label()))
                }
                Ok(Outcome::Rejected { error, counted, .. }) => {
                    rejected += 1;
                    if got != expected {
                        failures.push(format!(
                            "{} on {}: expected {expected}, rejected: {error}",
                            case.name,
                            t.label()
                        ));
                    }
                    cells.push(format!("R {}", counted.as_deref().unwrap_or("uncounted")));
                    if notes.is_empty() {
                        notes.push(error.chars().take(110).collect::<String>());
                    }
                }
                Ok(Outcome::Contained { root: tree }) => {
                    contained += 1;
                    if got != expected {
                        failures.push(format!(
                            "{} on {}: expected {expected}, but it was accepted",
                            case.name,
                            t.label()
                        ));
                    }
                    if let Some(check) = case.check {
                        if let Err(e) = check(tree) {
                            failures.push(format!("{} on {}: {e}", case.name, t.label()));
                        }
                    }
                    cells.push("C".to_string());
                }
            }
            if got == '!' {
                cells.push("FAIL".to_string());
            }
            if case.bomb {
                max_bomb_rss = max_bomb_rss.max(rss);
                max_bomb_time = max_bomb_time.max(took);
                if rss > BOMB_RSS_KIB {
                    failures.push(format!(
                        "{} on {}: peak RSS {rss} KiB over {BOMB_RSS_KIB} KiB",
                        case.name,
                        t.label()
                    ));
                }
                if took > BOMB_TIME {
                    failures.push(format!(
                        "{} on {}: took {took:?}, over {BOMB_TIME:?}",
                        case.name,
                        t.label()
                    ));
                }
                let grew = rss.saturating_sub(rss_before);
                max_bomb_growth = max_bomb_growth.max(grew);
                notes.push(format!(
                    "{}: {} ms, peak +{} MiB",
                    t.label(),
                    took.as_millis(),
                    grew >> 10
                ));
            }
            sb.reset().expect("reset work dir");
        }
        rows.push(Row {
            case: case.name.clone(),
            cells,
            note: notes.join("; "),
        });
    }

    // ---- the table ----
    let mut out = String::new();
    out.push_str(
        "\nStrata hostile-input corpus (R = typed rejection, with the counter that moved; ",
    );
    out.push_str("C = contained below the destination; - = no such form)\n\n");
    out.push_str("| case | ");
    out.push_str(
        &Target::ALL
            .iter()
            .map(|t| t.label())
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" | first error / bomb figures |\n|---|");
    out.push_str(&"---|".repeat(Target::ALL.len() + 1));
    out.push('\n');
    for r in &rows {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            r.case,
            r.cells.join(" | "),
            r.note.replace('|', "\\|")
        ));
    }
    let escapes = failures.iter().filter(|f| f.contains("ESCAPE")).count();
    out.push_str(&format!(
        "\ncases: {} ({} containerd TestBreakouts ports); runs tried: {tried}; rejected: \
         {rejected}; contained: {contained}; escapes: {escapes}; failures: {}\n",
        corpus.len(),
        breakouts,
        failures.len()
    ));
    out.push_str(&format!(
        "bombs: worst peak RSS {} MiB (the in-memory corpus included; at most +{} MiB while \
         refusing a bomb), worst time {} ms per extractor\n",
        max_bomb_rss >> 10,
        max_bomb_growth >> 10,
        max_bomb_time.as_millis()
    ));
    println!("{out}");
    assert_eq!(breakouts, 33, "all 33 containerd breakout cases are ported");
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
