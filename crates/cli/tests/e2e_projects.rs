//! End to end: projects from templates deployed with `strata up` / `strata down` from their
//! `strata.toml`, code imported by the server from a local git repository, and the CLI's
//! completions and errors. Tests that run containers need root and skip with a printed reason
//! when they cannot run.

mod common;

use std::path::Path;
use std::process::Command;

use common::{path_str, Server, BIN};

/// A server with the built-in runtimes that may fetch code from local git repositories.
fn server_with_runtimes() -> Server {
    let s = Server::start_with(&["--idle-timeout", "3s", "--git-allow", "https,file"]);
    s.import_base("debian-bookworm");
    let out = s.ok(&["bootstrap"]);
    assert!(out.contains("python3") && out.contains("nodejs"), "{out}");
    s
}

/// Runs the CLI without a server behind `STRATA_URL` (nothing listens on port 9).
fn offline(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("STRATA_URL", "http://127.0.0.1:9")
        .env("STRATA_TOKEN", "t")
        .output()
        .expect("run strata")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Strata Test",
            "-c",
            "user.email=test@strata.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn items(v: &serde_json::Value) -> Vec<(String, String, String, Vec<String>)> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap_or_default().to_string(),
                i["name"].as_str().unwrap_or_default().to_string(),
                i["action"].as_str().unwrap_or_default().to_string(),
                i["changed"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn invoke(s: &Server, name: &str, event: &str) -> serde_json::Value {
    let out = s.ok(&["invoke", name, "-d", event]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {out}"))
}

#[test]
fn completions_for_every_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish"] {
        let out = offline(&["completions", shell], dir.path());
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.len() > 1000, "{shell}: {text}");
        for word in ["up", "down", "init", "deploy", "completions"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = offline(&["-o", "json", "completions", "bash"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["shell"], "bash");
    assert!(v["script"].as_str().expect("script").contains("_strata"));
}

#[test]
fn init_writes_templates_and_manifest_errors_are_precise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let list: serde_json::Value =
        serde_json::from_slice(&offline(&["-o", "json", "fn", "templates"], d).stdout)
            .expect("templates json");
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for t in [
        "python-hello",
        "python-http",
        "node-hello",
        "node-http",
        "python-json-transform",
    ] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }

    let out = offline(&["fn", "init", "hello", "--template", "python-hello"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("hello/strata.toml").is_file());
    assert!(d.join("hello/src/app.py").is_file());
    // Existing files are not overwritten without --force.
    let out = offline(&["fn", "init", "hello", "--template", "python-hello"], d);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = offline(&["fn", "init", "x", "--template", "cobol"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("unknown template \"cobol\"")
            && err.contains("node-http"),
        "{err}"
    );

    // Mistakes are reported before anything is sent, with file, line, key and expectation.
    let manifest = d.join("hello/strata.toml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        text.replace("memory = \"128Mi\"", "memory = \"lots\"\nmemry = 1"),
    )
    .expect("write");
    let out = offline(&["up", "-f", path_str(&manifest)], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("strata.toml:11:1: functions.hello.resources.memry: unknown field `memry`, expected one of `memory`, `cpu`, `timeout`"),
        "{err}"
    );
    std::fs::write(
        &manifest,
        text.replace("memory = \"128Mi\"", "memory = \"lots\""),
    )
    .expect("write");
    let out = offline(&["up"], &d.join("hello"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("strata.toml:10:10: functions.hello.resources.memory: invalid memory \"lots\": expected a size such as 128Mi"),
        "{err}"
    );
    // A valid manifest with no server gets the fix.
    std::fs::write(&manifest, &text).expect("write");
    let out = offline(&["up"], &d.join("hello"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the Strata server at http://127.0.0.1:9")
            && err.contains("strata server"),
        "{err}"
    );
    let out = offline(&["up"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("strata fn init"), "{err}");
}

#[test]
fn root_projects_from_templates_up_and_down() {
    require_root!();
    let s = server_with_runtimes();
    let work = s.work();
    std::fs::create_dir_all(&work).expect("work");
    let templates = [
        "python-hello",
        "python-http",
        "node-hello",
        "node-http",
        "python-json-transform",
    ];
    let manifest = |t: &str| work.join(t).join("strata.toml");
    for t in templates {
        let dir = work.join(t);
        s.ok(&["fn", "init", t, "--template", t, "--dir", path_str(&dir)]);
        let v = s.json(&["up", "-f", path_str(&manifest(t))]);
        assert_eq!(
            items(&v),
            vec![("function".into(), t.to_string(), "created".into(), vec![])],
            "{v}"
        );
    }
    // Up again: nothing changes, and it says so.
    for t in templates {
        let out = s.ok(&["up", "-f", path_str(&manifest(t))]);
        assert!(
            out.contains("unchanged") && out.contains("nothing changed"),
            "{out}"
        );
    }

    // The templates run on the built-in runtimes.
    let v = invoke(&s, "python-hello", r#"{"name": "Ada"}"#);
    assert_eq!(v["message"], "Hello, Ada!");
    assert_eq!(v["function"], "python-hello");
    let v = invoke(&s, "node-hello", r#"{"name": "Ada"}"#);
    assert_eq!(v["message"], "Hello, Ada!");
    assert_eq!(v["function"], "node-hello");
    let event =
        std::fs::read_to_string(work.join("python-json-transform/event.json")).expect("event");
    let v = invoke(&s, "python-json-transform", &event);
    assert_eq!(v["customer"], "Ada");
    assert_eq!(v["count"], 3);
    assert_eq!(v["total"], 6.0);
    assert_eq!(v["lines"][0]["sku"], "A-1");
    let out = s.run(&[
        "invoke",
        "python-json-transform",
        "-d",
        r#"{"items": [{"price": 1}]}"#,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("items[0].sku is missing"));
    let client = reqwest::blocking::Client::new();
    for t in ["python-http", "node-http"] {
        let resp = client
            .get(format!("{}/fn/{t}/hello?name=you", s.url))
            .bearer_auth(s.token())
            .send()
            .expect("trigger");
        assert_eq!(resp.status().as_u16(), 200, "{t}");
        let v: serde_json::Value = resp.json().expect("json");
        assert_eq!(v["message"], "Hello, you!", "{t}");
        assert_eq!(v["path"], "/hello", "{t}");
        let resp = client
            .post(format!("{}/fn/{t}/orders", s.url))
            .bearer_auth(s.token())
            .body(r#"{"n": 1}"#)
            .send()
            .expect("trigger");
        assert_eq!(resp.status().as_u16(), 201, "{t}");
        let v: serde_json::Value = resp.json().expect("json");
        assert_eq!(v["received"], serde_json::json!({"n": 1}), "{t}");
        // The manifest's route takes GET and POST only; private without the token.
        let resp = client
            .delete(format!("{}/fn/{t}/x", s.url))
            .bearer_auth(s.token())
            .send()
            .expect("trigger");
        assert_eq!(resp.status().as_u16(), 404, "{t}");
        let e: serde_json::Value = resp.json().expect("json");
        assert!(
            e["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("no route"),
            "{e}"
        );
        let resp = client
            .get(format!("{}/fn/{t}/hello", s.url))
            .send()
            .expect("trigger");
        assert_eq!(resp.status().as_u16(), 401, "{t}");
    }

    // Edit the code: only that function is updated, and says why.
    let app = work.join("python-hello/src/app.py");
    let code = std::fs::read_to_string(&app).expect("read");
    std::fs::write(&app, code.replace("Hello, ", "Howdy, ")).expect("write");
    let before = s.json(&["fn", "describe", "python-hello"]);
    // A dry run says what would change and changes nothing.
    let v = s.json(&["up", "--dry-run", "-f", path_str(&manifest("python-hello"))]);
    assert_eq!(v["dry_run"], true);
    assert_eq!(
        items(&v),
        vec![(
            "function".into(),
            "python-hello".into(),
            "updated".into(),
            vec!["code".into()]
        )]
    );
    let same = s.json(&["fn", "describe", "python-hello"]);
    assert_eq!(same["revision"], before["revision"]);
    assert_eq!(same["code_digest"], before["code_digest"]);
    let v = s.json(&["up", "-f", path_str(&manifest("python-hello"))]);
    assert_eq!(
        items(&v),
        vec![(
            "function".into(),
            "python-hello".into(),
            "updated".into(),
            vec!["code".into()]
        )]
    );
    assert_eq!(
        invoke(&s, "python-hello", r#"{"name": "Ada"}"#)["message"],
        "Howdy, Ada!"
    );
    // Edit the configuration: the changed fields are named.
    let text = std::fs::read_to_string(manifest("python-hello")).expect("read");
    std::fs::write(
        manifest("python-hello"),
        text.replace("memory = \"128Mi\"", "memory = \"192Mi\"")
            + "\n[functions.python-hello.env]\nGREETING = \"hi\"\n",
    )
    .expect("write");
    let out = s.ok(&["up", "-f", path_str(&manifest("python-hello"))]);
    assert!(
        out.contains("updated (resources.memory, env)") && out.contains("1 updated"),
        "{out}"
    );
    let info = s.json(&["fn", "describe", "python-hello"]);
    assert_eq!(info["resources"]["memory_bytes"], 192 << 20);
    assert_eq!(info["env"]["GREETING"], "hi");
    let v = s.json(&["up", "-f", path_str(&manifest("python-hello"))]);
    assert_eq!(items(&v)[0].2, "unchanged");

    // Down removes what the manifest describes; again, there is nothing left.
    for t in templates {
        let v = s.json(&["down", "-f", path_str(&manifest(t))]);
        assert_eq!(
            items(&v),
            vec![("function".into(), t.to_string(), "removed".into(), vec![])]
        );
    }
    let v = s.json(&["down", "-f", path_str(&manifest("python-hello"))]);
    assert_eq!(items(&v)[0].2, "absent");
    assert_eq!(s.json(&["fn", "ls"]), serde_json::json!([]));
    s.assert_clean();
}

#[test]
fn root_functions_from_a_git_repository() {
    require_root!();
    let s = server_with_runtimes();
    let repo = tempfile::tempdir().expect("repo");
    let r = repo.path();
    git(r, &["init", "-q"]);
    std::fs::create_dir_all(r.join("functions/hello")).expect("mkdir");
    std::fs::write(r.join("README.md"), "not code\n").expect("write");
    let app = r.join("functions/hello/app.py");
    std::fs::write(
        &app,
        "def handler(event, context):\n    return {\"v\": 1}\n",
    )
    .expect("write");
    git(r, &["add", "."]);
    git(r, &["commit", "-qm", "v1"]);
    git(r, &["tag", "v1"]);
    let v1 = git(r, &["rev-parse", "HEAD"]);
    std::fs::write(
        &app,
        "def handler(event, context):\n    return {\"v\": 2}\n",
    )
    .expect("write");
    git(r, &["commit", "-qam", "v2"]);
    let url = path_str(r);

    // Deploy at a tag and a subdirectory: the code is that directory at that commit.
    let info = s.json(&[
        "fn",
        "deploy",
        "fromgit",
        "--runtime",
        "python3",
        "--handler",
        "app.handler",
        "--git",
        url,
        "--ref",
        "v1",
        "--subdir",
        "functions/hello",
    ]);
    assert_eq!(info["revision"], 1);
    assert_eq!(info["git"]["commit"], v1);
    assert_eq!(info["git"]["ref"], "v1");
    assert_eq!(info["git"]["subdir"], "functions/hello");
    assert_eq!(invoke(&s, "fromgit", "{}"), serde_json::json!({"v": 1}));
    // Deploy again from the branch: a new revision with the new code.
    let info = s.json(&[
        "fn",
        "deploy",
        "fromgit",
        "--git",
        &format!("file://{url}"),
        "--ref",
        "main",
        "--subdir",
        "functions/hello",
    ]);
    assert_eq!(info["revision"], 2);
    assert_ne!(info["git"]["commit"], v1);
    assert_eq!(invoke(&s, "fromgit", "{}"), serde_json::json!({"v": 2}));

    // Bad sources are refused with what would be right, and leave nothing behind.
    let err = s.fails(&["fn", "update", "fromgit", "--git", url, "--ref", "nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = s.fails(&[
        "fn", "update", "fromgit", "--git", url, "--subdir", "missing",
    ]);
    assert!(err.contains("has no directory \"missing\""), "{err}");
    let err = s.fails(&["fn", "update", "fromgit", "--git", "ssh://host/repo.git"]);
    assert!(err.contains("not supported"), "{err}");
    assert_eq!(s.json(&["fn", "describe", "fromgit"])["revision"], 2);

    // The same from a manifest: created, then unchanged (same code at the same ref).
    let proj = s.work().join("gitproj");
    std::fs::create_dir_all(&proj).expect("mkdir");
    std::fs::write(
        proj.join("strata.toml"),
        format!(
            "[functions.gitfn]\nruntime = \"python3\"\nhandler = \"app.handler\"\ngit = {{ url = \"{url}\", ref = \"v1\", subdir = \"functions/hello\" }}\n"
        ),
    )
    .expect("write");
    let m = proj.join("strata.toml");
    let v = s.json(&["up", "-f", path_str(&m)]);
    assert_eq!(items(&v)[0].2, "created");
    let v = s.json(&["up", "-f", path_str(&m)]);
    assert_eq!(items(&v)[0].2, "unchanged", "{v}");
    assert_eq!(invoke(&s, "gitfn", "{}"), serde_json::json!({"v": 1}));
    s.ok(&["down", "-f", path_str(&m)]);
    s.ok(&["fn", "rm", "fromgit"]);

    // Errors that say how to fix them.
    let err = s.fails(&[
        "fn",
        "deploy",
        "typo",
        "--runtime",
        "pyhton3",
        "--handler",
        "app.handler",
        "--git",
        url,
    ]);
    assert!(
        err.contains("runtime \"pyhton3\" not found")
            && err.contains("available runtimes:")
            && err.contains("python3"),
        "{err}"
    );
    let err = s.fails(&["fn", "deploy", "typo", "--git", url]);
    assert!(err.contains("needs --runtime"), "{err}");
    let err = s.fails(&["fn", "describe", "nosuch"]);
    assert!(err.contains("there are no functions yet"), "{err}");
    let out = Command::new(BIN)
        .args(["fn", "ls", "--data-dir", "/nonexistent-strata-data"])
        .env("STRATA_URL", &s.url)
        .env_remove("STRATA_TOKEN")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("/nonexistent-strata-data/admin.token could not be read")
            && err.contains("STRATA_TOKEN"),
        "{err}"
    );
    s.assert_clean();
}

#[test]
fn root_runtimes_from_a_manifest_rebuild_only_when_their_inputs_change() {
    require_root!();
    let s = server_with_runtimes();
    let proj = s.work().join("rtproj");
    std::fs::create_dir_all(proj.join("runtime")).expect("mkdir");
    std::fs::create_dir_all(proj.join("src")).expect("mkdir");
    std::fs::write(
        proj.join("runtime/Dockerfile"),
        "FROM python3\nCOPY greeting.txt /opt/greeting.txt\n",
    )
    .expect("write");
    std::fs::write(proj.join("runtime/greeting.txt"), "hello").expect("write");
    std::fs::write(
        proj.join("src/app.py"),
        "def handler(event, context):\n    return open('/opt/greeting.txt').read()\n",
    )
    .expect("write");
    std::fs::write(
        proj.join("strata.toml"),
        r#"volumes = ["rtdata"]

[runtimes.greeter]
dockerfile = "runtime/Dockerfile"
context = "runtime"

[functions.greet]
runtime = "greeter"
handler = "app.handler"
code = "src"
volumes = ["rtdata:/mnt/data"]
"#,
    )
    .expect("write");
    let m = proj.join("strata.toml");
    let v = s.json(&["up", "-f", path_str(&m)]);
    assert_eq!(
        items(&v),
        vec![
            ("volume".into(), "rtdata".into(), "created".into(), vec![]),
            (
                "runtime".into(),
                "greeter@1".into(),
                "created".into(),
                vec![]
            ),
            ("function".into(), "greet".into(), "created".into(), vec![]),
        ]
    );
    assert_eq!(invoke(&s, "greet", "{}"), "hello");
    let out = s.ok(&["up", "-f", path_str(&m)]);
    assert!(
        out.contains("greeter@1") && out.contains("nothing changed"),
        "{out}"
    );

    // A change to the build context makes the next version; the function follows the name.
    std::fs::write(proj.join("runtime/greeting.txt"), "bonjour").expect("write");
    let v = s.json(&["up", "--dry-run", "-f", path_str(&m)]);
    assert_eq!(items(&v)[1].2, "updated");
    assert_eq!(
        s.json(&["runtime", "ls"]).as_array().map(|a| a.len()),
        Some(3)
    );
    let v = s.json(&["up", "-f", path_str(&m)]);
    assert_eq!(
        items(&v)[1],
        (
            "runtime".into(),
            "greeter@2".into(),
            "updated".into(),
            vec!["context".into()]
        )
    );
    assert_eq!(items(&v)[2].2, "unchanged", "the function follows greeter");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = invoke(&s, "greet", "{}");
        if got == "bonjour" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {got}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    let v = s.json(&["down", "--volumes", "-f", path_str(&m)]);
    assert_eq!(
        items(&v),
        vec![
            ("function".into(), "greet".into(), "removed".into(), vec![]),
            ("runtime".into(), "greeter".into(), "removed".into(), vec![]),
            ("volume".into(), "rtdata".into(), "removed".into(), vec![]),
        ]
    );
    let names: Vec<String> = s
        .json(&["runtime", "ls"])
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect();
    assert!(!names.contains(&"greeter".to_string()), "{names:?}");
    s.assert_clean();
}
