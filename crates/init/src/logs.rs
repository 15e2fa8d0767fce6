//! Reads each bootstrap's stdout and stderr line by line and forwards them as `Log` frames,
//! within the per-invocation byte budget (kept per worker). The pipes are always drained, so the
//! function never blocks on a full pipe, whatever the budget says.

use std::io::{self, BufRead, BufReader, Read};

use crate::host::HostLink;
use crate::invocation::{Invocations, LogAdmit};
use crate::protocol::Header;

/// Longest forwarded line, in bytes of output; longer lines are split into pieces of this size.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// The line sent once when an invocation's log budget runs out.
pub(crate) const TRUNCATED_MARKER: &str = "[strata] log output truncated";

/// Splits a byte stream into lines (LF-terminated, a CR before the LF dropped), cutting lines
/// longer than `max` bytes into pieces without splitting a UTF-8 sequence where avoidable.
pub(crate) fn split_lines(
    r: &mut impl BufRead,
    max: usize,
    mut each: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut line = Vec::new();
    let mut emit = |line: &[u8]| each(line.strip_suffix(b"\r").unwrap_or(line));
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if !line.is_empty() {
                emit(&line);
            }
            return Ok(());
        }
        let room = max - line.len();
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) if i <= room => {
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                emit(&line);
                line.clear();
            }
            _ => {
                let take = buf.len().min(room);
                line.extend_from_slice(&buf[..take]);
                r.consume(take);
                if line.len() == max {
                    let cut = utf8_cut(&line);
                    emit(&line[..cut]);
                    line.drain(..cut);
                }
            }
        }
    }
}

/// Where to cut a full buffer so that a multi-byte UTF-8 sequence at its end stays whole.
fn utf8_cut(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=3.min(len) {
        let b = bytes[len - back];
        if b & 0b1100_0000 != 0b1000_0000 {
            // `b` starts a sequence (or is ASCII); keep the sequence only if it is complete.
            let needed = match b {
                0xF0..=0xF7 => 4,
                0xE0..=0xEF => 3,
                0xC0..=0xDF => 2,
                _ => 1,
            };
            return if needed > back && len > back {
                len - back
            } else {
                len
            };
        }
    }
    len
}

/// Forwards one output stream of worker `worker` until it ends, tagging each line with the
/// invocation that worker is running. Frames that cannot be sent are dropped: a closed host socket
/// ends the agent elsewhere.
pub(crate) fn pump(
    stream: &'static str,
    pipe: impl Read,
    worker: usize,
    invocations: &Invocations,
    host: &HostLink,
) {
    let mut reader = BufReader::with_capacity(MAX_LINE, pipe);
    let _ = split_lines(&mut reader, MAX_LINE, |line| {
        let text = String::from_utf8_lossy(line);
        let (id, body) = match invocations.admit_log(worker, text.len()) {
            LogAdmit::Send(id) => (id, text.as_bytes()),
            LogAdmit::Truncate(id) => (id, TRUNCATED_MARKER.as_bytes()),
            LogAdmit::Drop => return,
        };
        let _ = host.send(
            &Header::Log {
                stream: stream.to_string(),
                id,
            },
            body,
        );
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        // A tiny buffer exercises lines that span many reads.
        let mut r = BufReader::with_capacity(3, input);
        split_lines(&mut r, max, |l| out.push(l.to_vec())).unwrap();
        out
    }

    #[test]
    fn splits_on_newlines_and_keeps_a_final_partial_line() {
        assert_eq!(
            lines(b"a\nbc\r\n\nlast", 100),
            vec![&b"a"[..], b"bc", b"", b"last"]
        );
        assert!(lines(b"", 100).is_empty());
    }

    #[test]
    fn long_lines_are_cut_into_pieces() {
        assert_eq!(
            lines(b"abcdefgh\nij\n", 3),
            vec![&b"abc"[..], b"def", b"gh", b"ij"]
        );
    }

    #[test]
    fn cuts_keep_utf8_sequences_whole() {
        let text = "aé€x\n".as_bytes(); // a, é (2 bytes), € (3 bytes), x
        let got = lines(text, 4);
        for piece in &got {
            assert!(std::str::from_utf8(piece).is_ok(), "{piece:?}");
        }
        assert_eq!(got.concat(), b"a\xc3\xa9\xe2\x82\xacx");
    }

    #[test]
    fn utf8_cut_points() {
        assert_eq!(utf8_cut(b"abcd"), 4);
        assert_eq!(utf8_cut(b"ab\xe2\x82"), 2);
        assert_eq!(utf8_cut(b"a\xe2\x82\xac"), 4);
        assert_eq!(utf8_cut(b"\xff\xff\xff\xff"), 4);
        assert_eq!(utf8_cut(b"\x80\x80\x80\x80"), 4);
    }
}
