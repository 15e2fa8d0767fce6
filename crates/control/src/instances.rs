//! The instance manager: generic warm pools per runtime version, per-function instance sets,
//! admission (dispatch, start, queue or 429), specialization, scale to zero, and runtime version
//! rolls. Decisions come from the pure policy in `policy.rs`; this module applies them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_init::protocol::Header;
use strata_meta::{FunctionRecord, RuntimeRecord};
use strata_types::api::{FunctionStats, InvokeError};
use strata_types::{Resources, RuntimeRef};

use crate::instance::{Instance, Mode, Phase, RuntimeKey};
use crate::logs::now_ms;
use crate::metrics::{Metrics, Phases, Start};
use crate::policy::{
    self, Admission, FnState, InstanceView, MemoryRoom, PoolAction, PoolConfig, PoolState,
    ScaleAction, ScaleConfig,
};
use crate::{random_hex, ControlError, Platform};

/// How an invocation failed, which decides its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The handler raised, or the runtime could not load it.
    Function,
    /// The invocation ran past the function's timeout.
    Timeout,
    /// The instance ran out of memory.
    OutOfMemory,
    /// No capacity now: retry after `retry_after_ms`.
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

    fn outcome(&self) -> &'static str {
        match self.kind {
            FailureKind::Function => "function_error",
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Platform => "platform_error",
        }
    }
}

impl From<ControlError> for InvokeFailure {
    fn from(e: ControlError) -> InvokeFailure {
        match e.kind() {
            strata_types::ErrorKind::NotFound => {
                InvokeFailure::new(FailureKind::Platform, "Strata.NotFound", e.to_string())
            }
            _ if matches!(e, ControlError::InitFailed { .. }) => match e {
                ControlError::InitFailed { error } => InvokeFailure {
                    kind: FailureKind::Function,
                    error,
                },
                _ => unreachable!("matched above"),
            },
            strata_types::ErrorKind::InvalidArgument => {
                InvokeFailure::new(FailureKind::Function, "Runtime.InitError", e.to_string())
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
    /// Whether the invocation waited for an instance to be specialized or started.
    pub cold: bool,
    /// Wall time, milliseconds.
    pub duration_ms: f64,
}

/// The instances of one function.
#[derive(Default)]
struct FnSet {
    instances: Vec<Arc<Instance>>,
    /// Instances being provisioned.
    starting: u32,
    queued: u32,
    /// Tickets of the queued invocations, oldest first: a free slot goes to the oldest, so an
    /// admitted invocation waits behind at most the queue bound, never behind later arrivals.
    waiting: VecDeque<u64>,
    /// Bumped whenever capacity may have appeared (an instance freed or added, a start failed);
    /// waiting invocations watch it, so no wake-up is lost between deciding and waiting.
    wake: tokio::sync::watch::Sender<u64>,
    scale: ScaleConfig,
}

/// Source of queue tickets (global, so a ticket stays unique if its function's set is rebuilt).
static NEXT_TICKET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A waiting invocation's place in its function's queue: whether it is counted in `queued`, and
/// its ticket. Dropping it (the caller went away, or gave up) gives the place up, so a
/// disconnected client neither keeps a queue slot nor blocks the queue as its head. It must not
/// be dropped while the function table is locked.
struct QueuePlace {
    platform: Arc<Platform>,
    function: String,
    ticket: Option<u64>,
    counted: bool,
}

impl QueuePlace {
    /// Counts the invocation as queued and gives it a ticket at the back, or keeps the one it has.
    fn enqueue(&mut self, set: &mut FnSet) {
        set.queued += 1;
        self.counted = true;
        let t = *self
            .ticket
            .get_or_insert_with(|| NEXT_TICKET.fetch_add(1, Ordering::Relaxed));
        if !set.waiting.contains(&t) {
            set.waiting.push_back(t);
        }
    }

    /// Whether a free slot may go to this invocation: the queue is empty, or it is the head.
    fn may_take(&self, set: &FnSet) -> bool {
        match set.waiting.front() {
            None => true,
            Some(head) => self.ticket == Some(*head),
        }
    }

    /// Leaves the queue for a slot; the next in line is woken for any other free slot.
    fn leave(&mut self, set: &mut FnSet) {
        if self.counted {
            set.queued = set.queued.saturating_sub(1);
            self.counted = false;
        }
        if let Some(t) = self.ticket.take() {
            set.waiting.retain(|w| *w != t);
            set.wake.send_modify(|g| *g += 1);
        }
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        if self.ticket.is_none() && !self.counted {
            return;
        }
        let platform = Arc::clone(&self.platform);
        let mut fns = platform.instances.fns();
        if let Some(set) = fns.get_mut(&self.function) {
            self.leave(set);
        }
    }
}

/// A runtime version's pool of generic instances.
struct Pool {
    cfg: PoolConfig,
    state: PoolState,
    ready: Vec<Arc<Instance>>,
    memory: u64,
}

#[derive(Default)]
struct FnStats {
    invocations: u64,
    errors: u64,
    cold: u64,
    pool_hits: u64,
    pool_misses: u64,
    recent: VecDeque<f64>,
    phases: [f64; 4],
    phase_counts: [u64; 4],
}

/// The instance manager.
pub struct Instances {
    fns: Mutex<HashMap<String, FnSet>>,
    pools: Mutex<HashMap<RuntimeKey, Pool>>,
    stats: Mutex<HashMap<String, FnStats>>,
    /// Platform metrics.
    pub metrics: Metrics,
    /// Per-minute series of each function (the console's charts).
    pub series: crate::series::Series,
    epoch: Instant,
}

impl Instances {
    pub(crate) fn new() -> Instances {
        Instances {
            fns: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            series: Default::default(),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> policy::Millis {
        self.epoch.elapsed().as_millis() as policy::Millis
    }

    fn fns(&self) -> std::sync::MutexGuard<'_, HashMap<String, FnSet>> {
        self.fns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<RuntimeKey, Pool>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Memory limits of every live instance (pools included).
    fn committed_memory(&self) -> u64 {
        let fns: u64 = self
            .fns()
            .values()
            .flat_map(|s| s.instances.iter())
            .map(|i| i.memory_bytes.load(Ordering::SeqCst))
            .sum();
        let pools: u64 = self
            .pools()
            .values()
            .map(|p| p.ready.len() as u64 * p.memory + p.state.starting as u64 * p.memory)
            .sum();
        fns + pools
    }

    /// Instances alive or starting, all functions and pools.
    fn count(&self) -> usize {
        let f: usize = self
            .fns()
            .values()
            .map(|s| s.instances.len() + s.starting as usize)
            .sum();
        let p: usize = self
            .pools()
            .values()
            .map(|p| p.ready.len() + p.state.starting as usize)
            .sum();
        f + p
    }

    fn view(&self, set: &FnSet, function: &str, revision: u32, runtime: &RuntimeKey) -> FnState {
        let now = self.now();
        FnState {
            instances: set
                .instances
                .iter()
                .map(|i| {
                    let in_flight = i.in_flight.load(Ordering::SeqCst);
                    let idle_ms = i.last_used().elapsed().as_millis() as policy::Millis;
                    InstanceView {
                        id: i.seq,
                        in_flight,
                        idle_since: (in_flight == 0).then(|| now.saturating_sub(idle_ms)),
                        draining: !i.serves(function, revision, runtime) || i.dead(),
                    }
                })
                .collect(),
            starting: set.starting,
            queued: set.queued,
            mean_duration_ms: self.mean_duration_ms(function),
        }
    }

    fn mean_duration_ms(&self, function: &str) -> f64 {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        match stats.get(function) {
            Some(s) if !s.recent.is_empty() => s.recent.iter().sum::<f64>() / s.recent.len() as f64,
            _ => 0.0,
        }
    }

    fn record(&self, function: &str, ok: bool, start: Start, ms: f64, phases: &Phases) {
        self.series
            .record(function, now_ms() / 60_000, ok, start != Start::Warm, ms);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let s = stats.entry(function.to_string()).or_default();
        s.invocations += 1;
        if !ok {
            s.errors += 1;
        }
        match start {
            Start::Warm => {}
            Start::PoolHit => {
                s.cold += 1;
                s.pool_hits += 1;
            }
            Start::PoolMiss => {
                s.cold += 1;
                s.pool_misses += 1;
            }
        }
        if s.recent.len() == 1000 {
            s.recent.pop_front();
        }
        s.recent.push_back(ms);
        for (i, v) in [phases.queue, phases.specialize, phases.init, phases.run]
            .iter()
            .enumerate()
        {
            if *v > 0.0 || i == 3 {
                s.phases[i] += v * 1000.0;
                s.phase_counts[i] += 1;
            }
        }
    }

    /// Statistics of a function since the server started.
    pub fn stats(&self, function: &str) -> FunctionStats {
        let instances = self
            .fns()
            .get(function)
            .map(|s| s.instances.len())
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
        let mean = |i: usize| {
            if s.phase_counts[i] == 0 {
                0.0
            } else {
                round3(s.phases[i] / s.phase_counts[i] as f64)
            }
        };
        FunctionStats {
            invocations: s.invocations,
            errors: s.errors,
            cold_starts: s.cold,
            instances,
            p50_ms: percentile(&v, 0.50),
            p99_ms: percentile(&v, 0.99),
            pool_hits: s.pool_hits,
            pool_misses: s.pool_misses,
            mean_queue_ms: mean(0),
            mean_specialize_ms: mean(1),
            mean_init_ms: mean(2),
            mean_run_ms: mean(3),
        }
    }

    /// Gauges for `/metrics`.
    pub fn gauges(&self) -> Vec<crate::metrics::Gauge> {
        let mut by_state: HashMap<&'static str, u64> = HashMap::new();
        let mut queue = Vec::new();
        for (name, set) in self.fns().iter() {
            for i in &set.instances {
                let state = match (i.phase(), i.in_flight.load(Ordering::SeqCst)) {
                    (Phase::Draining, _) => "draining",
                    (Phase::Starting, _) => "starting",
                    (_, 0) => "idle",
                    _ => "busy",
                };
                *by_state.entry(state).or_default() += 1;
            }
            *by_state.entry("starting").or_default() += set.starting as u64;
            queue.push((
                "strata_queue_depth",
                "Requests waiting for capacity, by function.",
                vec![("function", name.clone())],
                set.queued as f64,
            ));
        }
        for p in self.pools().values() {
            *by_state.entry("generic").or_default() += p.ready.len() as u64;
            *by_state.entry("starting").or_default() += p.state.starting as u64;
        }
        let mut out = Vec::new();
        for state in ["generic", "starting", "idle", "busy", "draining"] {
            out.push((
                "strata_instances",
                "Instances by state.",
                vec![("state", state.to_string())],
                *by_state.get(state).unwrap_or(&0) as f64,
            ));
        }
        out.extend(queue);
        out
    }

    /// Stops every instance of a function (removal), or those not at `keep_revision` once idle.
    pub(crate) async fn retire_function(&self, function: &str, keep_revision: Option<u32>) {
        let go: Vec<Arc<Instance>> = {
            let mut fns = self.fns();
            let Some(set) = fns.get_mut(function) else {
                return;
            };
            for i in &set.instances {
                let keep = matches!(i.phase(), Phase::Specialized { revision, .. } if Some(revision) == keep_revision);
                if !keep {
                    i.set_phase(Phase::Draining);
                }
            }
            if keep_revision.is_none() {
                let all = std::mem::take(&mut set.instances);
                fns.remove(function);
                all
            } else {
                let (idle, rest): (Vec<_>, Vec<_>) = set.instances.drain(..).partition(|i| {
                    i.phase() == Phase::Draining && i.in_flight.load(Ordering::SeqCst) == 0
                });
                set.instances = rest;
                idle
            }
        };
        for i in go {
            i.destroy().await;
        }
    }

    /// Stops every instance (server shutdown).
    pub(crate) async fn stop_all(&self) {
        let mut all: Vec<Arc<Instance>> =
            self.fns().drain().flat_map(|(_, s)| s.instances).collect();
        all.extend(self.pools().drain().flat_map(|(_, p)| p.ready));
        for i in all {
            i.destroy().await;
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    round3(sorted[i.min(sorted.len() - 1)])
}

/// Scaling configuration of a function, with the server's idle timeout as the default.
fn scale_config(f: &FunctionRecord, default_idle: Duration) -> ScaleConfig {
    let s = &f.config.scaling;
    ScaleConfig {
        min_instances: s.min_instances,
        max_instances: s.max_instances.max(1),
        concurrency: s.concurrency.max(1),
        idle_timeout_ms: s.idle_timeout_ms.unwrap_or(default_idle.as_millis() as u64),
        max_queue: s.max_queue,
    }
}

impl Platform {
    /// The function's record, runtime version and effective resources.
    fn resolve_function(
        &self,
        name: &str,
    ) -> Result<(FunctionRecord, RuntimeRecord, Resources), ControlError> {
        if let Some(hit) = self
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(hit.clone());
        }
        let resolved = self.resolve_function_uncached(name)?;
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), resolved.clone());
        Ok(resolved)
    }

    /// Forgets what functions resolve to (after any change to a function or runtime).
    pub(crate) fn forget_resolutions(&self) {
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn resolve_function_uncached(
        &self,
        name: &str,
    ) -> Result<(FunctionRecord, RuntimeRecord, Resources), ControlError> {
        let f = self.function_record(name)?;
        let r: RuntimeRef = f
            .config
            .runtime
            .parse()
            .map_err(|e: strata_types::NameError| ControlError::Invalid(e.to_string()))?;
        let rt = self.runtime_record(&r)?;
        let resources = f
            .config
            .resources
            .or(&rt.resources)
            .or(&Resources::platform_default());
        Ok((f, rt, resources))
    }

    /// Invokes a function with an event and waits for its result.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        event: Vec<u8>,
    ) -> Result<InvokeResult, InvokeFailure> {
        let started = Instant::now();
        let (f, rt, resources) = self.resolve_function(name)?;
        let runtime: RuntimeKey = (rt.name.clone(), rt.version);
        let scale = scale_config(&f, self.settings.idle_timeout);
        let memory = resources.memory_bytes.unwrap_or(256 << 20);
        let timeout_ms = resources.timeout_ms.unwrap_or(30_000);
        let queue_deadline = started + Duration::from_millis(timeout_ms.max(1000));
        let mut place = QueuePlace {
            platform: Arc::clone(self),
            function: name.to_string(),
            ticket: None,
            counted: false,
        };
        // Admission: dispatch to an instance with room, start one, wait, or refuse. Waiting
        // invocations are served in arrival order (see `QueuePlace`).
        let inst = loop {
            let mut wake;
            {
                let free = self.node_free();
                let mut fns = self.instances.fns();
                let set = fns.entry(name.to_string()).or_default();
                set.scale = scale.clone();
                if place.counted {
                    set.queued = set.queued.saturating_sub(1);
                    place.counted = false;
                }
                if let Some(t) = place.ticket {
                    // The set was rebuilt meanwhile: keep this invocation's turn.
                    if !set.waiting.contains(&t) {
                        set.waiting.push_front(t);
                    }
                }
                let mut view = self.instances.view(set, name, f.revision, &runtime);
                if !place.may_take(set) {
                    // A free slot belongs to the head of the queue, not to this invocation.
                    let full = scale.concurrency.max(1);
                    for i in &mut view.instances {
                        i.in_flight = i.in_flight.max(full);
                    }
                }
                let room = MemoryRoom {
                    instance_bytes: memory,
                    node_free_bytes: free,
                };
                match policy::admit(&scale, &view, room) {
                    Admission::Dispatch { instance } => {
                        if let Some(i) = set.instances.iter().find(|i| i.seq == instance).cloned() {
                            i.in_flight.fetch_add(1, Ordering::SeqCst);
                            place.leave(set);
                            break i;
                        }
                        wake = set.wake.subscribe();
                    }
                    Admission::StartAndQueue => {
                        set.starting += 1;
                        place.enqueue(set);
                        wake = set.wake.subscribe();
                        self.spawn_provision(f.clone(), rt.clone(), resources.clone(), true);
                    }
                    Admission::Queue => {
                        place.enqueue(set);
                        wake = set.wake.subscribe();
                    }
                    Admission::Reject {
                        retry_after_ms,
                        reason,
                    } => {
                        drop(fns);
                        let e = InvokeFailure::new(
                            FailureKind::Overloaded,
                            "Strata.TooManyRequests",
                            format!(
                                "{name} is at capacity ({reason:?}); retry after {} s",
                                retry_after_ms.div_ceil(1000).max(1)
                            ),
                        );
                        self.finish(
                            name,
                            &Err(e.clone()),
                            Start::Warm,
                            started,
                            &Phases::default(),
                        );
                        return Err(e);
                    }
                }
            }
            let wait = queue_deadline.saturating_duration_since(Instant::now());
            let _ =
                tokio::time::timeout(wait.min(Duration::from_millis(250)), wake.changed()).await;
            let failed = self.provision_error(name, started);
            if failed.is_some() || Instant::now() >= queue_deadline {
                drop(place);
                let e = failed.unwrap_or_else(|| {
                    InvokeFailure::new(
                        FailureKind::Overloaded,
                        "Strata.TooManyRequests",
                        format!(
                            "no instance of {name} became free within {:.1} s; retry later",
                            timeout_ms as f64 / 1000.0
                        ),
                    )
                });
                self.finish(
                    name,
                    &Err(e.clone()),
                    Start::PoolMiss,
                    started,
                    &Phases::default(),
                );
                return Err(e);
            }
        };
        let (start, provision_s) = inst
            .fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or((Start::Warm, 0.0));
        let dispatched = started.elapsed().as_secs_f64();
        let mut phases = Phases {
            queue: (dispatched - provision_s).max(0.0),
            ..Default::default()
        };
        match start {
            Start::PoolHit => phases.specialize = provision_s,
            Start::PoolMiss => phases.init = provision_s,
            Start::Warm => {}
        }
        let id = format!(
            "{}-{}-{}-{}-{}",
            random_hex(4),
            random_hex(2),
            random_hex(2),
            random_hex(2),
            random_hex(6)
        );
        let run_started = Instant::now();
        let outcome = self.run_on(&inst, &f, &id, timeout_ms, event).await;
        phases.run = run_started.elapsed().as_secs_f64();
        inst.in_flight.fetch_sub(1, Ordering::SeqCst);
        inst.touch();
        let result = match outcome {
            Ok((body, content_type)) => Ok(InvokeResult {
                body,
                content_type,
                id: id.clone(),
                cold: start != Start::Warm,
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            }),
            Err(Attempt::Handled(e)) => Err(e),
            Err(Attempt::Lost(e)) => {
                self.remove_instance(name, &inst).await;
                Err(e)
            }
            Err(Attempt::Died(e)) => {
                let outcome = self.remove_instance(name, &inst).await;
                if outcome.is_some_and(|o| o.oom_killed) {
                    Err(InvokeFailure::new(
                        FailureKind::OutOfMemory,
                        "Runtime.OutOfMemory",
                        format!(
                            "the function ran out of memory (limit {} MiB) and was stopped",
                            memory >> 20
                        ),
                    ))
                } else {
                    Err(e)
                }
            }
        };
        if let Some(set) = self.instances.fns().get(name) {
            set.wake.send_modify(|g| *g += 1);
        }
        self.finish(name, &result, start, started, &phases);
        tracing::info!(
            function = name,
            invocation = %id,
            start = start.as_str(),
            queue_ms = phases.queue * 1000.0,
            specialize_ms = phases.specialize * 1000.0,
            init_ms = phases.init * 1000.0,
            run_ms = phases.run * 1000.0,
            outcome = result.as_ref().map(|_| "ok").unwrap_or_else(|e| e.outcome()),
            "invocation"
        );
        result
    }

    fn finish(
        &self,
        name: &str,
        result: &Result<InvokeResult, InvokeFailure>,
        start: Start,
        started: Instant,
        phases: &Phases,
    ) {
        let total = started.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.instances
            .metrics
            .invocation(name, outcome, start, total, phases);
        self.instances
            .record(name, result.is_ok(), start, total * 1000.0, phases);
    }

    /// Takes an instance out of a function's set and stops it.
    async fn remove_instance(
        &self,
        name: &str,
        inst: &Arc<Instance>,
    ) -> Option<strata_sandbox::RunOutcome> {
        if let Some(set) = self.instances.fns().get_mut(name) {
            set.instances.retain(|i| !Arc::ptr_eq(i, inst));
        }
        inst.destroy().await
    }

    /// Provisions one instance for a function in the background: a pool instance specialized if
    /// one is ready (pool hit), else a new one (pool miss). Waiting invocations are woken.
    fn spawn_provision(
        self: &Arc<Self>,
        f: FunctionRecord,
        rt: RuntimeRecord,
        resources: Resources,
        for_waiting: bool,
    ) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let t = Instant::now();
            let result = me.provision(&f, &rt, &resources).await;
            let elapsed = t.elapsed().as_secs_f64();
            if let Err(e) = &result {
                tracing::warn!(function = %f.name, error = %e, "cannot provision an instance");
            }
            let result = match result {
                Ok(r) => Ok(r),
                Err(e) => {
                    me.record_provision_failure(&f.name, e);
                    Err(())
                }
            };
            let mut fns = me.instances.fns();
            let set = fns.entry(f.name.clone()).or_default();
            set.starting = set.starting.saturating_sub(1);
            if let Ok((inst, start)) = &result {
                // Only an invocation that waited for this instance had a cold start.
                if for_waiting {
                    *inst.fresh.lock().unwrap_or_else(|e| e.into_inner()) = Some((*start, elapsed));
                }
                set.instances.push(Arc::clone(inst));
            }
            set.wake.send_modify(|g| *g += 1);
        });
    }

    fn record_provision_failure(&self, name: &str, e: ControlError) {
        let mut failures = self
            .provision_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failures.insert(name.to_string(), (Instant::now(), InvokeFailure::from(e)));
    }

    /// The error of a provisioning attempt made for this invocation (started after it began).
    fn provision_error(&self, name: &str, since: Instant) -> Option<InvokeFailure> {
        let failures = self
            .provision_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failures
            .get(name)
            .filter(|(at, _)| *at >= since)
            .map(|(_, e)| e.clone())
    }

    async fn provision(
        self: &Arc<Self>,
        f: &FunctionRecord,
        rt: &RuntimeRecord,
        resources: &Resources,
    ) -> Result<(Arc<Instance>, Start), ControlError> {
        let key: RuntimeKey = (rt.name.clone(), rt.version);
        let poolable = !f.config.network && f.config.volumes.is_empty();
        if poolable {
            let taken = {
                let mut pools = self.instances.pools();
                let now = self.instances.now();
                let pool = pools
                    .entry(key.clone())
                    .or_insert_with(|| self.new_pool(rt));
                let inst = loop {
                    match pool.ready.pop() {
                        Some(i) if i.dead() => continue,
                        other => break other,
                    }
                };
                match &inst {
                    Some(_) => pool.state.record_hit(now),
                    None => pool.state.record_miss(now),
                }
                pool.state.ready = pool.ready.len() as u32;
                inst
            };
            // The replacement starts at the next pool round (within 250 ms), not now: on a small
            // host a container start competes for the CPU with the specialization under way.
            if let Some(inst) = taken {
                return match inst.specialize(self, f, rt, resources).await {
                    Ok(()) => Ok((inst, Start::PoolHit)),
                    Err(e) => {
                        inst.destroy().await;
                        Err(e)
                    }
                };
            }
        }
        let inst = self.start_instance(rt, Mode::Direct(f, resources)).await?;
        Ok((inst, Start::PoolMiss))
    }

    /// Memory the node budget still has for new instances; none once `max_instances` instances
    /// are alive or starting.
    fn node_free(&self) -> u64 {
        if self.instances.count() >= self.settings.max_instances {
            return 0;
        }
        self.settings
            .memory_budget
            .saturating_sub(self.instances.committed_memory())
    }

    /// Re-reads the pool size of a runtime's pools at the next round.
    pub(crate) fn reset_pools(&self, runtime: &str) {
        let mut pools = self.instances.pools();
        for ((name, _), pool) in pools.iter_mut() {
            if name == runtime {
                if let Ok(Some(text)) = self.meta.setting(&format!("pool.{name}")) {
                    if let Ok(c) = serde_json::from_str::<strata_types::api::PoolSettings>(&text) {
                        pool.cfg.min = c.min;
                        pool.cfg.max = c.max.max(c.min);
                    }
                }
            }
        }
        drop(pools);
        self.pool_changed.notify_one();
    }

    fn new_pool(&self, rt: &RuntimeRecord) -> Pool {
        let mut cfg = self.settings.pool.clone();
        if let Ok(Some(text)) = self.meta.setting(&format!("pool.{}", rt.name)) {
            if let Ok(c) = serde_json::from_str::<strata_types::api::PoolSettings>(&text) {
                cfg.min = c.min;
                cfg.max = c.max.max(c.min);
            }
        }
        let memory = rt.resources.memory_bytes.unwrap_or(256 << 20);
        Pool {
            state: PoolState::new(&cfg),
            cfg,
            ready: Vec::new(),
            memory,
        }
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
        let mut rx = inst.register(id);
        let header = Header::Invoke {
            id: id.to_string(),
            deadline_ms: now_ms() + timeout_ms,
            timeout_ms,
            function_arn: format!("arn:aws:lambda:local:000000000000:function:{}", f.name),
            trace_id: format!("Root=1-{:08x}-{}", now_ms() / 1000, random_hex(12)),
            client_context: None,
            cognito_identity: None,
        };
        let result = async {
            inst.send(&header, &event)
                .await
                .map_err(|e| Attempt::Died(self.died(inst, format!("lost the instance: {e}"))))?;
            // The agent enforces the timeout; this is the backstop if the agent itself hangs.
            let backstop = Duration::from_millis(timeout_ms) + Duration::from_secs(5);
            let frame = match tokio::time::timeout(backstop, rx.recv()).await {
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
                Ok(None) => {
                    return Err(Attempt::Died(self.died(inst, "the instance exited".into())))
                }
                Ok(Some(frame)) => frame,
            };
            match frame {
                (Header::Response { content_type, .. }, body) => Ok((body, content_type)),
                (Header::Error { error_type, .. }, body) => {
                    Err(Attempt::Handled(function_error(&body, error_type)))
                }
                (Header::InitError { error_type }, body) => {
                    let mut e = function_error(&body, error_type);
                    if !e.error.error_type.starts_with("Runtime.") {
                        e.error.error_type = format!("Runtime.InitError.{}", e.error.error_type);
                    }
                    Err(Attempt::Lost(e))
                }
                (Header::Timeout { timeout_ms, .. }, _) => Err(Attempt::Lost(InvokeFailure::new(
                    FailureKind::Timeout,
                    "Strata.Timeout",
                    format!(
                        "Task timed out after {:.2} seconds",
                        timeout_ms as f64 / 1000.0
                    ),
                ))),
                (Header::Exited { code, signal, .. }, _) => {
                    let how = match (code, signal) {
                        (_, Some(s)) => format!("signal {s}"),
                        (Some(c), None) => format!("exit status {c}"),
                        _ => "unknown status".into(),
                    };
                    Err(Attempt::Died(InvokeFailure::new(
                        FailureKind::Function,
                        "Runtime.ExitError",
                        format!("the runtime exited with {how} during the invocation"),
                    )))
                }
                (other, _) => Err(Attempt::Lost(InvokeFailure::platform(format!(
                    "unexpected frame {other:?}"
                )))),
            }
        }
        .await;
        inst.unregister(id);
        result
    }

    fn died(&self, inst: &Instance, why: String) -> InvokeFailure {
        let mut f = InvokeFailure::new(FailureKind::Function, "Runtime.ExitError", why);
        f.error.stack_trace = inst.agent_tail();
        f
    }

    /// Runs the pool and scaling loop until the platform is dropped.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(p) = weak.upgrade() else { return };
                let changed = Arc::clone(&p.pool_changed);
                p.tick().await;
                drop(p);
                let _ = tokio::time::timeout(Duration::from_millis(250), changed.notified()).await;
            }
        });
    }

    /// One round of pool and scaling decisions.
    async fn tick(self: &Arc<Self>) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        self.tick_pools().await;
        self.tick_functions().await;
    }

    /// Keeps pools for the runtime versions functions resolve to, sized by the pool policy.
    async fn tick_pools(self: &Arc<Self>) {
        let mut wanted: HashMap<RuntimeKey, RuntimeRecord> = HashMap::new();
        if let Ok(fns) = self.meta.functions() {
            for f in fns
                .iter()
                .filter(|f| !f.config.network && f.config.volumes.is_empty())
            {
                if let Ok(r) = f.config.runtime.parse::<RuntimeRef>() {
                    if let Ok(Some(rt)) = self.meta.runtime(&r.name, r.version) {
                        if rt.config.entrypoint.as_ref().is_some_and(|e| !e.is_empty()) {
                            wanted.insert((rt.name.clone(), rt.version), rt);
                        }
                    }
                }
            }
        }
        let now = self.instances.now();
        let free = self.node_free();
        let mut starts: Vec<(RuntimeRecord, u32)> = Vec::new();
        let mut stops: Vec<Arc<Instance>> = Vec::new();
        {
            let mut pools = self.instances.pools();
            // Pools of runtime versions no function uses any more go away.
            let gone: Vec<RuntimeKey> = pools
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
            for k in gone {
                if let Some(p) = pools.remove(&k) {
                    stops.extend(p.ready);
                }
            }
            for (key, rt) in &wanted {
                let pool = pools
                    .entry(key.clone())
                    .or_insert_with(|| self.new_pool(rt));
                pool.ready.retain(|i| !i.dead());
                pool.state.ready = pool.ready.len() as u32;
                let room = MemoryRoom {
                    instance_bytes: pool.memory,
                    node_free_bytes: free,
                };
                for action in policy::plan_pool(&pool.cfg, &mut pool.state, room, now) {
                    match action {
                        PoolAction::Start(n) => {
                            pool.state.starting += n;
                            starts.push((rt.clone(), n));
                        }
                        PoolAction::Stop(n) => {
                            for _ in 0..n {
                                if let Some(i) = pool.ready.first().cloned() {
                                    pool.ready.remove(0);
                                    stops.push(i);
                                }
                            }
                            pool.state.ready = pool.ready.len() as u32;
                        }
                    }
                }
            }
        }
        for i in stops {
            i.destroy().await;
        }
        for (rt, n) in starts {
            for _ in 0..n {
                let me = Arc::clone(self);
                let rt = rt.clone();
                tokio::spawn(async move {
                    let budget_ok = me.instances.committed_memory()
                        + rt.resources.memory_bytes.unwrap_or(256 << 20)
                        <= me.settings.memory_budget;
                    let result = if budget_ok {
                        me.start_instance(&rt, Mode::Generic)
                            .await
                            .map_err(|e| e.to_string())
                    } else {
                        Err("the node memory budget is spent".into())
                    };
                    let key = (rt.name.clone(), rt.version);
                    let mut orphan = None;
                    {
                        let mut pools = me.instances.pools();
                        match pools.get_mut(&key) {
                            Some(pool) => {
                                pool.state.starting = pool.state.starting.saturating_sub(1);
                                match result {
                                    Ok(inst) => pool.ready.push(inst),
                                    Err(e) => {
                                        tracing::warn!(runtime = %rt.reference(), error = %e, "cannot start a pool instance")
                                    }
                                }
                                pool.state.ready = pool.ready.len() as u32;
                            }
                            None => orphan = result.ok(),
                        }
                    }
                    if let Some(i) = orphan {
                        i.destroy().await;
                    }
                });
            }
        }
    }

    /// Applies each function's scaling plan: idle instances above the minimum stop, the minimum
    /// is kept warm, drained instances (old revision or runtime version) stop once empty.
    async fn tick_functions(self: &Arc<Self>) {
        let names: Vec<String> = self.instances.fns().keys().cloned().collect();
        let mut declared: Vec<String> = Vec::new();
        if let Ok(fns) = self.meta.functions() {
            declared = fns
                .iter()
                .filter(|f| f.config.scaling.min_instances > 0)
                .map(|f| f.name.clone())
                .collect();
        }
        let mut all: Vec<String> = names;
        for d in declared {
            if !all.contains(&d) {
                all.push(d);
            }
        }
        for name in all {
            let Ok((f, rt, resources)) = self.resolve_function(&name) else {
                self.instances.retire_function(&name, None).await;
                continue;
            };
            let runtime: RuntimeKey = (rt.name.clone(), rt.version);
            let scale = scale_config(&f, self.settings.idle_timeout);
            let free = self.node_free();
            let room = MemoryRoom {
                instance_bytes: resources.memory_bytes.unwrap_or(256 << 20),
                node_free_bytes: free,
            };
            let (stops, starts) = {
                let mut fns = self.instances.fns();
                let set = fns.entry(name.clone()).or_default();
                set.scale = scale.clone();
                for i in &set.instances {
                    if !i.serves(&name, f.revision, &runtime) || i.dead() {
                        i.set_phase(Phase::Draining);
                    }
                }
                let view = self.instances.view(set, &name, f.revision, &runtime);
                let mut stops = Vec::new();
                let mut starts = 0;
                for action in policy::plan_scale(&scale, &view, room, self.instances.now()) {
                    match action {
                        ScaleAction::Stop(seq) => {
                            if let Some(pos) = set.instances.iter().position(|i| i.seq == seq) {
                                stops.push(set.instances.remove(pos));
                            }
                        }
                        ScaleAction::Start(n) => {
                            set.starting += n;
                            starts += n;
                        }
                    }
                }
                (stops, starts)
            };
            for i in stops {
                i.destroy().await;
            }
            for _ in 0..starts {
                self.spawn_provision(f.clone(), rt.clone(), resources.clone(), false);
            }
        }
    }

    /// Stops every instance, removes the function network (bridge, rules) and this server's
    /// (now empty) cgroup parent (on shutdown).
    pub async fn stop_instances(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.instances.stop_all().await;
        // Starts already under way see the flag when they finish and stop themselves; wait for
        // them (bounded) so nothing is left running when the server exits.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.starting.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.instances.stop_all().await;
        self.network_shutdown().await;
        if let Some((parent, tag)) = self.settings.cgroup_parent.rsplit_once('/') {
            if let Err(e) = strata_sandbox::cleanup_cgroups(parent, tag) {
                tracing::warn!(error = %e, "cannot remove the cgroup parent");
            }
        }
    }

    /// The Prometheus text of every metric.
    pub fn metrics_text(&self) -> String {
        self.instances.metrics.render(&self.instances.gauges())
    }

    /// Path of the agent binary the server gives instances.
    pub fn init_binary(&self) -> Option<&std::path::PathBuf> {
        self.init_binary.as_ref()
    }
}

/// The outcome of one attempt on an instance.
enum Attempt {
    /// The runtime reported an error; the instance stays usable.
    Handled(InvokeFailure),
    /// The instance is unusable (timeout, init error); remove it.
    Lost(InvokeFailure),
    /// The instance died; remove it and look at why.
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
