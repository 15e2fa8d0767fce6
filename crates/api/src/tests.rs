use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use strata_control::{Platform, Settings};
use tower::ServiceExt;

use super::*;

fn app() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    let platform = Platform::open(Settings::new(dir.path().to_path_buf())).expect("platform");
    let state = AppState {
        platform,
        token: Arc::new("t0ken".repeat(8)),
        max_upload: 1 << 20,
    };
    (dir, router(state))
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "x").replace("{ref}", "x@1")
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn every_private_route_requires_the_token() {
    let (_d, app) = app();
    for (method, path, private) in ROUTES {
        let path = concrete(path);
        for token in [None, Some("wrong"), Some("")] {
            let (status, body) = call(&app, method, &path, token, Body::from("{}")).await;
            if *private {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {token:?}"
                );
                assert_eq!(body["error"]["kind"], "unauthenticated", "{method} {path}");
            } else {
                assert_eq!(status, StatusCode::OK, "{method} {path}");
            }
        }
    }
}

#[tokio::test]
async fn the_right_token_gets_through() {
    let (_d, app) = app();
    let token = "t0ken".repeat(8);
    let (status, body) = call(&app, "GET", "/v1/images", Some(&token), Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!([]));
    let (status, body) = call(&app, "GET", "/v1/images/nope", Some(&token), Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["kind"], "not_found");
    let (status, body) = call(
        &app,
        "GET",
        "/v1/runtimes/Bad@Name",
        Some(&token),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["kind"], "invalid_argument");
}

#[tokio::test]
async fn unknown_routes_and_bad_bodies_get_json_errors() {
    let (_d, app) = app();
    let token = "t0ken".repeat(8);
    let (status, body) = call(&app, "GET", "/v2/nothing", Some(&token), Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["kind"], "not_found");
    let (status, body) = call(
        &app,
        "POST",
        "/v1/images/x/bootstrap",
        Some(&token),
        Body::from("{not json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let big = format!("{{\"suite\":\"{}\"}}", "a".repeat(MAX_JSON_BODY + 10));
    let (status, body) = call(
        &app,
        "POST",
        "/v1/images/x/bootstrap",
        Some(&token),
        Body::from(big),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["kind"], "too_large");
}

#[tokio::test]
async fn oversized_uploads_are_refused() {
    let (_d, app) = app();
    let token = "t0ken".repeat(8);
    let body = Body::from(vec![0u8; (1 << 20) + 1]);
    let (status, body) = call(&app, "POST", "/v1/images/x/import", Some(&token), body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

#[test]
fn openapi_describes_every_route() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
    for (method, path, private) in ROUTES {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} missing from openapi.json");
        let public = op
            .get("security")
            .map(|s| s == &serde_json::json!([]))
            .unwrap_or(false);
        assert_eq!(
            public, !private,
            "{method} {path}: security in openapi.json disagrees with the route table"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| !path.starts_with(TRIGGER_PREFIX))
        .map(|(_, p)| {
            p.as_object()
                .expect("ops")
                .keys()
                .filter(|k| *k != "parameters" && !k.starts_with("x-"))
                .count()
        })
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "openapi.json documents a route the server does not have"
    );
}

#[tokio::test]
async fn private_triggers_need_the_token() {
    let (_d, app) = app();
    let token = "t0ken".repeat(8);
    // Without the right token a private (or unknown) function's trigger answers 401 in the
    // Lambda error shape, whatever the method and path.
    for (method, path) in [
        ("GET", "/fn/x"),
        ("POST", "/fn/x/a/b?q=1"),
        ("PUT", "/fn/x/index.html"),
    ] {
        for t in [None, Some("wrong"), Some("")] {
            let (status, body) = call(&app, method, path, t, Body::from("{}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {t:?}");
            assert_eq!(body["errorType"], "Strata.Unauthorized", "{body}");
            assert!(body["errorMessage"].is_string(), "{body}");
            assert_eq!(body["stackTrace"], serde_json::json!([]), "{body}");
        }
        // With the token the request gets through to the platform (no such function here).
        let (status, body) = call(&app, method, path, Some(&token), Body::from("{}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
}
