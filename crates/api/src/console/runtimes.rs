//! Runtime library pages: runtimes with their versions, sizes, layers or packages and users;
//! creating a runtime from a Dockerfile or from packages as a background job with a live build
//! log; the job pages.

use std::collections::BTreeMap;

use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use maud::{html, Markup};
use strata_types::api::{CreateRuntimeSpec, Event, RuntimeInfo};
use strata_types::{Resources, RuntimeRef};

use super::html::{self, Nav};
use super::jobs::{Job, Outcome};
use super::{markup, see_other, wants_fragment, ConsoleErr, Fields, Page, Session, C};

fn runtime_ref(s: &str) -> Result<RuntimeRef, ConsoleErr> {
    s.parse()
        .map_err(|e: strata_types::NameError| ConsoleErr::invalid(e.to_string()))
}

/// Runtime choices for a function: each name (following its newest version), then each
/// version pinned.
pub fn runtime_options(c: &C) -> Result<Vec<(String, String)>, ConsoleErr> {
    let mut by_name: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in c.app.platform.runtimes()? {
        by_name.entry(r.name).or_default().push(r.version);
    }
    let mut out = Vec::new();
    for (name, mut versions) in by_name {
        versions.sort_unstable();
        let newest = versions.last().copied().unwrap_or(1);
        out.push((name.clone(), format!("{name} (newest, now @{newest})")));
        for v in versions.iter().rev() {
            out.push((format!("{name}@{v}"), format!("{name}@{v} (pinned)")));
        }
    }
    Ok(out)
}

fn how_made(r: &RuntimeInfo) -> Markup {
    html! {
        @if r.packages.is_empty() {
            (r.kind)
        } @else {
            (r.kind) ": " span.mono { (r.packages.join(", ")) }
        }
    }
}

pub async fn list(State(c): State<C>, Extension(sess): Extension<Session>) -> Page {
    let p = &c.app.platform;
    let mut by_name: BTreeMap<String, Vec<RuntimeInfo>> = BTreeMap::new();
    for r in p.runtimes()? {
        by_name.entry(r.name.clone()).or_default().push(r);
    }
    let mut rows = Vec::new();
    for (name, mut versions) in by_name {
        versions.sort_by_key(|r| r.version);
        let users = p.runtime_users(&runtime_ref(&name)?)?;
        rows.push((name, versions, users));
    }
    Ok(markup(html::page(
        "Runtimes",
        Nav::Runtimes,
        Some(&sess),
        html! {
            h1 { "Runtimes" }
            p { a.button href="/console/runtimes/new" #new-runtime { "New runtime" } }
            @if rows.is_empty() {
                p.muted { "No runtimes yet: create one from a Dockerfile, or run strata bootstrap for the built-in python3 and nodejs." }
            } @else {
                table #runtimes {
                    thead { tr { th { "Name" } th { "Versions" } th { "Newest: size" } th { "Layers" } th { "Made from" } th { "Used by" } } }
                    tbody {
                        @for (name, versions, users) in &rows {
                            @if let Some(newest) = versions.last() {
                                tr {
                                    td { a href=(format!("/console/runtimes/{name}")) { (name) } }
                                    td {
                                        @for r in versions.iter().rev() {
                                            a href=(format!("/console/runtimes/{}@{}", r.name, r.version)) { "@" (r.version) } " "
                                        }
                                    }
                                    td { (html::bytes(newest.size_bytes)) }
                                    td { (newest.layers.len()) }
                                    td { (how_made(newest)) }
                                    td {
                                        @if users.is_empty() { span.muted { "no function" } }
                                        @for u in users { a href=(format!("/console/functions/{u}")) { (u) } " " }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )))
}

pub async fn detail(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(r): UrlPath<String>,
) -> Page {
    let p = &c.app.platform;
    let reference = runtime_ref(&r)?;
    let rt = p.runtime(&reference)?;
    let exact = RuntimeRef {
        name: rt.name.clone(),
        version: Some(rt.version),
    };
    let users = p.runtime_users(&exact)?;
    let mut versions: Vec<u32> = p
        .runtimes()?
        .into_iter()
        .filter(|v| v.name == rt.name)
        .map(|v| v.version)
        .collect();
    versions.sort_unstable();
    let cfg = &rt.config;
    let res = &rt.resources;
    Ok(markup(html::page(
        &format!("{}@{}", rt.name, rt.version),
        Nav::Runtimes,
        Some(&sess),
        html! {
            h1 { "Runtime " span #runtime-ref { (rt.name) "@" (rt.version) } }
            p {
                "Versions: "
                @for v in versions.iter().rev() {
                    @if *v == rt.version { b { "@" (v) } " " } @else { a href=(format!("/console/runtimes/{}@{v}", rt.name)) { "@" (v) } " " }
                }
            }
            div.card {
                table {
                    tr { th { "Made from" } td { (how_made(&rt)) } th { "Base" } td.mono { (rt.base) } }
                    tr { th { "Size" } td { (html::bytes(rt.size_bytes)) " in " (rt.layers.len()) " layers" } th { "Created" } td { (rt.created_at) } }
                    tr { th { "Entrypoint" } td.mono colspan="3" { (cfg.entrypoint.as_ref().map(|e| e.join(" ")).unwrap_or_default()) } }
                    tr { th { "Defaults" } td colspan="3" {
                        (res.memory_bytes.map(html::bytes).unwrap_or_default()) " memory · "
                        (res.cpu_millis.map(|m| format!("{:.2}", f64::from(m) / 1000.0)).unwrap_or_default()) " cpu · "
                        (res.timeout_ms.map(|t| html::millis(t as f64)).unwrap_or_default()) " timeout"
                    } }
                    tr { th { "Used by" } td colspan="3" #runtime-users {
                        @if users.is_empty() { span.muted { "no function" } }
                        @for u in &users { a href=(format!("/console/functions/{u}")) { (u) } " " }
                    } }
                }
            }
            @let env = cfg.env_strings();
            @if !env.is_empty() {
                h2 { "Environment" }
                pre { @for e in &env { (e) "\n" } }
            }
            h2 { "Layers" }
            table #layers {
                thead { tr { th { "#" } th { "Digest" } th { "Size" } th { "Entries" } th { "Shared by" } th { "Made by" } } }
                tbody {
                    @for (i, l) in rt.layers.iter().enumerate() {
                        tr {
                            td { (i + 1) }
                            td.mono { (l.digest.to_string().get(..19).unwrap_or("")) }
                            td { (html::bytes(l.size_bytes)) }
                            td { (l.entries) }
                            td { (l.shared_by) }
                            td.mono { (l.created_by) }
                        }
                    }
                }
            }
            form.card method="post" action=(format!("/console/runtimes/{}@{}/delete", rt.name, rt.version)) {
                (html::csrf_field(&sess))
                h2 { "Delete this version" }
                @if users.is_empty() {
                    p.muted { "Layers nothing else uses are collected." }
                    button.danger type="submit" data-confirm=(format!("Delete {}@{}?", rt.name, rt.version)) { "Delete " (rt.name) "@" (rt.version) }
                } @else {
                    p.muted { "In use by a function: it cannot be removed." }
                }
            }
        },
    )))
}

pub async fn delete(State(c): State<C>, UrlPath(r): UrlPath<String>) -> Page {
    let r = runtime_ref(&r)?;
    c.app.platform.delete_runtime(&r).await?;
    Ok(see_other("/console/runtimes"))
}

// ---- create ----

const SAMPLE_DOCKERFILE: &str = "FROM python3\nRUN echo building\n";

#[derive(Default)]
struct NewRuntime {
    name: String,
    dockerfile: String,
    build_args: String,
    memory: String,
    cpu: String,
    timeout: String,
    base: String,
    packages: Vec<String>,
    layered: bool,
    error: Option<String>,
}

fn new_markup(c: &C, sess: &Session, form: &NewRuntime) -> Result<Markup, ConsoleErr> {
    let p = &c.app.platform;
    let packages = p.packages()?;
    let mut bases: Vec<String> = p.images()?.into_iter().map(|i| i.name).collect();
    bases.extend(runtime_options(c)?.into_iter().map(|(v, _)| v));
    let defaults = |prefix: &str| {
        html! {
            div.row {
                div { label for=(format!("{prefix}-memory")) { "Default memory" } input id=(format!("{prefix}-memory")) type="text" name="memory" value=(form.memory) placeholder="256Mi"; }
                div { label for=(format!("{prefix}-cpu")) { "Default CPU" } input id=(format!("{prefix}-cpu")) type="text" name="cpu" value=(form.cpu) placeholder="1"; }
                div { label for=(format!("{prefix}-timeout")) { "Default timeout" } input id=(format!("{prefix}-timeout")) type="text" name="timeout" value=(form.timeout) placeholder="30s"; }
            }
        }
    };
    Ok(html::page(
        "New runtime",
        Nav::Runtimes,
        Some(sess),
        html! {
            h1 { "New runtime" }
            @if let Some(e) = &form.error { (html::error_banner(e)) }
            p.muted { "Creating an existing name makes its next version. The build runs in the background; its log is shown live." }
            div.card {
                h2 { "From a Dockerfile" }
                form method="post" action="/console/runtimes" enctype="multipart/form-data" #dockerfile-form {
                    (html::csrf_field(sess))
                    input type="hidden" name="source" value="dockerfile";
                    label for="rt-name" { "Name" }
                    input #rt-name type="text" name="name" value=(form.name) required placeholder="py-data";
                    label for="rt-dockerfile" { "Dockerfile" }
                    textarea.code #rt-dockerfile name="dockerfile" spellcheck="false" { (form.dockerfile) }
                    label for="rt-context" { "Build context " span.muted { "(optional .tar or .tar.gz for COPY and ADD)" } }
                    input #rt-context type="file" name="context" accept=".tar,.tar.gz,.tgz";
                    label for="rt-args" { "Build arguments " span.muted { "(KEY=VALUE, one per line)" } }
                    textarea.code.payload #rt-args name="build_args" spellcheck="false" { (form.build_args) }
                    (defaults("rt"))
                    label.inline { input type="checkbox" name="no_cache" value="1"; "Ignore the layer cache" }
                    div { button type="submit" #build-runtime { "Build runtime" } }
                }
            }
            div.card {
                h2 { "From packages" }
                @if packages.is_empty() {
                    p.muted { "No packages yet (strata package create)." }
                } @else {
                    form method="post" action="/console/runtimes" enctype="multipart/form-data" #packages-form {
                        (html::csrf_field(sess))
                        input type="hidden" name="source" value="packages";
                        label for="pk-name" { "Name" }
                        input #pk-name type="text" name="name" value=(form.name) required;
                        label for="pk-base" { "Base image or runtime" }
                        select #pk-base name="base" {
                            @for b in &bases { option value=(b) selected[*b == form.base] { (b) } }
                        }
                        label for="pk-packages" { "Packages " span.muted { "(their requirements are added)" } }
                        select #pk-packages name="packages" multiple size=(packages.len().clamp(3, 12)) {
                            @for pk in &packages {
                                @let r = format!("{}@{}", pk.name, pk.version);
                                option value=(r) selected[form.packages.contains(&r)] { (r) " — base " (pk.base) }
                            }
                        }
                        label.inline { input type="checkbox" name="layered" value="1" checked[form.layered]; "Layered (one ordered chain) instead of composed" }
                        (defaults("pk"))
                        div { button type="submit" #build-packages { "Create runtime" } }
                    }
                }
            }
        },
    ))
}

pub async fn new_page(State(c): State<C>, Extension(sess): Extension<Session>) -> Page {
    let form = NewRuntime {
        dockerfile: SAMPLE_DOCKERFILE.into(),
        ..Default::default()
    };
    Ok(markup(new_markup(&c, &sess, &form)?))
}

/// The spec a runtime form asks for.
fn spec_of(
    fields: &Fields,
    form: &NewRuntime,
    source: &str,
) -> Result<CreateRuntimeSpec, ConsoleErr> {
    if form.name.is_empty() {
        return Err(ConsoleErr::invalid("give the runtime a name"));
    }
    let resources = Resources::parse(
        fields.opt("memory").as_deref(),
        fields.opt("cpu").as_deref(),
        fields.opt("timeout").as_deref(),
    )
    .map_err(|e| ConsoleErr::invalid(e.to_string()))?;
    let mut build_args = BTreeMap::new();
    for line in form
        .build_args
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let (k, v) = line.split_once('=').ok_or_else(|| {
            ConsoleErr::invalid(format!("build argument {line:?} is not KEY=VALUE"))
        })?;
        build_args.insert(k.trim().to_string(), v.to_string());
    }
    let mut spec = serde_json::json!({
        "name": form.name,
        "build_args": build_args,
        "resources": resources,
        "no_cache": fields.checked("no_cache"),
    });
    match source {
        "dockerfile" => {
            if form.dockerfile.trim().is_empty() {
                return Err(ConsoleErr::invalid("the Dockerfile is empty"));
            }
            spec["dockerfile"] = form.dockerfile.clone().into();
        }
        "packages" => {
            if form.packages.is_empty() {
                return Err(ConsoleErr::invalid("choose at least one package"));
            }
            spec["base"] = form.base.clone().into();
            spec["packages"] = form.packages.clone().into();
            spec["layered"] = form.layered.into();
        }
        other => return Err(ConsoleErr::invalid(format!("unknown source {other:?}"))),
    }
    serde_json::from_value(spec).map_err(|e| ConsoleErr::invalid(format!("invalid runtime: {e}")))
}

/// `POST /console/runtimes` (multipart): starts a build job and shows its page.
pub async fn create(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    form: Multipart,
) -> Page {
    let mut fields = Fields::read(&c, &sess, form, c.app.max_upload).await?;
    let source = fields.get("source");
    let form = NewRuntime {
        name: fields.get("name"),
        dockerfile: fields.raw("dockerfile").replace("\r\n", "\n"),
        build_args: fields.raw("build_args"),
        memory: fields.get("memory"),
        cpu: fields.get("cpu"),
        timeout: fields.get("timeout"),
        base: fields.get("base"),
        packages: fields.all("packages"),
        layered: fields.checked("layered"),
        error: None,
    };
    let spec = match spec_of(&fields, &form, &source) {
        Ok(s) => s,
        Err(e) => {
            let status = e.status();
            let page = new_markup(
                &c,
                &sess,
                &NewRuntime {
                    error: Some(e.message().to_string()),
                    ..form
                },
            )?;
            return Ok((status, markup(page)).into_response());
        }
    };
    let context = fields.file("context").map(|(p, _)| p.to_path_buf());
    let scratch = fields.take_scratch();
    let p = c.app.platform.clone();
    let title = format!("build runtime {}", spec.name);
    let job = c.jobs.start(
        title,
        |v| {
            let name = v.get("name")?.as_str()?;
            let version = v.get("version")?.as_u64()?;
            Some((
                format!("/console/runtimes/{name}@{version}"),
                format!("runtime {name}@{version}"),
            ))
        },
        move |events| async move {
            let r = p.create_runtime(&spec, context.as_deref(), &events).await;
            drop(scratch);
            r
        },
    );
    Ok(see_other(&format!("/console/jobs/{}", job.id)))
}

// ---- jobs ----

fn event_line(e: &Event) -> Markup {
    html! {
        @match e {
            Event::Progress { message, current, total } => {
                span.platform { "==> " (message)
                    @if let (Some(c), Some(t)) = (current, total) { " (" (c) "/" (t) ")" }
                    "\n" }
            }
            Event::Step { index, total, instruction, cached, .. } => {
                span.platform { "Step " (index) "/" (total) ": " (instruction) @if *cached { " (cached)" } "\n" }
            }
            Event::Output { stream, line } => {
                span class=(match stream { strata_types::api::Stream::Stdout => "stdout", strata_types::api::Stream::Stderr => "stderr" }) { (line) "\n" }
            }
            Event::Done { .. } => { span.platform { "done\n" } }
            Event::Error { error } => { span.stderr { "error: " (error.message) "\n" } }
        }
    }
}

fn job_log_markup(job: &Job) -> Markup {
    let snap = job.snapshot();
    html! {
        @match &snap.outcome {
            None => p #job-status { span.warn { "Running…" } }
            Some(Outcome::Done(link)) => p #job-status data-done="ok" {
                span.ok { "Succeeded" }
                @if let Some((href, label)) = link { " · " a #job-result href=(href) { (label) } }
            }
            Some(Outcome::Failed(m)) => p #job-status data-done="failed" {
                span.bad { "Failed: " } (m)
            }
        }
        pre.log.follow #job-log {
            @if snap.dropped > 0 { span.muted { "(" (snap.dropped) " earlier lines not kept)\n" } }
            @for e in &snap.events { (event_line(e)) }
        }
    }
}

pub async fn job_page(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(id): UrlPath<String>,
) -> Page {
    let job = c.jobs.get(&id).ok_or_else(|| {
        ConsoleErr::new(
            StatusCode::NOT_FOUND,
            format!("no job {id} (jobs are kept in memory until the server restarts)"),
        )
    })?;
    let running = job.snapshot().outcome.is_none();
    Ok(markup(html::page(
        &job.title,
        Nav::Jobs,
        Some(&sess),
        html! {
            h1 { (job.title) }
            p.muted { "Started " (html::timestamp(job.started_ms)) " UTC" }
            @if running {
                div #job data-poll=(format!("/console/jobs/{}/log", job.id)) data-every="500" { (job_log_markup(&job)) }
            } @else {
                div #job { (job_log_markup(&job)) }
            }
        },
    )))
}

pub async fn job_log(
    State(c): State<C>,
    Extension(sess): Extension<Session>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Page {
    let job = c
        .jobs
        .get(&id)
        .ok_or_else(|| ConsoleErr::new(StatusCode::NOT_FOUND, format!("no job {id}")))?;
    if wants_fragment(&headers) {
        return Ok(markup(job_log_markup(&job)));
    }
    Ok(markup(html::page(
        &job.title,
        Nav::Jobs,
        Some(&sess),
        job_log_markup(&job),
    )))
}

pub async fn jobs(State(c): State<C>, Extension(sess): Extension<Session>) -> Page {
    let jobs = c.jobs.all();
    Ok(markup(html::page(
        "Jobs",
        Nav::Jobs,
        Some(&sess),
        html! {
            h1 { "Jobs" }
            @if jobs.is_empty() {
                p.muted { "No jobs since the server started." }
            } @else {
                table #jobs {
                    thead { tr { th { "Job" } th { "Started (UTC)" } th { "State" } } }
                    tbody {
                        @for j in &jobs {
                            tr {
                                td { a href=(format!("/console/jobs/{}", j.id)) { (j.title) } }
                                td { (html::timestamp(j.started_ms)) }
                                td {
                                    @match j.snapshot().outcome {
                                        None => span.warn { "running" },
                                        Some(Outcome::Done(_)) => span.ok { "succeeded" },
                                        Some(Outcome::Failed(_)) => span.bad { "failed" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )))
}
