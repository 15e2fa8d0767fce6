//! Network access for functions that ask for it (`--network`): each of their instances gets a
//! namespace of its own on the server's bridge, with NAT egress and nothing of the host, its
//! networks, link-local metadata addresses or other instances (see `strata_sandbox::net` and
//! `docs/adr/0009-function-networking.md`).
//!
//! The bridge and the rules are made when the first such instance starts — a server whose
//! functions never use the network leaves the host's networking untouched — and removed at
//! clean shutdown; recovery at start removes what a crash left.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use strata_sandbox::net::{self, Attachment, HostNetwork};

use crate::{ControlError, Platform};

/// The server's function network: set up on first use, and the addresses in use.
#[derive(Default)]
pub(crate) struct Networking {
    host: tokio::sync::Mutex<Option<Arc<HostNetwork>>>,
    used: Arc<Mutex<HashSet<Ipv4Addr>>>,
}

/// One instance's address and namespace, released by [`Lease::release`] (or, as a fallback,
/// when dropped).
pub(crate) struct Lease {
    /// Names and addresses.
    pub attachment: Attachment,
    /// The `resolv.conf` the instance gets.
    pub resolv_conf: String,
    used: Arc<Mutex<HashSet<Ipv4Addr>>>,
    attached: bool,
    released: bool,
}

impl Lease {
    /// Makes the namespace and veth pair (before the container starts).
    pub async fn attach(&mut self) -> Result<(), ControlError> {
        let a = self.attachment.clone();
        crate::build::blocking(move || net::attach(&a)).await?;
        self.attached = true;
        Ok(())
    }

    /// Removes the namespace and veth pair (after the container is gone) and frees the address.
    pub async fn release(mut self) {
        let a = self.attachment.clone();
        let attached = self.attached;
        self.released = true;
        if attached {
            if let Err(e) = crate::build::blocking(move || net::detach(&a)).await {
                tracing::warn!(netns = %self.attachment.netns, error = %e, "cannot remove an instance's network");
            }
        }
        self.free();
    }

    fn free(&self) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.attachment.address);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if self.attached {
            if let Err(e) = net::detach(&self.attachment) {
                tracing::warn!(netns = %self.attachment.netns, error = %e, "cannot remove an instance's network");
            }
        }
        self.free();
    }
}

impl Platform {
    /// Sets up the host network if needed and reserves an address for an instance; `key` is
    /// the instance id's random part.
    pub(crate) async fn network_lease(&self, key: &str) -> Result<Lease, ControlError> {
        let host = {
            let mut guard = self.network.host.lock().await;
            if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                // Shutdown removes the network; never make it again behind its back.
                return Err(ControlError::Internal("the server is stopping".into()));
            }
            match &*guard {
                Some(h) => Arc::clone(h),
                None => {
                    let config = self.settings.network.clone();
                    let h =
                        Arc::new(crate::build::blocking(move || net::setup_host(&config)).await?);
                    *guard = Some(Arc::clone(&h));
                    h
                }
            }
        };
        let address = {
            let mut used = self.network.used.lock().unwrap_or_else(|e| e.into_inner());
            let ip = net::pick_address(&host.config.subnet, &used).ok_or_else(|| {
                ControlError::Internal(format!(
                    "no free address left in the function subnet {}",
                    host.config.subnet
                ))
            })?;
            used.insert(ip);
            ip
        };
        let attachment = match net::plan_attachment(&host.config, key, address) {
            Ok(a) => a,
            Err(e) => {
                self.network
                    .used
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&address);
                return Err(e.into());
            }
        };
        Ok(Lease {
            attachment,
            resolv_conf: host.resolv_conf.clone(),
            used: Arc::clone(&self.network.used),
            attached: false,
            released: false,
        })
    }

    /// Removes the bridge and rules at clean shutdown (after every instance stopped).
    pub(crate) async fn network_shutdown(&self) {
        let mut guard = self.network.host.lock().await;
        if guard.take().is_none() && !self.settings.network.state_file.exists() {
            return;
        }
        let config = self.settings.network.clone();
        match crate::build::blocking(move || net::teardown_host(&config)).await {
            Ok(t) => tracing::info!(?t, "function network removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove the function network"),
        }
    }

    /// Removes namespaces, veth links, rules and bridge an earlier process of this server left;
    /// returns how many namespaces and links it removed.
    pub(crate) async fn network_recover(&self) -> usize {
        let config = self.settings.network.clone();
        match crate::build::blocking(move || net::teardown_host(&config)).await {
            Ok(t) => {
                if t.host {
                    tracing::info!(bridge = %self.settings.network.bridge, "removed a leftover function network");
                }
                t.namespaces + t.links
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove a leftover function network");
                0
            }
        }
    }
}
