//! The invocation state machine shared by the host link, the Runtime API handlers and the log
//! pumps, plus the per-worker log budget.
//!
//! An instance runs up to `capacity` invocations at once (one per worker process):
//!
//! ```text
//! --invoke--> Queued --GET /next of worker W--> Running on W --response/error--> finished
//!             Queued, Running --timeout--> finished
//! ```
//!
//! An `Invoke` is refused when the queued and running invocations already fill every worker.
//! Finished ids are remembered (a few) so that a second reply is told apart from an unknown id.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// How many finished invocation ids are remembered for "already answered" checks.
const REMEMBERED: usize = 16;

/// One invocation, as handed to the runtime by `GET /next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub id: String,
    pub deadline_ms: u64,
    pub function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub event: Vec<u8>,
}

/// What a posted reply (response or error) for an id means in the current state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The id is a running invocation: it is now finished.
    Accepted,
    /// The id was never handed out (or was forgotten long ago).
    UnknownId,
    /// The id already got its reply (or timed out).
    AlreadyFinished,
}

/// What to do with one line of output.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogAdmit {
    /// Send it, tagged with this invocation.
    Send(Option<String>),
    /// The budget just ran out: send the truncation marker instead, then drop lines.
    Truncate(Option<String>),
    /// Over budget: drop it.
    Drop,
}

/// An `Invoke` arrived while every worker had an invocation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy {
    /// The invocations in progress (queued or running), oldest first.
    pub in_progress: Vec<String>,
}

/// Per-worker state: what its output is attributed to.
#[derive(Debug, Default)]
struct Worker {
    /// The worker has called `GET /next` at least once (its initialization is over).
    ready: bool,
    /// The invocation output is attributed to: the one last handed to this worker. Output
    /// written after a reply (a runtime's closing log lines) still belongs to it; and since a pipe
    /// is read a little after it is written, switching any earlier would misattribute lines.
    log_id: Option<String>,
    log_used: u64,
    log_truncated: bool,
}

#[derive(Debug)]
struct Inner {
    queued: VecDeque<Invocation>,
    /// Running invocations: (id, worker).
    running: Vec<(String, usize)>,
    capacity: usize,
    workers: Vec<Worker>,
    finished: VecDeque<String>,
    /// Some worker has called `GET /next` (`Ready` was sent).
    ready: bool,
    init_error_reported: bool,
}

impl Inner {
    fn worker(&mut self, worker: usize) -> &mut Worker {
        if self.workers.len() <= worker {
            self.workers.resize_with(worker + 1, Worker::default);
        }
        &mut self.workers[worker]
    }
}

/// Shared invocation state; see the module docs.
#[derive(Debug)]
pub(crate) struct Invocations {
    inner: Mutex<Inner>,
    queued: Condvar,
    log_limit: u64,
}

impl Invocations {
    /// State for `capacity` concurrent invocations (at least one).
    pub(crate) fn new(log_limit: u64, capacity: usize) -> Self {
        Invocations {
            inner: Mutex::new(Inner {
                queued: VecDeque::new(),
                running: Vec::new(),
                capacity: capacity.max(1),
                workers: Vec::new(),
                finished: VecDeque::new(),
                ready: false,
                init_error_reported: false,
            }),
            queued: Condvar::new(),
            log_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave `Inner` inconsistent (no transition can panic halfway),
        // so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many invocations may be in progress at once (the number of workers).
    pub(crate) fn set_capacity(&self, capacity: usize) {
        self.lock().capacity = capacity.max(1);
    }

    /// Queues an invocation, unless every worker already has one.
    pub(crate) fn invoke(&self, invocation: Invocation) -> Result<(), Busy> {
        let mut inner = self.lock();
        if inner.queued.len() + inner.running.len() >= inner.capacity {
            let in_progress = inner
                .running
                .iter()
                .map(|(id, _)| id.clone())
                .chain(inner.queued.iter().map(|i| i.id.clone()))
                .collect();
            return Err(Busy { in_progress });
        }
        inner.queued.push_back(invocation);
        self.queued.notify_all();
        Ok(())
    }

    /// Called when `worker` asks for the next invocation. Returns true the first time any
    /// worker does (initialization is over).
    pub(crate) fn begin_next(&self, worker: usize) -> bool {
        let mut inner = self.lock();
        inner.worker(worker).ready = true;
        !std::mem::replace(&mut inner.ready, true)
    }

    /// Blocks until an invocation is queued, then hands it to `worker` (Queued → Running). The
    /// worker's log budget starts over.
    pub(crate) fn wait_next(&self, worker: usize) -> Invocation {
        let mut inner = self.lock();
        loop {
            if let Some(invocation) = inner.queued.pop_front() {
                inner.running.push((invocation.id.clone(), worker));
                let w = inner.worker(worker);
                w.log_id = Some(invocation.id.clone());
                w.log_used = 0;
                w.log_truncated = false;
                return invocation;
            }
            inner = self.queued.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Running(id) → finished, if `id` is running (on any worker: a runtime may reply on
    /// another connection).
    pub(crate) fn reply(&self, id: &str) -> Reply {
        let mut inner = self.lock();
        if let Some(at) = inner.running.iter().position(|(r, _)| r == id) {
            inner.running.remove(at);
            remember(&mut inner.finished, id);
            return Reply::Accepted;
        }
        if inner.finished.iter().any(|f| f == id) {
            Reply::AlreadyFinished
        } else {
            Reply::UnknownId
        }
    }

    /// Queued(id) | Running(id) → finished: the invocation ran out of time. False if it had
    /// already finished.
    pub(crate) fn expire(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let found = if let Some(at) = inner.running.iter().position(|(r, _)| r == id) {
            inner.running.remove(at);
            true
        } else if let Some(at) = inner.queued.iter().position(|i| i.id == id) {
            inner.queued.remove(at);
            true
        } else {
            false
        };
        if found {
            remember(&mut inner.finished, id);
        }
        found
    }

    /// Whether `id` is queued or running.
    pub(crate) fn is_in_progress(&self, id: &str) -> bool {
        let inner = self.lock();
        inner.running.iter().any(|(r, _)| r == id) || inner.queued.iter().any(|i| i.id == id)
    }

    /// The invocation `worker` is running, else the oldest one in progress (running or queued).
    pub(crate) fn in_progress(&self, worker: Option<usize>) -> Option<String> {
        let inner = self.lock();
        worker
            .and_then(|w| inner.running.iter().find(|(_, on)| *on == w))
            .or(inner.running.first())
            .map(|(id, _)| id.clone())
            .or_else(|| inner.queued.front().map(|i| i.id.clone()))
    }

    /// An init error may be reported once, and only by a worker that has not asked for an
    /// invocation yet.
    pub(crate) fn report_init_error(&self, worker: usize) -> bool {
        let mut inner = self.lock();
        if inner.worker(worker).ready || inner.init_error_reported {
            return false;
        }
        inner.init_error_reported = true;
        true
    }

    /// Charges one line of `len` bytes of `worker`'s output to its current log budget.
    pub(crate) fn admit_log(&self, worker: usize, len: usize) -> LogAdmit {
        let limit = self.log_limit;
        let mut inner = self.lock();
        let w = inner.worker(worker);
        if w.log_truncated {
            return LogAdmit::Drop;
        }
        let used = w.log_used.saturating_add(len as u64);
        if used > limit {
            w.log_truncated = true;
            return LogAdmit::Truncate(w.log_id.clone());
        }
        w.log_used = used;
        LogAdmit::Send(w.log_id.clone())
    }
}

fn remember(finished: &mut VecDeque<String>, id: &str) {
    if finished.len() == REMEMBERED {
        finished.pop_front();
    }
    finished.push_back(id.to_string());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn inv(id: &str) -> Invocation {
        Invocation {
            id: id.into(),
            deadline_ms: 1,
            function_arn: "arn".into(),
            trace_id: "t".into(),
            client_context: None,
            cognito_identity: None,
            event: b"{}".to_vec(),
        }
    }

    #[test]
    fn full_cycle_and_replies() {
        let s = Invocations::new(100, 1);
        assert!(s.begin_next(0));
        assert!(!s.begin_next(0));
        assert_eq!(s.reply("a"), Reply::UnknownId);
        s.invoke(inv("a")).unwrap();
        assert_eq!(
            s.invoke(inv("b")),
            Err(Busy {
                in_progress: vec!["a".into()]
            })
        );
        assert_eq!(s.reply("a"), Reply::UnknownId, "not handed out yet");
        assert_eq!(s.in_progress(None).as_deref(), Some("a"));
        assert_eq!(s.wait_next(0).id, "a");
        assert_eq!(s.reply("b"), Reply::UnknownId);
        assert_eq!(s.reply("a"), Reply::Accepted);
        assert_eq!(s.reply("a"), Reply::AlreadyFinished);
        assert_eq!(s.in_progress(None), None);
        assert!(!s.expire("a"));
    }

    #[test]
    fn wait_next_blocks_until_invoke() {
        let s = Arc::new(Invocations::new(100, 1));
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait_next(0).id)
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.invoke(inv("x")).unwrap();
        assert_eq!(waiter.join().unwrap(), "x");
    }

    #[test]
    fn expiry_finishes_queued_or_running() {
        let s = Invocations::new(100, 1);
        s.invoke(inv("q")).unwrap();
        assert!(s.expire("q"));
        assert_eq!(s.in_progress(None), None);
        s.invoke(inv("r")).unwrap();
        s.wait_next(0);
        assert!(!s.expire("other"));
        assert!(s.expire("r"));
        assert_eq!(
            s.reply("r"),
            Reply::AlreadyFinished,
            "late reply after a timeout"
        );
    }

    #[test]
    fn several_workers_run_invocations_side_by_side() {
        let s = Invocations::new(100, 1);
        s.set_capacity(3);
        for id in ["a", "b", "c"] {
            s.invoke(inv(id)).unwrap();
        }
        assert_eq!(
            s.invoke(inv("d")),
            Err(Busy {
                in_progress: vec!["a".into(), "b".into(), "c".into()]
            })
        );
        assert_eq!(s.wait_next(2).id, "a");
        assert_eq!(s.wait_next(0).id, "b");
        assert_eq!(s.in_progress(Some(0)).as_deref(), Some("b"));
        assert_eq!(s.in_progress(Some(1)).as_deref(), Some("a"), "the oldest");
        assert_eq!(s.admit_log(2, 1), LogAdmit::Send(Some("a".into())));
        assert_eq!(s.admit_log(0, 1), LogAdmit::Send(Some("b".into())));
        assert_eq!(s.admit_log(1, 1), LogAdmit::Send(None));
        assert_eq!(s.reply("b"), Reply::Accepted);
        s.invoke(inv("d")).unwrap();
        assert_eq!(s.wait_next(1).id, "c");
        assert_eq!(s.wait_next(0).id, "d");
        assert!(s.expire("c"));
        assert_eq!(s.in_progress(Some(1)).as_deref(), Some("a"));
        assert!(s.is_in_progress("d") && s.is_in_progress("a"));
        assert!(!s.is_in_progress("b") && !s.is_in_progress("c"));
    }

    #[test]
    fn init_error_only_before_ready_and_once() {
        let s = Invocations::new(100, 1);
        assert!(s.report_init_error(0));
        assert!(!s.report_init_error(0));
        let s = Invocations::new(100, 1);
        s.begin_next(0);
        assert!(!s.report_init_error(0));
        assert!(s.report_init_error(1), "worker 1 is still initializing");
    }

    #[test]
    fn log_budget_truncates_once_and_resets_per_invocation() {
        let s = Invocations::new(10, 1);
        assert_eq!(s.admit_log(0, 6), LogAdmit::Send(None));
        assert_eq!(s.admit_log(0, 4), LogAdmit::Send(None));
        assert_eq!(s.admit_log(0, 1), LogAdmit::Truncate(None));
        assert_eq!(s.admit_log(0, 0), LogAdmit::Drop);
        assert_eq!(
            s.admit_log(1, 10),
            LogAdmit::Send(None),
            "budgets are per worker"
        );
        s.begin_next(0);
        s.invoke(inv("a")).unwrap();
        s.wait_next(0);
        assert_eq!(s.admit_log(0, 10), LogAdmit::Send(Some("a".into())));
        assert_eq!(s.admit_log(0, 1), LogAdmit::Truncate(Some("a".into())));
        s.reply("a");
        s.begin_next(0);
        assert_eq!(
            s.admit_log(0, 1),
            LogAdmit::Drop,
            "a's budget until the next invocation"
        );
        s.invoke(inv("b")).unwrap();
        s.wait_next(0);
        assert_eq!(s.admit_log(0, 1), LogAdmit::Send(Some("b".into())));
        s.reply("b");
        s.begin_next(0);
        assert_eq!(
            s.admit_log(0, 1),
            LogAdmit::Send(Some("b".into())),
            "trailing output is b's"
        );
    }
}
