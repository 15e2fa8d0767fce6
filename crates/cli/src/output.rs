//! Rendering results and progress for people.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use strata_types::api::{Event, ImageInfo, LayerInfo, RuntimeInfo, Stream};
use strata_types::format_bytes;

/// Shows progress events on stderr: a progress bar on a terminal, plain lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Print command output to stdout/stderr as-is (for `runtime run`).
    raw_output: bool,
}

impl Progress {
    pub fn new(raw_output: bool) -> Progress {
        Progress {
            bar: None,
            raw_output,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub fn event(&mut self, e: &Event) {
        match e {
            Event::Progress {
                message,
                current,
                total,
            } => {
                let text = match (current, total) {
                    (Some(c), Some(t)) => format!("==> [{c}/{t}] {message}"),
                    _ => format!("==> {message}"),
                };
                // Countable progress (layers imported, packages built) drives a bar on a
                // terminal; the line is printed too, so the log stays the same either way.
                if let (Some(c), Some(t), true) = (current, total, std::io::stderr().is_terminal())
                {
                    let bar = self.bar.get_or_insert_with(|| new_bar(*t));
                    bar.set_length(*t);
                    bar.set_position(*c);
                    bar.set_message(message.clone());
                }
                self.line(&text);
            }
            Event::Step {
                index,
                total,
                instruction,
                cached,
                ..
            } => {
                let first_line = instruction.lines().next().unwrap_or_default();
                let text = format!(
                    "[{index}/{total}] {first_line}{}",
                    if *cached { "  (cached)" } else { "" }
                );
                if std::io::stderr().is_terminal() {
                    let bar = self.bar.get_or_insert_with(|| new_bar(*total as u64));
                    bar.set_length(*total as u64);
                    bar.set_position(*index as u64);
                    bar.set_message(first_line.to_string());
                }
                self.line(&text);
            }
            Event::Output { stream, line } => {
                if self.raw_output {
                    match stream {
                        Stream::Stdout => println!("{line}"),
                        Stream::Stderr => eprintln!("{line}"),
                    }
                } else {
                    self.line(&format!("    {line}"));
                }
            }
            Event::Done { .. } | Event::Error { .. } => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// A progress bar on stderr with a spinner, position, elapsed time and message.
fn new_bar(len: u64) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.enable_steady_tick(std::time::Duration::from_millis(120));
    b
}

pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn images(list: &[ImageInfo]) -> String {
    let mut rows = vec![vec![
        "NAME".into(),
        "LAYERS".into(),
        "SIZE".into(),
        "SOURCE".into(),
        "USED BY".into(),
        "CREATED".into(),
    ]];
    for i in list {
        rows.push(vec![
            i.name.clone(),
            i.layers.len().to_string(),
            format_bytes(i.size_bytes),
            i.source.clone(),
            i.used_by.len().to_string(),
            i.created_at.clone(),
        ]);
    }
    table(&rows)
}

fn layers(list: &[LayerInfo]) -> String {
    let mut rows = vec![vec![
        "  DIGEST".into(),
        "SIZE".into(),
        "ENTRIES".into(),
        "SHARED BY".into(),
        "CREATED BY".into(),
    ]];
    for l in list {
        rows.push(vec![
            format!("  {}", l.digest.short()),
            format_bytes(l.size_bytes),
            l.entries.to_string(),
            l.shared_by.to_string(),
            l.created_by
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(70)
                .collect(),
        ]);
    }
    table(&rows)
}

fn config(c: &strata_types::ImageConfig) -> String {
    let mut s = String::new();
    for (k, v) in &c.env {
        s.push_str(&format!("  env         {k}={v}\n"));
    }
    if !c.workdir.is_empty() {
        s.push_str(&format!("  workdir     {}\n", c.workdir));
    }
    if !c.user.is_empty() {
        s.push_str(&format!("  user        {}\n", c.user));
    }
    if let Some(e) = &c.entrypoint {
        s.push_str(&format!(
            "  entrypoint  {}\n",
            serde_json::to_string(e).unwrap_or_default()
        ));
    }
    if let Some(cmd) = &c.cmd {
        s.push_str(&format!(
            "  cmd         {}\n",
            serde_json::to_string(cmd).unwrap_or_default()
        ));
    }
    for (k, v) in &c.labels {
        s.push_str(&format!("  label       {k}={v}\n"));
    }
    if !c.exposed_ports.is_empty() {
        s.push_str(&format!("  expose      {}\n", c.exposed_ports.join(" ")));
    }
    s
}

pub fn image(i: &ImageInfo) -> String {
    format!(
        "name:     {}\nsource:   {}\nsize:     {}\ncreated:  {}\nused by:  {}\nconfig:\n{}layers:\n{}",
        i.name,
        i.source,
        format_bytes(i.size_bytes),
        i.created_at,
        if i.used_by.is_empty() { "-".into() } else { i.used_by.join(", ") },
        config(&i.config),
        layers(&i.layers)
    )
}

pub fn runtimes(list: &[RuntimeInfo]) -> String {
    let mut rows = vec![vec![
        "NAME".into(),
        "VERSION".into(),
        "BASE".into(),
        "LAYERS".into(),
        "SIZE".into(),
        "MEMORY".into(),
        "CPU".into(),
        "TIMEOUT".into(),
        "CREATED".into(),
    ]];
    for r in list {
        let res = &r.resources;
        rows.push(vec![
            r.name.clone(),
            r.version.to_string(),
            r.base.clone(),
            r.layers.len().to_string(),
            format_bytes(r.size_bytes),
            res.memory_bytes
                .map(format_bytes)
                .unwrap_or_else(|| "-".into()),
            res.cpu_millis
                .map(|m| format!("{}", m as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            res.timeout_ms
                .map(|t| format!("{}s", t as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            r.created_at.clone(),
        ]);
    }
    table(&rows)
}

pub fn runtime(r: &RuntimeInfo) -> String {
    let res = &r.resources;
    format!(
        "name:       {}@{}\nbase:       {}\nsize:       {}\ncreated:    {}\ndockerfile: {}\nresources:\n  memory      {}\n  cpu         {}\n  timeout     {}\nconfig:\n{}layers:\n{}",
        r.name,
        r.version,
        r.base,
        format_bytes(r.size_bytes),
        r.created_at,
        r.dockerfile_digest,
        res.memory_bytes.map(format_bytes).unwrap_or_else(|| "-".into()),
        res.cpu_millis.map(|m| format!("{}", m as f64 / 1000.0)).unwrap_or_else(|| "-".into()),
        res.timeout_ms.map(|t| format!("{}s", t as f64 / 1000.0)).unwrap_or_else(|| "-".into()),
        config(&r.config),
        layers(&r.layers)
    ) + &crate::packages::runtime_packages(r)
}
