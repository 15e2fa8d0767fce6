//! Function networking: a host bridge with NAT egress and a deny list, and one network namespace
//! per instance, joined to the bridge through a veth pair. The only place in Strata that
//! creates namespaces, links and firewall rules.
//!
//! The *plan* — which addresses an instance gets, which destinations are refused, the nftables
//! ruleset, the `ip` commands — is made of pure functions ([`blocked_destinations`],
//! [`ruleset`], [`pick_address`], [`plan_attachment`], [`attach_commands`], ...). The
//! *mechanism* ([`setup_host`], [`attach`], [`detach`], [`teardown_host`]) runs `ip` and `nft`.
//!
//! The layout, for a bridge `strata0` on `10.213.0.0/16`:
//!
//! - the bridge holds the subnet's first address (`10.213.0.1`), every instance's gateway;
//! - each instance gets `/run/netns/<netns_prefix><key>` with `lo` and `eth0` (an address from
//!   the subnet, default route via the bridge, no IPv6), and the host end of its veth pair
//!   (`<veth_prefix><key>`) is an *isolated* port of the bridge;
//! - the nftables tables `inet strata_<bridge>` and `bridge strata_<bridge>` refuse, for
//!   traffic coming from the bridge: everything addressed to the host itself (any of its
//!   addresses — the `input` hook), loopback, link-local and metadata addresses, multicast,
//!   the bridge's own subnet (other instances) and, by default, private and CGNAT ranges and
//!   the host's connected networks; they drop connections into instances, drop frames bridged
//!   between instances, and masquerade the rest behind the host's uplink. The configured DNS
//!   servers stay reachable on port 53.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;

use crate::error::SandboxError;

/// Where `ip netns` keeps its named namespaces (bind-mounted nsfs files).
pub const NETNS_DIR: &str = "/run/netns";
/// The host's resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of upstream servers, used when the host's resolver is a loopback
/// stub (`127.0.0.53`), which a namespace cannot reach.
pub const RESOLVED_UPSTREAM_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// An IPv4 network, `a.b.c.d/n`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// A network; refuses a prefix above 32 or host bits set (`10.0.0.1/8`).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, String> {
        if prefix > 32 {
            return Err(format!("prefix /{prefix} is longer than 32"));
        }
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(format!(
                "{addr}/{prefix} has host bits set; the network is {}/{prefix}",
                Ipv4Addr::from(u32::from(addr) & net.mask())
            ));
        }
        Ok(net)
    }

    /// The network containing `addr`, `addr/prefix` with host bits cleared.
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        let mask = mask_of(prefix);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        mask_of(self.prefix)
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether every address of `other` is in this network.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        self.prefix <= other.prefix && self.contains(other.addr)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The last address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The first host address: the bridge's, every instance's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

fn mask_of(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == 32 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    /// `a.b.c.d/n`, or `a.b.c.d` for a single address.
    fn from_str(s: &str) -> Result<Ipv4Net, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (
                ip,
                p.parse::<u8>()
                    .map_err(|_| format!("{s:?}: the prefix must be a number from 0 to 32"))?,
            ),
            None => (s, 32),
        };
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 network such as 10.213.0.0/16"))?;
        Ipv4Net::new(ip, prefix)
    }
}

fn net(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net {
        addr: Ipv4Addr::new(a, b, c, d),
        prefix,
    }
}

/// The default subnet of the bridge: inside 10/8 but away from the ranges home routers, cloud
/// VPCs and container engines usually pick (10.0/16, 10.1/16, 172.17/16, 192.168/16).
pub const DEFAULT_SUBNET: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(10, 213, 0, 0),
    prefix: 16,
};

/// Destinations refused whatever the configuration: "this network", loopback, link-local
/// (cloud metadata at 169.254.169.254 and 169.254.170.2), Alibaba's metadata address,
/// multicast and the reserved/broadcast block.
pub fn always_blocked() -> Vec<Ipv4Net> {
    vec![
        net(0, 0, 0, 0, 8),
        net(127, 0, 0, 0, 8),
        net(169, 254, 0, 0, 16),
        net(100, 100, 100, 200, 32),
        net(224, 0, 0, 0, 4),
        net(240, 0, 0, 0, 4),
    ]
}

/// Private (RFC 1918) and shared (CGNAT, RFC 6598) ranges, refused unless the configuration
/// allows private destinations.
pub fn private_ranges() -> Vec<Ipv4Net> {
    vec![
        net(10, 0, 0, 0, 8),
        net(172, 16, 0, 0, 12),
        net(192, 168, 0, 0, 16),
        net(100, 64, 0, 0, 10),
    ]
}

/// How Strata's function network is laid out on one host (one server's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The host bridge instances are attached to, e.g. `strata0`.
    pub bridge: String,
    /// The bridge's subnet: its first address is the bridge's, the others go to instances.
    pub subnet: Ipv4Net,
    /// Also refuse private (RFC 1918), CGNAT and the host's connected networks.
    pub block_private: bool,
    /// Prefix of this server's namespaces under [`NETNS_DIR`], e.g. `strata-<tag>-`.
    pub netns_prefix: String,
    /// Prefix of the host ends of this server's veth pairs (at most 7 characters: the key adds
    /// 8 and link names have at most 15).
    pub veth_prefix: String,
    /// A file (on a tmpfs, e.g. `/run/strata/<tag>/network`) recording that this server owns
    /// the bridge and the rules; written before they are made, removed after they are gone.
    pub state_file: PathBuf,
}

/// Length of the per-instance key in link names.
const KEY_LEN: usize = 8;

impl NetConfig {
    /// Checks names and the subnet before anything is made.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let bad = |reason: String| SandboxError::Network { reason };
        if !is_link_name(&self.bridge) {
            return Err(bad(format!(
                "bridge name {:?} must be 1 to 15 letters, digits, '_', '-' or '.'",
                self.bridge
            )));
        }
        if self.veth_prefix.is_empty()
            || self.veth_prefix.len() + KEY_LEN > 15
            || !is_link_name(&self.veth_prefix)
        {
            return Err(bad(format!(
                "veth prefix {:?} must be 1 to {} link-name characters",
                self.veth_prefix,
                15 - KEY_LEN
            )));
        }
        if self.netns_prefix.is_empty() || !is_plain_name(&self.netns_prefix) {
            return Err(bad(format!(
                "namespace prefix {:?} must be letters, digits, '_', '-' or '.'",
                self.netns_prefix
            )));
        }
        if !(8..=29).contains(&self.subnet.prefix) {
            return Err(bad(format!(
                "subnet {} must be between a /8 and a /29",
                self.subnet
            )));
        }
        if always_blocked().iter().any(|b| b.overlaps(&self.subnet)) {
            return Err(bad(format!(
                "subnet {} overlaps loopback, link-local, multicast or reserved addresses",
                self.subnet
            )));
        }
        Ok(())
    }

    /// Name of the nftables tables (`inet` and `bridge` families), e.g. `strata_strata0`.
    pub fn table(&self) -> String {
        let clean: String = self
            .bridge
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("strata_{clean}")
    }
}

fn is_plain_name(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && s != "."
        && s != ".."
}

fn is_link_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 15 && is_plain_name(s)
}

/// Every IPv4 destination refused to instances, without overlaps (nftables refuses
/// overlapping intervals in one set), sorted: [`always_blocked`], the bridge's subnet (no
/// instance-to-instance traffic through the host), and when `block_private`, the
/// [`private_ranges`] and `host_networks` (the host's connected networks). The host's own
/// addresses need no entry: traffic to them meets the `input` hook, refused as a whole.
pub fn blocked_destinations(config: &NetConfig, host_networks: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut all = always_blocked();
    all.push(config.subnet);
    if config.block_private {
        all.extend(private_ranges());
        all.extend(host_networks.iter().copied());
    }
    normalize(all)
}

/// Sorts, removes duplicates and networks covered by another.
fn normalize(mut nets: Vec<Ipv4Net>) -> Vec<Ipv4Net> {
    nets.sort_by_key(|n| (u32::from(n.addr), n.prefix));
    let mut out: Vec<Ipv4Net> = Vec::new();
    for n in nets {
        if out.iter().any(|o| o.covers(&n)) {
            continue;
        }
        out.retain(|o| !n.covers(o));
        out.push(n);
    }
    out
}

/// The IPv4 name servers of a `resolv.conf`, minus loopback and unspecified ones (a stub
/// resolver on `127.0.0.53` cannot be reached from a namespace).
pub fn nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(ip) = words.next().and_then(|w| w.parse::<Ipv4Addr>().ok()) {
            if !ip.is_loopback() && !ip.is_unspecified() && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The `resolv.conf` an instance gets: `servers`, then the `search`, `domain` and `options`
/// lines of the host's file.
pub fn instance_resolv_conf(host_resolv_conf: &str, servers: &[Ipv4Addr]) -> String {
    let mut out = String::from("# Written by Strata for this instance.\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    for line in host_resolv_conf.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search" | "domain" | "options")) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

/// The host's IPv4 addresses from `ip -o -4 addr show`: (device, address, its network).
pub fn parse_host_addresses(ip_output: &str) -> Vec<(String, Ipv4Addr, Ipv4Net)> {
    let mut out = Vec::new();
    for line in ip_output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = words.iter().position(|w| *w == "inet") else {
            continue;
        };
        let (Some(dev), Some(cidr)) = (words.get(1), words.get(i + 1)) else {
            continue;
        };
        let (ip, prefix) = cidr.split_once('/').unwrap_or((cidr, "32"));
        let (Ok(ip), Ok(prefix)) = (ip.parse::<Ipv4Addr>(), prefix.parse::<u8>()) else {
            continue;
        };
        let dev = dev.trim_end_matches(':').split('@').next().unwrap_or(dev);
        out.push((dev.to_string(), ip, Ipv4Net::containing(ip, prefix)));
    }
    out
}

/// The nftables script installing Strata's rules (atomically, replacing earlier ones of the
/// same tables): see the module documentation for what it refuses.
pub fn ruleset(config: &NetConfig, nameservers: &[Ipv4Addr], host_networks: &[Ipv4Net]) -> String {
    let table = config.table();
    let br = &config.bridge;
    let blocked: Vec<String> = blocked_destinations(config, host_networks)
        .iter()
        .map(ToString::to_string)
        .collect();
    let dns = if nameservers.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = nameservers.iter().map(ToString::to_string).collect();
        format!(
            "    iifname \"{br}\" ip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept\n",
            list.join(", ")
        )
    };
    let reject = "counter reject with icmpx type admin-prohibited";
    let mut s = remove_ruleset(config);
    s.push_str(&format!(
        "table inet {table} {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter; policy accept;\n\
         {dns}\
         \x20   iifname \"{br}\" {reject}\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{br}\" ip saddr != {subnet} counter drop\n\
         {dns}\
         \x20   iifname \"{br}\" ip daddr {{ {blocked} }} {reject}\n\
         \x20   iifname \"{br}\" meta nfproto ipv6 {reject}\n\
         \x20   oifname \"{br}\" ct state established,related accept\n\
         \x20   oifname \"{br}\" counter drop\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   iifname \"{br}\" oifname != \"{br}\" masquerade\n\
         \x20 }}\n\
         }}\n\
         table bridge {table} {{\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{veth}*\" counter drop\n\
         \x20 }}\n\
         }}\n",
        subnet = config.subnet,
        blocked = blocked.join(", "),
        veth = config.veth_prefix,
    ));
    s
}

/// The nftables script removing Strata's tables; succeeds whether they exist or not.
pub fn remove_ruleset(config: &NetConfig) -> String {
    let t = config.table();
    format!(
        "add table inet {t}\ndelete table inet {t}\nadd table bridge {t}\ndelete table bridge {t}\n"
    )
}

/// The lowest free instance address of `subnet` (neither the network, the bridge's, the
/// broadcast address nor one in `used`).
pub fn pick_address(subnet: &Ipv4Net, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.gateway()) + 1;
    let last = u32::from(subnet.broadcast()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
}

/// One instance's place on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its namespace's name under [`NETNS_DIR`].
    pub netns: String,
    /// The host end of its veth pair (the bridge port).
    pub host_veth: String,
    /// Its address on `eth0`.
    pub address: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// Its default gateway, the bridge's address.
    pub gateway: Ipv4Addr,
    /// The bridge.
    pub bridge: String,
}

impl Attachment {
    /// The namespace file a container joins (an OCI `network` namespace `path`).
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }
}

/// Names and addresses of one instance's attachment. `key` (letters and digits, e.g. the
/// instance id's random part) names the namespace in full and the veth by its first 8
/// characters.
pub fn plan_attachment(
    config: &NetConfig,
    key: &str,
    address: Ipv4Addr,
) -> Result<Attachment, SandboxError> {
    if key.len() < KEY_LEN || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(SandboxError::Network {
            reason: format!("attachment key {key:?} must be at least {KEY_LEN} letters or digits"),
        });
    }
    if !config.subnet.contains(address)
        || address == config.subnet.gateway()
        || address == config.subnet.addr()
        || address == config.subnet.broadcast()
    {
        return Err(SandboxError::Network {
            reason: format!("{address} is not an instance address of {}", config.subnet),
        });
    }
    Ok(Attachment {
        netns: format!("{}{key}", config.netns_prefix),
        host_veth: format!("{}{}", config.veth_prefix, &key[..KEY_LEN]),
        address,
        prefix: config.subnet.prefix,
        gateway: config.subnet.gateway(),
        bridge: config.bridge.clone(),
    })
}

/// The `ip -batch` scripts attaching an instance: (host side, inside the namespace). The
/// namespace's `eth0` is made directly in the namespace; no link gets an IPv6 address.
pub fn attach_commands(a: &Attachment) -> (String, String) {
    let host = format!(
        "netns add {ns}\n\
         link add {v} type veth peer name eth0 netns {ns}\n\
         link set dev {v} addrgenmode none\n\
         link set dev {v} master {br}\n\
         link set dev {v} type bridge_slave isolated on\n\
         link set dev {v} up\n",
        ns = a.netns,
        v = a.host_veth,
        br = a.bridge,
    );
    let inside = format!(
        "link set dev lo up\n\
         link set dev eth0 addrgenmode none\n\
         addr add {ip}/{p} dev eth0\n\
         link set dev eth0 up\n\
         route add default via {gw} dev eth0\n",
        ip = a.address,
        p = a.prefix,
        gw = a.gateway,
    );
    (host, inside)
}

/// The host network once set up: the configuration and what instances need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNetwork {
    /// The layout.
    pub config: NetConfig,
    /// The name servers instances use (reachable on port 53 despite the deny list).
    pub nameservers: Vec<Ipv4Addr>,
    /// The `resolv.conf` instances get.
    pub resolv_conf: String,
}

/// Serializes namespace creation (the first `ip netns add` mounts [`NETNS_DIR`]).
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Makes the bridge, turns on IPv4 forwarding and installs the rules; idempotent for the
/// server that owns them (its [`NetConfig::state_file`] exists). Refuses a bridge that exists
/// without that file (another server's, or someone else's) and a subnet that overlaps one of
/// the host's own networks. IPv4 forwarding is left on at teardown, as other software on the
/// host may rely on it.
pub fn setup_host(config: &NetConfig) -> Result<HostNetwork, SandboxError> {
    config.validate()?;
    let bad = |reason: String| SandboxError::Network { reason };
    let br = &config.bridge;
    let owned = config.state_file.is_file();
    let bridge_exists = link_exists(br);
    if bridge_exists && !owned {
        return Err(bad(format!(
            "a network interface named {br} exists but this server did not make it (another \
             Strata server on this host?); give this server its own bridge and subnet \
             (--net-bridge, --net-subnet)"
        )));
    }
    let addresses = parse_host_addresses(&run("ip", &["-o", "-4", "addr", "show"], None)?);
    if let Some((dev, ip, _)) = addresses.iter().find(|(dev, ip, n)| {
        dev != br && (config.subnet.contains(*ip) || n.overlaps(&config.subnet))
    }) {
        return Err(bad(format!(
            "subnet {} overlaps {ip} on {dev}; choose another one (--net-subnet)",
            config.subnet
        )));
    }
    let host_networks: Vec<Ipv4Net> = addresses
        .iter()
        .filter(|(dev, ip, _)| dev != br && !ip.is_loopback())
        .map(|(_, _, n)| *n)
        .collect();
    if let Some(dir) = config.state_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| bad(format!("creating {dir:?}: {e}")))?;
    }
    std::fs::write(
        &config.state_file,
        format!(
            "bridge {br}\nsubnet {}\ntable {}\n",
            config.subnet,
            config.table()
        ),
    )
    .map_err(|e| bad(format!("writing {:?}: {e}", config.state_file)))?;
    if !bridge_exists {
        run("ip", &["link", "add", "name", br, "type", "bridge"], None)?;
    }
    let cidr = format!("{}/{}", config.subnet.gateway(), config.subnet.prefix);
    run(
        "ip",
        &["-batch", "-"],
        Some(&format!(
            "link set dev {br} addrgenmode none\naddr replace {cidr} dev {br}\nlink set dev {br} up\n"
        )),
    )?;
    let forward = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(forward)
        .map(|v| v.trim() != "1")
        .unwrap_or(true)
    {
        std::fs::write(forward, "1")
            .map_err(|e| bad(format!("turning on IPv4 forwarding: {e}")))?;
    }
    let host_text = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    let mut servers = nameservers(&host_text);
    let mut template = host_text.clone();
    if servers.is_empty() {
        if let Ok(upstream) = std::fs::read_to_string(RESOLVED_UPSTREAM_CONF) {
            servers = nameservers(&upstream);
            template = upstream;
        }
    }
    if servers.is_empty() {
        tracing::warn!(
            "no name server usable from a namespace in {HOST_RESOLV_CONF} (only loopback ones): \
             functions with network access cannot resolve names"
        );
    }
    run(
        "nft",
        &["-f", "-"],
        Some(&ruleset(config, &servers, &host_networks)),
    )?;
    tracing::info!(bridge = %br, subnet = %config.subnet, table = %config.table(), "function network ready");
    Ok(HostNetwork {
        config: config.clone(),
        resolv_conf: instance_resolv_conf(&template, &servers),
        nameservers: servers,
    })
}

/// What [`teardown_host`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Teardown {
    /// Namespaces of this server removed.
    pub namespaces: usize,
    /// Veth links of this server removed.
    pub links: usize,
    /// Whether the bridge and rules (owned by this server) were removed.
    pub host: bool,
}

/// Removes what this server made: its namespaces and veth links (by prefix), and — if it owns
/// them ([`NetConfig::state_file`]) — the rules, the bridge and the state file. Used at clean
/// shutdown and, for a crash's leftovers, at start.
pub fn teardown_host(config: &NetConfig) -> Result<Teardown, SandboxError> {
    config.validate()?;
    let mut t = Teardown::default();
    // Links first: deleting a host end takes its peer in the namespace with it at once.
    for name in entries(Path::new("/sys/class/net")) {
        if name.starts_with(&config.veth_prefix) && name.len() == config.veth_prefix.len() + KEY_LEN
        {
            delete_link(&name)?;
            t.links += 1;
        }
    }
    for name in entries(Path::new(NETNS_DIR)) {
        if name.starts_with(&config.netns_prefix) {
            delete_netns(&name)?;
            t.namespaces += 1;
        }
    }
    if config.state_file.is_file() {
        run("nft", &["-f", "-"], Some(&remove_ruleset(config)))?;
        delete_link(&config.bridge)?;
        std::fs::remove_file(&config.state_file).map_err(|e| SandboxError::Network {
            reason: format!("removing {:?}: {e}", config.state_file),
        })?;
        t.host = true;
    }
    Ok(t)
}

/// Makes an instance's namespace and veth pair as planned; undoes what it made on failure.
pub fn attach(a: &Attachment) -> Result<(), SandboxError> {
    if a.netns_path().exists() || link_exists(&a.host_veth) {
        return Err(SandboxError::Network {
            reason: format!(
                "namespace {} or link {} exists already",
                a.netns, a.host_veth
            ),
        });
    }
    let (host, inside) = attach_commands(a);
    let result = {
        let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        run("ip", &["-batch", "-"], Some(&host))
    }
    .and_then(|_| run("ip", &["-n", &a.netns, "-batch", "-"], Some(&inside)));
    if let Err(e) = result {
        let _ = detach(a);
        return Err(e);
    }
    Ok(())
}

/// Removes an instance's veth pair and namespace; succeeds when they are already gone. A
/// namespace still used by a process lives on until that process exits (its links with it).
pub fn detach(a: &Attachment) -> Result<(), SandboxError> {
    delete_link(&a.host_veth)?;
    delete_netns(&a.netns)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn delete_link(name: &str) -> Result<(), SandboxError> {
    if !link_exists(name) {
        return Ok(());
    }
    match run("ip", &["link", "delete", "dev", name], None) {
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

fn delete_netns(name: &str) -> Result<(), SandboxError> {
    let path = Path::new(NETNS_DIR).join(name);
    if !path.exists() {
        return Ok(());
    }
    match run("ip", &["netns", "delete", name], None) {
        Err(_) if !path.exists() => Ok(()),
        other => other.map(drop),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a program with `args` (and `stdin`), returning its stdout.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, SandboxError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SandboxError::BinaryMissing {
                    command: program.to_string(),
                    path: PathBuf::from(program),
                    source,
                }
            } else {
                SandboxError::Spawn {
                    command: command.clone(),
                    source,
                }
            }
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| SandboxError::Wait {
                command: command.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| SandboxError::Wait {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if output.is_empty() {
            output = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(SandboxError::CommandFailed {
            command,
            status: out.status.to_string(),
            output,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NetConfig {
        NetConfig {
            bridge: "strata0".into(),
            subnet: DEFAULT_SUBNET,
            block_private: true,
            netns_prefix: "strata-abc123-".into(),
            veth_prefix: "stabc12".into(),
            state_file: "/run/strata/abc123/network".into(),
        }
    }

    #[test]
    fn networks_parse_print_and_compare() {
        let n: Ipv4Net = "10.213.0.0/16".parse().expect("parses");
        assert_eq!(n, DEFAULT_SUBNET);
        assert_eq!(n.to_string(), "10.213.0.0/16");
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 213, 255, 255));
        assert!(n.contains(Ipv4Addr::new(10, 213, 7, 9)));
        assert!(!n.contains(Ipv4Addr::new(10, 214, 0, 1)));
        assert!("10.213.0.1/16".parse::<Ipv4Net>().is_err(), "host bits");
        assert!("10.213.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("nonsense".parse::<Ipv4Net>().is_err());
        let one: Ipv4Net = "100.100.100.200".parse().expect("single address");
        assert_eq!(one.prefix(), 32);
        assert_eq!(one.to_string(), "100.100.100.200");
        let ten: Ipv4Net = "10.0.0.0/8".parse().expect("parses");
        assert!(ten.covers(&n) && !n.covers(&ten) && n.overlaps(&ten));
        assert_eq!(
            Ipv4Net::containing(Ipv4Addr::new(192, 0, 2, 2), 24).to_string(),
            "192.0.2.0/24"
        );
        let all: Ipv4Net = "0.0.0.0/0".parse().expect("parses");
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }

    #[test]
    fn blocked_destinations_cover_the_dangerous_ranges_without_overlaps() {
        let host = vec!["192.0.2.0/24".parse().expect("net")];
        let blocked = blocked_destinations(&config(), &host);
        let hit = |ip: [u8; 4]| blocked.iter().any(|b| b.contains(Ipv4Addr::from(ip)));
        for ip in [
            [127, 0, 0, 1],
            [169, 254, 169, 254],
            [169, 254, 170, 2],
            [100, 100, 100, 200],
            [10, 213, 0, 7],  // another instance
            [10, 213, 0, 1],  // the bridge
            [10, 0, 0, 1],    // private
            [172, 16, 5, 4],  // private
            [192, 168, 1, 1], // private
            [100, 64, 0, 1],  // CGNAT
            [192, 0, 2, 1],   // the host's connected network
            [0, 0, 0, 0],     // this network
            [224, 0, 0, 251], // multicast
            [255, 255, 255, 255],
        ] {
            assert!(hit(ip), "{ip:?} must be blocked: {blocked:?}");
        }
        for ip in [[8, 8, 8, 8], [198, 18, 0, 10], [151, 101, 2, 132]] {
            assert!(!hit(ip), "{ip:?} must stay reachable");
        }
        for (i, a) in blocked.iter().enumerate() {
            for b in &blocked[i + 1..] {
                assert!(!a.overlaps(b), "{a} overlaps {b}");
            }
        }
        // 10.213.0.0/16 is inside 10/8 and 100.100.100.200 inside 100.64/10: merged away.
        assert!(!blocked.contains(&DEFAULT_SUBNET));
    }

    #[test]
    fn allowing_private_keeps_the_always_blocked_and_the_subnet() {
        let mut c = config();
        c.block_private = false;
        let host = vec!["192.0.2.0/24".parse().expect("net")];
        let blocked = blocked_destinations(&c, &host);
        let hit = |ip: [u8; 4]| blocked.iter().any(|b| b.contains(Ipv4Addr::from(ip)));
        assert!(hit([169, 254, 169, 254]) && hit([127, 0, 0, 1]) && hit([10, 213, 3, 3]));
        assert!(hit([100, 100, 100, 200]));
        assert!(!hit([10, 0, 0, 1]) && !hit([192, 168, 1, 1]) && !hit([192, 0, 2, 1]));
    }

    #[test]
    fn nameservers_skip_loopback_stubs() {
        let text = "# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\n\
                    nameserver ::1\nnameserver 2001:db8::1\nnameserver 10.255.255.53\n\
                    search example.internal\noptions edns0 trust-ad\n";
        let servers = nameservers(text);
        assert_eq!(servers, vec![Ipv4Addr::new(10, 255, 255, 53)]);
        let conf = instance_resolv_conf(text, &servers);
        assert!(conf.contains("nameserver 10.255.255.53\n"), "{conf}");
        assert!(!conf.contains("127.0.0.53"), "{conf}");
        assert!(conf.contains("search example.internal\n"), "{conf}");
        assert!(conf.contains("options edns0 trust-ad\n"), "{conf}");
        assert!(nameservers("nameserver 127.0.0.53\n").is_empty());
    }

    #[test]
    fn host_addresses_parse_from_ip_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever\n\
                   7: veth1@if6    inet 198.18.0.1/24 scope global veth1\n";
        let a = parse_host_addresses(out);
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].0, "eth0");
        assert_eq!(a[1].1, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(a[1].2.to_string(), "192.0.2.0/24");
        assert_eq!(a[2].0, "veth1");
    }

    #[test]
    fn ruleset_refuses_host_metadata_and_neighbours_but_allows_dns() {
        let dns = [Ipv4Addr::new(10, 255, 255, 53)];
        let host = vec!["192.0.2.0/24".parse().expect("net")];
        let r = ruleset(&config(), &dns, &host);
        assert!(
            r.starts_with(&remove_ruleset(&config())),
            "replaces atomically:\n{r}"
        );
        assert!(r.contains("table inet strata_strata0 {"), "{r}");
        assert!(r.contains("table bridge strata_strata0 {"), "{r}");
        // The host itself, whatever its addresses: the input hook.
        assert!(r.contains("hook input"), "{r}");
        assert!(
            r.contains("iifname \"strata0\" counter reject with icmpx type admin-prohibited"),
            "{r}"
        );
        // DNS is accepted before the deny list.
        let dns_at = r.find("ip daddr { 10.255.255.53 }").expect("dns rule");
        let deny_at = r.find("ip daddr { 0.0.0.0/8").expect("deny rule");
        assert!(dns_at < deny_at, "{r}");
        assert!(r.contains("169.254.0.0/16"), "{r}");
        assert!(r.contains("192.0.2.0/24"), "{r}");
        assert!(r.contains("ip saddr != 10.213.0.0/16 counter drop"), "{r}");
        assert!(r.contains("meta nfproto ipv6"), "{r}");
        assert!(r.contains("oifname \"strata0\" ct state established,related accept"));
        assert!(r.contains("iifname \"strata0\" oifname != \"strata0\" masquerade"));
        assert!(r.contains("iifname \"stabc12*\" counter drop"), "{r}");
        let no_dns = ruleset(&config(), &[], &host);
        assert!(!no_dns.contains("dport 53"), "{no_dns}");
    }

    #[test]
    fn addresses_are_picked_lowest_free_and_never_reserved() {
        let subnet: Ipv4Net = "10.9.0.0/29".parse().expect("net");
        let mut used = HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = pick_address(&subnet, &used) {
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(
            got,
            ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
        );
        used.remove(&Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(
            pick_address(&subnet, &used),
            Some(Ipv4Addr::new(10, 9, 0, 4))
        );
    }

    #[test]
    fn attachments_are_named_from_prefixes_and_key() {
        let c = config();
        let a =
            plan_attachment(&c, "0123456789abcdef", Ipv4Addr::new(10, 213, 0, 2)).expect("plans");
        assert_eq!(a.netns, "strata-abc123-0123456789abcdef");
        assert_eq!(a.host_veth, "stabc1201234567");
        assert!(a.host_veth.len() <= 15);
        assert_eq!(
            a.netns_path(),
            PathBuf::from("/run/netns/strata-abc123-0123456789abcdef")
        );
        assert_eq!(a.gateway, Ipv4Addr::new(10, 213, 0, 1));
        let (host, inside) = attach_commands(&a);
        assert!(host.contains("netns add strata-abc123-0123456789abcdef\n"));
        assert!(host.contains(
            "link add stabc1201234567 type veth peer name eth0 netns strata-abc123-0123456789abcdef\n"
        ));
        assert!(host.contains("master strata0\n"));
        assert!(host.contains("isolated on"));
        assert!(inside.contains("addr add 10.213.0.2/16 dev eth0\n"));
        assert!(inside.contains("route add default via 10.213.0.1 dev eth0\n"));
        assert!(inside.contains("link set dev lo up\n"));
        for bad in ["short", "0123456789abcde/", "../../etc/xx"] {
            assert!(plan_attachment(&c, bad, Ipv4Addr::new(10, 213, 0, 2)).is_err());
        }
        for bad_ip in [
            [10, 213, 0, 1],
            [10, 213, 0, 0],
            [10, 213, 255, 255],
            [10, 1, 0, 2],
        ] {
            assert!(plan_attachment(&c, "0123456789abcdef", Ipv4Addr::from(bad_ip)).is_err());
        }
    }

    #[test]
    fn config_validation() {
        assert!(config().validate().is_ok());
        assert_eq!(config().table(), "strata_strata0");
        let mut c = config();
        c.bridge = "a-name-too-long-for-linux".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.bridge = "br;rm".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.veth_prefix = "toolong".repeat(2);
        assert!(c.validate().is_err());
        let mut c = config();
        c.subnet = "169.254.0.0/16".parse().expect("net");
        assert!(c.validate().is_err());
        let mut c = config();
        c.subnet = "10.0.0.0/30".parse().expect("net");
        assert!(c.validate().is_err(), "too small");
        let mut c = config();
        c.netns_prefix = "../x".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.bridge = "my-br.0".into();
        assert_eq!(c.table(), "strata_my_br_0");
    }
}
