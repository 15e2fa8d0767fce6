//! Runs the real `strata-init` binary (as an ordinary process, not PID 1) against a test-side
//! unix listener playing the Strata server, with `tests/bootstrap.py` as the function's bootstrap.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_init::protocol::{read_frame, write_frame, Header};

const ARN: &str = "arn:aws:lambda:local:000000000000:function:hello";

/// One log line received from the agent.
#[derive(Debug, Clone)]
struct Log {
    stream: String,
    id: Option<String>,
    line: String,
}

struct Instance {
    child: Child,
    conn: UnixStream,
    logs: Vec<Log>,
    _dir: tempfile::TempDir,
}

/// Starts strata-init with `tests/bootstrap.py MODE` as the bootstrap.
fn start(mode: &str, extra_env: &[(&str, &str)]) -> Instance {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bootstrap.py");
    let script = script.to_str().unwrap();
    start_with(&["python3", "-u", script, mode], extra_env)
}

/// Starts strata-init with `argv` as the bootstrap and waits for its `Hello`.
fn start_with(argv: &[&str], extra_env: &[(&str, &str)]) -> Instance {
    start_agent(&[], argv, extra_env)
}

/// Starts strata-init with `options` (such as `--generic`) and `argv` as the bootstrap, and waits
/// for its `Hello`.
fn start_agent(options: &[&str], argv: &[&str], extra_env: &[(&str, &str)]) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata-init"));
    command
        .args(options)
        .arg("--")
        .args(argv)
        .env("STRATA_SOCKET", &socket)
        .env("STRATA_INSTANCE", "i-test")
        .env("STRATA_RUNTIME_API", "127.0.0.1:0")
        .env("STRATA_SECRET", "must not leak")
        .env("AWS_LAMBDA_RUNTIME_API", "203.0.113.1:1")
        .env("AWS_LAMBDA_FUNCTION_NAME", "hello")
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();

    listener.set_nonblocking(true).unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("strata-init did not connect: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut instance = Instance {
        child,
        conn,
        logs: Vec::new(),
        _dir: dir,
    };
    match instance.recv_raw() {
        (
            Header::Hello {
                instance: name,
                pid,
            },
            body,
        ) => {
            assert_eq!(name, "i-test");
            assert_eq!(pid, instance.child.id());
            assert!(body.is_empty());
        }
        other => panic!("expected Hello first, got {other:?}"),
    }
    instance
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl Instance {
    fn send(&mut self, header: &Header, body: &[u8]) {
        write_frame(&mut self.conn, header, body).unwrap();
    }

    fn invoke(&mut self, id: &str, timeout_ms: u64, event: &str) {
        let invoke = Header::Invoke {
            id: id.into(),
            deadline_ms: now_ms() + timeout_ms,
            timeout_ms,
            function_arn: ARN.into(),
            trace_id: format!("Root=1-{id}"),
            client_context: None,
            cognito_identity: Some(r#"{"cognitoIdentityId":"x"}"#.into()),
        };
        self.send(&invoke, event.as_bytes());
    }

    fn recv_raw(&mut self) -> (Header, Vec<u8>) {
        match read_frame(&mut self.conn) {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("strata-init closed the host socket; logs: {:?}", self.logs),
            Err(e) => panic!("reading a frame: {e}; logs: {:?}", self.logs),
        }
    }

    /// The next frame that is not a `Log` (logs are collected).
    fn recv(&mut self) -> (Header, Vec<u8>) {
        loop {
            match self.recv_raw() {
                (Header::Log { stream, id }, body) => self.logs.push(Log {
                    stream,
                    id,
                    line: String::from_utf8(body).unwrap(),
                }),
                frame => return frame,
            }
        }
    }

    /// The first log line (already collected or still to come) that satisfies `pred`.
    fn log_until(&mut self, pred: impl Fn(&str) -> bool) -> String {
        self.expect_log(|l| pred(&l.line)).line
    }

    /// A log line matching `pred`, from those already collected or the next ones (logs travel
    /// apart from replies, so they may arrive after them).
    fn expect_log(&mut self, pred: impl Fn(&Log) -> bool) -> Log {
        if let Some(log) = self.logs.iter().find(|l| pred(l)) {
            return log.clone();
        }
        loop {
            match self.recv_raw() {
                (Header::Log { stream, id }, body) => {
                    let log = Log {
                        stream,
                        id,
                        line: String::from_utf8(body).unwrap(),
                    };
                    self.logs.push(log.clone());
                    if pred(&log) {
                        return log;
                    }
                }
                other => panic!("expected a log line, got {other:?}; logs: {:?}", self.logs),
            }
        }
    }

    /// After `Exited`, the socket must close and the agent exit.
    fn expect_end(&mut self) -> ExitStatus {
        match read_frame(&mut self.conn) {
            Ok(None) => {}
            Ok(Some((Header::Log { .. }, _))) => return self.expect_end(),
            other => panic!("expected the host socket to close, got {other:?}"),
        }
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < give_up, "strata-init did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn expect_ready(instance: &mut Instance) {
    match instance.recv() {
        (Header::Ready, body) => assert!(body.is_empty()),
        other => panic!("expected Ready, got {other:?}"),
    }
}

/// Whether a process is gone (or only a zombie about to be reaped by whoever adopted it).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn ready_after_first_next_then_invoke_is_answered_with_lambda_headers() {
    let mut instance = start("echo", &[]);
    expect_ready(&mut instance);
    let before = now_ms();
    instance.invoke("req-1", 5000, r#"{"n":1}"#);
    let (header, body) = instance.recv();
    assert_eq!(
        header,
        Header::Response {
            id: "req-1".into(),
            content_type: Some("application/json".into())
        }
    );
    let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["event"], serde_json::json!({"n": 1}));
    let headers = &out["headers"];
    assert_eq!(headers["Lambda-Runtime-Aws-Request-Id"], "req-1");
    assert_eq!(headers["Lambda-Runtime-Invoked-Function-Arn"], ARN);
    assert_eq!(headers["Lambda-Runtime-Trace-Id"], "Root=1-req-1");
    assert_eq!(
        headers["Lambda-Runtime-Cognito-Identity"],
        r#"{"cognitoIdentityId":"x"}"#
    );
    assert!(headers.get("Lambda-Runtime-Client-Context").is_none());
    assert_eq!(headers["Content-Type"], "application/json");
    let deadline: u64 = headers["Lambda-Runtime-Deadline-Ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before + 5000..=now_ms() + 5000).contains(&deadline),
        "deadline {deadline}"
    );

    // The bootstrap's environment: STRATA_* stripped, the Runtime API address set to the real one.
    let env = out["env"].as_object().unwrap();
    let leaked: Vec<&String> = env.keys().filter(|k| k.starts_with("STRATA_")).collect();
    assert!(leaked.is_empty(), "leaked {leaked:?}");
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap();
    assert!(
        api.starts_with("127.0.0.1:") && api != "127.0.0.1:0",
        "{api}"
    );
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "hello");
    let expected_cwd = if Path::new("/var/task").is_dir() {
        "/var/task"
    } else {
        "/"
    };
    assert_eq!(out["cwd"], expected_cwd);

    // Logs carry the invocation id and their stream.
    let log = instance.expect_log(|l| l.line == "handling req-1");
    assert_eq!(
        (log.stream.as_str(), log.id.as_deref()),
        ("stdout", Some("req-1"))
    );
    let log = instance.expect_log(|l| l.line == "to stderr");
    assert_eq!(
        (log.stream.as_str(), log.id.as_deref()),
        ("stderr", Some("req-1"))
    );

    // A second invocation on the same instance (keep-alive connection, fresh state).
    instance.invoke("req-2", 5000, r#"{"n":2}"#);
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-2"),
        "{header:?}"
    );
    let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["event"], serde_json::json!({"n": 2}));

    // Shutdown: the bootstrap gets SIGTERM (python dies of it), then Exited, then exit 0.
    instance.send(&Header::Shutdown, b"");
    match instance.recv() {
        (
            Header::Exited {
                signal: Some(15),
                during: None,
                ..
            },
            _,
        ) => {}
        other => panic!("expected Exited by SIGTERM, got {other:?}"),
    }
    assert_eq!(instance.expect_end().code(), Some(0));
}

#[test]
fn error_post_is_forwarded_with_its_type() {
    let mut instance = start("error", &[]);
    expect_ready(&mut instance);
    instance.invoke("req-e", 5000, "{}");
    let (header, body) = instance.recv();
    assert_eq!(
        header,
        Header::Error {
            id: "req-e".into(),
            error_type: Some("Custom.Boom".into())
        }
    );
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["errorMessage"], "boom");
    assert_eq!(err["stackTrace"], serde_json::json!(["a", "b"]));
    instance.log_until(|l| l == "error status 202");
}

#[test]
fn init_error_is_forwarded_and_the_exit_follows() {
    let mut instance = start("init_error", &[]);
    let (header, body) = instance.recv();
    assert_eq!(
        header,
        Header::InitError {
            error_type: Some("Runtime.ImportModuleError".into())
        }
    );
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["errorMessage"], "cannot import handler");
    match instance.recv() {
        (
            Header::Exited {
                code: Some(7),
                signal: None,
                during: None,
            },
            _,
        ) => {}
        other => panic!("expected Exited(7), got {other:?}"),
    }
    assert!(
        instance
            .logs
            .iter()
            .any(|l| l.line == "init error status 202"),
        "{:?}",
        instance.logs
    );
    assert_eq!(instance.expect_end().code(), Some(7));
}

#[test]
fn timeout_kills_the_whole_group_and_reports() {
    let mut instance = start("sleep", &[]);
    expect_ready(&mut instance);
    let pids = instance.log_until(|l| l.starts_with("PIDS "));
    let pids: Vec<u32> = pids
        .split(' ')
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    let sent = Instant::now();
    instance.invoke("req-t", 700, "{}");
    match instance.recv() {
        (
            Header::Timeout {
                id,
                timeout_ms: 700,
            },
            _,
        ) if id == "req-t" => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    match instance.recv() {
        (
            Header::Exited {
                code: None,
                signal: Some(9),
                during: Some(id),
            },
            _,
        ) if id == "req-t" => {}
        other => panic!("expected Exited by SIGKILL, got {other:?}"),
    }
    let elapsed = sent.elapsed();
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1700), "{elapsed:?}");
    assert_eq!(instance.expect_end().code(), Some(0));
    let give_up = Instant::now() + Duration::from_secs(2);
    while !pids.iter().all(|&p| gone(p)) {
        assert!(Instant::now() < give_up, "processes left behind: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn log_flood_is_capped_and_the_invocation_completes() {
    let mut instance = start("flood", &[]);
    expect_ready(&mut instance);
    instance.invoke("req-f", 20_000, r#"{"flood":true}"#);
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-f"),
        "{header:?}"
    );
    assert_eq!(body, b"\"done\"");
    // Output read before the reply was sent may still be in flight: take the next invocation as
    // the end of this one's logs.
    instance.invoke("req-q", 5000, "{}");
    let (header, _) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-q"),
        "{header:?}"
    );

    let flood: Vec<&Log> = instance
        .logs
        .iter()
        .filter(|l| l.id.as_deref() == Some("req-f"))
        .collect();
    let marker = "[strata] log output truncated";
    let bytes: usize = flood
        .iter()
        .filter(|l| l.line != marker)
        .map(|l| l.line.len())
        .sum();
    let markers = flood.iter().filter(|l| l.line == marker).count();
    assert_eq!(markers, 1, "one truncation marker");
    assert!(bytes <= 1024 * 1024, "{bytes} bytes forwarded");
    assert!(bytes > 1024 * 1024 - 200, "the budget was used: {bytes}");
    assert_eq!(
        flood.last().unwrap().line,
        marker,
        "nothing after the marker"
    );
    // The budget starts over with the next invocation.
    let log = instance.expect_log(|l| l.line == "quiet invocation");
    assert_eq!(log.id.as_deref(), Some("req-q"));
}

#[test]
fn log_limit_is_configurable() {
    let mut instance = start("flood", &[("STRATA_LOG_LIMIT", "1000")]);
    expect_ready(&mut instance);
    instance.invoke("req-f", 20_000, r#"{"flood":true}"#);
    let (header, _) = instance.recv();
    assert!(matches!(header, Header::Response { .. }), "{header:?}");
    instance.invoke("req-q", 5000, "{}");
    instance.recv();
    let flood: Vec<&Log> = instance
        .logs
        .iter()
        .filter(|l| l.id.as_deref() == Some("req-f"))
        .collect();
    assert_eq!(
        flood.len(),
        11,
        "10 lines of 100 bytes, then the marker: {flood:?}"
    );
}

#[test]
fn bootstrap_exiting_mid_invocation_reports_during() {
    let mut instance = start("exit_mid", &[]);
    expect_ready(&mut instance);
    instance.invoke("req-x", 5000, "{}");
    match instance.recv() {
        (
            Header::Exited {
                code: Some(3),
                signal: None,
                during: Some(id),
            },
            _,
        ) if id == "req-x" => {}
        other => panic!("expected Exited(3) during req-x, got {other:?}"),
    }
    // The last words arrive before Exited.
    assert!(
        instance.logs.iter().any(|l| l.line == "leaving now"),
        "{:?}",
        instance.logs
    );
    assert_eq!(instance.expect_end().code(), Some(3));
}

#[test]
fn invalid_replies_get_lambda_status_codes() {
    let mut instance = start("probe", &[]);
    expect_ready(&mut instance);
    instance.invoke("req-p1", 5000, "{}");
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-p1"),
        "{header:?}"
    );
    assert_eq!(body, b"\"first\"", "only the first reply is forwarded");
    let line = instance.log_until(|l| l.starts_with(r#"STATUS {"first""#));
    let status: serde_json::Value = serde_json::from_str(&line["STATUS ".len()..]).unwrap();
    assert_eq!(
        status,
        serde_json::json!({
            "first": 202, "second": 403, "unknown": 400, "bad_error": 400,
            "late_init_error": 403, "missing": 404,
        })
    );

    // An oversized response: 413 to the runtime, the invocation fails as Lambda's does.
    instance.invoke("req-p2", 5000, "{}");
    let (header, body) = instance.recv();
    assert_eq!(
        header,
        Header::Error {
            id: "req-p2".into(),
            error_type: Some("Function.ResponseSizeTooLarge".into())
        }
    );
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        err["errorMessage"].as_str().unwrap().contains("6291456"),
        "{err}"
    );
    let line = instance.log_until(|l| l.starts_with(r#"STATUS {"big""#));
    assert_eq!(line, r#"STATUS {"big": 413, "after": 403}"#);

    // The connection and the instance are still usable.
    instance.invoke("req-p3", 5000, "{}");
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-p3"),
        "{header:?}"
    );
    assert_eq!(body, b"\"still alive\"");
}

/// Sends raw bytes to the Runtime API and returns the status line and body of one response.
fn raw_exchange(
    stream: &mut TcpStream,
    request: &[u8],
) -> (String, Vec<(String, String)>, Vec<u8>) {
    stream.write_all(request).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(": ").unwrap();
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().unwrap();
        }
        headers.push((k.to_string(), v.to_string()));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    assert!(reader.buffer().is_empty(), "one response per exchange");
    (status.trim_end().to_string(), headers, body)
}

#[test]
fn raw_http_chunked_bodies_malformed_requests_and_expect_continue() {
    let mut instance = start("idle", &[]);
    let line = instance.log_until(|l| l.starts_with("API "));
    let addr = line["API ".len()..].to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // The test is the runtime here: fetch an invocation over a keep-alive connection.
    instance.invoke("req-r", 5000, r#"{"raw":true}"#);
    let (status, headers, body) = raw_exchange(
        &mut stream,
        b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains(&("Lambda-Runtime-Aws-Request-Id".into(), "req-r".into())));
    assert_eq!(body, br#"{"raw":true}"#);
    expect_ready(&mut instance);

    // A chunked response with an Expect: 100-continue, answered 100 then 202.
    let request = b"POST /2018-06-01/runtime/invocation/req-r/response HTTP/1.1\r\n\
        Host: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
        Expect: 100-continue\r\n\r\n";
    stream.write_all(request).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut continue_line = String::new();
    reader.read_line(&mut continue_line).unwrap();
    assert_eq!(continue_line, "HTTP/1.1 100 Continue\r\n");
    let mut blank = String::new();
    reader.read_line(&mut blank).unwrap();
    assert_eq!(blank, "\r\n");
    let (status, _, body) = raw_exchange(&mut stream, b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 202 Accepted");
    assert_eq!(body, br#"{"status":"OK"}"#);
    assert_eq!(
        instance.recv(),
        (
            Header::Response {
                id: "req-r".into(),
                content_type: Some("text/plain".into())
            },
            b"hello, world".to_vec()
        )
    );

    // Unknown routes get a JSON 404 and keep the connection.
    let (status, _, body) = raw_exchange(&mut stream, b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["errorType"], "NotFound");

    // Malformed requests get a 400 and the connection is closed.
    for bad in [
        &b"BLAH\r\n\r\n"[..],
        b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nnope\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (status, headers, body) = raw_exchange(&mut s, bad);
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{}", String::from_utf8_lossy(bad));
        assert!(headers.contains(&("Connection".into(), "close".into())));
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(err["errorType"], "InvalidRequest");
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "closed after a 400");
    }

    // The agent survived all of that.
    let (status, _, _) = raw_exchange(&mut stream, b"GET /nothing HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn sigterm_is_forwarded_and_the_agent_exits() {
    let mut instance = start("term", &[]);
    expect_ready(&mut instance);
    instance.log_until(|l| l == "waiting");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(instance.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    match instance.recv() {
        (
            Header::Exited {
                code: Some(0),
                signal: None,
                during: None,
            },
            _,
        ) => {}
        other => panic!("expected a clean Exited, got {other:?}"),
    }
    assert!(
        instance.logs.iter().any(|l| l.line == "got SIGTERM"),
        "{:?}",
        instance.logs
    );
    assert_eq!(instance.expect_end().code(), Some(0));
}

#[test]
fn host_socket_closing_stops_everything() {
    let mut instance = start("sleep", &[]);
    expect_ready(&mut instance);
    let pids = instance.log_until(|l| l.starts_with("PIDS "));
    let pids: Vec<u32> = pids
        .split(' ')
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    instance.conn.shutdown(std::net::Shutdown::Both).unwrap();
    let give_up = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = instance.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < give_up, "strata-init did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let give_up = Instant::now() + Duration::from_secs(2);
    while !pids.iter().all(|&p| gone(p)) {
        assert!(Instant::now() < give_up, "processes left behind: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn missing_bootstrap_is_an_init_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata-init"))
        .args(["--", "/nonexistent/bootstrap"])
        .env("STRATA_SOCKET", &socket)
        .env("STRATA_INSTANCE", "i-missing")
        .env("STRATA_RUNTIME_API", "127.0.0.1:0")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(matches!(
        read_frame(&mut conn).unwrap(),
        Some((Header::Hello { .. }, _))
    ));
    let (header, body) = read_frame(&mut conn).unwrap().unwrap();
    assert_eq!(
        header,
        Header::InitError {
            error_type: Some("Runtime.InvalidEntrypoint".into())
        }
    );
    assert!(String::from_utf8_lossy(&body).contains("/nonexistent/bootstrap"));
    let (header, _) = read_frame(&mut conn).unwrap().unwrap();
    assert_eq!(
        header,
        Header::Exited {
            code: Some(127),
            signal: None,
            during: None
        }
    );
    assert_eq!(child.wait().unwrap().code(), Some(127));
}

#[test]
fn bad_configuration_exits_2_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-init"))
        .args(["--", "true"])
        .env_remove("STRATA_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STRATA_SOCKET"));
}

/// Strata's own Python runtime bootstrap (`runtimes/python3`) runs handlers through the agent.
#[test]
fn strata_python_bootstrap_runs_handlers() {
    let bootstrap = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../runtimes/python3/bootstrap/strata_bootstrap.py");
    if !bootstrap.is_file() {
        eprintln!("skipped: {} does not exist", bootstrap.display());
        return;
    }
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("app.py"),
        "def handler(event, context):\n    \
             print('handling', context.aws_request_id)\n    \
             if event.get('fail'):\n        raise ValueError('bad input')\n    \
             return {'doubled': event['n'] * 2}\n",
    )
    .unwrap();
    let task_root = code.path().to_str().unwrap();
    let mut instance = start_with(
        &["python3", "-u", bootstrap.to_str().unwrap(), "app.handler"],
        &[
            ("LAMBDA_TASK_ROOT", task_root),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ],
    );
    expect_ready(&mut instance);
    instance.invoke("req-py1", 5000, r#"{"n":21}"#);
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-py1"),
        "{header:?}: {}",
        String::from_utf8_lossy(&body)
    );
    let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out, serde_json::json!({"doubled": 42}));
    instance.log_until(|l| l == "handling req-py1");

    instance.invoke("req-py2", 5000, r#"{"fail":true}"#);
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Error { ref id, .. } if id == "req-py2"),
        "{header:?}"
    );
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["errorMessage"], "bad input");
    assert_eq!(err["errorType"], "ValueError");
}

// ---- generic instances, specialization and several workers ----

fn test_bootstrap() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bootstrap.py")
        .to_str()
        .unwrap()
        .to_string()
}

fn python_bootstrap() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../runtimes/python3/bootstrap/strata_bootstrap.py")
        .to_str()
        .unwrap()
        .to_string()
}

fn specialize(handler: &str, env: &[String], workers: u32) -> Header {
    Header::Specialize {
        function: "hello".into(),
        handler: handler.into(),
        env: env.to_vec(),
        workers,
    }
}

/// The pids of a process's children (of all its threads).
fn children_of(pid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(list.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
        }
    }
    pids
}

fn wait_gone(pids: &[u32]) {
    let give_up = Instant::now() + Duration::from_secs(3);
    while !pids.iter().all(|&p| gone(p)) {
        assert!(Instant::now() < give_up, "processes left behind: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Instance {
    /// Nothing but logs arrives for `ms` milliseconds.
    fn expect_quiet(&mut self, ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.conn.set_read_timeout(Some(left)).unwrap();
            match read_frame(&mut self.conn) {
                Ok(Some((Header::Log { stream, id }, body))) => self.logs.push(Log {
                    stream,
                    id,
                    line: String::from_utf8(body).unwrap(),
                }),
                Ok(other) => panic!("expected no frame, got {other:?}"),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => panic!("reading a frame: {e}"),
            }
        }
        self.conn
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }

    fn expect(&mut self, expected: Header) {
        let (header, _) = self.recv();
        assert_eq!(header, expected, "logs: {:?}", self.logs);
    }

    /// Waits for the `loaded PID` lines of `n` workers, then a little for all to be in `/next`.
    fn expect_loaded(&mut self, n: usize) {
        let mut loaded = std::collections::HashSet::new();
        while loaded.len() < n {
            let line = self.log_until(|l| l.starts_with("loaded ") && !loaded.contains(l));
            loaded.insert(line);
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    /// The `PIDS a b` lines of `n` workers of `bootstrap.py sleep`.
    fn sleep_pids(&mut self, n: usize) -> Vec<u32> {
        let mut pids = Vec::new();
        for _ in 0..n {
            let seen = pids.len();
            let line = self.log_until(|l| {
                l.starts_with("PIDS ")
                    && !l
                        .split(' ')
                        .skip(1)
                        .any(|p| pids.contains(&p.parse::<u32>().unwrap()))
            });
            pids.extend(line.split(' ').skip(1).map(|p| p.parse::<u32>().unwrap()));
            assert!(pids.len() > seen);
        }
        pids
    }
}

#[test]
fn generic_deferred_python_bootstrap_is_specialized_on_demand() {
    let mut instance = start_agent(
        &["--generic"],
        &["python3", "-u", &python_bootstrap()],
        &[("STRATA_DEFERRED", "1")],
    );
    // The interpreter is up and asks for its function.
    instance.expect(Header::Waiting);
    instance.expect_quiet(200);

    // The code becomes visible only now, as when the server mounts it.
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("app.py"),
        "import os\n\
         def handler(event, context):\n    \
             print('handling', context.aws_request_id)\n    \
             keys = ['MY_VAR', 'AWS_LAMBDA_FUNCTION_NAME', '_HANDLER', 'STRATA_SPECIALIZE',\n            \
                     'STRATA_SECRET']\n    \
             return {'doubled': event['n'] * 2, 'cwd': os.getcwd(),\n            \
                     'function': context.function_name,\n            \
                     'env': {k: os.environ.get(k) for k in keys}}\n",
    )
    .unwrap();
    let task_root = code.path().to_str().unwrap();
    let env = vec![
        format!("LAMBDA_TASK_ROOT={task_root}"),
        "AWS_LAMBDA_FUNCTION_NAME=doubler".to_string(),
        "MY_VAR=a=b".to_string(),
    ];
    instance.send(&specialize("app.handler", &env, 1), b"");
    instance.expect(Header::Specialized);
    expect_ready(&mut instance);

    instance.invoke("req-d1", 5000, r#"{"n":21}"#);
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-d1"),
        "{header:?}: {}",
        String::from_utf8_lossy(&body)
    );
    let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["doubled"], 42);
    assert_eq!(out["function"], "doubler");
    assert_eq!(
        out["env"],
        serde_json::json!({
            "MY_VAR": "a=b", "AWS_LAMBDA_FUNCTION_NAME": "doubler", "_HANDLER": "app.handler",
            "STRATA_SPECIALIZE": null, "STRATA_SECRET": null,
        })
    );
    let cwd = std::fs::canonicalize(out["cwd"].as_str().unwrap()).unwrap();
    assert_eq!(cwd, std::fs::canonicalize(task_root).unwrap());
    let log = instance.expect_log(|l| l.line == "handling req-d1");
    assert_eq!(log.id.as_deref(), Some("req-d1"));

    // A second Specialize is refused and changes nothing.
    instance.send(&specialize("other.handler", &[], 1), b"");
    let (header, body) = instance.recv();
    assert_eq!(
        header,
        Header::InitError {
            error_type: Some("Strata.AlreadySpecialized".into())
        }
    );
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        err["errorMessage"].as_str().unwrap().contains("hello"),
        "{err}"
    );
    instance.invoke("req-d2", 5000, r#"{"n":1}"#);
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-d2"),
        "{header:?}"
    );
    let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["doubled"], 2);
}

#[test]
fn generic_non_deferred_waits_after_hello_and_starts_on_specialize() {
    let script = test_bootstrap();
    let mut instance = start_agent(&["--generic"], &["python3", "-u", &script], &[]);
    instance.expect(Header::Waiting);
    instance.expect_quiet(200);
    assert!(
        children_of(instance.child.id()).is_empty(),
        "no bootstrap before the specialization"
    );

    // The handler is appended to the argv: bootstrap.py takes it as its mode.
    let env = vec![
        "AWS_LAMBDA_FUNCTION_NAME=other".to_string(),
        "MY_VAR=x".to_string(),
    ];
    instance.send(&specialize("echo", &env, 1), b"");
    instance.expect(Header::Specialized);
    expect_ready(&mut instance);
    instance.invoke("req-n1", 5000, r#"{"n":1}"#);
    let (header, body) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-n1"),
        "{header:?}"
    );
    let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let env = out["env"].as_object().unwrap();
    assert_eq!(
        env["AWS_LAMBDA_FUNCTION_NAME"], "other",
        "the frame's env wins"
    );
    assert_eq!(env["MY_VAR"], "x");
    assert_eq!(env["_HANDLER"], "echo");
    let leaked: Vec<&String> = env.keys().filter(|k| k.starts_with("STRATA_")).collect();
    assert!(leaked.is_empty(), "leaked {leaked:?}");

    instance.send(&specialize("echo", &[], 1), b"");
    instance.expect(Header::InitError {
        error_type: Some("Strata.AlreadySpecialized".into()),
    });
    assert_eq!(
        children_of(instance.child.id()).len(),
        1,
        "nothing more started"
    );
}

#[test]
fn direct_mode_refuses_specialize() {
    let mut instance = start("echo", &[]);
    expect_ready(&mut instance);
    instance.send(&specialize("echo", &[], 2), b"");
    instance.expect(Header::InitError {
        error_type: Some("Strata.AlreadySpecialized".into()),
    });
    instance.invoke("req-1", 5000, "{}");
    let (header, _) = instance.recv();
    assert!(
        matches!(header, Header::Response { ref id, .. } if id == "req-1"),
        "{header:?}"
    );
}

#[test]
fn shutdown_before_specialization_ends_a_generic_instance() {
    let script = test_bootstrap();
    let mut instance = start_agent(&["--generic"], &["python3", "-u", &script], &[]);
    instance.expect(Header::Waiting);
    instance.send(&Header::Shutdown, b"");
    instance.expect(Header::Exited {
        code: Some(0),
        signal: None,
        during: None,
    });
    assert_eq!(instance.expect_end().code(), Some(0));
}

/// Sends three invocations back to back to three workers; each takes 300 ms.
fn three_at_once(instance: &mut Instance, prefix: &str) {
    let ids: Vec<String> = (1..=3).map(|i| format!("{prefix}-{i}")).collect();
    let sent = Instant::now();
    for id in &ids {
        instance.invoke(id, 5000, "{}");
    }
    // A fourth finds every worker busy.
    instance.invoke(&format!("{prefix}-4"), 5000, "{}");
    let mut answered = Vec::new();
    let mut pids = Vec::new();
    while answered.len() < 3 {
        match instance.recv() {
            (Header::Response { id, .. }, body) => {
                let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(out["id"], id.as_str());
                pids.push(out["pid"].as_u64().unwrap());
                answered.push(id);
            }
            (Header::Error { id, error_type }, _) if id == format!("{prefix}-4") => {
                assert_eq!(error_type.as_deref(), Some("Strata.InstanceBusy"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = sent.elapsed();
    // One after the other would take 900 ms.
    assert!(elapsed < Duration::from_millis(650), "{elapsed:?}");
    answered.sort();
    assert_eq!(answered, ids);
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three processes served them: {pids:?}");
    for id in &ids {
        for what in ["start", "end"] {
            let line = format!("{what} {id}");
            let log = instance.expect_log(|l| l.line == line);
            assert_eq!(log.id.as_deref(), Some(id.as_str()), "{line}");
        }
    }
}

#[test]
fn three_workers_run_invocations_concurrently() {
    let script = test_bootstrap();
    let mut instance = start_agent(&["--generic"], &["python3", "-u", &script], &[]);
    instance.expect(Header::Waiting);
    instance.send(&specialize("slow", &[], 3), b"");
    instance.expect(Header::Specialized);
    expect_ready(&mut instance);
    instance.expect_loaded(3);
    three_at_once(&mut instance, "req-w");
    // Again, on the same workers.
    three_at_once(&mut instance, "req-v");
}

#[test]
fn deferred_bootstrap_with_three_workers() {
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("app.py"),
        "import os, time\n\
         print('loaded', os.getpid())\n\
         def handler(event, context):\n    \
             print('start', context.aws_request_id)\n    \
             time.sleep(0.3)\n    \
             print('end', context.aws_request_id)\n    \
             return {'id': context.aws_request_id, 'pid': os.getpid(),\n            \
                     'var': os.environ.get('MY_VAR')}\n",
    )
    .unwrap();
    let mut instance = start_agent(
        &["--generic"],
        &["python3", "-u", &python_bootstrap()],
        &[("STRATA_DEFERRED", "1")],
    );
    instance.expect(Header::Waiting);
    let env = vec![
        format!("LAMBDA_TASK_ROOT={}", code.path().display()),
        "MY_VAR=everywhere".to_string(),
    ];
    instance.send(&specialize("app.handler", &env, 3), b"");
    instance.expect(Header::Specialized);
    expect_ready(&mut instance);
    instance.expect_loaded(3);
    three_at_once(&mut instance, "req-p");
    // Every worker has the function's environment.
    for i in 1..=3 {
        instance.invoke(&format!("req-e{i}"), 5000, "{}");
    }
    for _ in 1..=3 {
        let (header, body) = instance.recv();
        assert!(matches!(header, Header::Response { .. }), "{header:?}");
        let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(out["var"], "everywhere");
    }
}

#[test]
fn direct_mode_workers_from_the_environment() {
    let mut instance = start("slow", &[("STRATA_WORKERS", "3")]);
    expect_ready(&mut instance);
    instance.expect_loaded(3);
    three_at_once(&mut instance, "req-s");
}

#[test]
fn timeout_with_several_workers_kills_them_all() {
    let script = test_bootstrap();
    let mut instance = start_agent(&["--generic"], &["python3", "-u", &script], &[]);
    instance.expect(Header::Waiting);
    instance.send(&specialize("sleep", &[], 3), b"");
    instance.expect(Header::Specialized);
    expect_ready(&mut instance);
    let pids = instance.sleep_pids(3);
    assert_eq!(pids.len(), 6, "three workers and their children: {pids:?}");
    instance.invoke("req-t", 700, "{}");
    instance.expect(Header::Timeout {
        id: "req-t".into(),
        timeout_ms: 700,
    });
    match instance.recv() {
        (
            Header::Exited {
                code: None,
                signal: Some(9),
                during: Some(id),
            },
            _,
        ) if id == "req-t" => {}
        other => panic!("expected Exited by SIGKILL, got {other:?}"),
    }
    assert_eq!(instance.expect_end().code(), Some(0));
    wait_gone(&pids);
}

#[test]
fn one_worker_exiting_ends_the_instance() {
    let mut instance = start("exit_mid", &[("STRATA_WORKERS", "2")]);
    expect_ready(&mut instance);
    let others = children_of(instance.child.id());
    assert_eq!(others.len(), 2, "{others:?}");
    instance.invoke("req-x", 5000, "{}");
    instance.expect(Header::Exited {
        code: Some(3),
        signal: None,
        during: Some("req-x".into()),
    });
    assert_eq!(instance.expect_end().code(), Some(3));
    wait_gone(&others);
}
