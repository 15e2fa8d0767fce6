//! The server loop: open the platform, recover, make sure a token exists, serve until a signal.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use strata_control::{Platform, Settings};

use crate::{router, AppState};

/// The admin token's file name inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// OCI runtime binary.
    pub runc: Option<PathBuf>,
    /// Debian mirror for bootstraps.
    pub mirror: Option<String>,
    /// Largest upload in bytes.
    pub max_upload: u64,
    /// Idle time after which a function instance stops.
    pub idle_timeout: std::time::Duration,
    /// Most function instances at once.
    pub max_instances: usize,
    /// Node memory budget in bytes (the platform default when unset).
    pub memory_budget: Option<u64>,
    /// Bridge of the function network (default `strata0`).
    pub net_bridge: Option<String>,
    /// Subnet of the function network, e.g. `10.213.0.0/16` (the default).
    pub net_subnet: Option<String>,
    /// Let functions with network access reach private (RFC 1918, CGNAT) addresses and the
    /// host's connected networks.
    pub net_allow_private: bool,
    /// Start even when the runc binary is a release known to let containers escape.
    pub allow_vulnerable_runc: bool,
    /// Repository locations function code may be fetched from with git (the platform's
    /// default, https only, when `None`).
    pub git_schemes: Option<Vec<strata_sandbox::git::GitScheme>>,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(opts: ServerOptions) -> anyhow::Result<()> {
    let mut settings = Settings::new(opts.data_dir.clone());
    if let Some(runc) = &opts.runc {
        settings.runc = runc.clone();
    }
    if let Some(mirror) = &opts.mirror {
        settings.mirror = mirror.clone();
    }
    check_runc(&settings.runc, opts.allow_vulnerable_runc).await?;
    settings.idle_timeout = opts.idle_timeout;
    if let Some(schemes) = &opts.git_schemes {
        settings.git.schemes = schemes.clone();
    }
    settings.max_instances = opts.max_instances.max(1);
    if let Some(b) = opts.memory_budget {
        settings.memory_budget = b;
    }
    if let Some(bridge) = &opts.net_bridge {
        settings.network.bridge = bridge.clone();
    }
    if let Some(subnet) = &opts.net_subnet {
        settings.network.subnet = subnet
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--net-subnet: {e}"))?;
    }
    settings.network.block_private = !opts.net_allow_private;
    settings
        .network
        .validate()
        .context("checking the function network settings")?;
    std::fs::create_dir_all(&settings.runc_state).with_context(|| {
        format!(
            "creating runc state directory {}",
            settings.runc_state.display()
        )
    })?;
    let platform = Platform::open(settings).context("opening the data directory")?;
    let recovery = platform
        .recover()
        .await
        .context("recovering from the previous run")?;
    tracing::info!(?recovery, "recovery done");
    platform.spawn_reaper();
    let token = ensure_token(&opts.data_dir).context("preparing the admin token")?;
    let state = AppState {
        platform: Arc::clone(&platform),
        token: Arc::new(token),
        max_upload: opts.max_upload,
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    tracing::info!(listen = %opts.listen, data = %opts.data_dir.display(), "strata server ready");
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::clone(&stopping);
    // Streamed answers (NDJSON events) are written as several small chunks; without
    // TCP_NODELAY the last one waits for the client's delayed ACK (~40 ms) on keep-alive
    // connections.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        notify.notify_waiters();
    });
    // In-flight requests get a grace period; long streams (log follows) are then cut.
    let grace = async {
        stopping.notified().await;
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    };
    tokio::select! {
        r = server => r.context("serving HTTP")?,
        _ = grace => tracing::warn!("requests still open after the grace period; stopping anyway"),
    }
    platform.stop_instances().await;
    tracing::info!("strata server stopped");
    Ok(())
}

/// The flag and variable that let the server start on a vulnerable runc.
const ALLOW_VULNERABLE_RUNC: &str =
    "strata server --allow-vulnerable-runc (or STRATA_ALLOW_VULNERABLE_RUNC=1)";

/// Refuses a runc release known to let containers escape, unless allowed (then warns loudly).
/// A runtime whose version cannot be read or judged (not runc, or missing) is logged and
/// accepted: builds and instances report a missing runtime when they need it.
async fn check_runc(binary: &Path, allow_vulnerable: bool) -> anyhow::Result<()> {
    use strata_sandbox::{runc_verdict, Runc, Verdict, RUNC_FIXED_RELEASES};
    let runc = Runc::new(binary.to_path_buf(), PathBuf::new());
    let output = match runc.version_output().await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(runc = %binary.display(), error = %e, "cannot read the runc version");
            return Ok(());
        }
    };
    match runc_verdict(&output) {
        Verdict::Supported { version } => {
            tracing::info!(runc = %binary.display(), %version, "runc version has no known container escape");
            Ok(())
        }
        Verdict::Unknown { reason } => {
            tracing::warn!(runc = %binary.display(), %reason, "cannot tell whether the OCI runtime has known container escapes");
            Ok(())
        }
        Verdict::Vulnerable { version, cves } => {
            let list = cves
                .iter()
                .map(|c| format!("{} ({})", c.id, c.summary))
                .collect::<Vec<_>>()
                .join("; ");
            let problem = format!(
                "runc {version} at {} is vulnerable to container escapes: {list}. \
                 Fixed in runc {RUNC_FIXED_RELEASES}",
                binary.display()
            );
            if allow_vulnerable {
                tracing::warn!(
                    "!!! {problem}. Starting anyway because of {ALLOW_VULNERABLE_RUNC}: \
                     a container may be able to take over this host. !!!"
                );
                Ok(())
            } else {
                anyhow::bail!(
                    "{problem}. Install a fixed runc (--runc PATH or STRATA_RUNC), or accept \
                     the risk with {ALLOW_VULNERABLE_RUNC}"
                )
            }
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Reads the admin token, writing a fresh random one (mode 0600, atomically) on first start.
pub fn ensure_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    let token = strata_control::random_hex(32);
    let tmp = data_dir.join(format!(".{TOKEN_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(token)
}
