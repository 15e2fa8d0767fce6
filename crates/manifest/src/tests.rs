use super::*;

const FULL: &str = r#"
volumes = ["data"]

[project]
name = "shop"

[functions.hello]
runtime = "python3"
handler = "app.handler"
code = "src"
network = true
public = true
env = { GREETING = "hi", FROM_ENV = "${SHOP_GREETING}" }
secret_env = { TOKEN = "${SHOP_TOKEN}" }
volumes = ["data:/mnt/data"]

[functions.hello.resources]
memory = "128Mi"
cpu = 0.5
timeout = "10s"

[functions.hello.scaling]
min_instances = 1
max_instances = 4
concurrency = 2
idle_timeout = "1m"
max_queue = 50

[[functions.hello.routes]]
path = "/items"
methods = ["get", "POST"]

[functions.fromgit]
runtime = "api"
handler = "index.handler"
git = { url = "https://example.com/r.git", ref = "v1", subdir = "fn" }

[runtimes.api]
dockerfile = "runtime/Dockerfile"
context = "runtime"
build_args = { VERSION = "3" }
resources = { memory = "256Mi" }
"#;

fn errors(text: &str) -> Vec<String> {
    match Manifest::parse("strata.toml", text) {
        Ok(_) => panic!("should not parse:\n{text}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_full_manifest() {
    let m = Manifest::parse("strata.toml", FULL).expect("parses");
    assert_eq!(m.project.as_deref(), Some("shop"));
    assert_eq!(m.volumes, vec!["data"]);
    let f = &m.functions["hello"];
    assert_eq!(f.code, CodeSpec::Dir("src".into()));
    let c = &f.config;
    assert_eq!(c.runtime, "python3");
    assert_eq!(c.resources.memory_bytes, Some(128 << 20));
    assert_eq!(c.resources.cpu_millis, Some(500));
    assert_eq!(c.resources.timeout_ms, Some(10_000));
    assert!(c.network && c.public);
    assert_eq!(c.volumes[0].path, "/mnt/data");
    assert_eq!(c.scaling.min_instances, 1);
    assert_eq!(c.scaling.idle_timeout_ms, Some(60_000));
    assert_eq!(
        c.routes[0].methods,
        vec!["GET", "POST"],
        "methods are upper-cased"
    );
    assert_eq!(
        m.functions["fromgit"].code,
        CodeSpec::Git(GitSource {
            url: "https://example.com/r.git".into(),
            reference: Some("v1".into()),
            subdir: Some("fn".into()),
        })
    );
    assert_eq!(
        m.runtimes["api"].source,
        RuntimeSource::Dockerfile {
            dockerfile: "runtime/Dockerfile".into(),
            context: Some("runtime".into()),
            build_args: [("VERSION".to_string(), "3".to_string())].into(),
        }
    );
    assert_eq!(m.runtimes["api"].resources.memory_bytes, Some(256 << 20));

    // ${VAR} values come from the environment of the command, at their key when unset.
    let lookup = |k: &str| (k == "SHOP_TOKEN").then(|| "t0k".to_string());
    let e = m
        .function_config("hello", &lookup)
        .expect_err("SHOP_GREETING unset");
    assert_eq!(e.0.len(), 1);
    let text = e.to_string();
    assert!(
        text.starts_with("strata.toml:13:")
            && text.contains("functions.hello.env.FROM_ENV: ${SHOP_GREETING} is not set"),
        "{text}"
    );
    let all = |k: &str| Some(format!("v-{k}"));
    let c = m.function_config("hello", &all).expect("resolved");
    assert_eq!(c.env["FROM_ENV"], "v-SHOP_GREETING");
    assert_eq!(c.env["GREETING"], "hi");
    assert_eq!(c.secret_env["TOKEN"], "v-SHOP_TOKEN");
}

#[test]
fn unknown_keys_name_the_key_path_and_the_choices() {
    let e = errors(
        "[functions.hello]\nruntime = \"python3\"\nhandler = \"app.handler\"\ncode = \".\"\n\n[functions.hello.resources]\nmemry = \"1Gi\"\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("strata.toml:7:1: functions.hello.resources.memry: unknown field `memry`, expected one of `memory`, `cpu`, `timeout`"),
        "{}",
        e[0]
    );
    let e = errors(
        "[functions.hello]\nruntime = \"python3\"\nhandler = \"h.h\"\ncode = \".\"\ncpu = 1\n",
    );
    assert!(
        e[0].starts_with("strata.toml:5:1: functions.hello.cpu: unknown field `cpu`"),
        "{}",
        e[0]
    );
    let e = errors("[function.hello]\n");
    assert!(
        e[0].contains("function: unknown field `function`, expected one of"),
        "{}",
        e[0]
    );
}

#[test]
fn wrong_types_and_missing_keys() {
    let e = errors("[functions.hello]\nruntime = \"python3\"\nhandler = \"h.h\"\ncode = \".\"\nnetwork = \"yes\"\n");
    assert!(
        e[0].starts_with("strata.toml:5:11: functions.hello.network: invalid type: string \"yes\", expected a boolean"),
        "{}",
        e[0]
    );
    let e = errors("[functions.hello]\nruntime = \"python3\"\ncode = \".\"\n");
    assert!(
        e[0].contains("functions.hello: missing field `handler`"),
        "{}",
        e[0]
    );
    let e = errors("[functions.hello]\nruntime = \"python3\"\nhandler = \"h.h\"\n");
    assert!(
        e[0].starts_with("strata.toml:1:12: functions.hello: missing code: set code = \"DIR\""),
        "{}",
        e[0]
    );
    let e = errors("[functions.hello]\nruntime = \"python3\"\nhandler = [\"h\"]\ncode = \".\"\n");
    assert!(
        e[0].contains("functions.hello.handler: invalid type: sequence"),
        "{}",
        e[0]
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let e = errors("[functions.hello]\nruntime = python3\n");
    assert!(e[0].starts_with("strata.toml:2:"), "{}", e[0]);
}

#[test]
fn every_bad_value_is_reported_at_its_key() {
    let text = r#"[functions.Hello]
runtime = "py thon"
handler = ""
code = "."

[functions.Hello.resources]
memory = "12x"
cpu = "lots"
timeout = "forever"

[functions.Hello.env]
"1BAD" = "x"
STRATA_X = "y"

[functions.Hello.scaling]
min_instances = 5
max_instances = 2
concurrency = 0

[[functions.Hello.routes]]
path = "items"

[[functions.Hello.routes]]
path = "/ok"
methods = ["FETCH"]
"#;
    let e = errors(text);
    let expect = [
        "strata.toml:1:12: functions.Hello: invalid name \"Hello\"",
        "strata.toml:2:11: functions.Hello.runtime: invalid name \"py thon\"",
        "strata.toml:3:11: functions.Hello.handler: expected 1-256 characters",
        "strata.toml:7:10: functions.Hello.resources.memory: invalid memory \"12x\": expected a size such as 128Mi",
        "strata.toml:8:7: functions.Hello.resources.cpu: invalid cpu \"lots\"",
        "strata.toml:9:11: functions.Hello.resources.timeout: invalid duration \"forever\"",
        "strata.toml:12:10: functions.Hello.env.1BAD: invalid environment variable name",
        "strata.toml:13:12: functions.Hello.env.STRATA_X: this variable is reserved",
        "strata.toml:16:17: functions.Hello.scaling.min_instances: expected at most max_instances (2)",
        "strata.toml:18:15: functions.Hello.scaling.concurrency: expected 1-64",
        "strata.toml:21:8: functions.Hello.routes[0].path: route path \"items\" must be an absolute path prefix",
        "strata.toml:25:11: functions.Hello.routes[1].methods: route method \"FETCH\" must be one of GET",
    ];
    assert_eq!(e.len(), expect.len(), "{e:#?}");
    for (got, want) in e.iter().zip(expect) {
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
    }
}

#[test]
fn alternatives_and_empty_files() {
    let e = errors("[functions.a]\nruntime = \"python3\"\nhandler = \"h.h\"\ncode = \".\"\ngit = { url = \"https://h/r\" }\n");
    assert!(
        e[0].contains("functions.a.git: code and git are alternatives"),
        "{}",
        e[0]
    );
    let e = errors("# nothing\n");
    assert_eq!(e, vec!["strata.toml: the manifest describes nothing: add a [functions.NAME] table with runtime, handler and code"]);
    let e = errors("[runtimes.r]\nresources = { memory = \"1Gi\" }\n");
    assert!(e[0].contains("runtimes.r: missing dockerfile"), "{}", e[0]);
    let e = errors("[runtimes.r]\ndockerfile = \"D\"\nbase = \"debian\"\n");
    assert!(
        e[0].contains("runtimes.r.base: dockerfile and base are alternatives"),
        "{}",
        e[0]
    );
    let e = errors("[functions.a]\nruntime = \"r@2\"\nhandler = \"h.h\"\ncode = \".\"\n[runtimes.r]\ndockerfile = \"D\"\n");
    assert!(
        e[0].contains("functions.a.runtime: a runtime built by this manifest is followed by name"),
        "{}",
        e[0]
    );
    let e = errors("[packages.p]\nbase = \"debian-bookworm\"\n");
    assert!(
        e[0].contains("packages.p: a package needs a recipe"),
        "{}",
        e[0]
    );
}

#[test]
fn local_paths_must_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("src")).expect("mkdir");
    let path = dir.path().join(FILE_NAME);
    std::fs::write(
        &path,
        "[functions.a]\nruntime = \"python3\"\nhandler = \"h.h\"\ncode = \"src\"\n\n[functions.b]\nruntime = \"python3\"\nhandler = \"h.h\"\ncode = \"nope\"\n\n[runtimes.r]\ndockerfile = \"Dockerfile\"\n",
    )
    .expect("write");
    let e = Manifest::load(&path).expect_err("missing paths");
    let text = e.to_string();
    assert!(
        text.contains(":9:8: functions.b.code: ") && text.contains("nope does not exist"),
        "{text}"
    );
    assert!(text.contains(":12:14: runtimes.r.dockerfile: "), "{text}");
    assert_eq!(e.0.len(), 2, "{text}");
    let e = Manifest::load(&dir.path().join("other.toml")).expect_err("no file");
    assert!(e.to_string().contains("strata fn init"), "{e}");
}
