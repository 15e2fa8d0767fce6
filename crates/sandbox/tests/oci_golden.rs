//! Golden tests of the pure plan → OCI config translation.
//!
//! The expected configs live in `tests/fixtures/*.json`. After an intended change, regenerate
//! them with `UPDATE_GOLDEN=1 cargo test -p strata-sandbox --test oci_golden` and review the
//! diff by eye.
//!
//! The default seccomp profile is long and the same in every config, so it is checked once, in
//! `tests/fixtures/seccomp_default_<arch>.json`, and the configs show a marker in its place.

use std::path::{Path, PathBuf};

use strata_sandbox::{
    build_capabilities, default_seccomp_profile, oci_config, BindMount, ContainerSpec, Limits,
    Network, Seccomp, SeccompArch, TmpfsMount,
};

/// What the configs' fixtures show instead of the default seccomp profile.
const DEFAULT_PROFILE_MARKER: &str = "<default seccomp profile: seccomp_default_<arch>.json>";

fn check_golden(name: &str, spec: &ContainerSpec) {
    let mut actual = oci_config(spec);
    if actual["linux"]["seccomp"] == default_seccomp_profile(SeccompArch::host()) {
        actual["linux"]["seccomp"] = DEFAULT_PROFILE_MARKER.into();
    }
    check_golden_value(name, &actual);
}

fn check_golden_value(name: &str, actual: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let mut text = serde_json::to_string_pretty(actual).expect("serializes");
        text.push('\n');
        std::fs::write(&path, text).expect("write golden file");
        eprintln!("updated {}", path.display());
        return;
    }
    let expected_text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    let expected: serde_json::Value =
        serde_json::from_str(&expected_text).expect("golden file is JSON");
    assert_eq!(
        *actual,
        expected,
        "oci_config({name}) changed; if intended, rerun with UPDATE_GOLDEN=1 and review {}",
        path.display()
    );
}

/// A build step: root, host network, Docker's capabilities, a cache bind, a scratch tmpfs.
fn build_step() -> ContainerSpec {
    ContainerSpec {
        id: "strata-b-0123456789abcdef".into(),
        rootfs: PathBuf::from("/var/lib/strata/run/strata-b-0123456789abcdef/merged"),
        readonly_rootfs: false,
        args: vec![
            "/bin/sh".into(),
            "-c".into(),
            "apt-get update && apt-get install -y curl".into(),
        ],
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "DEBIAN_FRONTEND=noninteractive".into(),
        ],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        hostname: "strata-build".into(),
        network: Network::Host,
        capabilities: build_capabilities(),
        binds: vec![BindMount {
            source: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            destination: "/etc/ssl/certs/ca-certificates.crt".into(),
            readonly: true,
        }],
        slave_binds: vec![],
        tmpfs: vec![TmpfsMount {
            destination: "/tmp".into(),
            size_bytes: 512 << 20,
            mode: 0o1777,
        }],
        limits: Limits {
            memory_bytes: Some(2 << 30),
            cpu_millis: Some(2000),
            pids: Some(4096),
        },
        cgroup_parent: "strata".into(),
        no_new_privileges: false,
        rlimit_nofile: 65536,
        seccomp: Seccomp::Default,
    }
}

/// A function instance: non-root, isolated network, read-only rootfs, no capabilities,
/// the code and the agent socket bound in, a CPU share but no pids limit.
fn instance() -> ContainerSpec {
    ContainerSpec {
        id: "strata-i-fedcba9876543210".into(),
        rootfs: PathBuf::from("/var/lib/strata/run/strata-i-fedcba9876543210/merged"),
        readonly_rootfs: true,
        args: vec!["/strata/strata-init".into()],
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001".into(),
        ],
        cwd: "/var/task".into(),
        uid: 1000,
        gid: 1000,
        additional_gids: vec![29, 44],
        hostname: "strata".into(),
        network: Network::Isolated,
        capabilities: vec![],
        binds: vec![
            BindMount {
                source: PathBuf::from("/var/lib/strata/code/sha256-abc"),
                destination: "/var/task".into(),
                readonly: true,
            },
            BindMount {
                source: PathBuf::from("/run/strata/agent/strata-i-fedcba9876543210"),
                destination: "/run/strata".into(),
                readonly: false,
            },
        ],
        slave_binds: vec![],
        tmpfs: vec![TmpfsMount {
            destination: "/tmp".into(),
            size_bytes: 64 << 20,
            mode: 0o1777,
        }],
        limits: Limits {
            memory_bytes: Some(128 << 20),
            cpu_millis: Some(500),
            pids: None,
        },
        cgroup_parent: "strata/instances".into(),
        no_new_privileges: true,
        rlimit_nofile: 1024,
        seccomp: Seccomp::Default,
    }
}

/// A generic warm instance: no code yet; `/var/task` is a slave of a host mount point that
/// receives the function's code later.
fn warm_instance() -> ContainerSpec {
    let mut spec = instance();
    spec.binds.retain(|b| b.destination != "/var/task");
    spec.slave_binds.push(BindMount {
        source: PathBuf::from("/var/lib/strata/run/strata-i-fedcba9876543210/task"),
        destination: "/var/task".into(),
        readonly: true,
    });
    spec
}

#[test]
fn golden_build_step() {
    check_golden("build_step", &build_step());
}

#[test]
fn golden_instance() {
    check_golden("instance", &instance());
}

#[test]
fn golden_warm_instance() {
    check_golden("warm_instance", &warm_instance());
}

#[test]
fn golden_minimal_defaults() {
    check_golden(
        "minimal",
        &ContainerSpec::new("strata-t-1", "/rootfs", vec!["true".into()]),
    );
}

#[test]
fn golden_unconfined_has_no_seccomp() {
    let mut spec = ContainerSpec::new("strata-t-1", "/rootfs", vec!["true".into()]);
    spec.seccomp = Seccomp::Unconfined;
    check_golden("unconfined", &spec);
}

#[test]
fn golden_seccomp_default_profile() {
    check_golden_value(
        "seccomp_default_x86_64",
        &default_seccomp_profile(SeccompArch::X86_64),
    );
    check_golden_value(
        "seccomp_default_aarch64",
        &default_seccomp_profile(SeccompArch::Aarch64),
    );
}

#[test]
fn spec_round_trips_through_json() {
    let spec = instance();
    let text = serde_json::to_string(&spec).expect("serializes");
    let back: ContainerSpec = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, spec);
    assert!(text.contains(r#""network":"isolated""#), "{text}");
    let warm = warm_instance();
    let back: ContainerSpec =
        serde_json::from_str(&serde_json::to_string(&warm).expect("serializes")).expect("parses");
    assert_eq!(back, warm);
}
