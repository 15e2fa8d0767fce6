//! Harness for end-to-end tests: a real `strata server` on a free port with its own data
//! directory, driven through the real `strata` CLI.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Why a privileged test cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    // /proc/self is owned by the effective uid.
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(1);
    if uid != 0 {
        return Some("needs root (containers, overlay mounts)".into());
    }
    if Command::new("runc")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return Some("runc is not installed (scripts/install-deps installs it)".into());
    }
    if init_binary().is_none() {
        return Some(
            "strata-init is not built (cargo build -p strata-init, or set STRATA_INIT)".into(),
        );
    }
    if !rootfs_tar().is_file() {
        return Some(format!(
            "no test root file system at {} (scripts/test makes it with mmdebstrap)",
            rootfs_tar().display()
        ));
    }
    None
}

/// Skips the calling test (with a printed reason) when it cannot run here.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = common::skip_reason() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// The strata-init agent the test servers give instances: `STRATA_INIT`, else the one cargo
/// built next to the strata binary.
pub fn init_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_INIT") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(BIN).parent()?.join("strata-init");
    p.is_file().then_some(p)
}

pub fn rootfs_tar() -> PathBuf {
    std::env::var_os("STRATA_TEST_ROOTFS_TAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/test-cache/bookworm-minbase.tar"
            ))
        })
}

pub struct Server {
    child: Option<Child>,
    pub data: tempfile::TempDir,
    pub url: String,
    listen: String,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra `strata server` flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let data = tempfile::Builder::new()
            .prefix("strata-e2e-")
            .tempdir()
            .expect("tempdir");
        let listen = format!("127.0.0.1:{}", free_port());
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut s = Server {
            child: None,
            url: format!("http://{listen}"),
            listen,
            data,
            extra,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("server.log"))
            .expect("log");
        let child = Command::new(BIN)
            .args(["server", "--data"])
            .arg(self.data.path())
            .args(["--listen", &self.listen, "--log", "info"])
            .args(&self.extra)
            .env("STRATA_INIT", init_binary().unwrap_or_default())
            // Test machines run Debian 12's runc, which has no fix for the 2025 escapes; the
            // gate itself is tested in tests/server_start.rs.
            .env("STRATA_ALLOW_VULNERABLE_RUNC", "1")
            // Functions with network access get a bridge and subnet of this server's own: test
            // servers never take the host's default `strata0`, nor each other's.
            .env("STRATA_NET_BRIDGE", test_network(&self.listen).0)
            .env("STRATA_NET_SUBNET", test_network(&self.listen).1)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&self.listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.path().join("admin.token"))
            .expect("token")
            .trim()
            .to_string()
    }

    /// Stops the server gracefully and starts it again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops the server gracefully and waits for it.
    pub fn stop_now(&mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (no clean-up) and leaves it down; `start_again` restarts it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a server that is down (after `kill9` or `stop_now`) again on the same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        self.spawn();
    }

    /// Ids of the runc containers in this server's runc state directory (the tag derived from
    /// the data directory, as the server derives it).
    pub fn runc_ids(&self) -> Vec<String> {
        let root = format!("/run/strata/{}/runc", self.tag());
        if !Path::new(&root).exists() {
            return Vec::new();
        }
        let out = Command::new("runc")
            .args(["--root", &root, "list", "-q"])
            .output()
            .expect("runc list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The per-data-directory tag of runc state and cgroups.
    pub fn tag(&self) -> String {
        use sha2::Digest as _;
        let abs = std::path::absolute(self.data.path()).expect("absolute");
        hex::encode(&sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes())[..6])
    }

    /// Kills the server with SIGKILL (no clean-up) and starts it again on the same data.
    pub fn kill9_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("STRATA_URL", &self.url)
            .env("STRATA_TOKEN", self.token())
            .env_remove("STRATA_DATA");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run strata")
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}\nserver log tail:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "strata {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs with `-o json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["-o", "json"];
        a.extend(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
    }

    /// Imports the shared test root file system as image `name`.
    pub fn import_base(&self, name: &str) {
        self.ok(&[
            "image",
            "import",
            name,
            rootfs_tar().to_str().expect("utf8"),
        ]);
    }

    /// Paths mounted under the data directory (must be none when idle).
    pub fn mounts(&self) -> Vec<String> {
        let data = self.data.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| m.starts_with(&data))
            .collect()
    }

    /// Entries left in the scratch area.
    pub fn scratch_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.data.path().join("tmp"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// cgroups of this server's containers still present (must be none when idle).
    pub fn cgroups(&self) -> Vec<String> {
        use sha2::Digest as _;
        let abs = std::path::absolute(self.data.path()).expect("absolute");
        let tag = hex::encode(&sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes())[..6]);
        let mut left = Vec::new();
        for root in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup",
        ] {
            let dir = Path::new(root).join("strata").join(&tag);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        left.push(e.path().display().to_string());
                    }
                }
            }
        }
        left
    }

    /// Asserts that nothing of a container, build or instance is left behind: no mount under the
    /// data directory, no scratch files, no cgroup.
    pub fn assert_clean(&self) {
        // Stopping instances is asynchronous (pools follow function removals within a tick).
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline
            && !(self.mounts().is_empty()
                && self.scratch_entries().is_empty()
                && self.cgroups().is_empty())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left behind");
        assert_eq!(
            self.scratch_entries(),
            Vec::<String>::new(),
            "scratch files left behind"
        );
        assert_eq!(self.cgroups(), Vec::<String>::new(), "cgroups left behind");
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.data.path().join("work").join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn work(&self) -> PathBuf {
        self.data.path().join("work")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The function-network bridge and subnet of a test server listening on `listen`, derived from
/// its port (`--net-bridge` / `--net-subnet` given as flags take precedence).
pub fn test_network(listen: &str) -> (String, String) {
    let port: u16 = listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (
        format!("stp{port}"),
        format!("10.{}.{}.0/24", 216 + (port >> 8) % 32, port & 255),
    )
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}
