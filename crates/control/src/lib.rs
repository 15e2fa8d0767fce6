//! Strata's use cases: what the API can ask the platform to do.
//!
//! This crate owns the orchestration of images (bootstrap, import, removal), runtime builds from
//! Dockerfiles (plan → steps in containers → layers), one-off runs, the built-in bootstrap, and
//! recovery at start-up. It drives the mechanisms — `strata-meta`, `strata-store`,
//! `strata-dockerfile`, `strata-sandbox` — and never sees HTTP: callers pass typed requests and an
//! [`Emitter`] for progress, and get typed results or a [`ControlError`] with a kind.

mod build;
mod builtin;
mod compose;
mod copy;
mod deploy;
mod error;
mod events;
mod functions;
mod images;
mod instance;
mod instances;
mod logs;
mod metrics;
mod network;
mod packages;
pub mod policy;
mod recover;
mod run;
mod runtimes;
mod series;
mod source;
mod storage;

use std::path::PathBuf;
use std::sync::Arc;

use strata_meta::Meta;
use strata_sandbox::Runc;
use strata_store::Store;

pub use builtin::{BASE_IMAGE, BUILTIN_RUNTIMES};
pub use deploy::{config_changes, CodeInput};
pub use error::ControlError;
pub use events::Emitter;
pub use functions::apply_update;
pub use instances::{FailureKind, InvokeFailure, InvokeResult};
pub use logs::now_ms;
pub use policy::PoolConfig;
pub use recover::Recovery;
pub use series::{MinuteBucket, MINUTES as SERIES_MINUTES};
pub use source::{SourceFile, SIMPLE_MAX_BYTES, SIMPLE_MAX_FILES};
pub use strata_store::ScratchDir;

/// Prefix of every container id and cgroup Strata creates, so recovery can find its own.
pub const CONTAINER_PREFIX: &str = "strata-";

/// Platform settings, read once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory: `meta.db`, `blobs/`, `layers/`, `tmp/`, the admin token.
    pub data_dir: PathBuf,
    /// The OCI runtime binary (runc, or a runc-compatible one).
    pub runc: PathBuf,
    /// runc's state directory (a tmpfs such as `/run/strata/runc`).
    pub runc_state: PathBuf,
    /// Debian mirror for image bootstraps.
    pub mirror: String,
    /// A CA bundle made visible to build steps (read-only, never written into a layer), so
    /// package managers trust the same TLS roots as the host. `None` disables it.
    pub build_ca_bundle: Option<PathBuf>,
    /// Environment passed to every build step (proxy settings), `KEY=VALUE`.
    pub build_env: Vec<String>,
    /// Memory limit of a build step.
    pub build_memory_bytes: u64,
    /// Process limit of a build step.
    pub build_pids: i64,
    /// Time limit of one build step.
    pub build_step_timeout: std::time::Duration,
    /// Largest accepted build context (bytes, unpacked).
    pub max_context_bytes: u64,
    /// cgroup parent of every Strata container.
    pub cgroup_parent: String,
    /// The strata-init agent binary given to instances (copied into the data directory).
    pub init_binary: Option<PathBuf>,
    /// Limits on uploaded function code.
    pub code_limits: strata_store::code::CodeLimits,
    /// What fetching function code from git may do: allowed schemes, time and size limits.
    pub git: strata_sandbox::git::GitPolicy,
    /// Idle time after which an instance stops.
    pub idle_timeout: std::time::Duration,
    /// Most instances running at once.
    pub max_instances: usize,
    /// Log bytes kept per invocation; the rest is replaced by a truncation marker.
    pub invocation_log_bytes: usize,
    /// Size of an instance's `/tmp`.
    pub tmp_bytes: u64,
    /// Process limit of an instance.
    pub instance_pids: i64,
    /// Default generic pool policy per runtime version.
    pub pool: policy::PoolConfig,
    /// Most memory all instances together may be limited to (the node memory budget).
    pub memory_budget: u64,
    /// The network of functions with network access: bridge, subnet, deny list, and this
    /// server's names for namespaces, veth links and its ownership record.
    pub network: strata_sandbox::net::NetConfig,
}

impl Settings {
    /// Defaults for a data directory: runc from `PATH`, Debian's main mirror, the host's CA
    /// bundle when present, proxy variables from the environment. runc's state and the cgroups
    /// live under a tag derived from the data directory, so two servers on one host (with
    /// different data directories) never see, or clean up, each other's containers.
    pub fn new(data_dir: PathBuf) -> Settings {
        let absolute = std::path::absolute(&data_dir).unwrap_or_else(|_| data_dir.clone());
        let tag = {
            use sha2::Digest as _;
            hex::encode(&sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes())[..6])
        };
        let ca = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
        let build_env = [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect();
        Settings {
            data_dir,
            runc: PathBuf::from("runc"),
            runc_state: PathBuf::from(format!("/run/strata/{tag}/runc")),
            mirror: "http://deb.debian.org/debian".into(),
            build_ca_bundle: ca.exists().then_some(ca),
            build_env,
            build_memory_bytes: 4 << 30,
            build_pids: 4096,
            build_step_timeout: std::time::Duration::from_secs(30 * 60),
            max_context_bytes: 1 << 30,
            cgroup_parent: format!("strata/{tag}"),
            init_binary: default_init_binary(),
            code_limits: strata_store::code::CodeLimits::default(),
            git: strata_sandbox::git::GitPolicy::default(),
            idle_timeout: std::time::Duration::from_secs(300),
            max_instances: 64,
            invocation_log_bytes: 256 << 10,
            tmp_bytes: 512 << 20,
            instance_pids: 256,
            pool: policy::PoolConfig::default(),
            memory_budget: default_memory_budget(),
            network: strata_sandbox::net::NetConfig {
                bridge: "strata0".into(),
                subnet: strata_sandbox::net::DEFAULT_SUBNET,
                block_private: true,
                netns_prefix: format!("strata-{tag}-"),
                veth_prefix: format!("st{}", &tag[..5]),
                state_file: PathBuf::from(format!("/run/strata/{tag}/network")),
            },
        }
    }
}

/// 80% of the host's memory.
fn default_memory_budget() -> u64 {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(4 << 20);
    kib * 1024 / 10 * 8
}

/// The agent binary: `STRATA_INIT`, else `strata-init` next to the running executable.
fn default_init_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_INIT") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("strata-init");
    candidate.is_file().then_some(candidate)
}

/// A function as an invocation needs it: its record, its runtime version, its resources.
type ResolvedFunction = (
    strata_meta::FunctionRecord,
    strata_meta::RuntimeRecord,
    strata_types::Resources,
);

/// The platform: one per server process.
pub struct Platform {
    settings: Settings,
    meta: Meta,
    store: Store,
    runc: Runc,
    /// Builds, imports and runs hold this shared; layer collection holds it exclusively, so a
    /// layer found in the cache is never collected under a build that is about to use it.
    gc_lock: tokio::sync::RwLock<()>,
    /// One `strata bootstrap` at a time.
    bootstrap_lock: tokio::sync::Mutex<()>,
    /// Running function instances.
    instances: instances::Instances,
    /// Function logs.
    logs: logs::Logs,
    /// The agent binary inside the data directory (hard-linked into instances).
    init_binary: Option<PathBuf>,
    /// What each function resolves to (record, runtime version, resources), so the invocation
    /// path reads no database; cleared whenever a function or runtime changes.
    resolved: std::sync::Mutex<std::collections::HashMap<String, ResolvedFunction>>,
    /// Instance starts under way.
    starting: std::sync::atomic::AtomicUsize,
    /// Set once the server is stopping: no instance starts any more.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Wakes the pool loop when a pool instance was taken.
    pool_changed: Arc<tokio::sync::Notify>,
    /// The last provisioning failure per function, for the invocations waiting on it.
    provision_errors:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, InvokeFailure)>>,
    /// The function network (set up on first use).
    network: network::Networking,
}

impl Platform {
    /// Opens the data directory (creating it), the metadata database and the store.
    pub fn open(settings: Settings) -> Result<Arc<Platform>, ControlError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
            ControlError::io(
                format!("create data directory {}", settings.data_dir.display()),
                e,
            )
        })?;
        let meta = Meta::open(&settings.data_dir.join("meta.db"))?;
        let store = Store::open(&settings.data_dir)?;
        let runc = Runc::new(settings.runc.clone(), settings.runc_state.clone());
        let init_binary = match &settings.init_binary {
            Some(src) => Some(install_agent(src, &settings.data_dir)?),
            None => {
                tracing::warn!("strata-init not found: functions cannot run (set STRATA_INIT)");
                None
            }
        };
        let logs = logs::Logs::new(settings.data_dir.join("logs"));
        Ok(Arc::new(Platform {
            settings,
            meta,
            store,
            runc,
            gc_lock: tokio::sync::RwLock::new(()),
            bootstrap_lock: tokio::sync::Mutex::new(()),
            instances: instances::Instances::new(),
            logs,
            init_binary,
            resolved: Default::default(),
            starting: std::sync::atomic::AtomicUsize::new(0),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            pool_changed: Arc::new(tokio::sync::Notify::new()),
            provision_errors: Default::default(),
            network: Default::default(),
        }))
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The metadata store (for diagnostics and tests).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The content store (for diagnostics and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Copies the agent into `<data>/bin/strata-init` (atomically), on the same file system as the
/// scratch area so instances can hard-link it.
fn install_agent(
    src: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<PathBuf, ControlError> {
    let bin = data_dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| ControlError::io("create bin directory", e))?;
    let dest = bin.join("strata-init");
    let tmp = bin.join(format!(".strata-init.{}", random_hex(4)));
    std::fs::copy(src, &tmp)
        .map_err(|e| ControlError::io(format!("copy strata-init from {}", src.display()), e))?;
    std::fs::rename(&tmp, &dest).map_err(|e| ControlError::io("install strata-init", e))?;
    Ok(dest)
}

/// A fresh random id of `n` bytes, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // getrandom only fails when the kernel has no entropy source at all; fall back to the clock
    // and pid, which still gives unique (not secret) ids.
    if getrandom::fill(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = t ^ ((std::process::id() as u128) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    hex::encode(buf)
}
