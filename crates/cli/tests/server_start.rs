//! `strata server` refuses a runc release known to let containers escape unless told to accept
//! it. Runs against fake runc scripts, so it needs no runc; a server that gets past the check
//! needs root (its runc state lives under /run), so those tests skip without it.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A fake runc that reports `version` and answers every other command (`--root X list -q`,
/// `delete`, ...) with nothing and exit status 0.
fn fake_runc(dir: &Path, version: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("runc-{version}"));
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then\n  echo 'runc version {version}'\n  echo 'spec: 1.2.1'\nfi\nexit 0\n"
    );
    std::fs::write(&path, script).expect("write fake runc");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn is_root() -> bool {
    // /proc/self is owned by the effective uid.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn server(dir: &Path, runc: &Path, listen: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(["server", "--data"])
        .arg(dir.join("data"))
        .args(["--listen", listen, "--runc"])
        .arg(runc)
        .env_remove("STRATA_ALLOW_VULNERABLE_RUNC")
        .env_remove("STRATA_INIT")
        .stdin(Stdio::null());
    c
}

/// Starts the server, waits until it listens, stops it with SIGTERM; returns its stderr.
fn starts_and_listens(mut cmd: Command, listen: &str) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(listen).is_err() {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            panic!(
                "the server exited ({status}) instead of serving:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn server_refuses_a_vulnerable_runc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runc = fake_runc(dir.path(), "1.1.5");

    let listen = format!("127.0.0.1:{}", free_port());
    let out = server(dir.path(), &runc, &listen)
        .output()
        .expect("run server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "runc 1.1.5",
        "vulnerable to container escapes",
        "CVE-2024-21626",
        "CVE-2025-31133",
        "CVE-2025-52565",
        "CVE-2025-52881",
        "--allow-vulnerable-runc",
        "STRATA_ALLOW_VULNERABLE_RUNC=1",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    assert!(
        TcpStream::connect(&listen).is_err(),
        "nothing listens after a refusal"
    );
    assert!(
        !dir.path().join("data/admin.token").exists(),
        "refused before touching the data directory"
    );
}

#[test]
fn root_server_starts_on_a_vulnerable_runc_when_allowed() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (the server keeps runc state under /run)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runc = fake_runc(dir.path(), "1.1.5");
    // Allowed by the flag and by the variable: it starts, with a loud warning.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = server(dir.path(), &runc, &listen);
    cmd.arg("--allow-vulnerable-runc");
    let stderr = starts_and_listens(cmd, &listen);
    assert!(
        stderr.contains("Starting anyway") && stderr.contains("CVE-2025-31133"),
        "{stderr}"
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = server(dir.path(), &runc, &listen);
    cmd.env("STRATA_ALLOW_VULNERABLE_RUNC", "1");
    let stderr = starts_and_listens(cmd, &listen);
    assert!(stderr.contains("Starting anyway"), "{stderr}");
}

#[test]
fn root_server_starts_on_a_fixed_runc() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (the server keeps runc state under /run)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for version in ["1.3.3", "1.2.8"] {
        let runc = fake_runc(dir.path(), version);
        let listen = format!("127.0.0.1:{}", free_port());
        let stderr = starts_and_listens(server(dir.path(), &runc, &listen), &listen);
        assert!(!stderr.contains("vulnerable"), "{stderr}");
        assert!(stderr.contains("strata server ready"), "{stderr}");
    }
}
