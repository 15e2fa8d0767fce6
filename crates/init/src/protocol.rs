//! The host protocol: frames exchanged between `strata-init` and the Strata server over the
//! per-instance unix stream socket.
//!
//! A frame is
//!
//! ```text
//! u32 big-endian header_len | header (UTF-8 JSON object) | u32 big-endian body_len | body bytes
//! ```
//!
//! The header is a [`Header`], tagged by its `type` field. Headers are limited to
//! [`MAX_HEADER_LEN`] bytes and bodies to [`MAX_BODY_LEN`] bytes; a length prefix above its limit is
//! rejected before anything is allocated. Unknown header fields are ignored so that either side
//! may add optional fields without breaking the other.
//!
//! [`read_frame`] and [`write_frame`] do blocking std I/O. An async peer frames with
//! [`encode_frame`] and takes frames off its read buffer with [`decode_frame`] (or reads the two
//! length prefixes itself and calls [`decode_header`]).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest accepted header, in bytes.
pub const MAX_HEADER_LEN: usize = 64 * 1024;
/// Largest accepted body, in bytes.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;

/// The header of a frame. Which body goes with which header is documented on each variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Header {
    // ---- server → init ----
    /// Run one invocation. Body: the event bytes. With several workers, invocations may overlap
    /// up to the number of workers; one beyond that is refused with an `Error` of type
    /// `Strata.InstanceBusy`.
    Invoke {
        /// The invocation (request) id, handed to the runtime as `Lambda-Runtime-Aws-Request-Id`.
        id: String,
        /// When the invocation must be done, in milliseconds since the Unix epoch.
        deadline_ms: u64,
        /// How long the function may run, measured by `strata-init` from the frame's arrival.
        timeout_ms: u64,
        /// The ARN-shaped function identifier (`Lambda-Runtime-Invoked-Function-Arn`).
        function_arn: String,
        /// `Lambda-Runtime-Trace-Id`.
        trace_id: String,
        /// `Lambda-Runtime-Client-Context` (JSON text), if any.
        client_context: Option<String>,
        /// `Lambda-Runtime-Cognito-Identity` (JSON text), if any.
        cognito_identity: Option<String>,
    },
    /// Stop the instance: the bootstrap gets SIGTERM, then SIGKILL after a grace period. Empty body.
    Shutdown,
    /// Turn a generic instance (`strata-init --generic`) into an instance of one function. Sent
    /// once; the code is already visible at `/var/task`. A deferred bootstrap receives it from
    /// `GET /2018-06-01/strata/specialization`; otherwise `workers` bootstraps are started with the
    /// handler appended to their argv. Refused with an `InitError` of type
    /// `Strata.AlreadySpecialized` in direct mode or when it comes a second time. Empty body.
    Specialize {
        /// The function's name.
        function: String,
        /// The handler, as the bootstrap takes it (`app.handler`).
        handler: String,
        /// `K=V` entries: the function's environment and the Lambda variables
        /// (`AWS_LAMBDA_FUNCTION_NAME`, `_HANDLER`, ...). Later entries win.
        #[serde(default)]
        env: Vec<String>,
        /// How many bootstrap processes serve invocations concurrently (at least 1).
        #[serde(default = "one_worker")]
        workers: u32,
    },

    // ---- init → server ----
    /// First frame after connecting. Empty body.
    Hello {
        /// The instance id (`STRATA_INSTANCE`).
        instance: String,
        /// The pid of `strata-init` in its own pid namespace.
        pid: u32,
    },
    /// The bootstrap asked for its first invocation: initialization finished. Sent once (at the
    /// first `/next` of any worker). Empty body.
    Ready,
    /// A generic instance is fully warm and can be specialized: a deferred bootstrap asked for
    /// its specialization (its interpreter is loaded), or, for a bootstrap that does not defer, the
    /// agent is up. Sent once, generic mode only. Empty body.
    Waiting,
    /// The `Specialize` frame was applied: a deferred bootstrap received it, or the bootstrap
    /// processes were started. Sent once. Empty body.
    Specialized,
    /// The runtime posted a result. Body: the result bytes.
    Response {
        /// The invocation id.
        id: String,
        /// The Content-Type the runtime posted the result with.
        content_type: Option<String>,
    },
    /// The invocation failed. Body: the error JSON the runtime posted, or a synthesized
    /// `{"errorMessage":…,"errorType":…}` when it posted none (or more than the agent accepts).
    Error {
        /// The invocation id.
        id: String,
        /// `Lambda-Runtime-Function-Error-Type`, else the body's `errorType`.
        error_type: Option<String>,
    },
    /// The runtime reported a failed initialization. Body: the error JSON.
    InitError {
        /// `Lambda-Runtime-Function-Error-Type`, else the body's `errorType`.
        error_type: Option<String>,
    },
    /// The invocation ran out of time and `strata-init` killed the bootstrap's process group.
    /// `Exited` follows. Empty body. The server words it as Lambda does:
    /// `Task timed out after N.NN seconds`.
    Timeout {
        /// The invocation id.
        id: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// One line of the bootstrap's output. Body: the line, without its newline.
    Log {
        /// `"stdout"` or `"stderr"`.
        stream: String,
        /// The invocation the line belongs to: the one last handed to the bootstrap process
        /// (worker) that wrote it (so a runtime's closing lines after its reply still count), or
        /// none before its first. Lines may arrive after that invocation's `Response`/`Error`
        /// frame.
        id: Option<String>,
    },
    /// A bootstrap process exited (with several workers: the first one; the others are then
    /// killed); `strata-init` exits right after sending this. Empty body.
    Exited {
        /// Exit status, if it exited normally.
        code: Option<i32>,
        /// Terminating signal, if it was killed.
        signal: Option<i32>,
        /// The invocation that was in progress, if any: the one the exited worker was running,
        /// else any queued or running one.
        during: Option<String>,
    },
}

fn one_worker() -> u32 {
    1
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn check_header_len(len: usize) -> io::Result<()> {
    if len > MAX_HEADER_LEN {
        return Err(invalid_data(format!(
            "frame header of {len} bytes exceeds the limit of {MAX_HEADER_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_body_len(len: usize) -> io::Result<()> {
    if len > MAX_BODY_LEN {
        return Err(invalid_data(format!(
            "frame body of {len} bytes exceeds the limit of {MAX_BODY_LEN} bytes"
        )));
    }
    Ok(())
}

/// Encodes one frame. Fails with `InvalidInput` if the header or body exceeds its limit (the peer
/// would reject the frame).
pub fn encode_frame(header: &Header, body: &[u8]) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(header)
        .map_err(|e| invalid_input(format!("cannot encode frame header: {e}")))?;
    if json.len() > MAX_HEADER_LEN {
        return Err(invalid_input(format!(
            "frame header of {} bytes exceeds the limit of {MAX_HEADER_LEN} bytes",
            json.len()
        )));
    }
    if body.len() > MAX_BODY_LEN {
        return Err(invalid_input(format!(
            "frame body of {} bytes exceeds the limit of {MAX_BODY_LEN} bytes",
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(8 + json.len() + body.len());
    frame.extend_from_slice(&len_prefix(json.len()));
    frame.extend_from_slice(&json);
    frame.extend_from_slice(&len_prefix(body.len()));
    frame.extend_from_slice(body);
    Ok(frame)
}

fn len_prefix(len: usize) -> [u8; 4] {
    // Both limits are far below u32::MAX, and callers check them first.
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// Writes one frame with a single `write_all` and flushes.
pub fn write_frame(w: &mut impl Write, header: &Header, body: &[u8]) -> io::Result<()> {
    let frame = encode_frame(header, body)?;
    w.write_all(&frame)?;
    w.flush()
}

/// Parses a frame header (the JSON between the two length prefixes).
pub fn decode_header(bytes: &[u8]) -> io::Result<Header> {
    check_header_len(bytes.len())?;
    serde_json::from_slice(bytes).map_err(|e| invalid_data(format!("bad frame header: {e}")))
}

/// Takes one frame off the front of `buf`. Returns `Ok(None)` if `buf` does not hold a whole frame
/// yet, else the header, the body and the number of bytes consumed. Oversized length prefixes are
/// rejected as soon as they are visible.
pub fn decode_frame(buf: &[u8]) -> io::Result<Option<(Header, Vec<u8>, usize)>> {
    let Some(header_len) = read_prefix(buf, 0) else {
        return Ok(None);
    };
    check_header_len(header_len)?;
    let body_prefix_at = 4 + header_len;
    let Some(body_len) = read_prefix(buf, body_prefix_at) else {
        return Ok(None);
    };
    check_body_len(body_len)?;
    let body_at = body_prefix_at + 4;
    let end = body_at + body_len;
    if buf.len() < end {
        return Ok(None);
    }
    let header = decode_header(&buf[4..body_prefix_at])?;
    Ok(Some((header, buf[body_at..end].to_vec(), end)))
}

fn read_prefix(buf: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(bytes)).ok()
}

/// Reads one frame. Returns `Ok(None)` on a clean end of stream (before the first byte of a
/// frame); a stream that ends inside a frame is an `UnexpectedEof` error.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(Header, Vec<u8>)>> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        match r.read(&mut prefix[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame length prefix",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let header_len = u32::from_be_bytes(prefix) as usize;
    check_header_len(header_len)?;
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header)?;
    let header = decode_header(&header)?;
    r.read_exact(&mut prefix)?;
    let body_len = u32::from_be_bytes(prefix) as usize;
    check_body_len(body_len)?;
    let mut body = vec![0u8; body_len];
    r.read_exact(&mut body)?;
    Ok(Some((header, body)))
}

/// The `{"errorMessage":…,"errorType":…}` JSON that Lambda clients and Strata use for errors.
pub fn error_json(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::json!({ "errorMessage": message, "errorType": error_type })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn invoke() -> Header {
        Header::Invoke {
            id: "req-1".into(),
            deadline_ms: 1_700_000_003_000,
            timeout_ms: 3000,
            function_arn: "arn:aws:lambda:local:000000000000:function:hello".into(),
            trace_id: "Root=1-abc".into(),
            client_context: None,
            cognito_identity: Some("{\"id\":1}".into()),
        }
    }

    #[test]
    fn round_trip_through_read_and_write() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &invoke(), b"{\"k\":1}").unwrap();
        write_frame(&mut wire, &Header::Ready, b"").unwrap();
        let mut r = &wire[..];
        let (h, body) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(h, invoke());
        assert_eq!(body, b"{\"k\":1}");
        let (h, body) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(h, Header::Ready);
        assert!(body.is_empty());
        assert!(read_frame(&mut r).unwrap().is_none(), "clean EOF is None");
    }

    #[test]
    fn wire_layout_is_length_prefixed_json() {
        let frame = encode_frame(&Header::Ready, b"xy").unwrap();
        let json = br#"{"type":"ready"}"#;
        let mut expected = (json.len() as u32).to_be_bytes().to_vec();
        expected.extend_from_slice(json);
        expected.extend_from_slice(&2u32.to_be_bytes());
        expected.extend_from_slice(b"xy");
        assert_eq!(frame, expected);
    }

    #[test]
    fn decode_frame_waits_for_whole_frame() {
        let frame = encode_frame(&invoke(), b"event").unwrap();
        for cut in 0..frame.len() {
            assert!(
                decode_frame(&frame[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let (h, body, used) = decode_frame(&two).unwrap().unwrap();
        assert_eq!(
            (h, body.as_slice(), used),
            (invoke(), &b"event"[..], frame.len())
        );
    }

    #[test]
    fn oversized_header_is_rejected_before_allocating() {
        let mut wire = ((MAX_HEADER_LEN + 1) as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(b"{}");
        let err = read_frame(&mut &wire[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("header"), "{err}");
        assert!(decode_frame(&wire).is_err());
    }

    #[test]
    fn oversized_body_is_rejected_before_allocating() {
        let json = br#"{"type":"ready"}"#;
        let mut wire = (json.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(json);
        wire.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = read_frame(&mut &wire[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("body"), "{err}");
        assert!(decode_frame(&wire).is_err());
    }

    #[test]
    fn oversized_body_is_refused_when_encoding() {
        let body = vec![0u8; MAX_BODY_LEN + 1];
        let err = encode_frame(&Header::Ready, &body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(encode_frame(&Header::Ready, &body[..MAX_BODY_LEN]).is_ok());
    }

    #[test]
    fn truncated_input_is_unexpected_eof() {
        let frame = encode_frame(&invoke(), b"event").unwrap();
        for cut in 1..frame.len() {
            let err = read_frame(&mut &frame[..cut]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_header_is_invalid_data() {
        for json in [
            &b"not json"[..],
            br#"{"type":"nope"}"#,
            br#"[1]"#,
            br#"{"id":"x"}"#,
        ] {
            let mut wire = (json.len() as u32).to_be_bytes().to_vec();
            wire.extend_from_slice(json);
            wire.extend_from_slice(&0u32.to_be_bytes());
            let err = read_frame(&mut &wire[..]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_options_are_none() {
        let h = decode_header(br#"{"type":"log","stream":"stdout","extra":1}"#).unwrap();
        assert_eq!(
            h,
            Header::Log {
                stream: "stdout".into(),
                id: None
            }
        );
    }

    #[test]
    fn golden_json_for_every_header() {
        let cases: Vec<(Header, &str)> = vec![
            (
                invoke(),
                r#"{"type":"invoke","id":"req-1","deadline_ms":1700000003000,"timeout_ms":3000,"function_arn":"arn:aws:lambda:local:000000000000:function:hello","trace_id":"Root=1-abc","client_context":null,"cognito_identity":"{\"id\":1}"}"#,
            ),
            (Header::Shutdown, r#"{"type":"shutdown"}"#),
            (
                Header::Hello {
                    instance: "i-1".into(),
                    pid: 1,
                },
                r#"{"type":"hello","instance":"i-1","pid":1}"#,
            ),
            (Header::Ready, r#"{"type":"ready"}"#),
            (
                Header::Specialize {
                    function: "hello".into(),
                    handler: "app.handler".into(),
                    env: vec!["AWS_LAMBDA_FUNCTION_NAME=hello".into(), "K=a=b".into()],
                    workers: 3,
                },
                r#"{"type":"specialize","function":"hello","handler":"app.handler","env":["AWS_LAMBDA_FUNCTION_NAME=hello","K=a=b"],"workers":3}"#,
            ),
            (Header::Waiting, r#"{"type":"waiting"}"#),
            (Header::Specialized, r#"{"type":"specialized"}"#),
            (
                Header::Response {
                    id: "r".into(),
                    content_type: Some("text/plain".into()),
                },
                r#"{"type":"response","id":"r","content_type":"text/plain"}"#,
            ),
            (
                Header::Error {
                    id: "r".into(),
                    error_type: Some("Runtime.Boom".into()),
                },
                r#"{"type":"error","id":"r","error_type":"Runtime.Boom"}"#,
            ),
            (
                Header::InitError { error_type: None },
                r#"{"type":"init_error","error_type":null}"#,
            ),
            (
                Header::Timeout {
                    id: "r".into(),
                    timeout_ms: 1500,
                },
                r#"{"type":"timeout","id":"r","timeout_ms":1500}"#,
            ),
            (
                Header::Log {
                    stream: "stderr".into(),
                    id: Some("r".into()),
                },
                r#"{"type":"log","stream":"stderr","id":"r"}"#,
            ),
            (
                Header::Exited {
                    code: None,
                    signal: Some(9),
                    during: Some("r".into()),
                },
                r#"{"type":"exited","code":null,"signal":9,"during":"r"}"#,
            ),
        ];
        for (header, golden) in cases {
            assert_eq!(serde_json::to_string(&header).unwrap(), golden);
            assert_eq!(decode_header(golden.as_bytes()).unwrap(), header);
        }
    }

    #[test]
    fn specialize_defaults_to_one_worker_and_no_env() {
        let h = decode_header(br#"{"type":"specialize","function":"f","handler":"h"}"#).unwrap();
        assert_eq!(
            h,
            Header::Specialize {
                function: "f".into(),
                handler: "h".into(),
                env: Vec::new(),
                workers: 1,
            }
        );
    }

    #[test]
    fn error_json_shape() {
        let v: serde_json::Value = serde_json::from_slice(&error_json("T", "m \"q\"")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errorMessage": "m \"q\"", "errorType": "T"})
        );
    }
}
