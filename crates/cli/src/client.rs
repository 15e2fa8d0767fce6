//! A blocking client of the `/v1` API.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use strata_types::api::{ErrorBody, Event};

/// An API error, printed as the server's message plus a hint.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub kind: String,
    pub message: String,
    /// A hint that replaces the generic one (e.g. why no token was sent).
    pub hint: Option<String>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            return write!(f, "\nhint: {h}");
        }
        match self.kind.as_str() {
            "unauthenticated" => write!(
                f,
                "\nhint: run as a user who can read the server's admin.token, or set STRATA_TOKEN / --token"
            ),
            "not_found" if self.status == 404 && self.message.starts_with("no such route") => {
                write!(f, "\nhint: the server is older than this client")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ApiFailure {}

/// The message for a server that cannot be reached, with the fix.
fn unreachable(base: &str) -> String {
    format!(
        "cannot reach the Strata server at {base}: is the server running?\n\
         hint: start it with `strata server` (or `scripts/run`), or point --server / STRATA_URL at a running one"
    )
}

pub struct Api {
    base: String,
    token: Option<String>,
    /// Why no token is sent, when none is.
    token_note: Option<String>,
    http: Client,
}

impl Api {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Api> {
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(None)
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            base: server.trim_end_matches('/').to_string(),
            token,
            token_note: None,
            http,
        })
    }

    /// Says why no token is sent, for the hint of an `unauthenticated` answer.
    pub fn with_token_note(mut self, note: Option<String>) -> Api {
        self.token_note = note;
        self
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn send(&self, r: RequestBuilder) -> anyhow::Result<Response> {
        let resp = r.send().map_err(|e| {
            if e.is_connect() {
                anyhow!("{}", unreachable(&self.base))
            } else {
                anyhow!(e).context(format!("request to {} failed", self.base))
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => Err(ApiFailure {
                status,
                kind: b.error.kind.to_string(),
                message: b.error.message,
                hint: (b.error.kind == strata_types::ErrorKind::Unauthenticated)
                    .then(|| self.token_note.clone())
                    .flatten(),
            }
            .into()),
            Err(_) => bail!("server answered {status}: {text}"),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self.send(self.req(reqwest::Method::GET, path))?.json()?)
    }

    /// A GET whose `404 not found` is `None`.
    pub fn get_opt<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        match self.get(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) => match e.downcast_ref::<ApiFailure>() {
                Some(f) if f.status == 404 && f.kind == "not_found" => Ok(None),
                _ => Err(e),
            },
        }
    }

    pub fn put_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: reqwest::blocking::multipart::Form,
    ) -> anyhow::Result<T> {
        Ok(self
            .send(self.req(reqwest::Method::PUT, path).multipart(form))?
            .json()?)
    }

    pub fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        Ok(self
            .send(self.req(reqwest::Method::POST, path).json(body))?
            .json()?)
    }

    pub fn put_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        Ok(self
            .send(self.req(reqwest::Method::PUT, path).json(body))?
            .json()?)
    }

    pub fn post_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: reqwest::blocking::multipart::Form,
    ) -> anyhow::Result<T> {
        Ok(self
            .send(self.req(reqwest::Method::POST, path).multipart(form))?
            .json()?)
    }

    pub fn patch_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: reqwest::blocking::multipart::Form,
    ) -> anyhow::Result<T> {
        Ok(self
            .send(self.req(reqwest::Method::PATCH, path).multipart(form))?
            .json()?)
    }

    /// A streaming GET (logs).
    pub fn get_stream(&self, path: &str) -> anyhow::Result<Response> {
        self.send(self.req(reqwest::Method::GET, path))
    }

    /// POSTs raw bytes and returns status, headers and body whatever the status (invocations
    /// answer errors in the Lambda shape).
    pub fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, std::collections::HashMap<String, String>, Vec<u8>)> {
        let resp = self
            .req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .map_err(|e| {
                if e.is_connect() {
                    anyhow!("{}", unreachable(&self.base))
                } else {
                    anyhow!(e)
                }
            })?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), v.to_string()))
            })
            .collect();
        let body = resp.bytes()?.to_vec();
        if status == 401 {
            let msg = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error.message)
                .unwrap_or_default();
            return Err(ApiFailure {
                status,
                kind: "unauthenticated".into(),
                message: msg,
                hint: self.token_note.clone(),
            }
            .into());
        }
        Ok((status, headers, body))
    }

    pub fn delete_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self.send(self.req(reqwest::Method::DELETE, path))?;
        let text = resp.text()?;
        Ok(if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// POSTs JSON and follows the NDJSON event stream; returns the `done` result.
    pub fn post_stream(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        on_event: &mut dyn FnMut(&Event),
    ) -> anyhow::Result<serde_json::Value> {
        let resp = self.send(self.req(reqwest::Method::POST, path).json(body))?;
        follow(resp, on_event)
    }

    /// POSTs a file and follows the event stream.
    pub fn post_file_stream(
        &self,
        path: &str,
        file: &Path,
        on_event: &mut dyn FnMut(&Event),
    ) -> anyhow::Result<serde_json::Value> {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata()?.len();
        let body = reqwest::blocking::Body::sized(f, len);
        let resp = self.send(
            self.req(reqwest::Method::POST, path)
                .header("content-type", "application/x-tar")
                .body(body),
        )?;
        follow(resp, on_event)
    }

    /// POSTs a multipart form and follows the event stream.
    pub fn post_form_stream(
        &self,
        path: &str,
        form: reqwest::blocking::multipart::Form,
        on_event: &mut dyn FnMut(&Event),
    ) -> anyhow::Result<serde_json::Value> {
        let resp = self.send(self.req(reqwest::Method::POST, path).multipart(form))?;
        follow(resp, on_event)
    }
}

fn follow(resp: Response, on_event: &mut dyn FnMut(&Event)) -> anyhow::Result<serde_json::Value> {
    let reader = BufReader::new(resp);
    for line in reader.lines() {
        let line = line.context("reading the server's event stream")?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Event =
            serde_json::from_str(&line).with_context(|| format!("bad event line: {line}"))?;
        match event {
            Event::Done { result } => return Ok(result),
            Event::Error { error } => {
                return Err(ApiFailure {
                    status: 200,
                    kind: error.kind.to_string(),
                    message: error.message,
                    hint: None,
                }
                .into())
            }
            other => on_event(&other),
        }
    }
    bail!("the server closed the event stream before the operation finished (did it restart?)")
}

/// Adds the fix to an error the server answered: the runtimes, functions or templates there
/// are when a name was not found.
pub fn enrich(api: &Api, err: anyhow::Error) -> anyhow::Error {
    let Some(f) = err.downcast_ref::<ApiFailure>() else {
        return err;
    };
    if f.kind != "not_found" || f.hint.is_some() {
        return err;
    }
    let hint = if f.message.starts_with("runtime ") {
        match api.get::<Vec<strata_types::api::RuntimeInfo>>("/v1/runtimes") {
            Ok(list) if list.is_empty() => Some(
                "there are no runtimes yet: run `strata bootstrap` to build python3 and nodejs"
                    .to_string(),
            ),
            Ok(list) => {
                let mut names: Vec<String> = list.into_iter().map(|r| r.name).collect();
                names.dedup();
                Some(format!(
                    "available runtimes: {} (see `strata runtime ls`)",
                    names.join(", ")
                ))
            }
            Err(_) => None,
        }
    } else if f.message.starts_with("function ") {
        match api.get::<Vec<strata_types::api::FunctionInfo>>("/v1/functions") {
            Ok(list) if list.is_empty() => Some(
                "there are no functions yet: create one with `strata fn create` or `strata up`"
                    .to_string(),
            ),
            Ok(list) => {
                let names: Vec<String> = list.into_iter().map(|f| f.name).take(20).collect();
                Some(format!(
                    "functions: {} (see `strata fn ls`)",
                    names.join(", ")
                ))
            }
            Err(_) => None,
        }
    } else if let Some(rest) = f.message.strip_prefix("volume \"") {
        let name = rest.split('"').next().unwrap_or_default();
        Some(format!("create it with `strata volume create {name}`"))
    } else if f.message.starts_with("image ") {
        Some("see `strata image ls`; `strata bootstrap` creates debian-bookworm".into())
    } else {
        None
    };
    match hint {
        Some(h) => ApiFailure {
            status: f.status,
            kind: f.kind.clone(),
            message: f.message.clone(),
            hint: Some(h),
        }
        .into(),
        None => err,
    }
}
