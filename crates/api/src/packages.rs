//! Package, package-runtime and store routes: request DTO → one use-case call → response DTO.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, Path as UrlPath, State};
use axum::response::Response;
use axum::Json;
use strata_types::api::{
    CreatePackageSpec, GcReport, PackageInfo, RollbackRequest, RuntimeDiff, RuntimeInfo,
    StoreStats, UpdateRuntimeRequest,
};
use strata_types::{ErrorKind, PackageRef, RuntimeRef};

use crate::handlers::{json_body, runtime_ref, spec_and_context, Removed};
use crate::stream::ndjson;
use crate::{ApiErr, AppState};

type ApiResult<T> = Result<T, ApiErr>;

fn package_ref(s: &str) -> ApiResult<PackageRef> {
    s.parse().map_err(|e: strata_types::NameError| {
        ApiErr::new(ErrorKind::InvalidArgument, e.to_string())
    })
}

pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<PackageInfo>>> {
    Ok(Json(s.platform.packages()?))
}

pub async fn get(
    State(s): State<AppState>,
    UrlPath(r): UrlPath<String>,
) -> ApiResult<Json<PackageInfo>> {
    Ok(Json(s.platform.package(&package_ref(&r)?)?))
}

pub async fn delete(
    State(s): State<AppState>,
    UrlPath(r): UrlPath<String>,
) -> ApiResult<Json<Removed>> {
    let removed = s.platform.delete_package(&package_ref(&r)?).await?;
    Ok(Json(Removed { removed }))
}

/// `multipart/form-data` with a `spec` part (JSON `CreatePackageSpec`) and an optional
/// `context` part (a tar the recipe's COPY reads from). Answers with NDJSON build events.
pub async fn create(State(s): State<AppState>, form: Multipart) -> ApiResult<Response> {
    let (scratch, spec, context) = spec_and_context::<CreatePackageSpec>(&s, form).await?;
    let p = s.platform.clone();
    Ok(ndjson(move |events| async move {
        let r = p.create_package(&spec, context.as_deref(), &events).await;
        drop(scratch);
        r
    }))
}

/// NDJSON events, then the new runtime version.
pub async fn update_runtime(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<UpdateRuntimeRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let r = runtime_ref(&name)?;
    if r.version.is_some() {
        return Err(ApiErr::new(
            ErrorKind::InvalidArgument,
            "update a runtime by NAME; it makes the next version",
        ));
    }
    let req = json_body(body)?;
    let p = s.platform.clone();
    Ok(ndjson(move |events| async move {
        p.update_runtime(&r.name, &req, &events).await
    }))
}

pub async fn rollback_runtime(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> ApiResult<Json<RuntimeInfo>> {
    let r = runtime_ref(&name)?;
    let req = json_body(body)?;
    Ok(Json(s.platform.rollback_runtime(&r.name, req.to).await?))
}

pub async fn diff_runtimes(
    State(s): State<AppState>,
    UrlPath((a, b)): UrlPath<(String, String)>,
) -> ApiResult<Json<RuntimeDiff>> {
    let a: RuntimeRef = runtime_ref(&a)?;
    let b: RuntimeRef = runtime_ref(&b)?;
    Ok(Json(s.platform.runtime_diff(&a, &b).await?))
}

pub async fn store_stats(State(s): State<AppState>) -> ApiResult<Json<StoreStats>> {
    Ok(Json(s.platform.store_stats().await?))
}

pub async fn store_gc(State(s): State<AppState>) -> ApiResult<Json<GcReport>> {
    Ok(Json(s.platform.store_gc().await?))
}
