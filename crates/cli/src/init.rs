//! `strata fn init` and `strata fn templates`: starter projects from `strata-templates`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::Format;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Function name (also the project directory's name unless --dir is given).
    pub name: String,
    /// Template (see `strata fn templates`).
    #[arg(short = 't', long, default_value = "python-hello")]
    pub template: String,
    /// Directory to write the project to (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Serialize)]
struct Written {
    name: String,
    template: String,
    dir: String,
    files: Vec<String>,
}

pub fn init(fmt: Format, a: InitArgs) -> anyhow::Result<ExitCode> {
    let files = strata_templates::render(&a.template, &a.name)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot write template {}", a.template))?;
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from(&a.name));
    if !a.force {
        let existing: Vec<String> = files
            .iter()
            .filter(|(p, _)| dir.join(p).exists())
            .map(|(p, _)| dir.join(p).display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist{}: choose another --dir, or pass --force to overwrite",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" }
            );
        }
    }
    for (rel, bytes) in &files {
        write_file(&dir, rel, bytes)?;
    }
    let out = Written {
        name: a.name.clone(),
        template: a.template.clone(),
        dir: dir.display().to_string(),
        files: files.iter().map(|(p, _)| p.clone()).collect(),
    };
    crate::commands::print(fmt, &out, |w| {
        let mut s = format!(
            "wrote {} from template {} in {}:\n",
            w.name, w.template, w.dir
        );
        for f in &w.files {
            s.push_str(&format!("  {f}\n"));
        }
        s.push_str(&format!(
            "next: cd {} && strata up && strata invoke {}{}\n",
            w.dir,
            w.name,
            if w.files.iter().any(|f| f == "event.json") {
                " -d - < event.json"
            } else {
                ""
            }
        ));
        s
    })
}

fn write_file(dir: &Path, rel: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[derive(Serialize)]
struct TemplateRow {
    name: &'static str,
    runtime: &'static str,
    handler: &'static str,
    http: bool,
    description: &'static str,
}

pub fn templates(fmt: Format) -> anyhow::Result<ExitCode> {
    let rows: Vec<TemplateRow> = strata_templates::list()
        .iter()
        .map(|t| TemplateRow {
            name: t.name,
            runtime: t.runtime,
            handler: t.handler,
            http: t.http,
            description: t.description,
        })
        .collect();
    crate::commands::print(fmt, &rows, |rows| {
        let mut table = vec![vec![
            "NAME".to_string(),
            "RUNTIME".into(),
            "TRIGGER".into(),
            "DESCRIPTION".into(),
        ]];
        for r in rows {
            table.push(vec![
                r.name.into(),
                r.runtime.into(),
                if r.http { "http" } else { "invoke" }.into(),
                r.description.into(),
            ]);
        }
        crate::output::table(&table)
    })
}
