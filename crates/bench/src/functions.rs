//! The measurement for one language: deploy N fresh functions, invoke each once while it has no
//! instance (cold), then time sequential invocations of one warm function next to sequential
//! health checks on the same connection (the HTTP floor). Every function deployed here is removed
//! before [`measure`] returns.

use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;
use strata_types::api::{CreateFunctionSpec, FunctionConfig};

use crate::client::Strata;

/// The event every invocation sends, and the result the hello handlers answer it with.
pub(crate) const EVENT: &[u8] = br#"{"name":"bench"}"#;

/// A language the benchmark deploys a hello function in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// The built-in `python3` runtime.
    Python,
    /// The built-in `nodejs` runtime.
    Node,
}

impl FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Lang, String> {
        match s {
            "python" | "python3" => Ok(Lang::Python),
            "node" | "nodejs" => Ok(Lang::Node),
            _ => Err(format!("unknown language {s:?}: expected python or node")),
        }
    }
}

impl Lang {
    /// The runtime the function runs on.
    pub fn runtime(self) -> &'static str {
        match self {
            Lang::Python => "python3",
            Lang::Node => "nodejs",
        }
    }

    /// The function's handler.
    pub fn handler(self) -> &'static str {
        match self {
            Lang::Python => "app.handler",
            Lang::Node => "index.handler",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Lang::Python => "py",
            Lang::Node => "node",
        }
    }

    /// The code file: its name and its text. The comment naming the function makes every
    /// function's code distinct, so no deploy finds its code already stored by another.
    fn source(self, function: &str) -> (&'static str, String) {
        match self {
            Lang::Python => (
                "app.py",
                format!(
                    "# strata-bench {function}\n\
                     def handler(event, context):\n    return {{\"hello\": event.get(\"name\", \"world\")}}\n"
                ),
            ),
            Lang::Node => (
                "index.js",
                format!(
                    "// strata-bench {function}\n\
                     exports.handler = async (event) => ({{ hello: event.name || \"world\" }});\n"
                ),
            ),
        }
    }
}

/// How much to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Plan {
    /// Fresh functions deployed (and cold-invoked) per language.
    pub functions: usize,
    /// Timed sequential warm invocations (and as many health checks).
    pub warm: usize,
    /// Untimed requests before each warm loop.
    pub warmup: usize,
}

/// Raw samples of one language, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Samples {
    /// The language.
    pub lang: Lang,
    /// Its runtime.
    pub runtime: &'static str,
    /// Its handler.
    pub handler: &'static str,
    /// `POST /v1/functions`, one per fresh function.
    pub deploy_ms: Vec<f64>,
    /// The first invocation of each fresh function.
    pub cold_ms: Vec<f64>,
    /// First invocations whose `x-strata-cold-start` header was not `true`.
    pub cold_header_mismatches: usize,
    /// Sequential invocations of one warm function.
    pub warm_ms: Vec<f64>,
    /// Wall time of the whole warm loop, seconds.
    pub warm_loop_s: f64,
    /// Warm invocations whose `x-strata-cold-start` header was not `false`.
    pub warm_header_mismatches: usize,
    /// Sequential `GET /v1/health` on the same client.
    pub baseline_ms: Vec<f64>,
    /// Wall time of the whole baseline loop, seconds.
    pub baseline_loop_s: f64,
}

/// Measures one language, then removes every function it deployed. `run_id` keeps the names of
/// concurrent or leftover runs apart.
pub fn measure(strata: &Strata, lang: Lang, plan: Plan, run_id: &str) -> anyhow::Result<Samples> {
    let mut created = Vec::new();
    let outcome = measure_inner(strata, lang, plan, run_id, &mut created);
    let mut cleanup = Ok(());
    for name in &created {
        if let Err(e) = strata.delete_function(name) {
            eprintln!("warning: {e:#}");
            cleanup = Err(e);
        }
    }
    eprintln!("    removed {} functions", created.len());
    let samples = outcome?;
    cleanup.context("removing the benchmark's functions")?;
    Ok(samples)
}

fn measure_inner(
    strata: &Strata,
    lang: Lang,
    plan: Plan,
    run_id: &str,
    created: &mut Vec<String>,
) -> anyhow::Result<Samples> {
    if plan.functions == 0 || plan.warm == 0 {
        bail!("--functions and --warm must be at least 1");
    }
    let mut s = Samples {
        lang,
        runtime: lang.runtime(),
        handler: lang.handler(),
        deploy_ms: Vec::with_capacity(plan.functions),
        cold_ms: Vec::with_capacity(plan.functions),
        cold_header_mismatches: 0,
        warm_ms: Vec::with_capacity(plan.warm),
        warm_loop_s: 0.0,
        warm_header_mismatches: 0,
        baseline_ms: Vec::with_capacity(plan.warm),
        baseline_loop_s: 0.0,
    };

    // Deploy, then at once invoke: the first invocation proves the function is invocable right
    // after its deploy answered, and is cold because nothing has started an instance of it.
    for i in 0..plan.functions {
        let name = format!("bench-{}-{run_id}-{i}", lang.short());
        let spec = CreateFunctionSpec {
            name: name.clone(),
            config: FunctionConfig {
                runtime: lang.runtime().into(),
                handler: lang.handler().into(),
                ..FunctionConfig::default()
            },
        };
        let code = code_tar(lang, &name)?;

        let t = Instant::now();
        let deployed = strata.create_function(&spec, code);
        let deploy = ms(t);
        deployed?;
        created.push(name.clone());

        let t = Instant::now();
        let first = strata.invoke(&name, EVENT);
        let cold = ms(t);
        let first =
            first.with_context(|| format!("the first invocation after deploying {name}"))?;
        check_result(&name, &first.body)?;
        if first.cold != Some(true) {
            s.cold_header_mismatches += 1;
        }
        s.deploy_ms.push(deploy);
        s.cold_ms.push(cold);
        if (i + 1) % 10 == 0 || i + 1 == plan.functions {
            eprintln!("    deployed and cold-invoked {}/{}", i + 1, plan.functions);
        }
    }

    // Warm: the first function's instance is idle and ready.
    let warm_fn = created[0].clone();
    for _ in 0..plan.warmup {
        strata.health()?;
        let r = strata.invoke(&warm_fn, EVENT)?;
        check_result(&warm_fn, &r.body)?;
    }

    let loop_start = Instant::now();
    for _ in 0..plan.warm {
        let t = Instant::now();
        strata.health()?;
        s.baseline_ms.push(ms(t));
    }
    s.baseline_loop_s = loop_start.elapsed().as_secs_f64();
    eprintln!("    {} health checks", plan.warm);

    let mut results = Vec::with_capacity(plan.warm);
    let loop_start = Instant::now();
    for _ in 0..plan.warm {
        let t = Instant::now();
        let r = strata.invoke(&warm_fn, EVENT)?;
        s.warm_ms.push(ms(t));
        results.push(r);
    }
    s.warm_loop_s = loop_start.elapsed().as_secs_f64();
    for r in &results {
        check_result(&warm_fn, &r.body)?;
        if r.cold != Some(false) {
            s.warm_header_mismatches += 1;
        }
    }
    eprintln!("    {} warm invocations", plan.warm);
    Ok(s)
}

/// Milliseconds since `t`.
pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The hello handlers answer `{"name": "bench"}` with `{"hello": "bench"}`.
pub(crate) fn check_result(function: &str, body: &[u8]) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_slice(body).with_context(|| {
        format!(
            "function {function} answered with non-JSON: {}",
            String::from_utf8_lossy(body)
        )
    })?;
    if v != serde_json::json!({ "hello": "bench" }) {
        bail!("function {function} answered {v}, expected {{\"hello\":\"bench\"}}");
    }
    Ok(())
}

/// A tar holding the hello function's one code file.
pub fn code_tar(lang: Lang, function: &str) -> anyhow::Result<Vec<u8>> {
    let (file, text) = lang.source(function);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut header, file, text.as_bytes())
        .context("packing the function's code")?;
    b.into_inner().context("packing the function's code")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn languages_parse_by_name_and_runtime() {
        assert_eq!("python".parse(), Ok(Lang::Python));
        assert_eq!("nodejs".parse(), Ok(Lang::Node));
        assert!("ruby".parse::<Lang>().is_err());
    }

    #[test]
    fn code_tar_holds_the_handler_file_named_by_the_handler() {
        for lang in [Lang::Python, Lang::Node] {
            let tar = code_tar(lang, "bench-x-1").expect("packs");
            let mut a = tar::Archive::new(tar.as_slice());
            let mut entries: Vec<(String, String)> = Vec::new();
            for e in a.entries().expect("entries") {
                let mut e = e.expect("entry");
                let path = e.path().expect("path").to_string_lossy().into_owned();
                let mut text = String::new();
                e.read_to_string(&mut text).expect("text");
                entries.push((path, text));
            }
            assert_eq!(entries.len(), 1);
            let (path, text) = &entries[0];
            // `app.handler` lives in app.py, `index.handler` in index.js.
            let module = lang.handler().split('.').next().expect("module");
            assert!(path.starts_with(&format!("{module}.")), "{path}");
            assert!(text.contains("bench-x-1"), "code is distinct per function");
            assert!(text.contains("hello"));
        }
    }

    #[test]
    fn results_are_checked() {
        assert!(check_result("f", br#"{"hello":"bench"}"#).is_ok());
        assert!(check_result("f", br#"{"hello":"world"}"#).is_err());
        assert!(check_result("f", b"oops").is_err());
    }
}
