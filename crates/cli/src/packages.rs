//! `strata package ...`, `strata store ...` and the package verbs of `strata runtime`.

use std::io::Seek;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use strata_types::api::{
    CreatePackageSpec, GcReport, PackageInfo, RollbackRequest, RuntimeDiff, RuntimeInfo,
    StoreStats, UpdateRuntimeRequest,
};
use strata_types::{format_bytes, validate_name, PackageRef, RuntimeRef};

use crate::client::Api;
use crate::commands::{print, stream};
use crate::output::table;
use crate::Format;

/// `strata package ...`
#[derive(Debug, Subcommand)]
pub enum PackageCmd {
    /// Create a package (a recipe built once against a base into one layer).
    Create(PackageArgs),
    /// List package versions.
    Ls,
    /// Show a package version: recipe, requirements, builds and the runtimes that use it.
    Describe {
        /// NAME (newest) or NAME@VERSION.
        reference: String,
    },
    /// Remove a package version, or every version of a name.
    Rm {
        /// NAME (every version) or NAME@VERSION.
        reference: String,
    },
}

/// `strata package create`.
#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// NAME or NAME@VERSION (default version: the next number, or the newest when unchanged).
    pub reference: String,
    /// The image (or runtime, NAME@VERSION) to build against.
    #[arg(long)]
    pub base: String,
    /// A Dockerfile snippet of RUN, ENV, COPY and WORKDIR instructions.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Directory COPY in the snippet reads from.
    #[arg(long)]
    pub context: Option<PathBuf>,
    /// A shell command to run (repeatable).
    #[arg(long)]
    pub run: Vec<String>,
    /// Debian packages to install, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub apt: Vec<String>,
    /// Python requirements to pip-install, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub pip: Vec<String>,
    /// npm packages to install globally, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub npm: Vec<String>,
    /// Packages this one builds on and needs, comma-separated (NAME or NAME@VERSION).
    #[arg(long, value_delimiter = ',')]
    pub requires: Vec<String>,
    /// Rebuild even if the same recipe was built on the same base.
    #[arg(long)]
    pub no_cache: bool,
}

/// `strata store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Logical size (every runtime as a full image), physical size on disk and their ratio.
    Stats,
    /// Remove layers, code and pooled files nothing references (safe while the server runs).
    Gc,
}

pub fn package(api: &Api, fmt: Format, cmd: PackageCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PackageCmd::Create(args) => create(api, fmt, args),
        PackageCmd::Ls => {
            let list: Vec<PackageInfo> = api.get("/v1/packages")?;
            print(fmt, &list, |l| packages(l))
        }
        PackageCmd::Describe { reference } => {
            let r: PackageRef = reference.parse()?;
            let info: PackageInfo = api.get(&format!("/v1/packages/{r}"))?;
            print(fmt, &info, describe)
        }
        PackageCmd::Rm { reference } => {
            let r: PackageRef = reference.parse()?;
            let removed = api.delete_json(&format!("/v1/packages/{r}"))?;
            print(fmt, &removed, |v| {
                let list: Vec<&str> = v["removed"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                format!("removed {}\n", list.join(", "))
            })
        }
    }
}

fn create(api: &Api, fmt: Format, args: PackageArgs) -> anyhow::Result<ExitCode> {
    let r: PackageRef = args.reference.parse()?;
    validate_name(&r.name)?;
    let snippet = match &args.file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the snippet {}", f.display()))?,
        ),
        None => None,
    };
    if snippet.is_none()
        && args.run.is_empty()
        && args.apt.is_empty()
        && args.pip.is_empty()
        && args.npm.is_empty()
    {
        bail!("a package needs a recipe: -f SNIPPET, --run CMD, --apt PKG,..., --pip SPEC,... or --npm SPEC,...");
    }
    let spec = CreatePackageSpec {
        name: r.name.clone(),
        version: r.version.clone(),
        base: args.base.clone(),
        snippet,
        run: args.run.clone(),
        apt: args.apt.clone(),
        pip: args.pip.clone(),
        npm: args.npm.clone(),
        requires: args.requires.clone(),
        no_cache: args.no_cache,
    };
    let mut form =
        reqwest::blocking::multipart::Form::new().text("spec", serde_json::to_string(&spec)?);
    if let Some(dir) = &args.context {
        if !dir.is_dir() {
            bail!("the context {} is not a directory", dir.display());
        }
        let mut file = tempfile::tempfile().context("creating a temporary file for the context")?;
        let n = crate::context::pack(dir, &file)?;
        let len = file.metadata()?.len();
        eprintln!("==> sending context: {n} entries, {}", format_bytes(len));
        file.rewind()?;
        let part = reqwest::blocking::multipart::Part::reader_with_length(file, len)
            .file_name("context.tar")
            .mime_str("application/x-tar")?;
        form = form.part("context", part);
    }
    let info: PackageInfo = stream(fmt, |on| api.post_form_stream("/v1/packages", form, on))?;
    print(fmt, &info, |p| {
        format!("package {}@{}\n{}", p.name, p.version, describe(p))
    })
}

pub fn store(api: &Api, fmt: Format, cmd: StoreCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCmd::Stats => {
            let s: StoreStats = api.get("/v1/store/stats")?;
            print(fmt, &s, |s| {
                format!(
                    "logical:   {} ({} images, {} runtime versions, each counted in full)\nphysical:  {} ({} allocated)\nratio:     {:.2}x\ndistinct:  {} of distinct file content\nlayers:    {}\npackages:  {}\npool:      {} files, {} not stored twice\n",
                    format_bytes(s.logical_bytes),
                    s.images,
                    s.runtimes,
                    format_bytes(s.physical_bytes),
                    format_bytes(s.allocated_bytes),
                    s.ratio,
                    format_bytes(s.distinct_content_bytes),
                    s.layers,
                    s.packages,
                    s.pool_files,
                    format_bytes(s.dedup_saved_bytes),
                )
            })
        }
        StoreCmd::Gc => {
            let r: GcReport = api.post_json("/v1/store/gc", &serde_json::json!({}))?;
            print(fmt, &r, |r| {
                format!(
                    "removed {} layers, {} code trees, {} pooled files; freed {}\n",
                    r.layers_removed,
                    r.code_removed,
                    r.files_removed,
                    format_bytes(r.bytes_freed)
                )
            })
        }
    }
}

/// `strata runtime update NAME --add/--remove/--set`.
pub fn update_runtime(
    api: &Api,
    fmt: Format,
    name: &str,
    req: UpdateRuntimeRequest,
) -> anyhow::Result<ExitCode> {
    validate_name(name)?;
    let info: RuntimeInfo = stream(fmt, |on| {
        api.post_stream(&format!("/v1/runtimes/{name}/update"), &req, on)
    })?;
    print(fmt, &info, |r| {
        format!(
            "updated runtime {} to version {} ({})\n",
            r.name,
            r.version,
            r.packages.join(", ")
        )
    })
}

/// `strata runtime rollback NAME [--to VERSION]`.
pub fn rollback_runtime(
    api: &Api,
    fmt: Format,
    name: &str,
    to: Option<u32>,
) -> anyhow::Result<ExitCode> {
    validate_name(name)?;
    let info: RuntimeInfo = api.post_json(
        &format!("/v1/runtimes/{name}/rollback"),
        &RollbackRequest { to },
    )?;
    print(fmt, &info, |r| {
        format!(
            "rolled runtime {} back: version {} has the layers of version {}\n",
            r.name,
            r.version,
            to.map(|v| v.to_string())
                .unwrap_or_else(|| "its predecessor".into())
        )
    })
}

/// `strata runtime diff A B`.
pub fn diff_runtimes(api: &Api, fmt: Format, a: &str, b: &str) -> anyhow::Result<ExitCode> {
    let a: RuntimeRef = a.parse()?;
    let b: RuntimeRef = b.parse()?;
    let d: RuntimeDiff = api.get(&format!("/v1/runtimes/{a}/diff/{b}"))?;
    print(fmt, &d, |d| {
        let mut out = format!("{} -> {}\n", d.from, d.to);
        for p in &d.packages_added {
            out.push_str(&format!("+ package {p}\n"));
        }
        for p in &d.packages_removed {
            out.push_str(&format!("- package {p}\n"));
        }
        for c in &d.packages_changed {
            out.push_str(&format!("~ package {} {} -> {}\n", c.name, c.from, c.to));
        }
        out.push_str(&format!(
            "files: {} added, {} removed, {} changed\n",
            d.files_added.len(),
            d.files_removed.len(),
            d.files_changed.len()
        ));
        const SHOWN: usize = 50;
        for (mark, list) in [
            ('+', &d.files_added),
            ('-', &d.files_removed),
            ('~', &d.files_changed),
        ] {
            for f in list.iter().take(SHOWN) {
                out.push_str(&format!("{mark} {f}\n"));
            }
            if list.len() > SHOWN {
                out.push_str(&format!(
                    "{mark} ... {} more (-o json lists all)\n",
                    list.len() - SHOWN
                ));
            }
        }
        out
    })
}

fn packages(list: &[PackageInfo]) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "VERSION".into(),
        "BASE".into(),
        "SIZE".into(),
        "REQUIRES".into(),
        "USED BY".into(),
    ]];
    for p in list {
        let size: u64 = p
            .builds
            .iter()
            .filter_map(|b| b.layer.as_ref().map(|l| l.size_bytes))
            .max()
            .unwrap_or(0);
        rows.push(vec![
            p.name.clone(),
            p.version.clone(),
            p.base.clone(),
            format_bytes(size),
            if p.requires.is_empty() {
                "-".into()
            } else {
                p.requires.join(",")
            },
            if p.used_by.is_empty() {
                "-".into()
            } else {
                p.used_by.join(",")
            },
        ]);
    }
    table(&rows)
}

fn describe(p: &PackageInfo) -> String {
    let mut out = format!(
        "name:     {}@{}\nbase:     {}\ncreated:  {}\nrequires: {}\nenv:      {}\nused by:  {}\nrecipe:\n",
        p.name,
        p.version,
        p.base,
        p.created_at,
        if p.requires.is_empty() { "-".into() } else { p.requires.join(", ") },
        if p.env.is_empty() { "-".into() } else { p.env.join(" ") },
        if p.used_by.is_empty() { "-".into() } else { p.used_by.join(", ") },
    );
    for line in p.recipe.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("builds:\n");
    for b in &p.builds {
        match &b.layer {
            Some(l) => out.push_str(&format!(
                "  on {:<24} {} {} ({} entries)\n",
                b.base,
                l.digest.short(),
                format_bytes(l.size_bytes),
                l.entries
            )),
            None => out.push_str(&format!("  on {:<24} (no file changes)\n", b.base)),
        }
    }
    out
}

/// The package lines of `runtime describe`.
pub fn runtime_packages(r: &RuntimeInfo) -> String {
    if r.packages.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "kind:       {}\npackages:   {}\n",
        r.kind,
        r.packages.join(", ")
    );
    if let Some(p) = r.parent {
        out.push_str(&format!("made from:  version {p}\n"));
    }
    out
}
