//! Golden tests: every `tests/fixtures/<case>/Dockerfile` (with an optional `build-args.json`) is
//! parsed and planned. A case named `err-*` must fail, and its error (Display, then kind) must
//! equal `expected.txt`; any other case must plan, and its pretty JSON must equal
//! `expected.json`. With `UPDATE_GOLDEN=1` the expected files are written instead; review them
//! before checking them in.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use strata_dockerfile::{parse, plan};
use strata_types::ImageConfig;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The images and runtimes the golden builds know about.
fn resolve(name: &str) -> Option<ImageConfig> {
    let mut config = ImageConfig::default();
    config.set_env("PATH", PATH);
    match name {
        "debian-bookworm" => {}
        "python3" => {
            config.set_env("PYTHONUNBUFFERED", "1");
            config.cmd = Some(vec!["python3".to_string()]);
        }
        _ => return None,
    }
    Some(config)
}

fn run_case(dir: &Path) -> Result<(&'static str, String), String> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let text =
        fs::read_to_string(dir.join("Dockerfile")).map_err(|e| format!("Dockerfile: {e}"))?;
    let args_path = dir.join("build-args.json");
    let build_args: BTreeMap<String, String> = match fs::read_to_string(&args_path) {
        Ok(json) => serde_json::from_str(&json).map_err(|e| format!("build-args.json: {e}"))?,
        Err(_) => BTreeMap::new(),
    };
    let result = parse(&text).and_then(|df| plan(&df, &build_args, &resolve));
    match (name.starts_with("err-"), result) {
        (false, Ok(plan)) => {
            let json = serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?;
            Ok(("expected.json", json + "\n"))
        }
        (true, Err(e)) => Ok(("expected.txt", format!("{e}\nkind: {}\n", e.kind()))),
        (false, Err(e)) => Err(format!("unexpected error: {e}")),
        (true, Ok(_)) => Err("planned, but an err-* case must fail".to_string()),
    }
}

#[test]
fn golden() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut cases: Vec<_> = fs::read_dir(&root)
        .expect("tests/fixtures exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "expected the golden cases, found {}",
        cases.len()
    );

    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let (file, actual) = match run_case(dir) {
            Ok(output) => output,
            Err(message) => {
                failures.push(format!("{name}: {message}"));
                continue;
            }
        };
        let path = dir.join(file);
        if update {
            fs::write(&path, &actual).expect("write expected file");
            continue;
        }
        match fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: {file} differs\n--- expected\n{expected}\n--- actual\n{actual}"
            )),
            Err(_) => failures.push(format!(
                "{name}: {file} is missing (run with UPDATE_GOLDEN=1 and review it)\n{actual}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
