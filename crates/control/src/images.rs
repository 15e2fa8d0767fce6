//! Base images: bootstrap from the Debian mirror, import from archives, list, describe, remove.

use std::path::Path;
use std::sync::Arc;

use strata_meta::{now_rfc3339, ImageRecord, LayerRecord};
use strata_store::import::{ArchiveFormat, ImportedImage};
use strata_types::api::{BootstrapImageRequest, ImageInfo, LayerInfo};
use strata_types::{validate_name, Digest, ImageConfig, DEFAULT_PATH};

use crate::build::blocking;
use crate::{ControlError, Emitter, Platform};

impl Platform {
    /// Every image.
    pub fn images(&self) -> Result<Vec<ImageInfo>, ControlError> {
        self.meta
            .images()?
            .into_iter()
            .map(|r| self.image_info(r))
            .collect()
    }

    /// One image.
    pub fn image(&self, name: &str) -> Result<ImageInfo, ControlError> {
        let rec = self
            .meta
            .image(name)?
            .ok_or_else(|| ControlError::NotFound {
                what: "image",
                name: name.into(),
            })?;
        self.image_info(rec)
    }

    fn image_info(&self, rec: ImageRecord) -> Result<ImageInfo, ControlError> {
        let layers = self.layer_infos(&rec.layers)?;
        Ok(ImageInfo {
            size_bytes: layers.iter().map(|l| l.size_bytes).sum(),
            used_by: self.meta.image_users(&rec.name)?,
            name: rec.name,
            source: rec.source,
            layers,
            config: rec.config,
            created_at: rec.created_at,
        })
    }

    /// Facts about layers, with how many images and runtimes share each.
    pub(crate) fn layer_infos(&self, digests: &[Digest]) -> Result<Vec<LayerInfo>, ControlError> {
        digests
            .iter()
            .map(|d| {
                let rec = self.meta.layer(d)?.ok_or_else(|| ControlError::NotFound {
                    what: "layer",
                    name: d.to_string(),
                })?;
                Ok(LayerInfo {
                    digest: rec.digest,
                    size_bytes: rec.size_bytes,
                    entries: rec.entries,
                    shared_by: self.meta.layer_users(d)?,
                    created_by: rec.created_by,
                })
            })
            .collect()
    }

    /// Removes an image; refused while a runtime version is built on it.
    pub async fn delete_image(self: &Arc<Self>, name: &str) -> Result<(), ControlError> {
        if !self.meta.delete_image(name)? {
            return Err(ControlError::NotFound {
                what: "image",
                name: name.into(),
            });
        }
        self.collect_layers().await;
        Ok(())
    }

    /// Builds a Debian root file system from the mirror and stores it as image `name`.
    pub async fn bootstrap_image(
        self: &Arc<Self>,
        name: &str,
        req: &BootstrapImageRequest,
        events: &Emitter,
    ) -> Result<ImageInfo, ControlError> {
        validate_name(name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if !valid_word(&req.suite) {
            return Err(ControlError::Invalid(format!(
                "invalid suite {:?}: expected a Debian suite name such as bookworm",
                req.suite
            )));
        }
        if let Some(bad) = req.include.iter().find(|p| !valid_word(p)) {
            return Err(ControlError::Invalid(format!(
                "invalid package name {bad:?} in --include"
            )));
        }
        self.ensure_no_image(name)?;
        let _lease = self.gc_lock.read().await;
        let scratch = self.store.scratch_dir("bootstrap")?;
        let tar = scratch.path().join("rootfs.tar");
        let mirror = req
            .mirror
            .clone()
            .unwrap_or_else(|| self.settings.mirror.clone());
        events.progress(format!("bootstrapping Debian {} from {mirror}", req.suite));
        let ev = events.clone();
        let mut on_output = move |stream, line| ev.output(stream, line);
        strata_sandbox::debootstrap_tar(&req.suite, &req.include, &mirror, &tar, &mut on_output)
            .await?;
        events.progress("storing the root file system as a layer");
        let imported = self.import_file(&tar, events).await?;
        let mut source = format!("bootstrap {} (minbase)", req.suite);
        if !req.include.is_empty() {
            source = format!("{source} +{}", req.include.join(","));
        }
        let mut config = imported.config;
        if config.get_env("PATH").is_none() {
            config.set_env("PATH", DEFAULT_PATH);
        }
        self.record_image(name, &source, config, &imported.layers, "bootstrap")
    }

    /// Imports an OCI image layout, a `docker save` archive or a root file-system tar as image
    /// `name`.
    pub async fn import_image(
        self: &Arc<Self>,
        name: &str,
        archive: &Path,
        events: &Emitter,
    ) -> Result<ImageInfo, ControlError> {
        validate_name(name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        self.ensure_no_image(name)?;
        let _lease = self.gc_lock.read().await;
        let imported = self.import_file(archive, events).await?;
        let format = match imported.format {
            ArchiveFormat::OciLayout => "oci-layout",
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::RootfsTar => "rootfs-tar",
        };
        let mut config = imported.config;
        if config.get_env("PATH").is_none() {
            config.set_env("PATH", DEFAULT_PATH);
        }
        self.record_image(
            name,
            &format!("import {format}"),
            config,
            &imported.layers,
            "import",
        )
    }

    fn ensure_no_image(&self, name: &str) -> Result<(), ControlError> {
        if self.meta.image(name)?.is_some() {
            return Err(ControlError::AlreadyExists {
                what: "image",
                name: name.into(),
            });
        }
        Ok(())
    }

    async fn import_file(
        self: &Arc<Self>,
        archive: &Path,
        events: &Emitter,
    ) -> Result<ImportedImage, ControlError> {
        let me = Arc::clone(self);
        let archive = archive.to_path_buf();
        let ev = events.clone();
        blocking(move || {
            let mut progress = |m: String| ev.progress(m);
            strata_store::import::import_archive(&me.store, &archive, true, &mut progress)
        })
        .await
    }

    fn record_image(
        &self,
        name: &str,
        source: &str,
        config: ImageConfig,
        layers: &[strata_store::LayerMeta],
        created_by: &str,
    ) -> Result<ImageInfo, ControlError> {
        for l in layers {
            self.meta.put_layer(&LayerRecord {
                digest: l.digest.clone(),
                size_bytes: l.size_bytes,
                entries: l.entries,
                created_by: created_by.into(),
            })?;
        }
        self.meta.insert_image(&ImageRecord {
            name: name.into(),
            source: source.into(),
            config,
            layers: layers.iter().map(|l| l.digest.clone()).collect(),
            created_at: now_rfc3339(),
        })?;
        self.image(name)
    }

    /// Deletes layers that no image or runtime uses, unless a build, import or run is in
    /// progress (then the next removal or start-up collects them). Returns how many went.
    pub async fn collect_layers(&self) -> usize {
        let Ok(_exclusive) = self.gc_lock.try_write() else {
            return 0;
        };
        let unused = match self.meta.unused_layers() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list unused layers");
                return 0;
            }
        };
        let mut n = 0;
        for d in unused {
            // Forget first, then delete: a crash in between leaves an orphan directory that
            // start-up removes, never a row pointing at a missing layer.
            match self.meta.delete_layer(&d) {
                Ok(true) => {
                    if let Err(e) = self.store.remove_layer(&d) {
                        tracing::warn!(digest = %d, error = %e, "cannot remove layer");
                    }
                    n += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(digest = %d, error = %e, "cannot forget layer"),
            }
        }
        n
    }
}

/// A Debian suite or package name: `[a-z0-9][a-z0-9.+-]*`.
fn valid_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-')
        })
}
