//! Long operations answer with NDJSON: progress events, then one `done` or `error` line.

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use strata_control::{ControlError, Emitter};
use strata_types::api::Event;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::public_error;

/// The media type of event streams.
pub const NDJSON: &str = "application/x-ndjson";

/// Runs `op` in its own task and streams its events. The operation runs to completion even if
/// the client disconnects, so an acknowledged start is never left half-done by a dropped
/// connection.
pub fn ndjson<F, Fut, T>(op: F) -> Response
where
    F: FnOnce(Emitter) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ControlError>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let events = Emitter::new(tx);
        let last = match op(events.clone()).await {
            Ok(result) => match serde_json::to_value(&result) {
                Ok(result) => Event::Done { result },
                Err(e) => Event::Error {
                    error: public_error(&ControlError::Internal(format!(
                        "cannot encode result: {e}"
                    ))),
                },
            },
            Err(e) => Event::Error {
                error: public_error(&e),
            },
        };
        events.send(last);
    });
    let body = UnboundedReceiverStream::new(rx).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    ([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(body)).into_response()
}
