//! Integration tests that mount overlays and run real containers under runc.
//!
//! They need root, runc (`STRATA_TEST_RUNC`, default `/usr/bin/runc`) and a Debian root
//! filesystem tarball (`STRATA_TEST_ROOTFS_TAR`, default
//! `target/test-cache/bookworm-minbase.tar` of the workspace, else
//! `/tmp/dev/bookworm-minbase.tar`);
//! without them each test prints why it is skipped and passes. Every test checks at its end
//! that no mount remains under its temp dir, that runc lists no container, and that no cgroup
//! was left behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_sandbox::mount::{
    bind_into, make_shared_mountpoint, mount_overlay, mount_overlay_classic, mounts_under, unmount,
};
use strata_sandbox::{
    cleanup_cgroups, debootstrap_tar, host_user_lookup, memory_usage, set_limits, BindMount,
    ContainerSpec, Limits, Network, RunOutcome, Runc, SandboxError, Seccomp, Stream,
};
use strata_types::ErrorKind;

fn runc_binary() -> PathBuf {
    std::env::var_os("STRATA_TEST_RUNC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/runc"))
}

fn rootfs_tar() -> PathBuf {
    if let Some(tar) = std::env::var_os("STRATA_TEST_ROOTFS_TAR") {
        return PathBuf::from(tar);
    }
    let cached =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-cache/bookworm-minbase.tar");
    if cached.is_file() {
        cached
    } else {
        PathBuf::from("/tmp/dev/bookworm-minbase.tar")
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Why this machine cannot run the root tests, if it cannot.
fn skip_reason(needs_rootfs: bool) -> Option<String> {
    if !is_root() {
        return Some("not running as root".into());
    }
    if !runc_binary().is_file() {
        return Some(format!(
            "runc not found at {} (set STRATA_TEST_RUNC)",
            runc_binary().display()
        ));
    }
    if needs_rootfs && !rootfs_tar().is_file() {
        return Some(format!(
            "rootfs tarball not found at {} (set STRATA_TEST_ROOTFS_TAR)",
            rootfs_tar().display()
        ));
    }
    None
}

macro_rules! skip_unless_ready {
    ($test:literal, $needs_rootfs:expr) => {
        if let Some(reason) = skip_reason($needs_rootfs) {
            eprintln!("skipping {}: {reason}", $test);
            return;
        }
    };
}

/// A temp dir with the Debian rootfs unpacked as a lower dir, an upper, a work dir, a merged
/// mount point, a bundle dir and a runc state root.
struct Fixture {
    dir: tempfile::TempDir,
    name: String,
    runc: Runc,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("strata-sbx-")
            .tempdir()
            .expect("tempdir");
        for sub in ["lower", "upper", "work", "merged", "bundle"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let runc = Runc::new(runc_binary(), dir.path().join("state"));
        Fixture {
            dir,
            name: name.to_string(),
            runc,
        }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn unpack_rootfs(&self) {
        let status = std::process::Command::new("tar")
            .arg("-xf")
            .arg(rootfs_tar())
            .arg("-C")
            .arg(self.path("lower"))
            .status()
            .expect("run tar");
        assert!(
            status.success(),
            "unpacking {} failed",
            rootfs_tar().display()
        );
    }

    /// Unpacks the rootfs and mounts a writable overlay of it at `merged`.
    fn mount_rootfs(&self) {
        self.unpack_rootfs();
        mount_overlay(
            &[self.path("lower")],
            Some((&self.path("upper"), &self.path("work"))),
            &self.path("merged"),
        )
        .expect("mount overlay");
    }

    fn cgroup_parent(&self) -> String {
        format!("strata-test-{}-{}", self.name, std::process::id())
    }

    fn spec(&self, args: &[&str]) -> ContainerSpec {
        let mut spec = ContainerSpec::new(
            format!("strata-t-{}-{}", self.name, std::process::id()),
            self.path("merged"),
            args.iter().map(|a| a.to_string()).collect(),
        );
        spec.cgroup_parent = self.cgroup_parent();
        spec
    }

    async fn run(
        &self,
        spec: &ContainerSpec,
        timeout: Option<Duration>,
    ) -> (
        Result<strata_sandbox::RunOutcome, SandboxError>,
        Vec<(Stream, String)>,
    ) {
        let mut lines = Vec::new();
        let result = self
            .runc
            .run(&self.path("bundle"), spec, timeout, &mut |s, l| {
                lines.push((s, l))
            })
            .await;
        (result, lines)
    }

    /// Unmounts `merged` and checks nothing was left behind.
    async fn finish(self) {
        unmount(&self.path("merged")).expect("unmount merged");
        let left = mounts_under(self.dir.path()).expect("mountinfo");
        assert!(
            left.is_empty(),
            "mounts left under {}: {left:?}",
            self.dir.path().display()
        );
        let ids = self.runc.list_ids().await.expect("runc list");
        assert!(ids.is_empty(), "containers left: {ids:?}");
        // The container's own cgroup must be gone; then remove the per-test parent.
        let parent = self.cgroup_parent();
        let leftover = cleanup_cgroups(&parent, "strata-t-").expect("cleanup cgroups");
        assert_eq!(
            leftover, 0,
            "runc delete left {leftover} cgroup dirs under {parent}"
        );
        cleanup_cgroups("", &parent).expect("remove the test's cgroup parent");
    }
}

impl Drop for Fixture {
    /// A safety net for failed tests: never leave mounts behind in /tmp.
    fn drop(&mut self) {
        if let Ok(mounts) = mounts_under(self.dir.path()) {
            for m in mounts {
                let _ = unmount(&m);
            }
        }
    }
}

#[tokio::test]
async fn root_run_streams_output_exit_code_and_writes_to_upper() {
    skip_unless_ready!(
        "root_run_streams_output_exit_code_and_writes_to_upper",
        true
    );
    let f = Fixture::new("basic");
    f.mount_rootfs();
    let spec = f.spec(&[
        "sh",
        "-c",
        "echo hi; echo err >&2; touch /made-here; exit 3",
    ]);
    let (result, lines) = f.run(&spec, Some(Duration::from_secs(30))).await;
    let outcome = result.expect("run");
    assert_eq!(outcome.exit_code, 3);
    assert!(!outcome.timed_out);
    assert!(!outcome.oom_killed);
    assert!(
        lines.contains(&(Stream::Stdout, "hi".to_string())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(Stream::Stderr, "err".to_string())),
        "{lines:?}"
    );
    assert!(
        f.path("upper/made-here").exists(),
        "the write landed in the upper dir"
    );
    assert!(
        !f.path("lower/made-here").exists(),
        "the lower dir is untouched"
    );
    assert!(f.path("bundle/config.json").exists());
    f.finish().await;
}

#[tokio::test]
async fn root_timeout_kills_the_container() {
    skip_unless_ready!("root_timeout_kills_the_container", true);
    let f = Fixture::new("timeout");
    f.mount_rootfs();
    let spec = f.spec(&["sleep", "100"]);
    let started = Instant::now();
    let (result, _) = f.run(&spec, Some(Duration::from_secs(1))).await;
    let outcome = result.expect("run");
    let elapsed = started.elapsed();
    assert!(outcome.timed_out);
    assert_eq!(outcome.exit_code, 128 + 9, "killed by SIGKILL");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(1), "took {elapsed:?}");
    f.finish().await;
}

#[tokio::test]
async fn root_pids_limit_stops_fork_bombs() {
    skip_unless_ready!("root_pids_limit_stops_fork_bombs", true);
    let f = Fixture::new("pids");
    f.mount_rootfs();
    let script = "i=0; while [ $i -lt 100 ]; do sleep 5 & i=$((i+1)); done; echo spawned-all";
    let mut spec = f.spec(&["sh", "-c", script]);

    // Control: without a limit all 100 start.
    let (result, lines) = f.run(&spec, Some(Duration::from_secs(30))).await;
    assert_eq!(result.expect("run").exit_code, 0);
    assert!(
        lines.contains(&(Stream::Stdout, "spawned-all".to_string())),
        "{lines:?}"
    );

    spec.limits.pids = Some(20);
    let (result, lines) = f.run(&spec, Some(Duration::from_secs(30))).await;
    let outcome = result.expect("run");
    assert_ne!(outcome.exit_code, 0, "{lines:?}");
    assert!(!lines.iter().any(|(_, l)| l == "spawned-all"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(s, l)| *s == Stream::Stderr && l.contains("fork")),
        "{lines:?}"
    );
    f.finish().await;
}

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

#[tokio::test]
async fn root_isolated_network_has_only_loopback() {
    skip_unless_ready!("root_isolated_network_has_only_loopback", true);
    let f = Fixture::new("net");
    f.mount_rootfs();
    let mut spec = f.spec(&["cat", "/proc/net/dev"]);
    spec.network = Network::Isolated;
    let (result, lines) = f.run(&spec, Some(Duration::from_secs(30))).await;
    assert_eq!(result.expect("run").exit_code, 0);
    let text: Vec<String> = lines
        .into_iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l)
        .collect();
    assert_eq!(interfaces(&text.join("\n")), vec!["lo"]);

    // The host network shows the host's interfaces.
    let host = std::fs::read_to_string("/proc/net/dev").expect("host /proc/net/dev");
    spec.network = Network::Host;
    let (result, lines) = f.run(&spec, Some(Duration::from_secs(30))).await;
    assert_eq!(result.expect("run").exit_code, 0);
    let text: Vec<String> = lines
        .into_iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l)
        .collect();
    let mut seen = interfaces(&text.join("\n"));
    let mut want = interfaces(&host);
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    f.finish().await;
}

#[tokio::test]
async fn root_memory_limit_kills_and_reports_oom() {
    skip_unless_ready!("root_memory_limit_kills_and_reports_oom", true);
    let f = Fixture::new("oom");
    f.mount_rootfs();
    let mut spec = f.spec(&["sh", "-c", "head -c 200m /dev/zero | tail"]);
    spec.limits.memory_bytes = Some(64 << 20);
    let (result, lines) = f.run(&spec, Some(Duration::from_secs(60))).await;
    let outcome = result.expect("run");
    assert_eq!(outcome.exit_code, 128 + 9, "tail was SIGKILLed: {lines:?}");
    assert!(outcome.oom_killed, "the OOM kill is reported");
    assert!(!outcome.timed_out);

    // Control: the same pipeline within its limit is not an OOM.
    spec.args = vec![
        "sh".into(),
        "-c".into(),
        "head -c 20m /dev/zero | tail | wc -c".into(),
    ];
    let (result, lines) = f.run(&spec, Some(Duration::from_secs(60))).await;
    let outcome = result.expect("run");
    assert_eq!(outcome.exit_code, 0, "{lines:?}");
    assert!(!outcome.oom_killed);
    f.finish().await;
}

#[tokio::test]
async fn root_start_failure_is_an_error_and_leaves_nothing() {
    skip_unless_ready!("root_start_failure_is_an_error_and_leaves_nothing", true);
    let f = Fixture::new("nox");
    f.mount_rootfs();
    let spec = f.spec(&["/no/such/program"]);
    let (result, _) = f.run(&spec, Some(Duration::from_secs(30))).await;
    let err = result.expect_err("cannot start");
    assert!(matches!(err, SandboxError::StartContainer { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/program"), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    f.finish().await;
}

#[tokio::test]
async fn root_duplicate_id_is_refused_without_harming_the_first() {
    skip_unless_ready!(
        "root_duplicate_id_is_refused_without_harming_the_first",
        true
    );
    let f = Fixture::new("dup");
    f.mount_rootfs();
    let spec = f.spec(&["sh", "-c", "sleep 2; echo first-done"]);
    let mut first_lines = Vec::new();
    let mut sink = |_: Stream, l: String| first_lines.push(l);
    let bundle = f.path("bundle");
    let first = f
        .runc
        .run(&bundle, &spec, Some(Duration::from_secs(30)), &mut sink);
    let second = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut ignore = |_: Stream, _: String| {};
        f.runc
            .run(
                &f.path("bundle2"),
                &spec,
                Some(Duration::from_secs(30)),
                &mut ignore,
            )
            .await
    };
    let (first, second) = tokio::join!(first, second);
    let err = second.expect_err("the id is taken");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(first.expect("first run").exit_code, 0);
    assert_eq!(first_lines, vec!["first-done"]);
    f.finish().await;
}

#[tokio::test]
async fn root_readonly_rootfs_and_user() {
    skip_unless_ready!("root_readonly_rootfs_and_user", true);
    let f = Fixture::new("ro");
    f.mount_rootfs();
    let (uid, gid, extra) =
        host_user_lookup(&f.path("merged"), "nobody").expect("nobody exists in bookworm");
    assert_eq!((uid, gid), (65534, 65534));
    let mut spec = f.spec(&[
        "sh",
        "-c",
        "id -u; id -g; touch /x 2>/dev/null && echo wrote || echo ro",
    ]);
    spec.readonly_rootfs = true;
    (spec.uid, spec.gid, spec.additional_gids) = (uid, gid, extra);
    let (result, lines) = f.run(&spec, Some(Duration::from_secs(30))).await;
    assert_eq!(result.expect("run").exit_code, 0);
    let out: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(out, vec!["65534", "65534", "ro"]);
    f.finish().await;
}

#[tokio::test]
async fn root_overlay_of_60_long_lowers() {
    skip_unless_ready!("root_overlay_of_60_long_lowers", false);
    let f = Fixture::new("many");
    let long = "x".repeat(100);
    let lowers: Vec<PathBuf> = (0..60)
        .map(|i| f.path(&format!("layers/{long}-{i:03}")))
        .collect();
    for (i, l) in lowers.iter().enumerate() {
        std::fs::create_dir_all(l).expect("mkdir layer");
        std::fs::write(l.join(format!("f{i}")), i.to_string()).expect("write");
        std::fs::write(l.join("shared"), i.to_string()).expect("write");
    }
    let option_bytes: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(
        option_bytes > 4096,
        "the stack would not fit one page of mount(2) options"
    );

    // Read-only: lowers only.
    mount_overlay(&lowers, None, &f.path("merged")).expect("mount 60 lowers read-only");
    for i in 0..60 {
        assert!(
            f.path(&format!("merged/f{i}")).exists(),
            "layer {i} is visible"
        );
    }
    assert_eq!(
        std::fs::read_to_string(f.path("merged/shared")).expect("read"),
        "0",
        "top layer wins"
    );
    assert!(
        std::fs::write(f.path("merged/new"), "x").is_err(),
        "read-only overlay"
    );
    unmount(&f.path("merged")).expect("unmount");

    // Writable: with an upper.
    mount_overlay(
        &lowers,
        Some((&f.path("upper"), &f.path("work"))),
        &f.path("merged"),
    )
    .expect("mount writable");
    std::fs::write(f.path("merged/new"), "x").expect("write through the overlay");
    assert!(f.path("upper/new").exists());
    f.finish().await;
}

#[tokio::test]
async fn root_classic_overlay_mount_works_and_refuses_long_stacks() {
    skip_unless_ready!(
        "root_classic_overlay_mount_works_and_refuses_long_stacks",
        false
    );
    let f = Fixture::new("classic");
    let lowers: Vec<PathBuf> = (0..3).map(|i| f.path(&format!("l{i}"))).collect();
    for (i, l) in lowers.iter().enumerate() {
        std::fs::create_dir(l).expect("mkdir");
        std::fs::write(l.join("shared"), i.to_string()).expect("write");
    }
    mount_overlay_classic(
        &lowers,
        Some((&f.path("upper"), &f.path("work"))),
        &f.path("merged"),
    )
    .expect("mount(2)");
    assert_eq!(
        std::fs::read_to_string(f.path("merged/shared")).expect("read"),
        "0"
    );
    std::fs::write(f.path("merged/new"), "x").expect("write");
    assert!(f.path("upper/new").exists());
    unmount(&f.path("merged")).expect("unmount");

    let long: Vec<PathBuf> = (0..60)
        .map(|i| f.path(&format!("{}-{i}", "y".repeat(100))))
        .collect();
    let err = mount_overlay_classic(&long, None, &f.path("merged"))
        .expect_err("more than a page of options");
    assert!(
        matches!(err, SandboxError::OverlayUnsupported { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    f.finish().await;
}

#[tokio::test]
async fn root_abandoned_run_deletes_its_container() {
    skip_unless_ready!("root_abandoned_run_deletes_its_container", true);
    let f = Fixture::new("abandon");
    f.mount_rootfs();
    let spec = f.spec(&["sleep", "100"]);
    let bundle = f.path("bundle");
    let mut sink = |_: Stream, _: String| {};
    let run = f.runc.run(&bundle, &spec, None, &mut sink);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), run)
            .await
            .is_err(),
        "still running when dropped"
    );
    // The run's guard deletes the container from a background thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = f.runc.list_ids().await.expect("runc list");
        if ids.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "abandoned container still listed: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.finish().await;
}

#[tokio::test]
async fn root_single_lower_is_a_readonly_bind() {
    skip_unless_ready!("root_single_lower_is_a_readonly_bind", false);
    let f = Fixture::new("bind");
    std::fs::write(f.path("lower/file"), "content").expect("write");
    mount_overlay(&[f.path("lower")], None, &f.path("merged")).expect("bind");
    assert_eq!(
        std::fs::read_to_string(f.path("merged/file")).expect("read"),
        "content"
    );
    let err = std::fs::write(f.path("merged/other"), "x").expect_err("read-only");
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error())
    );
    assert_eq!(
        mounts_under(f.dir.path()).expect("mountinfo"),
        vec![f.path("merged")]
    );
    unmount(&f.path("merged")).expect("unmount");
    unmount(&f.path("merged")).expect("unmounting what is not mounted is fine");
    unmount(&f.path("does-not-exist")).expect("unmounting a missing path is fine");
    f.finish().await;
}

#[tokio::test]
async fn root_unmount_detaches_a_busy_mount() {
    skip_unless_ready!("root_unmount_detaches_a_busy_mount", false);
    let f = Fixture::new("busy");
    std::fs::write(f.path("lower/file"), "content").expect("write");
    mount_overlay(&[f.path("lower")], None, &f.path("merged")).expect("bind");
    let open = std::fs::File::open(f.path("merged/file")).expect("hold a file open");
    unmount(&f.path("merged")).expect("busy mounts are detached lazily");
    assert!(mounts_under(f.dir.path()).expect("mountinfo").is_empty());
    drop(open);
    f.finish().await;
}

#[tokio::test]
async fn root_cleanup_cgroups_removes_only_empty_matching() {
    skip_unless_ready!("root_cleanup_cgroups_removes_only_empty_matching", false);
    let parent = format!("strata-test-cg-{}", std::process::id());
    let base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/pids")
    };
    let stale = base.join(&parent).join("strata-x-stale");
    let other = base.join(&parent).join("keep-me");
    std::fs::create_dir_all(&stale).expect("mkdir cgroup");
    std::fs::create_dir_all(&other).expect("mkdir cgroup");
    let removed = cleanup_cgroups(&parent, "strata-x-").expect("cleanup");
    assert_eq!(removed, 1);
    assert!(!stale.exists());
    assert!(other.exists(), "ids without the prefix are kept");
    assert_eq!(cleanup_cgroups(&parent, "keep-").expect("cleanup"), 1);
    assert_eq!(cleanup_cgroups("", &parent).expect("remove parent"), 1);
    assert!(!base.join(&parent).exists());
}

#[tokio::test]
async fn root_runc_version_and_empty_list() {
    skip_unless_ready!("root_runc_version_and_empty_list", false);
    let f = Fixture::new("version");
    let version = f.runc.version().await.expect("runc --version");
    assert!(
        version.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{version}"
    );
    assert!(f
        .runc
        .list_ids()
        .await
        .expect("missing state root lists nothing")
        .is_empty());
    f.runc
        .delete_force("strata-t-never-existed")
        .await
        .expect("deleting a missing container is fine");
    f.finish().await;
}

#[tokio::test]
async fn root_bootstrap_failure_reports_output_and_leaves_nothing() {
    skip_unless_ready!(
        "root_bootstrap_failure_reports_output_and_leaves_nothing",
        false
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("base.tar");
    let mut lines = Vec::new();
    // Nothing listens on port 9 of loopback: the mirror is unreachable.
    let err = debootstrap_tar(
        "bookworm",
        &[],
        "http://127.0.0.1:9/debian",
        &out,
        &mut |_, l| lines.push(l),
    )
    .await
    .expect_err("an unreachable mirror fails");
    match &err {
        SandboxError::Bootstrap { output, .. } => {
            assert!(!output.is_empty(), "{err}");
            assert!(output.lines().count() <= 20);
        }
        SandboxError::BinaryMissing { .. } => {
            eprintln!("skipping the rest: neither mmdebstrap nor debootstrap is installed");
            return;
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(!lines.is_empty(), "progress was streamed");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
#[ignore = "downloads a Debian base system from deb.debian.org (~20 s); run with --ignored"]
async fn root_bootstrap_from_the_debian_mirror() {
    skip_unless_ready!("root_bootstrap_from_the_debian_mirror", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("base.tar");
    let mut lines = 0usize;
    debootstrap_tar(
        "bookworm",
        &["python3-minimal".to_string()],
        "http://deb.debian.org/debian",
        &out,
        &mut |_, _| lines += 1,
    )
    .await
    .expect("bootstrap");
    assert!(lines > 0);
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&out)
        .output()
        .expect("tar -t");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l == "./usr/bin/python3"),
        "python3 is included"
    );
    assert!(listing.lines().any(|l| l == "./etc/passwd"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("base.tar")]);
}

/// Starts a container in the background (a task running [`Runc::run`]) and waits until runc
/// reports it running. Returns the task and the container's init pid.
async fn start_detached(
    f: &Fixture,
    spec: &ContainerSpec,
) -> (
    tokio::task::JoinHandle<Result<RunOutcome, SandboxError>>,
    u32,
) {
    let runc = f.runc.clone();
    let bundle = f.path("bundle");
    let task_spec = spec.clone();
    let task = tokio::spawn(async move {
        let mut ignore = |_: Stream, _: String| {};
        runc.run(
            &bundle,
            &task_spec,
            Some(Duration::from_secs(60)),
            &mut ignore,
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(state) = f.runc.state(&spec.id).await.expect("runc state") {
            if state.status == "running" {
                return (task, state.pid.expect("a running container has a pid"));
            }
        }
        assert!(!task.is_finished(), "the container ended before running");
        assert!(
            Instant::now() < deadline,
            "container not running after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes a background container and checks its run ended by being killed.
async fn stop_detached(
    f: &Fixture,
    id: &str,
    task: tokio::task::JoinHandle<Result<RunOutcome, SandboxError>>,
) {
    f.runc.delete_force(id).await.expect("runc delete");
    let outcome = task.await.expect("run task").expect("run");
    assert_eq!(outcome.exit_code, 128 + 9, "{outcome:?}");
    assert_eq!(f.runc.state(id).await.expect("runc state"), None);
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[tokio::test]
async fn root_bind_into_propagates_read_only_to_a_slave_without_runc() {
    skip_unless_ready!(
        "root_bind_into_propagates_read_only_to_a_slave_without_runc",
        false
    );
    let f = Fixture::new("slavebind");
    let (shared, slave, code) = (f.path("shared"), f.path("slave"), f.path("code"));
    for d in [&shared, &slave, &code] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::fs::write(code.join("handler.py"), "print('hi')\n").expect("write");
    make_shared_mountpoint(&shared).expect("shared mount point");
    // What runc does for an rslave bind: bind the shared mount, then make the copy a slave.
    rustix::mount::mount_bind(&shared, &slave).expect("bind");
    rustix::mount::mount_change(&slave, rustix::mount::MountPropagationFlags::DOWNSTREAM)
        .expect("make slave");
    assert!(std::fs::read_dir(&slave).expect("readdir").next().is_none());

    bind_into(&code, &shared, true).expect("bind code");
    assert_eq!(
        std::fs::read_to_string(slave.join("handler.py")).expect("propagated"),
        "print('hi')\n"
    );
    for dir in [&shared, &slave] {
        let err = std::fs::write(dir.join("new"), "x").expect_err("read-only");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::ROFS.raw_os_error()),
            "{}",
            dir.display()
        );
    }
    std::fs::write(code.join("host-side"), "x").expect("the source itself stays writable");
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .expect("readdir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("strata-stage"))
        .collect();
    assert!(leftovers.is_empty(), "staging dirs left: {leftovers:?}");

    // Unmounting the code on the host unmounts its propagated copy too.
    unmount(&shared).expect("unmount code");
    assert!(!slave.join("handler.py").exists());

    // Writable: the propagated copy is writable and writes reach the source.
    bind_into(&code, &shared, false).expect("bind code rw");
    std::fs::write(slave.join("from-slave"), "y").expect("writable copy");
    assert!(code.join("from-slave").exists());

    // A missing source fails without leaving a mount or a staging dir.
    let err = bind_into(&f.path("missing"), &shared, true).expect_err("no source");
    assert!(matches!(err, SandboxError::BindInto { .. }), "{err}");

    let mut mounts = mounts_under(f.dir.path()).expect("mountinfo");
    assert_eq!(mounts.len(), 4, "{mounts:?}");
    mounts.sort();
    assert_eq!(
        mounts,
        vec![shared.clone(), shared.clone(), slave.clone(), slave]
    );
    // Deepest and newest first: the code mounts go before the mounts they sit on.
    for m in mounts_under(f.dir.path()).expect("mountinfo") {
        unmount(&m).expect("unmount");
    }
    f.finish().await;
}

#[tokio::test]
async fn root_running_container_receives_code_at_var_task() {
    skip_unless_ready!("root_running_container_receives_code_at_var_task", true);
    let f = Fixture::new("warm");
    f.mount_rootfs();
    let (task_dir, private_dir, code) = (f.path("task"), f.path("private"), f.path("code"));
    for d in [&task_dir, &private_dir, &code] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::fs::write(
        code.join("handler.py"),
        "def handler(e, c):\n    return 42\n",
    )
    .expect("write code");
    make_shared_mountpoint(&task_dir).expect("shared mount point");

    let mut spec = f.spec(&["sleep", "30"]);
    spec.slave_binds = vec![
        BindMount {
            source: task_dir.clone(),
            destination: "/var/task".into(),
            readonly: true,
        },
        // Control: a slave bind of a dir that is not a shared mount point receives nothing.
        BindMount {
            source: private_dir.clone(),
            destination: "/opt/private".into(),
            readonly: true,
        },
    ];
    let (task, pid) = start_detached(&f, &spec).await;
    let exec = |args: Vec<String>| {
        let runc = f.runc.clone();
        let id = spec.id.clone();
        async move { runc.exec(&id, &args).await.expect("runc exec") }
    };

    // Generic: /var/task is empty, and a slave of the host's mount.
    assert_eq!(exec(sh("ls -A /var/task")).await, (0, String::new()));
    let (_, mountinfo) = exec(sh("cat /proc/self/mountinfo")).await;
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/var/task"))
        .unwrap_or_else(|| panic!("no /var/task mount in {mountinfo}"));
    assert!(line.contains(" master:"), "not a slave mount: {line}");
    eprintln!("/var/task in the container: {line}");

    // Specialize: mount the code on the host side.
    bind_into(&code, &task_dir, true).expect("bind code into the running container");
    bind_into(&code, &private_dir, true).expect("bind code onto the private dir");
    assert_eq!(
        exec(sh("cat /var/task/handler.py")).await,
        (0, "def handler(e, c):\n    return 42\n".to_string())
    );
    let via_proc = PathBuf::from(format!("/proc/{pid}/root/var/task/handler.py"));
    assert!(via_proc.exists(), "visible from the host via {via_proc:?}");
    let (code_rc, out) = exec(sh("touch /var/task/new; echo rc=$?")).await;
    assert_eq!(code_rc, 0);
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(!code.join("new").exists());
    assert_eq!(
        exec(sh("ls -A /opt/private")).await,
        (0, String::new()),
        "a dir that is not a shared mount point does not propagate"
    );

    // Exec errors are errors, not exit codes.
    let err = f
        .runc
        .exec(&spec.id, &["/no/such/program".to_string()])
        .await
        .expect_err("no such program");
    assert!(err.to_string().contains("/no/such/program"), "{err}");
    assert!(f
        .runc
        .exec("strata-t-no-such-container", &["true".to_string()])
        .await
        .is_err());

    // Unmounting the code on the host takes it out of the container again.
    unmount(&task_dir).expect("unmount the code");
    assert_eq!(exec(sh("ls -A /var/task")).await, (0, String::new()));

    stop_detached(&f, &spec.id, task).await;
    for m in mounts_under(f.dir.path()).expect("mountinfo") {
        if m != f.path("merged") {
            unmount(&m).expect("unmount");
        }
    }
    f.finish().await;
}

/// The value of a container's cgroup file for `controller`, from v1 or v2.
fn cgroup_file(controller: &str, cgroups_path: &str, v1: &str, v2: &str) -> String {
    let rel = cgroups_path.trim_start_matches('/');
    let v1_dir = Path::new("/sys/fs/cgroup").join(controller).join(rel);
    let path = if v1_dir.is_dir() {
        v1_dir.join(v1)
    } else {
        Path::new("/sys/fs/cgroup").join(rel).join(v2)
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn memory_limit(cgroups_path: &str) -> u64 {
    let text = cgroup_file(
        "memory",
        cgroups_path,
        "memory.limit_in_bytes",
        "memory.max",
    );
    text.parse().unwrap_or(u64::MAX)
}

#[tokio::test]
async fn root_set_limits_resizes_a_running_container() {
    skip_unless_ready!("root_set_limits_resizes_a_running_container", true);
    let f = Fixture::new("resize");
    f.mount_rootfs();
    let mut spec = f.spec(&["sleep", "30"]);
    spec.limits = Limits {
        memory_bytes: Some(256 << 20),
        cpu_millis: Some(1000),
        pids: None,
    };
    let (task, _) = start_detached(&f, &spec).await;
    let cg = spec.cgroups_path();
    let exec = |args: Vec<String>| {
        let runc = f.runc.clone();
        let id = spec.id.clone();
        async move { runc.exec(&id, &args).await.expect("runc exec") }
    };
    assert_eq!(memory_limit(&cg), 256 << 20);
    let usage = memory_usage(&cg).expect("memory usage");
    assert!(usage > 0 && usage < 256 << 20, "{usage}");

    // Cut to 64 MiB, a quarter core, 8 tasks.
    let small = Limits {
        memory_bytes: Some(64 << 20),
        cpu_millis: Some(250),
        pids: Some(8),
    };
    set_limits(&cg, &small).expect("set_limits");
    assert_eq!(memory_limit(&cg), 64 << 20);
    let memsw = Path::new("/sys/fs/cgroup/memory")
        .join(cg.trim_start_matches('/'))
        .join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        let v = std::fs::read_to_string(&memsw).expect("read memsw");
        assert_eq!(v.trim(), (64u64 << 20).to_string(), "memory+swap follows");
    }
    let cpu = cgroup_file("cpu", &cg, "cpu.cfs_quota_us", "cpu.max");
    assert!(cpu == "25000" || cpu == "25000 100000", "{cpu}");
    assert_eq!(cgroup_file("pids", &cg, "pids.max", "pids.max"), "8");

    let (rc, out) = exec(sh("head -c 200m /dev/zero | tail")).await;
    assert_eq!(
        rc,
        128 + 9,
        "200 MB over a 64 MiB limit is OOM-killed: {out}"
    );
    let (rc, out) = exec(sh(
        "i=0; while [ $i -lt 20 ]; do sleep 2 & i=$((i+1)); done; echo spawned-all",
    ))
    .await;
    assert!(
        !out.contains("spawned-all"),
        "pids limit applies to new forks: {out}"
    );
    assert!(out.contains("fork"), "rc {rc}: {out}");

    // Raise back: 150 MB fits again, and 20 more tasks start.
    let large = Limits {
        memory_bytes: Some(256 << 20),
        cpu_millis: None,
        pids: None,
    };
    set_limits(&cg, &large).expect("raise");
    assert_eq!(memory_limit(&cg), 256 << 20);
    let cpu = cgroup_file("cpu", &cg, "cpu.cfs_quota_us", "cpu.max");
    assert!(cpu == "-1" || cpu == "max 100000", "{cpu}");
    assert_eq!(cgroup_file("pids", &cg, "pids.max", "pids.max"), "max");
    let (rc, out) = exec(sh("head -c 150m /dev/zero | tail | wc -c")).await;
    assert_eq!((rc, out.trim()), (0, "157286400"), "fits in 256 MiB again");
    let (rc, out) = exec(sh(
        "i=0; while [ $i -lt 20 ]; do sleep 1 & i=$((i+1)); done; echo spawned-all",
    ))
    .await;
    assert_eq!((rc, out.trim()), (0, "spawned-all"));

    // Bad input is refused before anything is written.
    let err = set_limits("/strata/../etc", &small).expect_err("dot-dot");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let missing = format!("/{}/strata-t-none", f.cgroup_parent());
    let err = set_limits(&missing, &small).expect_err("no such cgroup");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(memory_usage(&missing), None);

    // How long a resize takes (printed, not asserted: figures belong in benchmarks).
    let rounds = 1000u32;
    let started = Instant::now();
    for i in 0..rounds {
        let l = if i % 2 == 0 { &small } else { &large };
        set_limits(&cg, l).expect("set_limits");
    }
    let per = started.elapsed() / rounds;
    eprintln!("set_limits: {per:?} per call over {rounds} calls (alternating cut and raise)");

    stop_detached(&f, &spec.id, task).await;
    f.finish().await;
}

/// Runs a plan that must exit 0 and returns its stdout and stderr lines.
async fn output_of(f: &Fixture, spec: &ContainerSpec) -> Vec<String> {
    let (result, lines) = f.run(spec, Some(Duration::from_secs(30))).await;
    let outcome = result.expect("run");
    assert_eq!(outcome.exit_code, 0, "{lines:?}");
    lines.into_iter().map(|(_, l)| l).collect()
}

/// Writes three static x86_64 programs into the container's root that call `getpid` natively,
/// through `int 0x80` (the 32-bit x86 ABI) and with the x32 bit, and exit with the low byte of
/// the result; returns the shell commands that run them and print `native=`, `i386=` and
/// `x32=` with their exit status. Empty on other architectures.
fn write_abi_probes(f: &Fixture) -> String {
    if !cfg!(target_arch = "x86_64") {
        return String::new();
    }
    // mov edi, eax; mov eax, 60 (exit); syscall
    const EXIT_WITH_EAX: [u8; 9] = [0x89, 0xc7, 0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05];
    let probes: [(&str, &[u8]); 3] = [
        // mov eax, 39 (getpid); syscall
        ("native", &[0xb8, 0x27, 0, 0, 0, 0x0f, 0x05]),
        // mov eax, 20 (getpid on i386); int 0x80
        ("i386", &[0xb8, 0x14, 0, 0, 0, 0xcd, 0x80]),
        // mov eax, 0x40000000 | 39; syscall
        ("x32", &[0xb8, 0x27, 0, 0, 0x40, 0x0f, 0x05]),
    ];
    let mut script = Vec::new();
    for (name, call) in probes {
        let code = [call, &EXIT_WITH_EAX[..]].concat();
        let path = f.path("merged").join(format!("usr/local/bin/abi-{name}"));
        std::fs::write(&path, tiny_elf(&code)).expect("write probe");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script.push(format!("/usr/local/bin/abi-{name}; echo {name}=$?"));
    }
    script.join("; ")
}

/// A static x86_64 ELF executable whose whole text is `code`, loaded at 0x400000.
fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R + X
    for word in [0, BASE, BASE, size, size, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    elf
}

#[tokio::test]
async fn root_default_seccomp_profile_blocks_namespaces_and_mounts() {
    skip_unless_ready!(
        "root_default_seccomp_profile_blocks_namespaces_and_mounts",
        true
    );
    let f = Fixture::new("seccomp");
    f.mount_rootfs();
    // CAP_SYS_ADMIN on top of the build set, so that what stops `mount` is the filter and
    // not a missing capability.
    let script = "grep '^Seccomp:' /proc/self/status; \
        unshare -r true 2>&1; echo userns=$?; \
        unshare -rm true 2>&1; echo userns-mountns=$?; \
        unshare -m true 2>&1; echo mountns=$?; \
        mount -t tmpfs x /mnt 2>&1; echo mount=$?; \
        ls / >/dev/null; echo ls=$?; \
        sh -c 'sleep 0 & wait $!'; echo fork=$?; \
        chroot / true; echo chroot=$?; \
        perl -e 'my $p = fork(); if ($p == 0) { exec(\"true\") } waitpid($p, 0); print \"perl=$?\\n\"'; \
        perl -e 'for ([clone3 => 435], [io_uring_setup => 425], [ptrace => 101], [keyctl => 250]) { \
            $! = 0; syscall($_->[1], 0, 0, 0, 0); print \"$_->[0]=\", $! + 0, \"\\n\" }'";
    // System calls through the other ABIs of the CPU: the profile lists the native
    // architecture only, so libseccomp kills these with SIGSYS (status 128 + 31).
    let abi_script = write_abi_probes(&f);
    let script = format!("{script}; {abi_script}");
    let mut spec = f.spec(&["sh", "-c", &script]);
    spec.capabilities = strata_sandbox::build_capabilities();
    spec.capabilities.push("CAP_SYS_ADMIN".into());
    assert_eq!(
        spec.seccomp,
        Seccomp::Default,
        "the default plan is filtered"
    );

    let out = output_of(&f, &spec).await;
    eprintln!("default profile: {out:?}");
    let text = out.join("\n");
    assert_eq!(
        out[0].split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"]
    );
    for blocked in ["userns=1", "userns-mountns=1", "mountns=1", "mount=32"] {
        assert!(out.iter().any(|l| l == blocked), "{blocked} in {out:?}");
    }
    assert!(
        out.iter()
            .filter(|l| l.contains("unshare failed: Operation not permitted"))
            .count()
            == 3,
        "{text}"
    );
    assert!(text.contains("permission denied"), "{text}");
    // clone3 and io_uring look unimplemented (ENOSYS), the rest is refused (EPERM).
    for errno in ["clone3=38", "io_uring_setup=38", "ptrace=1", "keyctl=1"] {
        assert!(out.iter().any(|l| l == errno), "{errno} in {out:?}");
    }
    for works in ["ls=0", "fork=0", "chroot=0", "perl=0"] {
        assert!(out.iter().any(|l| l == works), "{works} in {out:?}");
    }
    if cfg!(target_arch = "x86_64") {
        // getpid through int 0x80 (32-bit x86) and with the x32 bit: killed; natively: a pid.
        for killed in ["i386=159", "x32=159"] {
            assert!(out.iter().any(|l| l == killed), "{killed} in {out:?}");
        }
        assert!(
            out.iter()
                .any(|l| l.starts_with("native=") && l != "native=159"),
            "{out:?}"
        );
    }

    // Unconfined: no filter, and the same calls get through.
    spec.seccomp = Seccomp::Unconfined;
    let out = output_of(&f, &spec).await;
    eprintln!("unconfined: {out:?}");
    assert_eq!(
        out[0].split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "0"]
    );
    for passes in ["userns-mountns=0", "mountns=0", "mount=0", "ls=0", "fork=0"] {
        assert!(out.iter().any(|l| l == passes), "{passes} in {out:?}");
    }
    if cfg!(target_arch = "x86_64") {
        // Without the filter the 32-bit call is served (the kernel may lack x32 altogether).
        assert!(
            out.iter()
                .any(|l| l.starts_with("i386=") && l != "i386=159"),
            "{out:?}"
        );
    }
    f.finish().await;
}
