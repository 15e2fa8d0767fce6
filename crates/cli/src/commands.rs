//! Each command: argument parsing plus one API call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use strata_types::api::{
    BootstrapImageRequest, BootstrapResult, CreateRuntimeSpec, ImageInfo, RunRequest, RunResult,
    RuntimeInfo,
};
use strata_types::{parse_duration, parse_memory, validate_name, Resources, RuntimeRef};

use crate::client::Api;
use crate::output::{self, Progress};
use crate::{Cli, Command, Format};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Data directory (metadata, layers, blobs, admin token).
    #[arg(long, env = "STRATA_DATA", default_value = "/var/lib/strata")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// OCI runtime binary (runc or a runc-compatible one).
    #[arg(long, env = "STRATA_RUNC")]
    pub runc: Option<PathBuf>,
    /// Debian mirror for image bootstraps.
    #[arg(long, env = "STRATA_MIRROR")]
    pub mirror: Option<String>,
    /// Largest upload (image archive or build context), e.g. 8Gi.
    #[arg(long, default_value = "8Gi")]
    pub max_upload: String,
    /// Stop a function instance after it has been idle this long.
    #[arg(long, env = "STRATA_IDLE_TIMEOUT", default_value = "5m")]
    pub idle_timeout: String,
    /// Most function instances running at once.
    #[arg(long, env = "STRATA_MAX_INSTANCES", default_value_t = 64)]
    pub max_instances: usize,
    /// Most memory all instances together may be limited to, e.g. 16Gi (default: 80% of RAM).
    #[arg(long, env = "STRATA_MEMORY_BUDGET")]
    pub memory_budget: Option<String>,
    /// Host bridge of functions with network access (one per server on a host).
    #[arg(long, env = "STRATA_NET_BRIDGE")]
    pub net_bridge: Option<String>,
    /// Private subnet of that bridge, e.g. 10.213.0.0/16 (the default).
    #[arg(long, env = "STRATA_NET_SUBNET")]
    pub net_subnet: Option<String>,
    /// Let functions with network access reach private (RFC 1918, CGNAT) addresses and the
    /// host's connected networks (default: refused).
    #[arg(long, env = "STRATA_NET_ALLOW_PRIVATE")]
    pub net_allow_private: bool,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "STRATA_LOG", default_value = "info")]
    pub log: String,
    /// Where function code may be fetched from with git, comma-separated: https, http, file
    /// (file:// URLs and absolute paths on this host).
    #[arg(
        long,
        env = "STRATA_GIT_ALLOW",
        value_delimiter = ',',
        default_value = "https"
    )]
    pub git_allow: Vec<strata_api::GitScheme>,
    /// Start even when runc is a release known to let containers escape (logs a warning).
    #[arg(long, env = "STRATA_ALLOW_VULNERABLE_RUNC", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub allow_vulnerable_runc: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Build a Debian root file system from the mirror and store it as an image.
    Bootstrap {
        /// Image name.
        name: String,
        /// Debian suite.
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// Extra packages, comma-separated.
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
        /// Debian mirror (default: the server's).
        #[arg(long)]
        mirror: Option<String>,
    },
    /// Import an OCI image layout, a `docker save` archive or a root file-system tar.
    Import {
        /// Image name.
        name: String,
        /// The archive (.tar or .tar.gz).
        file: PathBuf,
    },
    /// List images.
    Ls,
    /// Show an image's layers and configuration.
    Describe {
        /// Image name.
        name: String,
    },
    /// Remove an image (refused while a runtime uses it).
    Rm {
        /// Image name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RuntimeCmd {
    /// Build a runtime from a Dockerfile; an existing NAME gets its next version.
    Create(CreateArgs),
    /// List runtime versions.
    Ls,
    /// Show a runtime version: base, layers, configuration, default resources.
    Describe {
        /// NAME (newest) or NAME@VERSION.
        reference: String,
    },
    /// Remove a runtime version, or all versions of a name.
    Rm {
        /// NAME (every version) or NAME@VERSION.
        reference: String,
    },
    /// Make the next version of a package runtime by adding, removing or changing packages
    /// (no rebuild when the packages are built).
    Update {
        /// Runtime name.
        name: String,
        /// Packages to add, comma-separated (NAME or NAME@VERSION).
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// Package names to remove, comma-separated.
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
        /// NAME@VERSION of packages to move to another version, comma-separated.
        #[arg(long, value_delimiter = ',')]
        set: Vec<String>,
    },
    /// Make an earlier version current again (as a new version with its layers).
    Rollback {
        /// Runtime name.
        name: String,
        /// The version to go back to (default: the one the newest was made from).
        #[arg(long)]
        to: Option<u32>,
    },
    /// List the packages and files that differ between two runtime versions.
    Diff {
        /// NAME@VERSION.
        from: String,
        /// NAME@VERSION.
        to: String,
    },
    /// Set how many warm generic instances each version of a runtime keeps (pool size).
    Pool {
        /// Runtime name.
        name: String,
        /// Instances kept warm at least.
        #[arg(long)]
        min: u32,
        /// Most instances the pool grows to under load.
        #[arg(long)]
        max: u32,
    },
    /// Run a one-off command in a fresh instance of a runtime; exits with its exit code.
    Run {
        /// NAME or NAME@VERSION.
        reference: String,
        /// Share the host's network (default: loopback only).
        #[arg(long)]
        network: bool,
        /// Extra environment, KEY=VALUE.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// Kill the command after this long (e.g. 30s, 5m).
        #[arg(long)]
        timeout: Option<String>,
        /// The command and its arguments (default: the runtime's ENTRYPOINT and CMD).
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Runtime name.
    pub name: String,
    /// The Dockerfile (or use --base and --packages).
    #[arg(short = 'f', long = "file", required_unless_present = "packages")]
    pub file: Option<PathBuf>,
    /// Make the runtime from packages on this image (or runtime NAME@VERSION).
    #[arg(long, requires = "packages", conflicts_with = "file")]
    pub base: Option<String>,
    /// Packages to stack, comma-separated (NAME or NAME@VERSION); their requirements are added.
    #[arg(long, value_delimiter = ',', requires = "base")]
    pub packages: Vec<String>,
    /// Build the packages as one ordered layer chain instead of composing them.
    #[arg(long, requires = "packages")]
    pub layered: bool,
    /// Build context directory (default: none).
    #[arg(long)]
    pub context: Option<PathBuf>,
    /// Default memory limit for functions, e.g. 256Mi.
    #[arg(long)]
    pub memory: Option<String>,
    /// Default CPU limit, e.g. 0.5 or 500m.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Default invocation timeout, e.g. 30s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Build argument, KEY=VALUE.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Ignore the layer cache.
    #[arg(long)]
    pub no_cache: bool,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Server(args) = &cli.command {
        return server(args);
    }
    if let Command::Completions { shell } = &cli.command {
        return completions(*shell, cli.output);
    }
    let token_file = cli.data_dir.join(strata_api::TOKEN_FILE);
    let (token, token_note) = match cli.token.clone() {
        Some(t) => (Some(t), None),
        None => match std::fs::read_to_string(&token_file) {
            Ok(t) => (Some(t.trim().to_string()), None),
            Err(e) => (
                None,
                Some(format!(
                    "no token was sent: none given and {} could not be read ({e}); run as a user who can read it (the server writes it there on first start), pass --data-dir DIR for a server with another data directory, or set STRATA_TOKEN / --token",
                    token_file.display()
                )),
            ),
        },
    };
    let api = Api::new(&cli.server, token)?.with_token_note(token_note);
    let fmt = cli.output;
    let result = dispatch(&api, fmt, cli.command);
    result.map_err(|e| crate::client::enrich(&api, e))
}

/// `strata completions SHELL`: the script on stdout (as a JSON string with `-o json`).
fn completions(shell: clap_complete::Shell, fmt: Format) -> anyhow::Result<ExitCode> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "strata", &mut buf);
    let script = String::from_utf8(buf).context("the completion script is not UTF-8")?;
    print(
        fmt,
        &serde_json::json!({ "shell": shell.to_string(), "script": script }),
        |_| script.clone(),
    )
}

fn dispatch(api: &Api, fmt: Format, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Server(_) | Command::Completions { .. } => {
            unreachable!("handled above")
        }
        Command::Up(a) => crate::project::up(api, fmt, a),
        Command::Down(a) => crate::project::down(api, fmt, a),
        Command::Bootstrap => {
            let r: BootstrapResult = stream(fmt, |on| {
                api.post_stream("/v1/bootstrap", &serde_json::json!({}), on)
            })?;
            print(fmt, &r, |r| {
                r.items
                    .iter()
                    .map(|i| format!("{:<8} {:<20} {}\n", i.kind, i.name, i.status))
                    .collect()
            })
        }
        Command::Image(cmd) => image(api, fmt, cmd),
        Command::Package(cmd) => crate::packages::package(api, fmt, cmd),
        Command::Store(cmd) => crate::packages::store(api, fmt, cmd),
        Command::Runtime(cmd) => runtime(api, fmt, cmd),
        Command::Fn(cmd) => crate::functions::run_fn(api, fmt, cmd),
        Command::Invoke(a) => crate::functions::invoke(api, fmt, a),
        Command::Logs(a) => crate::functions::logs(api, fmt, a),
        Command::Volume(cmd) => crate::functions::run_volume(api, fmt, cmd),
    }
}

fn server(args: &ServerArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let max_upload = parse_memory(&args.max_upload)?;
    let opts = strata_api::ServerOptions {
        data_dir: args.data.clone(),
        listen: args.listen,
        runc: args.runc.clone(),
        mirror: args.mirror.clone(),
        max_upload,
        idle_timeout: std::time::Duration::from_millis(parse_duration(&args.idle_timeout)?),
        max_instances: args.max_instances,
        memory_budget: args
            .memory_budget
            .as_deref()
            .map(parse_memory)
            .transpose()?,
        allow_vulnerable_runc: args.allow_vulnerable_runc,
        net_bridge: args.net_bridge.clone(),
        net_subnet: args.net_subnet.clone(),
        net_allow_private: args.net_allow_private,
        git_schemes: Some(args.git_allow.clone()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(strata_api::serve(opts))?;
    Ok(ExitCode::SUCCESS)
}

/// Follows an event stream with progress on stderr; returns the typed result.
pub(crate) fn stream<T: serde::de::DeserializeOwned>(
    _fmt: Format,
    call: impl FnOnce(&mut dyn FnMut(&strata_types::api::Event)) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<T> {
    let mut progress = Progress::new(false);
    let result = call(&mut |e| progress.event(e));
    progress.finish();
    serde_json::from_value(result?).context("unexpected result from the server")
}

pub fn print<T: Serialize>(
    fmt: Format,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    match fmt {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Table => print!("{}", human(value)),
    }
    Ok(ExitCode::SUCCESS)
}

fn image(api: &Api, fmt: Format, cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Bootstrap {
            name,
            suite,
            include,
            mirror,
        } => {
            validate_name(&name)?;
            let req = BootstrapImageRequest {
                suite,
                include,
                mirror,
            };
            let info: ImageInfo = stream(fmt, |on| {
                api.post_stream(&format!("/v1/images/{name}/bootstrap"), &req, on)
            })?;
            print(fmt, &info, output::image)
        }
        ImageCmd::Import { name, file } => {
            validate_name(&name)?;
            if !file.is_file() {
                bail!(
                    "{} is not a file: give an OCI layout, docker-save or root file-system tar",
                    file.display()
                );
            }
            eprintln!("==> uploading {}", file.display());
            let info: ImageInfo = stream(fmt, |on| {
                api.post_file_stream(&format!("/v1/images/{name}/import"), &file, on)
            })?;
            print(fmt, &info, output::image)
        }
        ImageCmd::Ls => {
            let list: Vec<ImageInfo> = api.get("/v1/images")?;
            print(fmt, &list, |l| output::images(l))
        }
        ImageCmd::Describe { name } => {
            let info: ImageInfo = api.get(&format!("/v1/images/{name}"))?;
            print(fmt, &info, output::image)
        }
        ImageCmd::Rm { name } => {
            api.delete_json(&format!("/v1/images/{name}"))?;
            print(fmt, &serde_json::json!({ "removed": [name] }), |_| {
                format!("removed image {name}\n")
            })
        }
    }
}

fn runtime(api: &Api, fmt: Format, cmd: RuntimeCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RuntimeCmd::Create(args) => create_runtime(api, fmt, args),
        RuntimeCmd::Update {
            name,
            add,
            remove,
            set,
        } => crate::packages::update_runtime(
            api,
            fmt,
            &name,
            strata_types::api::UpdateRuntimeRequest { add, remove, set },
        ),
        RuntimeCmd::Rollback { name, to } => crate::packages::rollback_runtime(api, fmt, &name, to),
        RuntimeCmd::Diff { from, to } => crate::packages::diff_runtimes(api, fmt, &from, &to),
        RuntimeCmd::Ls => {
            let list: Vec<RuntimeInfo> = api.get("/v1/runtimes")?;
            print(fmt, &list, |l| output::runtimes(l))
        }
        RuntimeCmd::Describe { reference } => {
            let r: RuntimeRef = reference.parse()?;
            let info: RuntimeInfo = api.get(&format!("/v1/runtimes/{r}"))?;
            print(fmt, &info, output::runtime)
        }
        RuntimeCmd::Rm { reference } => {
            let r: RuntimeRef = reference.parse()?;
            let removed = api.delete_json(&format!("/v1/runtimes/{r}"))?;
            print(fmt, &removed, |v| {
                let list: Vec<String> = v["removed"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("removed {}\n", list.join(", "))
            })
        }
        RuntimeCmd::Pool { name, min, max } => {
            let p: strata_types::api::PoolSettings = api.put_json(
                &format!("/v1/runtimes/{name}/pool"),
                &strata_types::api::PoolSettings { min, max },
            )?;
            print(fmt, &p, |p| {
                format!("pool of {name}: min {} max {}\n", p.min, p.max)
            })
        }
        RuntimeCmd::Run {
            reference,
            network,
            env,
            timeout,
            command,
        } => {
            let r: RuntimeRef = reference.parse()?;
            let timeout_ms = timeout.as_deref().map(parse_duration).transpose()?;
            let req = RunRequest {
                command,
                env,
                network,
                timeout_ms,
            };
            let mut progress = Progress::new(fmt == Format::Table);
            let result = api.post_stream(&format!("/v1/runtimes/{r}/run"), &req, &mut |e| {
                if fmt == Format::Json {
                    // Scripts get the result on stdout; command output goes to stderr.
                    if let strata_types::api::Event::Output { line, .. } = e {
                        eprintln!("{line}");
                    }
                } else {
                    progress.event(e)
                }
            });
            progress.finish();
            let result: RunResult = serde_json::from_value(result?)?;
            if fmt == Format::Json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else if result.timed_out {
                eprintln!(
                    "strata: the command timed out after {:.1}s and was killed",
                    result.duration_ms as f64 / 1000.0
                );
            }
            Ok(ExitCode::from(result.exit_code.clamp(0, 255) as u8))
        }
    }
}

fn create_runtime(api: &Api, fmt: Format, args: CreateArgs) -> anyhow::Result<ExitCode> {
    validate_name(&args.name)?;
    let dockerfile = match &args.file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the Dockerfile {}", f.display()))?,
        None => String::new(),
    };
    let resources = Resources::parse(
        args.memory.as_deref(),
        args.cpu.as_deref(),
        args.timeout.as_deref(),
    )?;
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("invalid --build-arg {a:?}: expected KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let spec = CreateRuntimeSpec {
        name: args.name.clone(),
        dockerfile,
        build_args,
        resources,
        no_cache: args.no_cache,
        base: args.base.clone(),
        packages: args.packages.clone(),
        layered: args.layered,
    };
    let mut form =
        reqwest::blocking::multipart::Form::new().text("spec", serde_json::to_string(&spec)?);
    if let Some(dir) = &args.context {
        if !dir.is_dir() {
            bail!("the build context {} is not a directory", dir.display());
        }
        let file =
            tempfile::tempfile().context("creating a temporary file for the build context")?;
        let n = crate::context::pack(dir, &file)?;
        let len = file.metadata()?.len();
        eprintln!(
            "==> sending build context: {n} entries, {}",
            strata_types::format_bytes(len)
        );
        let mut file = file;
        use std::io::Seek;
        file.rewind()?;
        let part = reqwest::blocking::multipart::Part::reader_with_length(file, len)
            .file_name("context.tar")
            .mime_str("application/x-tar")?;
        form = form.part("context", part);
    }
    let info: RuntimeInfo = stream(fmt, |on| api.post_form_stream("/v1/runtimes", form, on))?;
    print(fmt, &info, |r| {
        format!(
            "created runtime {}@{}\n{}",
            r.name,
            r.version,
            output::runtime(r)
        )
    })
}
