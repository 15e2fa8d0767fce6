//! Function pages: list, create (editor, template, git, upload), overview with the invoke panel
//! and charts, code editor, settings, logs.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;
use strata_control::{SourceFile, SERIES_MINUTES};
use strata_types::api::{FunctionConfig, FunctionInfo, FunctionUpdate, ScalingUpdate, VolumeMount};
use strata_types::Resources;

use super::html::{self, Nav};
use super::runtimes::runtime_options;
use super::{markup, see_other, wants_fragment, ConsoleErr, Fields, Page, Session, C};

/// The code the editor starts with for a new function.
const SAMPLE_PY: &str = r#"import json


def handler(event, context):
    name = event.get("name", "world")
    print(f"hello {name}")
    return {"message": f"Hello, {name}!"}
"#;

fn tabs(name: &str, active: &str) -> Markup {
    let base = format!("/console/functions/{name}");
    let items = [
        ("overview", base.clone(), "Overview"),
        ("code", format!("{base}/code"), "Code"),
        ("settings", format!("{base}/settings"), "Settings"),
        ("logs", format!("{base}/logs"), "Logs"),
    ];
    html! {
        nav.tabs {
            @for (key, href, label) in &items {
                a.active[*key == active] href=(href) { (label) }
            }
        }
    }
}

// ---- list ----

pub async fn list(State(c): State<C>, Extension(sess): Extension<Session>) -> Page {
    let fns = c.app.platform.functions()?;
    Ok(markup(html::page(
        "Functions",
        Nav::Functions,
        Some(&sess),
        html! {
            h1 { "Functions" }
            p { a.button href="/console/functions/new" #new-function { "New function" } }
            @if fns.is_empty() {
                p.muted { "No functions yet." }
            } @else {
                table #functions {
                    thead { tr { th { "Name" } th { "Runtime" } th { "Revision" } th { "Invocations" } th { "Errors" } th { "p50" } th { "Updated" } } }
                    tbody {
                        @for f in &fns {
                            tr {
                                td { a href=(format!("/console/functions/{}", f.name)) { (f.name) } }
                                td { (f.runtime) @if f.runtime != f.runtime_resolved { span.muted { " → " (f.runtime_resolved) } } }
                                td { (f.revision) }
                                td { (f.stats.invocations) }
                                td.bad[f.stats.errors > 0] { (f.stats.errors) }
                                td { @if f.stats.invocations > 0 { (html::millis(f.stats.p50_ms)) } @else { "–" } }
                                td.muted { (f.updated_at) }
                            }
                        }
                    }
                }
            }
        },
    )))
}

// ---- create ----

/// What the new-function page shows (again, with an error, after a failed attempt).
#[derive(Default)]
struct NewForm {
    source: String,
    name: String,
    runtime: String,
    handler: String,
    filename: String,
    code: String,
    memory: String,
    cpu: String,
    timeout: String,
    git_url: String,
    git_ref: String,
    git_subdir: String,
    template: String,
    error: Option<String>,
}

impl NewForm {
    fn blank() -> NewForm {
        NewForm {
            handler: "app.handler".into(),
            filename: "app.py".into(),
            code: SAMPLE_PY.into(),
            ..Default::default()
        }
    }

    fn from_fields(f: &Fields) -> NewForm {
        NewForm {
            source: f.get("source"),
            name: f.get("name"),
            runtime: f.get("runtime"),
            handler: f.get("handler"),
            filename: f.get("filename"),
            code: f.raw("code"),
            memory: f.get("memory"),
            cpu: f.get("cpu"),
            timeout: f.get("timeout"),
            git_url: f.get("git_url"),
            git_ref: f.get("git_ref"),
            git_subdir: f.get("git_subdir"),
            template: f.get("template"),
            error: None,
        }
    }
}

fn common_fields(
    form: &NewForm,
    runtimes: &[(String, String)],
    prefix: &str,
    with_handler: bool,
) -> Markup {
    let id = |f: &str| format!("{prefix}-{f}");
    html! {
        div.row {
            div {
                label for=(id("name")) { "Name" }
                input id=(id("name")) type="text" name="name" value=(form.name) required placeholder="hello" pattern="[a-z0-9][a-z0-9-]*";
            }
            div {
                label for=(id("runtime")) { "Runtime" }
                select id=(id("runtime")) name="runtime" {
                    @for (value, label) in runtimes {
                        option value=(value) selected[*value == form.runtime] { (label) }
                    }
                }
            }
            @if with_handler {
                div {
                    label for=(id("handler")) { "Handler" }
                    input id=(id("handler")) type="text" name="handler" value=(form.handler) placeholder="app.handler";
                }
            }
        }
        div.row {
            div { label for=(id("memory")) { "Memory" } input id=(id("memory")) type="text" name="memory" value=(form.memory) placeholder="runtime default, e.g. 256Mi"; }
            div { label for=(id("cpu")) { "CPU" } input id=(id("cpu")) type="text" name="cpu" value=(form.cpu) placeholder="runtime default, e.g. 0.5"; }
            div { label for=(id("timeout")) { "Timeout" } input id=(id("timeout")) type="text" name="timeout" value=(form.timeout) placeholder="runtime default, e.g. 30s"; }
        }
    }
}

fn new_page_markup(c: &C, sess: &Session, form: &NewForm) -> Result<Markup, ConsoleErr> {
    let runtimes = runtime_options(c)?;
    let no_runtimes = runtimes.is_empty();
    let mut template_runtimes = vec![(String::new(), "the template's runtime".to_string())];
    template_runtimes.extend(runtimes.iter().cloned());
    Ok(html::page(
        "New function",
        Nav::Functions,
        Some(sess),
        html! {
            h1 { "New function" }
            @if let Some(e) = &form.error { (html::error_banner(e)) }
            @if no_runtimes {
                (html::info_banner("There is no runtime yet: create one first (Runtimes → New runtime)."))
            }
            div.card {
                h2 { "Write the code" }
                p.muted { "A single file edited here; more files can be added later on the Code tab." }
                form method="post" action="/console/functions" enctype="multipart/form-data" #editor-form {
                    (html::csrf_field(sess))
                    input type="hidden" name="source" value="editor";
                    (common_fields(form, &runtimes, "ed", true))
                    label for="ed-filename" { "File" }
                    input #ed-filename type="text" name="filename" value=(form.filename);
                    label for="ed-code" { "Code" }
                    textarea.code #ed-code name="code" spellcheck="false" { (form.code) }
                    button type="submit" #create-editor { "Create function" }
                }
            }
            div.card {
                h2 { "Start from a template" }
                form method="post" action="/console/functions" enctype="multipart/form-data" #template-form {
                    (html::csrf_field(sess))
                    input type="hidden" name="source" value="template";
                    label for="tp-template" { "Template" }
                    select #tp-template name="template" {
                        @for t in strata_templates::list() {
                            option value=(t.name) selected[t.name == form.template] {
                                (t.name) " — " (t.description) " (" (t.runtime) ", handler " (t.handler) ")"
                            }
                        }
                    }
                    (common_fields(form, &template_runtimes, "tp", false))
                    button type="submit" #create-template { "Create from template" }
                }
            }
            div.card {
                h2 { "From a git repository" }
                p.muted { "The server fetches the repository at the ref and deploys the directory's files." }
                form method="post" action="/console/functions" enctype="multipart/form-data" #git-form {
                    (html::csrf_field(sess))
                    input type="hidden" name="source" value="git";
                    (common_fields(form, &runtimes, "git", true))
                    div.row {
                        div { label for="git-url" { "Repository URL" } input #git-url type="text" name="git_url" value=(form.git_url) placeholder="https://example.com/team/functions.git"; }
                        div { label for="git-ref" { "Ref " span.muted { "(branch, tag or commit; default branch when empty)" } } input #git-ref type="text" name="git_ref" value=(form.git_ref); }
                        div { label for="git-subdir" { "Directory " span.muted { "(optional)" } } input #git-subdir type="text" name="git_subdir" value=(form.git_subdir) placeholder="hello/src"; }
                    }
                    button type="submit" #create-git { "Create from git" }
                }
            }
            div.card {
                h2 { "Upload an archive" }
                p.muted { "A .zip, .tar or .tar.gz of the function's code." }
                form method="post" action="/console/functions" enctype="multipart/form-data" #upload-form {
                    (html::csrf_field(sess))
                    input type="hidden" name="source" value="upload";
                    (common_fields(form, &runtimes, "up", true))
                    label for="up-archive" { "Archive" }
                    input #up-archive type="file" name="archive" accept=".zip,.tar,.tar.gz,.tgz" required;
                    button type="submit" { "Create from archive" }
                }
            }
        },
    ))
}

pub async fn new_page(State(c): State<C>, Extension(sess): Extension<Session>) -> Page {
    Ok(markup(new_page_markup(&c, &sess, &NewForm::blank())?))
}

fn resources(f: &Fields) -> Result<Resources, ConsoleErr> {
    Resources::parse(
        f.opt("memory").as_deref(),
        f.opt("cpu").as_deref(),
        f.opt("timeout").as_deref(),
    )
    .map_err(|e| ConsoleErr::invalid(e.to_string()))
}

/// `POST /console/functions` (multipart): create from the editor, an upload, a template or git.
pub async fn create(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    form: Multipart,
) -> Page {
    let mut fields = Fields::read(&c, &sess, form, c.app.max_upload).await?;
    let scratch = fields.take_scratch();
    let form = NewForm::from_fields(&fields);
    let result = create_from(&c, &fields, &form).await;
    drop(scratch);
    match result {
        Ok(info) => Ok(see_other(&format!("/console/functions/{}", info.name))),
        Err(e) => {
            let status = e.status();
            let page = new_page_markup(
                &c,
                &sess,
                &NewForm {
                    error: Some(e.message().to_string()),
                    ..form
                },
            )?;
            Ok((status, markup(page)).into_response())
        }
    }
}

async fn create_from(c: &C, fields: &Fields, form: &NewForm) -> Result<FunctionInfo, ConsoleErr> {
    if form.name.is_empty() {
        return Err(ConsoleErr::invalid("give the function a name"));
    }
    let config = FunctionConfig {
        runtime: form.runtime.clone(),
        handler: form.handler.clone(),
        resources: resources(fields)?,
        ..Default::default()
    };
    let p = &c.app.platform;
    match form.source.as_str() {
        "editor" => {
            let files = [SourceFile {
                path: form.filename.clone(),
                text: form.code.clone(),
                executable: false,
            }];
            Ok(p.create_function_from_source(&form.name, config, &files)
                .await?)
        }
        "template" => {
            let t = strata_templates::get(&form.template).ok_or_else(|| {
                ConsoleErr::invalid(format!("unknown template {:?}", form.template))
            })?;
            let rendered = strata_templates::render(t.name, &form.name)
                .map_err(|e| ConsoleErr::invalid(e.to_string()))?;
            let files = template_code(&rendered)?;
            let config = FunctionConfig {
                runtime: if form.runtime.is_empty() {
                    t.runtime.to_string()
                } else {
                    form.runtime.clone()
                },
                handler: t.handler.to_string(),
                ..config
            };
            Ok(p.create_function_from_source(&form.name, config, &files)
                .await?)
        }
        "git" => {
            if form.git_url.is_empty() {
                return Err(ConsoleErr::invalid("give the repository URL"));
            }
            let src = strata_types::api::GitSource {
                url: form.git_url.clone(),
                reference: Some(form.git_ref.clone()).filter(|r| !r.is_empty()),
                subdir: Some(form.git_subdir.clone()).filter(|d| !d.is_empty()),
            };
            Ok(
                p.create_function_from(&form.name, config, strata_control::CodeInput::Git(&src))
                    .await?,
            )
        }
        "upload" => {
            let Some((path, _)) = fields.file("archive") else {
                return Err(ConsoleErr::invalid(
                    "choose an archive (.zip, .tar or .tar.gz) to upload",
                ));
            };
            Ok(p.create_function(&form.name, config, path).await?)
        }
        other => Err(ConsoleErr::invalid(format!(
            "unknown source {other:?}: use the editor, a template, git or an upload"
        ))),
    }
}

/// The code of a rendered template: its files under `src/` (the manifest's `code = "src"`).
fn template_code(rendered: &[(String, Vec<u8>)]) -> Result<Vec<SourceFile>, ConsoleErr> {
    let files: Vec<SourceFile> = rendered
        .iter()
        .filter_map(|(path, bytes)| {
            let rel = path.strip_prefix("src/")?;
            Some(SourceFile {
                path: rel.to_string(),
                text: String::from_utf8_lossy(bytes).into_owned(),
                executable: false,
            })
        })
        .collect();
    if files.is_empty() {
        return Err(ConsoleErr::invalid("the template has no code under src/"));
    }
    Ok(files)
}

// ---- overview, invoke, charts ----

fn stats(f: &FunctionInfo) -> Markup {
    let s = &f.stats;
    html! {
        div.stats #stats {
            div { "Invocations" b #stat-invocations { (s.invocations) } }
            div { "Errors" b #stat-errors .bad[s.errors > 0] { (s.errors) } }
            div { "Cold starts" b #stat-cold-starts { (s.cold_starts) } }
            div { "p50" b { (html::millis(s.p50_ms)) } }
            div { "p99" b { (html::millis(s.p99_ms)) } }
            div { "Instances" b #stat-instances { (s.instances) } }
        }
    }
}

/// What an invocation from the console gave.
pub enum InvokeOutcome {
    /// The handler returned.
    Ok {
        body: Vec<u8>,
        id: String,
        cold: bool,
        ms: f64,
    },
    /// It failed: HTTP status the API would answer, kind, error.
    Failed {
        status: StatusCode,
        error: strata_types::api::InvokeError,
        ms: f64,
    },
    /// The payload was refused before invoking.
    Refused(String),
}

pub(super) fn invoke_result(o: &InvokeOutcome) -> Markup {
    html! {
        @match o {
            InvokeOutcome::Ok { body, id, cold, ms } => {
                p #invoke-status {
                    span.ok { "200 OK" } " · " (html::millis(*ms)) " · "
                    @if *cold { "cold start" } @else { "warm" }
                    " · " span.muted.mono { (id) }
                }
                pre #invoke-output { (html::pretty_json(body)) }
            }
            InvokeOutcome::Failed { status, error, ms } => {
                p #invoke-status {
                    span.bad { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    " · " (html::millis(*ms)) " · " span.mono { (error.error_type) }
                }
                pre #invoke-output { (error.error_message) @for line in &error.stack_trace { "\n" (line) } }
            }
            InvokeOutcome::Refused(m) => {
                p #invoke-status { span.bad { "Not invoked" } }
                (html::error_banner(m))
            }
        }
    }
}

fn invoke_panel(
    sess: &Session,
    name: &str,
    payload: &str,
    outcome: Option<&InvokeOutcome>,
) -> Markup {
    html! {
        div.card {
            h2 { "Invoke" }
            form method="post" action=(format!("/console/functions/{name}/invoke")) data-target="#invoke-result" #invoke-form {
                (html::csrf_field(sess))
                label for="payload" { "Event (JSON)" }
                textarea.code.payload #payload name="payload" spellcheck="false" { (payload) }
                button type="submit" #invoke { "Invoke" }
            }
            div #invoke-result aria-live="polite" {
                @if let Some(o) = outcome { (invoke_result(o)) }
            }
        }
    }
}

fn charts(buckets: &[strata_control::MinuteBucket]) -> Markup {
    html! {
        div.charts #charts {
            div {
                h3 { "Invocations per minute " span.muted { "(errors in red)" } }
                (html::bar_chart("Invocations per minute", buckets, |b| b.invocations, Some(("err", &|b: &strata_control::MinuteBucket| b.errors)), ""))
            }
            div {
                h3 { "Latency " span.muted { "(mean, dashed: max)" } }
                (html::latency_chart("Latency per minute", buckets))
            }
            div {
                h3 { "Cold starts per minute" }
                (html::bar_chart("Cold starts per minute", buckets, |b| b.cold_starts, None, "cold"))
            }
        }
    }
}

fn detail_markup(
    c: &C,
    sess: &Session,
    f: &FunctionInfo,
    payload: &str,
    outcome: Option<&InvokeOutcome>,
) -> Markup {
    let buckets = c.app.platform.function_series(&f.name, SERIES_MINUTES);
    let r = &f.resources;
    html::page(
        &f.name,
        Nav::Functions,
        Some(sess),
        html! {
            h1 { "Function " span #function-name { (f.name) } }
            (tabs(&f.name, "overview"))
            div.card {
                table {
                    tr { th { "Revision" } td #revision { (f.revision) } th { "Runtime" } td { a href=(format!("/console/runtimes/{}", f.runtime_resolved)) { (f.runtime_resolved) } @if f.runtime != f.runtime_resolved { span.muted { " (follows " (f.runtime) ")" } } } }
                    tr { th { "Handler" } td.mono { (f.handler) } th { "Trigger" } td { span.mono { "/fn/" (f.name) "/" } " · " @if f.public { "public" } @else { "private (needs the token)" } } }
                    tr { th { "Memory" } td { (r.memory_bytes.map(html::bytes).unwrap_or_default()) } th { "CPU" } td { (r.cpu_millis.map(|m| format!("{:.2}", f64::from(m) / 1000.0)).unwrap_or_default()) } }
                    tr {
                        th { "Timeout" } td { (r.timeout_ms.map(|t| html::millis(t as f64)).unwrap_or_default()) }
                        th { "Code" }
                        td {
                            (html::bytes(f.code_size_bytes)) " · " span.mono.muted { (f.code_digest.to_string().get(..19).unwrap_or("")) }
                            @if let Some(g) = &f.git {
                                br; "from " span.mono { (g.url) } " at " span.mono { (g.reference) " (" (g.commit.get(..12).unwrap_or(&g.commit)) ")" }
                                @if !g.subdir.is_empty() { ", directory " span.mono { (g.subdir) } }
                            }
                        }
                    }
                }
            }
            (stats(f))
            (invoke_panel(sess, &f.name, payload, outcome))
            h2 { "Last hour" }
            (charts(&buckets))
        },
    )
}

pub async fn detail(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(name): UrlPath<String>,
) -> Page {
    let f = c.app.platform.function(&name)?;
    Ok(markup(detail_markup(&c, &sess, &f, "{}", None)))
}

/// `POST /console/functions/{name}/invoke`: the payload field is the event.
pub async fn invoke(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Page {
    let bytes = axum::body::to_bytes(body, super::MAX_FORM_BYTES)
        .await
        .map_err(|_| ConsoleErr::new(StatusCode::PAYLOAD_TOO_LARGE, "form too large"))?;
    let fields = Fields::urlencoded(&bytes);
    let mut payload = fields.raw("payload");
    if payload.trim().is_empty() {
        payload = "{}".into();
    }
    let f = c.app.platform.function(&name)?;
    let outcome = if payload.len() > crate::functions::MAX_EVENT_BYTES {
        InvokeOutcome::Refused(format!(
            "the event is larger than {} bytes",
            crate::functions::MAX_EVENT_BYTES
        ))
    } else if let Err(e) = serde_json::from_str::<serde_json::Value>(&payload) {
        InvokeOutcome::Refused(format!("the event is not valid JSON: {e}"))
    } else {
        let started = Instant::now();
        let r = c
            .app
            .platform
            .invoke(&name, payload.clone().into_bytes())
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match r {
            Ok(r) => InvokeOutcome::Ok {
                ms: r.duration_ms,
                body: r.body,
                id: r.id,
                cold: r.cold,
            },
            Err(e) => InvokeOutcome::Failed {
                status: crate::functions::failure_status(&e),
                error: e.error,
                ms,
            },
        }
    };
    if wants_fragment(&headers) {
        return Ok(markup(invoke_result(&outcome)));
    }
    Ok(markup(detail_markup(
        &c,
        &sess,
        &f,
        &payload,
        Some(&outcome),
    )))
}

// ---- logs ----

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    tail: Option<usize>,
    #[serde(default)]
    follow: Option<String>,
}

pub(super) fn log_lines(entries: &[strata_types::api::LogEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p.muted #no-logs { "No log lines yet." }
        } @else {
            pre.log.follow #log-lines {
                @for e in entries {
                    span class=(e.stream.as_str()) {
                        span.muted { (html::timestamp(e.ts_ms)) " " }
                        @if let Some(i) = &e.invocation { span.muted { (i.get(..8).unwrap_or(i)) " " } }
                        (e.line) "\n"
                    }
                }
            }
        }
    }
}

pub async fn logs(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Page {
    c.app.platform.function(&name)?;
    let tail = q.tail.unwrap_or(200).clamp(1, 5000);
    let entries = c.app.platform.read_logs(&name, 0, tail);
    if wants_fragment(&headers) {
        return Ok(markup(log_lines(&entries)));
    }
    let follow = q.follow.is_some_and(|f| !f.is_empty());
    let poll = format!("/console/functions/{name}/logs?tail={tail}");
    Ok(markup(html::page(
        &format!("{name} logs"),
        Nav::Functions,
        Some(&sess),
        html! {
            h1 { "Function " (name) }
            (tabs(&name, "logs"))
            form method="get" action=(format!("/console/functions/{name}/logs")) {
                div.row {
                    div { label for="tail" { "Last lines" } input #tail type="number" name="tail" min="1" max="5000" value=(tail); }
                    div { label.inline { input type="checkbox" name="follow" value="1" checked[follow]; "Follow (refresh every 2 s)" } }
                }
                button.secondary type="submit" #refresh-logs { "Show" }
            }
            @if follow {
                div #logs data-poll=(poll) data-every="2000" { (log_lines(&entries)) }
            } @else {
                div #logs { (log_lines(&entries)) }
            }
        },
    )))
}

// ---- code ----

fn code_markup(
    c: &C,
    sess: &Session,
    f: &FunctionInfo,
    files: Option<&[SourceFile]>,
    message: Option<Result<String, String>>,
) -> Markup {
    let _ = c;
    html::page(
        &format!("{} code", f.name),
        Nav::Functions,
        Some(sess),
        html! {
            h1 { "Function " (f.name) }
            (tabs(&f.name, "code"))
            @match &message {
                Some(Ok(m)) => (html::info_banner(m)),
                Some(Err(m)) => (html::error_banner(m)),
                None => {}
            }
            div.card {
                h2 { "Edit" }
                @match files {
                    Some(files) => {
                        p.muted { "Saving deploys the files as revision " (f.revision + 1) " (an unchanged save keeps revision " (f.revision) "). Clear a file's name to delete it." }
                        form method="post" action=(format!("/console/functions/{}/code", f.name)) #code-form {
                            (html::csrf_field(sess))
                            label for="handler" { "Handler" }
                            input #handler type="text" name="handler" value=(f.handler);
                            @for (i, file) in files.iter().enumerate() {
                                div.file {
                                    label for=(format!("path-{i}")) { "File" }
                                    input id=(format!("path-{i}")) type="text" name="path" value=(file.path);
                                    textarea.code id=(format!("text-{i}")) name="text" spellcheck="false" aria-label=(file.path) { (file.text) }
                                }
                            }
                            div.file {
                                label for="path-new" { "New file " span.muted { "(optional)" } }
                                input #path-new type="text" name="path" value="" placeholder="lib/util.py";
                                textarea.code #text-new name="text" spellcheck="false" aria-label="new file" {}
                            }
                            button type="submit" #save-code { "Save and deploy" }
                        }
                    }
                    None => {
                        p { "This function's code is not simple text (more than " (strata_control::SIMPLE_MAX_FILES) " files, more than " (html::bytes(strata_control::SIMPLE_MAX_BYTES)) ", binary files or links): upload a new archive instead." }
                    }
                }
            }
            div.card {
                h2 { "Upload a new archive" }
                form method="post" action=(format!("/console/functions/{}/upload", f.name)) enctype="multipart/form-data" #code-upload-form {
                    (html::csrf_field(sess))
                    input #code-archive type="file" name="archive" accept=".zip,.tar,.tar.gz,.tgz" required;
                    button type="submit" { "Upload and deploy" }
                }
            }
        },
    )
}

pub async fn code_page(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(name): UrlPath<String>,
) -> Page {
    let f = c.app.platform.function(&name)?;
    let files = c.app.platform.function_source(&name)?;
    Ok(markup(code_markup(&c, &sess, &f, files.as_deref(), None)))
}

/// `POST /console/functions/{name}/code`: repeated `path`/`text` pairs and the handler.
pub async fn save_code(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Page {
    let bytes = axum::body::to_bytes(body, super::MAX_FORM_BYTES)
        .await
        .map_err(|_| ConsoleErr::new(StatusCode::PAYLOAD_TOO_LARGE, "form too large"))?;
    let fields = Fields::urlencoded(&bytes);
    let before = c.app.platform.function(&name)?;
    let current = c.app.platform.function_source(&name)?.unwrap_or_default();
    let paths = fields.all("path");
    let texts = fields.all("text");
    if paths.len() != texts.len() {
        return Err(ConsoleErr::invalid(
            "every file needs a name and a text field",
        ));
    }
    let files: Vec<SourceFile> = paths
        .iter()
        .zip(&texts)
        .filter(|(p, _)| !p.trim().is_empty())
        .map(|(p, t)| SourceFile {
            path: p.trim().to_string(),
            text: t.replace("\r\n", "\n"),
            executable: current.iter().any(|f| f.path == p.trim() && f.executable),
        })
        .collect();
    let handler = fields.opt("handler").filter(|h| *h != before.handler);
    let update = FunctionUpdate {
        handler,
        ..Default::default()
    };
    let result = c
        .app
        .platform
        .update_function_source(&name, update, &files)
        .await;
    let (f, message, status) = match result {
        Ok(f) if f.revision == before.revision => (
            f,
            Ok("No change: the code is the same.".to_string()),
            StatusCode::OK,
        ),
        Ok(f) => {
            let m = format!("Deployed revision {}.", f.revision);
            (f, Ok(m), StatusCode::OK)
        }
        Err(e) => {
            let e = ConsoleErr::control(e);
            (before, Err(e.message().to_string()), e.status())
        }
    };
    // After an error, show what was submitted so nothing typed is lost.
    let shown = if message.is_err() {
        Some(files)
    } else {
        c.app.platform.function_source(&name)?
    };
    Ok((
        status,
        markup(code_markup(&c, &sess, &f, shown.as_deref(), Some(message))),
    )
        .into_response())
}

/// `POST /console/functions/{name}/upload` (multipart): a new code archive.
pub async fn upload_code(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(name): UrlPath<String>,
    form: Multipart,
) -> Page {
    let fields = Fields::read(&c, &sess, form, c.app.max_upload).await?;
    let before = c.app.platform.function(&name)?;
    let Some((path, _)) = fields.file("archive") else {
        return Err(ConsoleErr::invalid(
            "choose an archive (.zip, .tar or .tar.gz) to upload",
        ));
    };
    let f = c
        .app
        .platform
        .update_function(&name, FunctionUpdate::default(), Some(path))
        .await?;
    drop(fields);
    let message = if f.revision == before.revision {
        "No change: the code is the same.".to_string()
    } else {
        format!("Deployed revision {}.", f.revision)
    };
    let files = c.app.platform.function_source(&name)?;
    Ok(markup(code_markup(
        &c,
        &sess,
        &f,
        files.as_deref(),
        Some(Ok(message)),
    )))
}

// ---- settings ----

fn env_text(env: &std::collections::BTreeMap<String, String>) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn settings_markup(
    c: &C,
    sess: &Session,
    f: &FunctionInfo,
    message: Option<Result<String, String>>,
) -> Result<Markup, ConsoleErr> {
    let runtimes = runtime_options(c)?;
    let r = &f.resources;
    let sc = &f.scaling;
    let volumes: String = f
        .volumes
        .iter()
        .map(|v| format!("{}:{}\n", v.volume, v.path))
        .collect();
    Ok(html::page(
        &format!("{} settings", f.name),
        Nav::Functions,
        Some(sess),
        html! {
            h1 { "Function " (f.name) }
            (tabs(&f.name, "settings"))
            @match &message {
                Some(Ok(m)) => (html::info_banner(m)),
                Some(Err(m)) => (html::error_banner(m)),
                None => {}
            }
            form.card method="post" action=(format!("/console/functions/{}/settings", f.name)) #settings-form {
                (html::csrf_field(sess))
                h2 { "Runtime" }
                div.row {
                    div {
                        label for="runtime" { "Runtime" }
                        select #runtime name="runtime" {
                            @if !runtimes.iter().any(|(v, _)| *v == f.runtime) {
                                option value=(f.runtime) selected { (f.runtime) " (missing)" }
                            }
                            @for (value, label) in &runtimes {
                                option value=(value) selected[*value == f.runtime] { (label) }
                            }
                        }
                    }
                    div { label for="handler" { "Handler" } input #handler type="text" name="handler" value=(f.handler); }
                }
                h2 { "Resources" }
                div.row {
                    div { label for="memory" { "Memory" } input #memory type="text" name="memory" value=(r.memory_bytes.map(html::bytes).unwrap_or_default()); }
                    div { label for="cpu" { "CPU (cores)" } input #cpu type="text" name="cpu" value=(r.cpu_millis.map(|m| format!("{}", f64::from(m) / 1000.0)).unwrap_or_default()); }
                    div { label for="timeout" { "Timeout" } input #timeout type="text" name="timeout" value=(r.timeout_ms.map(|t| format!("{t}ms")).unwrap_or_default()); }
                }
                h2 { "Environment" }
                label for="env" { "Variables " span.muted { "(KEY=VALUE, one per line)" } }
                textarea.code.payload #env name="env" spellcheck="false" { (env_text(&f.env)) }
                label for="secret_env" { "Set secret variables " span.muted { "(KEY=VALUE, one per line; values are never shown back)" } }
                textarea.code.payload #secret_env name="secret_env" spellcheck="false" {}
                @if !f.secret_env.is_empty() {
                    p { "Secret variables: "
                        @for k in &f.secret_env {
                            label.inline { input type="checkbox" name="unset_secret" value=(k); "remove " span.mono { (k) } }
                        }
                    }
                }
                h2 { "Volumes and network" }
                label for="volumes" { "Volumes " span.muted { "(VOLUME:/mount/path, one per line)" } }
                textarea.code.payload #volumes name="volumes" spellcheck="false" { (volumes) }
                label.inline { input type="checkbox" name="network" value="1" checked[f.network]; "Outbound network access" }
                label.inline { input type="checkbox" name="public" value="1" checked[f.public]; "Public HTTP trigger (no token)" }
                h2 { "Scaling" }
                div.row {
                    div { label for="min_instances" { "Min instances" } input #min_instances type="number" min="0" name="min_instances" value=(sc.min_instances); }
                    div { label for="max_instances" { "Max instances" } input #max_instances type="number" min="1" name="max_instances" value=(sc.max_instances); }
                    div { label for="concurrency" { "Concurrency" } input #concurrency type="number" min="1" max="64" name="concurrency" value=(sc.concurrency); }
                    div { label for="idle_timeout" { "Idle timeout" } input #idle_timeout type="text" name="idle_timeout" value=(sc.idle_timeout_ms.map(|t| format!("{t}ms")).unwrap_or_default()) placeholder="server default"; }
                    div { label for="max_queue" { "Max queue" } input #max_queue type="number" min="0" name="max_queue" value=(sc.max_queue); }
                }
                button type="submit" #save-settings { "Save" }
            }
            form.card method="post" action=(format!("/console/functions/{}/delete", f.name)) {
                (html::csrf_field(sess))
                h2 { "Delete" }
                p.muted { "Stops its instances and removes its revisions and logs." }
                button.danger type="submit" data-confirm=(format!("Delete function {}?", f.name)) { "Delete function" }
            }
        },
    ))
}

pub async fn settings_page(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(name): UrlPath<String>,
) -> Page {
    let f = c.app.platform.function(&name)?;
    Ok(markup(settings_markup(&c, &sess, &f, None)?))
}

fn key_values(
    text: &str,
    what: &str,
) -> Result<std::collections::BTreeMap<String, String>, ConsoleErr> {
    let mut out = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConsoleErr::invalid(format!(
                "{what}: {line:?} is not KEY=VALUE"
            )));
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(f: &Fields, name: &str) -> Result<Option<T>, ConsoleErr> {
    match f.opt(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ConsoleErr::invalid(format!("{name}: {v:?} is not a whole number"))),
    }
}

/// The update a settings form asks for, against the function as it is. Resources are sent only
/// when they differ from the effective value, so a function keeps following its runtime's
/// defaults unless a value is changed.
pub fn settings_update(f: &FunctionInfo, fields: &Fields) -> Result<FunctionUpdate, ConsoleErr> {
    let mut u = FunctionUpdate::default();
    if let Some(rt) = fields.opt("runtime").filter(|r| *r != f.runtime) {
        u.runtime = Some(rt);
    }
    if let Some(h) = fields.opt("handler").filter(|h| *h != f.handler) {
        u.handler = Some(h);
    }
    let wanted = resources(fields)?;
    let cur = &f.resources;
    u.resources = Resources {
        memory_bytes: wanted.memory_bytes.filter(|m| Some(*m) != cur.memory_bytes),
        cpu_millis: wanted.cpu_millis.filter(|m| Some(*m) != cur.cpu_millis),
        timeout_ms: wanted.timeout_ms.filter(|m| Some(*m) != cur.timeout_ms),
    };
    let env = key_values(&fields.raw("env"), "variables")?;
    u.unset_env = f
        .env
        .keys()
        .filter(|k| !env.contains_key(*k))
        .cloned()
        .collect();
    u.env = env
        .into_iter()
        .filter(|(k, v)| f.env.get(k) != Some(v))
        .collect();
    u.secret_env = key_values(&fields.raw("secret_env"), "secret variables")?;
    u.unset_env.extend(
        fields
            .all("unset_secret")
            .into_iter()
            .filter(|k| f.secret_env.contains(k)),
    );
    let mut volumes = Vec::new();
    for line in fields
        .raw("volumes")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        volumes.push(line.parse::<VolumeMount>().map_err(ConsoleErr::invalid)?);
    }
    if volumes != f.volumes {
        u.volumes = Some(volumes);
    }
    u.network = Some(fields.checked("network")).filter(|n| *n != f.network);
    u.public = Some(fields.checked("public")).filter(|p| *p != f.public);
    let idle = match fields.opt("idle_timeout") {
        None => None,
        Some(t) => Some(
            strata_types::parse_duration(&t)
                .map_err(|e| ConsoleErr::invalid(format!("idle timeout: {e}")))?,
        ),
    };
    u.scaling = ScalingUpdate {
        min_instances: number(fields, "min_instances")?,
        max_instances: number(fields, "max_instances")?,
        concurrency: number(fields, "concurrency")?,
        idle_timeout_ms: idle,
        max_queue: number(fields, "max_queue")?,
    };
    Ok(u)
}

pub async fn save_settings(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Page {
    let bytes = axum::body::to_bytes(body, super::MAX_FORM_BYTES)
        .await
        .map_err(|_| ConsoleErr::new(StatusCode::PAYLOAD_TOO_LARGE, "form too large"))?;
    let fields = Fields::urlencoded(&bytes);
    let before = c.app.platform.function(&name)?;
    let result = match settings_update(&before, &fields) {
        Ok(u) => c
            .app
            .platform
            .update_function(&name, u, None)
            .await
            .map_err(ConsoleErr::control),
        Err(e) => Err(e),
    };
    let (f, message, status) = match result {
        Ok(f) if f.revision == before.revision => (f, Ok("No change.".to_string()), StatusCode::OK),
        Ok(f) => {
            let m = format!("Saved as revision {}.", f.revision);
            (f, Ok(m), StatusCode::OK)
        }
        Err(e) => (before, Err(e.message().to_string()), e.status()),
    };
    Ok((
        status,
        markup(settings_markup(&c, &sess, &f, Some(message))?),
    )
        .into_response())
}

pub async fn delete(State(c): State<C>, UrlPath(name): UrlPath<String>) -> Page {
    c.app.platform.delete_function(&name).await?;
    Ok(see_other("/console/functions"))
}
