//! The store as a whole: space accounting and garbage collection.

use std::collections::HashSet;
use std::sync::Arc;

use strata_store::manifest::EntryKind;
use strata_types::api::{GcReport, StoreStats};

use crate::build::blocking;
use crate::{ControlError, Platform};

impl Platform {
    /// Logical bytes (every image and runtime version counted as a full image), physical
    /// bytes on disk, their ratio, and the distinct content floor.
    pub async fn store_stats(self: &Arc<Self>) -> Result<StoreStats, ControlError> {
        let platform = Arc::clone(self);
        blocking(move || -> Result<StoreStats, ControlError> {
            let _lease = platform.gc_lock.try_read();
            let meta = &platform.meta;
            let size = |layers: &[strata_types::Digest]| -> Result<u64, ControlError> {
                let mut total = 0;
                for d in layers {
                    total += meta.layer(d)?.map(|l| l.size_bytes).unwrap_or(0);
                }
                Ok(total)
            };
            let images = meta.images()?;
            let runtimes = meta.runtimes()?;
            let mut logical = 0;
            for i in &images {
                logical += size(&i.layers)?;
            }
            for r in &runtimes {
                logical += size(&r.layers)?;
            }
            let disk = platform.store.stats()?;
            let mut seen: HashSet<String> = HashSet::new();
            let mut distinct = 0u64;
            for d in platform.store.list_layers()? {
                let m = platform.store.manifest(&d)?;
                for e in &m.entries {
                    if let EntryKind::File { size, sha256 } = &e.kind {
                        if seen.insert(sha256.clone()) {
                            distinct += size;
                        }
                    }
                }
            }
            Ok(StoreStats {
                logical_bytes: logical,
                physical_bytes: disk.apparent_bytes,
                allocated_bytes: disk.allocated_bytes,
                ratio: if disk.apparent_bytes == 0 {
                    0.0
                } else {
                    logical as f64 / disk.apparent_bytes as f64
                },
                distinct_content_bytes: distinct,
                layers: disk.layers,
                pool_files: disk.pool_files,
                dedup_saved_bytes: disk.dedup_saved_bytes,
                images: images.len() as u64,
                runtimes: runtimes.len() as u64,
                packages: meta.packages()?.len() as u64,
            })
        })
        .await
    }

    /// Removes what nothing references: layers no image, runtime version or package build
    /// uses, function code no revision uses, and pool files no layer links to. Waits for
    /// running builds and imports to finish and holds new ones back meanwhile, so nothing a
    /// build is about to use is collected; invocations go on.
    pub async fn store_gc(self: &Arc<Self>) -> Result<GcReport, ControlError> {
        let _exclusive = self.gc_lock.write().await;
        let platform = Arc::clone(self);
        blocking(move || -> Result<GcReport, ControlError> {
            let mut report = GcReport::default();
            let before = platform.store.stats()?.apparent_bytes;
            for d in platform.meta.unused_layers()? {
                // Forget first, then delete: a crash in between leaves an orphan directory
                // that start-up removes, never a row pointing at a missing layer.
                if platform.meta.delete_layer(&d)? {
                    match platform.store.remove_layer(&d) {
                        Ok(()) => report.layers_removed += 1,
                        Err(e) => tracing::warn!(digest = %d, error = %e, "cannot remove layer"),
                    }
                }
            }
            for d in platform.meta.unused_code()? {
                if platform.meta.delete_code(&d)? {
                    match platform.store.remove_code(&d) {
                        Ok(()) => report.code_removed += 1,
                        Err(e) => tracing::warn!(code = %d, error = %e, "cannot remove code"),
                    }
                }
            }
            let (files, _) = platform.store.collect_files()?;
            report.files_removed = files;
            // Layer files live on in the pool until it is collected, so measure the disk.
            report.bytes_freed = before.saturating_sub(platform.store.stats()?.apparent_bytes);
            tracing::info!(
                layers = report.layers_removed,
                code = report.code_removed,
                files = report.files_removed,
                bytes = report.bytes_freed,
                "store collected"
            );
            Ok(report)
        })
        .await
    }
}
