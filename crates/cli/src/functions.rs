//! `strata fn`, `strata invoke`, `strata logs`, `strata volume`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use strata_types::api::{
    CreateFunctionSpec, FunctionConfig, FunctionInfo, FunctionUpdate, LogEntry, VolumeInfo,
    VolumeMount,
};
use strata_types::{format_bytes, parse_duration, validate_name, Resources};

use crate::client::Api;
use crate::Format;

#[derive(Subcommand, Debug)]
pub enum FnCmd {
    /// Write a ready-to-deploy project (code plus strata.toml) from a template.
    Init(crate::init::InitArgs),
    /// List the templates `fn init` can write.
    Templates,
    /// Deploy a new function: code plus configuration (no image is built).
    Create(FnCreateArgs),
    /// Change a function's code and/or configuration (a new revision).
    Update(FnUpdateArgs),
    /// Create a function, or update it if it exists: code from a directory, an archive or a
    /// git repository.
    Deploy(FnDeployArgs),
    /// List functions.
    Ls,
    /// Show a function: revision, runtime, resources, env (secrets masked), stats.
    Describe {
        /// Function name.
        name: String,
    },
    /// Remove a function.
    Rm {
        /// Function name.
        name: String,
    },
}

#[derive(Args, Debug, Default)]
pub struct ConfigFlags {
    /// Memory limit, e.g. 256Mi (default: the runtime's).
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit, e.g. 0.5 (default: the runtime's).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Invocation timeout, e.g. 30s (default: the runtime's).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Environment variable, KEY=VALUE.
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Secret environment variable, KEY=VALUE (never shown back).
    #[arg(long = "secret-env")]
    pub secret_env: Vec<String>,
    /// Volume mount, VOLUME:/path.
    #[arg(long = "volume")]
    pub volumes: Vec<String>,
    /// Instances kept warm without traffic.
    #[arg(long)]
    pub min_instances: Option<u32>,
    /// Most instances at once.
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// Invocations one instance serves at the same time.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Stop instances above the minimum after this idle time, e.g. 5m.
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// Requests that may wait for capacity before 429.
    #[arg(long)]
    pub max_queue: Option<u32>,
}

fn scaling_update(c: &ConfigFlags) -> anyhow::Result<strata_types::api::ScalingUpdate> {
    Ok(strata_types::api::ScalingUpdate {
        min_instances: c.min_instances,
        max_instances: c.max_instances,
        concurrency: c.concurrency,
        idle_timeout_ms: c.idle_timeout.as_deref().map(parse_duration).transpose()?,
        max_queue: c.max_queue,
    })
}

/// Code fetched by the server from a git repository, instead of `--code`.
#[derive(Args, Debug, Default)]
pub struct GitFlags {
    /// Repository the server fetches the code from (https://..., or file:// and absolute
    /// paths on the server when it allows them).
    #[arg(long, conflicts_with = "code")]
    pub git: Option<String>,
    /// Branch, tag or commit of --git (default: the repository's HEAD).
    #[arg(long = "ref", requires = "git")]
    pub reference: Option<String>,
    /// Directory inside the repository holding the code (default: the root).
    #[arg(long, requires = "git")]
    pub subdir: Option<String>,
}

impl GitFlags {
    fn source(&self) -> Option<strata_types::api::GitSource> {
        self.git.as_ref().map(|url| strata_types::api::GitSource {
            url: url.clone(),
            reference: self.reference.clone(),
            subdir: self.subdir.clone(),
        })
    }
}

/// Adds the code of a deploy to a form: a `code` upload or a `git` source.
fn with_code(
    form: reqwest::blocking::multipart::Form,
    code: Option<&Path>,
    git: &GitFlags,
) -> anyhow::Result<reqwest::blocking::multipart::Form> {
    Ok(match (code, git.source()) {
        (Some(c), _) => form.part("code", code_part(c)?),
        (None, Some(g)) => {
            eprintln!(
                "==> the server fetches {}{}{}",
                g.url,
                g.reference
                    .as_deref()
                    .map(|r| format!(" at {r}"))
                    .unwrap_or_default(),
                g.subdir
                    .as_deref()
                    .map(|d| format!(", directory {d}"))
                    .unwrap_or_default()
            );
            form.text("git", serde_json::to_string(&g)?)
        }
        (None, None) => form,
    })
}

#[derive(Args, Debug)]
pub struct FnCreateArgs {
    /// Function name.
    pub name: String,
    /// Runtime, NAME (follows the newest version) or NAME@VERSION.
    #[arg(long)]
    pub runtime: String,
    /// Code: a directory, a .zip, a .tar or a .tar.gz.
    #[arg(long, required_unless_present = "git")]
    pub code: Option<PathBuf>,
    #[command(flatten)]
    pub git: GitFlags,
    /// Handler, e.g. app.handler.
    #[arg(long)]
    pub handler: String,
    /// Give instances outbound network access through NAT, never to the host, link-local
    /// metadata, private ranges or other instances (default: loopback only).
    #[arg(long)]
    pub network: bool,
    /// Let the HTTP trigger (/fn/NAME/...) answer without the bearer token (default: private).
    #[arg(long)]
    pub public: bool,
    #[command(flatten)]
    pub config: ConfigFlags,
}

#[derive(Args, Debug)]
pub struct FnUpdateArgs {
    /// Function name.
    pub name: String,
    /// New runtime.
    #[arg(long)]
    pub runtime: Option<String>,
    /// New code.
    #[arg(long)]
    pub code: Option<PathBuf>,
    #[command(flatten)]
    pub git: GitFlags,
    /// New handler.
    #[arg(long)]
    pub handler: Option<String>,
    /// Turn outbound network access on or off.
    #[arg(long)]
    pub network: Option<bool>,
    /// Make the HTTP trigger public (true: no token needed) or private (false).
    #[arg(long)]
    pub public: Option<bool>,
    /// Remove an environment variable (plain or secret).
    #[arg(long = "unset-env")]
    pub unset_env: Vec<String>,
    /// Remove every volume mount.
    #[arg(long)]
    pub clear_volumes: bool,
    #[command(flatten)]
    pub config: ConfigFlags,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a named volume.
    Create {
        /// Volume name.
        name: String,
    },
    /// List volumes.
    Ls,
    /// Remove a volume and its data (refused while a function mounts it).
    Rm {
        /// Volume name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// Function name.
    pub name: String,
    /// The event JSON, or `-` to read it from stdin (default: {}).
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Function name.
    pub name: String,
    /// Keep following new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines newer than this, e.g. 10m, 1h.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many past lines.
    #[arg(long, default_value_t = 1000)]
    pub tail: usize,
}

fn kv(list: &[String], flag: &str) -> anyhow::Result<BTreeMap<String, String>> {
    list.iter()
        .map(|e| {
            let (k, v) = e
                .split_once('=')
                .with_context(|| format!("invalid --{flag} {e:?}: expected KEY=VALUE"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn resources(c: &ConfigFlags) -> anyhow::Result<Resources> {
    Ok(Resources::parse(
        c.memory.as_deref(),
        c.cpu.as_deref(),
        c.timeout.as_deref(),
    )?)
}

fn volumes(c: &ConfigFlags) -> anyhow::Result<Vec<VolumeMount>> {
    c.volumes
        .iter()
        .map(|v| {
            v.parse::<VolumeMount>()
                .map_err(|e| anyhow::anyhow!("--volume: {e}"))
        })
        .collect()
}

/// `strata fn deploy`: the flags of `fn update`, with runtime and handler needed only when the
/// function does not exist yet.
#[derive(Args, Debug)]
pub struct FnDeployArgs {
    #[command(flatten)]
    pub update: FnUpdateArgs,
}

/// An upload part of `len` bytes read from `file`, with a progress bar on a terminal.
pub(crate) fn upload_part(
    file: std::fs::File,
    len: u64,
    name: &str,
) -> anyhow::Result<reqwest::blocking::multipart::Part> {
    use std::io::IsTerminal;
    let part = if std::io::stderr().is_terminal() && len > 0 {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "uploading {msg} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_string());
        let reader = ClearOnEof {
            inner: bar.wrap_read(file),
            bar,
        };
        reqwest::blocking::multipart::Part::reader_with_length(reader, len)
    } else {
        reqwest::blocking::multipart::Part::reader_with_length(file, len)
    };
    Ok(part.file_name(name.to_string()))
}

/// Clears an upload's progress bar once everything was read.
struct ClearOnEof<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for ClearOnEof<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.bar.finish_and_clear();
        }
        Ok(n)
    }
}

/// Packs `--code`: a directory becomes a tar; an archive is sent as it is.
pub(crate) fn code_part(path: &Path) -> anyhow::Result<reqwest::blocking::multipart::Part> {
    let (file, name) = if path.is_dir() {
        let file = tempfile::tempfile().context("creating a temporary file for the code")?;
        let n = crate::context::pack(path, &file)?;
        eprintln!("==> packing {}: {n} entries", path.display());
        (file, "code.tar".to_string())
    } else if path.is_file() {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        (
            file,
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "code".into()),
        )
    } else {
        bail!(
            "--code {}: no such file or directory (give a directory, .zip, .tar or .tar.gz)",
            path.display()
        );
    };
    let mut file = file;
    file.rewind()?;
    let len = file.metadata()?.len();
    upload_part(file, len, &name)
}

fn print_fn(fmt: Format, info: &FunctionInfo, verb: &str) -> anyhow::Result<ExitCode> {
    crate::commands::print(fmt, info, |f| format!("{verb}{}", describe(f)))
}

pub fn describe(f: &FunctionInfo) -> String {
    let r = &f.resources;
    let mut s = format!(
        "name:      {}\nrevision:  {}\nruntime:   {} (now {})\nhandler:   {}\ncode:      {} ({})\nmemory:    {}\ncpu:       {}\ntimeout:   {}\nnetwork:   {}\ntrigger:   {}\nupdated:   {}\ncreated:   {}\n",
        f.name,
        f.revision,
        f.runtime,
        f.runtime_resolved,
        f.handler,
        f.code_digest.short(),
        format_bytes(f.code_size_bytes),
        r.memory_bytes.map(format_bytes).unwrap_or_else(|| "-".into()),
        r.cpu_millis.map(|m| format!("{}", m as f64 / 1000.0)).unwrap_or_else(|| "-".into()),
        r.timeout_ms.map(|t| format!("{}s", t as f64 / 1000.0)).unwrap_or_else(|| "-".into()),
        if f.network { "egress (NAT)" } else { "loopback only" },
        if f.public { "public (no token)" } else { "private (bearer token)" },
        f.updated_at,
        f.created_at,
    );
    for (k, v) in &f.env {
        s.push_str(&format!("env:       {k}={v}\n"));
    }
    for k in &f.secret_env {
        s.push_str(&format!("secret:    {k}=********\n"));
    }
    for v in &f.volumes {
        s.push_str(&format!("volume:    {}:{}\n", v.volume, v.path));
    }
    for r in &f.routes {
        let methods = if r.methods.is_empty() {
            "ANY".to_string()
        } else {
            r.methods.join(",")
        };
        s.push_str(&format!(
            "route:     {methods} /fn/{}{}\n",
            f.name,
            r.path.trim_end_matches('/')
        ));
    }
    if let Some(g) = &f.git {
        s.push_str(&format!(
            "git:       {} {} ({}){}\n",
            g.url,
            g.reference,
            &g.commit[..g.commit.len().min(12)],
            if g.subdir.is_empty() {
                String::new()
            } else {
                format!(" {}", g.subdir)
            }
        ));
    }
    let sc = &f.scaling;
    s.push_str(&format!(
        "scaling:   min {} max {} concurrency {} queue {} idle {}\n",
        sc.min_instances,
        sc.max_instances,
        sc.concurrency,
        sc.max_queue,
        sc.idle_timeout_ms
            .map(|t| format!("{}s", t / 1000))
            .unwrap_or_else(|| "server default".into())
    ));
    let st = &f.stats;
    s.push_str(&format!(
        "stats:     {} invocations, {} errors, {} cold starts ({} pool hits, {} pool misses), {} instances, p50 {:.1} ms, p99 {:.1} ms\n",
        st.invocations, st.errors, st.cold_starts, st.pool_hits, st.pool_misses, st.instances, st.p50_ms, st.p99_ms
    ));
    s.push_str(&format!(
        "timing:    mean queue {:.2} ms, specialize {:.2} ms, init {:.2} ms, run {:.2} ms\n",
        st.mean_queue_ms, st.mean_specialize_ms, st.mean_init_ms, st.mean_run_ms
    ));
    s
}

pub fn run_fn(api: &Api, fmt: Format, cmd: FnCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        FnCmd::Init(a) => crate::init::init(fmt, a),
        FnCmd::Templates => crate::init::templates(fmt),
        FnCmd::Create(a) => create(api, fmt, a),
        FnCmd::Update(a) => update(api, fmt, a),
        FnCmd::Deploy(a) => deploy(api, fmt, a.update),
        FnCmd::Ls => {
            let list: Vec<FunctionInfo> = api.get("/v1/functions")?;
            crate::commands::print(fmt, &list, |l| {
                let mut rows = vec![vec![
                    "NAME".to_string(),
                    "REVISION".into(),
                    "RUNTIME".into(),
                    "HANDLER".into(),
                    "MEMORY".into(),
                    "INVOCATIONS".into(),
                    "UPDATED".into(),
                ]];
                for f in l {
                    rows.push(vec![
                        f.name.clone(),
                        f.revision.to_string(),
                        f.runtime_resolved.clone(),
                        f.handler.clone(),
                        f.resources
                            .memory_bytes
                            .map(format_bytes)
                            .unwrap_or_default(),
                        f.stats.invocations.to_string(),
                        f.updated_at.clone(),
                    ]);
                }
                crate::output::table(&rows)
            })
        }
        FnCmd::Describe { name } => {
            let info: FunctionInfo = api.get(&format!("/v1/functions/{name}"))?;
            print_fn(fmt, &info, "")
        }
        FnCmd::Rm { name } => {
            api.delete_json(&format!("/v1/functions/{name}"))?;
            crate::commands::print(fmt, &serde_json::json!({ "removed": [name] }), |_| {
                format!("removed function {name}\n")
            })
        }
    }
}

fn create(api: &Api, fmt: Format, a: FnCreateArgs) -> anyhow::Result<ExitCode> {
    validate_name(&a.name)?;
    let config = FunctionConfig {
        runtime: a.runtime,
        handler: a.handler,
        resources: resources(&a.config)?,
        env: kv(&a.config.env, "env")?,
        secret_env: kv(&a.config.secret_env, "secret-env")?,
        volumes: volumes(&a.config)?,
        network: a.network,
        public: a.public,
        scaling: {
            let u = scaling_update(&a.config)?;
            let d = strata_types::api::Scaling::default();
            strata_types::api::Scaling {
                min_instances: u.min_instances.unwrap_or(d.min_instances),
                max_instances: u.max_instances.unwrap_or(d.max_instances),
                concurrency: u.concurrency.unwrap_or(d.concurrency),
                idle_timeout_ms: u.idle_timeout_ms,
                max_queue: u.max_queue.unwrap_or(d.max_queue),
            }
        },
        routes: Vec::new(),
    };
    let spec = CreateFunctionSpec {
        name: a.name,
        config,
    };
    let form =
        reqwest::blocking::multipart::Form::new().text("spec", serde_json::to_string(&spec)?);
    let form = with_code(form, a.code.as_deref(), &a.git)?;
    let info: FunctionInfo = api.post_form("/v1/functions", form)?;
    print_fn(fmt, &info, "created function\n")
}

fn update(api: &Api, fmt: Format, a: FnUpdateArgs) -> anyhow::Result<ExitCode> {
    let mut vols = volumes(&a.config)?;
    let update = FunctionUpdate {
        runtime: a.runtime,
        handler: a.handler,
        resources: resources(&a.config)?,
        env: kv(&a.config.env, "env")?,
        secret_env: kv(&a.config.secret_env, "secret-env")?,
        unset_env: a.unset_env,
        volumes: if a.clear_volumes || !vols.is_empty() {
            Some(std::mem::take(&mut vols))
        } else {
            None
        },
        network: a.network,
        public: a.public,
        scaling: scaling_update(&a.config)?,
        routes: None,
    };
    let form =
        reqwest::blocking::multipart::Form::new().text("update", serde_json::to_string(&update)?);
    let form = with_code(form, a.code.as_deref(), &a.git)?;
    let info: FunctionInfo = api.patch_form(&format!("/v1/functions/{}", a.name), form)?;
    print_fn(fmt, &info, "updated function\n")
}

/// Updates the function when it exists, else creates it (runtime, handler and code needed).
fn deploy(api: &Api, fmt: Format, a: FnUpdateArgs) -> anyhow::Result<ExitCode> {
    validate_name(&a.name)?;
    if api
        .get_opt::<FunctionInfo>(&format!("/v1/functions/{}", a.name))?
        .is_some()
    {
        return update(api, fmt, a);
    }
    let (Some(runtime), Some(handler)) = (a.runtime.clone(), a.handler.clone()) else {
        bail!(
            "function {} does not exist yet: its first deploy needs --runtime (e.g. python3) and --handler (e.g. app.handler)",
            a.name
        );
    };
    if a.code.is_none() && a.git.git.is_none() {
        bail!(
            "function {} does not exist yet: its first deploy needs --code DIR or --git URL",
            a.name
        );
    }
    create(
        api,
        fmt,
        FnCreateArgs {
            name: a.name,
            runtime,
            code: a.code,
            git: a.git,
            handler,
            network: a.network.unwrap_or(false),
            public: a.public.unwrap_or(false),
            config: a.config,
        },
    )
}

pub fn run_volume(api: &Api, fmt: Format, cmd: VolumeCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        VolumeCmd::Create { name } => {
            let v: VolumeInfo =
                api.post_json("/v1/volumes", &serde_json::json!({ "name": name }))?;
            crate::commands::print(fmt, &v, |v| format!("created volume {}\n", v.name))
        }
        VolumeCmd::Ls => {
            let list: Vec<VolumeInfo> = api.get("/v1/volumes")?;
            crate::commands::print(fmt, &list, |l| {
                let mut rows = vec![vec!["NAME".to_string(), "USED BY".into(), "CREATED".into()]];
                for v in l {
                    rows.push(vec![
                        v.name.clone(),
                        v.used_by.join(","),
                        v.created_at.clone(),
                    ]);
                }
                crate::output::table(&rows)
            })
        }
        VolumeCmd::Rm { name } => {
            api.delete_json(&format!("/v1/volumes/{name}"))?;
            crate::commands::print(fmt, &serde_json::json!({ "removed": [name] }), |_| {
                format!("removed volume {name}\n")
            })
        }
    }
}

/// Prints the result on stdout; on failure prints the error (Lambda shape) and exits 1.
pub fn invoke(api: &Api, fmt: Format, a: InvokeArgs) -> anyhow::Result<ExitCode> {
    let event = match a.data.as_deref() {
        None => b"{}".to_vec(),
        Some("-") => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .context("reading the event from stdin")?;
            v
        }
        Some(d) => d.as_bytes().to_vec(),
    };
    if serde_json::from_slice::<serde_json::Value>(&event).is_err() {
        bail!("the event is not valid JSON");
    }
    let (status, headers, body) =
        api.post_raw(&format!("/v1/functions/{}/invoke", a.name), event)?;
    let text = String::from_utf8_lossy(&body);
    if (200..300).contains(&status) {
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let kind = headers
        .get("x-strata-error-kind")
        .cloned()
        .unwrap_or_else(|| "platform".into());
    match fmt {
        Format::Json => println!("{text}"),
        Format::Table => {
            let v: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            eprintln!(
                "error ({kind}, HTTP {status}): {}: {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["errorMessage"].as_str().unwrap_or(&text)
            );
            if let Some(st) = v["stackTrace"].as_array() {
                for l in st.iter().filter_map(|l| l.as_str()) {
                    eprintln!("  {}", l.trim_end());
                }
            }
        }
    }
    Ok(ExitCode::FAILURE)
}

pub fn logs(api: &Api, fmt: Format, a: LogsArgs) -> anyhow::Result<ExitCode> {
    let since_ms = match &a.since {
        Some(d) => now_ms().saturating_sub(parse_duration(d)?),
        None => 0,
    };
    let path = format!(
        "/v1/functions/{}/logs?since_ms={since_ms}&limit={}&follow={}",
        a.name, a.tail, a.follow
    );
    let resp = api.get_stream(&path)?;
    for line in BufReader::new(resp).lines() {
        let line = line.context("reading logs")?;
        if line.trim().is_empty() {
            continue;
        }
        match fmt {
            Format::Json => println!("{line}"),
            Format::Table => {
                let e: LogEntry = serde_json::from_str(&line)?;
                println!(
                    "{} {} {:<6} {}",
                    strata_time(e.ts_ms),
                    e.invocation
                        .as_deref()
                        .map(|i| &i[..i.len().min(8)])
                        .unwrap_or("-"),
                    e.stream,
                    e.line
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn strata_time(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ms % 1000
    )
}
