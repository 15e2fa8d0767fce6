//! Specialization of a generic instance: what a `Specialize` frame means for the bootstraps, and
//! the rendezvous between the frame and a deferred bootstrap's
//! `GET /2018-06-01/strata/specialization`.

use std::sync::{Condvar, Mutex, MutexGuard};

/// A `Specialize` frame, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    pub function: String,
    pub handler: String,
    /// The function's environment, in order, without duplicates (the last value wins), with
    /// `_HANDLER` set to the handler unless the frame sets it.
    pub env: Vec<(String, String)>,
    /// At least 1.
    pub workers: usize,
}

impl Spec {
    /// Reads the frame's fields. `K=V` entries without `=` or with an empty name are skipped.
    pub(crate) fn new(function: String, handler: String, env: &[String], workers: u32) -> Spec {
        let mut vars: Vec<(String, String)> = Vec::with_capacity(env.len() + 1);
        for entry in env {
            let Some((key, value)) = entry.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                eprintln!("strata-init: ignoring a malformed environment entry {entry:?}");
                continue;
            };
            match vars.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.to_string(),
                None => vars.push((key.to_string(), value.to_string())),
            }
        }
        if !vars.iter().any(|(k, _)| k == "_HANDLER") {
            vars.push(("_HANDLER".into(), handler.clone()));
        }
        Spec {
            function,
            handler,
            env: vars,
            workers: usize::try_from(workers).unwrap_or(usize::MAX).max(1),
        }
    }

    /// The answer to `GET /2018-06-01/strata/specialization`:
    /// `{"function": …, "handler": …, "env": {"K": "V", …}}`.
    pub(crate) fn payload(&self) -> Vec<u8> {
        let env: serde_json::Map<String, serde_json::Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "function": self.function,
            "handler": self.handler,
            "env": env,
        })
        .to_string()
        .into_bytes()
    }
}

#[derive(Debug, Default)]
struct Inner {
    payload: Option<Vec<u8>>,
    asked: bool,
    answered: bool,
}

/// Where a deferred bootstrap waits for its specialization.
#[derive(Debug, Default)]
pub(crate) struct Rendezvous {
    inner: Mutex<Inner>,
    ready: Condvar,
}

impl Rendezvous {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the specialization to the (current or future) waiter.
    pub(crate) fn provide(&self, payload: Vec<u8>) {
        self.lock().payload = Some(payload);
        self.ready.notify_all();
    }

    /// The bootstrap asked. True the first time (`Waiting` is due).
    pub(crate) fn ask(&self) -> bool {
        !std::mem::replace(&mut self.lock().asked, true)
    }

    /// Blocks until the specialization is provided; returns it and whether this is the first
    /// answer (`Specialized` is due).
    pub(crate) fn wait(&self) -> (Vec<u8>, bool) {
        let mut inner = self.lock();
        loop {
            if let Some(payload) = inner.payload.clone() {
                let first = !std::mem::replace(&mut inner.answered, true);
                return (payload, first);
            }
            inner = self.ready.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn env_entries_are_parsed_and_the_handler_is_added() {
        let env = ["A=1", "B=x=y", "bad", "=v", "A=2", "EMPTY="].map(String::from);
        let spec = Spec::new("f".into(), "app.handler".into(), &env, 0);
        assert_eq!(spec.workers, 1);
        let pairs: Vec<(&str, &str)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("A", "2"),
                ("B", "x=y"),
                ("EMPTY", ""),
                ("_HANDLER", "app.handler")
            ]
        );
        let v: serde_json::Value = serde_json::from_slice(&spec.payload()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "function": "f",
                "handler": "app.handler",
                "env": {"A": "2", "B": "x=y", "EMPTY": "", "_HANDLER": "app.handler"},
            })
        );
        let spec = Spec::new("f".into(), "h".into(), &["_HANDLER=other".into()], 4);
        assert_eq!(spec.env, vec![("_HANDLER".into(), "other".into())]);
        assert_eq!(spec.workers, 4);
    }

    #[test]
    fn waiter_gets_the_payload_once_marked_first() {
        let r = Arc::new(Rendezvous::default());
        assert!(r.ask());
        assert!(!r.ask());
        let waiter = {
            let r = r.clone();
            std::thread::spawn(move || r.wait())
        };
        std::thread::sleep(std::time::Duration::from_millis(30));
        r.provide(b"{}".to_vec());
        assert_eq!(waiter.join().unwrap(), (b"{}".to_vec(), true));
        assert_eq!(
            r.wait(),
            (b"{}".to_vec(), false),
            "a repeated GET is answered again"
        );
    }
}
