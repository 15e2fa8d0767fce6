//! A minimal blocking client of the `/v1` routes the benchmark drives. One keep-alive connection
//! pool serves every request, so the health baseline and the invocations share the same HTTP
//! path.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::{Client, Response};
use strata_types::api::{CreateFunctionSpec, ErrorBody, FunctionInfo, PoolSettings};

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
