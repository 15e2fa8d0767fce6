//! One function instance: a runc container of a runtime version with strata-init as PID 1, and
//! the connection to it. An instance is started *generic* (belongs to no function yet, for a
//! pool) or *direct* (for one function revision), and a generic one is *specialized* later.
//!
//! The connection is demultiplexed by a reader task: frames for an invocation go to that
//! invocation's channel, log lines go to the log store, lifecycle frames update the agent state.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use strata_init::protocol::Header;
use strata_meta::{FunctionRecord, RuntimeRecord};
use strata_sandbox::{BindMount, ContainerSpec, Limits, Network, RunOutcome, TmpfsMount};
use strata_store::ScratchDir;
use strata_types::api::{LogEntry, Stream};
use strata_types::Resources;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::build::{MountGuard, StepDirs};
use crate::functions::function_env;
use crate::logs::now_ms;
use crate::{random_hex, ControlError, Platform, CONTAINER_PREFIX};

/// Where strata-init and its socket appear inside an instance.
const RUN_DIR: &str = "/run/strata";
/// Where the function's code appears inside an instance.
const TASK_DIR: &str = "/var/task";
/// Largest frame body the server accepts from an instance.
const MAX_BODY: usize = 16 << 20;
/// The runtime label saying its bootstrap can start before it knows the function.
pub const DEFERRED_LABEL: &str = "org.strata.bootstrap.deferred";
/// The runtime label granting its instances capabilities, comma-separated
/// (`CAP_NET_BIND_SERVICE,CAP_CHOWN`); instances get none otherwise.
pub const CAPABILITIES_LABEL: &str = "org.strata.capabilities";
/// The runtime label `readonly` makes its instances' root file system read-only.
pub const ROOTFS_LABEL: &str = "org.strata.rootfs";
/// The capabilities a runtime may ask for: Docker's default set without `MKNOD`. They act on
/// the container's own files, processes and network namespace — except `NET_RAW` for a
/// function with host networking, which can then see the host's traffic.
pub const GRANTABLE_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// The capabilities a runtime's labels grant its instances, normalized to `CAP_*` names
/// (`NET_BIND_SERVICE` and `cap_net_bind_service` are accepted too), sorted and without
/// duplicates. A capability outside [`GRANTABLE_CAPABILITIES`] is an error naming it.
pub fn runtime_capabilities(
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let Some(value) = labels.get(CAPABILITIES_LABEL) else {
        return Ok(Vec::new());
    };
    let mut caps = Vec::new();
    for item in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let upper = item.to_ascii_uppercase();
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if !GRANTABLE_CAPABILITIES.contains(&name.as_str()) {
            return Err(format!(
                "label {CAPABILITIES_LABEL} asks for {item:?}, which Strata does not grant to \
                 function instances (allowed: {})",
                GRANTABLE_CAPABILITIES.join(", ")
            ));
        }
        caps.push(name);
    }
    caps.sort();
    caps.dedup();
    Ok(caps)
}

/// Whether a runtime's labels make its instances' root read-only: `readonly` yes, absent or
/// `writable` no, anything else an error (a typo must not silently leave the root writable).
pub fn runtime_readonly_rootfs(
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<bool, String> {
    match labels.get(ROOTFS_LABEL).map(|v| v.trim()) {
        None | Some("writable") => Ok(false),
        Some("readonly") => Ok(true),
        Some(other) => Err(format!(
            "label {ROOTFS_LABEL}={other:?} is not understood (use \"readonly\" or \"writable\")"
        )),
    }
}

/// A runtime version.
pub type RuntimeKey = (String, u32);

/// What an instance is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Sandbox and agent coming up.
    Starting,
    /// Warm and unbound, in a runtime's pool.
    Generic,
    /// Bound to a function revision.
    Specialized {
        /// The function.
        function: String,
        /// Its revision.
        revision: u32,
    },
    /// Serving what it has, taking nothing new, then stopping.
    Draining,
}

/// What the agent has said so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentState {
    /// `hello` arrived.
    pub hello: bool,
    /// `waiting`: a generic instance is fully warm.
    pub waiting: bool,
    /// `specialized`.
    pub specialized: bool,
    /// `ready`: the bootstrap asked for its first invocation (handler loaded).
    pub ready: bool,
    /// The agent or its bootstrap is gone.
    pub dead: bool,
    /// An init error the runtime reported (error type, body).
    pub init_error: Option<(Option<String>, Vec<u8>)>,
}

/// A frame routed to one invocation.
pub type Frame = (Header, Vec<u8>);

/// One running instance.
pub struct Instance {
    /// Container id.
    pub id: String,
    /// A small number naming it in scaling plans.
    pub seq: u64,
    /// Runtime version it runs.
    pub runtime: RuntimeKey,
    /// Its cgroup path.
    pub cgroups_path: String,
    /// Memory limit now in force.
    pub memory_bytes: std::sync::atomic::AtomicU64,
    /// Invocations in flight.
    pub in_flight: AtomicU32,
    /// How the first invocation found it, taken by that invocation: (kind, seconds spent).
    pub fresh: Mutex<Option<(crate::metrics::Start, f64)>>,
    phase: Mutex<Phase>,
    last_used: Mutex<Instant>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Frame>>>>,
    state: watch::Receiver<AgentState>,
    container: Mutex<Option<JoinHandle<Result<RunOutcome, strata_sandbox::SandboxError>>>>,
    mounts: Mutex<Vec<MountGuard>>,
    task_dir: PathBuf,
    scratch: Mutex<Option<ScratchDir>>,
    /// Its namespace on the function network, when the function has network access.
    network: Mutex<Option<crate::network::Lease>>,
    agent_tail: Arc<Mutex<VecDeque<String>>>,
    /// Function name for log lines (set at specialization).
    log_function: Arc<Mutex<String>>,
}

/// How to start an instance.
pub enum Mode<'a> {
    /// Unbound, for a pool.
    Generic,
    /// For one function revision, with its effective resources.
    Direct(&'a FunctionRecord, &'a Resources),
}

impl Instance {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the phase.
    pub fn set_phase(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// Whether it serves `function` at `revision` on `runtime`.
    pub fn serves(&self, function: &str, revision: u32, runtime: &RuntimeKey) -> bool {
        &self.runtime == runtime
            && matches!(&*self.phase.lock().unwrap_or_else(|e| e.into_inner()),
                Phase::Specialized { function: f, revision: r } if f == function && *r == revision)
    }

    /// When it last finished an invocation (or started).
    pub fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks it used now.
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Whether the instance is gone.
    pub fn dead(&self) -> bool {
        self.state.borrow().dead
    }

    /// The last lines strata-init itself printed (for diagnosing a dead instance).
    pub fn agent_tail(&self) -> Vec<String> {
        self.agent_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Waits until `pred` holds for the agent state, it dies, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&AgentState) -> bool,
    ) -> Result<AgentState, String> {
        let mut rx = self.state.clone();
        let fut = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) || s.dead || s.init_error.is_some() {
                        return s.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    return rx.borrow().clone();
                }
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(s) if s.dead && !pred(&s) => Err("the instance exited".into()),
            Ok(s) => Ok(s),
            Err(_) => Err(format!(
                "no answer from the instance within {} s",
                timeout.as_secs()
            )),
        }
    }

    /// Sends a frame.
    pub async fn send(&self, header: &Header, body: &[u8]) -> std::io::Result<()> {
        let frame = strata_init::protocol::encode_frame(header, body)?;
        self.writer.lock().await.write_all(&frame).await
    }

    /// Registers an invocation id; its frames arrive on the returned channel.
    pub fn register(&self, id: &str) -> mpsc::UnboundedReceiver<Frame> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), tx);
        rx
    }

    /// Forgets an invocation id.
    pub fn unregister(&self, id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Binds the function's code over `/var/task` (the mount propagates into the container) and
    /// tells the agent to load the handler. Returns when the agent has applied it; an error
    /// loading the handler reaches the first invocation.
    pub async fn specialize(
        &self,
        platform: &Platform,
        f: &FunctionRecord,
        rt: &RuntimeRecord,
        resources: &Resources,
    ) -> Result<(), ControlError> {
        let t0 = Instant::now();
        let code = platform.store.code_path(&f.code.digest);
        let task = self.task_dir.clone();
        let guard = tokio::task::spawn_blocking(move || {
            strata_sandbox::mount::bind_into(&code, &task, true).map(|()| MountGuard::adopt(task))
        })
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))??;
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(guard);
        let mounted = t0.elapsed();
        let limits = limits_of(platform, resources);
        strata_sandbox::set_limits(&self.cgroups_path, &limits)?;
        self.memory_bytes
            .store(resources.memory_bytes.unwrap_or(0), Ordering::SeqCst);
        *self.log_function.lock().unwrap_or_else(|e| e.into_inner()) = f.name.clone();
        let mut env = function_env(&[], &f.config);
        for (k, v) in lambda_function_vars(f, resources, &self.id) {
            env.retain(|e| !e.starts_with(&format!("{k}=")));
            env.push(format!("{k}={v}"));
        }
        let header = Header::Specialize {
            function: f.name.clone(),
            handler: f.config.handler.clone(),
            env,
            workers: f.config.scaling.concurrency.max(1),
        };
        self.send(&header, &[])
            .await
            .map_err(|e| ControlError::Internal(format!("instance {} is gone: {e}", self.id)))?;
        self.set_phase(Phase::Specialized {
            function: f.name.clone(),
            revision: f.revision,
        });
        let sent = t0.elapsed();
        let _ = rt;
        // The agent has applied the specialization once it says so; the handler then loads while
        // the first invocation is already on its way (the agent holds it until the bootstrap asks).
        let waited = self
            .wait_for(Duration::from_secs(30), |s| s.specialized || s.ready)
            .await;
        tracing::debug!(
            instance = %self.id,
            function = %f.name,
            mount_ms = mounted.as_secs_f64() * 1000.0,
            sent_ms = sent.as_secs_f64() * 1000.0,
            specialized_ms = t0.elapsed().as_secs_f64() * 1000.0,
            "specialized"
        );
        match waited {
            Ok(s) => match s.init_error {
                Some((t, body)) => Err(ControlError::InitFailed {
                    error: init_error(t, &body),
                }),
                None => Ok(()),
            },
            Err(e) => Err(ControlError::Internal(format!(
                "{e}; agent output: {}",
                self.agent_tail().join(" | ")
            ))),
        }
    }

    /// Stops the instance: asks the agent to shut down, waits briefly, then kills; undoes its
    /// mounts and removes its directories. Returns the container's outcome when known.
    pub async fn destroy(&self) -> Option<RunOutcome> {
        let _ = self.send(&Header::Shutdown, &[]).await;
        let handle = self
            .container
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut outcome = None;
        if let Some(mut h) = handle {
            match tokio::time::timeout(Duration::from_secs(3), &mut h).await {
                Ok(Ok(Ok(o))) => outcome = Some(o),
                Ok(_) => {}
                Err(_) => {
                    // Dropping the run future deletes the container (runc delete --force).
                    h.abort();
                    let _ = h.await;
                }
            }
        }
        let mounts: Vec<MountGuard> =
            std::mem::take(&mut *self.mounts.lock().unwrap_or_else(|e| e.into_inner()));
        for m in mounts.into_iter().rev() {
            if let Err(e) = m.unmount().await {
                tracing::warn!(instance = %self.id, error = %e, "cannot unmount");
            }
        }
        let lease = self
            .network
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(l) = lease {
            l.release().await;
        }
        drop(
            self.scratch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        tracing::debug!(instance = %self.id, "instance stopped");
        outcome
    }
}

fn limits_of(platform: &Platform, r: &Resources) -> Limits {
    Limits {
        memory_bytes: r.memory_bytes,
        cpu_millis: r.cpu_millis,
        pids: Some(platform.settings.instance_pids),
    }
}

/// The Lambda variables that depend on the function.
fn lambda_function_vars(
    f: &FunctionRecord,
    r: &Resources,
    instance: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_LAMBDA_FUNCTION_NAME", f.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", f.revision.to_string()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            (r.memory_bytes.unwrap_or(256 << 20) >> 20).to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/strata/functions/{}", f.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", instance.to_string()),
        ("_HANDLER", f.config.handler.clone()),
    ]
}

impl Platform {
    /// Starts an instance of a runtime version, generic or for one function. Returns once the
    /// agent is connected (direct: once the handler is loaded; generic: once warm).
    pub(crate) async fn start_instance(
        self: &Arc<Self>,
        rt: &RuntimeRecord,
        mode: Mode<'_>,
    ) -> Result<Arc<Instance>, ControlError> {
        let _counted = StartCount::new(&self.starting);
        let began = Instant::now();
        let init = self.init_binary.as_ref().ok_or_else(|| {
            ControlError::Internal("strata-init is not installed (set STRATA_INIT)".into())
        })?;
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ControlError::Internal("the server is stopping".into()));
        }
        let entrypoint = rt.config.entrypoint.clone().unwrap_or_default();
        if entrypoint.is_empty() {
            return Err(ControlError::Invalid(format!(
                "runtime {} has no ENTRYPOINT",
                rt.reference()
            )));
        }
        let label_error =
            |e: String| ControlError::Invalid(format!("runtime {}: {e}", rt.reference()));
        let capabilities = runtime_capabilities(&rt.config.labels).map_err(label_error)?;
        let readonly_rootfs = runtime_readonly_rootfs(&rt.config.labels).map_err(label_error)?;
        let id = format!("{CONTAINER_PREFIX}i-{}", random_hex(8));
        let scratch = self.store.scratch_dir("inst")?;
        let dirs = StepDirs::create(&scratch)?;
        let io =
            |op: &str, e: std::io::Error| ControlError::io(format!("{op} for instance {id}"), e);
        let run_dir = scratch.path().join("run");
        let task_dir = scratch.path().join("task");
        std::fs::create_dir_all(&run_dir).map_err(|e| io("create run directory", e))?;
        std::fs::create_dir_all(&task_dir).map_err(|e| io("create task directory", e))?;
        let agent = run_dir.join("init");
        if std::fs::hard_link(init, &agent).is_err() {
            std::fs::copy(init, &agent).map_err(|e| io("copy strata-init", e))?;
        }
        let socket = run_dir.join("host.sock");
        let listener =
            UnixListener::bind(&socket).map_err(|e| io("listen on the agent socket", e))?;
        let mut mounts = Vec::new();
        // The instance's writable layer lives on a size-capped tmpfs: whatever a function writes
        // outside /tmp counts against its memory and this cap, never against the host's disk.
        let rw = scratch.path().join("rw");
        std::fs::create_dir_all(&rw).map_err(|e| io("create the writable layer", e))?;
        {
            let (target, size) = (rw.clone(), self.settings.tmp_bytes);
            crate::build::blocking(move || {
                strata_sandbox::mount::mount_tmpfs(&target, size, 0o700)
            })
            .await?;
            mounts.push(MountGuard::adopt(rw.clone()));
        }
        let (upper, work) = (rw.join("u"), rw.join("w"));
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(|e| io("create the writable layer", e))?;
        }
        let lowers = self.lowers(&rt.layers, &dirs)?;
        mounts.push(MountGuard::overlay(&lowers, Some((&upper, &work)), &dirs.merged).await?);
        // Generic: /var/task is a propagating mount point, and the code is bound on the host
        // side at specialization; the mount reaches the running container. Direct: runc binds
        // the code itself, inside the container's own mount namespace. Every container start
        // copies the host's whole mount table into its new namespace and detaches it again
        // (about 40 µs per mount here), so an instance that never changes code keeps its
        // host mounts to two (the writable layer and the overlay).
        if matches!(mode, Mode::Generic) {
            let t = task_dir.clone();
            crate::build::blocking(move || strata_sandbox::mount::make_shared_mountpoint(&t))
                .await?;
            mounts.push(MountGuard::adopt(task_dir.clone()));
        }
        let (uid, gid, groups) = strata_sandbox::host_user_lookup(&dirs.merged, &rt.config.user)
            .map_err(|e| ControlError::Invalid(format!("USER {}: {e}", rt.config.user)))?;
        if uid != 0 && !capabilities.is_empty() {
            // runc grants them in the bounding, effective and permitted sets, which a non-root
            // process loses at its first execve (no ambient capabilities): refuse rather than
            // start an instance without what the runtime asked for.
            return Err(label_error(format!(
                "label {CAPABILITIES_LABEL} needs the runtime's USER to be root (it is {:?})",
                rt.config.user
            )));
        }
        let deferred = rt
            .config
            .labels
            .get(DEFERRED_LABEL)
            .map(|v| v == "true")
            .unwrap_or(false);
        let platform_defaults = Resources::platform_default();
        let (resources, network, function_binds, log_function) = match &mode {
            Mode::Generic => (
                rt.resources.or(&platform_defaults),
                Network::Isolated,
                vec![],
                String::new(),
            ),
            Mode::Direct(f, r) => {
                // The code (read-only), then the function's volumes.
                let mut binds = vec![BindMount {
                    source: self.store.code_path(&f.code.digest),
                    destination: TASK_DIR.into(),
                    readonly: true,
                }];
                binds.extend(f.config.volumes.iter().map(|v| BindMount {
                    source: self.volume_path(&v.volume),
                    destination: v.path.clone(),
                    readonly: false,
                }));
                ((*r).clone(), Network::Isolated, binds, f.name.clone())
            }
        };
        // A function with network access joins a namespace of its own on the server's bridge:
        // egress through NAT, but not the host, its networks, link-local metadata addresses or
        // other instances (`network.rs`). Made just before the container starts, removed
        // after it is gone.
        let mut lease = match &mode {
            Mode::Direct(f, _) if f.config.network => {
                let key = id.rsplit('-').next().unwrap_or_default();
                Some(self.network_lease(key).await?)
            }
            _ => None,
        };
        let network = match &lease {
            Some(l) => Network::Join(l.attachment.netns_path()),
            None => network,
        };
        let mut args = vec![format!("{RUN_DIR}/init")];
        if matches!(mode, Mode::Generic) {
            args.push("--generic".into());
        }
        args.push("--".into());
        args.extend(entrypoint);
        let mut env = match &mode {
            Mode::Generic => rt.config.env_strings(),
            Mode::Direct(f, _) => function_env(&rt.config.env_strings(), &f.config),
        };
        let mut vars: Vec<(&str, String)> = vec![
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001".into()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_REGION", "local".into()),
            ("AWS_DEFAULT_REGION", "local".into()),
            ("LAMBDA_TASK_ROOT", TASK_DIR.into()),
            ("TZ", ":UTC".into()),
            ("STRATA_SOCKET", format!("{RUN_DIR}/host.sock")),
            ("STRATA_INSTANCE", id.clone()),
            (
                "STRATA_LOG_LIMIT",
                self.settings.invocation_log_bytes.to_string(),
            ),
        ];
        match &mode {
            Mode::Generic => {
                if deferred {
                    vars.push(("STRATA_DEFERRED", "1".into()));
                }
            }
            Mode::Direct(f, r) => {
                args.push(f.config.handler.clone());
                vars.extend(lambda_function_vars(f, r, &id));
                vars.push((
                    "STRATA_WORKERS",
                    f.config.scaling.concurrency.max(1).to_string(),
                ));
            }
        }
        for (k, v) in vars {
            env.retain(|e| !e.starts_with(&format!("{k}=")));
            env.push(format!("{k}={v}"));
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", if uid == 0 { "/root" } else { "/tmp" }));
        }
        let mut binds = vec![BindMount {
            source: run_dir.clone(),
            destination: RUN_DIR.into(),
            readonly: true,
        }];
        binds.extend(function_binds);
        if let Some(l) = &lease {
            // The host's name servers minus loopback stubs, unreachable from the namespace.
            let conf = scratch.path().join("resolv.conf");
            std::fs::write(&conf, &l.resolv_conf).map_err(|e| io("write resolv.conf", e))?;
            binds.push(BindMount {
                source: conf,
                destination: "/etc/resolv.conf".into(),
                readonly: true,
            });
        }
        let spec = ContainerSpec {
            id: id.clone(),
            rootfs: dirs.merged.clone(),
            readonly_rootfs,
            args,
            env,
            cwd: TASK_DIR.into(),
            uid,
            gid,
            additional_gids: groups,
            hostname: "strata".into(),
            network,
            capabilities,
            binds,
            tmpfs: vec![TmpfsMount {
                destination: "/tmp".into(),
                size_bytes: self.settings.tmp_bytes,
                mode: 0o1777,
            }],
            limits: limits_of(self, &resources),
            cgroup_parent: self.settings.cgroup_parent.clone(),
            no_new_privileges: true,
            rlimit_nofile: 65_536,
            slave_binds: match &mode {
                Mode::Generic => vec![BindMount {
                    source: task_dir.clone(),
                    destination: TASK_DIR.into(),
                    readonly: true,
                }],
                Mode::Direct(..) => vec![],
            },
            seccomp: strata_sandbox::Seccomp::Default,
        };
        let cgroups_path = spec.cgroups_path();
        let bundle = scratch.path().join("bundle");
        std::fs::create_dir_all(&bundle).map_err(|e| io("create bundle", e))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let runc = self.runc.clone();
        let (tail2, spec2, inst_id) = (Arc::clone(&tail), spec.clone(), id.clone());
        if let Some(l) = lease.as_mut() {
            l.attach().await?;
        }
        let prepared = began.elapsed();
        let mut container = tokio::spawn(async move {
            let mut on_output = move |stream: Stream, line: String| {
                let mut t = tail2.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == 20 {
                    t.pop_front();
                }
                tracing::debug!(instance = %inst_id, ?stream, %line, "agent output");
                t.push_back(line);
            };
            runc.run(&bundle, &spec2, None, &mut on_output).await
        });
        let accepted = tokio::select! {
            a = tokio::time::timeout(Duration::from_secs(15), listener.accept()) => Some(a),
            _ = &mut container => None,
        };
        let conn = match accepted {
            Some(Ok(Ok((conn, _)))) => conn,
            other => {
                let why = match other {
                    Some(Ok(Err(e))) => format!("accepting the agent's connection: {e}"),
                    Some(Err(_)) => "the agent did not connect within 15 s".into(),
                    _ => "the instance exited before its agent connected".into(),
                };
                container.abort();
                let _ = container.await;
                for m in mounts.into_iter().rev() {
                    let _ = m.unmount().await;
                }
                if let Some(l) = lease {
                    l.release().await;
                }
                let t: Vec<String> = tail
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                return Err(ControlError::Internal(format!(
                    "{why}; agent output: {}",
                    t.join(" | ")
                )));
            }
        };
        let connected = began.elapsed();
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        let (reader, writer) = conn.into_split();
        let (state_tx, state_rx) = watch::channel(AgentState::default());
        let pending: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Frame>>>> = Arc::default();
        let log_function = Arc::new(Mutex::new(log_function));
        spawn_reader(
            Arc::downgrade(self),
            id.clone(),
            reader,
            state_tx,
            Arc::clone(&pending),
            Arc::clone(&log_function),
            self.settings.invocation_log_bytes,
        );
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let inst = Arc::new(Instance {
            id: id.clone(),
            seq: SEQ.fetch_add(1, Ordering::SeqCst),
            runtime: (rt.name.clone(), rt.version),
            cgroups_path,
            memory_bytes: std::sync::atomic::AtomicU64::new(resources.memory_bytes.unwrap_or(0)),
            in_flight: AtomicU32::new(0),
            fresh: Mutex::new(None),
            phase: Mutex::new(match &mode {
                Mode::Generic => Phase::Starting,
                Mode::Direct(f, _) => Phase::Specialized {
                    function: f.name.clone(),
                    revision: f.revision,
                },
            }),
            last_used: Mutex::new(Instant::now()),
            writer: tokio::sync::Mutex::new(writer),
            pending,
            state: state_rx,
            container: Mutex::new(Some(container)),
            mounts: Mutex::new(mounts),
            task_dir,
            scratch: Mutex::new(Some(scratch)),
            network: Mutex::new(lease),
            agent_tail: tail,
            log_function,
        });
        let want = |s: &AgentState| match mode {
            Mode::Generic => s.waiting,
            Mode::Direct(..) => s.ready,
        };
        let outcome = inst.wait_for(Duration::from_secs(30), want).await;
        let failure = match outcome {
            Ok(s) if s.init_error.is_some() => {
                let (t, body) = s.init_error.unwrap_or_default();
                Some(ControlError::InitFailed {
                    error: init_error(t, &body),
                })
            }
            Ok(_) => None,
            Err(e) => Some(ControlError::Internal(format!(
                "{e}; agent output: {}",
                inst.agent_tail().join(" | ")
            ))),
        };
        if let Some(e) = failure {
            inst.destroy().await;
            return Err(e);
        }
        // A start that was under way when the server began stopping must not outlive it.
        if self.shutting_down.load(Ordering::SeqCst) {
            inst.destroy().await;
            return Err(ControlError::Internal("the server is stopping".into()));
        }
        if matches!(mode, Mode::Generic) {
            inst.set_phase(Phase::Generic);
        }
        // The phases of the start: mounts and bundle, then runc until strata-init connected,
        // then the runtime's own start until it asked for work (direct) or waits (generic).
        tracing::debug!(
            instance = %id,
            runtime = %rt.reference(),
            prepare_ms = prepared.as_secs_f64() * 1000.0,
            agent_ms = (connected - prepared).as_secs_f64() * 1000.0,
            runtime_ms = (began.elapsed() - connected).as_secs_f64() * 1000.0,
            "instance started"
        );
        Ok(inst)
    }
}

/// Counts a start under way for as long as it lives.
struct StartCount<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> StartCount<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicUsize) -> StartCount<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        StartCount(counter)
    }
}

impl Drop for StartCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads frames from the agent until it goes away: invocation frames to their channels, logs to
/// the log store (capped per invocation), lifecycle frames into the agent state.
fn spawn_reader(
    platform: Weak<Platform>,
    id: String,
    mut reader: tokio::net::unix::OwnedReadHalf,
    state: watch::Sender<AgentState>,
    pending: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Frame>>>>,
    function: Arc<Mutex<String>>,
    log_cap: usize,
) {
    tokio::spawn(async move {
        let mut logged: HashMap<String, usize> = HashMap::new();
        let mut order: VecDeque<String> = VecDeque::new();
        loop {
            let frame = match read_frame(&mut reader).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(instance = %id, error = %e, "agent connection failed");
                    break;
                }
            };
            match frame {
                (Header::Log { stream, id: inv }, body) => {
                    let Some(p) = platform.upgrade() else { break };
                    let key = inv.clone().unwrap_or_default();
                    if !logged.contains_key(&key) {
                        order.push_back(key.clone());
                        if order.len() > 256 {
                            if let Some(old) = order.pop_front() {
                                logged.remove(&old);
                            }
                        }
                    }
                    let n = logged.entry(key).or_default();
                    if *n > log_cap {
                        continue;
                    }
                    *n += body.len() + 1;
                    let (stream, line) = if *n > log_cap {
                        (
                            "platform".to_string(),
                            "[strata] log output truncated".to_string(),
                        )
                    } else {
                        (stream, String::from_utf8_lossy(&body).into_owned())
                    };
                    let function = function.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if !function.is_empty() {
                        p.logs.append(LogEntry {
                            ts_ms: now_ms(),
                            function,
                            invocation: inv,
                            stream,
                            line,
                        });
                    }
                }
                (Header::Hello { .. }, _) => state.send_modify(|s| s.hello = true),
                (Header::Waiting, _) => state.send_modify(|s| s.waiting = true),
                (Header::Specialized, _) => state.send_modify(|s| s.specialized = true),
                (Header::Ready, _) => state.send_modify(|s| s.ready = true),
                (Header::InitError { error_type }, body) => {
                    let frame = (
                        Header::InitError {
                            error_type: error_type.clone(),
                        },
                        body.clone(),
                    );
                    send_to_all(&pending, &frame);
                    state.send_modify(|s| s.init_error = Some((error_type, body)));
                }
                (
                    h @ (Header::Response { .. } | Header::Error { .. } | Header::Timeout { .. }),
                    body,
                ) => {
                    let inv = match &h {
                        Header::Response { id, .. }
                        | Header::Error { id, .. }
                        | Header::Timeout { id, .. } => id.clone(),
                        _ => String::new(),
                    };
                    let tx = pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&inv)
                        .cloned();
                    if let Some(tx) = tx {
                        let _ = tx.send((h, body));
                    }
                }
                (h @ Header::Exited { .. }, body) => send_to_all(&pending, &(h, body)),
                (other, _) => tracing::debug!(instance = %id, frame = ?other, "ignoring frame"),
            }
        }
        // Gone: every waiting invocation learns it through a closed channel.
        pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        state.send_modify(|s| s.dead = true);
    });
}

/// Hands a frame to every invocation waiting on the instance (the runtime failed for all).
fn send_to_all(pending: &Mutex<HashMap<String, mpsc::UnboundedSender<Frame>>>, frame: &Frame) {
    let all: Vec<_> = pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    for tx in all {
        let _ = tx.send(frame.clone());
    }
}

async fn read_frame(conn: &mut tokio::net::unix::OwnedReadHalf) -> std::io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match conn.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let hlen = u32::from_be_bytes(len) as usize;
    if hlen > 64 << 10 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame header too large",
        ));
    }
    let mut hbuf = vec![0u8; hlen];
    conn.read_exact(&mut hbuf).await?;
    conn.read_exact(&mut len).await?;
    let blen = u32::from_be_bytes(len) as usize;
    if blen > MAX_BODY {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame body too large",
        ));
    }
    let mut body = vec![0u8; blen];
    conn.read_exact(&mut body).await?;
    let header = strata_init::protocol::decode_header(&hbuf)?;
    Ok(Some((header, body)))
}

/// The runtime's init error report, in the Lambda error shape.
fn init_error(error_type: Option<String>, body: &[u8]) -> strata_types::api::InvokeError {
    let mut e: strata_types::api::InvokeError =
        serde_json::from_slice(body).unwrap_or_else(|_| strata_types::api::InvokeError {
            error_message: String::from_utf8_lossy(body).into_owned(),
            error_type: String::new(),
            stack_trace: vec![],
        });
    if e.error_type.is_empty() {
        e.error_type = error_type.unwrap_or_else(|| "Runtime.InitError".into());
    }
    e
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn capabilities_come_from_the_runtime_label() {
        assert_eq!(runtime_capabilities(&labels(&[])), Ok(vec![]));
        assert_eq!(
            runtime_capabilities(&labels(&[(
                CAPABILITIES_LABEL,
                "CAP_NET_BIND_SERVICE,CAP_CHOWN"
            )])),
            Ok(vec!["CAP_CHOWN".into(), "CAP_NET_BIND_SERVICE".into()])
        );
        assert_eq!(
            runtime_capabilities(&labels(&[(
                CAPABILITIES_LABEL,
                " net_bind_service , CAP_NET_BIND_SERVICE,,kill "
            )])),
            Ok(vec!["CAP_KILL".into(), "CAP_NET_BIND_SERVICE".into()])
        );
        for bad in [
            "CAP_SYS_ADMIN",
            "CAP_CHOWN,SYS_PTRACE",
            "CAP_MKNOD",
            "ALL",
            "CAP_",
        ] {
            let e = runtime_capabilities(&labels(&[(CAPABILITIES_LABEL, bad)])).expect_err(bad);
            assert!(
                e.contains("does not grant") && e.contains(CAPABILITIES_LABEL),
                "{e}"
            );
        }
        for cap in GRANTABLE_CAPABILITIES {
            assert!(strata_sandbox::build_capabilities()
                .iter()
                .any(|c| c == cap));
        }
    }

    #[test]
    fn rootfs_label_is_readonly_writable_or_an_error() {
        assert_eq!(runtime_readonly_rootfs(&labels(&[])), Ok(false));
        assert_eq!(
            runtime_readonly_rootfs(&labels(&[(ROOTFS_LABEL, "readonly")])),
            Ok(true)
        );
        assert_eq!(
            runtime_readonly_rootfs(&labels(&[(ROOTFS_LABEL, "writable")])),
            Ok(false)
        );
        assert!(runtime_readonly_rootfs(&labels(&[(ROOTFS_LABEL, "read-only")])).is_err());
    }
}
