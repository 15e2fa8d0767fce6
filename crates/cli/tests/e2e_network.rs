//! End to end: functions with `--network` get egress through the server's bridge and NAT, but
//! no route to the host (the Strata API, any of the host's addresses), link-local metadata
//! addresses or other instances; functions without it see only `lo`; nothing of the network
//! is left after removal, a crash (recovery) or shutdown.
//!
//! "The internet" is a namespace this test makes itself, reached from the host through a
//! route (not a connected network), with a TCP listener on an address of the 198.18.0.0/15
//! benchmark range. No traffic goes to any address the test did not create (the metadata
//! probe is refused on the host, and the test checks the rule is in place first). Needs root
//! and nftables; skips with a printed reason otherwise.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{path_str, Server};

const APP: &str = r#"
import errno, os, socket, threading

LISTENER = None

def _probe(host, port, timeout=4.0):
    # inet_aton reads the octal and decimal spellings of an address too, and never resolves.
    addr = socket.inet_ntoa(socket.inet_aton(host))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        try:
            s.settimeout(3.0)
            data = s.recv(200).decode(errors="replace")
        except OSError:
            data = ""
        return {"ok": True, "data": data}
    except socket.timeout:
        return {"ok": False, "error": "timeout"}
    except OSError as e:
        return {"ok": False, "error": errno.errorcode.get(e.errno, str(e))}
    finally:
        s.close()

def _own_ip():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.18.0.1", 9))  # UDP connect: picks a source, sends nothing
        return s.getsockname()[0]
    finally:
        s.close()

def _serve(sock):
    while True:
        c, _ = sock.accept()
        c.sendall(b"instance listener\n")
        c.close()

def _sandbox():
    lines = open("/proc/net/dev").read().splitlines()[2:]
    conf = open("/etc/resolv.conf").read() if os.path.exists("/etc/resolv.conf") else ""
    return {"interfaces": sorted(l.split(":")[0].strip() for l in lines), "resolv": conf}

def listen(event, context):
    global LISTENER
    if LISTENER is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", 8080))
        sock.listen(16)
        threading.Thread(target=_serve, args=(sock,), daemon=True).start()
        LISTENER = sock
    ip = _own_ip()
    return {"ip": ip, "self": _probe(ip, 8080)}

def probe(event, context):
    out = _sandbox()
    out["server_port"] = os.environ.get("TEST_SERVER_PORT")
    out["results"] = [[h, p, _probe(h, p)] for h, p in event["targets"]]
    return out

def sandbox(event, context):
    return _sandbox()
"#;

/// Numbers that keep two runs of this test on one host apart.
fn run_id() -> u32 {
    std::process::id() % 200 + 20
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A stand-in for the internet: a namespace with a TCP listener on `198.18.N.10:8765`, behind
/// a next hop `198.19.N.2` on a veth whose host end is `198.19.N.1/30`. The host reaches
/// 198.18.N.0/24 through a route, as it reaches the internet.
struct Outside {
    ns: String,
    veth: String,
    listener: Child,
    target: String,
    host_end: String,
}

impl Outside {
    fn start() -> Outside {
        let n = run_id();
        let ns = format!("strata-test-ext-{n}");
        let veth = format!("stxt{n}");
        let host_end = format!("198.19.{n}.1");
        let hop = format!("198.19.{n}.2");
        let target = format!("198.18.{n}.10");
        sh_quiet(&["ip", "netns", "delete", &ns]);
        sh_quiet(&["ip", "link", "delete", &veth]);
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        sh(&["ip", "addr", "add", &format!("{host_end}/30"), "dev", &veth]);
        sh(&["ip", "link", "set", &veth, "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{hop}/30"),
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{target}/32"),
            "dev",
            "lo",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&[
            "ip",
            "route",
            "add",
            &format!("198.18.{n}.0/24"),
            "via",
            &hop,
            "dev",
            &veth,
        ]);
        let script = format!(
            "import socket\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{target}', 8765))\n\
             s.listen(16)\n\
             while True:\n\
             \x20   c, a = s.accept()\n\
             \x20   c.sendall(('hello from outside to ' + a[0] + '\\n').encode())\n\
             \x20   c.close()\n"
        );
        let listener = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the outside listener");
        let o = Outside {
            ns,
            veth,
            listener,
            target,
            host_end,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(
            &format!("{}:8765", o.target).parse().expect("addr"),
            Duration::from_secs(1),
        )
        .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the outside listener did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
        sh_quiet(&["ip", "link", "delete", &self.veth]);
        sh_quiet(&["ip", "netns", "delete", &self.ns]);
    }
}

/// A listener on every host address that counts the connections it gets: none may come from
/// a function.
struct Canary {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    fn start() -> Canary {
        let l = TcpListener::bind("0.0.0.0:0").expect("bind canary");
        let port = l.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                h.fetch_add(1, Ordering::SeqCst);
                let mut c = c;
                let _ = c.write_all(b"host canary\n");
            }
        });
        Canary { port, hits }
    }
}

/// This server's names (as `Settings::new` derives them from the data directory).
struct Names {
    netns_prefix: String,
    veth_prefix: String,
    bridge: String,
    table: String,
}

impl Names {
    fn of(s: &Server, bridge: &str) -> Names {
        use sha2::Digest as _;
        let abs = std::path::absolute(s.data.path()).expect("absolute");
        let tag = hex::encode(&sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes())[..6]);
        Names {
            netns_prefix: format!("strata-{tag}-"),
            veth_prefix: format!("st{}", &tag[..5]),
            bridge: bridge.to_string(),
            table: format!("strata_{bridge}"),
        }
    }

    fn namespaces(&self) -> Vec<String> {
        sh(&["ip", "netns", "list"])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.netns_prefix))
            .map(String::from)
            .collect()
    }

    fn links(&self) -> Vec<String> {
        sh(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(&self.veth_prefix) || *n == self.bridge)
            .collect()
    }

    fn tables(&self) -> Vec<String> {
        sh(&["nft", "list", "tables"])
            .lines()
            .filter(|l| l.split_whitespace().last() == Some(self.table.as_str()))
            .map(String::from)
            .collect()
    }

    fn assert_gone(&self) {
        assert_eq!(self.namespaces(), Vec::<String>::new(), "namespaces left");
        assert_eq!(self.links(), Vec::<String>::new(), "links left");
        assert_eq!(self.tables(), Vec::<String>::new(), "nftables tables left");
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn invoke(s: &Server, name: &str, event: &serde_json::Value) -> serde_json::Value {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .expect("client");
    let resp = client
        .post(format!("{}/v1/functions/{name}/invoke", s.url))
        .bearer_auth(s.token())
        .body(event.to_string())
        .send()
        .expect("invoke");
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    assert_eq!(
        status,
        200,
        "{name}: {text}\nserver log:\n{}",
        common::tail(&s.log(), 30)
    );
    serde_json::from_str(&text).expect("JSON result")
}

/// The host's IPv4 addresses (all of them: a function must reach none).
fn host_addresses() -> Vec<String> {
    sh(&["ip", "-o", "-4", "addr", "show"])
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "inet")?;
            w.get(i + 1)?.split('/').next().map(String::from)
        })
        .collect()
}

/// The host's non-loopback IPv4 name servers.
fn host_nameservers() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| {
            s.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .collect()
}

#[test]
fn root_network_functions_get_egress_but_not_the_host_metadata_or_each_other() {
    require_root!();
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("SKIPPED: nft is not installed (scripts/install-deps installs nftables)");
        return;
    }
    let n = run_id();
    let bridge = format!("stte{n}");
    let subnet = format!("10.214.{n}.0/24");
    let gateway = format!("10.214.{n}.1");
    let outside = Outside::start();
    let canary = Canary::start();

    let mut s = Server::start_with(&[
        "--idle-timeout",
        "120s",
        "--net-bridge",
        &bridge,
        "--net-subnet",
        &subnet,
    ]);
    let names = Names::of(&s, &bridge);
    s.import_base("debian-bookworm");
    s.ok(&["bootstrap"]);
    // A server that has run no network function has touched nothing.
    names.assert_gone();

    let code = s.write("net/app.py", APP);
    let dir = path_str(code.parent().expect("dir")).to_string();
    let port = s.url.rsplit(':').next().expect("port").to_string();
    let create = |name: &str, handler: &str, network: bool| {
        let mut args = vec![
            "fn",
            "create",
            name,
            "--runtime",
            "python3",
            "--code",
            &dir,
            "--handler",
            handler,
            "--timeout",
            "150s",
        ];
        let env = format!("TEST_SERVER_PORT={port}");
        args.extend(["--env", &env]);
        if network {
            args.push("--network");
        }
        s.ok(&args);
    };
    create("plain", "app.sandbox", false);
    create("first", "app.listen", true);
    create("second", "app.probe", true);

    // Without --network: loopback only, and the image's own resolver configuration.
    let plain = invoke(&s, "plain", &serde_json::json!({}));
    assert_eq!(plain["interfaces"], serde_json::json!(["lo"]), "{plain}");

    // The first network instance: an address of the subnet, a listener of its own.
    let first = invoke(&s, "first", &serde_json::json!({}));
    let first_ip = first["ip"].as_str().expect("ip").to_string();
    assert!(
        first_ip.starts_with(&format!("10.214.{n}.")),
        "address from the subnet: {first}"
    );
    assert_eq!(
        first["self"]["ok"], true,
        "its own listener answers: {first}"
    );

    // The rules are in place before anything probes: refused on the host, never sent on.
    let table = sh(&["nft", "list", "table", "inet", &names.table]);
    assert!(
        table.contains("169.254.0.0/16") && table.contains("hook input"),
        "{table}"
    );
    assert!(
        sh(&["bridge", "-d", "link", "show"]).contains("isolated on"),
        "bridge ports are isolated"
    );

    let mut targets = vec![
        serde_json::json!(["127.0.0.1", port.parse::<u16>().expect("port")]),
        serde_json::json!(["169.254.169.254", 80]),
        serde_json::json!(["0251.0376.0251.0376", 80]),
        serde_json::json!(["2852039166", 80]),
        serde_json::json!([first_ip, 8080]),
        serde_json::json!([gateway, port.parse::<u16>().expect("port")]),
        serde_json::json!([gateway, canary.port]),
    ];
    let addrs = host_addresses();
    assert!(addrs.contains(&outside.host_end) && addrs.contains(&gateway));
    for a in &addrs {
        targets.push(serde_json::json!([a, port.parse::<u16>().expect("port")]));
        targets.push(serde_json::json!([a, canary.port]));
    }
    targets.push(serde_json::json!([outside.target, 8765]));
    let second = invoke(&s, "second", &serde_json::json!({ "targets": targets }));
    assert_eq!(second["server_port"], port.as_str(), "{second}");
    assert_eq!(
        second["interfaces"],
        serde_json::json!(["eth0", "lo"]),
        "{second}"
    );
    let resolv = second["resolv"].as_str().expect("resolv.conf");
    assert!(!resolv.contains("nameserver 127."), "{resolv}");
    for ns in host_nameservers() {
        assert!(
            resolv.contains(&format!("nameserver {ns}\n")),
            "{ns} in {resolv}"
        );
    }
    let results = second["results"].as_array().expect("results");
    assert_eq!(results.len(), targets.len());
    for r in results {
        eprintln!("probe {}:{} -> {}", r[0], r[1], r[2]);
    }
    for r in results {
        let (host, port, res) = (&r[0], &r[1], &r[2]);
        if host == outside.target.as_str() {
            assert_eq!(res["ok"], true, "egress must work: {r}");
            assert_eq!(
                res["data"],
                format!("hello from outside to {}\n", outside.host_end),
                "reached through NAT: {r}"
            );
        } else {
            assert_eq!(res["ok"], false, "{host}:{port} must be unreachable: {r}");
        }
    }
    assert_eq!(
        canary.hits.load(Ordering::SeqCst),
        0,
        "no connection reached the host"
    );
    let ns = names.namespaces();
    assert_eq!(ns.len(), 2, "one namespace per network instance: {ns:?}");

    // Removing the functions stops their instances and removes their namespaces and veths.
    for f in ["plain", "first", "second"] {
        s.ok(&["fn", "rm", f]);
    }
    wait_until("the namespaces to go", Duration::from_secs(20), || {
        names.namespaces().is_empty()
    });
    assert_eq!(
        names.links(),
        vec![bridge.clone()],
        "only the bridge is left while the server runs"
    );

    // A crash leaves a namespace behind; the next start removes it, bridge and rules too, and
    // the network is made again on first use.
    create("again", "app.listen", true);
    invoke(&s, "again", &serde_json::json!({}));
    assert_eq!(names.namespaces().len(), 1);
    s.kill9_and_restart();
    names.assert_gone();
    let again = invoke(&s, "again", &serde_json::json!({}));
    assert_eq!(again["self"]["ok"], true, "{again}");
    assert_eq!(names.namespaces().len(), 1);

    // A clean shutdown removes everything.
    s.ok(&["fn", "rm", "again"]);
    s.assert_clean();
    s.stop_now();
    names.assert_gone();
    drop(outside);
}
