//! Strata's HTTP API: the versioned `/v1` routes behind every CLI command.
//!
//! This crate owns routing, bearer-token authentication, request size limits, the one mapping
//! from error kinds to HTTP statuses, NDJSON streaming of long operations, the server loop, and
//! the web console under `/console` (server-rendered pages; see [`console`]).
//! Handlers are thin: request DTO → one `strata-control` call → response DTO. It must not hold
//! business logic, touch the store or spawn processes.

pub mod console;
mod error;
mod functions;
mod handlers;
mod packages;
mod server;
mod stream;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use strata_control::Platform;
use strata_types::ErrorKind;

pub use error::ApiErr;
pub use server::{serve, ServerOptions, TOKEN_FILE};
pub use strata_sandbox::git::GitScheme;

/// The OpenAPI description of `/v1`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// Every route: method, path template, whether it needs the token.
pub const ROUTES: &[(&str, &str, bool)] = &[
    ("GET", "/v1/health", false),
    ("GET", "/v1/openapi.json", false),
    ("POST", "/v1/bootstrap", true),
    ("GET", "/v1/images", true),
    ("GET", "/v1/images/{name}", true),
    ("DELETE", "/v1/images/{name}", true),
    ("POST", "/v1/images/{name}/bootstrap", true),
    ("POST", "/v1/images/{name}/import", true),
    ("GET", "/v1/runtimes", true),
    ("POST", "/v1/runtimes", true),
    ("GET", "/v1/runtimes/{ref}", true),
    ("DELETE", "/v1/runtimes/{ref}", true),
    ("POST", "/v1/runtimes/{ref}/run", true),
    ("GET", "/v1/functions", true),
    ("POST", "/v1/functions", true),
    ("GET", "/v1/functions/{name}", true),
    ("PATCH", "/v1/functions/{name}", true),
    ("PUT", "/v1/functions/{name}", true),
    ("DELETE", "/v1/functions/{name}", true),
    ("POST", "/v1/functions/{name}/invoke", true),
    ("GET", "/v1/functions/{name}/logs", true),
    ("GET", "/v1/volumes", true),
    ("POST", "/v1/volumes", true),
    ("DELETE", "/v1/volumes/{name}", true),
    ("PUT", "/v1/runtimes/{ref}/pool", true),
    ("POST", "/v1/runtimes/{ref}/update", true),
    ("POST", "/v1/runtimes/{ref}/rollback", true),
    ("GET", "/v1/runtimes/{ref}/diff/{other}", true),
    ("GET", "/v1/packages", true),
    ("POST", "/v1/packages", true),
    ("GET", "/v1/packages/{ref}", true),
    ("DELETE", "/v1/packages/{ref}", true),
    ("GET", "/v1/store/stats", true),
    ("POST", "/v1/store/gc", true),
    ("GET", "/metrics", true),
];

/// The HTTP trigger: `ANY /fn/{name}` and `ANY /fn/{name}/{*path}`. It is outside the token
/// middleware because a function may be public; a private function's trigger checks the token
/// itself (see `functions::http_trigger`).
pub const TRIGGER_PREFIX: &str = "/fn/";

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The platform.
    pub platform: Arc<Platform>,
    /// The admin token.
    pub token: Arc<String>,
    /// Largest upload (image archive, build context).
    pub max_upload: u64,
}

/// The `/v1` router.
pub fn router(state: AppState) -> Router {
    let upload_limit =
        DefaultBodyLimit::max(usize::try_from(state.max_upload).unwrap_or(usize::MAX));
    let private = Router::new()
        .route("/v1/bootstrap", post(handlers::bootstrap))
        .route("/v1/images", get(handlers::list_images))
        .route(
            "/v1/images/{name}",
            get(handlers::get_image).delete(handlers::delete_image),
        )
        .route(
            "/v1/images/{name}/bootstrap",
            post(handlers::bootstrap_image),
        )
        .route(
            "/v1/images/{name}/import",
            post(handlers::import_image).layer(upload_limit),
        )
        .route(
            "/v1/runtimes",
            get(handlers::list_runtimes)
                .post(handlers::create_runtime)
                .layer(upload_limit),
        )
        .route(
            "/v1/runtimes/{ref}",
            get(handlers::get_runtime).delete(handlers::delete_runtime),
        )
        .route("/v1/runtimes/{ref}/run", post(handlers::run_runtime))
        .route(
            "/v1/functions",
            get(functions::list)
                .post(functions::create)
                .layer(upload_limit),
        )
        .route(
            "/v1/functions/{name}",
            get(functions::get)
                .patch(functions::update)
                .put(functions::apply)
                .delete(functions::delete)
                .layer(upload_limit),
        )
        .route(
            "/v1/functions/{name}/invoke",
            post(functions::invoke).layer(DefaultBodyLimit::max(functions::MAX_EVENT_BYTES)),
        )
        .route("/v1/functions/{name}/logs", get(functions::logs))
        .route(
            "/v1/volumes",
            get(functions::list_volumes).post(functions::create_volume),
        )
        .route(
            "/v1/volumes/{name}",
            axum::routing::delete(functions::delete_volume),
        )
        .route(
            "/v1/runtimes/{ref}/pool",
            axum::routing::put(functions::set_pool),
        )
        .route("/v1/runtimes/{ref}/update", post(packages::update_runtime))
        .route(
            "/v1/runtimes/{ref}/rollback",
            post(packages::rollback_runtime),
        )
        .route(
            "/v1/runtimes/{ref}/diff/{other}",
            get(packages::diff_runtimes),
        )
        .route(
            "/v1/packages",
            get(packages::list)
                .post(packages::create)
                .layer(upload_limit),
        )
        .route(
            "/v1/packages/{ref}",
            get(packages::get).delete(packages::delete),
        )
        .route("/v1/store/stats", get(packages::store_stats))
        .route("/v1/store/gc", post(packages::store_gc))
        .route("/metrics", get(functions::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(handlers::health))
        .route("/v1/openapi.json", get(handlers::openapi))
        .route(
            "/fn/{name}",
            any(functions::http_trigger).layer(DefaultBodyLimit::max(functions::MAX_EVENT_BYTES)),
        )
        .route(
            "/fn/{name}/{*path}",
            any(functions::http_trigger).layer(DefaultBodyLimit::max(functions::MAX_EVENT_BYTES)),
        )
        .merge(private)
        .merge(console::routes(state.clone()))
        .fallback(|| async {
            ApiErr::new(ErrorKind::NotFound, "no such route; see /v1/openapi.json")
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(state)
}

/// Whether a request carries the admin token (`Authorization: Bearer <token>`), compared in
/// constant time. The API middleware and private HTTP triggers both decide with this.
pub(crate) fn has_token(state: &AppState, headers: &header::HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), state.token.as_bytes())
}

async fn require_token(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request<axum::body::Body>,
    next: Next,
) -> Response {
    if !has_token(&state, req.headers()) {
        let mut resp = ApiErr::new(
            ErrorKind::Unauthenticated,
            "missing or wrong bearer token: set STRATA_TOKEN or pass --token (the server writes it to admin.token in its data directory)",
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return resp;
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The HTTP status of an error kind: the one place this mapping lives.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict | ErrorKind::FailedPrecondition => {
            StatusCode::CONFLICT
        }
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests;
