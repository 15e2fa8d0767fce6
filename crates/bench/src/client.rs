//! A minimal blocking client of the `/v1` routes the benchmark drives. One keep-alive connection
//! pool serves every request, so the health baseline and the invocations share the same HTTP
//! path.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_types::api::{
    CreateFunctionSpec, CreatePackageSpec, CreateRuntimeSpec, ErrorBody, Event, FunctionInfo,
    GcReport, PackageInfo, PoolSettings, RollbackRequest, RuntimeInfo, StoreStats,
    UpdateRuntimeRequest,
};

/// How long a build (a package, or a runtime from a Dockerfile) may stream before the client
/// gives up: downloads from the Debian mirror and PyPI are in it.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

/// A Strata server, reached over HTTP with an API token.
pub struct Strata {
    http: Client,
    base: String,
    token: String,
}

/// A successful invocation as the client saw it.
#[derive(Debug)]
pub struct Invocation {
    /// The `x-strata-cold-start` header: `Some(true)` when an instance was started for it.
    pub cold: Option<bool>,
    /// The handler's result.
    pub body: Vec<u8>,
}

impl Strata {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str, token: &str) -> anyhow::Result<Strata> {
        let http = Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(4)
            .build()
            .context("building the HTTP client")?;
        Ok(Strata {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// Another client of the same server with its own connection pool, for a thread of its own.
    pub fn fresh(&self) -> anyhow::Result<Strata> {
        Strata::new(&self.base, &self.token)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /v1/health`, body read to the end.
    pub fn health(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .get(self.url("/v1/health"))
            .send()
            .with_context(|| format!("reaching the Strata server at {}", self.base))?;
        let resp = ok(resp, "GET /v1/health")?;
        resp.bytes().context("reading the health answer")?;
        Ok(())
    }

    /// `POST /v1/functions`: deploys a function from a code archive, waiting for the answer.
    pub fn create_function(&self, spec: &CreateFunctionSpec, code: Vec<u8>) -> anyhow::Result<()> {
        let form = Form::new()
            .text("spec", serde_json::to_string(spec)?)
            .part("code", Part::bytes(code).file_name("code.tar"));
        let resp = self
            .http
            .post(self.url("/v1/functions"))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .with_context(|| format!("deploying function {}", spec.name))?;
        let resp = ok(resp, &format!("deploying function {}", spec.name))?;
        resp.bytes().context("reading the deploy answer")?;
        Ok(())
    }

    /// `POST /v1/functions/{name}/invoke` with a JSON event; fails unless the handler succeeded.
    pub fn invoke(&self, name: &str, event: &'static [u8]) -> anyhow::Result<Invocation> {
        let resp = self
            .http
            .post(self.url(&format!("/v1/functions/{name}/invoke")))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(event)
            .send()
            .with_context(|| format!("invoking function {name}"))?;
        let status = resp.status();
        let cold = match resp
            .headers()
            .get("x-strata-cold-start")
            .and_then(|v| v.to_str().ok())
        {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let body = resp
            .bytes()
            .with_context(|| format!("reading the result of function {name}"))?
            .to_vec();
        if !status.is_success() {
            bail!(
                "invoking function {name}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(Invocation { cold, body })
    }

    /// `GET /v1/functions/{name}`: the function as the API describes it, with its statistics.
    pub fn describe_function(&self, name: &str) -> anyhow::Result<FunctionInfo> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/functions/{name}")))
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("describing function {name}"))?;
        let resp = ok(resp, &format!("describing function {name}"))?;
        resp.json()
            .with_context(|| format!("reading the description of function {name}"))
    }

    /// `PUT /v1/runtimes/{runtime}/pool`: sets the runtime's generic pool bounds.
    pub fn set_pool(&self, runtime: &str, min: u32, max: u32) -> anyhow::Result<()> {
        let what = format!("setting the pool of runtime {runtime} to min {min} max {max}");
        let resp = self
            .http
            .put(self.url(&format!("/v1/runtimes/{runtime}/pool")))
            .bearer_auth(&self.token)
            .json(&PoolSettings { min, max })
            .send()
            .with_context(|| what.clone())?;
        ok(resp, &what)?
            .bytes()
            .context("reading the pool answer")?;
        Ok(())
    }

    /// `GET /metrics`: the Prometheus text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(&self.token)
            .send()
            .context("reading /metrics")?;
        ok(resp, "GET /metrics")?
            .text()
            .context("reading the /metrics text")
    }

    /// `DELETE /v1/functions/{name}`.
    pub fn delete_function(&self, name: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .delete(self.url(&format!("/v1/functions/{name}")))
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("removing function {name}"))?;
        ok(resp, &format!("removing function {name}"))?;
        Ok(())
    }
}

/// The end of an NDJSON stream (builds, composition, updates) as the client saw it.
#[derive(Debug)]
pub struct Streamed<T> {
    /// The operation's result.
    pub result: T,
    /// The build steps announced, as (instruction, served by the cache).
    pub steps: Vec<(String, bool)>,
    /// Milliseconds from sending the request to reading the result line.
    pub ms: f64,
}

impl Strata {
    /// Sends a request answered with NDJSON events and reads them to the `done` or `error`
    /// line, then to the end of the answer so the connection can be used again.
    fn stream<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Streamed<T>> {
        let started = std::time::Instant::now();
        let resp = req
            .bearer_auth(&self.token)
            .timeout(BUILD_TIMEOUT)
            .send()
            .with_context(|| what.to_string())?;
        let resp = ok(resp, what)?;
        let mut steps = Vec::new();
        let mut lines = std::io::BufReader::new(resp).lines();
        for line in lines.by_ref() {
            let line = line.with_context(|| format!("{what}: reading the event stream"))?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Event = serde_json::from_str(&line)
                .with_context(|| format!("{what}: unexpected event line {line:?}"))?;
            match event {
                Event::Step {
                    instruction,
                    cached,
                    ..
                } => steps.push((instruction, cached)),
                Event::Done { result } => {
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    let result = serde_json::from_value(result)
                        .with_context(|| format!("{what}: reading the result"))?;
                    for rest in lines {
                        rest.with_context(|| format!("{what}: reading the end of the answer"))?;
                    }
                    return Ok(Streamed { result, steps, ms });
                }
                Event::Error { error } => bail!("{what}: {}", error.message),
                Event::Progress { .. } | Event::Output { .. } => {}
            }
        }
        bail!("{what}: the event stream ended without a result")
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str, what: &str) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .with_context(|| what.to_string())?;
        ok(resp, what)?
            .json()
            .with_context(|| format!("{what}: reading the answer"))
    }

    fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        what: &str,
    ) -> anyhow::Result<T> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .with_context(|| what.to_string())?;
        ok(resp, what)?
            .json()
            .with_context(|| format!("{what}: reading the answer"))
    }

    fn delete(&self, path: &str, what: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .delete(self.url(path))
            .bearer_auth(&self.token)
            .timeout(BUILD_TIMEOUT)
            .send()
            .with_context(|| what.to_string())?;
        ok(resp, what)?
            .bytes()
            .with_context(|| format!("{what}: reading the answer"))?;
        Ok(())
    }

    /// `POST /v1/packages`: creates a package version and builds it, waiting for the result.
    pub fn create_package(
        &self,
        spec: &CreatePackageSpec,
    ) -> anyhow::Result<Streamed<PackageInfo>> {
        let what = format!("creating package {}", spec.name);
        let form = Form::new().text("spec", serde_json::to_string(spec)?);
        self.stream(
            self.http.post(self.url("/v1/packages")).multipart(form),
            &what,
        )
    }

    /// `GET /v1/packages`.
    pub fn packages(&self) -> anyhow::Result<Vec<PackageInfo>> {
        self.get_json("/v1/packages", "listing packages")
    }

    /// `GET /v1/packages/{ref}`.
    pub fn package(&self, reference: &str) -> anyhow::Result<PackageInfo> {
        self.get_json(
            &format!("/v1/packages/{reference}"),
            &format!("describing package {reference}"),
        )
    }

    /// `DELETE /v1/packages/{ref}`.
    pub fn delete_package(&self, reference: &str) -> anyhow::Result<()> {
        self.delete(
            &format!("/v1/packages/{reference}"),
            &format!("removing package {reference}"),
        )
    }

    /// `POST /v1/runtimes` without a context: a package runtime, or a Dockerfile runtime whose
    /// Dockerfile needs no context.
    pub fn create_runtime(
        &self,
        spec: &CreateRuntimeSpec,
    ) -> anyhow::Result<Streamed<RuntimeInfo>> {
        let what = format!("creating runtime {}", spec.name);
        let form = Form::new().text("spec", serde_json::to_string(spec)?);
        self.stream(
            self.http.post(self.url("/v1/runtimes")).multipart(form),
            &what,
        )
    }

    /// `GET /v1/runtimes/{ref}`.
    pub fn runtime(&self, reference: &str) -> anyhow::Result<RuntimeInfo> {
        self.get_json(
            &format!("/v1/runtimes/{reference}"),
            &format!("describing runtime {reference}"),
        )
    }

    /// `DELETE /v1/runtimes/{ref}` (a name alone: every version).
    pub fn delete_runtime(&self, reference: &str) -> anyhow::Result<()> {
        self.delete(
            &format!("/v1/runtimes/{reference}"),
            &format!("removing runtime {reference}"),
        )
    }

    /// `POST /v1/runtimes/{name}/update`: the next version with packages added, removed or set.
    pub fn update_runtime(
        &self,
        name: &str,
        req: &UpdateRuntimeRequest,
    ) -> anyhow::Result<Streamed<RuntimeInfo>> {
        let what = format!("updating runtime {name}");
        self.stream(
            self.http
                .post(self.url(&format!("/v1/runtimes/{name}/update")))
                .json(req),
            &what,
        )
    }

    /// `POST /v1/runtimes/{name}/rollback`.
    pub fn rollback_runtime(&self, name: &str, to: Option<u32>) -> anyhow::Result<RuntimeInfo> {
        self.post_json(
            &format!("/v1/runtimes/{name}/rollback"),
            &RollbackRequest { to },
            &format!("rolling runtime {name} back"),
        )
    }

    /// `GET /v1/store/stats`.
    pub fn store_stats(&self) -> anyhow::Result<StoreStats> {
        self.get_json("/v1/store/stats", "reading the store statistics")
    }

    /// `POST /v1/store/gc`.
    pub fn store_gc(&self) -> anyhow::Result<GcReport> {
        self.post_json(
            "/v1/store/gc",
            &serde_json::json!({}),
            "collecting the store",
        )
    }
}

/// Passes a successful response through; turns an error response into its message.
fn ok(resp: Response, what: &str) -> anyhow::Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.error.message)
        .unwrap_or(text);
    bail!("{what}: HTTP {status}: {message}")
}
