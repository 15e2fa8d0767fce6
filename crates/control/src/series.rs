//! Per-function time series since the server started: a ring of per-minute buckets
//! (invocations, errors, cold starts, latency) for the last [`MINUTES`] minutes of each function.
//! The console draws its charts from these; `/metrics` keeps the cumulative counters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::Platform;

/// Minutes kept per function.
pub const MINUTES: usize = 60;

/// One minute of one function's invocations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MinuteBucket {
    /// Minutes since the Unix epoch (the bucket covers `[minute*60s, (minute+1)*60s)`).
    pub minute: u64,
    /// Invocations that finished in this minute.
    pub invocations: u64,
    /// Of those, failed ones (any kind).
    pub errors: u64,
    /// Of those, ones that needed a new or specialized instance.
    pub cold_starts: u64,
    /// Sum of their durations, milliseconds.
    pub total_ms: f64,
    /// Longest duration, milliseconds.
    pub max_ms: f64,
}

impl MinuteBucket {
    /// Mean duration in milliseconds (0 without invocations).
    pub fn mean_ms(&self) -> f64 {
        if self.invocations == 0 {
            0.0
        } else {
            self.total_ms / self.invocations as f64
        }
    }
}

/// The rings of every function.
#[derive(Default)]
pub struct Series {
    inner: Mutex<HashMap<String, VecDeque<MinuteBucket>>>,
}

impl Series {
    /// Records one finished invocation in the bucket of `minute`.
    pub fn record(&self, function: &str, minute: u64, ok: bool, cold: bool, ms: f64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ring = inner.entry(function.to_string()).or_default();
        if ring.back().is_none_or(|b| b.minute < minute) {
            ring.push_back(MinuteBucket {
                minute,
                ..Default::default()
            });
        }
        // A late record (the clock stepped back) goes to the newest bucket at or before its
        // minute, so the ring stays in order; one older than the whole ring is dropped.
        let Some(b) = ring.iter_mut().rev().find(|b| b.minute <= minute) else {
            return;
        };
        b.invocations += 1;
        if !ok {
            b.errors += 1;
        }
        if cold {
            b.cold_starts += 1;
        }
        b.total_ms += ms;
        if ms > b.max_ms {
            b.max_ms = ms;
        }
        while ring
            .front()
            .is_some_and(|f| f.minute + (MINUTES as u64) <= minute)
        {
            ring.pop_front();
        }
    }

    /// The `n` (at most [`MINUTES`]) minutes ending with `now_minute`, oldest first, with empty
    /// buckets for minutes without invocations.
    pub fn window(&self, function: &str, now_minute: u64, n: usize) -> Vec<MinuteBucket> {
        let n = n.clamp(1, MINUTES) as u64;
        let first = now_minute.saturating_sub(n - 1);
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ring = inner.get(function);
        (first..=now_minute)
            .map(|m| {
                ring.and_then(|r| r.iter().find(|b| b.minute == m))
                    .cloned()
                    .unwrap_or(MinuteBucket {
                        minute: m,
                        ..Default::default()
                    })
            })
            .collect()
    }

    /// Forgets a function.
    pub fn remove(&self, function: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(function);
    }
}

impl Platform {
    /// A function's last `minutes` minutes of invocations, oldest first (kept in memory since
    /// the server started).
    pub fn function_series(self: &Arc<Self>, name: &str, minutes: usize) -> Vec<MinuteBucket> {
        let now = crate::now_ms() / 60_000;
        self.instances.series.window(name, now, minutes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_per_minute_with_gaps_and_expiry() {
        let s = Series::default();
        s.record("f", 100, true, true, 10.0);
        s.record("f", 100, false, false, 30.0);
        s.record("f", 102, true, false, 5.0);
        s.record("g", 102, true, false, 1.0);
        let w = s.window("f", 103, 4);
        assert_eq!(
            w.iter().map(|b| b.minute).collect::<Vec<_>>(),
            [100, 101, 102, 103]
        );
        assert_eq!(w[0].invocations, 2);
        assert_eq!(w[0].errors, 1);
        assert_eq!(w[0].cold_starts, 1);
        assert_eq!(w[0].mean_ms(), 20.0);
        assert_eq!(w[0].max_ms, 30.0);
        assert_eq!(
            w[1],
            MinuteBucket {
                minute: 101,
                ..Default::default()
            }
        );
        assert_eq!(w[2].invocations, 1);
        assert_eq!(w[3].invocations, 0);
        // An hour later the old buckets are gone.
        let later = 102 + MINUTES as u64 + 1;
        s.record("f", later, true, false, 1.0);
        let w = s.window("f", later, MINUTES);
        assert_eq!(w.len(), MINUTES);
        assert_eq!(w.iter().map(|b| b.invocations).sum::<u64>(), 1);
        assert_eq!(
            s.inner.lock().expect("lock")["f"].len(),
            1,
            "expired buckets dropped"
        );
        // A late record (older than the newest bucket) goes to the newest bucket at or before
        // its minute, never out of order; older than the whole ring, it is dropped.
        s.record("f", later - 1, true, false, 1.0);
        let w = s.window("f", later, 2);
        assert_eq!((w[0].invocations, w[1].invocations), (0, 1));
        s.remove("f");
        assert_eq!(s.window("f", 103, 1)[0].invocations, 0);
        assert_eq!(s.window("g", 102, 1)[0].invocations, 1);
    }
}
