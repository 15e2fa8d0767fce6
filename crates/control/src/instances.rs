//! Function instances: sandboxes of a runtime bound to one function revision, each running
//! strata-init as PID 1, reused for later invocations of the same revision and stopped after an
//! idle timeout.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_init::protocol::Header;
use strata_meta::{FunctionRecord, RuntimeRecord};
use strata_sandbox::{BindMount, ContainerSpec, Limits, Network, RunOutcome, TmpfsMount};
use strata_store::ScratchDir;
use strata_types::api::{FunctionStats, InvokeError, LogEntry, Stream};
use strata_types::{Resources, RuntimeRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::build::{MountGuard, StepDirs};
use crate::functions::function_env;
use crate::logs::now_ms;
use crate::{random_hex, ControlError, Platform, CONTAINER_PREFIX};

/// Where strata-init and its socket appear inside an instance.
const RUN_DIR: &str = "/run/strata";
/// Largest frame body the server accepts from an instance.
const MAX_BODY: usize = 16 << 20;

/// How an invocation failed, which decides its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The handler raised, or the runtime could not load it.
    Function,
    /// The invocation ran past the function's timeout.
    Timeout,
    /// The instance ran out of memory.
    OutOfMemory,
    /// Too many instances: try again later.
    Overloaded,
    /// Strata itself failed.
    Platform,
}

/// A failed invocation, in the Lambda error shape.
#[derive(Debug, Clone)]
pub struct InvokeFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The error body.
    pub error: InvokeError,
}

impl InvokeFailure {
    fn new(kind: FailureKind, error_type: &str, message: impl Into<String>) -> InvokeFailure {
        InvokeFailure {
            kind,
            error: InvokeError {
                error_message: message.into(),
                error_type: error_type.into(),
                stack_trace: vec![],
            },
        }
    }

    fn platform(e: impl std::fmt::Display) -> InvokeFailure {
        tracing::error!(error = %e, "invocation failed inside the platform");
        InvokeFailure::new(
            FailureKind::Platform,
            "Strata.PlatformError",
            format!("platform failure: {e}"),
        )
    }
}

impl From<ControlError> for InvokeFailure {
    fn from(e: ControlError) -> InvokeFailure {
        match e.kind() {
            strata_types::ErrorKind::NotFound => {
                InvokeFailure::new(FailureKind::Platform, "Strata.NotFound", e.to_string())
            }
            _ => InvokeFailure::platform(e),
        }
    }
}

/// A successful invocation.
#[derive(Debug, Clone)]
pub struct InvokeResult {
    /// The handler's result bytes.
    pub body: Vec<u8>,
    /// Their content type, when the runtime gave one.
    pub content_type: Option<String>,
    /// The invocation id.
    pub id: String,
    /// Whether an instance was started for it.
    pub cold: bool,
    /// Wall time, milliseconds.
    pub duration_ms: f64,
}

/// One running instance.
pub struct Instance {
    id: String,
    function: String,
    revision: u32,
    conn: tokio::sync::Mutex<UnixStream>,
    last_used: Mutex<Instant>,
    container: Mutex<Option<JoinHandle<Result<RunOutcome, strata_sandbox::SandboxError>>>>,
    /// Kept for the instance's life: its overlay and its scratch directory.
    mount: Mutex<Option<MountGuard>>,
    scratch: Mutex<Option<ScratchDir>>,
    /// The tail of strata-init's own output, for error messages.
    agent_tail: Arc<Mutex<VecDeque<String>>>,
}

#[derive(Default)]
struct FnStats {
    invocations: u64,
    errors: u64,
    cold: u64,
    recent: VecDeque<f64>,
}

/// The instance manager.
pub struct Instances {
    idle: Mutex<HashMap<String, Vec<Arc<Instance>>>>,
    count: Mutex<HashMap<String, usize>>,
    total: std::sync::atomic::AtomicUsize,
    stats: Mutex<HashMap<String, FnStats>>,
}

impl Instances {
    pub(crate) fn new() -> Instances {
        Instances {
            idle: Mutex::new(HashMap::new()),
            count: Mutex::new(HashMap::new()),
            total: std::sync::atomic::AtomicUsize::new(0),
            stats: Mutex::new(HashMap::new()),
        }
    }

    fn take_idle(&self, function: &str, revision: u32) -> Option<Arc<Instance>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(function)?;
        let pos = list.iter().rposition(|i| i.revision == revision)?;
        Some(list.remove(pos))
    }

    fn put_idle(&self, inst: Arc<Instance>) {
        *inst.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(inst.function.clone())
            .or_default()
            .push(inst);
    }

    fn started(&self, function: &str) {
        *self
            .count
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(function.to_string())
            .or_default() += 1;
        self.total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn stopped(&self, function: &str) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = count.get_mut(function) {
            *n = n.saturating_sub(1);
        }
        self.total.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Instances running now, all functions.
    pub fn running(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn record(&self, function: &str, ok: bool, cold: bool, ms: f64) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let s = stats.entry(function.to_string()).or_default();
        s.invocations += 1;
        if !ok {
            s.errors += 1;
        }
        if cold {
            s.cold += 1;
        }
        if s.recent.len() == 1000 {
            s.recent.pop_front();
        }
        s.recent.push_back(ms);
    }

    /// Statistics of a function since the server started.
    pub fn stats(&self, function: &str) -> FunctionStats {
        let instances = self
            .count
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
            .copied()
            .unwrap_or(0) as u64;
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = stats.get(function) else {
            return FunctionStats {
                instances,
                ..Default::default()
            };
        };
        let mut v: Vec<f64> = s.recent.iter().copied().collect();
        v.sort_by(|a, b| a.total_cmp(b));
        FunctionStats {
            invocations: s.invocations,
            errors: s.errors,
            cold_starts: s.cold,
            instances,
            p50_ms: percentile(&v, 0.50),
            p99_ms: percentile(&v, 0.99),
        }
    }

    /// Stops idle instances of a function (all, or those not at `keep_revision`).
    pub(crate) async fn retire_function(&self, function: &str, keep_revision: Option<u32>) {
        let retired: Vec<Arc<Instance>> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let Some(list) = idle.get_mut(function) else {
                return;
            };
            let (keep, go): (Vec<_>, Vec<_>) = list
                .drain(..)
                .partition(|i| Some(i.revision) == keep_revision);
            *list = keep;
            go
        };
        for inst in retired {
            self.destroy(inst).await;
        }
    }

    /// Stops instances idle for longer than `idle_timeout`.
    pub(crate) async fn reap(&self, idle_timeout: Duration) -> usize {
        let expired: Vec<Arc<Instance>> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            for list in idle.values_mut() {
                let (keep, go): (Vec<_>, Vec<_>) = list.drain(..).partition(|i| {
                    i.last_used
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .elapsed()
                        < idle_timeout
                });
                *list = keep;
                out.extend(go);
            }
            out
        };
        let n = expired.len();
        for inst in expired {
            self.destroy(inst).await;
        }
        n
    }

    /// Stops every instance (server shutdown).
    pub(crate) async fn stop_all(&self) {
        let all: Vec<Arc<Instance>> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain().flat_map(|(_, v)| v).collect()
        };
        for inst in all {
            self.destroy(inst).await;
        }
    }

    /// Stops an instance: asks strata-init to shut down, waits briefly, then kills; unmounts
    /// and removes its directories. Returns the container's outcome when known.
    async fn destroy(&self, inst: Arc<Instance>) -> Option<RunOutcome> {
        {
            let mut conn = inst.conn.lock().await;
            let _ = write_frame(&mut conn, &Header::Shutdown, &[]).await;
        }
        let handle = inst
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
        let mount = inst.mount.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(m) = mount {
            if let Err(e) = m.unmount().await {
                tracing::warn!(instance = %inst.id, error = %e, "cannot unmount instance root");
            }
        }
        drop(
            inst.scratch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        self.stopped(&inst.function);
        tracing::debug!(instance = %inst.id, function = %inst.function, "instance stopped");
        outcome
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    (sorted[i.min(sorted.len() - 1)] * 1000.0).round() / 1000.0
}

impl Platform {
    /// Invokes a function with an event and waits for its result.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        event: Vec<u8>,
    ) -> Result<InvokeResult, InvokeFailure> {
        let started = Instant::now();
        let f = self.function_record(name)?;
        let rt_ref: RuntimeRef = f.config.runtime.parse().map_err(InvokeFailure::platform)?;
        let rt = self.runtime_record(&rt_ref)?;
        let resources = f
            .config
            .resources
            .or(&rt.resources)
            .or(&Resources::platform_default());
        let timeout_ms = resources.timeout_ms.unwrap_or(30_000);
        let (inst, cold) = match self.instances.take_idle(name, f.revision) {
            Some(i) => (i, false),
            None => {
                if self.instances.running() >= self.settings.max_instances {
                    let _ = self.instances.reap(Duration::ZERO).await;
                    if self.instances.running() >= self.settings.max_instances {
                        return Err(InvokeFailure::new(
                            FailureKind::Overloaded,
                            "Strata.TooManyInstances",
                            format!(
                                "all {} instances are busy; retry later",
                                self.settings.max_instances
                            ),
                        ));
                    }
                }
                (self.start_instance(&f, &rt, &resources).await?, true)
            }
        };
        let id = format!(
            "{}-{}-{}-{}-{}",
            random_hex(4),
            random_hex(2),
            random_hex(2),
            random_hex(2),
            random_hex(6)
        );
        let outcome = self.run_on(&inst, &f, &id, timeout_ms, event).await;
        let result = match outcome {
            Ok((body, content_type)) => {
                self.instances.put_idle(inst);
                Ok(InvokeResult {
                    body,
                    content_type,
                    id: id.clone(),
                    cold,
                    duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                })
            }
            Err(Attempt::Handled(e)) => {
                self.instances.put_idle(inst);
                Err(e)
            }
            Err(Attempt::Lost(e)) => {
                self.instances.destroy(inst).await;
                Err(e)
            }
            Err(Attempt::Died(e)) => {
                let outcome = self.instances.destroy(inst).await;
                if outcome.is_some_and(|o| o.oom_killed) {
                    let mb = resources.memory_bytes.unwrap_or(0) >> 20;
                    Err(InvokeFailure::new(
                        FailureKind::OutOfMemory,
                        "Runtime.OutOfMemory",
                        format!("the function ran out of memory (limit {mb} MiB) and was stopped"),
                    ))
                } else {
                    Err(e)
                }
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.instances.record(name, result.is_ok(), cold, ms);
        match &result {
            Ok(_) => tracing::info!(function = name, invocation = %id, cold, ms, "invoked"),
            Err(e) => {
                tracing::info!(function = name, invocation = %id, cold, ms, error = %e.error.error_type, "invocation failed")
            }
        }
        result
    }

    /// Sends one invocation to an instance and follows its frames to the outcome.
    async fn run_on(
        &self,
        inst: &Instance,
        f: &FunctionRecord,
        id: &str,
        timeout_ms: u64,
        event: Vec<u8>,
    ) -> Result<(Vec<u8>, Option<String>), Attempt> {
        let mut conn = inst.conn.lock().await;
        let header = Header::Invoke {
            id: id.to_string(),
            deadline_ms: now_ms() + timeout_ms,
            timeout_ms,
            function_arn: format!("arn:aws:lambda:local:000000000000:function:{}", f.name),
            trace_id: format!("Root=1-{:08x}-{}", now_ms() / 1000, random_hex(12)),
            client_context: None,
            cognito_identity: None,
        };
        write_frame(&mut conn, &header, &event).await.map_err(|e| {
            Attempt::Died(InvokeFailure::platform(format!(
                "instance {} is gone: {e}",
                inst.id
            )))
        })?;
        let cap = self.settings.invocation_log_bytes;
        let mut logged = 0usize;
        let mut truncated = false;
        // The agent enforces the timeout; this is the backstop if the agent itself hangs.
        let backstop = Duration::from_millis(timeout_ms) + Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + backstop;
        loop {
            let frame = match tokio::time::timeout_at(deadline, read_frame(&mut conn)).await {
                Err(_) => {
                    return Err(Attempt::Lost(InvokeFailure::new(
                        FailureKind::Timeout,
                        "Strata.Timeout",
                        format!(
                            "Task timed out after {:.2} seconds",
                            timeout_ms as f64 / 1000.0
                        ),
                    )))
                }
                Ok(Err(e)) => {
                    return Err(Attempt::Died(
                        self.died(inst, format!("lost contact with the instance: {e}")),
                    ))
                }
                Ok(Ok(None)) => {
                    return Err(Attempt::Died(self.died(inst, "the instance exited".into())))
                }
                Ok(Ok(Some(frame))) => frame,
            };
            match frame {
                (Header::Log { stream, id: inv }, body) => {
                    if truncated {
                        continue;
                    }
                    logged += body.len() + 1;
                    let line = if logged > cap {
                        truncated = true;
                        "[strata] log output truncated".to_string()
                    } else {
                        String::from_utf8_lossy(&body).into_owned()
                    };
                    self.logs.append(LogEntry {
                        ts_ms: now_ms(),
                        function: f.name.clone(),
                        invocation: inv,
                        stream: if truncated { "platform".into() } else { stream },
                        line,
                    });
                }
                (Header::Ready, _) | (Header::Hello { .. }, _) => {}
                (
                    Header::Response {
                        id: rid,
                        content_type,
                    },
                    body,
                ) if rid == id => return Ok((body, content_type)),
                (
                    Header::Error {
                        id: rid,
                        error_type,
                    },
                    body,
                ) if rid == id => {
                    return Err(Attempt::Handled(function_error(&body, error_type)));
                }
                (Header::InitError { error_type }, body) => {
                    let mut e = function_error(&body, error_type);
                    e.error.error_type = if e.error.error_type.starts_with("Runtime.") {
                        e.error.error_type
                    } else {
                        format!("Runtime.InitError.{}", e.error.error_type)
                    };
                    return Err(Attempt::Lost(e));
                }
                (Header::Timeout { timeout_ms, .. }, _) => {
                    return Err(Attempt::Lost(InvokeFailure::new(
                        FailureKind::Timeout,
                        "Strata.Timeout",
                        format!(
                            "Task timed out after {:.2} seconds",
                            timeout_ms as f64 / 1000.0
                        ),
                    )));
                }
                (Header::Exited { code, signal, .. }, _) => {
                    let how = match (code, signal) {
                        (_, Some(s)) => format!("signal {s}"),
                        (Some(c), None) => format!("exit status {c}"),
                        _ => "unknown status".into(),
                    };
                    return Err(Attempt::Died(InvokeFailure::new(
                        FailureKind::Function,
                        "Runtime.ExitError",
                        format!("the runtime exited with {how} during the invocation"),
                    )));
                }
                (other, _) => {
                    tracing::debug!(instance = %inst.id, frame = ?other, "ignoring frame")
                }
            }
        }
    }

    fn died(&self, inst: &Instance, why: String) -> InvokeFailure {
        let tail: Vec<String> = inst
            .agent_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut f = InvokeFailure::new(FailureKind::Function, "Runtime.ExitError", why);
        f.error.stack_trace = tail;
        f
    }

    /// Starts an instance of a function's revision: overlay root, code at /var/task, strata-init
    /// as PID 1 connected back over a unix socket.
    async fn start_instance(
        self: &Arc<Self>,
        f: &FunctionRecord,
        rt: &RuntimeRecord,
        resources: &Resources,
    ) -> Result<Arc<Instance>, InvokeFailure> {
        let init = self.init_binary.as_ref().ok_or_else(|| {
            InvokeFailure::platform(
                "strata-init is not installed next to the strata binary (set STRATA_INIT)",
            )
        })?;
        let id = format!("{CONTAINER_PREFIX}i-{}", random_hex(8));
        let scratch = self
            .store
            .scratch_dir("inst")
            .map_err(InvokeFailure::platform)?;
        let dirs = StepDirs::create(&scratch)?;
        let run_dir = scratch.path().join("run");
        std::fs::create_dir_all(&run_dir).map_err(InvokeFailure::platform)?;
        // A hard link (same file system) gives every instance the agent without copying it.
        let agent = run_dir.join("init");
        if std::fs::hard_link(init, &agent).is_err() {
            std::fs::copy(init, &agent).map_err(InvokeFailure::platform)?;
        }
        let socket = run_dir.join("host.sock");
        let listener = UnixListener::bind(&socket).map_err(InvokeFailure::platform)?;
        let lowers = self.lowers(&rt.layers, &dirs)?;
        let mount =
            MountGuard::overlay(&lowers, Some((&dirs.upper, &dirs.work)), &dirs.merged).await?;
        let (uid, gid, groups) = strata_sandbox::host_user_lookup(&dirs.merged, &rt.config.user)
            .map_err(|e| InvokeFailure::platform(format!("USER {}: {e}", rt.config.user)))?;

        let mut args = vec![format!("{RUN_DIR}/init"), "--".to_string()];
        args.extend(rt.config.entrypoint.clone().unwrap_or_default());
        args.push(f.config.handler.clone());
        let memory_mb = resources.memory_bytes.unwrap_or(256 << 20) >> 20;
        let mut env = function_env(&rt.config.env_strings(), &f.config);
        let lambda = [
            ("AWS_LAMBDA_FUNCTION_NAME", f.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", f.revision.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/strata/functions/{}", f.name),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", id.clone()),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001".into()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_REGION", "local".into()),
            ("AWS_DEFAULT_REGION", "local".into()),
            ("LAMBDA_TASK_ROOT", "/var/task".into()),
            ("_HANDLER", f.config.handler.clone()),
            ("TZ", ":UTC".into()),
            ("STRATA_SOCKET", format!("{RUN_DIR}/host.sock")),
            ("STRATA_INSTANCE", id.clone()),
            (
                "STRATA_LOG_LIMIT",
                self.settings.invocation_log_bytes.to_string(),
            ),
        ];
        for (k, v) in lambda {
            env.retain(|e| !e.starts_with(&format!("{k}=")));
            env.push(format!("{k}={v}"));
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", if uid == 0 { "/root" } else { "/tmp" }));
        }
        let mut binds = vec![
            BindMount {
                source: run_dir.clone(),
                destination: RUN_DIR.into(),
                readonly: true,
            },
            BindMount {
                source: self.store.code_path(&f.code.digest),
                destination: "/var/task".into(),
                readonly: true,
            },
        ];
        for v in &f.config.volumes {
            binds.push(BindMount {
                source: self.volume_path(&v.volume),
                destination: v.path.clone(),
                readonly: false,
            });
        }
        let spec = ContainerSpec {
            id: id.clone(),
            rootfs: dirs.merged.clone(),
            readonly_rootfs: false,
            args,
            env,
            cwd: "/var/task".into(),
            uid,
            gid,
            additional_gids: groups,
            hostname: f.name.clone(),
            network: if f.config.network {
                Network::Host
            } else {
                Network::Isolated
            },
            capabilities: vec![],
            binds,
            tmpfs: vec![TmpfsMount {
                destination: "/tmp".into(),
                size_bytes: self.settings.tmp_bytes,
                mode: 0o1777,
            }],
            limits: Limits {
                memory_bytes: resources.memory_bytes,
                cpu_millis: resources.cpu_millis,
                pids: Some(self.settings.instance_pids),
            },
            cgroup_parent: self.settings.cgroup_parent.clone(),
            no_new_privileges: true,
            rlimit_nofile: 65_536,
        };
        let bundle = scratch.path().join("bundle");
        std::fs::create_dir_all(&bundle).map_err(InvokeFailure::platform)?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let runc = self.runc.clone();
        let tail2 = Arc::clone(&tail);
        let spec2 = spec.clone();
        let inst_id = id.clone();
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
        self.instances.started(&f.name);
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
                let _ = mount.unmount().await;
                self.instances.stopped(&f.name);
                let t: Vec<String> = tail
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                return Err(InvokeFailure::platform(format!(
                    "{why}; agent output: {}",
                    t.join(" | ")
                )));
            }
        };
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        tracing::debug!(instance = %id, function = %f.name, revision = f.revision, runtime = %rt.reference(), "instance started");
        Ok(Arc::new(Instance {
            id,
            function: f.name.clone(),
            revision: f.revision,
            conn: tokio::sync::Mutex::new(conn),
            last_used: Mutex::new(Instant::now()),
            container: Mutex::new(Some(container)),
            mount: Mutex::new(Some(mount)),
            scratch: Mutex::new(Some(scratch)),
            agent_tail: tail,
        }))
    }

    /// Runs the idle reaper until the platform is dropped.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(p) = weak.upgrade() else { return };
                let n = p.instances.reap(p.settings.idle_timeout).await;
                if n > 0 {
                    tracing::debug!(stopped = n, "idle instances stopped");
                }
            }
        });
    }

    /// Stops every instance and removes this server's (now empty) cgroup parent (on shutdown).
    pub async fn stop_instances(&self) {
        self.instances.stop_all().await;
        if let Some((parent, tag)) = self.settings.cgroup_parent.rsplit_once('/') {
            if let Err(e) = strata_sandbox::cleanup_cgroups(parent, tag) {
                tracing::warn!(error = %e, "cannot remove the cgroup parent");
            }
        }
    }

    /// Path of the agent binary the server gives instances.
    pub fn init_binary(&self) -> Option<&PathBuf> {
        self.init_binary.as_ref()
    }
}

/// The outcome of one attempt on an instance.
enum Attempt {
    /// The runtime reported an error; the instance stays usable.
    Handled(InvokeFailure),
    /// The instance is unusable (timeout, init error); destroy it.
    Lost(InvokeFailure),
    /// The instance died; destroy it and look at why.
    Died(InvokeFailure),
}

fn function_error(body: &[u8], error_type: Option<String>) -> InvokeFailure {
    let mut e: InvokeError = serde_json::from_slice(body).unwrap_or_else(|_| InvokeError {
        error_message: String::from_utf8_lossy(body).into_owned(),
        error_type: String::new(),
        stack_trace: vec![],
    });
    if e.error_type.is_empty() {
        e.error_type = error_type.unwrap_or_else(|| "Unhandled".into());
    }
    // Node's client reports `trace`; keep it as the stack.
    if e.stack_trace.is_empty() {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(t) = v.get("trace").and_then(|t| t.as_array()) {
                e.stack_trace = t
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect();
            }
        }
    }
    InvokeFailure {
        kind: FailureKind::Function,
        error: e,
    }
}

async fn write_frame(conn: &mut UnixStream, header: &Header, body: &[u8]) -> std::io::Result<()> {
    let frame = strata_init::protocol::encode_frame(header, body)?;
    conn.write_all(&frame).await
}

async fn read_frame(conn: &mut UnixStream) -> std::io::Result<Option<(Header, Vec<u8>)>> {
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
    let header: Header = serde_json::from_slice(&hbuf).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad frame header: {e}"),
        )
    })?;
    Ok(Some((header, body)))
}
