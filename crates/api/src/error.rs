use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use strata_control::ControlError;
use strata_types::api::{ApiError, ErrorBody};
use strata_types::ErrorKind;

use crate::status_of;

/// An error on its way to becoming an HTTP response.
#[derive(Debug)]
pub struct ApiErr(pub ApiError);

impl ApiErr {
    /// An error of a kind with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiErr {
        ApiErr(ApiError {
            kind,
            message: message.into(),
        })
    }
}

impl From<ControlError> for ApiErr {
    fn from(e: ControlError) -> ApiErr {
        ApiErr(public_error(&e))
    }
}

/// The client-facing form of a use-case error. Internal failures are logged with their full
/// cause and answered with a short message, so host paths and internals do not leak.
pub fn public_error(e: &ControlError) -> ApiError {
    let kind = e.kind();
    if kind == ErrorKind::Internal {
        tracing::error!(error = %e, "internal error");
        return ApiError {
            kind,
            message: format!("internal error: {}", short_internal(e)),
        };
    }
    ApiError {
        kind,
        message: e.to_string(),
    }
}

fn short_internal(e: &ControlError) -> &'static str {
    match e {
        ControlError::Meta(_) => "metadata store failure (see the server log)",
        ControlError::Store(_) => "content store failure (see the server log)",
        ControlError::Sandbox(_) => "container or mount failure (see the server log)",
        _ => "see the server log",
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let status: StatusCode = status_of(self.0.kind);
        (status, Json(ErrorBody { error: self.0 })).into_response()
    }
}
