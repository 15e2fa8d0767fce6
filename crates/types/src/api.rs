//! JSON shapes of the `/v1` HTTP API, shared by the server and the CLI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, ErrorKind, ImageConfig, Resources};

/// An error as the API returns it: `{"error": {"kind": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, and what would be right, for a person.
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

/// One layer of an image or runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Content digest of the layer's file tree.
    pub digest: Digest,
    /// Bytes of file content in the layer.
    pub size_bytes: u64,
    /// Number of entries (files, directories, links, whiteouts).
    pub entries: u64,
    /// How many images and runtime versions use this layer.
    pub shared_by: u64,
    /// What made the layer: an instruction, `bootstrap`, or `import`.
    pub created_by: String,
}

/// A base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The image's name.
    pub name: String,
    /// How it was made, e.g. `bootstrap bookworm (minbase)` or `import docker-archive`.
    pub source: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Total bytes of all layers.
    pub size_bytes: u64,
    /// Process configuration.
    pub config: ImageConfig,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Runtime versions built on this image (`name@version`).
    pub used_by: Vec<String>,
}

/// One version of a runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The runtime's name.
    pub name: String,
    /// The version, from 1.
    pub version: u32,
    /// The base image (or runtime reference) its final stage started from.
    pub base: String,
    /// Layers, bottom first: the base's layers then the runtime's own.
    pub layers: Vec<LayerInfo>,
    /// Total bytes of all layers.
    pub size_bytes: u64,
    /// Process configuration (ENV, WORKDIR, USER, CMD, ENTRYPOINT, LABEL, EXPOSE).
    pub config: ImageConfig,
    /// Default resources for functions on this runtime.
    pub resources: Resources,
    /// Digest of the Dockerfile text it was built from (for package runtimes: of the recipe
    /// the version was made from).
    pub dockerfile_digest: Digest,
    /// How it was made: `dockerfile`, `layered` (packages built as one ordered chain) or
    /// `composed` (independently built packages plus a merge layer).
    #[serde(default = "dockerfile_kind")]
    pub kind: String,
    /// For package runtimes: the packages, as `name@version`, in stacking order.
    #[serde(default)]
    pub packages: Vec<String>,
    /// The version this one was made from by an update or a rollback.
    #[serde(default)]
    pub parent: Option<u32>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
}

fn dockerfile_kind() -> String {
    "dockerfile".into()
}

/// `POST /v1/images/{name}/bootstrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapImageRequest {
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// Extra Debian packages to include.
    #[serde(default)]
    pub include: Vec<String>,
    /// Debian mirror URL; the server's default when unset.
    #[serde(default)]
    pub mirror: Option<String>,
}

/// The `spec` part of `POST /v1/runtimes` (the other part, `context`, is a tar of the build
/// context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRuntimeSpec {
    /// The runtime's name; creating an existing name makes its next version.
    pub name: String,
    /// The Dockerfile text (a Dockerfile runtime); empty for a package runtime.
    #[serde(default)]
    pub dockerfile: String,
    /// For a package runtime: the image (or runtime version) the packages are stacked on.
    #[serde(default)]
    pub base: Option<String>,
    /// For a package runtime: the packages (`name` or `name@version`); their requirements are
    /// added before them.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Build the packages as one ordered layer chain (Phase 2) instead of composing
    /// independently built packages (Phase 3, the default).
    #[serde(default)]
    pub layered: bool,
    /// `--build-arg` values.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Default resources for functions on this runtime.
    #[serde(default)]
    pub resources: Resources,
    /// Ignore the layer cache.
    #[serde(default)]
    pub no_cache: bool,
}

/// `POST /v1/runtimes/{ref}/run`: a one-off command in a fresh instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The command and its arguments; the runtime's ENTRYPOINT/CMD when empty.
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment, `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Share the host's network instead of a loopback-only namespace.
    #[serde(default)]
    pub network: bool,
    /// Kill the command after this many milliseconds (default: the runtime's timeout × 10, at
    /// most 1 hour).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of the NDJSON stream that long operations (bootstrap, import, builds, runs) answer
/// with. The last line is always `done` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A phase of the operation began or advanced.
    Progress {
        /// What is happening.
        message: String,
        /// Units done so far, when countable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current: Option<u64>,
        /// Units in all, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    /// A build step began.
    Step {
        /// Build stage index, from 0.
        stage: usize,
        /// Step number within the whole build, from 1.
        index: usize,
        /// Number of steps in the whole build.
        total: usize,
        /// The instruction, as written (after variable expansion).
        instruction: String,
        /// Whether the layer cache served the step.
        cached: bool,
    },
    /// A line of output from a build step or a command.
    Output {
        /// Which stream.
        stream: Stream,
        /// The line, without its newline.
        line: String,
    },
    /// The operation succeeded; `result` is its JSON result.
    Done {
        /// The operation's result (an `ImageInfo`, a `RuntimeInfo`, a run's exit code...).
        result: serde_json::Value,
    },
    /// The operation failed.
    Error {
        /// What failed.
        error: ApiError,
    },
}

/// The result of `POST /v1/runtimes/{ref}/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    /// Exit code of the command (128 + signal when killed).
    pub exit_code: i32,
    /// Whether the command was killed at its timeout.
    pub timed_out: bool,
    /// Wall-clock milliseconds.
    pub duration_ms: u64,
}

/// The result of `POST /v1/bootstrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapResult {
    /// What was created (`image debian-bookworm`, `runtime python3@1`) or found already there.
    pub items: Vec<BootstrapItem>,
}

/// One thing `strata bootstrap` makes sure exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapItem {
    /// `image` or `runtime`.
    pub kind: String,
    /// Name, with version for runtimes.
    pub name: String,
    /// `created` or `unchanged`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags() {
        assert_eq!(
            "data:/mnt/data".parse::<VolumeMount>(),
            Ok(VolumeMount {
                volume: "data".into(),
                path: "/mnt/data".into()
            })
        );
        assert!("data".parse::<VolumeMount>().is_err());
        assert!("data:rel".parse::<VolumeMount>().is_err());
        assert!(":/x".parse::<VolumeMount>().is_err());
    }

    #[test]
    fn routes_match_whole_segments_and_methods() {
        let r = Route {
            path: "/items".into(),
            methods: vec!["GET".into()],
        };
        assert!(r.matches("GET", "/items"));
        assert!(r.matches("GET", "/items/7"));
        assert!(!r.matches("GET", "/itemsx"));
        assert!(!r.matches("POST", "/items"));
        assert!(!r.matches("GET", "/"));
        let all = Route {
            path: "/".into(),
            methods: vec![],
        };
        assert!(all.matches("DELETE", "/anything/at/all"));
        assert!(routes_match(&[], "PUT", "/x"), "no routes: everything");
        assert!(!routes_match(std::slice::from_ref(&r), "PUT", "/items"));
        for bad in ["items", "/a/../b", "/a?x=1", "/a//b", ""] {
            let r = Route {
                path: bad.into(),
                methods: vec![],
            };
            assert!(r.validate().is_err(), "{bad}");
        }
        let r = Route {
            path: "/x".into(),
            methods: vec!["get".into()],
        };
        assert!(r.validate().is_err(), "methods are upper case");
        let old: FunctionConfig =
            serde_json::from_str(r#"{"runtime": "python3", "handler": "app.handler"}"#)
                .expect("a configuration stored before routes existed");
        assert!(old.routes.is_empty());
        assert!(!serde_json::to_string(&old)
            .expect("json")
            .contains("routes"));
    }

    #[test]
    fn events_are_tagged_ndjson() {
        let e = Event::Output {
            stream: Stream::Stderr,
            line: "x".into(),
        };
        let text = serde_json::to_string(&e).expect("serializes");
        assert_eq!(text, r#"{"type":"output","stream":"stderr","line":"x"}"#);
        let back: Event = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, e);
    }
}

/// A named volume mounted into a function's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// Volume name.
    pub volume: String,
    /// Absolute mount path inside the instance.
    pub path: String,
}

impl std::str::FromStr for VolumeMount {
    type Err = String;

    /// Parses the `VOLUME:/absolute/path` form of `--volume`.
    fn from_str(s: &str) -> Result<VolumeMount, String> {
        match s.split_once(':') {
            Some((v, p)) if !v.is_empty() && p.starts_with('/') => Ok(VolumeMount {
                volume: v.into(),
                path: p.into(),
            }),
            _ => Err(format!(
                "invalid volume {s:?}: expected VOLUME:/absolute/path"
            )),
        }
    }
}

/// A function's configuration, as set by `strata fn create` / `update`. Each change makes a new
/// revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Runtime reference: `NAME` (follows the newest version) or `NAME@VERSION`.
    pub runtime: String,
    /// Handler, passed to the runtime's bootstrap (e.g. `app.handler`).
    pub handler: String,
    /// Resource overrides; unset fields come from the runtime's defaults.
    #[serde(default)]
    pub resources: Resources,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables: given to the function, never shown back.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Give instances outbound network access (their own namespace on the server's bridge,
    /// NAT egress, no host, link-local, private or instance addresses) instead of loopback
    /// only.
    #[serde(default)]
    pub network: bool,
    /// Whether the HTTP trigger (`ANY /fn/NAME/...`) answers without the bearer token. Private
    /// (false) by default: the trigger then needs the token like the API.
    #[serde(default)]
    pub public: bool,
    /// Scaling: warm minimum, maximum, concurrency per instance, idle timeout, queue.
    #[serde(default)]
    pub scaling: Scaling,
    /// Which requests of the HTTP trigger reach the function; empty: every path and method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// One route of a function's HTTP trigger (`ANY /fn/NAME/...`): a path prefix and the methods
/// it accepts. A function with routes answers only requests that match one of them (others get
/// 404 in the Lambda error shape); a function without routes takes every path and method.
/// Whether the trigger needs the token is the function's `public` flag, not the route's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix after `/fn/NAME`, starting with `/`. It matches whole segments: `/items`
    /// matches `/items` and `/items/7`, not `/itemsx`; `/` matches everything.
    pub path: String,
    /// HTTP methods in upper case, e.g. `GET`; empty: any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// Most routes one function may have.
pub const MAX_ROUTES: usize = 64;

impl Route {
    /// Checks the route's form: an absolute, normalized path prefix of at most 256 bytes
    /// without query, fragment or `..`, and known upper-case methods.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.path;
        if !p.starts_with('/')
            || p.len() > 256
            || p.contains(['?', '#', '\\', '\0', ' '])
            || p.contains("//")
            || p.split('/').any(|c| c == ".." || c == ".")
        {
            return Err(format!(
                "route path {p:?} must be an absolute path prefix such as / or /items (no query, no .., at most 256 bytes)"
            ));
        }
        for m in &self.methods {
            if !ROUTE_METHODS.contains(&m.as_str()) {
                return Err(format!(
                    "route method {m:?} must be one of {}",
                    ROUTE_METHODS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Whether a request (method, path after `/fn/NAME`) matches this route.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let prefix = self.path.trim_end_matches('/');
        let path_ok = prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        path_ok && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

/// The methods a route may name.
pub const ROUTE_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Whether a request reaches a function with these routes (every request when there are none).
pub fn routes_match(routes: &[Route], method: &str, path: &str) -> bool {
    routes.is_empty() || routes.iter().any(|r| r.matches(method, path))
}

/// Where a function's code comes from when the server fetches it from a git repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// Repository URL (`https://...`, `file://...` or an absolute path on the server, as the
    /// server allows).
    pub url: String,
    /// Branch, tag or full commit id; the repository's default branch (`HEAD`) when unset.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Directory inside the repository holding the function's code; the root when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
}

/// The git origin of a revision's code, as the server fetched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitOrigin {
    /// Repository URL.
    pub url: String,
    /// The ref asked for (`HEAD` when none was).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The commit it resolved to.
    pub commit: String,
    /// The directory used, empty for the root.
    #[serde(default)]
    pub subdir: String,
}

/// What `PUT /v1/functions/{name}` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyAction {
    /// The function did not exist and was created.
    Created,
    /// A new revision was made; `changed` says what differed.
    Updated,
    /// The function already matched.
    Unchanged,
}

/// The answer of `PUT /v1/functions/{name}`: a declarative create-or-replace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// What happened.
    pub action: ApplyAction,
    /// Fields that differ from the current revision: `runtime`, `handler`, `resources.memory`,
    /// `resources.cpu`, `resources.timeout`, `env`, `secret_env`, `volumes`, `network`,
    /// `public`, `scaling`, `routes`, `code`.
    pub changed: Vec<String>,
    /// Whether nothing was changed because `dry_run` was asked.
    pub dry_run: bool,
    /// The function as it is now (absent after a dry run that would create it).
    pub function: Option<FunctionInfo>,
}

/// How a function scales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scaling {
    /// Instances kept warm even without traffic (like provisioned concurrency).
    pub min_instances: u32,
    /// Most instances at once.
    pub max_instances: u32,
    /// Invocations one instance serves at the same time.
    pub concurrency: u32,
    /// Idle time after which an instance above the minimum stops; the server's default when unset.
    pub idle_timeout_ms: Option<u64>,
    /// Requests that may wait for capacity; more are refused with 429.
    pub max_queue: u32,
}

impl Default for Scaling {
    fn default() -> Scaling {
        Scaling {
            min_instances: 0,
            max_instances: 10,
            concurrency: 1,
            idle_timeout_ms: None,
            max_queue: 100,
        }
    }
}

/// A runtime's generic pool size (per version in use), set with `strata runtime pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    /// Warm generic instances kept at least.
    pub min: u32,
    /// Most generic instances the pool grows to.
    pub max: u32,
}

/// Changes to a function's scaling; unset fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingUpdate {
    /// New warm minimum.
    pub min_instances: Option<u32>,
    /// New maximum.
    pub max_instances: Option<u32>,
    /// New concurrency per instance.
    pub concurrency: Option<u32>,
    /// New idle timeout.
    pub idle_timeout_ms: Option<u64>,
    /// New queue bound.
    pub max_queue: Option<u32>,
}

/// `strata fn update`: only the fields that are set change; `unset_env` removes keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionUpdate {
    /// New runtime reference.
    #[serde(default)]
    pub runtime: Option<String>,
    /// New handler.
    #[serde(default)]
    pub handler: Option<String>,
    /// Resource fields to change.
    #[serde(default)]
    pub resources: Resources,
    /// Environment variables to set.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables to set.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Environment variables (plain or secret) to remove.
    #[serde(default)]
    pub unset_env: Vec<String>,
    /// Replace the volume list.
    #[serde(default)]
    pub volumes: Option<Vec<VolumeMount>>,
    /// Change network access.
    #[serde(default)]
    pub network: Option<bool>,
    /// Make the HTTP trigger public (no token) or private.
    #[serde(default)]
    pub public: Option<bool>,
    /// Change scaling.
    #[serde(default)]
    pub scaling: ScalingUpdate,
    /// Replace the HTTP trigger's routes (an empty list: every path and method).
    #[serde(default)]
    pub routes: Option<Vec<Route>>,
}

/// The `spec` part of `POST /v1/functions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFunctionSpec {
    /// Function name.
    pub name: String,
    /// Configuration.
    pub config: FunctionConfig,
}

/// A function as the API shows it (secret values masked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// Name.
    pub name: String,
    /// Current revision, from 1.
    pub revision: u32,
    /// Runtime reference as configured.
    pub runtime: String,
    /// The runtime version new instances start on now.
    pub runtime_resolved: String,
    /// Handler.
    pub handler: String,
    /// Effective resources (function overrides over runtime defaults).
    pub resources: Resources,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Secret variable names (values are never shown).
    pub secret_env: Vec<String>,
    /// Volumes.
    pub volumes: Vec<VolumeMount>,
    /// Outbound network access (NAT egress from the instance's own namespace).
    pub network: bool,
    /// Whether the HTTP trigger answers without the bearer token.
    #[serde(default)]
    pub public: bool,
    /// Scaling.
    pub scaling: Scaling,
    /// Content digest of the code.
    pub code_digest: Digest,
    /// Unpacked code size.
    pub code_size_bytes: u64,
    /// When the current revision was made.
    pub updated_at: String,
    /// When the function was created.
    pub created_at: String,
    /// Invocation statistics since the server started.
    pub stats: FunctionStats,
    /// The HTTP trigger's routes (empty: every path and method).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Where the current revision's code was fetched from, when it came from git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitOrigin>,
}

/// Invocation statistics of a function since the server started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionStats {
    /// Invocations.
    pub invocations: u64,
    /// Invocations that failed (any kind).
    pub errors: u64,
    /// Invocations that started an instance.
    pub cold_starts: u64,
    /// Instances running now.
    pub instances: u64,
    /// Median duration of recent invocations, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile of recent invocations, milliseconds.
    pub p99_ms: f64,
    /// Cold starts served by a generic pool instance.
    pub pool_hits: u64,
    /// Cold starts that had to start an instance from nothing.
    pub pool_misses: u64,
    /// Mean time waiting for capacity, milliseconds.
    pub mean_queue_ms: f64,
    /// Mean time specializing a pool instance (cold starts that hit the pool), milliseconds.
    pub mean_specialize_ms: f64,
    /// Mean time starting an instance until the handler was loaded (pool misses), milliseconds.
    pub mean_init_ms: f64,
    /// Mean time running the handler (event sent → result), milliseconds.
    pub mean_run_ms: f64,
}

/// A named volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Name.
    pub name: String,
    /// Functions whose current revision mounts it.
    pub used_by: Vec<String>,
    /// Creation time.
    pub created_at: String,
}

/// One log line of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Function name.
    pub function: String,
    /// Invocation id, when the line was printed during one.
    pub invocation: Option<String>,
    /// `stdout`, `stderr` or `platform`.
    pub stream: String,
    /// The line.
    pub line: String,
}

/// The error body of a failed invocation (the Lambda shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeError {
    /// What went wrong.
    #[serde(rename = "errorMessage")]
    pub error_message: String,
    /// The error's type, e.g. `ZeroDivisionError`, `Strata.Timeout`.
    #[serde(rename = "errorType")]
    pub error_type: String,
    /// Stack frames, when the runtime reported them.
    #[serde(rename = "stackTrace", default)]
    pub stack_trace: Vec<String>,
}

/// `POST /v1/packages`: a package recipe. The recipe parts are joined in this order into one
/// Dockerfile snippet: `apt`, `pip`, `npm`, `run`, then `snippet`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePackageSpec {
    /// The package's name.
    pub name: String,
    /// A version label; when unset, the newest version is reused if its recipe is the same,
    /// else the next number is taken.
    #[serde(default)]
    pub version: Option<String>,
    /// The image (or runtime version) the package is built against.
    pub base: String,
    /// A Dockerfile snippet of RUN, ENV, COPY and WORKDIR instructions.
    #[serde(default)]
    pub snippet: Option<String>,
    /// Shell commands, one RUN each.
    #[serde(default)]
    pub run: Vec<String>,
    /// Debian packages to install with apt.
    #[serde(default)]
    pub apt: Vec<String>,
    /// Python requirement specifiers to install with pip.
    #[serde(default)]
    pub pip: Vec<String>,
    /// npm package specifiers to install globally.
    #[serde(default)]
    pub npm: Vec<String>,
    /// Packages (`name` or `name@version`) this one is built on and needs at run time.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Rebuild even when the same recipe was built on the same base.
    #[serde(default)]
    pub no_cache: bool,
}

/// One build of a package against one base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageBuildInfo {
    /// The base it was built against, as named when built.
    pub base: String,
    /// The layer (none when the recipe changed no file).
    pub layer: Option<LayerInfo>,
    /// Build time, RFC 3339 UTC.
    pub created_at: String,
}

/// A package version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInfo {
    /// Name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// The base named at creation.
    pub base: String,
    /// The recipe as one Dockerfile snippet.
    pub recipe: String,
    /// Its digest (with the uploaded context's, if any).
    pub recipe_digest: Digest,
    /// Required packages, resolved to `name@version`.
    pub requires: Vec<String>,
    /// Environment the package adds to a runtime (its ENV instructions).
    pub env: Vec<String>,
    /// Builds, one per base.
    pub builds: Vec<PackageBuildInfo>,
    /// Runtime versions that use it (`name@version`).
    pub used_by: Vec<String>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
}

/// `POST /v1/runtimes/{name}/update`: the next version of a package runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRuntimeRequest {
    /// Packages to add (`name` or `name@version`), on top of the current ones.
    #[serde(default)]
    pub add: Vec<String>,
    /// Package names to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// `name@version` of packages already in the runtime to move to another version.
    #[serde(default)]
    pub set: Vec<String>,
}

/// `POST /v1/runtimes/{name}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to go back to; default: the one the newest version was made from.
    #[serde(default)]
    pub to: Option<u32>,
}

/// A package whose version differs between two runtime versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChange {
    /// Package name.
    pub name: String,
    /// Version in the first runtime.
    pub from: String,
    /// Version in the second runtime.
    pub to: String,
}

/// `GET /v1/runtimes/diff?from=A&to=B`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeDiff {
    /// First runtime version (`name@version`).
    pub from: String,
    /// Second runtime version.
    pub to: String,
    /// Packages only in the second.
    pub packages_added: Vec<String>,
    /// Packages only in the first.
    pub packages_removed: Vec<String>,
    /// Packages in both at different versions.
    pub packages_changed: Vec<PackageChange>,
    /// Paths only in the second's file tree.
    pub files_added: Vec<String>,
    /// Paths only in the first's file tree.
    pub files_removed: Vec<String>,
    /// Paths in both with different content, type, mode or owner.
    pub files_changed: Vec<String>,
}

/// `GET /v1/store/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Every image and runtime version counted as a full image: the sum of their layers' sizes.
    pub logical_bytes: u64,
    /// Bytes of file content on disk (each stored inode counted once).
    pub physical_bytes: u64,
    /// Disk blocks the store occupies, in bytes.
    pub allocated_bytes: u64,
    /// logical / physical.
    pub ratio: f64,
    /// Bytes of distinct file content across every layer (files with the same content counted
    /// once): the floor any store could reach without compression.
    pub distinct_content_bytes: u64,
    /// Stored layers.
    pub layers: u64,
    /// Files in the shared file pool.
    pub pool_files: u64,
    /// Bytes not stored twice thanks to the file pool.
    pub dedup_saved_bytes: u64,
    /// Images.
    pub images: u64,
    /// Runtime versions.
    pub runtimes: u64,
    /// Package versions.
    pub packages: u64,
}

/// `POST /v1/store/gc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Layers removed.
    pub layers_removed: u64,
    /// Function code trees removed.
    pub code_removed: u64,
    /// Pool files removed.
    pub files_removed: u64,
    /// Bytes freed (pool files and layers).
    pub bytes_freed: u64,
}
