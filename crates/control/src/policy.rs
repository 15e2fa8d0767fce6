//! Instance policy: how large each runtime's generic pool should be, where a new invocation goes,
//! and which function instances to start or stop.
//!
//! Everything here is a pure function of state and a clock value passed in by the caller: no I/O,
//! no tasks, no sleeping. Decisions come back as data — [`PoolAction`], [`Admission`],
//! [`ScaleAction`] — and the instance executor applies them, so the policy is tested with plain
//! numbers for time. `docs/pools.md` describes the same policy for users.
//!
//! Two kinds of instances are governed here:
//! - **Generic pools**, one per runtime version: instances started ahead of demand that belong to
//!   no function yet. A function's first invocation takes one and specializes it. The pool's
//!   target size adapts to misses (takes that found the pool empty) and to quiet periods.
//! - **Function instances**, per function: between `min_instances` (kept warm) and
//!   `max_instances`, each serving up to `concurrency` invocations at once, stopped after an idle
//!   timeout. Requests beyond that wait in a bounded queue; beyond the queue they are rejected
//!   with 429 and a `Retry-After`.
//!
//! Every start decision respects the node's memory budget, passed as a [`MemoryRoom`], so the sum
//! of the memory limits of running and starting instances never goes over it, and a node that is
//! out of budget gets no start it would have to refuse.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A monotonic clock value in milliseconds, fed in by the caller (never read here).
pub type Millis = u64;

/// Longest `Retry-After` ever suggested: past a minute an estimate says little, and a client told
/// to wait an hour would rather see an error it can act on.
pub const MAX_RETRY_AFTER_MS: Millis = 60_000;

/// Most misses a pool remembers between two plans. Growth is capped at the pool's `max` anyway,
/// so misses beyond this carry no information; the cap keeps the state small if the planner falls
/// behind.
const MAX_PENDING_MISSES: usize = 1024;

/// A policy configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(field: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError {
        field,
        message: message.into(),
    })
}

/// Room on the node for new instances.
///
/// The node has a memory budget that caps the sum of the memory limits of its instances (running,
/// starting, draining, pooled). The caller knows what is already promised; the policy only needs
/// what is left and what one more instance would take. A struct rather than two `u64`
/// parameters, so the two cannot be swapped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRoom {
    /// Memory limit of one new instance (the function's, or the runtime's for a pool).
    pub instance_bytes: u64,
    /// Part of the node's memory budget not yet promised to any instance.
    pub node_free_bytes: u64,
}

impl MemoryRoom {
    /// Room with no memory limit at all (no budget configured).
    pub const UNLIMITED: MemoryRoom = MemoryRoom {
        instance_bytes: 0,
        node_free_bytes: u64::MAX,
    };

    /// How many more instances fit in the budget. An instance without a memory limit
    /// (`instance_bytes == 0`) always fits.
    pub fn instances(&self) -> u32 {
        match self.node_free_bytes.checked_div(self.instance_bytes) {
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
            None => u32::MAX,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generic pools
// ---------------------------------------------------------------------------------------------

/// How a runtime's generic pool is sized.
///
/// The pool starts at `initial`, grows by `grow_step` for each recent miss, and shrinks by one
/// after every `idle_shrink_ms` without a take, always within `min..=max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Fewest instances the pool keeps (ready or starting), however quiet the runtime is.
    pub min: u32,
    /// Most instances the pool keeps.
    pub max: u32,
    /// Target size when the pool is created, before any take has been seen.
    pub initial: u32,
    /// How long a miss stays relevant: a miss older than this when the planner first sees it
    /// describes load that has passed and does not grow the pool.
    pub miss_window_ms: Millis,
    /// Instances added to the target for each miss.
    pub grow_step: u32,
    /// Time without a take (and without a resize) after which the target drops by one.
    pub idle_shrink_ms: Millis,
}

impl Default for PoolConfig {
    /// One instance always warm, two at creation, at most eight; a miss counts for a minute and
    /// grows the pool by one; the pool sheds one instance per two quiet minutes.
    fn default() -> PoolConfig {
        PoolConfig {
            min: 1,
            max: 8,
            initial: 2,
            miss_window_ms: 60_000,
            grow_step: 1,
            idle_shrink_ms: 120_000,
        }
    }
}

impl PoolConfig {
    /// Checks that `min <= initial <= max` and that steps and windows are not zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min > self.max {
            return invalid(
                "min",
                format!(
                    "{} is above max {}; min must be at most max",
                    self.min, self.max
                ),
            );
        }
        if self.initial < self.min || self.initial > self.max {
            return invalid(
                "initial",
                format!(
                    "{} is outside {}..={}; initial must lie between min and max",
                    self.initial, self.min, self.max
                ),
            );
        }
        if self.grow_step == 0 {
            return invalid("grow_step", "0 never grows the pool; use at least 1");
        }
        if self.miss_window_ms == 0 {
            return invalid("miss_window_ms", "0 ignores every miss; use at least 1");
        }
        if self.idle_shrink_ms == 0 {
            return invalid(
                "idle_shrink_ms",
                "0 shrinks the pool on every plan; use at least 1",
            );
        }
        Ok(())
    }

    /// `min` and `max` as a usable range even if the configuration was never validated: when
    /// `min > max`, `max` wins, so the policy never starts more than `max`.
    fn bounds(&self) -> (u32, u32) {
        (self.min.min(self.max), self.max)
    }
}

/// What the policy knows about one generic pool.
///
/// `ready` and `starting` are facts the executor owns and keeps current: it sets them from its
/// own instance lists, and applies every [`PoolAction`] to them when it applies the action
/// (`Start(n)` adds `n` to `starting`, `Stop(n)` removes `n` from `ready`) before the next plan.
/// The rest — target, misses, quiet period — belongs to the policy and changes only through
/// [`PoolState::record_hit`], [`PoolState::record_miss`] and [`plan_pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolState {
    /// Instances started, specialized for no function, ready to be taken.
    pub ready: u32,
    /// Instances being started for the pool.
    pub starting: u32,
    target: u32,
    pending_misses: VecDeque<Millis>,
    last_take_ms: Option<Millis>,
    last_resize_ms: Option<Millis>,
}

impl PoolState {
    /// An empty pool aiming for `cfg.initial` (kept within `min..=max`). Its quiet period begins
    /// at the first plan, so a pool created long after the clock's origin is not shrunk at once.
    pub fn new(cfg: &PoolConfig) -> PoolState {
        let (min, max) = cfg.bounds();
        PoolState {
            ready: 0,
            starting: 0,
            target: cfg.initial.max(min).min(max),
            pending_misses: VecDeque::new(),
            last_take_ms: None,
            last_resize_ms: None,
        }
    }

    /// The size the pool aims for, always within `min..=max`.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// Misses recorded since the last plan.
    pub fn pending_misses(&self) -> usize {
        self.pending_misses.len()
    }

    /// When an instance was last taken (or found missing), if ever.
    pub fn last_take_ms(&self) -> Option<Millis> {
        self.last_take_ms
    }

    /// Notes a take served by a ready instance. Only the quiet period restarts: a hit means the
    /// pool is large enough. (The executor lowers `ready` itself.)
    pub fn record_hit(&mut self, now: Millis) {
        self.last_take_ms = Some(now);
    }

    /// Notes a take that found the pool empty: the invocation paid a full cold start. The next
    /// plan answers it by growing the pool.
    pub fn record_miss(&mut self, now: Millis) {
        self.last_take_ms = Some(now);
        if self.pending_misses.len() == MAX_PENDING_MISSES {
            self.pending_misses.pop_front();
        }
        self.pending_misses.push_back(now);
    }
}

/// What to do with a generic pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolAction {
    /// Start this many generic instances.
    Start(u32),
    /// Stop this many ready (untaken) instances, any of them.
    Stop(u32),
}

/// Plans a generic pool at `now`: adapts its target, then starts or stops instances to meet it.
///
/// - **Grow**: each miss recorded since the last plan, and no older than `miss_window_ms`, raises
///   the target by `grow_step` (more misses, more growth), up to `max`. Misses are consumed by
///   the plan that sees them, so how often the planner runs does not change how much it grows.
/// - **Shrink**: after `idle_shrink_ms` without a take or resize, the target drops by one toward
///   `min`; each further quiet `idle_shrink_ms` drops it by one more. Growth is fast and
///   shrinking slow, because a miss costs a cold start while a spare instance costs only memory.
/// - **Meet the target**: instances starting count as capacity, so the plan never starts more
///   than the target; starts are capped by the memory `room`, and the rest follow in later plans
///   as memory frees. Only ready instances are stopped, never ones still starting.
///
/// Returns at most one action. The caller applies it to `state.ready` / `state.starting` (see
/// [`PoolState`]) before planning again; that is what keeps two plans from starting the same
/// instance twice.
pub fn plan_pool(
    cfg: &PoolConfig,
    state: &mut PoolState,
    room: MemoryRoom,
    now: Millis,
) -> Vec<PoolAction> {
    let (min, max) = cfg.bounds();
    let last_resize = *state.last_resize_ms.get_or_insert(now);

    let horizon = now.saturating_sub(cfg.miss_window_ms);
    let fresh = state
        .pending_misses
        .iter()
        .filter(|&&t| t >= horizon)
        .count();
    state.pending_misses.clear();
    let fresh = u32::try_from(fresh).unwrap_or(u32::MAX);

    let quiet_since = state
        .last_take_ms
        .map_or(last_resize, |t| t.max(last_resize));
    let mut target = state.target.max(min).min(max);
    if fresh > 0 {
        target = target
            .saturating_add(cfg.grow_step.saturating_mul(fresh))
            .min(max);
        state.last_resize_ms = Some(now);
    } else if target > min && now.saturating_sub(quiet_since) >= cfg.idle_shrink_ms {
        target -= 1;
        state.last_resize_ms = Some(now);
    }
    state.target = target;

    let capacity = state.ready.saturating_add(state.starting);
    let action = if capacity < target {
        let n = (target - capacity).min(room.instances());
        (n > 0).then_some(PoolAction::Start(n))
    } else {
        let n = (capacity - target).min(state.ready);
        (n > 0).then_some(PoolAction::Stop(n))
    };
    action.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Function instances
// ---------------------------------------------------------------------------------------------

/// How a function's instances scale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleConfig {
    /// Instances kept warm even when idle (0 scales to zero).
    pub min_instances: u32,
    /// Most instances (ready or starting) taking new invocations at once. Draining instances do
    /// not count — they take no new work — but they still count against the node's memory
    /// budget, so a new revision starts serving without waiting for the old one to finish.
    pub max_instances: u32,
    /// Invocations one instance serves at the same time.
    pub concurrency: u32,
    /// Idle time after which an instance above `min_instances` is stopped.
    pub idle_timeout_ms: Millis,
    /// Invocations that may wait for a busy instance. Invocations waiting for an instance that is
    /// already starting for them do not count.
    pub max_queue: u32,
}

impl Default for ScaleConfig {
    /// Scale to zero, at most 10 instances of one invocation each, stopped after 5 idle minutes,
    /// and up to 100 invocations waiting — the same defaults a function's scaling settings have.
    fn default() -> ScaleConfig {
        ScaleConfig {
            min_instances: 0,
            max_instances: 10,
            concurrency: 1,
            idle_timeout_ms: 300_000,
            max_queue: 100,
        }
    }
}

impl ScaleConfig {
    /// Checks that at least one instance may run, that `min_instances <= max_instances`, and
    /// that an instance serves at least one invocation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_instances == 0 {
            return invalid(
                "max_instances",
                "0 would never run the function; use at least 1",
            );
        }
        if self.min_instances > self.max_instances {
            return invalid(
                "min_instances",
                format!(
                    "{} is above max_instances {}; min_instances must be at most max_instances",
                    self.min_instances, self.max_instances
                ),
            );
        }
        if self.concurrency == 0 {
            return invalid(
                "concurrency",
                "0 would never serve an invocation; use at least 1",
            );
        }
        Ok(())
    }

    /// Concurrency as used by the policy: at least 1 even if never validated.
    fn slots(&self) -> u32 {
        self.concurrency.max(1)
    }

    /// `min_instances` as used by the policy: when above `max_instances`, the maximum wins.
    fn floor(&self) -> u32 {
        self.min_instances.min(self.max_instances)
    }
}

/// One running instance of a function, as the policy sees it. Instances still starting are not
/// listed; [`FnState::starting`] counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The executor's id for the instance.
    pub id: u64,
    /// Invocations it is serving now.
    pub in_flight: u32,
    /// Since when it has served nothing: `Some` only when `in_flight` is 0. An instance with
    /// nothing in flight and no `idle_since` is never stopped for idleness.
    pub idle_since: Option<Millis>,
    /// Finishing its invocations and taking no new ones (an older revision or runtime version,
    /// or an instance found unhealthy). Stopped once it has nothing in flight.
    pub draining: bool,
}

/// What the policy knows about one function's instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FnState {
    /// Its running instances, in any order.
    pub instances: Vec<InstanceView>,
    /// Instances being started; each will take `concurrency` invocations once ready.
    pub starting: u32,
    /// Invocations waiting for an instance. When the executor re-admits a waiting invocation, it
    /// leaves that invocation out of this count.
    pub queued: u32,
    /// Recent mean invocation duration, for `Retry-After` estimates (0 when unknown).
    pub mean_duration_ms: f64,
}

impl FnState {
    /// Instances taking new work: running and not draining, or starting.
    fn live(&self) -> u32 {
        let running = self.instances.iter().filter(|i| !i.draining).count();
        u32::try_from(running)
            .unwrap_or(u32::MAX)
            .saturating_add(self.starting)
    }

    /// Invocation slots free on running instances that take new work.
    fn free_slots(&self, concurrency: u32) -> u32 {
        self.instances
            .iter()
            .filter(|i| !i.draining)
            .map(|i| concurrency.saturating_sub(i.in_flight))
            .fold(0, u32::saturating_add)
    }
}

/// Where a new invocation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Send it to this running instance now.
    Dispatch {
        /// The chosen instance.
        instance: u64,
    },
    /// Start one more instance and queue the invocation until an instance is free.
    StartAndQueue,
    /// Queue the invocation until an instance is free.
    Queue,
    /// Refuse it: answer 429 with `Retry-After`.
    Reject {
        /// Suggested wait before retrying: whole seconds, in milliseconds.
        retry_after_ms: Millis,
        /// Which limit was reached.
        reason: RejectReason,
    },
}

/// Why an invocation was refused. In each case no instance had a free slot and the queue was
/// full; the reason names the limit that kept Strata from starting another instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The function runs `max_instances` and its queue of `max_queue` is full: the burst is
    /// larger than the function is configured to absorb.
    QueueFull,
    /// The function runs `max_instances` and has no queue (`max_queue` is 0).
    MaxInstances,
    /// The function could run more instances, but the node's memory budget has no room for one.
    MemoryBudget,
}

/// The running instance an invocation should go to, if any has a free slot.
///
/// The least-loaded instance that is not draining wins. Among idle ones the most recently used
/// wins, so load concentrates on few instances and the others reach their idle timeout and stop;
/// remaining ties go to the lowest id, so the choice is deterministic. An executor that keeps its
/// waiting invocations in order calls this to hand the oldest one an instance as slots free up.
pub fn pick_instance(cfg: &ScaleConfig, state: &FnState) -> Option<u64> {
    let concurrency = cfg.slots();
    state
        .instances
        .iter()
        .filter(|i| !i.draining && i.in_flight < concurrency)
        .min_by(|a, b| {
            a.in_flight
                .cmp(&b.in_flight)
                .then_with(|| b.idle_since.cmp(&a.idle_since))
                .then_with(|| a.id.cmp(&b.id))
        })
        .map(|i| i.id)
}

/// Decides where a new invocation goes, in this order:
///
/// 1. **Dispatch** to a running instance with a free slot ([`pick_instance`]).
/// 2. **Queue** if instances already starting have a slot for it beyond the invocations already
///    queued: a start is on its way, so none is added.
/// 3. **StartAndQueue** if fewer than `max_instances` are live (running and not draining, or
///    starting) and one more instance fits in the memory `room`.
/// 4. **Queue** if fewer than `max_queue` invocations wait beyond what starting instances absorb.
/// 5. **Reject** otherwise, naming the limit that stopped a start ([`RejectReason`]), with a
///    `Retry-After` from [`retry_after_ms`] over the queue and the live instances' slots.
///
/// Admission reads no clock: it depends on the instances, the queue and the room only. It does
/// not order a new invocation against queued ones either; an executor that keeps a FIFO serves
/// its queue first (with [`pick_instance`]) and admits new invocations after.
pub fn admit(cfg: &ScaleConfig, state: &FnState, room: MemoryRoom) -> Admission {
    if let Some(instance) = pick_instance(cfg, state) {
        return Admission::Dispatch { instance };
    }

    let concurrency = cfg.slots();
    let starting_slots = state.starting.saturating_mul(concurrency);
    if state.queued < starting_slots {
        return Admission::Queue;
    }

    let live = state.live();
    let at_max = live >= cfg.max_instances;
    if !at_max && room.instances() > 0 {
        return Admission::StartAndQueue;
    }

    if state.queued < starting_slots.saturating_add(cfg.max_queue) {
        return Admission::Queue;
    }

    let reason = if !at_max {
        RejectReason::MemoryBudget
    } else if cfg.max_queue > 0 {
        RejectReason::QueueFull
    } else {
        RejectReason::MaxInstances
    };
    Admission::Reject {
        retry_after_ms: retry_after_ms(
            state.queued,
            live.saturating_mul(concurrency),
            state.mean_duration_ms,
        ),
        reason,
    }
}

/// What to do with a function's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleAction {
    /// Start this many instances (on top of those already starting).
    Start(u32),
    /// Stop this instance; it has nothing in flight.
    Stop(u64),
}

/// Plans a function's instances at `now`. Stops come first, then at most one `Start`:
///
/// - **Draining** instances are stopped once they have nothing in flight.
/// - **Idle** instances are stopped once idle for `idle_timeout_ms`, longest-idle first, but
///   never below `min_instances` (starting ones count). If more than `max_instances` are live
///   (the limit was lowered), idle instances beyond it are stopped at once, longest-idle first.
///   Nothing idle is stopped while invocations are queued: they are about to use it.
/// - **Starts** bring the function up to `min_instances`, and also start instances for queued
///   invocations that no free slot or starting instance will serve (after a start failed, or
///   when memory frees up), never beyond `max_instances` nor the memory `room`. `Start(n)` is in
///   addition to `state.starting`: the plan never starts what is already on its way.
pub fn plan_scale(
    cfg: &ScaleConfig,
    state: &FnState,
    room: MemoryRoom,
    now: Millis,
) -> Vec<ScaleAction> {
    let mut actions: Vec<ScaleAction> = state
        .instances
        .iter()
        .filter(|i| i.draining && i.in_flight == 0)
        .map(|i| ScaleAction::Stop(i.id))
        .collect();

    let live = state.live();
    let floor = cfg.floor();
    let mut stopped = 0u32;
    if state.queued == 0 {
        let mut idle: Vec<(Millis, u64)> = state
            .instances
            .iter()
            .filter(|i| !i.draining && i.in_flight == 0)
            .filter_map(|i| i.idle_since.map(|since| (since, i.id)))
            .collect();
        idle.sort_unstable();
        let over_max = live.saturating_sub(cfg.max_instances);
        let removable = live.saturating_sub(floor);
        // Longest idle first: the expired ones form a prefix, so the first one still within its
        // timeout (once any excess over max is gone) ends the scan.
        for (since, id) in idle {
            let expired = now.saturating_sub(since) >= cfg.idle_timeout_ms;
            if stopped >= removable || !(expired || stopped < over_max) {
                break;
            }
            actions.push(ScaleAction::Stop(id));
            stopped += 1;
        }
    }

    let live = live - stopped;
    let concurrency = cfg.slots();
    let served = state
        .free_slots(concurrency)
        .saturating_add(state.starting.saturating_mul(concurrency));
    let backlog = state.queued.saturating_sub(served).div_ceil(concurrency);
    let wanted = floor.saturating_sub(live).max(backlog);
    let n = wanted
        .min(cfg.max_instances.saturating_sub(live))
        .min(room.instances());
    if n > 0 {
        actions.push(ScaleAction::Start(n));
    }
    actions
}

/// Suggested wait before retrying a rejected invocation: the time for `capacity` concurrent slots
/// to work through `queued` waiting invocations and then this one, at `mean_duration_ms` each.
///
/// The result is rounded up to whole seconds (as `Retry-After` carries them), at least 1 s and at
/// most [`MAX_RETRY_AFTER_MS`]. No capacity counts as one slot; an unknown, negative or
/// non-finite mean counts as 0 and gives the 1 s floor.
pub fn retry_after_ms(queued: u32, capacity: u32, mean_duration_ms: f64) -> Millis {
    let mean = if mean_duration_ms.is_finite() && mean_duration_ms > 0.0 {
        mean_duration_ms
    } else {
        0.0
    };
    let rounds = (u64::from(queued) + 1).div_ceil(u64::from(capacity.max(1)));
    // Float-to-integer casts saturate, and the product is capped before rounding to seconds.
    let wait_ms = (rounds as f64 * mean).ceil().min(MAX_RETRY_AFTER_MS as f64) as Millis;
    (wait_ms.div_ceil(1000) * 1000).clamp(1000, MAX_RETRY_AFTER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    // ----- pools ------------------------------------------------------------------------------

    fn pool_cfg() -> PoolConfig {
        PoolConfig {
            min: 1,
            max: 6,
            initial: 2,
            miss_window_ms: 10_000,
            grow_step: 1,
            idle_shrink_ms: 30_000,
        }
    }

    /// Applies a pool plan the way the executor does.
    fn apply(state: &mut PoolState, actions: &[PoolAction]) {
        for action in actions {
            match *action {
                PoolAction::Start(n) => state.starting += n,
                PoolAction::Stop(n) => state.ready -= n,
            }
        }
    }

    /// Plans with unlimited memory, applies the plan, and lets every start finish.
    fn settle(cfg: &PoolConfig, state: &mut PoolState, now: Millis) -> Vec<PoolAction> {
        let actions = plan_pool(cfg, state, MemoryRoom::UNLIMITED, now);
        apply(state, &actions);
        state.ready += state.starting;
        state.starting = 0;
        actions
    }

    /// Takes an instance the way the executor does: a hit if one is ready, else a miss.
    fn take(state: &mut PoolState, now: Millis) -> bool {
        if state.ready > 0 {
            state.ready -= 1;
            state.record_hit(now);
            true
        } else {
            state.record_miss(now);
            false
        }
    }

    #[test]
    fn pool_defaults_are_valid_and_the_documented_values() {
        let cfg = PoolConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!((cfg.min, cfg.max, cfg.initial, cfg.grow_step), (1, 8, 2, 1));
        assert_eq!((cfg.miss_window_ms, cfg.idle_shrink_ms), (60_000, 120_000));
    }

    #[test]
    fn pool_config_validation_names_the_field() {
        let base = pool_cfg();
        let cases = [
            (
                PoolConfig {
                    min: 7,
                    ..base.clone()
                },
                "min",
            ),
            (
                PoolConfig {
                    initial: 0,
                    ..base.clone()
                },
                "initial",
            ),
            (
                PoolConfig {
                    initial: 9,
                    ..base.clone()
                },
                "initial",
            ),
            (
                PoolConfig {
                    grow_step: 0,
                    ..base.clone()
                },
                "grow_step",
            ),
            (
                PoolConfig {
                    miss_window_ms: 0,
                    ..base.clone()
                },
                "miss_window_ms",
            ),
            (
                PoolConfig {
                    idle_shrink_ms: 0,
                    ..base
                },
                "idle_shrink_ms",
            ),
        ];
        for (cfg, field) in cases {
            match cfg.validate() {
                Err(e) => {
                    assert_eq!(e.field, field);
                    assert!(e.to_string().starts_with(&format!("invalid `{field}`: ")));
                }
                Ok(()) => panic!("{cfg:?}: expected an error on {field}"),
            }
        }
    }

    #[test]
    fn new_pool_starts_initial_instances() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        assert_eq!(
            plan_pool(&cfg, &mut s, MemoryRoom::UNLIMITED, 0),
            [PoolAction::Start(2)]
        );
        assert_eq!(s.target(), 2);
    }

    #[test]
    fn quiet_period_of_a_new_pool_begins_at_its_first_plan() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        // Created long after the clock's origin: not shrunk on sight.
        assert_eq!(settle(&cfg, &mut s, 1_000_000), [PoolAction::Start(2)]);
        assert_eq!(settle(&cfg, &mut s, 1_029_999), []);
        assert_eq!(settle(&cfg, &mut s, 1_030_000), [PoolAction::Stop(1)]);
        assert_eq!(s.target(), 1);
    }

    #[test]
    fn starting_instances_count_so_the_pool_never_over_starts() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        let first = plan_pool(&cfg, &mut s, MemoryRoom::UNLIMITED, 0);
        assert_eq!(first, [PoolAction::Start(2)]);
        apply(&mut s, &first);
        // Starts are slow: later plans must not start them again.
        for now in [100, 200, 300] {
            assert_eq!(plan_pool(&cfg, &mut s, MemoryRoom::UNLIMITED, now), []);
        }
        (s.starting, s.ready) = (1, 1); // one start finished
        assert_eq!(plan_pool(&cfg, &mut s, MemoryRoom::UNLIMITED, 400), []);
        s.starting = 0; // the other failed: replace it
        assert_eq!(
            plan_pool(&cfg, &mut s, MemoryRoom::UNLIMITED, 500),
            [PoolAction::Start(1)]
        );
    }

    #[test]
    fn a_hit_is_refilled_without_growing_the_pool() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        settle(&cfg, &mut s, 0);
        assert!(take(&mut s, 1_000));
        assert_eq!(settle(&cfg, &mut s, 1_001), [PoolAction::Start(1)]);
        assert_eq!((s.target(), s.ready), (2, 2));
    }

    #[test]
    fn burst_of_misses_grows_the_pool_then_it_shrinks_back_to_min_when_idle() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        settle(&cfg, &mut s, 0);
        // A burst of five takes: two hits, three misses.
        let hits = (0..5).filter(|i| take(&mut s, 5_000 + i)).count();
        assert_eq!((hits, s.pending_misses()), (2, 3));
        assert_eq!(settle(&cfg, &mut s, 6_000), [PoolAction::Start(5)]);
        assert_eq!((s.target(), s.ready), (5, 5));
        // Misses are consumed: the next plan does not grow again.
        assert_eq!(settle(&cfg, &mut s, 7_000), []);
        assert_eq!(s.target(), 5);

        // Quiet from 6 s (the resize): one step per 30 s, down to min and no further.
        let script = [
            (35_999, 5, vec![]),
            (36_000, 4, vec![PoolAction::Stop(1)]),
            (50_000, 4, vec![]),
            (66_000, 3, vec![PoolAction::Stop(1)]),
            (96_000, 2, vec![PoolAction::Stop(1)]),
            (126_000, 1, vec![PoolAction::Stop(1)]),
            (156_000, 1, vec![]),
            (999_000, 1, vec![]),
        ];
        for (now, target, actions) in script {
            assert_eq!(settle(&cfg, &mut s, now), actions, "at {now}");
            assert_eq!((s.target(), s.ready), (target, target), "at {now}");
        }
    }

    #[test]
    fn a_take_restarts_the_quiet_period() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        settle(&cfg, &mut s, 0);
        assert!(take(&mut s, 20_000));
        settle(&cfg, &mut s, 20_000);
        assert_eq!(
            settle(&cfg, &mut s, 30_000),
            [],
            "30 s after creation, 10 s after a take"
        );
        assert_eq!(s.target(), 2);
        assert_eq!(settle(&cfg, &mut s, 50_000), [PoolAction::Stop(1)]);
        assert_eq!((s.target(), s.last_take_ms()), (1, Some(20_000)));
    }

    #[test]
    fn growth_is_proportional_to_misses_and_capped_at_max() {
        let cases = [
            // (grow_step, misses, expected target) from a target of 2, max 6
            (1, 1, 3),
            (1, 3, 5),
            (2, 1, 4),
            (2, 2, 6),
            (1, 50, 6),
            (3, 1_000_000, 6),
        ];
        for (grow_step, misses, target) in cases {
            let cfg = PoolConfig {
                grow_step,
                ..pool_cfg()
            };
            let mut s = PoolState::new(&cfg);
            for _ in 0..misses {
                s.record_miss(1_000);
            }
            settle(&cfg, &mut s, 2_000);
            assert_eq!(s.target(), target, "step {grow_step}, {misses} misses");
            assert_eq!((s.ready, s.pending_misses()), (target, 0));
        }
    }

    #[test]
    fn misses_older_than_the_window_do_not_grow_the_pool() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        s.record_miss(1_000);
        s.record_miss(5_000);
        settle(&cfg, &mut s, 12_000); // the window is 10 s: only the miss at 5 s counts
        assert_eq!(s.target(), 3);
    }

    #[test]
    fn shrinking_stops_only_ready_instances() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        s.record_miss(0);
        s.record_miss(0);
        assert_eq!(
            plan_pool(&cfg, &mut s, MemoryRoom::UNLIMITED, 0),
            [PoolAction::Start(4)]
        );
        (s.ready, s.starting) = (1, 3);
        // The target drops to 3 while three are still starting: only the ready one can go.
        assert_eq!(
            plan_pool(&cfg, &mut s, MemoryRoom::UNLIMITED, 30_000),
            [PoolAction::Stop(1)]
        );
        assert_eq!(s.target(), 3);
    }

    #[test]
    fn pool_starts_are_capped_by_the_memory_budget() {
        let cfg = pool_cfg();
        let mut s = PoolState::new(&cfg);
        let room = MemoryRoom {
            instance_bytes: 256 * MIB,
            node_free_bytes: 300 * MIB,
        };
        let first = plan_pool(&cfg, &mut s, room, 0);
        assert_eq!(first, [PoolAction::Start(1)]);
        apply(&mut s, &first);
        let none = MemoryRoom {
            node_free_bytes: 0,
            ..room
        };
        assert_eq!(plan_pool(&cfg, &mut s, none, 1), []);
        assert_eq!(plan_pool(&cfg, &mut s, room, 2), [PoolAction::Start(1)]);
    }

    #[test]
    fn an_unvalidated_pool_config_still_keeps_within_max() {
        let cfg = PoolConfig {
            min: 5,
            max: 3,
            initial: 9,
            ..pool_cfg()
        };
        let mut s = PoolState::new(&cfg);
        assert_eq!(s.target(), 3);
        s.record_miss(0);
        assert_eq!(settle(&cfg, &mut s, 0), [PoolAction::Start(3)]);
        assert_eq!(s.target(), 3);
    }

    #[test]
    fn pending_misses_are_bounded() {
        let mut s = PoolState::new(&pool_cfg());
        for t in 0..(MAX_PENDING_MISSES as u64 + 10) {
            s.record_miss(t);
        }
        assert_eq!(s.pending_misses(), MAX_PENDING_MISSES);
    }

    // ----- function instances -----------------------------------------------------------------

    fn scale_cfg() -> ScaleConfig {
        ScaleConfig {
            min_instances: 0,
            max_instances: 3,
            concurrency: 2,
            idle_timeout_ms: 60_000,
            max_queue: 4,
        }
    }

    fn busy(id: u64, in_flight: u32) -> InstanceView {
        InstanceView {
            id,
            in_flight,
            idle_since: None,
            draining: false,
        }
    }

    fn idle(id: u64, since: Millis) -> InstanceView {
        InstanceView {
            id,
            in_flight: 0,
            idle_since: Some(since),
            draining: false,
        }
    }

    fn draining(id: u64, in_flight: u32) -> InstanceView {
        InstanceView {
            id,
            in_flight,
            idle_since: (in_flight == 0).then_some(0),
            draining: true,
        }
    }

    fn fn_state(instances: Vec<InstanceView>, starting: u32, queued: u32) -> FnState {
        FnState {
            instances,
            starting,
            queued,
            mean_duration_ms: 500.0,
        }
    }

    /// Room for exactly `n` more 128 MiB instances.
    fn room(n: u64) -> MemoryRoom {
        MemoryRoom {
            instance_bytes: 128 * MIB,
            node_free_bytes: n * 128 * MIB + 1,
        }
    }

    #[test]
    fn scale_defaults_are_valid_and_the_documented_values() {
        let cfg = ScaleConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(
            (cfg.min_instances, cfg.max_instances, cfg.concurrency),
            (0, 10, 1)
        );
        assert_eq!((cfg.idle_timeout_ms, cfg.max_queue), (300_000, 100));
    }

    #[test]
    fn scale_config_validation_names_the_field() {
        let base = scale_cfg();
        let cases = [
            (
                ScaleConfig {
                    max_instances: 0,
                    ..base.clone()
                },
                "max_instances",
            ),
            (
                ScaleConfig {
                    min_instances: 4,
                    ..base.clone()
                },
                "min_instances",
            ),
            (
                ScaleConfig {
                    concurrency: 0,
                    ..base
                },
                "concurrency",
            ),
        ];
        for (cfg, field) in cases {
            match cfg.validate() {
                Err(e) => assert_eq!(e.field, field),
                Ok(()) => panic!("{cfg:?}: expected an error on {field}"),
            }
        }
    }

    #[test]
    fn memory_room_counts_whole_instances() {
        let cases = [
            (MemoryRoom::UNLIMITED, u32::MAX),
            (room(0), 0),
            (room(3), 3),
            (
                MemoryRoom {
                    instance_bytes: 0,
                    node_free_bytes: 0,
                },
                u32::MAX,
            ),
            (
                MemoryRoom {
                    instance_bytes: 1,
                    node_free_bytes: u64::MAX,
                },
                u32::MAX,
            ),
        ];
        for (room, n) in cases {
            assert_eq!(room.instances(), n, "{room:?}");
        }
    }

    #[test]
    fn admission_table() {
        use Admission::*;
        use RejectReason::*;
        let cfg = scale_cfg(); // max 3 instances, concurrency 2, queue 4
        let no_queue = ScaleConfig {
            max_queue: 0,
            ..cfg.clone()
        };
        let full = vec![busy(1, 2), busy(2, 2), busy(3, 2)];
        let cases: Vec<(&str, &ScaleConfig, FnState, MemoryRoom, Admission)> = vec![
            (
                "least-loaded instance wins",
                &cfg,
                fn_state(vec![busy(1, 1), idle(2, 10), busy(3, 1)], 0, 0),
                room(9),
                Dispatch { instance: 2 },
            ),
            (
                "among idle instances, the most recently used wins",
                &cfg,
                fn_state(vec![idle(1, 10), idle(2, 30), idle(3, 20)], 0, 0),
                room(9),
                Dispatch { instance: 2 },
            ),
            (
                "equal load: lowest id",
                &cfg,
                fn_state(vec![busy(7, 1), busy(4, 1)], 0, 0),
                room(9),
                Dispatch { instance: 4 },
            ),
            (
                "a partly busy instance takes more up to its concurrency",
                &cfg,
                fn_state(vec![busy(1, 2), busy(2, 1)], 0, 0),
                room(9),
                Dispatch { instance: 2 },
            ),
            (
                "a draining instance takes no new work; a starting one will",
                &cfg,
                fn_state(vec![draining(1, 0)], 1, 0),
                room(9),
                Queue,
            ),
            (
                "a free slot serves a new invocation even while others wait",
                &cfg,
                fn_state(vec![busy(1, 1)], 0, 3),
                room(0),
                Dispatch { instance: 1 },
            ),
            (
                "no instance at all: start one",
                &cfg,
                fn_state(vec![], 0, 0),
                room(1),
                StartAndQueue,
            ),
            (
                "all busy, under max: start one",
                &cfg,
                fn_state(vec![busy(1, 2)], 0, 0),
                room(1),
                StartAndQueue,
            ),
            (
                "a starting instance has a slot left: wait for it, start nothing",
                &cfg,
                fn_state(vec![busy(1, 2)], 1, 1),
                room(9),
                Queue,
            ),
            (
                "starting slots taken: start another",
                &cfg,
                fn_state(vec![busy(1, 2)], 1, 2),
                room(9),
                StartAndQueue,
            ),
            (
                "draining instances do not count against max",
                &cfg,
                fn_state(vec![busy(1, 2), busy(2, 2), draining(3, 2)], 0, 0),
                room(1),
                StartAndQueue,
            ),
            (
                "starting instances count against max",
                &cfg,
                fn_state(vec![busy(1, 2)], 2, 4),
                room(9),
                Queue,
            ),
            (
                "at max: queue while there is room",
                &cfg,
                fn_state(full.clone(), 0, 3),
                room(9),
                Queue,
            ),
            (
                "no memory: queue while there is room",
                &cfg,
                fn_state(vec![busy(1, 2)], 0, 0),
                room(0),
                Queue,
            ),
            (
                "at max, queue full",
                &cfg,
                fn_state(full.clone(), 0, 4),
                room(9),
                Reject {
                    retry_after_ms: 1_000,
                    reason: QueueFull,
                },
            ),
            (
                "at max with starts on the way, queue full beyond them",
                &cfg,
                fn_state(vec![busy(1, 2)], 2, 8),
                room(9),
                Reject {
                    retry_after_ms: 1_000,
                    reason: QueueFull,
                },
            ),
            (
                "at max, no queue configured",
                &no_queue,
                fn_state(full.clone(), 0, 0),
                room(9),
                Reject {
                    retry_after_ms: 1_000,
                    reason: MaxInstances,
                },
            ),
            (
                "under max but no memory, queue full",
                &cfg,
                fn_state(vec![busy(1, 2)], 0, 4),
                room(0),
                Reject {
                    retry_after_ms: 2_000,
                    reason: MemoryBudget,
                },
            ),
            (
                "nothing running and no memory: retry after the floor",
                &no_queue,
                fn_state(vec![], 0, 0),
                room(0),
                Reject {
                    retry_after_ms: 1_000,
                    reason: MemoryBudget,
                },
            ),
        ];
        for (name, cfg, state, room, expected) in cases {
            assert_eq!(admit(cfg, &state, room), expected, "{name}");
        }
    }

    #[test]
    fn retry_after_of_a_rejection_grows_with_the_queue() {
        let cfg = ScaleConfig {
            max_queue: 40,
            ..scale_cfg()
        };
        let mut state = fn_state(vec![busy(1, 2), busy(2, 2), busy(3, 2)], 0, 40);
        state.mean_duration_ms = 900.0;
        // 41 invocations ahead of a retry on 6 slots: 7 rounds of 900 ms = 6.3 s → 7 s.
        assert_eq!(
            admit(&cfg, &state, room(9)),
            Admission::Reject {
                retry_after_ms: 7_000,
                reason: RejectReason::QueueFull
            }
        );
    }

    #[test]
    fn retry_after_table() {
        let cases = [
            // (queued, capacity, mean ms, expected ms)
            (0, 1, 0.0, 1_000),
            (0, 1, 10.0, 1_000),
            (0, 1, 1_000.0, 1_000),
            (0, 1, 1_001.0, 2_000),
            (9, 1, 250.0, 3_000),
            (9, 10, 250.0, 1_000),
            (10, 10, 900.0, 2_000),
            (5, 0, 400.0, 3_000),
            (1_000, 1, 1_000.0, MAX_RETRY_AFTER_MS),
            (u32::MAX, 1, 1e300, MAX_RETRY_AFTER_MS),
            (3, 1, f64::NAN, 1_000),
            (3, 1, f64::INFINITY, 1_000),
            (3, 1, -5.0, 1_000),
        ];
        for (queued, capacity, mean, expected) in cases {
            let got = retry_after_ms(queued, capacity, mean);
            assert_eq!(
                got, expected,
                "queued {queued}, capacity {capacity}, mean {mean}"
            );
            assert_eq!(got % 1_000, 0, "whole seconds");
        }
    }

    #[test]
    fn scale_plan_table() {
        use ScaleAction::*;
        let cfg = scale_cfg(); // idle timeout 60 s, max 3, concurrency 2
        let with_min = |min_instances| ScaleConfig {
            min_instances,
            ..scale_cfg()
        };
        let now = 100_000;
        let cases: Vec<(&str, ScaleConfig, FnState, MemoryRoom, Vec<ScaleAction>)> = vec![
            (
                "nothing to do",
                cfg.clone(),
                fn_state(vec![busy(1, 1), idle(2, 90_000)], 0, 0),
                room(9),
                vec![],
            ),
            (
                "idle instances stop longest-idle first",
                cfg.clone(),
                fn_state(
                    vec![idle(1, 30_000), idle(2, 10_000), idle(3, 41_000)],
                    0,
                    0,
                ),
                room(9),
                vec![Stop(2), Stop(1)],
            ),
            (
                "exactly at the timeout counts as expired",
                cfg.clone(),
                fn_state(vec![idle(1, 40_000)], 0, 0),
                room(9),
                vec![Stop(1)],
            ),
            (
                "min_instances are kept: the most recently idle stays",
                with_min(1),
                fn_state(vec![idle(1, 0), idle(2, 10_000)], 0, 0),
                room(9),
                vec![Stop(1)],
            ),
            (
                "a busy instance counts toward min_instances",
                with_min(1),
                fn_state(vec![busy(1, 1), idle(2, 0)], 0, 0),
                room(9),
                vec![Stop(2)],
            ),
            (
                "a starting instance counts toward min_instances",
                with_min(1),
                fn_state(vec![idle(2, 0)], 1, 0),
                room(9),
                vec![Stop(2)],
            ),
            (
                "an idle instance without idle_since is never stopped for idleness",
                cfg.clone(),
                fn_state(vec![busy(1, 0)], 0, 0),
                room(9),
                vec![],
            ),
            (
                "start up to min_instances",
                with_min(3),
                fn_state(vec![busy(1, 1)], 0, 0),
                room(9),
                vec![Start(2)],
            ),
            (
                "instances already starting are not started again",
                with_min(3),
                fn_state(vec![], 2, 0),
                room(9),
                vec![Start(1)],
            ),
            (
                "starts for min_instances wait for memory",
                with_min(3),
                fn_state(vec![], 0, 0),
                room(1),
                vec![Start(1)],
            ),
            (
                "draining instances stop only when empty",
                cfg.clone(),
                fn_state(vec![draining(1, 1), draining(2, 0), busy(3, 1)], 0, 0),
                room(9),
                vec![Stop(2)],
            ),
            (
                "a draining instance does not hold up min_instances",
                with_min(1),
                fn_state(vec![draining(1, 0)], 0, 0),
                room(9),
                vec![Stop(1), Start(1)],
            ),
            (
                "nothing idle stops while invocations wait",
                cfg.clone(),
                fn_state(vec![idle(1, 0)], 1, 1),
                room(9),
                vec![],
            ),
            (
                "queued invocations nobody will serve get instances",
                cfg.clone(),
                fn_state(vec![busy(1, 2)], 0, 3),
                room(9),
                vec![Start(2)],
            ),
            (
                "backlog already covered by a starting instance",
                cfg.clone(),
                fn_state(vec![busy(1, 2)], 1, 2),
                room(9),
                vec![],
            ),
            (
                "backlog starts stay under max_instances",
                cfg.clone(),
                fn_state(vec![busy(1, 2), busy(2, 2)], 0, 4),
                room(9),
                vec![Start(1)],
            ),
            (
                "max lowered: idle instances over it stop at once",
                ScaleConfig {
                    max_instances: 1,
                    ..cfg.clone()
                },
                fn_state(vec![idle(1, 99_000), busy(2, 1), idle(3, 95_000)], 0, 0),
                room(9),
                vec![Stop(3), Stop(1)],
            ),
        ];
        for (name, cfg, state, room, expected) in cases {
            assert_eq!(plan_scale(&cfg, &state, room, now), expected, "{name}");
        }
    }

    #[test]
    fn plans_serialize_as_data() {
        fn json(plan: &impl Serialize) -> String {
            serde_json::to_string(plan).expect("plans serialize")
        }
        assert_eq!(json(&PoolAction::Start(2)), r#"{"start":2}"#);
        assert_eq!(json(&ScaleAction::Stop(7)), r#"{"stop":7}"#);
        assert_eq!(
            json(&Admission::Reject {
                retry_after_ms: 1_000,
                reason: RejectReason::QueueFull
            }),
            r#"{"reject":{"retry_after_ms":1000,"reason":"queue_full"}}"#
        );
        let cfg: PoolConfig = serde_json::from_str(r#"{"max": 4}"#).expect("partial config");
        assert_eq!(
            cfg,
            PoolConfig {
                max: 4,
                ..PoolConfig::default()
            }
        );
        assert!(serde_json::from_str::<ScaleConfig>(r#"{"maxx": 4}"#).is_err());
    }

    // ----- properties -------------------------------------------------------------------------

    /// A small deterministic pseudo-random sequence (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// A number in `0..n`.
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn below32(&mut self, n: u32) -> u32 {
            // Less than `n`, so it fits.
            self.below(u64::from(n)) as u32
        }
    }

    #[test]
    fn pool_invariants_hold_under_random_events() {
        for seed in 0..200 {
            let mut rng = Rng(seed);
            let min = rng.below32(3);
            let max = min + rng.below32(6);
            let cfg = PoolConfig {
                min,
                max,
                initial: min + rng.below32(max - min + 1),
                miss_window_ms: 1 + rng.below(20_000),
                grow_step: 1 + rng.below32(3),
                idle_shrink_ms: 1 + rng.below(30_000),
            };
            assert_eq!(cfg.validate(), Ok(()));
            let mut now = 0;
            let mut s = PoolState::new(&cfg);
            for step in 0..2_000 {
                now += rng.below(3_000);
                match rng.below(10) {
                    0..=2 => {
                        let had = s.ready;
                        assert_eq!(take(&mut s, now), had > 0);
                    }
                    3..=4 if s.starting > 0 => {
                        s.starting -= 1;
                        s.ready += 1;
                    }
                    5 if s.starting > 0 => s.starting -= 1, // a start failed
                    6 if s.ready > 0 => s.ready -= 1,       // a ready instance died
                    _ => {
                        let free = rng.below(4);
                        let room = MemoryRoom {
                            instance_bytes: 1,
                            node_free_bytes: free,
                        };
                        let before = s.ready + s.starting;
                        let actions = plan_pool(&cfg, &mut s, room, now);
                        apply(&mut s, &actions);
                        let after = s.ready + s.starting;
                        let ctx = format!("seed {seed} step {step}: {cfg:?} {s:?} {actions:?}");
                        assert!(min <= s.target() && s.target() <= max, "{ctx}");
                        assert!(after <= max, "over max: {ctx}");
                        match actions.as_slice() {
                            [PoolAction::Start(n)] => {
                                assert!(*n > 0 && u64::from(*n) <= free, "{ctx}");
                                assert_eq!(after, before + n, "{ctx}");
                                assert!(after <= s.target(), "over-started: {ctx}");
                            }
                            [PoolAction::Stop(n)] => {
                                assert!(*n > 0, "{ctx}");
                                assert!(after >= s.target(), "over-stopped: {ctx}");
                            }
                            [] => assert!(
                                after == s.target()
                                    || (after < s.target() && free == 0)
                                    || (after > s.target() && s.ready == 0),
                                "idle plan off target: {ctx}"
                            ),
                            _ => panic!("more than one action: {ctx}"),
                        }
                    }
                }
            }
        }
    }

    /// A function's instances driven by random arrivals, completions, starts, drains and plans,
    /// applying every decision the way the executor does.
    struct Sim {
        cfg: ScaleConfig,
        state: FnState,
        budget_instances: u32,
        next_id: u64,
        now: Millis,
    }

    impl Sim {
        fn room(&self) -> MemoryRoom {
            let used = self.state.instances.len() as u64 + u64::from(self.state.starting);
            MemoryRoom {
                instance_bytes: 64 * MIB,
                node_free_bytes: u64::from(self.budget_instances).saturating_sub(used) * 64 * MIB,
            }
        }

        /// Hands queued invocations to free instances, as the executor does.
        fn drain_queue(&mut self) {
            while self.state.queued > 0 {
                let Some(id) = pick_instance(&self.cfg, &self.state) else {
                    break;
                };
                self.dispatch(id);
                self.state.queued -= 1;
            }
        }

        fn dispatch(&mut self, id: u64) {
            let concurrency = self.cfg.concurrency;
            let i = self
                .state
                .instances
                .iter_mut()
                .find(|i| i.id == id)
                .expect("dispatch to a known instance");
            assert!(!i.draining, "dispatch to a draining instance: {i:?}");
            i.in_flight += 1;
            i.idle_since = None;
            assert!(i.in_flight <= concurrency, "over concurrency: {i:?}");
        }

        fn finish_start(&mut self, ok: bool) {
            self.state.starting -= 1;
            if ok {
                self.next_id += 1;
                self.state.instances.push(InstanceView {
                    id: self.next_id,
                    in_flight: 0,
                    idle_since: Some(self.now),
                    draining: false,
                });
                self.drain_queue();
            }
        }

        fn plan(&mut self) {
            for action in plan_scale(&self.cfg, &self.state, self.room(), self.now) {
                match action {
                    ScaleAction::Stop(id) => {
                        let pos = self
                            .state
                            .instances
                            .iter()
                            .position(|i| i.id == id)
                            .expect("stop a known instance");
                        let i = self.state.instances.remove(pos);
                        assert_eq!(i.in_flight, 0, "stopped with work in flight: {i:?}");
                    }
                    ScaleAction::Start(n) => self.state.starting += n,
                }
            }
        }

        fn check(&self, ctx: &str) {
            for i in &self.state.instances {
                assert!(i.in_flight <= self.cfg.concurrency, "{ctx}: {i:?}");
            }
            assert!(
                self.state.live() <= self.cfg.max_instances,
                "{ctx}: over max"
            );
            let total = self.state.instances.len() as u64 + u64::from(self.state.starting);
            assert!(
                total <= u64::from(self.budget_instances),
                "{ctx}: over memory budget"
            );
        }
    }

    #[test]
    fn admission_and_scaling_invariants_hold_under_random_events() {
        let mut seen = [0u32; 6];
        for seed in 0..200 {
            let mut rng = Rng(seed ^ 0x5EED);
            let max = 1 + rng.below32(5);
            let cfg = ScaleConfig {
                min_instances: rng.below32(max + 1),
                max_instances: max,
                concurrency: 1 + rng.below32(4),
                idle_timeout_ms: rng.below(10_000),
                max_queue: rng.below32(6),
            };
            assert_eq!(cfg.validate(), Ok(()));
            let mut sim = Sim {
                cfg: cfg.clone(),
                state: FnState {
                    mean_duration_ms: rng.below(3_000) as f64,
                    ..FnState::default()
                },
                // At least one instance fits; sometimes fewer than max, sometimes max plus some.
                budget_instances: 1 + rng.below32(max + 2),
                next_id: 0,
                now: 0,
            };
            for step in 0..3_000 {
                sim.now += rng.below(500);
                let ctx = format!("seed {seed} step {step}: {cfg:?} {:?}", sim.state);
                match rng.below(20) {
                    0..=7 => match admit(&cfg, &sim.state, sim.room()) {
                        Admission::Dispatch { instance } => {
                            seen[0] += 1;
                            sim.dispatch(instance);
                        }
                        Admission::StartAndQueue => {
                            seen[1] += 1;
                            assert!(sim.state.live() < cfg.max_instances, "{ctx}");
                            assert!(sim.room().instances() > 0, "{ctx}");
                            sim.state.starting += 1;
                            sim.state.queued += 1;
                        }
                        Admission::Queue => {
                            seen[2] += 1;
                            let slots = sim.state.starting * cfg.concurrency;
                            assert!(sim.state.queued < slots + cfg.max_queue, "{ctx}");
                            sim.state.queued += 1;
                        }
                        Admission::Reject {
                            retry_after_ms,
                            reason,
                        } => {
                            seen[3 + reason as usize] += 1;
                            assert!(pick_instance(&cfg, &sim.state).is_none(), "{ctx}");
                            let slots = sim.state.starting * cfg.concurrency;
                            assert!(sim.state.queued >= slots + cfg.max_queue, "{ctx}");
                            assert!((1_000..=MAX_RETRY_AFTER_MS).contains(&retry_after_ms));
                            let at_max = sim.state.live() >= cfg.max_instances;
                            assert_eq!(at_max, reason != RejectReason::MemoryBudget, "{ctx}");
                            assert_eq!(
                                reason == RejectReason::MaxInstances,
                                at_max && cfg.max_queue == 0
                            );
                        }
                    },
                    8..=12 => {
                        let busy: Vec<usize> = (0..sim.state.instances.len())
                            .filter(|&k| sim.state.instances[k].in_flight > 0)
                            .collect();
                        if !busy.is_empty() {
                            let k = busy[rng.below(busy.len() as u64) as usize];
                            let i = &mut sim.state.instances[k];
                            i.in_flight -= 1;
                            if i.in_flight == 0 {
                                i.idle_since = Some(sim.now);
                            }
                            sim.drain_queue();
                        }
                    }
                    13..=15 if sim.state.starting > 0 => sim.finish_start(rng.below(8) != 0),
                    16 => {
                        if let Some(i) = sim.state.instances.iter_mut().find(|i| !i.draining) {
                            i.draining = true;
                        }
                    }
                    _ => sim.plan(),
                }
                sim.check(&ctx);
            }

            // Liveness: with work finishing and starts succeeding, plans empty the queue.
            for round in 0..100 {
                if sim.state.queued == 0 {
                    break;
                }
                for i in &mut sim.state.instances {
                    i.in_flight = 0;
                    i.idle_since = Some(sim.now);
                }
                while sim.state.starting > 0 {
                    sim.finish_start(true);
                }
                sim.drain_queue();
                sim.plan();
                sim.check(&format!("seed {seed} settle round {round}"));
            }
            assert_eq!(
                sim.state.queued, 0,
                "seed {seed}: queue stranded: {:?}",
                sim.state
            );
        }
        // Every outcome was exercised, so the assertions above were reached.
        assert!(seen.iter().all(|&n| n > 0), "outcomes seen: {seen:?}");
    }
}
