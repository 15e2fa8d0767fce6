//! `strata.toml`: a project file describing functions and, optionally, the runtimes and
//! packages they need, so that `strata up` can make the server match it and `strata down` can
//! remove it.
//!
//! This crate owns the file format (see `docs/manifest.md`): parsing with serde and
//! `deny_unknown_fields`, then checking every value the way the server would, so that mistakes
//! are reported before anything is sent, all at once, each with the file, line, column, key
//! path and what was expected:
//!
//! ```text
//! strata.toml:9:10: functions.hello.resources.memory: invalid memory "12x": expected a size such as 128Mi, 1Gi, 512M or a byte count
//! ```
//!
//! It turns a function's table into the API's [`FunctionConfig`] ([`Manifest::function_config`])
//! and checks that local paths exist ([`Manifest::check_paths`]). It does not talk to the server
//! or decide what to change: the CLI does that with the server's declarative
//! `PUT /v1/functions/{name}`.

mod error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_types::api::{FunctionConfig, GitSource, Route, Scaling, VolumeMount, ROUTE_METHODS};
use strata_types::{parse_cpu, parse_duration, parse_memory, validate_name, Resources, RuntimeRef};

use error::Sink;
pub use error::{KeyPath, ManifestError, ManifestErrors, Seg};

/// The manifest's usual file name.
pub const FILE_NAME: &str = "strata.toml";

/// A parsed and checked manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    file: String,
    text: String,
    /// `[project] name`, informational.
    pub project: Option<String>,
    /// Volumes `strata up` creates when missing (`strata down` keeps them unless asked).
    pub volumes: Vec<String>,
    /// Functions by name.
    pub functions: BTreeMap<String, Function>,
    /// Runtimes by name.
    pub runtimes: BTreeMap<String, Runtime>,
    /// Packages by name.
    pub packages: BTreeMap<String, Package>,
}

/// A function as the manifest describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// Where its code comes from.
    pub code: CodeSpec,
    /// Its configuration; `env` and `secret_env` values may still be `${VAR}` references
    /// ([`Manifest::function_config`] resolves them).
    pub config: FunctionConfig,
}

/// Where a function's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSpec {
    /// A directory, a `.zip`, `.tar` or `.tar.gz`, relative to the manifest's directory.
    Dir(String),
    /// A git repository the server fetches.
    Git(GitSource),
}

/// A runtime the manifest builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// How it is built.
    pub source: RuntimeSource,
    /// Default resources of functions on it.
    pub resources: Resources,
}

/// How a runtime is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeSource {
    /// From a Dockerfile (paths relative to the manifest's directory).
    Dockerfile {
        /// The Dockerfile.
        dockerfile: String,
        /// The build context directory, if any.
        context: Option<String>,
        /// `--build-arg` values.
        build_args: BTreeMap<String, String>,
    },
    /// From packages stacked on a base image.
    Packages {
        /// The base image (or runtime version).
        base: String,
        /// Packages, `name` or `name@version`, in order.
        packages: Vec<String>,
        /// Build as one ordered layer chain instead of composing independent builds.
        layered: bool,
    },
}

/// A package recipe the manifest describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    /// A fixed version label; the server picks one when unset.
    pub version: Option<String>,
    /// The image (or runtime version) it is built against.
    pub base: String,
    /// Debian packages.
    pub apt: Vec<String>,
    /// Python requirements.
    pub pip: Vec<String>,
    /// npm packages.
    pub npm: Vec<String>,
    /// Shell commands, one RUN each.
    pub run: Vec<String>,
    /// A Dockerfile snippet.
    pub snippet: Option<String>,
    /// Packages it is built on.
    pub requires: Vec<String>,
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    project: Option<RawProject>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    functions: BTreeMap<String, RawFunction>,
    #[serde(default)]
    runtimes: BTreeMap<String, RawRuntime>,
    #[serde(default)]
    packages: BTreeMap<String, RawPackage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction {
    runtime: String,
    handler: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    git: Option<RawGit>,
    #[serde(default)]
    resources: RawResources,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secret_env: BTreeMap<String, String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    network: bool,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    scaling: RawScaling,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGit {
    url: String,
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    #[serde(default)]
    subdir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default)]
    memory: Option<Quantity>,
    #[serde(default)]
    cpu: Option<Quantity>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScaling {
    #[serde(default)]
    min_instances: Option<u32>,
    #[serde(default)]
    max_instances: Option<u32>,
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    max_queue: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: String,
    #[serde(default)]
    methods: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    #[serde(default)]
    dockerfile: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    layered: bool,
    #[serde(default)]
    resources: RawResources,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    #[serde(default)]
    version: Option<String>,
    base: String,
    #[serde(default)]
    apt: Vec<String>,
    #[serde(default)]
    pip: Vec<String>,
    #[serde(default)]
    npm: Vec<String>,
    #[serde(default)]
    run: Vec<String>,
    #[serde(default)]
    snippet: Option<String>,
    #[serde(default)]
    requires: Vec<String>,
}

/// A quantity written as a string (`"128Mi"`, `"500m"`) or a number (`0.5`, `134217728`).
struct Quantity(String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Quantity, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a quantity such as \"128Mi\" or \"0.5\", or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Manifest {
    /// Parses and checks a manifest's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestErrors> {
        let mut sink = Sink::new(file, text);
        let raw: Raw = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                sink.toml(&e);
                return Err(ManifestErrors(sink.errors));
            }
        };
        let m = check(&mut sink, file, text, raw);
        sink.finish()?;
        Ok(m)
    }

    /// Reads, parses and checks the manifest at `path`, including that the local paths it
    /// names exist.
    pub fn load(path: &Path) -> Result<Manifest, ManifestErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (create one with `strata fn init NAME --template python-hello`, or pass -f FILE)"
            } else {
                ""
            };
            ManifestErrors(vec![ManifestError {
                file: file.clone(),
                line: None,
                column: None,
                key: String::new(),
                message: format!("cannot read the manifest: {e}{hint}"),
            }])
        })?;
        let m = Manifest::parse(&file, &text)?;
        m.check_paths(&base_dir(path))?;
        Ok(m)
    }

    /// The file name errors use.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Checks that every local path (code, Dockerfile, build context) exists under `base`,
    /// the manifest's directory.
    pub fn check_paths(&self, base: &Path) -> Result<(), ManifestErrors> {
        let mut sink = Sink::new(&self.file, &self.text);
        for (name, f) in &self.functions {
            if let CodeSpec::Dir(d) = &f.code {
                let p = base.join(d);
                if !(p.is_dir() || p.is_file()) {
                    sink.at(
                        &KeyPath::of(&["functions", name, "code"]),
                        format!(
                            "{} does not exist: expected a directory (or .zip, .tar, .tar.gz) relative to the manifest",
                            p.display()
                        ),
                    );
                }
            }
        }
        for (name, r) in &self.runtimes {
            if let RuntimeSource::Dockerfile {
                dockerfile,
                context,
                ..
            } = &r.source
            {
                if !base.join(dockerfile).is_file() {
                    sink.at(
                        &KeyPath::of(&["runtimes", name, "dockerfile"]),
                        format!(
                            "{} is not a file: expected a Dockerfile path relative to the manifest",
                            base.join(dockerfile).display()
                        ),
                    );
                }
                if let Some(c) = context {
                    if !base.join(c).is_dir() {
                        sink.at(
                            &KeyPath::of(&["runtimes", name, "context"]),
                            format!(
                                "{} is not a directory: expected a build context directory relative to the manifest",
                                base.join(c).display()
                            ),
                        );
                    }
                }
            }
        }
        sink.finish()
    }

    /// Records an error about a key (for checks made outside this crate, e.g. against the
    /// server), located in this manifest's text.
    pub fn error_at(&self, path: &KeyPath, message: impl Into<String>) -> ManifestErrors {
        let mut sink = Sink::new(&self.file, &self.text);
        sink.at(path, message);
        ManifestErrors(sink.errors)
    }

    /// The configuration of function `name` with `${VAR}` values of `env` and `secret_env`
    /// taken from `lookup` (the environment of `strata up`); an unset variable is an error at
    /// its key.
    pub fn function_config(
        &self,
        name: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<FunctionConfig, ManifestErrors> {
        let Some(f) = self.functions.get(name) else {
            return Err(self.error_at(
                &KeyPath::of(&["functions"]),
                format!("no function {name:?}"),
            ));
        };
        let mut sink = Sink::new(&self.file, &self.text);
        let mut config = f.config.clone();
        for (table, map) in [
            ("env", &mut config.env),
            ("secret_env", &mut config.secret_env),
        ] {
            for (k, v) in map.iter_mut() {
                if let Some(var) = var_ref(v) {
                    match lookup(var) {
                        Some(value) => *v = value,
                        None => sink.at(
                            &KeyPath::of(&["functions", name, table, k]),
                            format!("${{{var}}} is not set in the environment of this command: export {var}=... or write the value"),
                        ),
                    }
                }
            }
        }
        sink.finish()?;
        Ok(config)
    }
}

/// The directory a manifest's relative paths start from.
pub fn base_dir(manifest_path: &Path) -> PathBuf {
    match manifest_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `${NAME}` as a whole value: a reference to an environment variable.
fn var_ref(v: &str) -> Option<&str> {
    let name = v.strip_prefix("${")?.strip_suffix('}')?;
    let ok = !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(name)
}

/// Environment variable names the platform sets itself.
fn reserved_env(k: &str) -> bool {
    k.starts_with("STRATA_")
        || k.starts_with("AWS_LAMBDA_")
        || k == "_HANDLER"
        || k == "LAMBDA_TASK_ROOT"
}

fn check(sink: &mut Sink<'_>, file: &str, text: &str, raw: Raw) -> Manifest {
    let root = KeyPath::default();
    let project = raw.project.and_then(|p| p.name);
    if let Some(n) = &project {
        if let Err(e) = validate_name(n) {
            sink.at(&KeyPath::of(&["project", "name"]), e.to_string());
        }
    }
    for (i, v) in raw.volumes.iter().enumerate() {
        if let Err(e) = validate_name(v) {
            sink.at(&root.key("volumes").index(i), e.to_string());
        }
    }
    if raw.functions.is_empty() && raw.runtimes.is_empty() && raw.packages.is_empty() {
        sink.push(
            None,
            String::new(),
            "the manifest describes nothing: add a [functions.NAME] table with runtime, handler and code".into(),
        );
    }
    let mut functions = BTreeMap::new();
    for (name, rf) in raw.functions {
        let path = KeyPath::of(&["functions", &name]);
        if let Err(e) = validate_name(&name) {
            sink.at(&path, e.to_string());
        }
        let f = check_function(sink, &path, rf, &raw.runtimes);
        functions.insert(name, f);
    }
    let mut runtimes = BTreeMap::new();
    for (name, rr) in raw.runtimes {
        let path = KeyPath::of(&["runtimes", &name]);
        if let Err(e) = validate_name(&name) {
            sink.at(&path, e.to_string());
        }
        if let Some(r) = check_runtime(sink, &path, rr) {
            runtimes.insert(name, r);
        }
    }
    let mut packages = BTreeMap::new();
    for (name, rp) in raw.packages {
        let path = KeyPath::of(&["packages", &name]);
        if let Err(e) = validate_name(&name) {
            sink.at(&path, e.to_string());
        }
        if rp.apt.is_empty()
            && rp.pip.is_empty()
            && rp.npm.is_empty()
            && rp.run.is_empty()
            && rp.snippet.is_none()
        {
            sink.at(
                &path,
                "a package needs a recipe: at least one of apt, pip, npm, run or snippet",
            );
        }
        packages.insert(
            name,
            Package {
                version: rp.version,
                base: rp.base,
                apt: rp.apt,
                pip: rp.pip,
                npm: rp.npm,
                run: rp.run,
                snippet: rp.snippet,
                requires: rp.requires,
            },
        );
    }
    Manifest {
        file: file.to_string(),
        text: text.to_string(),
        project,
        volumes: raw.volumes,
        functions,
        runtimes,
        packages,
    }
}

fn resources(sink: &mut Sink<'_>, path: &KeyPath, r: RawResources) -> Resources {
    let path = path.key("resources");
    let mut out = Resources::default();
    if let Some(Quantity(m)) = r.memory {
        match parse_memory(&m) {
            Ok(b) => out.memory_bytes = Some(b),
            Err(e) => sink.at(&path.key("memory"), e.to_string()),
        }
    }
    if let Some(Quantity(c)) = r.cpu {
        match parse_cpu(&c) {
            Ok(m) => out.cpu_millis = Some(m),
            Err(e) => sink.at(&path.key("cpu"), e.to_string()),
        }
    }
    if let Some(t) = r.timeout {
        match parse_duration(&t) {
            Ok(ms) => out.timeout_ms = Some(ms),
            Err(e) => sink.at(&path.key("timeout"), e.to_string()),
        }
    }
    out
}

fn check_function(
    sink: &mut Sink<'_>,
    path: &KeyPath,
    f: RawFunction,
    manifest_runtimes: &BTreeMap<String, RawRuntime>,
) -> Function {
    if let Err(e) = f.runtime.parse::<RuntimeRef>() {
        sink.at(&path.key("runtime"), e.to_string());
    } else if f.runtime.contains('@')
        && manifest_runtimes.contains_key(f.runtime.split('@').next().unwrap_or(""))
    {
        sink.at(
            &path.key("runtime"),
            "a runtime built by this manifest is followed by name (its newest version): write it without @VERSION",
        );
    }
    if f.handler.trim().is_empty() || f.handler.len() > 256 || f.handler.contains('\0') {
        sink.at(
            &path.key("handler"),
            "expected 1-256 characters naming the handler, e.g. app.handler",
        );
    }
    let code = match (f.code, f.git) {
        (Some(c), None) => {
            if c.is_empty() {
                sink.at(
                    &path.key("code"),
                    "expected a directory such as \"src\" or \".\"",
                );
            }
            CodeSpec::Dir(c)
        }
        (None, Some(g)) => {
            if g.url.trim().is_empty() {
                sink.at(&path.key("git").key("url"), "expected a repository URL");
            }
            CodeSpec::Git(GitSource {
                url: g.url,
                reference: g.reference,
                subdir: g.subdir,
            })
        }
        (Some(_), Some(_)) => {
            sink.at(
                &path.key("git"),
                "code and git are alternatives: keep one of them",
            );
            CodeSpec::Dir(String::new())
        }
        (None, None) => {
            sink.at(
                path,
                "missing code: set code = \"DIR\" (relative to the manifest) or git = { url = \"...\", ref = \"main\", subdir = \"...\" }",
            );
            CodeSpec::Dir(String::new())
        }
    };
    let res = resources(sink, path, f.resources);
    for (table, map) in [("env", &f.env), ("secret_env", &f.secret_env)] {
        for k in map.keys() {
            let ok = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                sink.at(
                    &path.key(table).key(k),
                    "invalid environment variable name: use letters, digits and _, not starting with a digit",
                );
            } else if reserved_env(k) {
                sink.at(
                    &path.key(table).key(k),
                    "this variable is reserved by the platform (STRATA_*, AWS_LAMBDA_*, _HANDLER, LAMBDA_TASK_ROOT)",
                );
            }
        }
    }
    for k in f.env.keys().filter(|k| f.secret_env.contains_key(*k)) {
        sink.at(
            &path.key("secret_env").key(k),
            "also set in env: a variable is either plain or secret",
        );
    }
    let mut volumes = Vec::new();
    for (i, v) in f.volumes.iter().enumerate() {
        match v.parse::<VolumeMount>() {
            Ok(m) => {
                if let Err(e) = validate_name(&m.volume) {
                    sink.at(&path.key("volumes").index(i), e.to_string());
                }
                volumes.push(m);
            }
            Err(e) => sink.at(&path.key("volumes").index(i), e),
        }
    }
    let d = Scaling::default();
    let sp = path.key("scaling");
    let scaling = Scaling {
        min_instances: f.scaling.min_instances.unwrap_or(d.min_instances),
        max_instances: f.scaling.max_instances.unwrap_or(d.max_instances),
        concurrency: f.scaling.concurrency.unwrap_or(d.concurrency),
        idle_timeout_ms: match f.scaling.idle_timeout {
            Some(t) => match parse_duration(&t) {
                Ok(ms) => Some(ms),
                Err(e) => {
                    sink.at(&sp.key("idle_timeout"), e.to_string());
                    None
                }
            },
            None => None,
        },
        max_queue: f.scaling.max_queue.unwrap_or(d.max_queue),
    };
    if !(1..=1000).contains(&scaling.max_instances) {
        sink.at(&sp.key("max_instances"), "expected 1-1000");
    } else if scaling.min_instances > scaling.max_instances {
        sink.at(
            &sp.key("min_instances"),
            format!("expected at most max_instances ({})", scaling.max_instances),
        );
    }
    if !(1..=64).contains(&scaling.concurrency) {
        sink.at(&sp.key("concurrency"), "expected 1-64");
    }
    if scaling.max_queue > 10_000 {
        sink.at(&sp.key("max_queue"), "expected at most 10000");
    }
    let mut routes = Vec::new();
    if f.routes.len() > strata_types::api::MAX_ROUTES {
        sink.at(
            &path.key("routes"),
            format!("at most {} routes", strata_types::api::MAX_ROUTES),
        );
    }
    for (i, r) in f.routes.into_iter().enumerate() {
        let rp = path.key("routes").index(i);
        let route = Route {
            path: r.path,
            methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        };
        if let Err(e) = route.validate() {
            let key = if route
                .methods
                .iter()
                .any(|m| !ROUTE_METHODS.contains(&m.as_str()))
            {
                rp.key("methods")
            } else {
                rp.key("path")
            };
            sink.at(&key, e);
        }
        routes.push(route);
    }
    Function {
        code,
        config: FunctionConfig {
            runtime: f.runtime,
            handler: f.handler,
            resources: res,
            env: f.env,
            secret_env: f.secret_env,
            volumes,
            network: f.network,
            public: f.public,
            scaling,
            routes,
        },
    }
}

fn check_runtime(sink: &mut Sink<'_>, path: &KeyPath, r: RawRuntime) -> Option<Runtime> {
    let res = resources(sink, path, r.resources);
    let source = match (r.dockerfile, r.base) {
        (Some(dockerfile), None) => {
            if !r.packages.is_empty() || r.layered {
                sink.at(
                    &path.key("packages"),
                    "packages and layered go with base, not with dockerfile",
                );
            }
            RuntimeSource::Dockerfile {
                dockerfile,
                context: r.context,
                build_args: r.build_args,
            }
        }
        (None, Some(base)) => {
            if r.context.is_some() || !r.build_args.is_empty() {
                sink.at(
                    &path.key("context"),
                    "context and build_args go with dockerfile, not with base",
                );
            }
            if r.packages.is_empty() {
                sink.at(
                    &path.key("packages"),
                    "a runtime made from a base needs packages = [\"NAME\", ...]",
                );
            }
            RuntimeSource::Packages {
                base,
                packages: r.packages,
                layered: r.layered,
            }
        }
        (Some(_), Some(_)) => {
            sink.at(
                &path.key("base"),
                "dockerfile and base are alternatives: keep one of them",
            );
            return None;
        }
        (None, None) => {
            sink.at(
                path,
                "missing dockerfile: set dockerfile = \"PATH\" (relative to the manifest), or base and packages",
            );
            return None;
        }
    };
    Some(Runtime {
        source,
        resources: res,
    })
}

#[cfg(test)]
mod tests;
