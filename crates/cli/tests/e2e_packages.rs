//! End to end: environment packages built from Debian's mirror and PyPI, runtimes composed from
//! them (and the same packages installed in sequence), conflicts, updates, rollbacks, diffs,
//! storage accounting and garbage collection. Needs root; skips with a printed reason otherwise.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::{path_str, Server};

/// A server with the base image and the built-in runtimes.
fn server() -> Server {
    let s = Server::start_with(&["--idle-timeout", "3s"]);
    s.import_base("debian-bookworm");
    s.ok(&["bootstrap"]);
    s
}

const TOOL_SNIPPET: &str = r#"# A tool installed from the uploaded context.
ENV TOOL_HOME=/opt/tool PATH=/opt/tool/bin:$PATH
WORKDIR /opt/tool
COPY greeting.txt share/
RUN mkdir -p bin && printf '#!/bin/sh\ncat /opt/tool/share/greeting.txt\n' > bin/strata-tool && chmod 755 bin/strata-tool
"#;

/// Uses every package of the test library and reports what it found.
const PROBE: &str = r#"
import os, shutil, subprocess

def run(argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip()

def handler(event, context):
    out = {}
    out["jq"] = run(["jq", "-n", "1+2"]) if shutil.which("jq") else None
    out["onig"] = os.path.exists("/usr/lib/x86_64-linux-gnu/libonig.so.5")
    try:
        import tomli
        out["tomli"] = tomli.loads("a = 7")["a"]
    except ImportError:
        out["tomli"] = None
    out["pip"] = subprocess.run(["python3", "-m", "pip", "--version"], capture_output=True).returncode == 0
    out["tool"] = run(["strata-tool"]) if shutil.which("strata-tool") else None
    out["tool_home"] = os.environ.get("TOOL_HOME")
    return out
"#;

/// The stanzas of a deb822 file, as a set (order-insensitive comparison).
fn stanzas(text: &str) -> BTreeSet<String> {
    text.split("\n\n")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_string).collect()
}

fn cat(s: &Server, runtime: &str, path: &str) -> String {
    s.ok(&["runtime", "run", runtime, "--", "cat", path])
}

/// Asserts that a composed runtime shows the same files as the same packages installed in
/// sequence, except the documented differences: package-manager state files whose entries are
/// the same set in another order, and Python bytecode caches that embed the time their source
/// was installed.
fn assert_equivalent(s: &Server, composed: &str, sequential: &str) {
    let d = s.json(&["runtime", "diff", composed, sequential]);
    assert_eq!(strings(&d["files_added"]), Vec::<String>::new(), "{d}");
    assert_eq!(strings(&d["files_removed"]), Vec::<String>::new(), "{d}");
    let changed = strings(&d["files_changed"]);
    eprintln!(
        "{composed} vs {sequential}: {} files differ: {changed:?}",
        changed.len()
    );
    for path in changed {
        match path.as_str() {
            "/var/lib/dpkg/status" | "/var/lib/apt/extended_states" => {
                let a = cat(s, composed, &path);
                let b = cat(s, sequential, &path);
                assert_eq!(stanzas(&a), stanzas(&b), "{path}: same stanzas");
            }
            "/var/lib/dpkg/triggers/File" => {
                assert_eq!(
                    lines(&cat(s, composed, &path)),
                    lines(&cat(s, sequential, &path))
                );
            }
            p if p.ends_with(".pyc") && p.contains("/__pycache__/") => {}
            other => panic!(
                "undocumented difference between {composed} (composed) and {sequential} (sequence): {other}"
            ),
        }
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn root_packages_compose_like_sequential_install_update_rollback_and_gc() {
    require_root!();
    let s = server();

    // ---- packages ----
    let t = Instant::now();
    let jq = s.json(&[
        "package", "create", "jq", "--base", "python3", "--apt", "jq",
    ]);
    eprintln!("package jq built in {:?}", t.elapsed());
    assert_eq!(jq["version"], "1");
    let jq_layer = jq["builds"][0]["layer"]["digest"].clone();
    assert!(jq_layer.is_string(), "{jq}");
    // Same recipe, same base: the same package, no rebuild.
    let t = Instant::now();
    let again = s.json(&[
        "package", "create", "jq", "--base", "python3", "--apt", "jq",
    ]);
    assert_eq!(again["version"], "1");
    assert_eq!(again["builds"][0]["layer"]["digest"], jq_layer);
    assert_eq!(again["builds"].as_array().map(Vec::len), Some(1));
    eprintln!("unchanged recipe answered in {:?}", t.elapsed());

    // A package whose dependency overlaps jq's (libonig5): identical files, not a conflict.
    s.ok(&[
        "package", "create", "onig", "--base", "python3", "--apt", "libonig5",
    ]);
    s.ok(&[
        "package",
        "create",
        "pip",
        "--base",
        "python3",
        "--apt",
        "python3-pip",
    ]);
    s.ok(&[
        "package",
        "create",
        "tomli",
        "--base",
        "python3",
        "--pip",
        "tomli==2.0.1",
        "--requires",
        "pip",
    ]);
    let snippet = s.write("tool/tool.Dockerfile", TOOL_SNIPPET);
    s.write("tool/ctx/greeting.txt", "hello from tool\n");
    let ctx = snippet.parent().expect("dir").join("ctx");
    let tool = s.json(&[
        "package",
        "create",
        "tool@0.1",
        "--base",
        "python3",
        "-f",
        path_str(&snippet),
        "--context",
        path_str(&ctx),
    ]);
    assert_eq!(tool["version"], "0.1");
    let env = strings(&tool["env"]);
    assert!(env.iter().any(|e| e == "TOOL_HOME=/opt/tool"), "{env:?}");
    // Versions are immutable.
    let err = s.fails(&[
        "package", "create", "tool@0.1", "--base", "python3", "--run", "true",
    ]);
    assert!(err.contains("already exists"), "{err}");
    // Only RUN, ENV, COPY and WORKDIR.
    let bad = s.write("bad.Dockerfile", "RUN true\nCMD [\"x\"]\n");
    let err = s.fails(&[
        "package",
        "create",
        "bad",
        "--base",
        "python3",
        "-f",
        path_str(&bad),
    ]);
    assert!(err.contains("line 2") && err.contains("CMD"), "{err}");

    // ---- a failed build leaves nothing behind ----
    let err = s.fails(&[
        "package",
        "create",
        "broken",
        "--base",
        "python3",
        "--run",
        "echo half > /opt/half && false",
    ]);
    assert!(err.contains("exit code 1"), "{err}");
    let list = s.json(&["package", "ls"]);
    assert!(
        !list.to_string().contains("\"broken\""),
        "no package recorded: {list}"
    );
    assert!(s.mounts().is_empty(), "mounts left: {:?}", s.mounts());
    assert!(
        s.scratch_entries().is_empty(),
        "scratch left: {:?}",
        s.scratch_entries()
    );

    // ---- composed and layered (sequential) runtimes ----
    let set = "jq,onig,tomli,tool";
    let t = Instant::now();
    let composed = s.json(&[
        "runtime",
        "create",
        "web",
        "--base",
        "python3",
        "--packages",
        set,
    ]);
    eprintln!("composed from built packages in {:?}", t.elapsed());
    assert_eq!(composed["kind"], "composed");
    assert_eq!(
        strings(&composed["packages"]),
        vec!["jq@1", "onig@1", "pip@1", "tomli@1", "tool@0.1"],
        "requirements come before the packages that need them"
    );
    let t = Instant::now();
    let layered = s.json(&[
        "runtime",
        "create",
        "web-seq",
        "--base",
        "python3",
        "--packages",
        set,
        "--layered",
    ]);
    eprintln!("built as a layered chain in {:?}", t.elapsed());
    assert_eq!(layered["kind"], "layered");

    // The composition shows the same files as the sequential install, except the documented
    // differences: package-manager state files whose entries are the same set in another order,
    // and Python bytecode caches that embed the time their source was installed.
    assert_equivalent(&s, "web@1", "web-seq@1");
    // The merge layer's ld.so.cache knows the packages' libraries.
    let ldconfig = s.ok(&["runtime", "run", "web", "--", "/sbin/ldconfig", "-p"]);
    assert!(ldconfig.contains("libonig.so.5"), "{ldconfig}");
    let status = cat(&s, "web", "/var/lib/dpkg/status");
    for p in [
        "Package: jq",
        "Package: libonig5",
        "Package: python3-pip",
        "Package: python3",
    ] {
        assert!(status.contains(&format!("{p}\n")), "dpkg status has {p}");
    }

    // A layered runtime reuses every prefix another runtime built.
    let prefix = s.json(&[
        "runtime",
        "create",
        "jq-seq",
        "--base",
        "python3",
        "--packages",
        "jq,onig",
        "--layered",
    ]);
    let digests = |v: &serde_json::Value| -> Vec<String> {
        v["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("digest").to_string())
            .collect()
    };
    let (p, full) = (digests(&prefix), digests(&layered));
    let own = p.len() - 1; // without the merge layer
    assert_eq!(p[..own], full[..own], "the chain prefix is shared");

    // More package sets, composed and in sequence: two Debian packages with a shared
    // dependency, and a pip package with its pip requirement.
    s.ok(&[
        "runtime",
        "create",
        "jq-comp",
        "--base",
        "python3",
        "--packages",
        "jq,onig",
    ]);
    assert_equivalent(&s, "jq-comp@1", "jq-seq@1");
    s.ok(&[
        "runtime",
        "create",
        "py-comp",
        "--base",
        "python3",
        "--packages",
        "tomli",
    ]);
    s.ok(&[
        "runtime",
        "create",
        "py-seq",
        "--base",
        "python3",
        "--packages",
        "tomli",
        "--layered",
    ]);
    assert_equivalent(&s, "py-comp@1", "py-seq@1");
    let out = s.ok(&[
        "runtime",
        "run",
        "py-comp",
        "--",
        "python3",
        "-c",
        "import tomli; print(tomli.loads('x = 1')['x'])",
    ]);
    assert_eq!(out.trim(), "1");

    // ---- functions use every package ----
    let code = s.write("probe/app.py", PROBE);
    let dir = code.parent().expect("dir").to_path_buf();
    s.ok(&[
        "fn",
        "create",
        "probe",
        "--runtime",
        "web",
        "--code",
        path_str(&dir),
        "--handler",
        "app.handler",
        "--timeout",
        "20s",
    ]);
    let probe = |s: &Server| -> serde_json::Value {
        serde_json::from_str(s.ok(&["invoke", "probe", "-d", "{}"]).trim()).expect("json")
    };
    let v = probe(&s);
    assert_eq!(v["jq"], "3", "{v}");
    assert_eq!(v["onig"], true, "{v}");
    assert_eq!(v["tomli"], 7, "{v}");
    assert_eq!(v["pip"], true, "{v}");
    assert_eq!(v["tool"], "hello from tool", "{v}");
    assert_eq!(v["tool_home"], "/opt/tool", "{v}");

    // ---- the same through a project manifest ----
    s.write(
        "project/strata.toml",
        r#"
[packages.hello-pkg]
base = "python3"
run = ["mkdir -p /opt/hello && echo hi > /opt/hello/x"]

[runtimes.web-up]
base = "python3"
packages = ["jq", "tomli", "hello-pkg"]

[functions.probe-up]
runtime = "web-up"
handler = "app.handler"
code = "src"
"#,
    );
    s.write("project/src/app.py", PROBE);
    let manifest = s.work().join("project/strata.toml");
    let up = s.json(&["up", "-f", path_str(&manifest)]);
    let action = |v: &serde_json::Value, kind: &str, name: &str| -> String {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| {
                let n = i["name"].as_str().unwrap_or_default();
                i["kind"] == kind && (n == name || n.starts_with(&format!("{name}@")))
            })
            .map(|i| i["action"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("{kind} {name} in {v}"))
    };
    assert_eq!(action(&up, "package", "hello-pkg"), "created", "{up}");
    assert_eq!(action(&up, "runtime", "web-up"), "created", "{up}");
    assert_eq!(action(&up, "function", "probe-up"), "created", "{up}");
    let again = s.json(&["up", "-f", path_str(&manifest)]);
    assert_eq!(action(&again, "runtime", "web-up"), "unchanged", "{again}");
    assert_eq!(
        action(&again, "function", "probe-up"),
        "unchanged",
        "{again}"
    );
    let v: serde_json::Value =
        serde_json::from_str(s.ok(&["invoke", "probe-up", "-d", "{}"]).trim()).expect("json");
    assert_eq!(v["jq"], "3", "{v}");
    assert_eq!(v["tomli"], 7, "{v}");
    assert_eq!(v["tool"], serde_json::Value::Null, "{v}");
    let hello = s.ok(&["runtime", "run", "web-up", "--", "cat", "/opt/hello/x"]);
    assert_eq!(hello.trim(), "hi");
    s.ok(&["down", "-f", path_str(&manifest)]);
    let err = s.fails(&["package", "describe", "hello-pkg"]);
    assert!(err.contains("not found"), "{err}");
    let err = s.fails(&["fn", "describe", "probe-up"]);
    assert!(err.contains("not found"), "{err}");

    // ---- upgrade, downgrade, rollback: no rebuild, the function follows ----
    let t = Instant::now();
    let v2 = s.json(&["runtime", "update", "web", "--remove", "tool"]);
    eprintln!("update (remove) took {:?}", t.elapsed());
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["parent"], 1);
    let v = probe(&s);
    assert_eq!(
        v["tool"],
        serde_json::Value::Null,
        "the function moved: {v}"
    );
    assert_eq!(v["jq"], "3", "{v}");
    let d = s.json(&["runtime", "diff", "web@1", "web@2"]);
    assert_eq!(strings(&d["packages_removed"]), vec!["tool@0.1"]);
    let removed = strings(&d["files_removed"]);
    assert!(
        removed.iter().any(|f| f == "/opt/tool/bin/strata-tool"),
        "{removed:?}"
    );
    // Removing a package another one needs is refused, naming it.
    let err = s.fails(&["runtime", "update", "web", "--remove", "pip"]);
    assert!(err.contains("tomli@1"), "{err}");
    let err = s.fails(&["runtime", "update", "web", "--add", "jq"]);
    assert!(err.contains("--set"), "{err}");

    let t = Instant::now();
    let v3 = s.json(&["runtime", "rollback", "web"]);
    eprintln!("rollback took {:?}", t.elapsed());
    assert_eq!(v3["version"], 3);
    assert_eq!(
        digests(&v3),
        digests(&composed),
        "rollback points back at v1's layers"
    );
    let v = probe(&s);
    assert_eq!(v["tool"], "hello from tool", "{v}");
    let err = s.fails(&["runtime", "rollback", "web"]);
    assert!(err.contains("--to"), "{err}");
    // A new package version by --set, built first since it does not exist on this base yet.
    s.write("tool/ctx2/greeting.txt", "hello from tool 2\n");
    let ctx2 = snippet.parent().expect("dir").join("ctx2");
    s.ok(&[
        "package",
        "create",
        "tool@0.2",
        "--base",
        "debian-bookworm",
        "-f",
        path_str(&snippet),
        "--context",
        path_str(&ctx2),
    ]);
    let v4 = s.json(&["runtime", "update", "web", "--set", "tool@0.2"]);
    assert!(strings(&v4["packages"]).contains(&"tool@0.2".to_string()));
    let built = s.json(&["package", "describe", "tool@0.2"]);
    let bases: Vec<&str> = built["builds"]
        .as_array()
        .expect("builds")
        .iter()
        .filter_map(|b| b["base"].as_str())
        .collect();
    assert!(
        bases.contains(&"debian-bookworm") && bases.contains(&"python3@1"),
        "built on the runtime's base when first needed: {bases:?}"
    );
    let d = s.json(&["runtime", "diff", "web@3", "web@4"]);
    assert_eq!(d["packages_changed"][0]["name"], "tool", "{d}");
    assert_eq!(
        strings(&d["files_changed"]),
        vec!["/opt/tool/share/greeting.txt"],
        "{d}"
    );
    assert_eq!(probe(&s)["tool"], "hello from tool 2");

    // ---- conflicts ----
    s.ok(&[
        "package",
        "create",
        "clash-a",
        "--base",
        "python3",
        "--run",
        "mkdir -p /opt/clash && echo one > /opt/clash/file",
    ]);
    s.ok(&[
        "package",
        "create",
        "clash-b",
        "--base",
        "python3",
        "--run",
        "mkdir -p /opt/clash && echo two > /opt/clash/file",
    ]);
    let err = s.fails(&[
        "runtime",
        "create",
        "clash",
        "--base",
        "python3",
        "--packages",
        "clash-a,clash-b",
    ]);
    assert!(
        err.contains("/opt/clash/file") && err.contains("clash-a@1") && err.contains("clash-b@1"),
        "{err}"
    );
    let err = s.fails(&["runtime", "describe", "clash"]);
    assert!(err.contains("not found"), "no runtime recorded: {err}");
    // The same content from two packages is not a conflict.
    s.ok(&[
        "package",
        "create",
        "same-a",
        "--base",
        "python3",
        "--run",
        "mkdir -p /opt/same && echo same > /opt/same/file",
    ]);
    // Another recipe, so another build at another time: only the mtimes differ.
    s.ok(&[
        "package",
        "create",
        "same-b",
        "--base",
        "python3",
        "--run",
        "mkdir -p /opt/same; echo same > /opt/same/file",
    ]);
    // The same recipe under another name shares the layer.
    let c = s.json(&[
        "package",
        "create",
        "same-c",
        "--base",
        "python3",
        "--run",
        "mkdir -p /opt/same; echo same > /opt/same/file",
    ]);
    let b = s.json(&["package", "describe", "same-b"]);
    assert_eq!(
        b["builds"][0]["layer"]["digest"], c["builds"][0]["layer"]["digest"],
        "same recipe, same base: one layer"
    );
    s.ok(&[
        "runtime",
        "create",
        "same",
        "--base",
        "python3",
        "--packages",
        "same-a,same-b,same-c",
    ]);
    assert_eq!(
        s.ok(&["runtime", "run", "same", "--", "cat", "/opt/same/file"])
            .trim(),
        "same"
    );

    // ---- storage: dedup accounting and GC ----
    let stats = s.json(&["store", "stats"]);
    eprintln!("store stats: {stats}");
    let n = |k: &str| {
        stats[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {stats}"))
    };
    assert!(n("physical_bytes") < n("logical_bytes"), "{stats}");
    assert!(stats["ratio"].as_f64().unwrap_or(0.0) > 1.0, "{stats}");
    assert!(
        n("dedup_saved_bytes") > 0,
        "libonig5 is stored once: {stats}"
    );
    assert!(
        n("distinct_content_bytes") <= n("physical_bytes"),
        "{stats}"
    );

    // Referenced packages cannot go; unreferenced ones can, and GC frees their data.
    let err = s.fails(&["package", "rm", "jq"]);
    assert!(err.contains("web@"), "{err}");
    s.ok(&["package", "rm", "clash-a"]);
    s.ok(&["package", "rm", "clash-b"]);
    s.ok(&["runtime", "rm", "same"]);
    s.ok(&["package", "rm", "same-a"]);
    s.ok(&["package", "rm", "same-b"]);
    s.ok(&["package", "rm", "same-c"]);
    let gc = s.json(&["store", "gc"]);
    eprintln!("gc: {gc}");
    // Everything still referenced works after GC.
    let v = probe(&s);
    assert_eq!(v["jq"], "3", "{v}");
    assert_eq!(v["tool"], "hello from tool 2", "{v}");
    for rt in ["web@1", "web@2", "web@3", "web@4", "web-seq@1", "jq-seq@1"] {
        let out = s.ok(&["runtime", "run", rt, "--", "python3", "-c", "print('ok')"]);
        assert_eq!(out.trim(), "ok", "{rt} still runs after GC");
    }
    let after = s.json(&["store", "stats"]);
    assert!(
        after["physical_bytes"].as_u64() <= stats["physical_bytes"].as_u64(),
        "{after}"
    );
    s.ok(&["fn", "rm", "probe"]);
}
