//! Function logs: one NDJSON file per function in the data directory (rotated at a size cap),
//! plus a broadcast channel for `strata logs --follow`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use strata_types::api::LogEntry;
use tokio::sync::broadcast;

/// Size at which a function's log file is rotated (one old file is kept).
const ROTATE_BYTES: u64 = 32 << 20;

/// The log store.
pub struct Logs {
    dir: PathBuf,
    files: Mutex<HashMap<String, File>>,
    tx: broadcast::Sender<LogEntry>,
}

impl Logs {
    /// Logs kept under `dir`.
    pub fn new(dir: PathBuf) -> Logs {
        let (tx, _) = broadcast::channel(4096);
        Logs {
            dir,
            files: Mutex::new(HashMap::new()),
            tx,
        }
    }

    fn path(&self, function: &str) -> PathBuf {
        self.dir.join(format!("{function}.ndjson"))
    }

    /// Appends one entry (best effort: a full disk loses log lines, never invocations).
    pub fn append(&self, entry: LogEntry) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.path(&entry.function);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.len() > ROTATE_BYTES {
                files.remove(&entry.function);
                let _ = std::fs::rename(&path, path.with_extension("ndjson.1"));
            }
        }
        if !files.contains_key(&entry.function) {
            let _ = std::fs::create_dir_all(&self.dir);
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    files.insert(entry.function.clone(), f);
                }
                Err(e) => {
                    tracing::warn!(function = %entry.function, error = %e, "cannot open log file")
                }
            }
        }
        if let Some(f) = files.get_mut(&entry.function) {
            if let Ok(mut line) = serde_json::to_vec(&entry) {
                line.push(b'\n');
                let _ = f.write_all(&line);
            }
        }
        drop(files);
        let _ = self.tx.send(entry);
    }

    /// Entries of a function at or after `since_ms`, oldest first, at most the last `limit`.
    pub fn read(&self, function: &str, since_ms: u64, limit: usize) -> Vec<LogEntry> {
        let mut out = Vec::new();
        let path = self.path(function);
        for p in [path.with_extension("ndjson.1"), path] {
            let Ok(f) = File::open(&p) else { continue };
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(e) = serde_json::from_str::<LogEntry>(&line) {
                    if e.ts_ms >= since_ms {
                        out.push(e);
                    }
                }
            }
        }
        if out.len() > limit {
            out.drain(..out.len() - limit);
        }
        out
    }

    /// New entries of every function, as they are appended.
    pub fn subscribe(&self) -> broadcast::Receiver<LogEntry> {
        self.tx.subscribe()
    }

    /// Deletes a function's logs.
    pub fn remove(&self, function: &str) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(function);
        let path = self.path(function);
        let _ = std::fs::remove_file(path.with_extension("ndjson.1"));
        let _ = std::fs::remove_file(path);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(f: &str, ts: u64, line: &str) -> LogEntry {
        LogEntry {
            ts_ms: ts,
            function: f.into(),
            invocation: Some("i".into()),
            stream: "stdout".into(),
            line: line.into(),
        }
    }

    #[test]
    fn append_read_filter_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = Logs::new(dir.path().to_path_buf());
        let mut rx = logs.subscribe();
        logs.append(entry("a", 10, "one"));
        logs.append(entry("a", 20, "two"));
        logs.append(entry("b", 15, "other"));
        assert_eq!(rx.try_recv().expect("broadcast").line, "one");
        let lines: Vec<String> = logs.read("a", 0, 100).into_iter().map(|e| e.line).collect();
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(logs.read("a", 15, 100).len(), 1);
        assert_eq!(
            logs.read("a", 0, 1)[0].line,
            "two",
            "limit keeps the newest"
        );
        logs.remove("a");
        assert!(logs.read("a", 0, 100).is_empty());
        assert_eq!(logs.read("b", 0, 100).len(), 1);
    }
}
