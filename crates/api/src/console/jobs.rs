//! Background jobs of the console (runtime builds): a long operation runs in its own task, its
//! events are kept in memory, and the job page polls them. A job runs to completion even when
//! nobody watches it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use strata_control::{ControlError, Emitter};
use strata_types::api::Event;

use crate::error::public_error;

/// Jobs kept (the oldest finished ones are forgotten first).
pub const MAX_JOBS: usize = 64;
/// Events kept per job (older ones are dropped and counted).
pub const MAX_EVENTS: usize = 5000;

/// Where a finished job points: a page and its label.
pub type Link = (String, String);

/// One job.
pub struct Job {
    /// Random id (the URL of its page).
    pub id: String,
    /// What it does, e.g. `build runtime py`.
    pub title: String,
    /// Start time, ms since the epoch.
    pub started_ms: u64,
    state: Mutex<JobState>,
}

#[derive(Default)]
struct JobState {
    events: VecDeque<Event>,
    dropped: u64,
    outcome: Option<Outcome>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It succeeded; the link leads to what it made.
    Done(Option<Link>),
    /// It failed.
    Failed(String),
}

/// A consistent copy of a job's state.
pub struct Snapshot {
    /// Events, oldest first.
    pub events: Vec<Event>,
    /// Events dropped from the front.
    pub dropped: u64,
    /// The end, once there is one.
    pub outcome: Option<Outcome>,
}

impl Job {
    fn push(&self, event: Event, link: &dyn Fn(&serde_json::Value) -> Option<Link>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &event {
            Event::Done { result } => s.outcome = Some(Outcome::Done(link(result))),
            Event::Error { error } => s.outcome = Some(Outcome::Failed(error.message.clone())),
            _ => {}
        }
        if s.events.len() == MAX_EVENTS {
            s.events.pop_front();
            s.dropped += 1;
        }
        s.events.push_back(event);
    }

    /// The job's state now.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            events: s.events.iter().cloned().collect(),
            dropped: s.dropped,
            outcome: s.outcome.clone(),
        }
    }
}

/// The job table.
#[derive(Default)]
pub struct Jobs {
    list: Mutex<VecDeque<Arc<Job>>>,
}

impl Jobs {
    /// Starts `op` in its own task as a job; `link` turns its result into a link.
    pub fn start<F, Fut, T>(
        &self,
        title: String,
        link: impl Fn(&serde_json::Value) -> Option<Link> + Send + Sync + 'static,
        op: F,
    ) -> Arc<Job>
    where
        F: FnOnce(Emitter) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ControlError>> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let job = Arc::new(Job {
            id: strata_control::random_hex(12),
            title,
            started_ms: strata_control::now_ms(),
            state: Mutex::new(JobState::default()),
        });
        {
            let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            while list.len() >= MAX_JOBS {
                // Forget the oldest finished job; if all run, the oldest one (it still runs).
                let pos = list
                    .iter()
                    .position(|j| j.snapshot().outcome.is_some())
                    .unwrap_or(0);
                list.remove(pos);
            }
            list.push_back(Arc::clone(&job));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let collector = Arc::clone(&job);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let last = matches!(event, Event::Done { .. } | Event::Error { .. });
                collector.push(event, &link);
                if last {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let events = Emitter::new(tx);
            let last = match op(events.clone()).await {
                Ok(result) => match serde_json::to_value(&result) {
                    Ok(result) => Event::Done { result },
                    Err(e) => Event::Error {
                        error: public_error(&ControlError::Internal(format!(
                            "cannot encode result: {e}"
                        ))),
                    },
                },
                Err(e) => Event::Error {
                    error: public_error(&e),
                },
            };
            events.send(last);
        });
        job
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    /// Every job kept, newest first.
    pub fn all(&self) -> Vec<Arc<Job>> {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::api::Stream;

    async fn finished(job: &Job) -> Snapshot {
        for _ in 0..200 {
            let s = job.snapshot();
            if s.outcome.is_some() {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("job did not finish");
    }

    #[tokio::test]
    async fn jobs_keep_events_in_order_and_end() {
        let jobs = Jobs::default();
        let job = jobs.start(
            "ok".into(),
            |v| Some((format!("/x/{}", v["n"]), "x".into())),
            |events| async move {
                events.progress("one");
                events.output(Stream::Stdout, "two".into());
                Ok::<_, ControlError>(serde_json::json!({"n": 7}))
            },
        );
        let s = finished(&job).await;
        assert_eq!(s.events.len(), 3);
        assert!(matches!(&s.events[0], Event::Progress { message, .. } if message == "one"));
        assert!(matches!(&s.events[1], Event::Output { line, .. } if line == "two"));
        assert!(
            matches!(&s.outcome, Some(Outcome::Done(Some((href, _)))) if href == "/x/7"),
            "{:?}",
            s.outcome
        );
        let bad =
            jobs.start(
                "bad".into(),
                |_| None,
                |_| async move {
                    Err::<(), _>(ControlError::Invalid("line 2: no such instruction".into()))
                },
            );
        let s = finished(&bad).await;
        assert!(
            matches!(&s.outcome, Some(Outcome::Failed(m)) if m.contains("line 2")),
            "{:?}",
            s.outcome
        );
        assert_eq!(jobs.all()[0].id, bad.id, "newest first");
        assert!(jobs.get(&job.id).is_some());
        assert!(jobs.get("nope").is_none());
    }

    #[tokio::test]
    async fn long_logs_keep_the_tail() {
        let jobs = Jobs::default();
        let job = jobs.start(
            "flood".into(),
            |_| None,
            |events| async move {
                for i in 0..MAX_EVENTS + 10 {
                    events.output(Stream::Stdout, format!("line {i}"));
                }
                Ok::<_, ControlError>(())
            },
        );
        let s = finished(&job).await;
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert_eq!(s.dropped, 11);
        assert!(matches!(s.events.last(), Some(Event::Done { .. })));
    }
}
