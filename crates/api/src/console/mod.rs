//! The web console, served by `strata server` under `/console`: server-rendered HTML pages with
//! a little JavaScript, calling the platform directly like the JSON handlers do.
//!
//! Login takes the admin token and starts a server-side session (an HttpOnly, SameSite=Strict
//! cookie holding a random id); every page but the login page (and the static assets) needs the
//! session, and every state-changing form carries the session's CSRF token (see ADR 0012).
//! Handlers stay thin: form → one `strata-control` call → page.

mod functions;
mod html;
mod jobs;
mod runtimes;
mod session;

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{DefaultBodyLimit, Multipart, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup};
use strata_types::ErrorKind;

use crate::{status_of, AppState};
use html::Nav;
pub use session::Session;
use session::Sessions;

/// Who may use a console route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the login page and the static assets.
    Public,
    /// A logged-in session (and, for POST, the session's CSRF token).
    Session,
}

/// Every console route: method, path template, access.
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/console/login", Access::Public),
    ("POST", "/console/login", Access::Public),
    ("GET", "/console/assets/{file}", Access::Public),
    ("POST", "/console/logout", Access::Session),
    ("GET", "/console", Access::Session),
    ("GET", "/console/functions", Access::Session),
    ("GET", "/console/functions/new", Access::Session),
    ("POST", "/console/functions", Access::Session),
    ("GET", "/console/functions/{name}", Access::Session),
    ("POST", "/console/functions/{name}/invoke", Access::Session),
    ("GET", "/console/functions/{name}/logs", Access::Session),
    ("GET", "/console/functions/{name}/code", Access::Session),
    ("POST", "/console/functions/{name}/code", Access::Session),
    ("POST", "/console/functions/{name}/upload", Access::Session),
    ("GET", "/console/functions/{name}/settings", Access::Session),
    (
        "POST",
        "/console/functions/{name}/settings",
        Access::Session,
    ),
    ("POST", "/console/functions/{name}/delete", Access::Session),
    ("GET", "/console/runtimes", Access::Session),
    ("GET", "/console/runtimes/new", Access::Session),
    ("POST", "/console/runtimes", Access::Session),
    ("GET", "/console/runtimes/{ref}", Access::Session),
    ("POST", "/console/runtimes/{ref}/delete", Access::Session),
    ("GET", "/console/jobs", Access::Session),
    ("GET", "/console/jobs/{id}", Access::Session),
    ("GET", "/console/jobs/{id}/log", Access::Session),
];

/// Largest URL-encoded console form (an invocation payload of 6 MiB, percent-encoded, fits).
pub const MAX_FORM_BYTES: usize = 20 << 20;

/// The header the console's script sends when it wants a page fragment, not a whole page.
pub const FRAGMENT_HEADER: &str = "x-console-fragment";

/// The console's state: the API's, plus sessions and jobs.
pub struct Console {
    pub(crate) app: AppState,
    pub(crate) sessions: Sessions,
    pub(crate) jobs: jobs::Jobs,
}

type C = Arc<Console>;

/// The console's routes (merged into the server's router).
pub fn routes(app: AppState) -> Router<AppState> {
    let upload_limit = DefaultBodyLimit::max(usize::try_from(app.max_upload).unwrap_or(usize::MAX));
    let console = Arc::new(Console {
        app,
        sessions: Sessions::default(),
        jobs: jobs::Jobs::default(),
    });
    let private = Router::new()
        .route("/console", get(functions::list))
        .route("/console/logout", post(logout))
        .route(
            "/console/functions",
            get(functions::list)
                .post(functions::create)
                .layer(upload_limit),
        )
        .route("/console/functions/new", get(functions::new_page))
        .route("/console/functions/{name}", get(functions::detail))
        .route("/console/functions/{name}/invoke", post(functions::invoke))
        .route("/console/functions/{name}/logs", get(functions::logs))
        .route(
            "/console/functions/{name}/code",
            get(functions::code_page).post(functions::save_code),
        )
        .route(
            "/console/functions/{name}/upload",
            post(functions::upload_code).layer(upload_limit),
        )
        .route(
            "/console/functions/{name}/settings",
            get(functions::settings_page).post(functions::save_settings),
        )
        .route("/console/functions/{name}/delete", post(functions::delete))
        .route(
            "/console/runtimes",
            get(runtimes::list)
                .post(runtimes::create)
                .layer(upload_limit),
        )
        .route("/console/runtimes/new", get(runtimes::new_page))
        .route("/console/runtimes/{ref}", get(runtimes::detail))
        .route("/console/runtimes/{ref}/delete", post(runtimes::delete))
        .route("/console/jobs", get(runtimes::jobs))
        .route("/console/jobs/{id}", get(runtimes::job_page))
        .route("/console/jobs/{id}/log", get(runtimes::job_log))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            require_session,
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console/login", get(login_page).post(login))
        .route("/console/assets/{file}", get(asset))
        .merge(private)
        .layer(middleware::map_response(security_headers))
        .with_state(console)
}

/// Headers on every console answer: a strict content security policy (scripts and styles only
/// from the console's own assets), no framing, no sniffing, no referrer, no caching of pages.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Lets a request through only with a live session. POSTs must also carry the session's CSRF
/// token: URL-encoded forms are checked here; multipart forms (uploads) are checked by
/// [`Fields::read`] before any file is stored, as their first part.
async fn require_session(State(c): State<C>, req: Request, next: Next) -> Response {
    let Some(sess) = c.sessions.find(req.headers()) else {
        let fragment = req.headers().contains_key(FRAGMENT_HEADER);
        if (req.method() == Method::GET || req.method() == Method::HEAD) && !fragment {
            return Redirect::to("/console/login").into_response();
        }
        return ConsoleErr::new(
            StatusCode::UNAUTHORIZED,
            "not logged in (or the session ended): log in again at /console/login",
        )
        .into_response();
    };
    let mut req = req;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            let (parts, body) = req.into_parts();
            let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
                return ConsoleErr::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("form larger than {MAX_FORM_BYTES} bytes"),
                )
                .into_response();
            };
            let given = form_pairs(&bytes)
                .into_iter()
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v)
                .unwrap_or_default();
            if !sess.csrf_ok(&given) {
                return csrf_refused();
            }
            req = Request::from_parts(parts, Body::from(bytes));
        } else if ct.starts_with("multipart/form-data") && takes_uploads(req.uri().path()) {
            // The handler reads the form with `Fields::read`, which checks the token first.
        } else {
            return csrf_refused();
        }
    }
    req.extensions_mut().insert(sess);
    next.run(req).await
}

/// The console routes that take multipart forms (uploads); every other POST must be URL-encoded
/// so the middleware can check its token.
fn takes_uploads(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["", "console", "functions"]
            | ["", "console", "runtimes"]
            | ["", "console", "functions", _, "upload"]
    )
}

fn csrf_refused() -> Response {
    ConsoleErr::new(
        StatusCode::FORBIDDEN,
        "the form's CSRF token is missing or wrong: reload the page and submit it again",
    )
    .into_response()
}

/// The pairs of a URL-encoded form.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                crate::functions::percent_decode(k),
                crate::functions::percent_decode(v),
            )
        })
        .collect()
}

/// The fields of a console form, URL-encoded or multipart (files stored in a scratch directory).
#[derive(Default)]
pub struct Fields {
    pairs: Vec<(String, String)>,
    files: Vec<(String, std::path::PathBuf, String)>,
    scratch: Option<strata_control::ScratchDir>,
}

impl Fields {
    /// Fields of a URL-encoded body (the CSRF token was checked by the session middleware).
    pub fn urlencoded(body: &[u8]) -> Fields {
        Fields {
            pairs: form_pairs(body),
            ..Default::default()
        }
    }

    /// Reads a multipart form. Its first part must be the session's CSRF token, so nothing of a
    /// forged upload is stored. File parts (with a file name) are written to a scratch directory,
    /// at most `max` bytes each.
    pub async fn read(
        c: &Console,
        sess: &Session,
        mut form: Multipart,
        max: u64,
    ) -> Result<Fields, ConsoleErr> {
        let bad = |m: String| ConsoleErr::new(StatusCode::BAD_REQUEST, m);
        let mut out = Fields::default();
        let mut first = true;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| bad(format!("invalid form: {}", e.body_text())))?
        {
            let name = field.name().unwrap_or_default().to_string();
            if first {
                first = false;
                let token = if name == "csrf" {
                    field.text().await.unwrap_or_default()
                } else {
                    String::new()
                };
                if !sess.csrf_ok(&token) {
                    return Err(ConsoleErr::new(
                        StatusCode::FORBIDDEN,
                        "the form's CSRF token is missing or wrong: reload the page and submit it again",
                    ));
                }
                continue;
            }
            match field.file_name().map(str::to_string) {
                Some(file_name) => {
                    if file_name.is_empty() {
                        continue; // a file input left empty
                    }
                    if out.scratch.is_none() {
                        out.scratch = Some(
                            c.app
                                .platform
                                .store()
                                .scratch_dir("console")
                                .map_err(|e| ConsoleErr::control(e.into()))?,
                        );
                    }
                    let dir = out
                        .scratch
                        .as_ref()
                        .map(|s| s.path().to_path_buf())
                        .unwrap_or_default();
                    let path = dir.join(format!("upload-{}", out.files.len()));
                    crate::handlers::receive(field, &path, max)
                        .await
                        .map_err(|e| ConsoleErr::new(status_of(e.0.kind), e.0.message))?;
                    out.files.push((name, path, file_name));
                }
                None => {
                    let text = field.text().await.map_err(|e| {
                        bad(format!("invalid form field {name}: {}", e.body_text()))
                    })?;
                    out.pairs.push((name, text));
                }
            }
        }
        if first {
            return Err(ConsoleErr::new(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong: reload the page and submit it again",
            ));
        }
        Ok(out)
    }

    /// A field's value, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> String {
        self.raw(name).trim().to_string()
    }

    /// A field's value as sent; empty when absent.
    pub fn raw(&self, name: &str) -> String {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// A non-empty field's value.
    pub fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name)).filter(|v| !v.is_empty())
    }

    /// Whether a checkbox was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, v)| k == name && !v.is_empty())
    }

    /// Every value of a repeated field.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// An uploaded file: its stored path and its name as sent.
    pub fn file(&self, name: &str) -> Option<(&std::path::Path, &str)> {
        self.files
            .iter()
            .find(|(k, _, _)| k == name)
            .map(|(_, p, f)| (p.as_path(), f.as_str()))
    }

    /// Gives up the scratch directory (kept until the returned guard drops).
    pub fn take_scratch(&mut self) -> Option<strata_control::ScratchDir> {
        self.scratch.take()
    }
}

/// An error as a console page: a status and a message for a person.
#[derive(Debug)]
pub struct ConsoleErr {
    status: StatusCode,
    message: String,
}

impl ConsoleErr {
    /// An error with a status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ConsoleErr {
        ConsoleErr {
            status,
            message: message.into(),
        }
    }

    /// A use-case error, with its kind's status and its public message.
    pub fn control(e: strata_control::ControlError) -> ConsoleErr {
        let api = crate::error::public_error(&e);
        ConsoleErr::new(status_of(api.kind), api.message)
    }

    /// An invalid form value.
    pub fn invalid(message: impl Into<String>) -> ConsoleErr {
        ConsoleErr::new(status_of(ErrorKind::InvalidArgument), message)
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<strata_control::ControlError> for ConsoleErr {
    fn from(e: strata_control::ControlError) -> ConsoleErr {
        ConsoleErr::control(e)
    }
}

impl IntoResponse for ConsoleErr {
    fn into_response(self) -> Response {
        let body = html::page(
            "Error",
            Nav::None,
            None,
            html! {
                h1 { "Something went wrong" }
                (html::error_banner(&self.message))
                p { a href="/console" { "Back to the console" } }
            },
        );
        (self.status, markup(body)).into_response()
    }
}

type Page = Result<Response, ConsoleErr>;

/// An HTML response.
pub fn markup(m: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// Whether the console's script asked for a fragment.
pub fn wants_fragment(headers: &HeaderMap) -> bool {
    headers.contains_key(FRAGMENT_HEADER)
}

/// A redirect after a successful POST (303: the browser follows with GET).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---- login ----

fn login_form(error: Option<&str>) -> Markup {
    html::page(
        "Log in",
        Nav::None,
        None,
        html! {
            div.login.card {
                h1 { "Log in to Strata" }
                @if let Some(e) = error { (html::error_banner(e)) }
                form method="post" action="/console/login" {
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="current-password" autofocus required;
                    p.muted { "The server writes it to admin.token in its data directory." }
                    button type="submit" #login { "Log in" }
                }
            }
        },
    )
}

async fn login_page(State(c): State<C>, headers: HeaderMap) -> Response {
    if c.sessions.find(&headers).is_some() {
        return see_other("/console");
    }
    markup(login_form(None))
}

/// `POST /console/login`: the admin token (URL-encoded `token`) starts a session.
async fn login(State(c): State<C>, body: Body) -> Response {
    let Ok(bytes) = to_bytes(body, 64 << 10).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            markup(login_form(Some("form too large"))),
        )
            .into_response();
    };
    let fields = Fields::urlencoded(&bytes);
    let given = fields.get("token");
    if !crate::constant_time_eq(given.as_bytes(), c.app.token.as_bytes()) {
        tracing::warn!("console login refused: wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            markup(login_form(Some(
                "That token is not this server's admin token.",
            ))),
        )
            .into_response();
    }
    let (id, _) = c.sessions.create();
    let mut resp = see_other("/console");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(State(c): State<C>, Extension(sess): Extension<Session>) -> Response {
    c.sessions.remove(&sess.key);
    let mut resp = see_other("/console/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

// ---- assets ----

const CSS: &str = include_str!("../../assets/console.css");
const JS: &str = include_str!("../../assets/console.js");

async fn asset(UrlPath(file): UrlPath<String>) -> Response {
    let (ct, body) = match file.as_str() {
        "console.css" => ("text/css; charset=utf-8", CSS),
        "console.js" => ("text/javascript; charset=utf-8", JS),
        _ => return ConsoleErr::new(StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
