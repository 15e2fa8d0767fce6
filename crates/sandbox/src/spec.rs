//! Container plans as data, and the pure translation of a plan into an OCI runtime config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::SandboxError;
use crate::seccomp::{seccomp_section, Seccomp};

/// The `PATH` every container gets unless its plan says otherwise.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a container reaches the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Share the host's network namespace (build steps that reach package mirrors).
    Host,
    /// A new network namespace with only a loopback interface.
    Isolated,
    /// Join an existing network namespace, a bind-mounted nsfs file such as
    /// `/run/netns/NAME` that the caller made ([`crate::net::attach`]): how a function with
    /// network access gets its own namespace on Strata's bridge.
    Join(PathBuf),
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    /// Mount read-only.
    pub readonly: bool,
}

/// A size-capped tmpfs inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Absolute path inside the container.
    pub destination: String,
    /// Upper bound of the tmpfs in bytes.
    pub size_bytes: u64,
    /// Mode bits of the tmpfs root, e.g. `0o1777`.
    pub mode: u32,
}

/// Cgroup limits of a container. `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes; swap is capped at the same value, so the container never swaps.
    pub memory_bytes: Option<u64>,
    /// CPU quota in millicores (1000 = one core).
    pub cpu_millis: Option<u32>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<i64>,
}

/// A container plan: pure data, turned into an OCI config by [`oci_config`] and run by
/// [`crate::Runc::run`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    /// The runtime's container id, e.g. `strata-b-<random>`.
    pub id: String,
    /// The root filesystem: usually a mounted overlay (its merged dir). Absolute.
    pub rootfs: PathBuf,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// The process's argv; `args[0]` is resolved against `PATH` by the runtime.
    pub args: Vec<String>,
    /// Environment as `K=V` strings.
    pub env: Vec<String>,
    /// Working directory inside the container. Absolute.
    pub cwd: String,
    /// User id of the process.
    pub uid: u32,
    /// Primary group id of the process.
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
    /// The container's hostname (it always gets its own UTS namespace).
    pub hostname: String,
    /// Host or isolated networking.
    pub network: Network,
    /// Capabilities as `CAP_*` names, granted bounding, effective and permitted.
    pub capabilities: Vec<String>,
    /// Host paths bind-mounted into the container, after the tmpfs mounts.
    pub binds: Vec<BindMount>,
    /// Host dirs bind-mounted into the container as *slaves* (`rbind, rslave`), after
    /// `binds`: whatever is mounted on the host dir later, while the container runs, appears
    /// inside it too. The host dir must be a shared mount point
    /// ([`crate::mount::make_shared_mountpoint`]) when the container starts, and is filled
    /// with [`crate::mount::bind_into`] — how a warm instance receives its function's code at
    /// `/var/task`. `readonly` applies to the (usually empty) host dir itself; a mount
    /// propagated later keeps its own flags.
    ///
    /// `rslave` rather than relying on the runtime's default root propagation (runc makes
    /// the container's tree `rslave` unless told otherwise, so even a plain bind of a shared
    /// host dir receives events): it states the intent in the plan and keeps the flow
    /// one-way — nothing mounted inside the container ever reaches the host — whatever root
    /// propagation the runtime uses.
    #[serde(default)]
    pub slave_binds: Vec<BindMount>,
    /// Size-capped tmpfs mounts.
    pub tmpfs: Vec<TmpfsMount>,
    /// Cgroup limits.
    pub limits: Limits,
    /// Cgroup parent, e.g. `strata`: the container's cgroup is `/<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
    /// Set `no_new_privs`, so setuid binaries and file capabilities grant nothing.
    pub no_new_privileges: bool,
    /// Soft and hard `RLIMIT_NOFILE`.
    pub rlimit_nofile: u64,
    /// The seccomp filter: Strata's default profile unless a plan opts out. Plans written
    /// before the field existed get the default.
    #[serde(default)]
    pub seccomp: Seccomp,
}

impl ContainerSpec {
    /// A plan with locked-down defaults: root user, isolated network, no capabilities,
    /// `no_new_privs`, writable rootfs, cwd `/`, the standard `PATH`, cgroup parent `strata`,
    /// 1024 open files, no limits, the default seccomp profile. Callers adjust fields from
    /// there.
    pub fn new(id: impl Into<String>, rootfs: impl Into<PathBuf>, args: Vec<String>) -> Self {
        ContainerSpec {
            id: id.into(),
            rootfs: rootfs.into(),
            readonly_rootfs: false,
            args,
            env: vec![DEFAULT_PATH_ENV.to_string()],
            cwd: "/".to_string(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: "strata".to_string(),
            network: Network::Isolated,
            capabilities: Vec::new(),
            binds: Vec::new(),
            slave_binds: Vec::new(),
            tmpfs: Vec::new(),
            limits: Limits::default(),
            cgroup_parent: "strata".to_string(),
            no_new_privileges: true,
            rlimit_nofile: 1024,
            seccomp: Seccomp::Default,
        }
    }

    /// The container's cgroup path, `/<cgroup_parent>/<id>`.
    pub fn cgroups_path(&self) -> String {
        let parent = self.cgroup_parent.trim_matches('/');
        if parent.is_empty() {
            format!("/{}", self.id)
        } else {
            format!("/{parent}/{}", self.id)
        }
    }

    /// Checks what the runtime would otherwise reject late or misread: the id's alphabet,
    /// absolute paths, a non-empty argv, `K=V` env entries, capability names, and a cgroup
    /// parent without `..`.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let invalid = |reason: String| SandboxError::InvalidSpec {
            id: self.id.clone(),
            reason,
        };
        validate_container_id(&self.id)?;
        if !self.rootfs.is_absolute() {
            return Err(invalid(format!(
                "rootfs {:?} must be an absolute path",
                self.rootfs
            )));
        }
        if self.args.is_empty() {
            return Err(invalid("args must name a program to run".to_string()));
        }
        if !self.cwd.starts_with('/') {
            return Err(invalid(format!(
                "cwd {:?} must be an absolute path",
                self.cwd
            )));
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(invalid(format!(
                "env entry {bad:?} must look like KEY=value"
            )));
        }
        if let Some(bad) = self.capabilities.iter().find(|c| !is_capability_name(c)) {
            return Err(invalid(format!(
                "capability {bad:?} must be an upper-case name such as CAP_CHOWN"
            )));
        }
        for b in self.binds.iter().chain(&self.slave_binds) {
            if !b.source.is_absolute() || !b.destination.starts_with('/') {
                return Err(invalid(format!(
                    "bind mount {:?} -> {:?} needs absolute source and destination",
                    b.source, b.destination
                )));
            }
        }
        if let Network::Join(path) = &self.network {
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "network namespace {path:?} must be an absolute path"
                )));
            }
        }
        if let Some(t) = self.tmpfs.iter().find(|t| !t.destination.starts_with('/')) {
            return Err(invalid(format!(
                "tmpfs destination {:?} must be absolute",
                t.destination
            )));
        }
        if self.cgroup_parent.split('/').any(|c| c == ".." || c == ".") {
            return Err(invalid(format!(
                "cgroup parent {:?} must not contain . or .. components",
                self.cgroup_parent
            )));
        }
        if let Some(reason) = limits_problem(&self.limits) {
            return Err(invalid(reason));
        }
        Ok(())
    }
}

/// What is wrong with a set of limits, if anything.
pub(crate) fn limits_problem(limits: &Limits) -> Option<String> {
    if limits.pids.is_some_and(|p| p < 1) {
        return Some("pids limit must be at least 1".to_string());
    }
    if limits.cpu_millis == Some(0) {
        return Some("cpu limit must be at least 1 millicore".to_string());
    }
    None
}

/// Checks a container id against the alphabet runc accepts (`[A-Za-z0-9_+.-]`, at most 1024
/// characters, not `.` or `..`).
pub fn validate_container_id(id: &str) -> Result<(), SandboxError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidSpec {
            id: id.to_string(),
            reason: "container ids use only letters, digits, '_', '+', '-' and '.'".to_string(),
        })
    }
}

fn is_capability_name(c: &str) -> bool {
    c.strip_prefix("CAP_").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_')
    })
}

/// Docker's default capability set, used for build steps and trusted runs: enough to install
/// packages (chown, setuid helpers, `mknod` of device nodes in a tree) but nothing that reaches
/// the host (no `SYS_ADMIN`, `NET_ADMIN`, `SYS_PTRACE`, `SYS_MODULE`).
pub fn build_capabilities() -> Vec<String> {
    [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SYS_CHROOT",
        "CAP_MKNOD",
        "CAP_AUDIT_WRITE",
        "CAP_SETFCAP",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Paths under `/proc` and `/sys` hidden from the container (runc's `runc spec` defaults).
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths under `/proc` made read-only in the container (runc's `runc spec` defaults).
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// CFS period used for CPU quotas, in microseconds.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// The OCI runtime-spec `config.json` for a plan. Pure; uses runtime-spec 1.0.2 fields only,
/// and `linux.resources` (not `unified`) so the runtime translates limits for cgroup v1 and v2.
pub fn oci_config(spec: &ContainerSpec) -> Value {
    let caps = &spec.capabilities;
    let process = json!({
        "terminal": false,
        "user": {
            "uid": spec.uid,
            "gid": spec.gid,
            "additionalGids": spec.additional_gids,
        },
        "args": spec.args,
        "env": spec.env,
        "cwd": spec.cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "inheritable": [],
            "ambient": [],
        },
        "rlimits": [
            { "type": "RLIMIT_NOFILE", "hard": spec.rlimit_nofile, "soft": spec.rlimit_nofile },
            { "type": "RLIMIT_CORE", "hard": 0, "soft": 0 },
        ],
        "noNewPrivileges": spec.no_new_privileges,
    });

    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
        json!({
            "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        }),
        json!({
            "destination": "/dev/pts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        }),
        json!({
            "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        }),
        json!({
            "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        }),
        json!({
            "destination": "/sys", "type": "sysfs", "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        }),
        json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        }),
    ];
    for t in &spec.tmpfs {
        mounts.push(json!({
            "destination": t.destination, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", format!("mode={:o}", t.mode), format!("size={}", t.size_bytes)],
        }));
    }
    for b in &spec.binds {
        mounts.push(bind_mount(b, &[]));
    }
    for b in &spec.slave_binds {
        // A slave of the host's shared mount: host → container mount events only.
        mounts.push(bind_mount(b, &["rslave"]));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &spec.network {
        Network::Host => {}
        Network::Isolated => namespaces.push(json!({"type": "network"})),
        Network::Join(path) => namespaces.push(json!({
            "type": "network", "path": path.to_string_lossy(),
        })),
    }

    let mut resources = serde_json::Map::new();
    resources.insert("devices".into(), device_rules());
    if let Some(bytes) = spec.limits.memory_bytes {
        // swap = limit: memory+swap may not exceed the memory limit, so nothing swaps.
        resources.insert("memory".into(), json!({ "limit": bytes, "swap": bytes }));
    }
    if let Some(millis) = spec.limits.cpu_millis {
        let quota = u64::from(millis) * CPU_PERIOD_US / 1000;
        resources.insert(
            "cpu".into(),
            json!({ "quota": quota, "period": CPU_PERIOD_US }),
        );
    }
    if let Some(pids) = spec.limits.pids {
        resources.insert("pids".into(), json!({ "limit": pids }));
    }

    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": { "path": spec.rootfs.to_string_lossy(), "readonly": spec.readonly_rootfs },
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": spec.cgroups_path(),
            "resources": Value::Object(resources),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    });
    if let Some(profile) = seccomp_section(spec.seccomp) {
        config["linux"]["seccomp"] = profile;
    }
    config
}

/// An OCI bind mount entry: `rbind`, then `propagation`, then `ro` if asked, `nosuid`, `nodev`.
fn bind_mount(b: &BindMount, propagation: &[&'static str]) -> Value {
    let mut options = vec!["rbind"];
    options.extend(propagation);
    if b.readonly {
        options.push("ro");
    }
    options.extend(["nosuid", "nodev"]);
    json!({
        "destination": b.destination, "type": "bind",
        "source": b.source.to_string_lossy(), "options": options,
    })
}

/// Deny every device, then allow the character devices every Linux userland expects.
fn device_rules() -> Value {
    let allow = |major: i64, minor: i64| json!({ "allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm" });
    json!([
        { "allow": false, "access": "rwm" },
        allow(1, 3), // /dev/null
        allow(1, 5), // /dev/zero
        allow(1, 7), // /dev/full
        allow(5, 0), // /dev/tty
        allow(1, 9), // /dev/urandom
        allow(1, 8), // /dev/random
        allow(5, 2), // /dev/ptmx
        // /dev/pts/*: no minor means every minor.
        { "allow": true, "type": "c", "major": 136, "access": "rwm" },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_path_joins_parent_and_id() {
        let mut s = ContainerSpec::new("c1", "/r", vec!["true".into()]);
        assert_eq!(s.cgroups_path(), "/strata/c1");
        s.cgroup_parent = "/strata/builds/".into();
        assert_eq!(s.cgroups_path(), "/strata/builds/c1");
        s.cgroup_parent = String::new();
        assert_eq!(s.cgroups_path(), "/c1");
    }

    #[test]
    fn validate_rejects_bad_plans() {
        let good = ContainerSpec::new("strata-b-1", "/r", vec!["true".into()]);
        assert!(good.validate().is_ok());
        let mut s = good.clone();
        s.id = "a/b".into();
        assert!(s.validate().is_err());
        let mut s = good.clone();
        s.rootfs = "rel".into();
        assert!(s.validate().is_err());
        let mut s = good.clone();
        s.args.clear();
        assert!(s.validate().is_err());
        let mut s = good.clone();
        s.env.push("NOEQUALS".into());
        assert!(s.validate().is_err());
        let mut s = good.clone();
        s.capabilities.push("chown".into());
        assert!(s.validate().is_err());
        let mut s = good.clone();
        s.cgroup_parent = "strata/../etc".into();
        assert!(s.validate().is_err());
        let mut s = good;
        s.limits.pids = Some(0);
        let err = s.validate().expect_err("pids 0 is invalid");
        assert_eq!(err.kind(), strata_types::ErrorKind::InvalidArgument);
    }

    #[test]
    fn cpu_quota_is_millis_times_100() {
        let mut s = ContainerSpec::new("c", "/r", vec!["true".into()]);
        s.limits.cpu_millis = Some(250);
        let v = oci_config(&s);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 25_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100_000);
    }

    #[test]
    fn network_namespace_only_when_isolated() {
        let mut s = ContainerSpec::new("c", "/r", vec!["true".into()]);
        let has_net = |v: &Value| {
            v["linux"]["namespaces"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n["type"] == "network"))
        };
        assert!(has_net(&oci_config(&s)));
        s.network = Network::Host;
        assert!(!has_net(&oci_config(&s)));
    }

    #[test]
    fn joined_network_namespace_has_a_path() {
        let mut s = ContainerSpec::new("c", "/r", vec!["true".into()]);
        s.network = Network::Join("/run/netns/strata-x-0123456789abcdef".into());
        assert!(s.validate().is_ok());
        let v = oci_config(&s);
        let nets: Vec<&Value> = v["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter(|n| n["type"] == "network")
            .collect();
        assert_eq!(
            nets,
            [&json!({"type": "network", "path": "/run/netns/strata-x-0123456789abcdef"})]
        );
        s.network = Network::Join("relative/netns".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn slave_binds_are_rslave_and_come_after_binds() {
        let mut s = ContainerSpec::new("c", "/r", vec!["true".into()]);
        s.binds.push(BindMount {
            source: "/run/x".into(),
            destination: "/run/x".into(),
            readonly: false,
        });
        s.slave_binds.push(BindMount {
            source: "/var/lib/strata/instances/c/task".into(),
            destination: "/var/task".into(),
            readonly: true,
        });
        let v = oci_config(&s);
        let mounts = v["mounts"].as_array().expect("mounts");
        let n = mounts.len();
        assert_eq!(mounts[n - 2]["destination"], "/run/x");
        assert_eq!(
            mounts[n - 2]["options"],
            json!(["rbind", "nosuid", "nodev"])
        );
        assert_eq!(mounts[n - 1]["destination"], "/var/task");
        assert_eq!(mounts[n - 1]["source"], "/var/lib/strata/instances/c/task");
        assert_eq!(
            mounts[n - 1]["options"],
            json!(["rbind", "rslave", "ro", "nosuid", "nodev"])
        );
        s.slave_binds[0].source = "relative".into();
        assert!(s.validate().is_err(), "slave binds need absolute paths");
    }

    #[test]
    fn slave_binds_default_to_empty_when_absent_from_json() {
        let s = ContainerSpec::new("c", "/r", vec!["true".into()]);
        let mut v = serde_json::to_value(&s).expect("serializes");
        v.as_object_mut().expect("object").remove("slave_binds");
        let back: ContainerSpec = serde_json::from_value(v).expect("older plans still parse");
        assert_eq!(back, s);
    }

    #[test]
    fn seccomp_is_the_default_profile_unless_unconfined() {
        let mut s = ContainerSpec::new("c", "/r", vec!["true".into()]);
        let v = oci_config(&s);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        s.seccomp = Seccomp::Unconfined;
        let v = oci_config(&s);
        assert!(v["linux"].get("seccomp").is_none(), "{}", v["linux"]);

        // Plans written before the field existed get the default profile.
        let mut old = serde_json::to_value(&s).expect("serializes");
        old.as_object_mut().expect("object").remove("seccomp");
        let back: ContainerSpec = serde_json::from_value(old).expect("parses");
        assert_eq!(back.seccomp, Seccomp::Default);
    }

    #[test]
    fn build_capabilities_are_docker_defaults() {
        let caps = build_capabilities();
        assert_eq!(caps.len(), 14);
        assert!(caps.iter().all(|c| is_capability_name(c)));
        assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
    }
}
