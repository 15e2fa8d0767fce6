//! Console sessions: logging in with the admin token gives a random session id in an HttpOnly,
//! SameSite=Strict cookie; the server keeps, per session, the hash of that id and a CSRF token
//! that every state-changing form must carry. The token itself is never put in a cookie.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use sha2::{Digest as _, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "strata_console";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after login, whatever its use.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Most sessions kept at once; logging in beyond that ends the least recently used one.
pub const MAX_SESSIONS: usize = 256;

struct Entry {
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// A live session, as handlers see it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The hash of the session id (the key of the session table).
    pub key: String,
    /// The CSRF token of this session, put in every form.
    pub csrf: String,
}

/// The session table.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

fn key_of(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Sessions {
    /// Starts a session; returns its id (the cookie value) and the session.
    pub fn create(&self) -> (String, Session) {
        self.create_at(Instant::now())
    }

    fn create_at(&self, now: Instant) -> (String, Session) {
        let id = strata_control::random_hex(32);
        let csrf = strata_control::random_hex(32);
        let key = key_of(&id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| alive(e, now));
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            key.clone(),
            Entry {
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        (id, Session { key, csrf })
    }

    /// The session a cookie header names, if it is alive (and marks it used).
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie_value(headers, COOKIE)?;
        self.lookup_at(&id, Instant::now())
    }

    fn lookup_at(&self, id: &str, now: Instant) -> Option<Session> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let key = key_of(id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.get_mut(&key)?;
        if !alive(e, now) {
            map.remove(&key);
            return None;
        }
        e.last_seen = now;
        Some(Session {
            csrf: e.csrf.clone(),
            key,
        })
    }

    /// Ends a session.
    pub fn remove(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Sessions alive now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| alive(e, now))
            .count()
    }
}

fn alive(e: &Entry, now: Instant) -> bool {
    now.duration_since(e.last_seen) < IDLE && now.duration_since(e.created) < LIFETIME
}

impl Session {
    /// Whether a submitted CSRF token is this session's (constant time).
    pub fn csrf_ok(&self, given: &str) -> bool {
        crate::constant_time_eq(given.as_bytes(), self.csrf.as_bytes())
    }
}

/// The `Set-Cookie` value that stores a session id.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The value of a cookie in the request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}; x=y")).expect("header"),
        );
        h
    }

    #[test]
    fn sessions_are_found_by_cookie_and_end() {
        let s = Sessions::default();
        let (id, sess) = s.create();
        assert_eq!(id.len(), 64);
        assert_ne!(sess.key, id, "the table keeps a hash, not the id");
        let found = s.find(&cookie(&id)).expect("found");
        assert_eq!(found.csrf, sess.csrf);
        assert!(found.csrf_ok(&sess.csrf));
        assert!(!found.csrf_ok(""));
        assert!(!found.csrf_ok(&sess.csrf[..63]));
        assert!(!found.csrf_ok(&"0".repeat(64)));
        // Other ids, malformed ids and a missing cookie find nothing.
        assert!(s.find(&cookie(&"a".repeat(64))).is_none());
        assert!(s.find(&cookie("short")).is_none());
        assert!(
            s.find(&cookie(&sess.key)).is_none(),
            "the key is not a cookie"
        );
        assert!(s.find(&HeaderMap::new()).is_none());
        // Two sessions have different ids and CSRF tokens.
        let (id2, sess2) = s.create();
        assert_ne!(id, id2);
        assert_ne!(sess.csrf, sess2.csrf);
        s.remove(&sess.key);
        assert!(s.find(&cookie(&id)).is_none(), "logged out");
        assert!(s.find(&cookie(&id2)).is_some());
    }

    #[test]
    fn sessions_expire_when_idle_or_old_and_are_capped() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, _) = s.create_at(t0);
        assert!(s.lookup_at(&id, t0 + IDLE / 2).is_some());
        assert!(s.lookup_at(&id, t0 + IDLE / 2 + IDLE).is_none(), "idle");
        let (id, _) = s.create_at(t0);
        let mut t = t0;
        while t < t0 + LIFETIME - IDLE / 2 {
            t += IDLE / 2;
            assert!(s.lookup_at(&id, t).is_some(), "kept alive by use");
        }
        assert!(s.lookup_at(&id, t0 + LIFETIME).is_none(), "too old");
        let first = s.create_at(t0).0;
        for i in 0..MAX_SESSIONS {
            s.create_at(t0 + Duration::from_millis(1 + i as u64));
        }
        assert!(s.len() <= MAX_SESSIONS);
        assert!(
            s.lookup_at(&first, t0 + Duration::from_secs(1)).is_none(),
            "least recently used goes first"
        );
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let c = set_cookie("abc");
        assert!(c.starts_with("strata_console=abc;"));
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
