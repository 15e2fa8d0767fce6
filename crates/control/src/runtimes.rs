//! Runtimes: versions built from Dockerfiles, listed, described and removed.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use strata_meta::{NewRuntime, RuntimeRecord};
use strata_types::api::{CreateRuntimeSpec, RuntimeInfo};
use strata_types::{validate_name, Digest, Resources, RuntimeRef};

use crate::build::blocking;
use crate::{ControlError, Emitter, Platform};

impl Platform {
    /// Builds a runtime from a Dockerfile and records it as the next version of `spec.name`.
    /// `context` is a tar of the build context (none: an empty context). Nothing is recorded
    /// unless every step succeeds.
    pub async fn create_runtime(
        self: &Arc<Self>,
        spec: &CreateRuntimeSpec,
        context: Option<&Path>,
        events: &Emitter,
    ) -> Result<RuntimeInfo, ControlError> {
        validate_name(&spec.name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if !spec.packages.is_empty() {
            return self.create_package_runtime(spec, events).await;
        }
        if spec.base.is_some() || spec.layered {
            return Err(ControlError::Invalid(
                "--base and --layered make a runtime from packages: pass --packages too".into(),
            ));
        }
        if spec.dockerfile.trim().is_empty() {
            return Err(ControlError::Invalid(
                "a runtime needs a Dockerfile (-f) or packages (--base IMAGE --packages a,b)"
                    .into(),
            ));
        }
        // Every parse and plan error surfaces here, before anything runs.
        let (plan, externals) = self.plan_dockerfile(&spec.dockerfile, &spec.build_args)?;
        let _lease = self.gc_lock.read().await;
        let ctx = self.store.scratch_dir("context")?;
        if let Some(tar) = context {
            let tar = tar.to_path_buf();
            let dest = ctx.path().to_path_buf();
            let limits = self.context_limits();
            blocking(move || crate::packages::unpack_context(&tar, &dest, &limits)).await?;
        }
        let steps: usize = plan
            .needed_stages()
            .iter()
            .map(|&i| plan.stages[i].steps.len())
            .sum();
        events.progress(format!("building runtime {} ({steps} steps)", spec.name));
        let built = self
            .execute_plan(&plan, &externals, ctx.path(), spec.no_cache, events)
            .await?;
        let rec = self.meta.insert_runtime(&NewRuntime {
            name: spec.name.clone(),
            base: built.base,
            base_image: built.base_image,
            config: built.config,
            resources: spec.resources.or(&Resources::platform_default()),
            dockerfile: spec.dockerfile.clone(),
            dockerfile_digest: text_digest(&spec.dockerfile),
            layers: built.layers,
            kind: "dockerfile".into(),
            packages: vec![],
            parent: None,
        })?;
        tracing::info!(runtime = %rec.reference(), layers = rec.layers.len(), "runtime created");
        self.forget_resolutions();
        self.runtime_info(rec)
    }

    /// Every runtime version.
    pub fn runtimes(&self) -> Result<Vec<RuntimeInfo>, ControlError> {
        self.meta
            .runtimes()?
            .into_iter()
            .map(|r| self.runtime_info(r))
            .collect()
    }

    /// One runtime version (`name` alone: the newest).
    pub fn runtime(&self, r: &RuntimeRef) -> Result<RuntimeInfo, ControlError> {
        let rec = self.runtime_record(r)?;
        self.runtime_info(rec)
    }

    pub(crate) fn runtime_record(&self, r: &RuntimeRef) -> Result<RuntimeRecord, ControlError> {
        self.meta
            .runtime(&r.name, r.version)?
            .ok_or_else(|| ControlError::NotFound {
                what: "runtime",
                name: r.to_string(),
            })
    }

    fn runtime_info(&self, rec: RuntimeRecord) -> Result<RuntimeInfo, ControlError> {
        let layers = self.layer_infos(&rec.layers)?;
        Ok(RuntimeInfo {
            size_bytes: layers.iter().map(|l| l.size_bytes).sum(),
            name: rec.name,
            version: rec.version,
            base: rec.base,
            layers,
            config: rec.config,
            resources: rec.resources,
            dockerfile_digest: rec.dockerfile_digest,
            kind: rec.kind,
            packages: rec.packages,
            parent: rec.parent,
            created_at: rec.created_at,
        })
    }

    /// Removes one version, or every version of a name. Returns the removed references.
    pub async fn delete_runtime(
        self: &Arc<Self>,
        r: &RuntimeRef,
    ) -> Result<Vec<String>, ControlError> {
        let newest = self.meta.runtime(&r.name, None)?.map(|rt| rt.version);
        let users = self.meta.runtime_users(&r.name, r.version, newest)?;
        if !users.is_empty() {
            return Err(ControlError::InUse {
                what: "runtime",
                name: r.to_string(),
                users: users.join(", "),
            });
        }
        let removed = self.meta.delete_runtime(&r.name, r.version)?;
        self.forget_resolutions();
        if removed.is_empty() {
            return Err(ControlError::NotFound {
                what: "runtime",
                name: r.to_string(),
            });
        }
        self.collect_layers().await;
        Ok(removed)
    }
}

impl Platform {
    /// Sets the generic pool size of a runtime (every version in use); takes effect for pools
    /// made from now on and at the next pool round for existing ones.
    pub fn set_pool(
        &self,
        name: &str,
        p: strata_types::api::PoolSettings,
    ) -> Result<strata_types::api::PoolSettings, ControlError> {
        validate_name(name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if self.meta.runtime(name, None)?.is_none() {
            return Err(ControlError::NotFound {
                what: "runtime",
                name: name.into(),
            });
        }
        if p.min > p.max || p.max > 64 {
            return Err(ControlError::Invalid(format!(
                "pool: need min ({}) <= max ({}) <= 64",
                p.min, p.max
            )));
        }
        self.meta.set_setting(
            &format!("pool.{name}"),
            &serde_json::to_string(&p).unwrap_or_default(),
        )?;
        self.reset_pools(name);
        Ok(p)
    }
}

/// The digest of a text.
pub(crate) fn text_digest(text: &str) -> Digest {
    Digest::from_bytes(&Sha256::digest(text.as_bytes()).into())
}
