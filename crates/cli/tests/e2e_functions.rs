//! End to end: functions deployed as code only and invoked in real runc sandboxes through the
//! Lambda Runtime API. Every test here needs root; each skips with a printed reason when it
//! cannot run.

mod common;

use std::io::Write;
use std::time::Instant;

use common::{path_str, Server};

/// A server with the base image imported and the built-in runtimes built by `strata bootstrap`.
fn server_with_runtimes() -> Server {
    let s = Server::start_with(&["--idle-timeout", "3s"]);
    s.import_base("debian-bookworm");
    let out = s.ok(&["bootstrap"]);
    assert!(out.contains("python3") && out.contains("nodejs"), "{out}");
    s
}

fn invoke(
    s: &Server,
    name: &str,
    event: &str,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let client = reqwest::blocking::Client::new();
    let resp = client
        .post(format!("{}/v1/functions/{name}/invoke", s.url))
        .bearer_auth(s.token())
        .body(event.to_string())
        .send()
        .expect("invoke");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        headers,
    )
}

const PY_APP: &str = r#"
import os, time, json, errno

COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    return {
        "hello": event.get("name"),
        "greeting": os.environ.get("GREETING"),
        "secret_seen": os.environ.get("TOKEN") == "s3cr3t-value",
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "count": COUNT,
        "task_root": os.getcwd(),
        "lambda_env": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
    }

def fails(event, context):
    raise ValueError("bad input: " + str(event.get("x")))

def sleeps(event, context):
    time.sleep(30)
    return "never"

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

def floods(event, context):
    line = "x" * 1000
    for i in range(20000):
        print(line, i)
    return "flooded"

def volume(event, context):
    path = "/mnt/data/counter"
    n = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))
    return n + 1

def web(event, context):
    return {
        "statusCode": 201,
        "headers": {"x-from": "strata"},
        "body": json.dumps({
            "method": event["requestContext"]["http"]["method"],
            "path": event["rawPath"],
            "q": event.get("queryStringParameters", {}).get("q"),
            "body": event.get("body"),
        }),
    }

def echo_headers(event, context):
    return event["headers"]

def network(event, context):
    return open("/proc/net/dev").read().count(":")

def writes_code(event, context):
    try:
        open("/var/task/new.txt", "w").write("x")
        return "wrote"
    except OSError as e:
        return type(e).__name__

def writes_root(event, context):
    out = {}
    for path in ["/etc/strata-probe", "/tmp/strata-probe"]:
        try:
            with open(path, "w") as f:
                f.write("x")
            out[path] = "ok"
        except OSError as e:
            out[path] = errno.errorcode.get(e.errno, str(e.errno))
    for line in open("/proc/self/status"):
        if line.startswith(("CapEff:", "Seccomp:")):
            key, value = line.split()
            out[key.rstrip(":")] = value
    return out
"#;

#[test]
fn root_python_functions_end_to_end() {
    require_root!();
    let s = server_with_runtimes();
    let code = s.write("py/app.py", PY_APP);
    let code_dir = code.parent().expect("dir").to_path_buf();
    let dir = path_str(&code_dir);
    s.ok(&["volume", "create", "data"]);

    // Deploy: metadata + code, no image build.
    let t = Instant::now();
    let info = s.json(&[
        "fn",
        "create",
        "hello",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.handler",
        "--env",
        "GREETING=hi",
        "--secret-env",
        "TOKEN=s3cr3t-value",
        "--memory",
        "128Mi",
        "--timeout",
        "5s",
    ]);
    eprintln!("deploy took {:?}", t.elapsed());
    assert_eq!(info["revision"], 1);
    assert_eq!(info["runtime_resolved"], "python3@1");
    assert_eq!(info["secret_env"], serde_json::json!(["TOKEN"]));
    assert!(
        !info.to_string().contains("s3cr3t-value"),
        "the secret never comes back: {info}"
    );

    // Invoke through the CLI and the API; the second call reuses the instance.
    let out = s.ok(&["invoke", "hello", "-d", r#"{"name": "strata"}"#]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json result");
    assert_eq!(v["hello"], "strata");
    assert_eq!(v["greeting"], "hi");
    assert_eq!(v["secret_seen"], true);
    assert_eq!(v["function_name"], "hello");
    assert_eq!(v["lambda_env"], "hello");
    assert_eq!(v["memory"], 128);
    assert_eq!(v["task_root"], "/var/task");
    assert!(v["remaining"].as_u64().expect("remaining") > 3000);
    let (status, v2, h) = invoke(&s, "hello", r#"{"name": "again"}"#);
    assert_eq!(status, 200);
    assert_eq!(v2["count"], 2, "the warm instance was reused");
    assert_eq!(h["x-strata-cold-start"], "false");
    assert_ne!(v2["request_id"], v["request_id"]);

    // A function error keeps the Lambda shape and its own status.
    s.ok(&[
        "fn",
        "create",
        "fails",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.fails",
    ]);
    let (status, e, h) = invoke(&s, "fails", r#"{"x": 7}"#);
    assert_eq!(status, 502, "{e}");
    assert_eq!(h["x-strata-error-kind"], "function");
    assert_eq!(e["errorType"], "ValueError");
    assert_eq!(e["errorMessage"], "bad input: 7");
    assert!(
        e["stackTrace"].as_array().is_some_and(|t| !t.is_empty()),
        "{e}"
    );
    let err = s.run(&["invoke", "fails"]);
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("ValueError"));

    // A timeout is reported as Lambda reports it.
    s.ok(&[
        "fn",
        "create",
        "sleeps",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.sleeps",
        "--timeout",
        "1s",
    ]);
    let t = Instant::now();
    let (status, e, _) = invoke(&s, "sleeps", "{}");
    assert_eq!(status, 504, "{e}");
    assert_eq!(e["errorMessage"], "Task timed out after 1.00 seconds");
    assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());

    // Memory: the instance is stopped and the error says so.
    s.ok(&[
        "fn",
        "create",
        "hog",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.hog",
        "--memory",
        "64Mi",
    ]);
    let (status, e, h) = invoke(&s, "hog", "{}");
    assert_eq!(status, 507, "{e}");
    assert_eq!(h["x-strata-error-kind"], "out_of_memory");

    // A fork bomb hits the pids limit inside its instance only.
    s.ok(&[
        "fn",
        "create",
        "forks",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.forks",
    ]);
    let (status, v, _) = invoke(&s, "forks", "{}");
    assert_eq!(status, 200, "{v}");
    assert!(v["stopped_at"].as_u64().expect("count") < 300, "{v}");
    let (status, _, _) = invoke(&s, "hello", "{}");
    assert_eq!(status, 200, "neighbours still work");

    // A flood of output is capped per invocation with a marker.
    s.ok(&[
        "fn",
        "create",
        "floods",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.floods",
    ]);
    let (status, v, h) = invoke(&s, "floods", "{}");
    assert_eq!(status, 200);
    assert_eq!(v, "flooded");
    let inv = h["x-strata-invocation-id"]
        .to_str()
        .expect("id")
        .to_string();
    let logs = s.ok(&["-o", "json", "logs", "floods"]);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).expect("entry"))
        .collect();
    let mine: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|e| e["invocation"] == inv.as_str())
        .collect();
    let bytes: usize = mine
        .iter()
        .map(|e| e["line"].as_str().unwrap_or("").len())
        .sum();
    assert!(bytes <= 300 << 10, "stored {bytes} bytes");
    assert!(
        mine.iter()
            .any(|e| e["line"] == "[strata] log output truncated"),
        "marker present"
    );

    // Volumes: data written by one invocation is seen by the next, and survives a restart.
    s.ok(&[
        "fn",
        "create",
        "vol",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.volume",
        "--volume",
        "data:/mnt/data",
    ]);
    assert_eq!(invoke(&s, "vol", "{}").1, 1);
    assert_eq!(invoke(&s, "vol", "{}").1, 2);

    // The HTTP trigger speaks the Function URL event and response formats; a public function's
    // trigger needs no token.
    let web = s.json(&[
        "fn",
        "create",
        "web",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.web",
        "--public",
    ]);
    assert_eq!(web["public"], true);
    let resp = reqwest::blocking::Client::new()
        .put(format!("{}/fn/web/items/7?q=find%20me", s.url))
        .body("payload")
        .send()
        .expect("trigger");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["x-from"], "strata");
    let v: serde_json::Value = resp.json().expect("json");
    assert_eq!(
        v,
        serde_json::json!({"method": "PUT", "path": "/items/7", "q": "find me", "body": "payload"})
    );

    // A private function's trigger (the default) refuses a missing or wrong token in the Lambda
    // error shape, and serves the right one without passing it on to the function.
    let private = s.json(&[
        "fn",
        "create",
        "webpriv",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.echo_headers",
    ]);
    assert_eq!(private["public"], false, "private by default");
    let client = reqwest::blocking::Client::new();
    for token in [None, Some("wrong"), Some("")] {
        let mut req = client.post(format!("{}/fn/webpriv/x", s.url)).body("b");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("trigger");
        assert_eq!(resp.status().as_u16(), 401, "{token:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let e: serde_json::Value = resp.json().expect("json");
        assert_eq!(e["errorType"], "Strata.Unauthorized", "{e}");
        assert!(e["errorMessage"].is_string() && e["stackTrace"].is_array());
    }
    // An unknown function answers the same without a token: names do not leak.
    let resp = client
        .get(format!("{}/fn/nosuchfn/x", s.url))
        .send()
        .expect("trigger");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .post(format!("{}/fn/webpriv/x", s.url))
        .bearer_auth(s.token())
        .header("x-probe", "1")
        .body("b")
        .send()
        .expect("trigger");
    assert_eq!(resp.status().as_u16(), 200);
    let seen: serde_json::Value = resp.json().expect("json");
    assert_eq!(seen["x-probe"], "1", "{seen}");
    assert!(
        seen.get("authorization").is_none() && !seen.to_string().contains(&s.token()),
        "the admin token reached the function: {seen}"
    );
    // Switching it to public and back.
    let upd = s.json(&["fn", "update", "webpriv", "--public", "true"]);
    assert_eq!(upd["public"], true);
    let resp = client
        .post(format!("{}/fn/webpriv/x", s.url))
        .send()
        .expect("trigger");
    assert_eq!(resp.status().as_u16(), 200);
    s.ok(&["fn", "update", "webpriv", "--public", "false"]);
    let resp = client
        .post(format!("{}/fn/webpriv/x", s.url))
        .send()
        .expect("trigger");
    assert_eq!(resp.status().as_u16(), 401);

    // Sandbox: loopback only, code read-only.
    s.ok(&[
        "fn",
        "create",
        "net",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.network",
    ]);
    assert_eq!(invoke(&s, "net", "{}").1, 1, "only lo");
    s.ok(&[
        "fn",
        "create",
        "ro",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.writes_code",
    ]);
    assert_eq!(invoke(&s, "ro", "{}").1, "OSError");

    // Sandbox defaults: the seccomp filter, no capabilities, a writable root...
    s.ok(&[
        "fn",
        "create",
        "rootw",
        "--runtime",
        "python3",
        "--code",
        dir,
        "--handler",
        "app.writes_root",
    ]);
    let (status, v, _) = invoke(&s, "rootw", "{}");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        serde_json::json!({"/etc/strata-probe": "ok", "/tmp/strata-probe": "ok",
            "CapEff": "0000000000000000", "Seccomp": "2"})
    );
    // ...unless the runtime's labels ask for a read-only root (/tmp stays writable) or for
    // capabilities from the allowed set.
    let df = s.write(
        "pyro/Dockerfile",
        "FROM python3\nLABEL org.strata.rootfs=\"readonly\" org.strata.capabilities=\"CAP_NET_BIND_SERVICE\"\n",
    );
    s.ok(&["runtime", "create", "pyro", "-f", path_str(&df)]);
    s.ok(&[
        "fn",
        "create",
        "rootro",
        "--runtime",
        "pyro",
        "--code",
        dir,
        "--handler",
        "app.writes_root",
    ]);
    let (status, v, _) = invoke(&s, "rootro", "{}");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        serde_json::json!({"/etc/strata-probe": "EROFS", "/tmp/strata-probe": "ok",
            "CapEff": "0000000000000400", "Seccomp": "2"})
    );
    // A capability outside the allowed set is refused when the instance starts.
    let df = s.write(
        "pybad/Dockerfile",
        "FROM python3\nLABEL org.strata.capabilities=\"CAP_NET_BIND_SERVICE,CAP_SYS_ADMIN\"\n",
    );
    s.ok(&["runtime", "create", "pybad", "-f", path_str(&df)]);
    s.ok(&[
        "fn",
        "create",
        "capbad",
        "--runtime",
        "pybad",
        "--code",
        dir,
        "--handler",
        "app.writes_root",
    ]);
    let (status, e, _) = invoke(&s, "capbad", "{}");
    assert_eq!(status, 502, "{e}");
    let message = e["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("CAP_SYS_ADMIN") && message.contains("does not grant"),
        "{e}"
    );

    // Logs show stdout with invocation ids; secrets appear nowhere.
    let logs = s.ok(&["logs", "hello"]);
    assert!(!logs.contains("s3cr3t-value"));
    assert!(
        !s.log().contains("s3cr3t-value"),
        "secret in the server log"
    );
    let described = s.ok(&["fn", "describe", "hello"]);
    assert!(
        described.contains("TOKEN=********") && !described.contains("s3cr3t-value"),
        "{described}"
    );

    // An update makes a new revision; old instances are retired.
    std::fs::write(
        &code,
        PY_APP.replace("\"hello\": event.get(\"name\")", "\"hello\": \"v2\""),
    )
    .expect("write");
    let info = s.json(&[
        "fn",
        "update",
        "hello",
        "--code",
        dir,
        "--env",
        "GREETING=hey",
    ]);
    assert_eq!(info["revision"], 2);
    let (_, v, _) = invoke(&s, "hello", "{}");
    assert_eq!(
        (
            v["hello"].as_str(),
            v["greeting"].as_str(),
            v["count"].as_u64()
        ),
        (Some("v2"), Some("hey"), Some(1))
    );

    // Restart: the volume keeps its data.
    let mut s = s;
    s.restart();
    assert_eq!(invoke(&s, "vol", "{}").1, 3);

    // Scale to zero after the idle timeout: the function has no instance left.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(s.json(&["fn", "describe", "vol"])["stats"]["instances"], 0);
    for f in [
        "hello", "fails", "sleeps", "hog", "forks", "floods", "vol", "web", "webpriv", "net", "ro",
        "rootw", "rootro", "capbad",
    ] {
        s.ok(&["fn", "rm", f]);
    }
    assert_eq!(s.json(&["fn", "ls"]), serde_json::json!([]));
    // No function left: no instance, pool, mount, scratch directory or cgroup either.
    s.assert_clean();
    s.restart();
    s.assert_clean();
}

#[test]
fn root_node_functions_end_to_end() {
    require_root!();
    let s = server_with_runtimes();
    s.write("node/cjs.js", "exports.handler = async (event, context) => ({ cjs: true, name: event.name, fn: context.functionName, env: process.env.GREETING });\n");
    s.write("node/cb.js", "exports.handler = (event, context, callback) => { setTimeout(() => callback(null, { callback: true, n: event.n + 1 }), 10); };\n");
    s.write(
        "node/esm.mjs",
        "export const handler = async (event) => ({ esm: true });\n",
    );
    s.write(
        "node/boom.js",
        "exports.handler = async () => { throw new TypeError('nope'); };\n",
    );
    let dir = s.work().join("node");
    let dir = path_str(&dir);
    s.ok(&[
        "fn",
        "create",
        "cjs",
        "--runtime",
        "nodejs",
        "--code",
        dir,
        "--handler",
        "cjs.handler",
        "--env",
        "GREETING=hola",
    ]);
    s.ok(&[
        "fn",
        "create",
        "cb",
        "--runtime",
        "nodejs",
        "--code",
        dir,
        "--handler",
        "cb.handler",
    ]);
    s.ok(&[
        "fn",
        "create",
        "esm",
        "--runtime",
        "nodejs",
        "--code",
        dir,
        "--handler",
        "esm.handler",
    ]);
    s.ok(&[
        "fn",
        "create",
        "boom",
        "--runtime",
        "nodejs",
        "--code",
        dir,
        "--handler",
        "boom.handler",
    ]);
    assert_eq!(
        invoke(&s, "cjs", r#"{"name":"x"}"#).1,
        serde_json::json!({"cjs": true, "name": "x", "fn": "cjs", "env": "hola"})
    );
    assert_eq!(
        invoke(&s, "cb", r#"{"n":1}"#).1,
        serde_json::json!({"callback": true, "n": 2})
    );
    assert_eq!(invoke(&s, "esm", "{}").1, serde_json::json!({"esm": true}));
    let (status, e, _) = invoke(&s, "boom", "{}");
    assert_eq!(status, 502);
    assert_eq!(e["errorType"], "TypeError");
    assert_eq!(e["errorMessage"], "nope");
    for f in ["cjs", "cb", "esm", "boom"] {
        s.ok(&["fn", "rm", f]);
    }
    s.assert_clean();
}

#[test]
fn root_hostile_code_uploads_are_rejected_and_leave_nothing() {
    require_root!();
    let s = Server::start();
    s.import_base("debian-bookworm");
    let df = s.write(
        "Dockerfile",
        "FROM debian-bookworm\nENTRYPOINT [\"/bin/true\"]\n",
    );
    s.ok(&["runtime", "create", "rt", "-f", path_str(&df)]);
    let sentinel = s.data.path().join("sentinel");
    std::fs::write(&sentinel, "untouched").expect("sentinel");
    let make_tar = |name: &str, build: &dyn Fn(&mut tar::Builder<std::fs::File>)| {
        let p = s.work().join(name);
        std::fs::create_dir_all(s.work()).expect("mkdir");
        let mut b = tar::Builder::new(std::fs::File::create(&p).expect("create"));
        build(&mut b);
        b.finish().expect("finish");
        p
    };
    let raw_file = |b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    let symlink = |b: &mut tar::Builder<std::fs::File>, name: &str, target: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, name, target).expect("link");
    };
    let sentinel_rel = format!("../../../../../../../..{}", sentinel.display());
    let cases = vec![
        make_tar("dotdot.tar", &|b| raw_file(b, &sentinel_rel, b"pwned")),
        make_tar("abs.tar", &|b| {
            raw_file(b, &sentinel.display().to_string(), b"pwned")
        }),
        make_tar("link.tar", &|b| {
            symlink(b, "out", "/");
            raw_file(b, "app.py", b"x");
        }),
    ];
    let zip_path = s.work().join("evil.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).expect("zip"));
        z.start_file(
            format!("../../..{}", sentinel.display()),
            zip::write::SimpleFileOptions::default(),
        )
        .expect("entry");
        z.write_all(b"pwned").expect("write");
        z.finish().expect("finish");
    }
    let mut cases = cases;
    cases.push(zip_path);
    for case in &cases {
        let err = s.fails(&[
            "fn",
            "create",
            "evil",
            "--runtime",
            "rt",
            "--code",
            path_str(case),
            "--handler",
            "x",
        ]);
        assert!(err.contains("error"), "{}: {err}", case.display());
        assert_eq!(
            std::fs::read_to_string(&sentinel).expect("sentinel"),
            "untouched",
            "{}",
            case.display()
        );
        assert_eq!(
            s.json(&["fn", "ls"]),
            serde_json::json!([]),
            "{}",
            case.display()
        );
    }
    let code_dir = s.data.path().join("code");
    let left = std::fs::read_dir(&code_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "no code stored");
    s.assert_clean();
}

#[test]
fn root_unmodified_awslambdaric_runs_a_lambda_handler() {
    require_root!();
    let s = server_with_runtimes();
    let df = s.write(
        "ric/Dockerfile",
        "FROM python3\n\
         RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*\n\
         RUN pip3 install --break-system-packages --no-cache-dir awslambdaric==4.2.2\n\
         ENTRYPOINT [\"python3\", \"-m\", \"awslambdaric\"]\n",
    );
    s.ok(&["runtime", "create", "python3-ric", "-f", path_str(&df)]);
    s.write("ric-code/lambda_function.py", "def lambda_handler(event, context):\n    return {'ric': True, 'id': context.aws_request_id, 'x': event['x'] * 2}\n");
    let dir = s.work().join("ric-code");
    s.ok(&[
        "fn",
        "create",
        "ric",
        "--runtime",
        "python3-ric",
        "--code",
        path_str(&dir),
        "--handler",
        "lambda_function.lambda_handler",
    ]);
    let (status, v, _) = invoke(&s, "ric", r#"{"x": 21}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ric"], true);
    assert_eq!(v["x"], 42);
    assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()));
    s.ok(&["fn", "rm", "ric"]);
    s.assert_clean();
}
