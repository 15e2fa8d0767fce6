use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use strata_control::{Platform, Settings};
use tower::ServiceExt;

use super::functions::{settings_update, InvokeOutcome};
use super::*;
use crate::AppState;

const TOKEN: &str = "c0ns0le-t0ken-c0ns0le-t0ken-c0ns0le-t0ken";

fn app() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    let platform = Platform::open(Settings::new(dir.path().to_path_buf())).expect("platform");
    let state = AppState {
        platform,
        token: Arc::new(TOKEN.to_string()),
        max_upload: 1 << 20,
    };
    (dir, crate::router(state))
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "x")
        .replace("{ref}", "x@1")
        .replace("{id}", "abc")
        .replace("{file}", "console.css")
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn form(method: &str, path: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(body.to_string())).expect("request")
}

fn multipart(path: &str, cookie: &str, parts: &[(&str, &str)]) -> Request<Body> {
    let boundary = "XyZbOuNdArY";
    let mut body = String::new();
    for (k, v) in parts {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    Request::builder()
        .method("POST")
        .uri(path)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header(header::COOKIE, cookie)
        .body(Body::from(body))
        .expect("request")
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::builder().method("GET").uri(path);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).expect("request")
}

/// Logs in; returns the cookie header value and the session's CSRF token.
async fn login(app: &Router) -> (String, String) {
    let a = send(
        app,
        form("POST", "/console/login", None, &format!("token={TOKEN}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text);
    let set = a.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_string();
    let cookie = set.split(';').next().expect("pair").to_string();
    let page = send(app, get("/console/functions/new", Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let csrf = page
        .text
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("a CSRF field in the form")
        .to_string();
    (cookie, csrf)
}

#[tokio::test]
async fn every_console_route_but_the_login_page_needs_a_session() {
    let (_d, app) = app();
    for (method, path, access) in ROUTES {
        let path = concrete(path);
        for cookie in [
            None,
            Some(format!("{}={}", session::COOKIE, "ab".repeat(32))),
        ] {
            let a = if *method == "GET" {
                send(&app, get(&path, cookie.as_deref())).await
            } else {
                send(&app, form(method, &path, cookie.as_deref(), "csrf=x")).await
            };
            match (access, *method) {
                (Access::Public, "GET") => {
                    assert_eq!(a.status, StatusCode::OK, "{method} {path}")
                }
                (Access::Public, _) => {
                    // The login form without the token.
                    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {path}")
                }
                (Access::Session, "GET") => {
                    assert_eq!(a.status, StatusCode::SEE_OTHER, "{method} {path}");
                    assert_eq!(a.headers[header::LOCATION], "/console/login", "{path}");
                }
                (Access::Session, _) => {
                    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {path}")
                }
            }
            assert!(
                a.headers.contains_key(header::CONTENT_SECURITY_POLICY),
                "{method} {path}: no CSP"
            );
        }
    }
    // Fragment requests of the console's script get 401, not a redirect to follow.
    let mut r = get("/console/functions", None);
    r.headers_mut()
        .insert(FRAGMENT_HEADER, header::HeaderValue::from_static("1"));
    assert_eq!(send(&app, r).await.status, StatusCode::UNAUTHORIZED);
    // The server's root leads to the console.
    let a = send(&app, get("/", None)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[header::LOCATION], "/console");
}

#[tokio::test]
async fn login_logout_and_wrong_tokens() {
    let (_d, app) = app();
    for wrong in ["", "wrong", &TOKEN[..TOKEN.len() - 1], &format!("{TOKEN}x")] {
        let a = send(
            &app,
            form("POST", "/console/login", None, &format!("token={wrong}")),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert!(!a.headers.contains_key(header::SET_COOKIE), "{wrong:?}");
        assert!(a.text.contains("not this server"), "{}", a.text);
    }
    let a = send(
        &app,
        form("POST", "/console/login", None, &format!("token={TOKEN}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let set = a.headers[header::SET_COOKIE].to_str().expect("ascii");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(TOKEN), "the token never goes into a cookie");
    let cookie = set.split(';').next().expect("pair").to_string();
    let page = send(&app, get("/console", Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Functions") && page.text.contains("Log out"));
    // The bearer token is no session cookie.
    let a = send(
        &app,
        get("/console", Some(&format!("{}={TOKEN}", session::COOKIE))),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let (cookie, csrf) = login(&app).await;
    // Logging out needs the CSRF token too; then the session is gone.
    let a = send(&app, form("POST", "/console/logout", Some(&cookie), "")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(
        &app,
        form(
            "POST",
            "/console/logout",
            Some(&cookie),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(a.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .contains("Max-Age=0"));
    let a = send(&app, get("/console", Some(&cookie))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[header::LOCATION], "/console/login");
}

#[tokio::test]
async fn console_posts_need_the_session_csrf_token() {
    let (_d, app) = app();
    let (cookie, csrf) = login(&app).await;
    let (other_cookie, other_csrf) = login(&app).await;
    assert_ne!(csrf, other_csrf);
    let _ = other_cookie;
    for (method, path, access) in ROUTES {
        if *method != "POST" || *access != Access::Session {
            continue;
        }
        let path = concrete(path);
        for body in [
            String::new(),
            "payload=%7B%7D".to_string(),
            "csrf=".to_string(),
            format!("csrf={}", &csrf[..csrf.len() - 1]),
            format!("csrf={other_csrf}"),
        ] {
            let a = send(&app, form(method, &path, Some(&cookie), &body)).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{path} with {body:?}");
        }
        // Multipart: refused without the token as the first part, whatever the route.
        for parts in [
            vec![("name", "x")],
            vec![("name", "x"), ("csrf", csrf.as_str())],
            vec![("csrf", other_csrf.as_str()), ("name", "x")],
        ] {
            let a = send(&app, multipart(&path, &cookie, &parts)).await;
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{path} multipart {parts:?}"
            );
        }
        // Any other body type is refused.
        let r = Request::builder()
            .method("POST")
            .uri(&path)
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(format!("csrf={csrf}")))
            .expect("request");
        assert_eq!(
            send(&app, r).await.status,
            StatusCode::FORBIDDEN,
            "{path} text/plain"
        );
    }
    // With the right token the request reaches the handler (here: no such function).
    let a = send(
        &app,
        form(
            "POST",
            "/console/functions/x/invoke",
            Some(&cookie),
            &format!("csrf={csrf}&payload=%7B%7D"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
    assert!(
        a.text.contains("function &quot;x&quot; not found"),
        "{}",
        a.text
    );
}

#[tokio::test]
async fn user_input_is_escaped_in_pages() {
    let (_d, app) = app();
    let (cookie, csrf) = login(&app).await;
    let evil = "\"><script>alert(1)</script>";
    let a = send(
        &app,
        multipart(
            "/console/functions",
            &cookie,
            &[
                ("csrf", &csrf),
                ("source", "editor"),
                ("name", evil),
                ("runtime", "none"),
                ("handler", evil),
                ("filename", "app.py"),
                ("code", "print('</textarea><script>x()</script>')"),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert!(!a.text.contains("<script>alert"), "{}", a.text);
    assert!(!a.text.contains("</textarea><script>"), "{}", a.text);
    assert!(
        a.text
            .contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        a.text
    );
    assert!(
        a.text.contains("&lt;/textarea&gt;&lt;script&gt;x()"),
        "{}",
        a.text
    );
    // A runtime build whose Dockerfile fails shows its error and log escaped.
    let a = send(
        &app,
        multipart(
            "/console/runtimes",
            &cookie,
            &[
                ("csrf", &csrf),
                ("source", "dockerfile"),
                ("name", "evil"),
                ("dockerfile", "FROM <img src=x onerror=alert(1)>\n"),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text);
    let job = a.headers[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_string();
    let mut page = String::new();
    for _ in 0..100 {
        page = send(&app, get(&format!("{job}/log"), Some(&cookie)))
            .await
            .text;
        if page.contains("data-done") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(page.contains("data-done=\"failed\""), "{page}");
    assert!(!page.contains("<img"), "{page}");
}

#[test]
fn rendered_outcomes_and_logs_escape_markup() {
    let ok = InvokeOutcome::Ok {
        body: br#"{"html": "<b onclick=x()>hi</b>"}"#.to_vec(),
        id: "id<1>".into(),
        cold: true,
        ms: 1.5,
    };
    let failed = InvokeOutcome::Failed {
        status: StatusCode::BAD_GATEWAY,
        error: strata_types::api::InvokeError {
            error_message: "<script>bad()</script>".into(),
            error_type: "Value<Error>".into(),
            stack_trace: vec!["  File \"<stdin>\"".into()],
        },
        ms: 2.0,
    };
    for o in [ok, failed] {
        let text = functions::invoke_result(&o).into_string();
        assert!(
            !text.contains("<b onclick") && !text.contains("<script>"),
            "{text}"
        );
        assert!(
            !text.contains("<1>") && !text.contains("<Error>") && !text.contains("<stdin>"),
            "{text}"
        );
    }
    let logs = functions::log_lines(&[strata_types::api::LogEntry {
        ts_ms: 0,
        function: "f".into(),
        invocation: Some("<i>".into()),
        stream: "stdout\" onmouseover=\"x()".into(),
        line: "<img src=x onerror=alert(1)>".into(),
    }])
    .into_string();
    assert!(!logs.contains("<img") && !logs.contains("<i>"), "{logs}");
    assert!(
        logs.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{logs}"
    );
    assert!(!logs.contains("\" onmouseover"), "{logs}");
    let banner = html::error_banner("<a href=javascript:x>").into_string();
    assert!(banner.contains("&lt;a href=javascript:x&gt;"), "{banner}");
}

#[tokio::test]
async fn unknown_jobs_and_assets() {
    let (_d, app) = app();
    let (cookie, _) = login(&app).await;
    assert_eq!(
        send(&app, get("/console/jobs/nope", Some(&cookie)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, get("/console/assets/nope.js", None))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let js = send(&app, get("/console/assets/console.js", None)).await;
    assert_eq!(
        js.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(js.text.contains("data-poll"));
}

fn function_info() -> strata_types::api::FunctionInfo {
    serde_json::from_value(serde_json::json!({
        "name": "f", "revision": 3, "runtime": "python3", "runtime_resolved": "python3@1",
        "handler": "app.handler",
        "resources": {"memory_bytes": 268435456u64, "cpu_millis": 1000, "timeout_ms": 30000},
        "env": {"A": "1", "B": "2"}, "secret_env": ["S"], "volumes": [], "network": false,
        "public": false,
        "scaling": {"min_instances": 0, "max_instances": 10, "concurrency": 1, "idle_timeout_ms": null, "max_queue": 100},
        "code_digest": format!("sha256:{}", "0".repeat(64)), "code_size_bytes": 10,
        "updated_at": "x", "created_at": "x", "stats": {
            "invocations": 0, "errors": 0, "cold_starts": 0, "instances": 0, "p50_ms": 0.0, "p99_ms": 0.0,
            "pool_hits": 0, "pool_misses": 0, "mean_queue_ms": 0.0, "mean_specialize_ms": 0.0,
            "mean_init_ms": 0.0, "mean_run_ms": 0.0
        }
    }))
    .expect("a function")
}

#[test]
fn settings_forms_map_onto_updates() {
    let f = function_info();
    // The form as shown, unchanged: nothing changes.
    let same = Fields::urlencoded(
        b"runtime=python3&handler=app.handler&memory=256Mi&cpu=1&timeout=30000ms&env=A%3D1%0AB%3D2%0A\
          &secret_env=&volumes=&min_instances=0&max_instances=10&concurrency=1&idle_timeout=&max_queue=100",
    );
    let u = settings_update(&f, &same).expect("valid");
    let applied = strata_control::apply_update(
        &strata_types::api::FunctionConfig {
            runtime: "python3".into(),
            handler: "app.handler".into(),
            env: [("A".into(), "1".into()), ("B".into(), "2".into())].into(),
            ..Default::default()
        },
        u.clone(),
    );
    assert_eq!(
        u.resources,
        strata_types::Resources::default(),
        "defaults stay inherited"
    );
    assert!(u.env.is_empty() && u.unset_env.is_empty(), "{u:?}");
    assert_eq!(applied.env.len(), 2);
    assert_eq!(u.volumes, None);
    assert_eq!(u.network, None);
    // Changes: memory, one variable changed, one removed, a secret set and one removed, a
    // volume, public, scaling.
    let changed = Fields::urlencoded(
        b"runtime=python3%402&handler=app.other&memory=512Mi&cpu=1&timeout=30000ms&env=A%3D9%0A\
          &secret_env=T%3Dx&unset_secret=S&unset_secret=NOT_THERE&volumes=data%3A%2Fmnt%2Fdata&public=1\
          &min_instances=1&max_instances=4&concurrency=2&idle_timeout=1m&max_queue=5",
    );
    let u = settings_update(&f, &changed).expect("valid");
    assert_eq!(u.runtime.as_deref(), Some("python3@2"));
    assert_eq!(u.handler.as_deref(), Some("app.other"));
    assert_eq!(u.resources.memory_bytes, Some(512 << 20));
    assert_eq!(u.resources.cpu_millis, None);
    assert_eq!(u.env.get("A").map(String::as_str), Some("9"));
    assert_eq!(u.unset_env, vec!["B".to_string(), "S".to_string()]);
    assert_eq!(u.secret_env.get("T").map(String::as_str), Some("x"));
    assert_eq!(u.volumes.as_ref().map(|v| v.len()), Some(1));
    assert_eq!(u.public, Some(true));
    assert_eq!(u.scaling.min_instances, Some(1));
    assert_eq!(u.scaling.idle_timeout_ms, Some(60_000));
    // Bad values are refused with what was wrong.
    for (body, want) in [
        (&b"memory=lots"[..], "memory"),
        (b"env=NOEQUALS", "KEY=VALUE"),
        (b"volumes=novolume", "VOLUME:/absolute/path"),
        (b"max_instances=-1", "max_instances"),
        (b"idle_timeout=soon", "idle timeout"),
    ] {
        let e = settings_update(&f, &Fields::urlencoded(body)).expect_err("invalid");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().contains(want), "{}", e.message());
    }
}

#[test]
fn upload_routes_are_the_multipart_ones() {
    assert!(takes_uploads("/console/functions"));
    assert!(takes_uploads("/console/runtimes"));
    assert!(takes_uploads("/console/functions/x/upload"));
    assert!(!takes_uploads("/console/functions/x/invoke"));
    assert!(!takes_uploads("/console/functions/x/code"));
    assert!(!takes_uploads("/console/logout"));
    assert!(!takes_uploads("/console/functions/x/y/upload"));
}
