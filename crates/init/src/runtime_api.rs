//! The AWS Lambda Runtime API (2018-06-01), served to each bootstrap (worker) on its own loopback
//! listener, so that the agent knows which worker an invocation was handed to: one thread per
//! connection, HTTP/1.1 keep-alive. A deferred bootstrap of a generic instance also gets Strata's
//! extension `GET /2018-06-01/strata/specialization`.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::host::HostLink;
use crate::http::{self, Body, Head, HttpError};
use crate::invocation::{Invocation, Invocations, Reply};
use crate::protocol::{error_json, Header};
use crate::specialize::Rendezvous;

/// Largest accepted invocation response (Lambda's synchronous payload limit).
pub(crate) const MAX_RESPONSE: usize = 6 * 1024 * 1024;
/// Largest accepted error report (invocation or init error).
pub(crate) const MAX_ERROR: usize = 1024 * 1024;
/// Largest body accepted on any other route (bodies there are ignored).
const MAX_OTHER: usize = 64 * 1024;

const PREFIX: &str = "/2018-06-01/runtime/";
/// Where a deferred bootstrap waits for its specialization.
pub(crate) const SPECIALIZATION_PATH: &str = "/2018-06-01/strata/specialization";
const ERROR_TYPE_HEADER: &str = "Lambda-Runtime-Function-Error-Type";

/// Shared by all connections of one worker's listener.
#[derive(Debug)]
pub(crate) struct RuntimeApi {
    pub invocations: Arc<Invocations>,
    pub host: Arc<HostLink>,
    /// Which worker this listener serves.
    pub worker: usize,
    /// Set for the deferred bootstrap of a generic instance: the specialization endpoint is
    /// served (elsewhere it is a 404).
    pub specialization: Option<Arc<Rendezvous>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Next,
    Response(String),
    Error(String),
    InitError,
    Specialization,
    NotFound,
}

impl Route {
    fn parse(method: &str, path: &str) -> Route {
        if method == "GET" && path == SPECIALIZATION_PATH {
            return Route::Specialization;
        }
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return Route::NotFound;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match (method, parts.as_slice()) {
            ("GET", ["invocation", "next"]) => Route::Next,
            ("POST", ["invocation", id, "response"]) if !id.is_empty() => {
                Route::Response(id.to_string())
            }
            ("POST", ["invocation", id, "error"]) if !id.is_empty() => Route::Error(id.to_string()),
            ("POST", ["init", "error"]) => Route::InitError,
            _ => Route::NotFound,
        }
    }

    fn body_cap(&self) -> usize {
        match self {
            Route::Response(_) => MAX_RESPONSE,
            Route::Error(_) | Route::InitError => MAX_ERROR,
            Route::Next | Route::Specialization | Route::NotFound => MAX_OTHER,
        }
    }
}

/// A reply to the runtime.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body,
        }
    }

    fn accepted() -> Answer {
        Answer::json(202, br#"{"status":"OK"}"#.to_vec())
    }

    fn error(status: u16, error_type: &str, message: &str) -> Answer {
        Answer::json(status, error_json(error_type, message))
    }

    fn invalid_state() -> Answer {
        Answer::error(403, "InvalidStateTransition", "Invalid state")
    }

    fn unknown_id(id: &str) -> Answer {
        Answer::error(
            400,
            "InvalidRequestID",
            &format!("invocation {id:?} is not the invocation in progress"),
        )
    }

    fn too_large(cap: usize) -> Answer {
        Answer::error(
            413,
            "RequestEntityTooLarge",
            &format!("Exceeded maximum allowed payload size ({cap} bytes)."),
        )
    }
}

/// Accepts connections forever, one thread each.
pub(crate) fn serve(listener: TcpListener, api: Arc<RuntimeApi>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let api = api.clone();
                let spawned = std::thread::Builder::new()
                    .name("runtime-api-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || serve_connection(stream, &api));
                if let Err(e) = spawned {
                    eprintln!("strata-init: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                eprintln!("strata-init: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve_connection(stream: TcpStream, api: &RuntimeApi) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let head = match http::read_head(&mut reader) {
            Ok(head) => head,
            Err(HttpError::Malformed(msg)) => return bad_request(&mut writer, &msg),
            Err(HttpError::Closed | HttpError::Io(_)) => return,
        };
        let route = Route::parse(&head.method, &head.path);
        if head.expect_continue
            && head.framing != http::BodyFraming::None
            && writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        let body = match http::read_body(&mut reader, &head, route.body_cap()) {
            Ok(body) => body,
            Err(HttpError::Malformed(msg)) => return bad_request(&mut writer, &msg),
            Err(HttpError::Closed | HttpError::Io(_)) => return,
        };
        let keep_alive = head.keep_alive && !matches!(body, Body::TooLarge { drained: false });
        let answer = api.handle(route, &head, body);
        if http::write_response(
            &mut writer,
            answer.status,
            &answer.headers,
            &answer.body,
            keep_alive,
        )
        .is_err()
            || !keep_alive
        {
            return;
        }
    }
}

fn bad_request(writer: &mut TcpStream, msg: &str) {
    let answer = Answer::error(400, "InvalidRequest", msg);
    let _ = http::write_response(writer, 400, &answer.headers, &answer.body, false);
}

impl RuntimeApi {
    fn handle(&self, route: Route, head: &Head, body: Body) -> Answer {
        match route {
            Route::Next => self.next(),
            Route::Response(id) => self.response(&id, head, body),
            Route::Error(id) => self.error(&id, head, body),
            Route::InitError => self.init_error(head, body),
            Route::Specialization if self.specialization.is_some() => self.specialization(),
            Route::Specialization | Route::NotFound => Answer::error(
                404,
                "NotFound",
                &format!("no such Runtime API route: {} {}", head.method, head.path),
            ),
        }
    }

    /// Blocks until the instance is specialized, then answers the function's handler and
    /// environment. `Waiting` goes out when the first request arrives, `Specialized` just before
    /// the first answer (so it precedes anything the specialized bootstrap does).
    fn specialization(&self) -> Answer {
        let Some(rendezvous) = &self.specialization else {
            return Answer::invalid_state();
        };
        if rendezvous.ask() {
            if let Some(failed) = self.send(&Header::Waiting, b"") {
                return failed;
            }
        }
        let (payload, first) = rendezvous.wait();
        if first {
            if let Some(failed) = self.send(&Header::Specialized, b"") {
                return failed;
            }
        }
        Answer::json(200, payload)
    }

    fn send(&self, header: &Header, body: &[u8]) -> Option<Answer> {
        match self.host.send(header, body) {
            Ok(()) => None,
            Err(e) => Some(Answer::error(
                500,
                "ServiceException",
                &format!("cannot reach the Strata host: {e}"),
            )),
        }
    }

    fn next(&self) -> Answer {
        if self.invocations.begin_next(self.worker) {
            if let Some(failed) = self.send(&Header::Ready, b"") {
                return failed;
            }
        }
        let invocation = self.invocations.wait_next(self.worker);
        next_answer(invocation)
    }

    fn response(&self, id: &str, head: &Head, body: Body) -> Answer {
        let bytes = match body {
            Body::Complete { bytes, .. } => Some(bytes),
            Body::TooLarge { .. } => None,
        };
        match self.invocations.reply(id) {
            Reply::UnknownId => return Answer::unknown_id(id),
            Reply::AlreadyFinished => return Answer::invalid_state(),
            Reply::Accepted => {}
        }
        let Some(bytes) = bytes else {
            // Lambda fails the invocation when its response is too large.
            let error_type = "Function.ResponseSizeTooLarge";
            let message = format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)."
            );
            let header = Header::Error {
                id: id.to_string(),
                error_type: Some(error_type.into()),
            };
            return self
                .send(&header, &error_json(error_type, &message))
                .unwrap_or_else(|| Answer::too_large(MAX_RESPONSE));
        };
        let header = Header::Response {
            id: id.to_string(),
            content_type: head.header("content-type").map(str::to_string),
        };
        self.send(&header, &bytes).unwrap_or_else(Answer::accepted)
    }

    fn error(&self, id: &str, head: &Head, body: Body) -> Answer {
        match self.invocations.reply(id) {
            Reply::UnknownId => return Answer::unknown_id(id),
            Reply::AlreadyFinished => return Answer::invalid_state(),
            Reply::Accepted => {}
        }
        let (error_type, report, answer) = error_report(head.header(ERROR_TYPE_HEADER), body);
        let header = Header::Error {
            id: id.to_string(),
            error_type,
        };
        self.send(&header, &report).unwrap_or(answer)
    }

    fn init_error(&self, head: &Head, body: Body) -> Answer {
        if !self.invocations.report_init_error(self.worker) {
            return Answer::invalid_state();
        }
        let (error_type, report, answer) = error_report(head.header(ERROR_TYPE_HEADER), body);
        self.send(&Header::InitError { error_type }, &report)
            .unwrap_or(answer)
    }
}

fn next_answer(invocation: Invocation) -> Answer {
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("Lambda-Runtime-Aws-Request-Id", invocation.id),
        (
            "Lambda-Runtime-Deadline-Ms",
            invocation.deadline_ms.to_string(),
        ),
        (
            "Lambda-Runtime-Invoked-Function-Arn",
            invocation.function_arn,
        ),
        ("Lambda-Runtime-Trace-Id", invocation.trace_id),
    ];
    if let Some(context) = invocation.client_context {
        headers.push(("Lambda-Runtime-Client-Context", context));
    }
    if let Some(identity) = invocation.cognito_identity {
        headers.push(("Lambda-Runtime-Cognito-Identity", identity));
    }
    Answer {
        status: 200,
        headers,
        body: invocation.event,
    }
}

/// Turns a posted error into (error type, error JSON to forward, reply to the runtime). A JSON
/// object is forwarded as posted; anything else is replaced by a synthesized
/// `{"errorMessage","errorType"}`. The type is the error-type header, else the body's `errorType`.
fn error_report(header_type: Option<&str>, body: Body) -> (Option<String>, Vec<u8>, Answer) {
    let header_type = header_type.filter(|t| !t.is_empty()).map(str::to_string);
    let bytes = match body {
        Body::Complete { bytes, .. } => bytes,
        Body::TooLarge { .. } => {
            let error_type = header_type.unwrap_or_else(|| "Unhandled".into());
            let message =
                format!("The error report exceeded the maximum allowed size ({MAX_ERROR} bytes).");
            let report = error_json(&error_type, &message);
            return (Some(error_type), report, Answer::too_large(MAX_ERROR));
        }
    };
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        let error_type = header_type.or_else(|| {
            map.get("errorType")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        });
        return (error_type, bytes, Answer::accepted());
    }
    let error_type = header_type.unwrap_or_else(|| "Unhandled".into());
    let text = String::from_utf8_lossy(&bytes);
    let message = match text.trim() {
        "" => "Unknown application error.",
        text => text,
    };
    (
        Some(error_type.clone()),
        error_json(&error_type, message),
        Answer::accepted(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8]) -> Body {
        Body::Complete {
            bytes: bytes.to_vec(),
            trailers: Vec::new(),
        }
    }

    #[test]
    fn routes() {
        let p = |m, p| Route::parse(m, p);
        assert_eq!(p("GET", "/2018-06-01/runtime/invocation/next"), Route::Next);
        assert_eq!(
            p("POST", "/2018-06-01/runtime/invocation/abc-1/response"),
            Route::Response("abc-1".into())
        );
        assert_eq!(
            p("POST", "/2018-06-01/runtime/invocation/abc/error"),
            Route::Error("abc".into())
        );
        assert_eq!(
            p("POST", "/2018-06-01/runtime/init/error"),
            Route::InitError
        );
        assert_eq!(
            p("GET", "/2018-06-01/strata/specialization"),
            Route::Specialization
        );
        for (m, path) in [
            ("POST", "/2018-06-01/runtime/invocation/next"),
            ("GET", "/2018-06-01/runtime/invocation/abc/response"),
            ("POST", "/2018-06-01/runtime/invocation//response"),
            ("POST", "/2018-06-01/runtime/invocation/a/b/response"),
            ("GET", "/2020-01-01/runtime/invocation/next"),
            ("POST", "/2018-06-01/strata/specialization"),
            ("GET", "/2018-06-01/runtime/strata/specialization"),
            ("GET", "/"),
        ] {
            assert_eq!(p(m, path), Route::NotFound, "{m} {path}");
        }
    }

    #[test]
    fn error_reports() {
        let (t, body, a) = error_report(Some("Custom.E"), complete(br#"{"errorMessage":"m"}"#));
        assert_eq!(
            (t.as_deref(), body.as_slice(), a.status),
            (Some("Custom.E"), &br#"{"errorMessage":"m"}"#[..], 202)
        );

        let (t, _, _) = error_report(None, complete(br#"{"errorType":"FromBody"}"#));
        assert_eq!(t.as_deref(), Some("FromBody"));

        let (t, body, _) = error_report(None, complete(b""));
        assert_eq!(t.as_deref(), Some("Unhandled"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorMessage"], "Unknown application error.");

        let (t, body, _) = error_report(Some("X"), complete(b"plain text"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (t.as_deref(), &v["errorMessage"], &v["errorType"]),
            (Some("X"), &"plain text".into(), &"X".into())
        );

        let (t, _, a) = error_report(None, Body::TooLarge { drained: true });
        assert_eq!((t.as_deref(), a.status), (Some("Unhandled"), 413));
    }

    #[test]
    fn next_answer_carries_lambda_headers() {
        let a = next_answer(Invocation {
            id: "r1".into(),
            deadline_ms: 42,
            function_arn: "arn:x".into(),
            trace_id: "Root=1".into(),
            client_context: Some("{}".into()),
            cognito_identity: None,
            event: b"{\"a\":1}".to_vec(),
        });
        let get = |n: &str| {
            a.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(a.status, 200);
        assert_eq!(get("Lambda-Runtime-Aws-Request-Id"), Some("r1"));
        assert_eq!(get("Lambda-Runtime-Deadline-Ms"), Some("42"));
        assert_eq!(get("Lambda-Runtime-Invoked-Function-Arn"), Some("arn:x"));
        assert_eq!(get("Lambda-Runtime-Trace-Id"), Some("Root=1"));
        assert_eq!(get("Lambda-Runtime-Client-Context"), Some("{}"));
        assert_eq!(get("Lambda-Runtime-Cognito-Identity"), None);
        assert_eq!(a.body, b"{\"a\":1}");
    }
}
