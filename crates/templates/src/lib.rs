//! Starter projects for Strata functions: code that runs on a built-in runtime plus the
//! `strata.toml` that deploys it.
//!
//! This crate owns the template set and its rendering: [`list`] names the templates,
//! [`render`] turns one into files (relative path and bytes) for a given function name. The CLI
//! (`strata fn init`) writes them to disk; the web console offers the same set. It does no I/O
//! and knows nothing of HTTP or the server: a template is data compiled into the binary.
//!
//! Every template lays out the same way: `strata.toml` at the top, the function's code in
//! `src/` (the manifest's `code = "src"`, so the manifest itself is not uploaded), and for
//! event-driven templates a sample `event.json` to invoke it with.

/// One starter project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// The name `strata fn init --template` takes, e.g. `python-http`.
    pub name: &'static str,
    /// One line for people.
    pub description: &'static str,
    /// The built-in runtime it runs on (`python3` or `nodejs`).
    pub runtime: &'static str,
    /// The handler its `strata.toml` sets.
    pub handler: &'static str,
    /// Whether it answers HTTP through the function's trigger (`/fn/NAME/...`) rather than
    /// plain invocations.
    pub http: bool,
    files: &'static [(&'static str, &'static str)],
}

impl Template {
    /// The paths the template writes, relative to the project directory.
    pub fn paths(&self) -> impl Iterator<Item = &'static str> {
        self.files.iter().map(|(p, _)| *p)
    }
}

macro_rules! file {
    ($template:literal, $path:literal) => {
        (
            $path,
            include_str!(concat!("../files/", $template, "/", $path)),
        )
    };
}

const TEMPLATES: &[Template] = &[
    Template {
        name: "python-hello",
        description: "Python function returning a greeting for {\"name\": ...}",
        runtime: "python3",
        handler: "app.handler",
        http: false,
        files: &[
            file!("python-hello", "strata.toml"),
            file!("python-hello", "src/app.py"),
            file!("python-hello", "event.json"),
        ],
    },
    Template {
        name: "python-http",
        description: "Python HTTP endpoint: payload 2.0 event in, statusCode/headers/body out",
        runtime: "python3",
        handler: "app.handler",
        http: true,
        files: &[
            file!("python-http", "strata.toml"),
            file!("python-http", "src/app.py"),
        ],
    },
    Template {
        name: "python-json-transform",
        description: "Python data function validating and summarizing a JSON order",
        runtime: "python3",
        handler: "transform.handler",
        http: false,
        files: &[
            file!("python-json-transform", "strata.toml"),
            file!("python-json-transform", "src/transform.py"),
            file!("python-json-transform", "event.json"),
        ],
    },
    Template {
        name: "node-hello",
        description: "Node.js function returning a greeting for {\"name\": ...}",
        runtime: "nodejs",
        handler: "index.handler",
        http: false,
        files: &[
            file!("node-hello", "strata.toml"),
            file!("node-hello", "src/index.js"),
            file!("node-hello", "event.json"),
        ],
    },
    Template {
        name: "node-http",
        description: "Node.js HTTP endpoint: payload 2.0 event in, statusCode/headers/body out",
        runtime: "nodejs",
        handler: "index.handler",
        http: true,
        files: &[
            file!("node-http", "strata.toml"),
            file!("node-http", "src/index.js"),
        ],
    },
];

/// Every template, in a stable order.
pub fn list() -> &'static [Template] {
    TEMPLATES
}

/// The template called `name`.
pub fn get(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// Why a template cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No template has that name.
    #[error("unknown template {name:?}; available: {}", names().join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// The function name breaks the naming rule.
    #[error(transparent)]
    Name(#[from] strata_types::NameError),
}

fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|t| t.name).collect()
}

/// Renders template `template` for a function called `function_name`: the files of the project
/// as (relative path, content), `strata.toml` first. `{{name}}` in a file becomes the function
/// name and `{{key}}` its form as a TOML key (quoted when it holds a `.`).
pub fn render(
    template: &str,
    function_name: &str,
) -> Result<Vec<(String, Vec<u8>)>, TemplateError> {
    let t = get(template).ok_or_else(|| TemplateError::Unknown {
        name: template.to_string(),
    })?;
    strata_types::validate_name(function_name)?;
    let key = toml_key(function_name);
    Ok(t.files
        .iter()
        .map(|(path, text)| {
            let text = text
                .replace("{{key}}", &key)
                .replace("{{name}}", function_name);
            (path.to_string(), text.into_bytes())
        })
        .collect())
}

/// A valid function name as a TOML key: bare when it can be, else quoted (names never hold
/// quotes or backslashes).
fn toml_key(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_string()
    } else {
        format!("\"{name}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_promised_templates_exist() {
        for name in [
            "python-hello",
            "python-http",
            "node-hello",
            "node-http",
            "python-json-transform",
        ] {
            assert!(get(name).is_some(), "{name}");
        }
        let mut seen = std::collections::HashSet::new();
        for t in list() {
            assert!(seen.insert(t.name), "duplicate {}", t.name);
            assert!(matches!(t.runtime, "python3" | "nodejs"), "{}", t.name);
            assert_eq!(t.paths().next(), Some("strata.toml"), "{}", t.name);
        }
    }

    #[test]
    fn renders_a_manifest_that_parses_and_matches_the_code() {
        for t in list() {
            let files = render(t.name, "my-fn").expect("renders");
            let (path, toml) = &files[0];
            assert_eq!(path, "strata.toml");
            let text = String::from_utf8(toml.clone()).expect("utf8");
            assert!(!text.contains("{{"), "{}: unrendered placeholder", t.name);
            let m = strata_manifest::Manifest::parse("strata.toml", &text)
                .unwrap_or_else(|e| panic!("{}: {e}", t.name));
            let f = m.functions.get("my-fn").expect("the function is described");
            assert_eq!(f.config.runtime, t.runtime, "{}", t.name);
            assert_eq!(f.config.handler, t.handler, "{}", t.name);
            assert_eq!(f.config.routes.is_empty(), !t.http, "{}", t.name);
            // The handler's module is one of the files under the code directory.
            let code = match &f.code {
                strata_manifest::CodeSpec::Dir(d) => d.clone(),
                other => panic!("{}: {other:?}", t.name),
            };
            let module = t.handler.split('.').next().expect("module");
            let ext = if t.runtime == "python3" { "py" } else { "js" };
            let want = format!("{code}/{module}.{ext}");
            assert!(
                files.iter().any(|(p, _)| *p == want),
                "{}: no {want}",
                t.name
            );
        }
    }

    #[test]
    fn names_become_keys() {
        let files = render("python-hello", "a.b").expect("renders");
        let text = String::from_utf8(files[0].1.clone()).expect("utf8");
        assert!(text.contains("[functions.\"a.b\"]"), "{text}");
        let m = strata_manifest::Manifest::parse("strata.toml", &text).expect("parses");
        assert!(m.functions.contains_key("a.b"));
    }

    #[test]
    fn bad_input_is_refused_with_the_choices() {
        let e = render("cobol-hello", "x").expect_err("unknown");
        assert!(e.to_string().contains("python-hello"), "{e}");
        assert!(e.to_string().contains("node-http"), "{e}");
        assert!(matches!(
            render("python-hello", "Bad Name"),
            Err(TemplateError::Name(_))
        ));
    }
}
