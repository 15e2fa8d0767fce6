//! Turning a child's byte streams into bounded text lines.

use std::collections::VecDeque;
use std::process::ExitStatus;

use tokio::io::AsyncReadExt;
use tokio::process::Child;

use crate::error::SandboxError;
use crate::Stream;

/// The longest line handed to an output callback; longer lines are split.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Splits a byte stream into lines: newline-terminated, lossy UTF-8, a trailing `\r` dropped,
/// and never longer than [`MAX_LINE_BYTES`] (longer lines come out in pieces).
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
    /// The last line was cut at the cap; a newline right after it ends that line, not a new one.
    just_split: bool,
}

impl LineSplitter {
    /// Feeds bytes and calls `emit` for every complete line.
    pub(crate) fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(String)) {
        while !bytes.is_empty() {
            if std::mem::take(&mut self.just_split) && bytes[0] == b'\n' {
                bytes = &bytes[1..];
                continue;
            }
            let room = MAX_LINE_BYTES - self.pending.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&window[..i]);
                    emit(self.take());
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.pending.len() >= MAX_LINE_BYTES {
                        emit(self.take());
                        self.just_split = true;
                    }
                }
            }
        }
    }

    /// Emits what is left (a last line without a newline).
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(String)) {
        if !self.pending.is_empty() {
            emit(self.take());
        }
    }

    fn take(&mut self) -> String {
        let mut raw = std::mem::take(&mut self.pending);
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
        match String::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// Keeps the last `cap` lines of output, for error messages.
#[derive(Debug)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
    cap: usize,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Self {
        Tail {
            lines: VecDeque::with_capacity(cap),
            cap,
        }
    }

    pub(crate) fn push(&mut self, line: &str) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        // Keep error messages readable even if a line was huge.
        let mut end = line.len().min(1024);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        self.lines.push_back(line[..end].to_string());
    }

    pub(crate) fn joined(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Reads a spawned child's piped stdout and stderr to the end, line by line, into `on_line`,
/// then waits for it.
pub(crate) async fn pump(
    child: &mut Child,
    command: &str,
    on_line: &mut (dyn FnMut(Stream, String) + Send),
) -> Result<ExitStatus, SandboxError> {
    let wait_err = |source| SandboxError::Wait {
        command: command.to_string(),
        source,
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out_lines, mut err_lines) = (LineSplitter::default(), LineSplitter::default());
    let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            r = read_some(&mut stdout, &mut out_buf), if stdout.is_some() => {
                let n = r.map_err(wait_err)?;
                if n == 0 {
                    stdout = None;
                    out_lines.finish(&mut |l| on_line(Stream::Stdout, l));
                } else {
                    out_lines.push(&out_buf[..n], &mut |l| on_line(Stream::Stdout, l));
                }
            }
            r = read_some(&mut stderr, &mut err_buf), if stderr.is_some() => {
                let n = r.map_err(wait_err)?;
                if n == 0 {
                    stderr = None;
                    err_lines.finish(&mut |l| on_line(Stream::Stderr, l));
                } else {
                    err_lines.push(&err_buf[..n], &mut |l| on_line(Stream::Stderr, l));
                }
            }
        }
    }
    child.wait().await.map_err(wait_err)
}

/// Reads from an optional pipe; a missing pipe reads as end of stream.
pub(crate) async fn read_some<R: AsyncReadExt + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        assert_eq!(
            split(&[b"a\nb", b"c\r\n", b"\nlast"]),
            vec!["a", "bc", "", "last"]
        );
        assert_eq!(split(&[b"x\n"]), vec!["x"]);
        assert!(split(&[]).is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(
            split(&[b"ok \xff\xfe end\n"]),
            vec!["ok \u{fffd}\u{fffd} end"]
        );
    }

    #[test]
    fn long_lines_are_split_at_the_cap() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        let out = split(&[&input[..1000], &input[1000..]]);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].len(), MAX_LINE_BYTES);
        assert_eq!(out[1].len(), MAX_LINE_BYTES);
        assert_eq!(out[2].len(), 10);
        assert_eq!(out[3], "next");
        let mut exact = vec![b'y'; MAX_LINE_BYTES];
        exact.extend_from_slice(b"\nz\n");
        assert_eq!(
            split(&[&exact]).len(),
            2,
            "a line of exactly the cap is one line"
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        let mut t = Tail::new(2);
        for l in ["1", "2", "3"] {
            t.push(l);
        }
        assert_eq!(t.joined(), "2\n3");
    }
}
