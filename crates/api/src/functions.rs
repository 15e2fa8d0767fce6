//! Function routes: deploy (code + configuration), invoke, the HTTP trigger, logs, volumes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use strata_control::CodeInput;
use strata_control::{now_ms, FailureKind, InvokeFailure, InvokeResult};
use strata_types::api::{
    ApplyResult, CreateFunctionSpec, FunctionConfig, FunctionInfo, FunctionUpdate, GitSource,
    LogEntry, VolumeInfo,
};
use strata_types::ErrorKind;

use crate::handlers::receive;
use crate::stream::NDJSON;
use crate::{ApiErr, AppState};

type ApiResult<T> = Result<T, ApiErr>;

/// Largest invocation payload (as Lambda's synchronous limit).
pub const MAX_EVENT_BYTES: usize = 6 << 20;

fn bad(m: impl Into<String>) -> ApiErr {
    ApiErr::new(ErrorKind::InvalidArgument, m)
}

/// The code of a function form: an uploaded archive or a git source for the server to fetch.
enum FormCode {
    /// The archive, in a scratch dir removed when the form is dropped.
    Upload {
        _scratch: Upload,
        file: std::path::PathBuf,
    },
    Git(GitSource),
}

impl FormCode {
    fn input(&self) -> CodeInput<'_> {
        match self {
            FormCode::Upload { file, .. } => CodeInput::Archive(file),
            FormCode::Git(g) => CodeInput::Git(g),
        }
    }
}

/// Reads a function form: a JSON part (`spec`, `update` or `config`) and optionally either a
/// `code` archive or a `git` part (`{"url", "ref", "subdir"}`) for the server to fetch.
async fn read_form<T: serde::de::DeserializeOwned>(
    s: &AppState,
    form: &mut Multipart,
    json_part: &str,
) -> ApiResult<(Option<T>, Option<FormCode>)> {
    let mut value = None;
    let mut code: Option<FormCode> = None;
    let twice = || bad("give the code once: either a code part or a git part");
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("invalid multipart body: {}", e.body_text())))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == json_part {
            let text = field
                .text()
                .await
                .map_err(|e| bad(format!("invalid {json_part} part: {}", e.body_text())))?;
            value = Some(
                serde_json::from_str(&text)
                    .map_err(|e| bad(format!("invalid {json_part} part: {e}")))?,
            );
        } else if name == "code" {
            if code.is_some() {
                return Err(twice());
            }
            let scratch = Upload::new(s)?;
            receive(field, &scratch.file(), s.max_upload).await?;
            let file = scratch.file();
            code = Some(FormCode::Upload {
                _scratch: scratch,
                file,
            });
        } else if name == "git" {
            if code.is_some() {
                return Err(twice());
            }
            let text = field
                .text()
                .await
                .map_err(|e| bad(format!("invalid git part: {}", e.body_text())))?;
            let git: GitSource = serde_json::from_str(&text).map_err(|e| {
                bad(format!(
                    "invalid git part: {e}; expected {{\"url\": ..., \"ref\": ..., \"subdir\": ...}}"
                ))
            })?;
            code = Some(FormCode::Git(git));
        } else {
            return Err(bad(format!(
                "unexpected form part {name:?}: expected {json_part} and code or git"
            )));
        }
    }
    Ok((value, code))
}

/// A scratch directory holding one uploaded file.
struct Upload(strata_control::ScratchDir);

impl Upload {
    fn new(s: &AppState) -> ApiResult<Upload> {
        Ok(Upload(
            s.platform
                .store()
                .scratch_dir("upload")
                .map_err(strata_control::ControlError::from)?,
        ))
    }

    fn file(&self) -> std::path::PathBuf {
        self.0.path().join("code")
    }
}

pub async fn create(
    State(s): State<AppState>,
    mut form: Multipart,
) -> ApiResult<(StatusCode, Json<FunctionInfo>)> {
    let (spec, code) = read_form::<CreateFunctionSpec>(&s, &mut form, "spec").await?;
    let spec = spec.ok_or_else(|| bad("missing spec part"))?;
    let code = code.ok_or_else(|| {
        bad("missing code: a code part (zip, tar or tar.gz of the function's code) or a git part")
    })?;
    let info = s
        .platform
        .create_function_from(&spec.name, spec.config, code.input())
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn update(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    mut form: Multipart,
) -> ApiResult<Json<FunctionInfo>> {
    let (update, code) = read_form::<FunctionUpdate>(&s, &mut form, "update").await?;
    let update = update.unwrap_or_default();
    let info = s
        .platform
        .update_function_from(&name, update, code.as_ref().map(FormCode::input))
        .await?;
    Ok(Json(info))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyQuery {
    /// Say what would change without changing anything.
    #[serde(default)]
    dry_run: bool,
}

/// `PUT /v1/functions/{name}`: make the function match a complete configuration (the `config`
/// part) and, optionally, new code (`code` or `git`); answers what was done and which fields
/// changed. Without code, an existing function keeps its code.
pub async fn apply(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<ApplyQuery>,
    mut form: Multipart,
) -> ApiResult<Json<ApplyResult>> {
    let (config, code) = read_form::<FunctionConfig>(&s, &mut form, "config").await?;
    let config = config.ok_or_else(|| {
        bad("missing config part: the function's whole configuration (runtime, handler, ...)")
    })?;
    let result = s
        .platform
        .apply_function(&name, config, code.as_ref().map(FormCode::input), q.dry_run)
        .await?;
    Ok(Json(result))
}

pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<FunctionInfo>>> {
    Ok(Json(s.platform.functions()?))
}

pub async fn get(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<FunctionInfo>> {
    Ok(Json(s.platform.function(&name)?))
}

pub async fn delete(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    s.platform.delete_function(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/functions/{name}/invoke`: the body is the event; the answer is the handler's result.
pub async fn invoke(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Response {
    let event = match to_bytes(body, MAX_EVENT_BYTES).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let event = if event.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        event
    };
    match s.platform.invoke(&name, event.to_vec()).await {
        Ok(r) => ok_response(
            &r,
            r.content_type
                .clone()
                .unwrap_or_else(|| "application/json".into()),
            r.body.clone(),
        ),
        Err(f) => failure_response(&f),
    }
}

fn too_large() -> Response {
    let f = InvokeFailure {
        kind: FailureKind::Platform,
        error: strata_types::api::InvokeError {
            error_message: format!("request payload larger than {MAX_EVENT_BYTES} bytes"),
            error_type: "Strata.RequestTooLarge".into(),
            stack_trace: vec![],
        },
    };
    let mut r = failure_response(&f);
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r
}

fn ok_response(r: &InvokeResult, content_type: String, body: Vec<u8>) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&r.id) {
        h.insert("x-strata-invocation-id", v);
    }
    h.insert(
        "x-strata-cold-start",
        HeaderValue::from_static(if r.cold { "true" } else { "false" }),
    );
    resp
}

/// The HTTP status of a failed invocation: the one place this mapping lives.
pub fn failure_status(f: &InvokeFailure) -> StatusCode {
    match f.kind {
        FailureKind::Function => StatusCode::BAD_GATEWAY,
        FailureKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        FailureKind::OutOfMemory => StatusCode::INSUFFICIENT_STORAGE,
        FailureKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        FailureKind::Platform if f.error.error_type == "Strata.NotFound" => StatusCode::NOT_FOUND,
        FailureKind::Platform => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn failure_response(f: &InvokeFailure) -> Response {
    let kind = match f.kind {
        FailureKind::Function => "function",
        FailureKind::Timeout => "timeout",
        FailureKind::OutOfMemory => "out_of_memory",
        FailureKind::Overloaded => "overloaded",
        FailureKind::Platform => "platform",
    };
    let mut resp = (failure_status(f), Json(&f.error)).into_response();
    resp.headers_mut()
        .insert("x-strata-error-kind", HeaderValue::from_static(kind));
    if f.kind == FailureKind::Overloaded {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The answer of a private function's trigger called without the right token: 401 in the
/// Lambda error shape, with `WWW-Authenticate: Bearer`.
fn trigger_unauthorized() -> Response {
    let error = strata_types::api::InvokeError {
        error_message:
            "this function's HTTP trigger is private: send Authorization: Bearer <token>, \
                        or make it public with strata fn update NAME --public true"
                .into(),
        error_type: "Strata.Unauthorized".into(),
        stack_trace: vec![],
    };
    let mut resp = (StatusCode::UNAUTHORIZED, Json(&error)).into_response();
    let h = resp.headers_mut();
    h.insert(
        "x-strata-error-kind",
        HeaderValue::from_static("unauthenticated"),
    );
    h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The answer to a trigger request that matches none of the function's routes: 404 in the
/// Lambda error shape.
fn no_route(method: &Method, path: &str) -> Response {
    let f = InvokeFailure {
        kind: FailureKind::Platform,
        error: strata_types::api::InvokeError {
            error_message: format!("no route of this function matches {method} {path}"),
            error_type: "Strata.NotFound".into(),
            stack_trace: vec![],
        },
    };
    failure_response(&f)
}

/// `ANY /fn/{name}/{*path}`: a Lambda Function-URL-style (payload 2.0) event in, the handler's
/// `{statusCode, headers, body}` out. A private function (the default) needs the bearer token,
/// checked before the body is read; an unknown function counts as private, so callers without
/// the token cannot tell which names exist.
pub async fn http_trigger(
    State(s): State<AppState>,
    UrlPath(params): UrlPath<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(name) = params.get("name").cloned() else {
        return ApiErr::new(ErrorKind::NotFound, "no function in the path").into_response();
    };
    let mut headers = headers;
    if crate::has_token(&s, &headers) {
        // The admin token is the platform's, never the function's: it does not reach the event.
        headers.remove(header::AUTHORIZATION);
    } else if !s.platform.function_is_public(&name) {
        return trigger_unauthorized();
    }
    let path = format!("/{}", params.get("path").map(String::as_str).unwrap_or(""));
    if !s
        .platform
        .function_route_matches(&name, method.as_str(), &path)
    {
        return no_route(&method, &path);
    }
    let body = match to_bytes(body, MAX_EVENT_BYTES).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let event = http_event(&method, &path, uri.query().unwrap_or(""), &headers, &body);
    let event = serde_json::to_vec(&event).unwrap_or_default();
    match s.platform.invoke(&name, event).await {
        Ok(r) => http_response(&r),
        Err(f) => failure_response(&f),
    }
}

/// Builds a payload-2.0 event.
pub fn http_event(
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> serde_json::Value {
    let mut hmap: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (k, v) in headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        if k == header::COOKIE {
            cookies.extend(
                v.split(';')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        hmap.entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v)
            })
            .or_insert(v);
    }
    let mut qs: BTreeMap<String, String> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        qs.entry(k)
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v)
            })
            .or_insert(v);
    }
    let (body_text, b64) = match std::str::from_utf8(body) {
        Ok(t) => (t.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let now = now_ms();
    let mut ev = serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": hmap,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "strata",
            "domainName": headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost"),
            "http": {
                "method": method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get(header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": strata_control::random_hex(16),
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": now,
        },
        "isBase64Encoded": b64,
    });
    if !qs.is_empty() {
        ev["queryStringParameters"] = serde_json::json!(qs);
    }
    if !cookies.is_empty() {
        ev["cookies"] = serde_json::json!(cookies);
    }
    if !body.is_empty() {
        ev["body"] = serde_json::Value::String(body_text);
    }
    ev
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Maps a handler's result to an HTTP response as Function URLs do: an object with
/// `statusCode` is a response description; anything else is a 200 JSON body.
pub fn http_response(r: &InvokeResult) -> Response {
    let v: serde_json::Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(_) => return ok_response(r, "application/octet-stream".into(), r.body.clone()),
    };
    let Some(obj) = v.as_object().filter(|o| o.contains_key("statusCode")) else {
        return ok_response(r, "application/json".into(), r.body.clone());
    };
    let status = obj
        .get("statusCode")
        .and_then(|s| s.as_u64())
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let body = match obj.get("body") {
        Some(serde_json::Value::String(s)) => {
            if obj
                .get("isBase64Encoded")
                .and_then(|b| b.as_bool())
                .unwrap_or(false)
            {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .unwrap_or_else(|_| s.clone().into_bytes())
            } else {
                s.clone().into_bytes()
            }
        }
        Some(serde_json::Value::Null) | None => Vec::new(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut resp = ok_response(r, "application/json".into(), body);
    *resp.status_mut() = status;
    if let Some(hs) = obj.get("headers").and_then(|h| h.as_object()) {
        for (k, v) in hs {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                resp.headers_mut().insert(k, v);
            }
        }
    }
    if let Some(cs) = obj.get("cookies").and_then(|c| c.as_array()) {
        for c in cs.iter().filter_map(|c| c.as_str()) {
            if let Ok(v) = HeaderValue::from_str(c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
    resp
}

#[derive(Deserialize)]
pub struct LogQuery {
    /// Only entries at or after this time (ms since the epoch).
    #[serde(default)]
    since_ms: u64,
    /// At most this many past entries.
    #[serde(default = "default_limit")]
    limit: usize,
    /// Keep the stream open and send new entries as they come.
    #[serde(default)]
    follow: bool,
}

fn default_limit() -> usize {
    1000
}

/// `GET /v1/functions/{name}/logs`: NDJSON log entries.
pub async fn logs(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    s.platform.function(&name)?;
    let mut rx = q.follow.then(|| s.platform.subscribe_logs());
    let past = s
        .platform
        .read_logs(&name, q.since_ms, q.limit.min(100_000));
    let line = |e: &LogEntry| {
        let mut v = serde_json::to_vec(e).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    };
    let head: Vec<Result<Bytes, Infallible>> = past.iter().map(|e| Ok(line(e))).collect();
    let body = match rx.take() {
        None => Body::from_stream(futures_util::stream::iter(head)),
        Some(rx) => {
            let live = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |e| {
                let name = name.clone();
                async move {
                    match e {
                        Ok(e) if e.function == name => {
                            let mut v = serde_json::to_vec(&e).unwrap_or_default();
                            v.push(b'\n');
                            Some(Ok::<_, Infallible>(Bytes::from(v)))
                        }
                        _ => None,
                    }
                }
            });
            // A heartbeat keeps proxies from closing an idle follow.
            let beat = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                Duration::from_secs(15),
            ))
            .map(|_| Ok::<_, Infallible>(Bytes::from_static(b"\n")));
            Body::from_stream(
                futures_util::stream::iter(head).chain(futures_util::stream::select(live, beat)),
            )
        }
    };
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.platform.metrics_text(),
    )
        .into_response()
}

/// `PUT /v1/runtimes/{name}/pool`: the generic pool size of a runtime's versions.
pub async fn set_pool(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<strata_types::api::PoolSettings>, JsonRejection>,
) -> ApiResult<Json<strata_types::api::PoolSettings>> {
    let Json(p) = body.map_err(|e| bad(format!("invalid JSON body: {}", e.body_text())))?;
    Ok(Json(s.platform.set_pool(&name, p)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    name: String,
}

pub async fn create_volume(
    State(s): State<AppState>,
    body: Result<Json<CreateVolume>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<VolumeInfo>)> {
    let Json(req) = body.map_err(|e| bad(format!("invalid JSON body: {}", e.body_text())))?;
    Ok((
        StatusCode::CREATED,
        Json(s.platform.create_volume(&req.name)?),
    ))
}

pub async fn list_volumes(State(s): State<AppState>) -> ApiResult<Json<Vec<VolumeInfo>>> {
    Ok(Json(s.platform.volumes()?))
}

pub async fn delete_volume(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    s.platform.delete_volume(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_url_events() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; c=d"));
        let ev = http_event(
            &Method::POST,
            "/items/7",
            "q=hello%20world&x=1&x=2&plus=a+b",
            &h,
            b"{\"k\":1}",
        );
        assert_eq!(ev["version"], "2.0");
        assert_eq!(ev["rawPath"], "/items/7");
        assert_eq!(ev["rawQueryString"], "q=hello%20world&x=1&x=2&plus=a+b");
        assert_eq!(ev["queryStringParameters"]["q"], "hello world");
        assert_eq!(ev["queryStringParameters"]["x"], "1,2");
        assert_eq!(ev["queryStringParameters"]["plus"], "a b");
        assert_eq!(ev["headers"]["x-a"], "1,2");
        assert_eq!(ev["cookies"], serde_json::json!(["a=b", "c=d"]));
        assert_eq!(ev["requestContext"]["http"]["method"], "POST");
        assert_eq!(ev["body"], "{\"k\":1}");
        assert_eq!(ev["isBase64Encoded"], false);
        let ev = http_event(&Method::PUT, "/", "", &HeaderMap::new(), &[0xff, 0xfe]);
        assert_eq!(ev["isBase64Encoded"], true);
        assert_eq!(ev["body"], "//4=");
        assert!(ev.get("queryStringParameters").is_none());
    }

    fn result(body: &str) -> InvokeResult {
        InvokeResult {
            body: body.as_bytes().to_vec(),
            content_type: None,
            id: "id".into(),
            cold: false,
            duration_ms: 1.0,
        }
    }

    #[tokio::test]
    async fn function_url_responses() {
        let r = http_response(&result(
            r#"{"statusCode": 201, "headers": {"x-y": "z"}, "body": "made", "cookies": ["s=1"]}"#,
        ));
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["x-y"], "z");
        assert_eq!(r.headers()[header::SET_COOKIE], "s=1");
        assert_eq!(to_bytes(r.into_body(), 1024).await.expect("body"), "made");
        let r = http_response(&result(
            r#"{"statusCode": 200, "body": "aGk=", "isBase64Encoded": true}"#,
        ));
        assert_eq!(to_bytes(r.into_body(), 1024).await.expect("body"), "hi");
        let r = http_response(&result(r#"{"just": "json"}"#));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            to_bytes(r.into_body(), 1024).await.expect("body"),
            r#"{"just": "json"}"#
        );
    }

    #[test]
    fn failure_statuses_tell_kinds_apart() {
        let f = |kind, t: &str| InvokeFailure {
            kind,
            error: strata_types::api::InvokeError {
                error_message: "m".into(),
                error_type: t.into(),
                stack_trace: vec![],
            },
        };
        let statuses: Vec<u16> = [
            f(FailureKind::Function, "ValueError"),
            f(FailureKind::Timeout, "Strata.Timeout"),
            f(FailureKind::OutOfMemory, "Runtime.OutOfMemory"),
            f(FailureKind::Overloaded, "Strata.TooManyInstances"),
            f(FailureKind::Platform, "Strata.PlatformError"),
            f(FailureKind::Platform, "Strata.NotFound"),
        ]
        .iter()
        .map(|x| failure_status(x).as_u16())
        .collect();
        assert_eq!(statuses, [502, 504, 507, 429, 500, 404]);
    }
}
