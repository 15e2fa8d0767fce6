//! Start-up recovery: whatever a crash or kill left behind is undone before serving.

use std::collections::HashSet;

use crate::{ControlError, Platform, CONTAINER_PREFIX};

/// What recovery found and cleaned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Mounts under the scratch area that were undone.
    pub mounts: usize,
    /// Leftover containers deleted.
    pub containers: usize,
    /// Leftover cgroups removed.
    pub cgroups: usize,
    /// Leftover function-network namespaces and veth links removed (the bridge and rules go
    /// too; they are made again on first use).
    pub network: usize,
    /// Layer directories no record points at (an interrupted build or removal), deleted.
    pub orphan_layers: usize,
    /// Recorded layers whose directory is missing (should never happen; logged loudly).
    pub missing_layers: usize,
    /// Unused layers collected.
    pub collected_layers: usize,
}

impl Platform {
    /// Undoes what an earlier process left: mounts under the scratch area, containers and
    /// cgroups with Strata's prefix, the function network's namespaces, links, rules and
    /// bridge, scratch files, and layer directories without a record.
    pub async fn recover(&self) -> Result<Recovery, ControlError> {
        let mut r = Recovery::default();
        // A runc still creating a container for the killed server would otherwise finish after
        // this clean-up and leave its container and cgroups behind.
        r.containers += self.runc.kill_strays();
        match self.runc.list_ids().await {
            Ok(ids) => {
                for id in ids.iter().filter(|id| id.starts_with(CONTAINER_PREFIX)) {
                    match self.runc.delete_force(id).await {
                        Ok(()) => r.containers += 1,
                        Err(e) => {
                            tracing::warn!(instance = %id, error = %e, "cannot delete leftover container")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list containers"),
        }
        let tmp = self.store.root().join("tmp");
        for m in strata_sandbox::mount::mounts_under(&tmp)? {
            match strata_sandbox::mount::unmount(&m) {
                Ok(()) => r.mounts += 1,
                Err(e) => {
                    tracing::warn!(path = %m.display(), error = %e, "cannot unmount leftover mount")
                }
            }
        }
        r.network = self.network_recover().await;
        r.cgroups =
            strata_sandbox::cleanup_cgroups(&self.settings.cgroup_parent, CONTAINER_PREFIX)?;
        self.store.clean_tmp()?;
        let known: HashSet<_> = self.meta.layer_digests()?.into_iter().collect();
        let on_disk: HashSet<_> = self.store.list_layers()?.into_iter().collect();
        for d in on_disk.difference(&known) {
            self.store.remove_layer(d)?;
            r.orphan_layers += 1;
        }
        for d in known.difference(&on_disk) {
            tracing::error!(digest = %d, "a recorded layer is missing from the store");
            r.missing_layers += 1;
        }
        r.collected_layers = self.collect_layers().await;
        Ok(r)
    }
}
