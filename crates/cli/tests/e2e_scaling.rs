//! End to end: warm pools, specialization, scaling, backpressure and runtime version rolls with
//! real instances. Every test here needs root; each skips with a printed reason when it cannot
//! run.

mod common;

use std::time::{Duration, Instant};

use common::{path_str, Server};

fn server(extra: &[&str]) -> Server {
    let s = Server::start_with(extra);
    s.import_base("debian-bookworm");
    s.ok(&["bootstrap"]);
    s
}

fn metrics(s: &Server) -> String {
    reqwest::blocking::Client::new()
        .get(format!("{}/metrics", s.url))
        .bearer_auth(s.token())
        .send()
        .expect("metrics")
        .text()
        .expect("text")
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn invoke(s: &Server, name: &str, event: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/functions/{name}/invoke", s.url))
        .bearer_auth(s.token())
        .body(event.to_string())
        .send()
        .expect("invoke");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().expect("body"), headers)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const APP: &str = "import os, time\n\
def handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return {'v': os.environ.get('RT_VERSION'), 'pid': os.getpid()}\n";

#[test]
fn root_pool_hits_and_misses_show_in_metrics_and_stats() {
    require_root!();
    let s = server(&[]);
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    s.ok(&["runtime", "pool", "python3", "--min", "2", "--max", "4"]);
    s.ok(&[
        "fn",
        "create",
        "pooled",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.handler",
    ]);
    wait_until("a warm generic instance", Duration::from_secs(60), || {
        metric(&metrics(&s), "strata_instances{state=\"generic\"}") >= 1.0
    });
    let (status, _, h) = invoke(&s, "pooled", "{}");
    assert_eq!(status, 200);
    assert_eq!(h["x-strata-cold-start"], "true");
    let m = metrics(&s);
    assert_eq!(
        metric(
            &m,
            "strata_cold_starts_total{function=\"pooled\",kind=\"pool_hit\"}"
        ),
        1.0,
        "{m}"
    );
    // A function with network access cannot use a generic (loopback-only) instance: a pool miss.
    s.ok(&[
        "fn",
        "create",
        "netted",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.handler",
        "--network",
    ]);
    assert_eq!(invoke(&s, "netted", "{}").0, 200);
    let m = metrics(&s);
    assert_eq!(
        metric(
            &m,
            "strata_cold_starts_total{function=\"netted\",kind=\"pool_miss\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(
        m.contains("strata_invocation_phase_seconds_count{phase=\"specialize\"}"),
        "{m}"
    );
    let d = s.json(&["fn", "describe", "pooled"]);
    assert_eq!(d["stats"]["pool_hits"], 1);
    assert!(d["stats"]["mean_specialize_ms"].as_f64().expect("ms") > 0.0);
    // The pool refills after the take.
    wait_until("the pool to refill", Duration::from_secs(60), || {
        metric(&metrics(&s), "strata_instances{state=\"generic\"}") >= 2.0
    });
    for f in ["pooled", "netted"] {
        s.ok(&["fn", "rm", f]);
    }
    s.assert_clean();
}

#[test]
fn root_min_instances_stay_warm_and_others_scale_to_zero() {
    require_root!();
    let s = server(&["--idle-timeout", "2s"]);
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    s.ok(&[
        "fn",
        "create",
        "warm",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.handler",
        "--min-instances",
        "2",
    ]);
    s.ok(&[
        "fn",
        "create",
        "cold",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.handler",
    ]);
    wait_until(
        "two warm instances without traffic",
        Duration::from_secs(60),
        || s.json(&["fn", "describe", "warm"])["stats"]["instances"] == 2,
    );
    assert_eq!(invoke(&s, "cold", "{}").0, 200);
    assert_eq!(s.json(&["fn", "describe", "cold"])["stats"]["instances"], 1);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        s.json(&["fn", "describe", "cold"])["stats"]["instances"],
        0,
        "scaled to zero"
    );
    assert_eq!(
        s.json(&["fn", "describe", "warm"])["stats"]["instances"],
        2,
        "min instances kept"
    );
    let (_, _, h) = invoke(&s, "warm", "{}");
    assert_eq!(
        h["x-strata-cold-start"], "false",
        "a kept instance serves at once"
    );
    for f in ["warm", "cold"] {
        s.ok(&["fn", "rm", f]);
    }
    s.assert_clean();
}

#[test]
fn root_overload_gets_fast_429s_while_admitted_requests_succeed() {
    require_root!();
    let s = server(&[]);
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    s.ok(&[
        "fn",
        "create",
        "narrow",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.handler",
        "--max-instances",
        "1",
        "--max-queue",
        "2",
    ]);
    assert_eq!(invoke(&s, "narrow", "{}").0, 200, "warm it up");
    let url = s.url.clone();
    let token = s.token();
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                let t = Instant::now();
                let resp = reqwest::blocking::Client::new()
                    .post(format!("{url}/v1/functions/narrow/invoke"))
                    .bearer_auth(token)
                    .body(r#"{"sleep": 1}"#)
                    .send()
                    .expect("invoke");
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                (resp.status().as_u16(), t.elapsed(), retry)
            })
        })
        .collect();
    let results: Vec<(u16, Duration, Option<String>)> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let rejected: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(
        ok.len() + rejected.len(),
        10,
        "only successes and 429s: {results:?}"
    );
    assert!(
        (1..=3).contains(&ok.len()),
        "one running + two queued at most: {results:?}"
    );
    assert!(rejected.len() >= 7, "{results:?}");
    for r in &rejected {
        assert!(
            r.1 < Duration::from_millis(800),
            "429 answered fast: {results:?}"
        );
        assert!(
            r.2.as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v >= 1),
            "Retry-After set: {results:?}"
        );
    }
    let m = metrics(&s);
    assert!(
        metric(
            &m,
            "strata_invocations_total{function=\"narrow\",outcome=\"overloaded\"}"
        ) >= 7.0,
        "{m}"
    );
    s.ok(&["fn", "rm", "narrow"]);
    s.assert_clean();
}

#[test]
fn root_runtime_version_roll_fails_no_invocation() {
    require_root!();
    let s = server(&[]);
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    let v1 = s.write("rt/Dockerfile.1", "FROM python3\nENV RT_VERSION=1\n");
    let v2 = s.write("rt/Dockerfile.2", "FROM python3\nENV RT_VERSION=2\n");
    s.ok(&["runtime", "create", "rolling", "-f", path_str(&v1)]);
    s.ok(&[
        "fn",
        "create",
        "follower",
        "--runtime",
        "rolling",
        "--code",
        &dir,
        "--handler",
        "app.handler",
        "--max-instances",
        "4",
    ]);
    assert!(invoke(&s, "follower", "{}").1.contains("\"v\": \"1\""));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (url, token) = (s.url.clone(), s.token());
    let loader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let resp = client
                    .post(format!("{url}/v1/functions/follower/invoke"))
                    .bearer_auth(&token)
                    .body(r#"{"sleep": 0.05}"#)
                    .send()
                    .expect("invoke");
                seen.push((resp.status().as_u16(), resp.text().unwrap_or_default()));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["runtime", "create", "rolling", "-f", path_str(&v2)]);
    wait_until("invocations on version 2", Duration::from_secs(60), || {
        invoke(&s, "follower", "{}").1.contains("\"v\": \"2\"")
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = loader.join().expect("loader");
    let failed: Vec<_> = seen.iter().filter(|(st, _)| *st != 200).collect();
    assert!(seen.len() > 10, "the loader ran: {}", seen.len());
    assert!(
        failed.is_empty(),
        "failed invocations during the roll: {failed:?}"
    );
    assert!(
        seen.iter().any(|(_, b)| b.contains("\"v\": \"1\""))
            && seen.iter().any(|(_, b)| b.contains("\"v\": \"2\""))
    );
    assert_eq!(
        s.json(&["fn", "describe", "follower"])["runtime_resolved"],
        "rolling@2"
    );
    // The version a function runs on cannot be removed; the one it left can.
    let err = s.fails(&["runtime", "rm", "rolling@2"]);
    assert!(err.contains("in use") && err.contains("follower"), "{err}");
    s.ok(&["runtime", "rm", "rolling@1"]);
    s.ok(&["fn", "rm", "follower"]);
    s.assert_clean();
}

#[test]
fn root_server_restart_leaves_no_leaked_container_mount_or_cgroup() {
    require_root!();
    let mut s = server(&[]);
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    s.ok(&[
        "fn",
        "create",
        "live",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.handler",
        "--min-instances",
        "2",
    ]);
    wait_until("live instances", Duration::from_secs(60), || {
        s.json(&["fn", "describe", "live"])["stats"]["instances"] == 2
    });
    assert!(!s.mounts().is_empty());
    // A crash: everything of the old process must be reconciled by the next start.
    let before: Vec<String> = s.mounts();
    s.kill9_and_restart();
    wait_until("old instances reconciled", Duration::from_secs(30), || {
        let now = s.mounts();
        before.iter().all(|m| !now.contains(m))
    });
    wait_until("min instances back", Duration::from_secs(60), || {
        s.json(&["fn", "describe", "live"])["stats"]["instances"] == 2
    });
    assert_eq!(invoke(&s, "live", "{}").0, 200);
    // A clean stop leaves nothing running at all.
    s.stop_now();
    assert_eq!(
        s.mounts(),
        Vec::<String>::new(),
        "mounts after a clean stop"
    );
    assert_eq!(
        s.cgroups(),
        Vec::<String>::new(),
        "cgroups after a clean stop"
    );
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    let text = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !text
            .lines()
            .any(|l| l.contains(s.data.path().to_str().unwrap_or("?"))),
        "processes of the stopped server"
    );
}

#[test]
fn root_concurrency_lets_one_instance_serve_several_invocations() {
    require_root!();
    let s = server(&[]);
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    s.ok(&[
        "fn",
        "create",
        "wide",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.handler",
        "--max-instances",
        "1",
        "--concurrency",
        "3",
    ]);
    assert_eq!(invoke(&s, "wide", "{}").0, 200, "warm it up");
    let (url, token) = (s.url.clone(), s.token());
    let t = Instant::now();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                let resp = reqwest::blocking::Client::new()
                    .post(format!("{url}/v1/functions/wide/invoke"))
                    .bearer_auth(token)
                    .body(r#"{"sleep": 1}"#)
                    .send()
                    .expect("invoke");
                (resp.status().as_u16(), resp.text().unwrap_or_default())
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let elapsed = t.elapsed();
    assert!(results.iter().all(|(st, _)| *st == 200), "{results:?}");
    let pids: std::collections::HashSet<String> = results
        .iter()
        .filter_map(|(_, b)| {
            serde_json::from_str::<serde_json::Value>(b)
                .ok()
                .map(|v| v["pid"].to_string())
        })
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "three bootstrap workers served them: {results:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "served side by side, not one after another: {elapsed:?}"
    );
    assert_eq!(s.json(&["fn", "describe", "wide"])["stats"]["instances"], 1);
    s.ok(&["fn", "rm", "wide"]);
    s.assert_clean();
}
