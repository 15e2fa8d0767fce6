//! `strata`: one binary for the server and its command-line client.
//!
//! `strata server` runs the platform; every other command is a thin client of the server's HTTP
//! API (argument parsing plus one request), found through `--server` or `STRATA_URL`.

mod client;
mod commands;
mod context;
mod digest;
mod functions;
mod init;
mod output;
mod packages;
mod project;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Strata: a self-hosted serverless platform. Functions are only code; runtimes are shared,
/// versioned environments built once.
#[derive(Parser, Debug)]
#[command(name = "strata", version, propagate_version = true)]
pub struct Cli {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "STRATA_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// API token (default: read from the local data directory's admin.token).
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory whose admin.token the client reads when no token is given.
    #[arg(
        long = "data-dir",
        global = true,
        env = "STRATA_DATA",
        default_value = "/var/lib/strata"
    )]
    pub data_dir: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Table,
    /// For scripts: one JSON document on stdout.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the Strata server.
    Server(commands::ServerArgs),
    /// Create the base image and the built-in runtimes (idempotent).
    Bootstrap,
    /// Base images.
    #[command(subcommand)]
    Image(commands::ImageCmd),
    /// Runtimes.
    #[command(subcommand)]
    Runtime(commands::RuntimeCmd),
    /// Functions: code plus configuration on a runtime.
    #[command(subcommand, name = "fn")]
    Fn(functions::FnCmd),
    /// Invoke a function and print its result (exit status 1 on error).
    Invoke(functions::InvokeArgs),
    /// Show a function's logs.
    Logs(functions::LogsArgs),
    /// Named volumes for functions.
    #[command(subcommand)]
    Volume(functions::VolumeCmd),
    /// Create or update what strata.toml describes; prints what changed, or that nothing did.
    Up(project::UpArgs),
    /// Remove what strata.toml describes.
    Down(project::DownArgs),
    /// Print a shell completion script: `strata completions bash > /etc/bash_completion.d/strata`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Environment packages: recipes built once into layers that runtimes compose.
    #[command(subcommand)]
    Package(packages::PackageCmd),
    /// The content store: space used and garbage collection.
    #[command(subcommand)]
    Store(packages::StoreCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
