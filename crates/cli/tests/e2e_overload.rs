//! End to end: behaviour under overload and next to runaway functions, and where a secret may
//! end up. Load goes to the test server on 127.0.0.1 only, bounded in requests and time. Every
//! test here needs root; each skips with a printed reason when it cannot run.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{path_str, Server};

/// A server with the test base image and the built-in `python3` runtime (built from its
/// Dockerfile; no other runtime is needed here).
fn server_with_python() -> Server {
    let s = Server::start();
    s.import_base("debian-bookworm");
    let rt = concat!(env!("CARGO_MANIFEST_DIR"), "/../../runtimes/python3");
    s.ok(&[
        "runtime",
        "create",
        "python3",
        "-f",
        &format!("{rt}/Dockerfile"),
        "--context",
        rt,
    ]);
    s
}

const APP: &str = r#"
import os, time

def slow(event, context):
    time.sleep(0.2)
    return {"ok": True}

def hello(event, context):
    return {"hello": event.get("name"), "canary_len": len(os.environ.get("CANARY", ""))}

def busy(event, context):
    while True:
        pass

def hog(event, context):
    blocks = []
    while True:
        blocks.append(bytearray(16 << 20))

def forks(event, context):
    pids = []
    try:
        while True:
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            pids.append(pid)
    except OSError as e:
        return {"stopped_at": len(pids), "error": type(e).__name__}
"#;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// An invocation's status, error kind header, body and latency.
type Outcome = (u16, String, String, Duration);

/// One invocation through the API.
fn invoke(
    c: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    name: &str,
    event: &str,
) -> Outcome {
    let t = Instant::now();
    match c
        .post(format!("{url}/v1/functions/{name}/invoke"))
        .bearer_auth(token)
        .body(event.to_string())
        .send()
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let kind = resp
                .headers()
                .get("x-strata-error-kind")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = resp.text().unwrap_or_default();
            (status, kind, body, t.elapsed())
        }
        // A transport failure counts as a server error.
        Err(e) => (599, "transport".into(), e.to_string(), t.elapsed()),
    }
}

/// The `p`-th percentile (0..=1) of some durations, in milliseconds.
fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
    ms[i]
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn health(s: &Server) -> u16 {
    reqwest::blocking::get(format!("{}/v1/health", s.url))
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn root_twice_capacity_gets_fast_429s_flat_memory_and_no_5xx() {
    require_root!();
    let s = server_with_python();
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    s.ok(&[
        "fn",
        "create",
        "slow",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.slow",
        "--max-instances",
        "2",
        "--max-queue",
        "4",
    ]);
    let (url, token) = (s.url.clone(), s.token());
    let c = client();

    // Capacity: two closed-loop callers (one per instance) for a fixed number of calls. The
    // first round also warms both instances up.
    let measure = |calls: usize| {
        let t = Instant::now();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (c, url, token) = (c.clone(), url.clone(), token.clone());
                std::thread::spawn(move || {
                    (0..calls)
                        .map(|_| invoke(&c, &url, &token, "slow", "{}").0)
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        let statuses: Vec<u16> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("caller"))
            .collect();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        statuses.len() as f64 / t.elapsed().as_secs_f64()
    };
    measure(5);
    let capacity = measure(15);
    let pid = s.pid().expect("server pid");
    let rss_before = rss_kib(pid);

    // Open loop at twice the capacity: every request leaves at its scheduled time on its own
    // thread, whatever happened to the earlier ones.
    let rate = 2.0 * capacity;
    let duration = Duration::from_secs(15);
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(total);
    let mut max_lag = Duration::ZERO;
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        } else {
            max_lag = max_lag.max(now - at);
        }
        let (c, url, token) = (c.clone(), url.clone(), token.clone());
        handles.push(std::thread::spawn(move || {
            let (status, _, _, took) = invoke(&c, &url, &token, "slow", "{}");
            (status, took)
        }));
    }
    let results: Vec<(u16, Duration)> = handles
        .into_iter()
        .map(|h| h.join().expect("request"))
        .collect();
    let elapsed = start.elapsed();
    let ok: Vec<Duration> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    let rejected: Vec<Duration> = results.iter().filter(|r| r.0 == 429).map(|r| r.1).collect();
    let errors: Vec<u16> = results.iter().map(|r| r.0).filter(|s| *s >= 500).collect();
    let other: Vec<u16> = results
        .iter()
        .map(|r| r.0)
        .filter(|s| *s != 200 && *s != 429 && *s < 500)
        .collect();
    // Let the queue drain and the instances go idle before the memory reading.
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid);
    let health_status = health(&s);
    eprintln!(
        "overload: capacity {capacity:.1} req/s, offered {rate:.1} req/s for {duration:?} \
         ({elapsed:.1?} with drain, dispatch lag max {max_lag:?}): {total} requests, {} 200, {} 429, \
         {} 5xx, {} other; 200 p50 {:.0} ms p99 {:.0} ms; 429 p50 {:.1} ms p99 {:.1} ms; \
         server RSS {} KiB after warm-up, {} KiB after the load ({:+} KiB); health {health_status}",
        ok.len(),
        rejected.len(),
        errors.len(),
        other.len(),
        pct(&ok, 0.5),
        pct(&ok, 0.99),
        pct(&rejected, 0.5),
        pct(&rejected, 0.99),
        rss_before,
        rss_after,
        rss_after as i64 - rss_before as i64,
    );
    assert!(
        (7.0..=14.0).contains(&capacity),
        "two instances of a 200 ms handler serve about 10 req/s, measured {capacity:.1}"
    );
    assert!(errors.is_empty(), "no 5xx: {errors:?}");
    assert!(other.is_empty(), "only 200 and 429: {other:?}");
    // About half the offered load is served: the instances stay busy.
    assert!(
        ok.len() as f64 >= 0.35 * total as f64,
        "{} of {total} admitted",
        ok.len()
    );
    assert!(
        rejected.len() as f64 >= 0.25 * total as f64,
        "{} of {total} refused",
        rejected.len()
    );
    // A refusal is decided without waiting for capacity.
    assert!(pct(&rejected, 0.99) < 100.0, "429 p99 under 100 ms");
    // An admitted request waits behind at most max-queue (4) others shared by max-instances (2)
    // instances: (4 / 2 + 1) × 200 ms = 600 ms plus the per-invocation overhead. 2.5 s leaves room
    // for a loaded two-core machine; a queue that grew without bound would exceed it at once.
    assert!(pct(&ok, 0.99) < 2500.0, "admitted p99 under 2.5 s");
    assert!(
        rss_after <= rss_before + 50 * 1024,
        "server memory stays flat: {rss_before} KiB -> {rss_after} KiB"
    );
    assert_eq!(health_status, 200, "the server still answers");
    s.ok(&["fn", "rm", "slow"]);
    s.assert_clean();
}

/// Processes in this server's cgroups (`strata/<tag>/...`), as `pid stat comm`.
fn processes_of(s: &Server) -> Vec<String> {
    let needle = format!("/strata/{}/", s.tag());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cg.contains(&needle) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            found.push(format!(
                "{name} {}",
                stat.split(' ')
                    .skip(1)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    found
}

/// Zombie children of a process, from `ps -eo pid,ppid,stat,args`.
fn zombies_of(ppid: u32) -> Vec<String> {
    let ps = std::process::Command::new("ps")
        .args(["-eo", "pid,ppid,stat,args"])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[1] == ppid.to_string() && f[2].starts_with('Z')
        })
        .map(String::from)
        .collect()
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("urandom");
    hex::encode(buf)
}

/// Files under `dir` (recursively, symlinks not followed, binary as text) that contain `needle`.
fn grep_files(dir: &std::path::Path, needle: &str) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    let out = std::process::Command::new("grep")
        .args(["-r", "-l", "-a", "-F", "--", needle])
        .arg(dir)
        .output()
        .expect("grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn root_runaway_neighbours_are_contained_and_secrets_stay_in_the_database() {
    require_root!();
    let s = server_with_python();
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    let canary = format!("canary-{}", random_hex(16));
    let secret = format!("CANARY={canary}");
    // Every API answer and CLI output of this test, searched for the canary at the end.
    let mut seen: Vec<String> = Vec::new();
    for (name, handler, extra) in [
        ("hello", "app.hello", vec![]),
        ("busy", "app.busy", vec!["--timeout", "3s"]),
        ("hog", "app.hog", vec!["--memory", "64Mi"]),
        ("forks", "app.forks", vec![]),
    ] {
        let mut args = vec![
            "-o",
            "json",
            "fn",
            "create",
            name,
            "--runtime",
            "python3",
            "--code",
            &dir,
            "--handler",
            handler,
            "--secret-env",
            &secret,
        ];
        args.extend(extra);
        seen.push(s.ok(&args));
    }
    let (url, token) = (s.url.clone(), s.token());
    let c = client();

    let measure = |seen: &mut Vec<String>| {
        let mut lat = Vec::with_capacity(200);
        for _ in 0..200 {
            let (status, _, body, took) = invoke(&c, &url, &token, "hello", r#"{"name": "n"}"#);
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(
                v["canary_len"],
                canary.len(),
                "the secret reached the function"
            );
            seen.push(body);
            lat.push(took);
        }
        lat
    };
    invoke(&c, &url, &token, "hello", "{}");
    let quiet = measure(&mut seen);

    // The noise: each runaway function invoked over and over on its own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let noise: Vec<_> = ["busy", "hog", "forks"]
        .into_iter()
        .map(|name| {
            let (c, url, token, stop) = (c.clone(), url.clone(), token.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut results = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    results.push(invoke(&c, &url, &token, name, "{}"));
                }
                (name, results)
            })
        })
        .collect();
    // Let every runaway reach its limit once before measuring.
    std::thread::sleep(Duration::from_secs(4));
    let noisy = measure(&mut seen);
    stop.store(true, Ordering::SeqCst);
    let noise: Vec<(&str, Vec<Outcome>)> = noise
        .into_iter()
        .map(|h| h.join().expect("noise"))
        .collect();

    let (q50, q99, n50, n99) = (
        pct(&quiet, 0.5),
        pct(&quiet, 0.99),
        pct(&noisy, 0.5),
        pct(&noisy, 0.99),
    );
    let summary: Vec<String> = noise
        .iter()
        .map(|(name, r)| {
            let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
            for x in r {
                *kinds.entry(format!("{} {}", x.0, x.1)).or_default() += 1;
            }
            format!("{name}: {kinds:?}")
        })
        .collect();
    eprintln!(
        "neighbours: hello warm latency alone p50 {q50:.1} ms p99 {q99:.1} ms; next to a busy loop, \
         a memory hog and a fork bomb p50 {n50:.1} ms p99 {n99:.1} ms (200 sequential invokes each); \
         runaways: {}",
        summary.join("; ")
    );
    // Containment, not a benchmark: generous bounds (a floor of 2 ms keeps a sub-millisecond
    // baseline from making the bound meaningless).
    assert!(
        n50 < 5.0 * q50.max(2.0),
        "p50 next to runaways {n50:.1} ms vs {q50:.1} ms alone"
    );
    assert!(n99 < 2000.0, "p99 next to runaways {n99:.1} ms");
    for (name, results) in &noise {
        assert!(!results.is_empty(), "{name} ran");
        for (status, kind, body, took) in results {
            seen.push(body.clone());
            match *name {
                "busy" => {
                    assert_eq!((*status, kind.as_str()), (504, "timeout"), "{body}");
                    assert!(
                        *took < Duration::from_secs(5),
                        "a 3 s timeout answers in time: {took:?}"
                    );
                }
                "hog" => assert_eq!((*status, kind.as_str()), (507, "out_of_memory"), "{body}"),
                _ => {
                    assert_eq!(*status, 200, "{body}");
                    let v: serde_json::Value = serde_json::from_str(body).expect("json");
                    assert!(v["stopped_at"].as_u64().expect("count") < 1000, "{v}");
                }
            }
        }
    }

    // A runtime built with a build argument (not a secret), so layers exist beyond the base.
    let visible = format!("visible-{}", random_hex(8));
    let df = s.write(
        "rt/Dockerfile",
        "FROM python3\nARG NOTE\nRUN echo \"$NOTE\" > /opt/note.txt\n",
    );
    seen.push(s.ok(&[
        "-o",
        "json",
        "runtime",
        "create",
        "noted",
        "-f",
        path_str(&df),
        "--build-arg",
        &format!("NOTE={visible}"),
    ]));
    seen.push(s.ok(&["-o", "json", "fn", "ls"]));
    for f in ["hello", "busy", "hog", "forks"] {
        seen.push(s.ok(&["-o", "json", "fn", "describe", f]));
        seen.push(s.ok(&["fn", "describe", f]));
        seen.push(s.ok(&["-o", "json", "logs", f]));
    }
    seen.push(
        c.get(format!("{url}/metrics"))
            .bearer_auth(&token)
            .send()
            .and_then(|r| r.text())
            .expect("metrics"),
    );
    let in_answers = seen.iter().filter(|t| t.contains(&canary)).count();
    // Byte search of the whole data directory (layers/, code/, logs/, blobs/, tmp/ with the live
    // instances' bundles, the server log) and of runc's state, while instances still run.
    let data = s.data.path();
    let mut hits = grep_files(data, &canary);
    hits.extend(grep_files(
        std::path::Path::new(&format!("/run/strata/{}", s.tag())),
        &canary,
    ));
    let in_database = |h: &String| {
        std::path::Path::new(h)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("meta.db"))
            && std::path::Path::new(h).parent() == Some(data)
    };
    let (in_db, outside): (Vec<String>, Vec<String>) = hits.into_iter().partition(in_database);
    // A running instance that did not come from a generic pool gets its environment, secrets
    // included, in its OCI bundle's config.json (under tmp/, removed with the instance): a known
    // gap, documented in docs/security.md. Anything else outside the database is a leak.
    let is_live_bundle = |h: &String| {
        h.starts_with(&format!("{}/tmp/inst-", data.display()))
            && h.ends_with("/bundle/config.json")
    };
    let (bundles, leaks): (Vec<String>, Vec<String>) =
        outside.iter().cloned().partition(is_live_bundle);
    // The search works: the build argument, which is not a secret, is found in a layer.
    let control = grep_files(&data.join("layers"), &visible);
    eprintln!(
        "secrets: canary found in {in_answers} of {} API answers and CLI outputs; with instances \
         running, in {} files outside meta.db ({} live instance bundles {bundles:?}, other {leaks:?}), \
         in the database files {in_db:?}; the build argument is in {} layer files",
        seen.len(),
        outside.len(),
        bundles.len(),
        control.len()
    );
    assert!(
        !control.is_empty(),
        "the byte search finds the build argument"
    );
    assert_eq!(in_answers, 0, "the canary came back in an API answer");
    assert_eq!(
        leaks,
        Vec::<String>::new(),
        "the canary outside meta.db (layers/, code/, logs/, blobs/, the server log, runc state)"
    );

    // Removing the functions stops every instance: nothing of them remains, no zombie either.
    for f in ["hello", "busy", "hog", "forks"] {
        s.ok(&["fn", "rm", f]);
    }
    s.assert_clean();
    // With no instance left, the canary is in the database files only.
    let after: Vec<String> = grep_files(data, &canary)
        .into_iter()
        .filter(|h| !in_database(h))
        .collect();
    eprintln!(
        "secrets after removal: canary in {} files outside meta.db",
        after.len()
    );
    assert_eq!(after, Vec::<String>::new(), "the canary outside meta.db");
    let procs = processes_of(&s);
    let zombies = zombies_of(s.pid().expect("pid"));
    eprintln!(
        "after removal: {} processes in this server's cgroups, {} zombie children of the server",
        procs.len(),
        zombies.len()
    );
    assert_eq!(procs, Vec::<String>::new(), "instance processes left");
    assert_eq!(zombies, Vec::<String>::new(), "zombies left");
    assert_eq!(health(&s), 200);
}
