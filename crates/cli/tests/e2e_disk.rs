//! End to end: a function that fills its disk is contained — writes outside `/tmp` land on a
//! size-capped tmpfs charged to the function, never on the host's disk. Needs root; skips with a
//! printed reason when it cannot run.

mod common;

use common::{path_str, Server};

const APP: &str = "import os\n\
def fill(event, context):\n    path = event['path']\n    chunk = b'x' * (16 << 20)\n    written = 0\n    try:\n        with open(path, 'wb') as f:\n            while written < (2 << 30):\n                f.write(chunk)\n                f.flush()\n                written += len(chunk)\n    except OSError as e:\n        return {'written': written, 'errno': e.errno}\n    return {'written': written, 'errno': 0}\n\
def hello(event, context):\n    return 'still here'\n";

fn du(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-sxb"])
        .arg(path)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn root_disk_fills_are_contained_to_the_instance() {
    require_root!();
    let s = Server::start();
    s.import_base("debian-bookworm");
    s.ok(&["bootstrap"]);
    let dir = s.write("app/app.py", APP);
    let dir = path_str(dir.parent().expect("dir")).to_string();
    s.ok(&[
        "fn",
        "create",
        "filler",
        "--runtime",
        "python3",
        "--code",
        &dir,
        "--handler",
        "app.fill",
        "--memory",
        "2Gi",
    ]);
    let before = du(s.data.path());
    for path in ["/tmp/big", "/var/tmp/big", "/big"] {
        let out = s.ok(&[
            "invoke",
            "filler",
            "-d",
            &format!("{{\"path\": \"{path}\"}}"),
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        assert_eq!(v["errno"], 28, "{path}: the write stops with ENOSPC: {v}");
        let written = v["written"].as_u64().expect("written");
        assert!(
            written <= 513 << 20,
            "{path}: capped at the instance's 512 MiB: {written}"
        );
        let after = du(s.data.path());
        assert!(
            after < before + (64 << 20),
            "{path}: the data directory grew by {} bytes",
            after.saturating_sub(before)
        );
    }
    s.ok(&["fn", "update", "filler", "--handler", "app.hello"]);
    assert_eq!(s.ok(&["invoke", "filler"]).trim(), "\"still here\"");
    s.ok(&["fn", "rm", "filler"]);
    s.assert_clean();
}
