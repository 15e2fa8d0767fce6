//! End to end: the real server, real runc containers and overlay mounts, driven through the CLI.
//! Every test here needs root; each skips with a printed reason when it cannot run.

mod common;

use common::{path_str, Server};

const MULTISTAGE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=debian-bookworm
FROM ${BASE} AS build
ARG GREETING=hello
ENV APP_HOME=/opt/app \
    MODE=build
ENV LEGACY value with spaces
WORKDIR $APP_HOME
WORKDIR src
COPY *.py ./
COPY --chown=1234:5678 data/ ${APP_HOME}/data/
RUN echo "${GREETING} from $(pwd)" > made.txt && ls /opt/app/src/*.py > listing.txt
RUN ["/bin/sh", "-c", "echo exec-form > exec.txt"]

FROM ${BASE}
ARG GREETING
ENV PATH=/opt/app/bin:$PATH TAG=${GREETING:-fallback} EMPTY=${UNSET:-dflt}
COPY --from=build /opt/app/src/made.txt /opt/app/src/listing.txt /opt/app/src/exec.txt /result/
COPY --from=build /opt/app/data /result/data
USER nobody
WORKDIR /result
LABEL org.example.team="runtime devs" version=1
EXPOSE 8080 53/udp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /result/made.txt"]
"#;

fn context(s: &Server) -> std::path::PathBuf {
    s.write("ctx/app.py", "print('app')\n");
    s.write("ctx/util.py", "X = 1\n");
    s.write("ctx/README.md", "not copied\n");
    s.write("ctx/data/a.txt", "A\n");
    s.write("ctx/data/sub/b.txt", "B\n");
    s.work().join("ctx")
}

#[test]
fn root_multistage_build_files_config_cache_and_versions() {
    require_root!();
    let s = Server::start();
    s.import_base("debian-bookworm");
    let ctx = context(&s);
    let df = s.write("Dockerfile", MULTISTAGE);
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "runtime",
            "create",
            name,
            "-f",
            path_str(&df),
            "--context",
            path_str(&ctx),
        ];
        args.extend(extra);
        s.json(&args)
    };
    let rt = create(
        "multi",
        &[
            "--build-arg",
            "GREETING=bonjour",
            "--memory",
            "128Mi",
            "--cpu",
            "0.5",
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(rt["version"], 1);
    assert_eq!(rt["base"], "debian-bookworm");
    assert_eq!(rt["resources"]["memory_bytes"], 128 << 20);
    assert_eq!(rt["resources"]["cpu_millis"], 500);
    assert_eq!(rt["resources"]["timeout_ms"], 10_000);
    let cfg = &rt["config"];
    assert_eq!(cfg["user"], "nobody");
    assert_eq!(cfg["workdir"], "/result");
    assert_eq!(cfg["entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["cmd"], serde_json::json!(["cat /result/made.txt"]));
    assert_eq!(cfg["labels"]["org.example.team"], "runtime devs");
    assert_eq!(
        cfg["exposed_ports"],
        serde_json::json!(["8080/tcp", "53/udp"])
    );
    let env: Vec<String> = cfg["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p[0].as_str().unwrap_or(""),
                p[1].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(env.contains(&"TAG=bonjour".to_string()), "{env:?}");
    assert!(env.contains(&"EMPTY=dflt".to_string()), "{env:?}");
    assert!(
        env.iter()
            .any(|e| e.starts_with("PATH=/opt/app/bin:/usr/local/sbin")),
        "{env:?}"
    );
    // Final stage: the base layer plus two COPY layers (and WORKDIR /result).
    let layers = rt["layers"].as_array().expect("layers");
    assert!(layers.len() >= 3, "{layers:?}");

    // Files, owners and the default command, seen from inside a fresh instance.
    let out = s.ok(&["runtime", "run", "multi"]);
    assert_eq!(out.trim(), "bonjour from /opt/app/src");
    let out = s.ok(&["runtime", "run", "multi", "--", "sh", "-c", "cat /result/listing.txt /result/exec.txt; stat -c '%u:%g %n' /result/data/a.txt /result/data/sub/b.txt; id -un; echo $LEGACY"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["/opt/app/src/app.py", "/opt/app/src/util.py", "exec-form"],
        "{out}"
    );
    assert_eq!(lines[3], "1234:5678 /result/data/a.txt", "{out}");
    assert_eq!(lines[4], "1234:5678 /result/data/sub/b.txt", "{out}");
    assert_eq!(lines[5], "nobody", "{out}");
    assert_eq!(
        lines[6], "",
        "ENV of the build stage does not leak into the final stage: {out}"
    );

    // An unchanged rebuild is served from the cache and is the next version with the same layers.
    let out = s.run(&[
        "runtime",
        "create",
        "multi",
        "-f",
        path_str(&df),
        "--context",
        path_str(&ctx),
        "--build-arg",
        "GREETING=bonjour",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    let fs_steps: Vec<&str> = progress
        .lines()
        .filter(|l| l.starts_with('[') && (l.contains("] RUN") || l.contains("] COPY")))
        .collect();
    assert!(!fs_steps.is_empty(), "{progress}");
    assert!(
        fs_steps.iter().all(|l| l.ends_with("(cached)")),
        "every RUN/COPY step cached:\n{progress}"
    );
    let v2 = s.json(&["runtime", "describe", "multi@2"]);
    let digests = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].clone())
            .collect()
    };
    assert_eq!(
        digests(&v2),
        digests(&rt),
        "an unchanged rebuild reuses every layer"
    );
    assert!(v2["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .all(|l| l["shared_by"].as_u64() >= Some(2)));
    // Older versions stay addressable; the bare name is the newest.
    assert_eq!(s.json(&["runtime", "describe", "multi@1"])["version"], 1);
    assert_eq!(s.json(&["runtime", "describe", "multi"])["version"], 2);

    // A changed source file invalidates only the steps that depend on it.
    s.write("ctx/util.py", "X = 2\n");
    let out = s.run(&[
        "runtime",
        "create",
        "multi",
        "-f",
        path_str(&df),
        "--context",
        path_str(&ctx),
        "--build-arg",
        "GREETING=bonjour",
    ]);
    assert!(out.status.success());
    let progress = String::from_utf8_lossy(&out.stderr);
    let copy_py = progress
        .lines()
        .find(|l| l.contains("] COPY *.py"))
        .expect("COPY step shown");
    assert!(!copy_py.ends_with("(cached)"), "{progress}");

    // A second runtime sharing the prefix shares its layers.
    let df2 = s.write(
        "Dockerfile2",
        "FROM debian-bookworm\nRUN echo shared > /shared.txt\n",
    );
    let df3 = s.write(
        "Dockerfile3",
        "FROM debian-bookworm\nRUN echo shared > /shared.txt\nRUN echo more > /more.txt\n",
    );
    let a = s.json(&["runtime", "create", "one", "-f", path_str(&df2)]);
    let b = s.json(&["runtime", "create", "two", "-f", path_str(&df3)]);
    assert_eq!(a["layers"][1]["digest"], b["layers"][1]["digest"]);
    assert_eq!(b["layers"][1]["shared_by"], 2);
    assert_eq!(b["layers"].as_array().expect("layers").len(), 3);

    // ls lists every version; rm removes one version, then the rest.
    let ls = s.json(&["runtime", "ls"]);
    let refs: Vec<String> = ls
        .as_array()
        .expect("list")
        .iter()
        .map(|r| format!("{}@{}", r["name"].as_str().unwrap_or(""), r["version"]))
        .collect();
    assert_eq!(refs, ["multi@1", "multi@2", "multi@3", "one@1", "two@1"]);
    s.ok(&["runtime", "rm", "multi@1"]);
    assert!(s
        .fails(&["runtime", "describe", "multi@1"])
        .contains("not found"));
    s.ok(&["runtime", "rm", "multi"]);
    assert!(s
        .fails(&["runtime", "describe", "multi"])
        .contains("not found"));
    s.assert_clean();
}

#[test]
fn root_bad_input_gives_clear_errors_and_leaves_nothing() {
    require_root!();
    let s = Server::start();
    s.import_base("debian-bookworm");
    let ctx = context(&s);
    let cases: &[(&str, &str)] = &[
        ("FROM debian-bookworm\nCOPY onlyone\n", "line 2"),
        (
            "FROM debian-bookworm\nFROBNICATE x\n",
            "unknown instruction",
        ),
        ("FROM debian-bookworm\nONBUILD RUN true\n", "ONBUILD"),
        ("FROM debian-bookworm\nCOPY missing.txt /x\n", "missing.txt"),
        (
            "FROM debian-bookworm\nCOPY ../../etc/passwd /x\n",
            "outside",
        ),
        ("FROM no-such-image\nRUN true\n", "no-such-image"),
        ("RUN true\n", "FROM"),
        (
            "FROM debian-bookworm\nRUN echo about to fail; echo detail >&2; exit 7\n",
            "exit code 7",
        ),
    ];
    let layers_before = s.json(&["image", "describe", "debian-bookworm"])["layers"].clone();
    for (i, (text, expect)) in cases.iter().enumerate() {
        let df = s.write(&format!("bad{i}"), text);
        let err = s.fails(&[
            "runtime",
            "create",
            "bad",
            "-f",
            path_str(&df),
            "--context",
            path_str(&ctx),
        ]);
        assert!(
            err.contains(expect),
            "case {i}: {text:?}: expected {expect:?} in:\n{err}"
        );
        if expect.starts_with("exit code") {
            assert!(
                err.contains("detail"),
                "the output tail is reported:\n{err}"
            );
            assert!(err.contains("line 2"), "the failing line is named:\n{err}");
        }
    }
    assert_eq!(
        s.json(&["runtime", "ls"]),
        serde_json::json!([]),
        "no half-made runtime"
    );
    assert_eq!(
        s.json(&["image", "describe", "debian-bookworm"])["layers"],
        layers_before
    );
    s.assert_clean();
}

#[test]
fn root_runtime_run_streams_output_and_exit_code_in_isolation() {
    require_root!();
    let s = Server::start();
    s.import_base("debian-bookworm");
    let df = s.write("Dockerfile", "FROM debian-bookworm\nENV GREETING=hi\n");
    s.ok(&["runtime", "create", "plain", "-f", path_str(&df)]);
    let out = s.run(&[
        "runtime",
        "run",
        "plain",
        "-e",
        "EXTRA=x",
        "--",
        "sh",
        "-c",
        "echo $GREETING $EXTRA; echo oops >&2; exit 42",
    ]);
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi x");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    // Loopback only unless --network.
    let out = s.ok(&[
        "runtime",
        "run",
        "plain",
        "--",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ]);
    assert_eq!(out.trim(), "lo");
    let out = s.ok(&[
        "runtime",
        "run",
        "plain",
        "--network",
        "--",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | wc -l",
    ]);
    assert!(out.trim().parse::<u32>().expect("count") >= 1);
    // Writes go to a throw-away layer.
    s.ok(&[
        "runtime",
        "run",
        "plain",
        "--",
        "sh",
        "-c",
        "echo x > /etc/scribble",
    ]);
    let out = s.run(&[
        "runtime",
        "run",
        "plain",
        "--",
        "test",
        "-e",
        "/etc/scribble",
    ]);
    assert_eq!(out.status.code(), Some(1));
    // A timeout kills the command.
    let out = s.run(&[
        "runtime",
        "run",
        "plain",
        "--timeout",
        "1s",
        "--",
        "sleep",
        "60",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out"),
        "{:?}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // JSON mode reports the result for scripts.
    let v = s.json(&["runtime", "run", "plain", "--", "true"]);
    assert_eq!(v["exit_code"], 0);
    s.assert_clean();
}

#[test]
fn root_images_ls_describe_rm_refuses_while_used() {
    require_root!();
    let s = Server::start();
    s.import_base("base-a");
    let img = s.json(&["image", "describe", "base-a"]);
    assert_eq!(img["source"], "import rootfs-tar");
    assert_eq!(img["layers"].as_array().expect("layers").len(), 1);
    assert!(img["size_bytes"].as_u64().expect("size") > 50 << 20);
    let df = s.write("Dockerfile", "FROM base-a\nRUN touch /x\n");
    s.ok(&["runtime", "create", "user", "-f", path_str(&df)]);
    assert_eq!(
        s.json(&["image", "describe", "base-a"])["used_by"],
        serde_json::json!(["user@1"])
    );
    let err = s.fails(&["image", "rm", "base-a"]);
    assert!(err.contains("in use") && err.contains("user@1"), "{err}");
    s.ok(&["runtime", "rm", "user"]);
    s.ok(&["image", "rm", "base-a"]);
    assert_eq!(s.json(&["image", "ls"]), serde_json::json!([]));
    // Removing the last users removes the layers from disk too.
    let left: Vec<_> = std::fs::read_dir(s.data.path().join("layers"))
        .expect("layers dir")
        .collect();
    assert!(left.is_empty(), "unused layers collected: {left:?}");
    s.assert_clean();
}

#[test]
fn root_server_killed_mid_build_recovers_cleanly() {
    require_root!();
    let mut s = Server::start();
    s.import_base("debian-bookworm");
    let df = s.write(
        "Dockerfile",
        "FROM debian-bookworm\nRUN echo started; sleep 300\n",
    );
    let mut child = s
        .cmd(&["runtime", "create", "slow", "-f", path_str(&df)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the step runs (a container and overlay mount exist), then kill -9 the server.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.mounts().is_empty() {
        assert!(std::time::Instant::now() < deadline, "build never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.kill9_and_restart();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(s.json(&["runtime", "ls"]), serde_json::json!([]));
    s.assert_clean();
    // The store still works after recovery.
    let df = s.write("Dockerfile2", "FROM debian-bookworm\nRUN echo ok > /ok\n");
    s.ok(&["runtime", "create", "after", "-f", path_str(&df)]);
    assert_eq!(
        s.ok(&["runtime", "run", "after", "--", "cat", "/ok"])
            .trim(),
        "ok"
    );
}
