//! Progress events of long operations.

use strata_types::api::{Event, Stream};
use tokio::sync::mpsc::UnboundedSender;

/// Where a long operation reports progress. Sending never fails the operation: when the client
/// has gone away, events are dropped and the work goes on to completion.
#[derive(Clone, Debug)]
pub struct Emitter {
    tx: Option<UnboundedSender<Event>>,
}

impl Emitter {
    /// An emitter sending to `tx`.
    pub fn new(tx: UnboundedSender<Event>) -> Emitter {
        Emitter { tx: Some(tx) }
    }

    /// An emitter that drops everything.
    pub fn discard() -> Emitter {
        Emitter { tx: None }
    }

    /// Sends an event.
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// A progress message.
    pub fn progress(&self, message: impl Into<String>) {
        self.send(Event::Progress {
            message: message.into(),
            current: None,
            total: None,
        });
    }

    /// A counted progress message.
    pub fn progress_of(&self, message: impl Into<String>, current: u64, total: u64) {
        self.send(Event::Progress {
            message: message.into(),
            current: Some(current),
            total: Some(total),
        });
    }

    /// A line of output.
    pub fn output(&self, stream: Stream, line: String) {
        self.send(Event::Output { stream, line });
    }
}
