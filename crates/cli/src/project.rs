//! `strata up` and `strata down`: make the server match a `strata.toml`, or remove what it
//! describes.
//!
//! `up` goes in dependency order — volumes, packages, runtimes, functions — and for each thing
//! compares what the manifest wants with what the server has, changing only what differs:
//!
//! - functions through `PUT /v1/functions/{name}` (the server compares the whole configuration,
//!   secrets included, and the code digest, and names the changed fields); code from a
//!   directory is uploaded only when its digest, computed locally ([`crate::digest`]), differs
//!   from the function's;
//! - runtimes from a Dockerfile carry labels with the digests of their inputs (Dockerfile, build
//!   context, build arguments), so an unchanged runtime is not rebuilt and a changed one gets
//!   its next version; runtimes from packages are compared by base, kind and resolved packages;
//! - packages are created through the server, which reuses the newest version when the recipe
//!   is the same.
//!
//! Every step prints a line (`created`, `updated (fields)`, `unchanged`); `-o json` prints the
//! same as one document. `--dry-run` asks the server without changing anything.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Seek;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use strata_manifest::{CodeSpec, Manifest, RuntimeSource};
use strata_types::api::{
    ApplyAction, ApplyResult, CreatePackageSpec, CreateRuntimeSpec, FunctionInfo, PackageInfo,
    RuntimeInfo, VolumeInfo,
};
use strata_types::{Digest, Resources};

use crate::client::Api;
use crate::Format;

/// Label of a runtime built by a manifest: digest of its Dockerfile text.
const LABEL_DOCKERFILE: &str = "org.strata.project.dockerfile";
/// Label: digest of its build context (the files COPY can read).
const LABEL_CONTEXT: &str = "org.strata.project.context";
/// Label: digest of its build arguments.
const LABEL_BUILD_ARGS: &str = "org.strata.project.build-args";

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The manifest.
    #[arg(short = 'f', long = "file", default_value = strata_manifest::FILE_NAME)]
    pub file: PathBuf,
    /// Say what would change without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// The manifest.
    #[arg(short = 'f', long = "file", default_value = strata_manifest::FILE_NAME)]
    pub file: PathBuf,
    /// Say what would be removed without removing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove the volumes the manifest declares, and their data.
    #[arg(long)]
    pub volumes: bool,
}

/// One thing `up` or `down` looked at.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Item {
    /// `volume`, `package`, `runtime` or `function`.
    pub kind: &'static str,
    /// Its name (with the version for runtimes and packages, when known).
    pub name: String,
    /// `created`, `updated`, `unchanged`, `removed` or `absent`.
    pub action: &'static str,
    /// What differed, for `updated`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    manifest: String,
    dry_run: bool,
    items: Vec<Item>,
}

/// Prints each item as it is done (for people), and collects them.
struct Out {
    fmt: Format,
    items: Vec<Item>,
}

impl Out {
    fn push(&mut self, item: Item) {
        if self.fmt == Format::Table {
            let changed = if item.changed.is_empty() {
                String::new()
            } else {
                format!(" ({})", item.changed.join(", "))
            };
            println!("{:<9}{:<24}{}{changed}", item.kind, item.name, item.action);
        }
        self.items.push(item);
    }
}

fn load(file: &Path) -> anyhow::Result<Manifest> {
    Manifest::load(file).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn up(api: &Api, fmt: Format, a: UpArgs) -> anyhow::Result<ExitCode> {
    let m = load(&a.file)?;
    let base = strata_manifest::base_dir(&a.file);
    if fmt == Format::Table && a.dry_run {
        println!("dry run: nothing is changed");
    }
    let mut out = Out {
        fmt,
        items: Vec::new(),
    };
    volumes_up(api, &m, a.dry_run, &mut out)?;
    packages_up(api, fmt, &m, a.dry_run, &mut out)?;
    let built = runtimes_up(api, fmt, &m, &base, a.dry_run, &mut out)?;
    functions_up(api, &m, &base, a.dry_run, &built, &mut out)?;
    finish(fmt, &a.file, a.dry_run, out)
}

fn finish(fmt: Format, file: &Path, dry_run: bool, out: Out) -> anyhow::Result<ExitCode> {
    match fmt {
        Format::Json => {
            let r = Report {
                manifest: file.display().to_string(),
                dry_run,
                items: out.items,
            };
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Format::Table => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for i in &out.items {
                *counts.entry(i.action).or_default() += 1;
            }
            let changed = out
                .items
                .iter()
                .any(|i| !matches!(i.action, "unchanged" | "absent"));
            if !changed {
                println!("nothing changed");
            } else {
                let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
                println!(
                    "{}{}",
                    if dry_run { "would be: " } else { "" },
                    parts.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn volumes_up(api: &Api, m: &Manifest, dry_run: bool, out: &mut Out) -> anyhow::Result<()> {
    if m.volumes.is_empty() {
        return Ok(());
    }
    let have: BTreeSet<String> = api
        .get::<Vec<VolumeInfo>>("/v1/volumes")?
        .into_iter()
        .map(|v| v.name)
        .collect();
    for v in &m.volumes {
        let action = if have.contains(v) {
            "unchanged"
        } else {
            if !dry_run {
                let _: VolumeInfo =
                    api.post_json("/v1/volumes", &serde_json::json!({ "name": v }))?;
            }
            "created"
        };
        out.push(Item {
            kind: "volume",
            name: v.clone(),
            action,
            changed: vec![],
        });
    }
    Ok(())
}

fn packages_up(
    api: &Api,
    fmt: Format,
    m: &Manifest,
    dry_run: bool,
    out: &mut Out,
) -> anyhow::Result<()> {
    for (name, p) in &m.packages {
        let reference = match &p.version {
            Some(v) => format!("{name}@{v}"),
            None => name.clone(),
        };
        let before: Option<PackageInfo> = api.get_opt(&format!("/v1/packages/{reference}"))?;
        if dry_run {
            out.push(Item {
                kind: "package",
                name: reference,
                action: if before.is_some() {
                    "unchanged"
                } else {
                    "created"
                },
                changed: if before.is_some() {
                    vec!["recipe compared when built".into()]
                } else {
                    vec![]
                },
            });
            continue;
        }
        let spec = CreatePackageSpec {
            name: name.clone(),
            version: p.version.clone(),
            base: p.base.clone(),
            snippet: p.snippet.clone(),
            run: p.run.clone(),
            apt: p.apt.clone(),
            pip: p.pip.clone(),
            npm: p.npm.clone(),
            requires: p.requires.clone(),
            no_cache: false,
        };
        let form =
            reqwest::blocking::multipart::Form::new().text("spec", serde_json::to_string(&spec)?);
        let info: PackageInfo =
            crate::commands::stream(fmt, |on| api.post_form_stream("/v1/packages", form, on))
                .with_context(|| format!("package {name}"))?;
        let action = match &before {
            None => "created",
            Some(b) if b.version == info.version => "unchanged",
            Some(_) => "updated",
        };
        out.push(Item {
            kind: "package",
            name: format!("{}@{}", info.name, info.version),
            action,
            changed: if action == "updated" {
                vec!["recipe".into()]
            } else {
                vec![]
            },
        });
    }
    Ok(())
}

/// What a Dockerfile runtime's inputs are, as labels.
struct RuntimeInputs {
    dockerfile: String,
    labels: BTreeMap<&'static str, String>,
}

fn dockerfile_inputs(
    base: &Path,
    dockerfile: &str,
    context: Option<&str>,
    build_args: &BTreeMap<String, String>,
) -> anyhow::Result<RuntimeInputs> {
    let path = base.join(dockerfile);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the Dockerfile {}", path.display()))?;
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_DOCKERFILE, text_digest(&text));
    labels.insert(
        LABEL_CONTEXT,
        match context {
            Some(c) => crate::digest::code_digest(&base.join(c), (0, 0))?.to_string(),
            None => "none".into(),
        },
    );
    let args: Vec<String> = build_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.insert(LABEL_BUILD_ARGS, text_digest(&args.join("\n")));
    // The labels are part of what the server builds: one LABEL instruction at the end, which
    // only sets configuration (no layer).
    let mut dockerfile = text.trim_end().to_string();
    dockerfile.push_str("\n# Added by `strata up`: digests of this runtime's inputs.\nLABEL");
    for (k, v) in &labels {
        dockerfile.push_str(&format!(" {k}=\"{v}\""));
    }
    dockerfile.push('\n');
    Ok(RuntimeInputs { dockerfile, labels })
}

fn text_digest(text: &str) -> String {
    use sha2::Digest as _;
    Digest::from_bytes(&sha2::Sha256::digest(text.as_bytes()).into()).to_string()
}

/// Which inputs of a Dockerfile runtime differ from its newest version's.
fn dockerfile_changes(
    current: &RuntimeInfo,
    inputs: &RuntimeInputs,
    resources: &Resources,
) -> Vec<String> {
    let mut changed = Vec::new();
    for (label, field) in [
        (LABEL_DOCKERFILE, "dockerfile"),
        (LABEL_CONTEXT, "context"),
        (LABEL_BUILD_ARGS, "build_args"),
    ] {
        if current.config.labels.get(label) != inputs.labels.get(label) {
            changed.push(field.to_string());
        }
    }
    if current.resources != resources.or(&Resources::platform_default()) {
        changed.push("resources".into());
    }
    changed
}

/// The packages a runtime made from `wanted` would hold, resolved to `name@version` with their
/// requirements, as a set.
fn resolve_packages(api: &Api, wanted: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = wanted.to_vec();
    while let Some(r) = todo.pop() {
        let Some(info) = api.get_opt::<PackageInfo>(&format!("/v1/packages/{r}"))? else {
            return Ok(BTreeSet::new());
        };
        if out.insert(format!("{}@{}", info.name, info.version)) {
            todo.extend(info.requires.iter().cloned());
        }
    }
    Ok(out)
}

/// Builds or keeps each runtime; returns the names built (or, in a dry run, to be built) so
/// that functions on them are told apart.
///
/// A package runtime records its base as the server resolved it: an image name, or a runtime
/// pinned to the version that was newest (`python3` → `python3@2`); resolve the manifest's
/// base the same way before comparing.
fn resolve_base(api: &Api, base: &str) -> anyhow::Result<String> {
    if base.contains('@') {
        return Ok(base.to_string());
    }
    let image: Option<serde_json::Value> = api.get_opt(&format!("/v1/images/{base}"))?;
    if image.is_some() {
        return Ok(base.to_string());
    }
    let runtime: Option<RuntimeInfo> = api.get_opt(&format!("/v1/runtimes/{base}"))?;
    Ok(match runtime {
        Some(r) => format!("{}@{}", r.name, r.version),
        None => base.to_string(),
    })
}

fn runtimes_up(
    api: &Api,
    fmt: Format,
    m: &Manifest,
    base: &Path,
    dry_run: bool,
    out: &mut Out,
) -> anyhow::Result<BTreeSet<String>> {
    let mut missing = BTreeSet::new();
    for (name, r) in &m.runtimes {
        let current: Option<RuntimeInfo> = api.get_opt(&format!("/v1/runtimes/{name}"))?;
        let (spec, context, changed) = match &r.source {
            RuntimeSource::Dockerfile {
                dockerfile,
                context,
                build_args,
            } => {
                let inputs = dockerfile_inputs(base, dockerfile, context.as_deref(), build_args)?;
                let changed = current
                    .as_ref()
                    .map(|c| dockerfile_changes(c, &inputs, &r.resources));
                let spec = CreateRuntimeSpec {
                    name: name.clone(),
                    dockerfile: inputs.dockerfile,
                    base: None,
                    packages: vec![],
                    layered: false,
                    build_args: build_args.clone(),
                    resources: r.resources.clone(),
                    no_cache: false,
                };
                (spec, context.as_ref().map(|c| base.join(c)), changed)
            }
            RuntimeSource::Packages {
                base: image,
                packages,
                layered,
            } => {
                let changed = match &current {
                    None => None,
                    Some(c) => {
                        let mut ch = Vec::new();
                        if c.base != resolve_base(api, image)? {
                            ch.push("base".to_string());
                        }
                        let kind = if *layered { "layered" } else { "composed" };
                        if c.kind != kind {
                            ch.push("layered".into());
                        }
                        let want = resolve_packages(api, packages)?;
                        let have: BTreeSet<String> = c.packages.iter().cloned().collect();
                        if want.is_empty() || want != have {
                            ch.push("packages".into());
                        }
                        if c.resources != r.resources.or(&Resources::platform_default()) {
                            ch.push("resources".into());
                        }
                        Some(ch)
                    }
                };
                let spec = CreateRuntimeSpec {
                    name: name.clone(),
                    dockerfile: String::new(),
                    base: Some(image.clone()),
                    packages: packages.clone(),
                    layered: *layered,
                    build_args: BTreeMap::new(),
                    resources: r.resources.clone(),
                    no_cache: false,
                };
                (spec, None, changed)
            }
        };
        let (action, changed) = match changed {
            None => ("created", vec![]),
            Some(ch) if ch.is_empty() => ("unchanged", vec![]),
            Some(ch) => ("updated", ch),
        };
        let mut shown = name.clone();
        if action == "unchanged" {
            if let Some(c) = &current {
                shown = format!("{}@{}", c.name, c.version);
            }
        } else if dry_run {
            if current.is_none() {
                missing.insert(name.clone());
            }
        } else {
            let info = create_runtime(api, fmt, &spec, context.as_deref())
                .with_context(|| format!("building runtime {name}"))?;
            shown = format!("{}@{}", info.name, info.version);
        }
        out.push(Item {
            kind: "runtime",
            name: shown,
            action,
            changed,
        });
    }
    Ok(missing)
}

fn create_runtime(
    api: &Api,
    fmt: Format,
    spec: &CreateRuntimeSpec,
    context: Option<&Path>,
) -> anyhow::Result<RuntimeInfo> {
    let mut form =
        reqwest::blocking::multipart::Form::new().text("spec", serde_json::to_string(spec)?);
    if let Some(dir) = context {
        let mut file =
            tempfile::tempfile().context("creating a temporary file for the build context")?;
        crate::context::pack(dir, &file)?;
        let len = file.metadata()?.len();
        file.rewind()?;
        let part = crate::functions::upload_part(file, len, "context.tar")?;
        form = form.part("context", part);
    }
    crate::commands::stream(fmt, |on| api.post_form_stream("/v1/runtimes", form, on))
}

fn functions_up(
    api: &Api,
    m: &Manifest,
    base: &Path,
    dry_run: bool,
    runtimes_to_build: &BTreeSet<String>,
    out: &mut Out,
) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    for (name, f) in &m.functions {
        let config = m
            .function_config(name, &env)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let current: Option<FunctionInfo> = api.get_opt(&format!("/v1/functions/{name}"))?;
        let runtime_name = config.runtime.split('@').next().unwrap_or_default();
        if dry_run && runtimes_to_build.contains(runtime_name) {
            // Its runtime does not exist yet, so the server cannot check the function.
            out.push(Item {
                kind: "function",
                name: name.clone(),
                action: if current.is_some() {
                    "updated"
                } else {
                    "created"
                },
                changed: if current.is_some() {
                    vec!["runtime".into()]
                } else {
                    vec![]
                },
            });
            continue;
        }
        let mut form = reqwest::blocking::multipart::Form::new()
            .text("config", serde_json::to_string(&config)?);
        match &f.code {
            CodeSpec::Dir(d) => {
                let path = base.join(d);
                let same = match &current {
                    Some(c) if path.is_dir() => crate::digest::code_digest(&path, (0, 0))
                        .map(|digest| digest == c.code_digest)
                        .unwrap_or(false),
                    _ => false,
                };
                if !same {
                    form = form.part("code", crate::functions::code_part(&path)?);
                }
            }
            CodeSpec::Git(g) => {
                form = form.text("git", serde_json::to_string(g)?);
            }
        }
        let path = format!(
            "/v1/functions/{name}{}",
            if dry_run { "?dry_run=true" } else { "" }
        );
        let r: ApplyResult = api
            .put_form(&path, form)
            .with_context(|| format!("function {name} ({})", m.file()))?;
        out.push(Item {
            kind: "function",
            name: name.clone(),
            action: match r.action {
                ApplyAction::Created => "created",
                ApplyAction::Updated => "updated",
                ApplyAction::Unchanged => "unchanged",
            },
            changed: r.changed,
        });
    }
    Ok(())
}

pub fn down(api: &Api, fmt: Format, a: DownArgs) -> anyhow::Result<ExitCode> {
    let m = Manifest::load(&a.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    if fmt == Format::Table && a.dry_run {
        println!("dry run: nothing is removed");
    }
    let mut out = Out {
        fmt,
        items: Vec::new(),
    };
    let mut remove = |kind: &'static str, name: &str, path: String| -> anyhow::Result<()> {
        let exists = api.get_opt::<serde_json::Value>(&path)?.is_some();
        if exists && !a.dry_run {
            api.delete_json(&path)
                .with_context(|| format!("removing {kind} {name}"))?;
        }
        out.push(Item {
            kind,
            name: name.to_string(),
            action: if exists { "removed" } else { "absent" },
            changed: vec![],
        });
        Ok(())
    };
    for name in m.functions.keys() {
        remove("function", name, format!("/v1/functions/{name}"))?;
    }
    for name in m.runtimes.keys() {
        remove("runtime", name, format!("/v1/runtimes/{name}"))?;
    }
    for (name, p) in &m.packages {
        let r = match &p.version {
            Some(v) => format!("{name}@{v}"),
            None => name.clone(),
        };
        remove("package", &r, format!("/v1/packages/{r}"))?;
    }
    if a.volumes {
        for v in &m.volumes {
            let exists = api
                .get::<Vec<VolumeInfo>>("/v1/volumes")?
                .iter()
                .any(|x| &x.name == v);
            if exists && !a.dry_run {
                api.delete_json(&format!("/v1/volumes/{v}"))
                    .with_context(|| format!("removing volume {v}"))?;
            }
            out.push(Item {
                kind: "volume",
                name: v.clone(),
                action: if exists { "removed" } else { "absent" },
                changed: vec![],
            });
        }
    }
    finish(fmt, &a.file, a.dry_run, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(labels: &[(&str, &str)], resources: Resources) -> RuntimeInfo {
        let mut config = strata_types::ImageConfig::default();
        for (k, v) in labels {
            config.labels.insert(k.to_string(), v.to_string());
        }
        serde_json::from_value(serde_json::json!({
            "name": "r", "version": 2, "base": "debian", "layers": [], "size_bytes": 0,
            "config": config, "resources": resources,
            "dockerfile_digest": Digest::from_bytes(&[0; 32]), "created_at": "now",
        }))
        .expect("runtime info")
    }

    #[test]
    fn dockerfile_runtimes_compare_their_input_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile"), "FROM debian\nRUN true\n").expect("write");
        std::fs::create_dir(dir.path().join("ctx")).expect("mkdir");
        std::fs::write(dir.path().join("ctx/a"), "a").expect("write");
        let args: BTreeMap<String, String> = [("V".to_string(), "1".to_string())].into();
        let inputs =
            dockerfile_inputs(dir.path(), "Dockerfile", Some("ctx"), &args).expect("inputs");
        assert!(inputs.dockerfile.starts_with("FROM debian\nRUN true\n"));
        assert!(inputs
            .dockerfile
            .contains(&format!("{LABEL_CONTEXT}=\"sha256:")));
        let labels: Vec<(&str, String)> =
            inputs.labels.iter().map(|(k, v)| (*k, v.clone())).collect();
        let as_built: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let built = runtime(&as_built, Resources::platform_default());
        assert!(dockerfile_changes(&built, &inputs, &Resources::default()).is_empty());

        // The context changed; the Dockerfile did not.
        std::fs::write(dir.path().join("ctx/a"), "b").expect("write");
        let again =
            dockerfile_inputs(dir.path(), "Dockerfile", Some("ctx"), &args).expect("inputs");
        assert_eq!(
            dockerfile_changes(&built, &again, &Resources::default()),
            vec!["context"]
        );
        // Resources are compared with the platform's defaults filled in.
        let more = Resources {
            memory_bytes: Some(1 << 30),
            ..Default::default()
        };
        assert_eq!(
            dockerfile_changes(&built, &again, &more),
            vec!["context", "resources"]
        );
        // A runtime made without a manifest has no labels: everything counts as changed.
        let plain = runtime(&[], Resources::platform_default());
        assert_eq!(
            dockerfile_changes(&plain, &inputs, &Resources::default()),
            vec!["dockerfile", "context", "build_args"]
        );
    }
}
