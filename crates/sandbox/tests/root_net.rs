//! The function network's mechanism on a real host: bridge, rules, namespaces and veth pairs
//! made and removed by `strata_sandbox::net`. Needs root and nftables; each test prints why it
//! is skipped otherwise. Uses a bridge, subnet and name prefixes of its own, and sends no
//! traffic.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use strata_sandbox::net::{self, NetConfig};
use strata_types::ErrorKind;

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if Command::new("nft").arg("--version").output().is_err() {
        return Some("nft is not installed (scripts/install-deps installs nftables)".into());
    }
    None
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn has_table(table: &str) -> bool {
    sh(&["nft", "list", "tables"])
        .lines()
        .any(|l| l.split_whitespace().last() == Some(table))
}

#[test]
fn root_net_host_setup_attach_detach_and_teardown_leave_nothing() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let n = std::process::id() % 200 + 20;
    let state = tempfile::tempdir().expect("tempdir");
    let config = NetConfig {
        bridge: format!("stnt{n}"),
        subnet: format!("10.215.{n}.0/24").parse().expect("subnet"),
        block_private: true,
        netns_prefix: format!("strata-nettest{n}-"),
        veth_prefix: format!("snt{n}"),
        state_file: state.path().join("network"),
    };
    let _ = net::teardown_host(&config);

    let host = net::setup_host(&config).expect("set up");
    // Idempotent for its owner.
    let again = net::setup_host(&config).expect("set up again");
    assert_eq!(host, again);
    assert!(link_exists(&config.bridge));
    assert!(
        sh(&["ip", "-o", "-4", "addr", "show", "dev", &config.bridge])
            .contains(&format!("10.215.{n}.1/24"))
    );
    assert!(has_table(&config.table()));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .expect("ip_forward")
            .trim(),
        "1"
    );
    assert!(host.resolv_conf.starts_with("# Written by Strata"));
    assert!(!host.resolv_conf.contains("nameserver 127."));

    // Someone else's bridge, or an overlapping subnet, is refused before anything is made.
    let mut foreign = config.clone();
    foreign.state_file = state.path().join("other");
    let e = net::setup_host(&foreign).expect_err("the bridge is not its own");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(!foreign.state_file.exists());
    let mut overlapping = foreign.clone();
    overlapping.bridge = format!("stnu{n}");
    let e = net::setup_host(&overlapping).expect_err("the subnet is taken");
    assert!(e.to_string().contains("overlaps"), "{e}");
    assert!(!link_exists(&overlapping.bridge));

    // Two instances: their own namespaces, addresses and isolated bridge ports.
    let a = net::plan_attachment(
        &config,
        "aaaaaaaa00000001",
        Ipv4Addr::new(10, 215, n as u8, 2),
    )
    .expect("plan a");
    let b = net::plan_attachment(
        &config,
        "bbbbbbbb00000002",
        Ipv4Addr::new(10, 215, n as u8, 3),
    )
    .expect("plan b");
    net::attach(&a).expect("attach a");
    net::attach(&b).expect("attach b");
    assert!(a.netns_path().exists());
    let addr = sh(&[
        "ip", "-n", &a.netns, "-o", "-4", "addr", "show", "dev", "eth0",
    ]);
    assert!(addr.contains(&format!("10.215.{n}.2/24")), "{addr}");
    let v6 = sh(&[
        "ip", "-n", &a.netns, "-o", "-6", "addr", "show", "dev", "eth0",
    ]);
    assert!(v6.trim().is_empty(), "no IPv6 address: {v6}");
    let route = sh(&["ip", "-n", &a.netns, "route", "show", "default"]);
    assert!(
        route.contains(&format!("via 10.215.{n}.1 dev eth0")),
        "{route}"
    );
    let port = sh(&["bridge", "-d", "link", "show", "dev", &a.host_veth]);
    assert!(
        port.contains(&format!("master {}", config.bridge)),
        "{port}"
    );
    assert!(port.contains("isolated on"), "{port}");
    // Attaching a name twice fails and leaves the first one alone.
    assert!(net::attach(&a).is_err());
    assert!(a.netns_path().exists() && link_exists(&a.host_veth));

    net::detach(&a).expect("detach a");
    net::detach(&a).expect("detaching twice is fine");
    assert!(!a.netns_path().exists() && !link_exists(&a.host_veth));

    // Teardown removes what is left: b's namespace and link, the rules and the bridge.
    let t = net::teardown_host(&config).expect("teardown");
    assert_eq!((t.namespaces, t.links, t.host), (1, 1, true), "{t:?}");
    assert!(!b.netns_path().exists() && !link_exists(&b.host_veth));
    assert!(!link_exists(&config.bridge));
    assert!(!has_table(&config.table()));
    assert!(!config.state_file.exists());
    let t = net::teardown_host(&config).expect("teardown again");
    assert_eq!(t, net::Teardown::default());
}
