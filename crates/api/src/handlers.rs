//! Route handlers: request DTO → one use-case call → response DTO.

use std::path::Path;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Serialize;
use strata_types::api::{
    BootstrapImageRequest, CreateRuntimeSpec, ImageInfo, RunRequest, RuntimeInfo,
};
use strata_types::{ErrorKind, RuntimeRef};
use tokio::io::AsyncWriteExt;

use crate::stream::ndjson;
use crate::{ApiErr, AppState, OPENAPI};

type ApiResult<T> = Result<T, ApiErr>;

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    version: &'static str,
}

pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiErr::new(
                ErrorKind::TooLarge,
                format!("request body too large: {e}"),
            ))
        }
        Err(e) => Err(ApiErr::new(
            ErrorKind::InvalidArgument,
            format!("invalid JSON body: {}", e.body_text()),
        )),
    }
}

pub(crate) fn runtime_ref(s: &str) -> ApiResult<RuntimeRef> {
    s.parse().map_err(|e: strata_types::NameError| {
        ApiErr::new(ErrorKind::InvalidArgument, e.to_string())
    })
}

// ---- images ----

pub async fn list_images(State(s): State<AppState>) -> ApiResult<Json<Vec<ImageInfo>>> {
    Ok(Json(s.platform.images()?))
}

pub async fn get_image(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<ImageInfo>> {
    Ok(Json(s.platform.image(&name)?))
}

pub async fn delete_image(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    s.platform.delete_image(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn bootstrap_image(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<BootstrapImageRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let req = json_body(body)?;
    let p = s.platform.clone();
    Ok(ndjson(move |events| async move {
        p.bootstrap_image(&name, &req, &events).await
    }))
}

pub async fn import_image(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> ApiResult<Response> {
    let scratch = s
        .platform
        .store()
        .scratch_dir("upload")
        .map_err(strata_control::ControlError::from)?;
    let file = scratch.path().join("archive");
    receive(body.into_data_stream(), &file, s.max_upload).await?;
    let p = s.platform.clone();
    Ok(ndjson(move |events| async move {
        let r = p.import_image(&name, &file, &events).await;
        drop(scratch);
        r
    }))
}

/// Writes an upload to `dest`, refusing more than `max` bytes.
pub(crate) async fn receive<S, E>(mut stream: S, dest: &Path, max: u64) -> ApiResult<u64>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let io_err =
        |e: std::io::Error| ApiErr::new(ErrorKind::Internal, format!("cannot store upload: {e}"));
    let mut file = tokio::fs::File::create(dest).await.map_err(io_err)?;
    let mut n: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let text = e.to_string();
            if text.contains("length limit") {
                ApiErr::new(
                    ErrorKind::TooLarge,
                    format!("upload larger than {max} bytes"),
                )
            } else {
                ApiErr::new(
                    ErrorKind::InvalidArgument,
                    format!("upload interrupted: {text}"),
                )
            }
        })?;
        n += chunk.len() as u64;
        if n > max {
            return Err(ApiErr::new(
                ErrorKind::TooLarge,
                format!("upload larger than {max} bytes"),
            ));
        }
        file.write_all(&chunk).await.map_err(io_err)?;
    }
    file.flush().await.map_err(io_err)?;
    Ok(n)
}

// ---- runtimes ----

pub async fn list_runtimes(State(s): State<AppState>) -> ApiResult<Json<Vec<RuntimeInfo>>> {
    Ok(Json(s.platform.runtimes()?))
}

pub async fn get_runtime(
    State(s): State<AppState>,
    UrlPath(r): UrlPath<String>,
) -> ApiResult<Json<RuntimeInfo>> {
    Ok(Json(s.platform.runtime(&runtime_ref(&r)?)?))
}

#[derive(Serialize)]
pub struct Removed {
    pub(crate) removed: Vec<String>,
}

pub async fn delete_runtime(
    State(s): State<AppState>,
    UrlPath(r): UrlPath<String>,
) -> ApiResult<Json<Removed>> {
    let removed = s.platform.delete_runtime(&runtime_ref(&r)?).await?;
    Ok(Json(Removed { removed }))
}

/// `multipart/form-data` with a `spec` part (JSON `CreateRuntimeSpec`) and an optional
/// `context` part (a tar of the build context).
pub async fn create_runtime(State(s): State<AppState>, form: Multipart) -> ApiResult<Response> {
    let (scratch, spec, context) = spec_and_context::<CreateRuntimeSpec>(&s, form).await?;
    let p = s.platform.clone();
    Ok(ndjson(move |events| async move {
        let r = p.create_runtime(&spec, context.as_deref(), &events).await;
        drop(scratch);
        r
    }))
}

/// Reads a `multipart/form-data` body of a `spec` part (JSON) and an optional `context` part
/// (a tar, stored in the returned scratch dir).
pub(crate) async fn spec_and_context<T: serde::de::DeserializeOwned>(
    s: &AppState,
    mut form: Multipart,
) -> ApiResult<(strata_control::ScratchDir, T, Option<std::path::PathBuf>)> {
    let bad = |m: String| ApiErr::new(ErrorKind::InvalidArgument, m);
    let scratch = s
        .platform
        .store()
        .scratch_dir("upload")
        .map_err(strata_control::ControlError::from)?;
    let mut spec: Option<T> = None;
    let mut context = None;
    while let Some(field) = form.next_field().await.map_err(|e| multipart_err(&e))? {
        match field.name().unwrap_or_default() {
            "spec" => {
                let text = field.text().await.map_err(|e| multipart_err(&e))?;
                spec = Some(
                    serde_json::from_str(&text)
                        .map_err(|e| bad(format!("invalid spec part: {e}")))?,
                );
            }
            "context" => {
                let path = scratch.path().join("context.tar");
                receive(field, &path, s.max_upload).await?;
                context = Some(path);
            }
            other => {
                return Err(bad(format!(
                    "unexpected form part {other:?}: expected spec and context"
                )))
            }
        }
    }
    let spec = spec.ok_or_else(|| bad("missing spec part".into()))?;
    Ok((scratch, spec, context))
}

pub(crate) fn multipart_err(e: &axum::extract::multipart::MultipartError) -> ApiErr {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiErr::new(
            ErrorKind::TooLarge,
            format!("upload too large: {}", e.body_text()),
        )
    } else {
        ApiErr::new(
            ErrorKind::InvalidArgument,
            format!("invalid multipart body: {}", e.body_text()),
        )
    }
}

pub async fn run_runtime(
    State(s): State<AppState>,
    UrlPath(r): UrlPath<String>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let r = runtime_ref(&r)?;
    let req = json_body(body)?;
    // Fail fast (as a plain error response) when the runtime does not exist.
    s.platform.runtime(&r)?;
    let p = s.platform.clone();
    Ok(ndjson(move |events| async move {
        p.run_runtime(&r, &req, &events).await
    }))
}

pub async fn bootstrap(State(s): State<AppState>) -> Response {
    let p = s.platform.clone();
    ndjson(move |events| async move { p.bootstrap(&events).await })
}
