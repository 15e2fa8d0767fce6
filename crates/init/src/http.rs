//! A small HTTP/1.1 server-side codec: request heads, `Content-Length` and chunked bodies with a
//! size cap, and responses. Just enough for the Runtime API's local clients; it never panics on
//! bad input and reports what was wrong.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

/// Largest request line or header line, and largest whole request head.
pub(crate) const MAX_HEAD_LEN: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_CHUNK_LINE: usize = 4096;
/// A body over its cap is read and thrown away (so the client sees the 413) up to this many
/// bytes; past it the connection is closed instead.
pub(crate) const MAX_DRAIN: u64 = 64 * 1024 * 1024;

/// Why a request could not be read.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// The peer closed the connection before sending a byte of a new request.
    Closed,
    /// The request is not valid HTTP/1.x; the message says what was wrong.
    Malformed(String),
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Closed => write!(f, "connection closed"),
            HttpError::Malformed(msg) => write!(f, "malformed request: {msg}"),
            HttpError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

fn malformed(msg: impl Into<String>) -> HttpError {
    HttpError::Malformed(msg.into())
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request line and headers.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    /// The path, without any query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub keep_alive: bool,
    pub framing: BodyFraming,
    pub expect_continue: bool,
}

impl Head {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A request body, read up to a cap.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// The whole body, and any chunked trailers.
    Complete {
        bytes: Vec<u8>,
        trailers: Vec<(String, String)>,
    },
    /// The body was larger than the cap. It was drained, so the connection can be reused, unless
    /// `drained` is false (it exceeded [`MAX_DRAIN`]; close the connection).
    TooLarge { drained: bool },
}

/// Reads one line ending in LF (a preceding CR is dropped), at most `max` bytes. `Ok(None)` means
/// end of stream before any byte.
fn read_line(r: &mut impl BufRead, max: usize) -> Result<Option<Vec<u8>>, HttpError> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(malformed("connection closed in the middle of a line"));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max + 2 {
            return Err(malformed(format!("line longer than {max} bytes")));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > max {
                return Err(malformed(format!("line longer than {max} bytes")));
            }
            return Ok(Some(line));
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads a request line and headers. `HttpError::Closed` if the peer closed the connection
/// between requests.
pub(crate) fn read_head(r: &mut impl BufRead) -> Result<Head, HttpError> {
    // Tolerate empty lines before a request line (RFC 9112 §2.2).
    let mut line = loop {
        match read_line(r, MAX_HEAD_LEN)? {
            None => return Err(HttpError::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut head_len = line.len();
    let request_line = String::from_utf8(std::mem::take(&mut line))
        .map_err(|_| malformed("request line is not UTF-8"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("request line must be `METHOD TARGET HTTP/1.1`"));
    };
    if !is_token(method) {
        return Err(malformed(format!("bad method {method:?}")));
    }
    if !target.starts_with('/') {
        return Err(malformed(format!(
            "request target {target:?} must start with `/`"
        )));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => {
            return Err(malformed(format!(
                "unsupported protocol version {version:?}"
            )))
        }
    };
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or(target)
        .to_string();

    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(r, MAX_HEAD_LEN)? else {
            return Err(malformed("connection closed inside the request head"));
        };
        if line.is_empty() {
            break;
        }
        head_len += line.len();
        if head_len > MAX_HEAD_LEN {
            return Err(malformed(format!(
                "request head longer than {MAX_HEAD_LEN} bytes"
            )));
        }
        if headers.len() == MAX_HEADERS {
            return Err(malformed(format!("more than {MAX_HEADERS} header fields")));
        }
        headers.push(parse_header_line(&line)?);
    }

    let mut keep_alive = http11;
    if let Some(conn) = header(&headers, "connection") {
        for token in conn.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if token.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let framing = body_framing(&headers)?;
    let expect_continue = http11
        && header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    Ok(Head {
        method: method.to_string(),
        path,
        headers,
        keep_alive,
        framing,
        expect_continue,
    })
}

fn parse_header_line(line: &[u8]) -> Result<(String, String), HttpError> {
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err(malformed("folded header lines are not supported"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| malformed("header line without `:`"))?;
    let name = std::str::from_utf8(&line[..colon])
        .ok()
        .filter(|n| is_token(n))
        .ok_or_else(|| malformed("bad header name"))?;
    let value = &line[colon + 1..];
    if value.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(malformed(format!("bad character in header {name}")));
    }
    let value = String::from_utf8_lossy(value)
        .trim_matches([' ', '\t'])
        .to_string();
    Ok((name.to_string(), value))
}

fn body_framing(headers: &[(String, String)]) -> Result<BodyFraming, HttpError> {
    let mut length: Option<u64> = None;
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for item in v.split(',').map(str::trim) {
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(format!("bad Content-Length {v:?}")));
            }
            let n: u64 = item
                .parse()
                .map_err(|_| malformed(format!("bad Content-Length {v:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            length = Some(n);
        }
    }
    let codings: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(',').map(|c| c.trim().to_ascii_lowercase()))
        .filter(|c| !c.is_empty())
        .collect();
    if codings.is_empty() {
        return Ok(match length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        });
    }
    if length.is_some() {
        return Err(malformed(
            "both Content-Length and Transfer-Encoding are set",
        ));
    }
    if codings.as_slice() != ["chunked"] {
        return Err(malformed(format!(
            "unsupported Transfer-Encoding {:?} (only `chunked` is accepted)",
            codings.join(", ")
        )));
    }
    Ok(BodyFraming::Chunked)
}

/// Reads the body described by `head`, keeping at most `cap` bytes.
pub(crate) fn read_body(r: &mut impl BufRead, head: &Head, cap: usize) -> Result<Body, HttpError> {
    match head.framing {
        BodyFraming::None => Ok(Body::Complete {
            bytes: Vec::new(),
            trailers: Vec::new(),
        }),
        BodyFraming::Length(n) => {
            if n > cap as u64 {
                if n > MAX_DRAIN {
                    return Ok(Body::TooLarge { drained: false });
                }
                let copied = io::copy(&mut r.take(n), &mut io::sink())?;
                if copied < n {
                    return Err(malformed("connection closed inside the body"));
                }
                return Ok(Body::TooLarge { drained: true });
            }
            let mut bytes = Vec::with_capacity(n as usize);
            r.take(n).read_to_end(&mut bytes)?;
            if (bytes.len() as u64) < n {
                return Err(malformed("connection closed inside the body"));
            }
            Ok(Body::Complete {
                bytes,
                trailers: Vec::new(),
            })
        }
        BodyFraming::Chunked => read_chunked(r, cap),
    }
}

fn read_chunked(r: &mut impl BufRead, cap: usize) -> Result<Body, HttpError> {
    let mut bytes = Vec::new();
    let mut total: u64 = 0;
    let mut too_large = false;
    loop {
        let line = read_line(r, MAX_CHUNK_LINE)?
            .ok_or_else(|| malformed("connection closed inside a chunked body"))?;
        let line = String::from_utf8(line).map_err(|_| malformed("bad chunk size line"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed(format!("bad chunk size {size:?}")));
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| malformed("bad chunk size"))?;
        if size == 0 {
            break;
        }
        total += size;
        if total > MAX_DRAIN {
            return Ok(Body::TooLarge { drained: false });
        }
        if too_large || total > cap as u64 {
            too_large = true;
            bytes = Vec::new();
            let copied = io::copy(&mut r.take(size), &mut io::sink())?;
            if copied < size {
                return Err(malformed("connection closed inside a chunk"));
            }
        } else {
            let before = bytes.len();
            r.take(size).read_to_end(&mut bytes)?;
            if ((bytes.len() - before) as u64) < size {
                return Err(malformed("connection closed inside a chunk"));
            }
        }
        match read_line(r, MAX_CHUNK_LINE)? {
            Some(l) if l.is_empty() => {}
            _ => return Err(malformed("chunk data not followed by CRLF")),
        }
    }
    let mut trailers = Vec::new();
    let mut trailer_len = 0;
    loop {
        let line = read_line(r, MAX_HEAD_LEN)?
            .ok_or_else(|| malformed("connection closed inside chunked trailers"))?;
        if line.is_empty() {
            break;
        }
        trailer_len += line.len();
        if trailer_len > MAX_HEAD_LEN || trailers.len() == MAX_HEADERS {
            return Err(malformed("chunked trailers too large"));
        }
        trailers.push(parse_header_line(&line)?);
    }
    if too_large {
        return Ok(Body::TooLarge { drained: true });
    }
    Ok(Body::Complete { bytes, trailers })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "",
    }
}

/// Drops characters that cannot appear in a header value.
pub(crate) fn header_value(value: &str) -> String {
    value
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}

/// Writes a response with a `Content-Length` body.
pub(crate) fn write_response(
    w: &mut impl Write,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&header_value(value));
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    w.write_all(&bytes)?;
    w.flush()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], cap: usize) -> Result<(Head, Body), HttpError> {
        let mut r = io::BufReader::new(raw);
        let head = read_head(&mut r)?;
        let body = read_body(&mut r, &head, cap)?;
        Ok((head, body))
    }

    fn complete(body: Body) -> Vec<u8> {
        match body {
            Body::Complete { bytes, .. } => bytes,
            other => panic!("expected a complete body, got {other:?}"),
        }
    }

    #[test]
    fn get_without_body() {
        let (head, body) = parse(
            b"GET /2018-06-01/runtime/invocation/next?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            10,
        )
        .unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/2018-06-01/runtime/invocation/next");
        assert_eq!(head.header("HOST"), Some("a"));
        assert!(head.keep_alive);
        assert_eq!(complete(body), b"");
    }

    #[test]
    fn content_length_body() {
        let raw =
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhelloGET";
        let (head, body) = parse(raw, 10).unwrap();
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert_eq!(head.header("content-type"), Some("text/plain"));
        assert_eq!(complete(body), b"hello");
    }

    #[test]
    fn two_requests_on_one_connection() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\n";
        let mut r = io::BufReader::new(&raw[..]);
        let head = read_head(&mut r).unwrap();
        assert_eq!(complete(read_body(&mut r, &head, 10).unwrap()), b"hi");
        let head = read_head(&mut r).unwrap();
        assert_eq!(head.path, "/b");
        assert!(matches!(read_head(&mut r), Err(HttpError::Closed)));
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nLambda-Runtime-Function-Error-Type: E\r\n\r\n";
        let (head, body) = parse(raw, 100).unwrap();
        assert_eq!(head.framing, BodyFraming::Chunked);
        match body {
            Body::Complete { bytes, trailers } => {
                assert_eq!(bytes, b"hello world");
                assert_eq!(
                    header(&trailers, "lambda-runtime-function-error-type"),
                    Some("E")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_bodies_are_drained_and_reported() {
        let raw =
            b"POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello worldGET /n HTTP/1.1\r\n\r\n";
        let mut r = io::BufReader::new(&raw[..]);
        let head = read_head(&mut r).unwrap();
        assert_eq!(
            read_body(&mut r, &head, 10).unwrap(),
            Body::TooLarge { drained: true }
        );
        assert_eq!(
            read_head(&mut r).unwrap().path,
            "/n",
            "connection still usable"
        );

        let raw = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
        assert_eq!(parse(raw, 10).unwrap().1, Body::TooLarge { drained: true });
        assert!(matches!(parse(raw, 11).unwrap().1, Body::Complete { .. }));

        let huge = format!(
            "POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_DRAIN + 1
        );
        assert_eq!(
            parse(huge.as_bytes(), 10).unwrap().1,
            Body::TooLarge { drained: false }
        );
    }

    #[test]
    fn http10_closes_by_default_and_connection_close_is_honoured() {
        let (head, _) = parse(b"GET / HTTP/1.0\r\n\r\n", 0).unwrap();
        assert!(!head.keep_alive);
        let (head, _) = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0).unwrap();
        assert!(head.keep_alive);
        let (head, _) = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0).unwrap();
        assert!(!head.keep_alive);
    }

    #[test]
    fn expect_continue_is_detected() {
        let (head, _) = parse(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
            1,
        )
        .unwrap();
        assert!(head.expect_continue);
    }

    #[test]
    fn malformed_requests_are_rejected() {
        let cases: &[&[u8]] = &[
            b"GET\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET nopath HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
            b"GET / HTTP/1.1\r\nHost: a",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ];
        for raw in cases {
            match parse(raw, 100) {
                Err(HttpError::Malformed(_)) => {}
                other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(raw)),
            }
        }
    }

    #[test]
    fn overlong_head_is_rejected() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..2000 {
            raw.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(40)).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&raw, 0), Err(HttpError::Malformed(_))));
        let long_line = [
            b"GET /".as_slice(),
            &vec![b'a'; MAX_HEAD_LEN + 10],
            b" HTTP/1.1\r\n\r\n",
        ]
        .concat();
        assert!(matches!(parse(&long_line, 0), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn response_is_well_formed() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            202,
            &[("X-A", "b\r\nInjected: 1".into())],
            b"{}",
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 202 Accepted\r\nX-A: bInjected: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }
}
