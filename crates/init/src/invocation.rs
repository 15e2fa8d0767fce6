//! The invocation state machine shared by the host link, the Runtime API handlers and the log
//! pumps, plus the per-invocation log budget.
//!
//! One invocation at a time:
//!
//! ```text
//! Idle --invoke--> Queued --GET /next--> Running --response/error--> Idle
//!                  Queued, Running --timeout--> Idle
//! ```
//!
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

#[derive(Debug)]
enum Phase {
    Idle,
    Queued(Invocation),
    Running(String),
}

/// What a posted reply (response or error) for an id means in the current state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The id is the running invocation: it is now finished.
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

/// An `Invoke` arrived while another invocation was in progress.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy {
    pub running: String,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    finished: VecDeque<String>,
    /// `GET /next` has been called at least once (initialization is over).
    ready: bool,
    init_error_reported: bool,
    /// The invocation output is attributed to: the one last handed to the runtime. Output
    /// written after a reply (a runtime's closing log lines) still belongs to it; and since a pipe
    /// is read a little after it is written, switching any earlier would misattribute lines.
    log_id: Option<String>,
    log_used: u64,
    log_truncated: bool,
}

/// Shared invocation state; see the module docs.
#[derive(Debug)]
pub(crate) struct Invocations {
    inner: Mutex<Inner>,
    queued: Condvar,
    log_limit: u64,
}

impl Invocations {
    pub(crate) fn new(log_limit: u64) -> Self {
        Invocations {
            inner: Mutex::new(Inner {
                phase: Phase::Idle,
                finished: VecDeque::new(),
                ready: false,
                init_error_reported: false,
                log_id: None,
                log_used: 0,
                log_truncated: false,
            }),
            queued: Condvar::new(),
            log_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave `Inner` half-updated (every transition is one
        // assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Idle → Queued.
    pub(crate) fn invoke(&self, invocation: Invocation) -> Result<(), Busy> {
        let mut inner = self.lock();
        match &inner.phase {
            Phase::Idle => {
                inner.phase = Phase::Queued(invocation);
                self.queued.notify_all();
                Ok(())
            }
            Phase::Queued(running) => Err(Busy {
                running: running.id.clone(),
            }),
            Phase::Running(running) => Err(Busy {
                running: running.clone(),
            }),
        }
    }

    /// Called when the runtime asks for the next invocation. Returns true the first time
    /// (initialization is over).
    pub(crate) fn begin_next(&self) -> bool {
        !std::mem::replace(&mut self.lock().ready, true)
    }

    /// Blocks until an invocation is queued, then Queued → Running. The log budget starts over.
    pub(crate) fn wait_next(&self) -> Invocation {
        let mut inner = self.lock();
        loop {
            match std::mem::replace(&mut inner.phase, Phase::Idle) {
                Phase::Queued(invocation) => {
                    inner.phase = Phase::Running(invocation.id.clone());
                    inner.log_id = Some(invocation.id.clone());
                    inner.log_used = 0;
                    inner.log_truncated = false;
                    return invocation;
                }
                other => inner.phase = other,
            }
            inner = self.queued.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Running(id) → Idle, if `id` is the running invocation.
    pub(crate) fn reply(&self, id: &str) -> Reply {
        let mut inner = self.lock();
        match &inner.phase {
            Phase::Running(running) if running == id => {
                inner.phase = Phase::Idle;
                remember(&mut inner.finished, id);
                Reply::Accepted
            }
            _ if inner.finished.iter().any(|f| f == id) => Reply::AlreadyFinished,
            _ => Reply::UnknownId,
        }
    }

    /// Queued(id) | Running(id) → Idle: the invocation ran out of time. False if it had already
    /// finished.
    pub(crate) fn expire(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let current = match &inner.phase {
            Phase::Queued(invocation) => invocation.id == id,
            Phase::Running(running) => running == id,
            Phase::Idle => false,
        };
        if current {
            inner.phase = Phase::Idle;
            remember(&mut inner.finished, id);
        }
        current
    }

    /// The invocation in progress (queued or running), if any.
    pub(crate) fn in_progress(&self) -> Option<String> {
        match &self.lock().phase {
            Phase::Idle => None,
            Phase::Queued(invocation) => Some(invocation.id.clone()),
            Phase::Running(id) => Some(id.clone()),
        }
    }

    /// An init error may be reported once, and only before the first `GET /next`.
    pub(crate) fn report_init_error(&self) -> bool {
        let mut inner = self.lock();
        if inner.ready || inner.init_error_reported {
            return false;
        }
        inner.init_error_reported = true;
        true
    }

    /// Charges one line of `len` bytes to the current log budget.
    pub(crate) fn admit_log(&self, len: usize) -> LogAdmit {
        let mut inner = self.lock();
        if inner.log_truncated {
            return LogAdmit::Drop;
        }
        let used = inner.log_used.saturating_add(len as u64);
        if used > self.log_limit {
            inner.log_truncated = true;
            return LogAdmit::Truncate(inner.log_id.clone());
        }
        inner.log_used = used;
        LogAdmit::Send(inner.log_id.clone())
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
        let s = Invocations::new(100);
        assert!(s.begin_next());
        assert!(!s.begin_next());
        assert_eq!(s.reply("a"), Reply::UnknownId);
        s.invoke(inv("a")).unwrap();
        assert_eq!(
            s.invoke(inv("b")),
            Err(Busy {
                running: "a".into()
            })
        );
        assert_eq!(s.reply("a"), Reply::UnknownId, "not handed out yet");
        assert_eq!(s.in_progress().as_deref(), Some("a"));
        assert_eq!(s.wait_next().id, "a");
        assert_eq!(s.reply("b"), Reply::UnknownId);
        assert_eq!(s.reply("a"), Reply::Accepted);
        assert_eq!(s.reply("a"), Reply::AlreadyFinished);
        assert_eq!(s.in_progress(), None);
        assert!(!s.expire("a"));
    }

    #[test]
    fn wait_next_blocks_until_invoke() {
        let s = Arc::new(Invocations::new(100));
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait_next().id)
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.invoke(inv("x")).unwrap();
        assert_eq!(waiter.join().unwrap(), "x");
    }

    #[test]
    fn expiry_finishes_queued_or_running() {
        let s = Invocations::new(100);
        s.invoke(inv("q")).unwrap();
        assert!(s.expire("q"));
        assert_eq!(s.in_progress(), None);
        s.invoke(inv("r")).unwrap();
        s.wait_next();
        assert!(!s.expire("other"));
        assert!(s.expire("r"));
        assert_eq!(
            s.reply("r"),
            Reply::AlreadyFinished,
            "late reply after a timeout"
        );
    }

    #[test]
    fn init_error_only_before_ready_and_once() {
        let s = Invocations::new(100);
        assert!(s.report_init_error());
        assert!(!s.report_init_error());
        let s = Invocations::new(100);
        s.begin_next();
        assert!(!s.report_init_error());
    }

    #[test]
    fn log_budget_truncates_once_and_resets_per_invocation() {
        let s = Invocations::new(10);
        assert_eq!(s.admit_log(6), LogAdmit::Send(None));
        assert_eq!(s.admit_log(4), LogAdmit::Send(None));
        assert_eq!(s.admit_log(1), LogAdmit::Truncate(None));
        assert_eq!(s.admit_log(0), LogAdmit::Drop);
        s.begin_next();
        s.invoke(inv("a")).unwrap();
        s.wait_next();
        assert_eq!(s.admit_log(10), LogAdmit::Send(Some("a".into())));
        assert_eq!(s.admit_log(1), LogAdmit::Truncate(Some("a".into())));
        s.reply("a");
        s.begin_next();
        assert_eq!(
            s.admit_log(1),
            LogAdmit::Drop,
            "a's budget until the next invocation"
        );
        s.invoke(inv("b")).unwrap();
        s.wait_next();
        assert_eq!(s.admit_log(1), LogAdmit::Send(Some("b".into())));
        s.reply("b");
        s.begin_next();
        assert_eq!(
            s.admit_log(1),
            LogAdmit::Send(Some("b".into())),
            "trailing output is b's"
        );
    }
}
