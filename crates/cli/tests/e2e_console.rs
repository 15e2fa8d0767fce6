//! End to end: the web console in headless Chromium, driven through chromedriver's W3C WebDriver
//! HTTP API. A person logs in with the token, builds a runtime and watches its log, creates
//! Python functions (typed into the editor, and from a template), invokes them from the invoke
//! panel, edits the code and the settings, reads the logs and logs out. Needs root (real
//! containers) and Debian's `chromium` and `chromium-driver` (scripts/test installs them).

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{path_str, Server};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session behind a chromedriver this test started.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let v = b.call("POST", "/session", caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A WebDriver command; an error answer (a stale element, say) is returned, not a panic.
    fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let resp = req.send().map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.json().unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{status} {}", v["value"]["message"]));
        }
        Ok(v["value"].clone())
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn find(&self, css: &str) -> Option<String> {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let resp = self
            .http
            .post(url)
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .expect("find");
        if !resp.status().is_success() {
            return None;
        }
        let v: Value = resp.json().ok()?;
        v["value"][ELEMENT].as_str().map(String::from)
    }

    /// Waits for an element.
    fn el(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on {}:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks an element, finding it again if the page replaced it in between.
    fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = self.el(css);
            match self.try_call("POST", &format!("/element/{e}/click"), json!({})) {
                Ok(_) => return,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("retrying click on {css}: {err}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("click {css}: {err}"),
            }
        }
    }

    /// Replaces a field's content by typing, as a person would.
    fn type_into(&self, css: &str, text: &str) {
        let e = self.el(css);
        self.call("POST", &format!("/element/{e}/clear"), json!({}));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    fn text(&self, css: &str) -> String {
        let e = self.el(css);
        self.call("GET", &format!("/element/{e}/text"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until an element's text contains `want` (pages poll and swap fragments, so the
    /// element may be replaced between finding and reading it: that counts as not yet).
    fn wait_text(&self, css: &str, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self
                .find(css)
                .and_then(|e| {
                    self.try_call("GET", &format!("/element/{e}/text"), Value::Null)
                        .ok()
                })
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            if t.contains(want) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never contained {want:?}; it reads {t:?} on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn source(&self) -> String {
        self.call("GET", "/source", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn script_async(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/async",
            json!({ "script": script, "args": [] }),
        )
    }

    fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", Value::Null)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Saves a screenshot of the bottom of the page when STRATA_CONSOLE_SCREENSHOTS names a
    /// directory.
    fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("STRATA_CONSOLE_SCREENSHOTS") else {
            return;
        };
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": "window.scrollTo(0, document.body.scrollHeight)", "args": []}),
        );
        let b64 = self.call("GET", "/screenshot", Value::Null);
        let Some(b64) = b64.as_str() else { return };
        use base64_decode::decode;
        if let Some(png) = decode(b64) {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .http
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A small base64 decoder for screenshots (the test crate has no base64 dependency).
mod base64_decode {
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let bytes: Vec<u8> = s
            .bytes()
            .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
            .collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                n |= val(*c)? << (18 - 6 * i);
            }
            let take = chunk.len().saturating_sub(1);
            for i in 0..take {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        Some(out)
    }
}

/// Why the browser part cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    for (bin, pkg) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} is not installed (apt-get install {pkg}; scripts/test installs it)"
            ));
        }
    }
    None
}

const GREETER_V1: &str = "def handler(event, context):\n\
print(\"console-log-line \" + str(event.get(\"name\")))\n\
return {\"greeting\": \"hi \" + str(event.get(\"name\")), \"n\": 6 * 7}\n";

/// The editor is a plain textarea: typing keeps the indentation the text has.
fn indented(code: &str) -> String {
    code.lines()
        .map(|l| {
            if l.starts_with("def ") || l.is_empty() {
                l.to_string()
            } else {
                format!("    {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn root_console_create_and_invoke_a_function_in_a_browser() {
    require_root!();
    if let Some(why) = browser_missing() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let s = Server::start();
    s.import_base("debian-bookworm");
    let runtimes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runtimes/python3");
    s.ok(&[
        "runtime",
        "create",
        "python3",
        "-f",
        path_str(&runtimes.join("Dockerfile")),
        "--context",
        path_str(&runtimes),
    ]);
    let b = Browser::start();
    let console = format!("{}/console", s.url);

    // Not logged in: the console sends the browser to the login page.
    b.goto(&console);
    assert!(b.url().ends_with("/console/login"), "{}", b.url());
    // A wrong token is refused and starts no session.
    b.type_into("#token", "not-the-token");
    b.click("#login");
    b.wait_text(
        "main",
        "not this server's admin token",
        Duration::from_secs(5),
    );
    assert!(
        b.cookies().iter().all(|c| c["name"] != "strata_console"),
        "{:?}",
        b.cookies()
    );
    // The right token logs in, with an HttpOnly, SameSite=Strict session cookie that is not
    // the token.
    b.type_into("#token", &s.token());
    b.click("#login");
    b.wait_text("h1", "Functions", Duration::from_secs(5));
    let cookie = b
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "strata_console")
        .expect("a session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_ne!(cookie["value"], s.token().as_str());

    // A console POST without the CSRF token is refused, even with the session cookie.
    let status = b.script_async(
        "const done = arguments[arguments.length - 1];\
         fetch('/console/functions/x/delete', {method: 'POST', credentials: 'same-origin',\
           headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'a=1'})\
         .then(r => done(r.status), e => done(String(e)));",
    );
    assert_eq!(status, 403, "a POST without the CSRF token");

    // Build a runtime from a Dockerfile and watch its log live.
    b.click("a[href='/console/runtimes']");
    b.click("#new-runtime");
    b.type_into("#rt-name", "pyconsole");
    b.type_into(
        "#rt-dockerfile",
        "FROM python3\nRUN printf 'console-build-%s\\n' 42\n",
    );
    b.click("#build-runtime");
    b.wait_text("#job-status", "Succeeded", Duration::from_secs(180));
    let log = b.text("#job-log");
    assert!(log.contains("console-build-42"), "{log}");
    assert!(log.contains("Step 1/1: RUN printf"), "{log}");
    b.screenshot("build-log");
    b.click("#job-result");
    b.wait_text("#runtime-ref", "pyconsole@1", Duration::from_secs(5));

    // Create a function by typing its code into the editor.
    b.goto(&format!("{console}/functions/new"));
    b.type_into("#ed-name", "greeter");
    b.click("#ed-runtime option[value='pyconsole']");
    b.type_into("#ed-handler", "app.handler");
    b.type_into("#ed-filename", "app.py");
    b.type_into("#ed-code", &indented(GREETER_V1));
    b.click("#create-editor");
    b.wait_text("#function-name", "greeter", Duration::from_secs(30));
    assert_eq!(b.text("#revision"), "1");

    // Invoke it from the invoke panel.
    b.type_into("#payload", r#"{"name": "ada"}"#);
    b.click("#invoke");
    let out = b.wait_text("#invoke-output", "hi ada", Duration::from_secs(60));
    assert!(out.contains("\"n\": 42"), "{out}");
    assert!(b.text("#invoke-status").contains("200 OK"));
    b.screenshot("invoke");
    // A failing payload shows the error, not a result.
    b.type_into("#payload", "{not json");
    b.click("#invoke");
    b.wait_text("#invoke-status", "Not invoked", Duration::from_secs(10));

    // Its logs show what the handler printed.
    b.click("nav.tabs a[href='/console/functions/greeter/logs']");
    b.wait_text("#logs", "console-log-line ada", Duration::from_secs(10));

    // The overview counts the invocation and charts it.
    b.goto(&format!("{console}/functions/greeter"));
    assert_eq!(b.text("#stat-invocations"), "1");
    assert!(
        b.find("#charts svg rect.bar").is_some(),
        "a bar for the invocation"
    );
    b.screenshot("overview");

    // Edit the code in the editor: saving deploys revision 2.
    b.click("nav.tabs a[href='/console/functions/greeter/code']");
    b.type_into(
        "#text-0",
        &indented(
            "def handler(event, context):\nreturn {\"greeting\": \"v2 \" + event[\"name\"]}\n",
        ),
    );
    b.click("#save-code");
    b.wait_text("main", "Deployed revision 2", Duration::from_secs(30));
    b.click("nav.tabs a[href='/console/functions/greeter']");
    b.type_into("#payload", r#"{"name": "bo"}"#);
    b.click("#invoke");
    b.wait_text("#invoke-output", "v2 bo", Duration::from_secs(60));

    // Settings: memory and an environment variable make revision 3.
    b.click("nav.tabs a[href='/console/functions/greeter/settings']");
    b.type_into("#memory", "128Mi");
    b.type_into("#env", "GREETING=hey");
    b.type_into("#max_instances", "3");
    b.click("#save-settings");
    b.wait_text("main", "Saved as revision 3", Duration::from_secs(30));
    let info = s.json(&["fn", "describe", "greeter"]);
    assert_eq!(info["revision"], 3, "{info}");
    assert_eq!(info["resources"]["memory_bytes"], 128u64 << 20, "{info}");
    assert_eq!(info["env"]["GREETING"], "hey", "{info}");
    assert_eq!(info["scaling"]["max_instances"], 3, "{info}");
    assert_eq!(info["runtime"], "pyconsole", "{info}");

    // From a template: python-hello on the runtime built above.
    b.goto(&format!("{console}/functions/new"));
    b.click("#tp-template option[value='python-hello']");
    b.type_into("#tp-name", "from-template");
    b.click("#tp-runtime option[value='pyconsole']");
    b.click("#create-template");
    b.wait_text("#function-name", "from-template", Duration::from_secs(30));
    b.type_into("#payload", r#"{"name": "Strata"}"#);
    b.click("#invoke");
    b.wait_text("#invoke-output", "Hello, Strata!", Duration::from_secs(60));

    // The runtime library shows who uses the runtime.
    b.goto(&format!("{console}/runtimes"));
    let table = b.text("#runtimes");
    assert!(
        table.contains("pyconsole") && table.contains("greeter"),
        "{table}"
    );
    assert!(table.contains("from-template"), "{table}");
    b.screenshot("runtimes");

    // Logging out ends the session.
    b.click("#logout");
    b.wait_text("h1", "Log in", Duration::from_secs(5));
    b.goto(&format!("{console}/functions"));
    assert!(b.url().ends_with("/console/login"), "{}", b.url());
}
