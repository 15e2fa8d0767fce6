//! `strata bootstrap`: the base image and built-in runtimes every installation starts with.

use std::sync::Arc;

use strata_types::api::{BootstrapImageRequest, BootstrapItem, BootstrapResult, CreateRuntimeSpec};
use strata_types::{Resources, RuntimeRef};

use crate::runtimes::text_digest;
use crate::{ControlError, Emitter, Platform};

/// The base image of the built-in runtimes.
pub const BASE_IMAGE: &str = "debian-bookworm";
/// Its Debian suite.
pub const BASE_SUITE: &str = "bookworm";

/// The built-in runtimes: name and Dockerfile (kept in the repository under `runtimes/`).
pub const BUILTIN_RUNTIMES: &[(&str, &str)] = &[
    (
        "python3",
        include_str!("../../../runtimes/python3/Dockerfile"),
    ),
    (
        "nodejs",
        include_str!("../../../runtimes/nodejs/Dockerfile"),
    ),
];

impl Platform {
    /// Makes sure the base image and the built-in runtimes exist. Idempotent: an existing image
    /// is kept, and a runtime is rebuilt only when its Dockerfile changed (as a new version).
    pub async fn bootstrap(
        self: &Arc<Self>,
        events: &Emitter,
    ) -> Result<BootstrapResult, ControlError> {
        let _one_at_a_time = self.bootstrap_lock.lock().await;
        let mut items = Vec::new();
        let total = 1 + BUILTIN_RUNTIMES.len() as u64;
        events.progress_of(format!("image {BASE_IMAGE}"), 1, total);
        let status = if self.meta.image(BASE_IMAGE)?.is_some() {
            "unchanged"
        } else {
            let req = BootstrapImageRequest {
                suite: BASE_SUITE.into(),
                include: vec![],
                mirror: None,
            };
            self.bootstrap_image(BASE_IMAGE, &req, events).await?;
            "created"
        };
        items.push(BootstrapItem {
            kind: "image".into(),
            name: BASE_IMAGE.into(),
            status: status.into(),
        });
        for (i, (name, dockerfile)) in BUILTIN_RUNTIMES.iter().enumerate() {
            events.progress_of(format!("runtime {name}"), i as u64 + 2, total);
            let current = self.meta.runtime(name, None)?;
            let item = match current {
                Some(rt) if rt.dockerfile_digest == text_digest(dockerfile) => BootstrapItem {
                    kind: "runtime".into(),
                    name: rt.reference(),
                    status: "unchanged".into(),
                },
                _ => {
                    let spec = CreateRuntimeSpec {
                        name: name.to_string(),
                        dockerfile: dockerfile.to_string(),
                        build_args: Default::default(),
                        resources: Resources::default(),
                        no_cache: false,
                    };
                    let rt = self.create_runtime(&spec, None, events).await?;
                    BootstrapItem {
                        kind: "runtime".into(),
                        name: RuntimeRef {
                            name: rt.name,
                            version: Some(rt.version),
                        }
                        .to_string(),
                        status: "created".into(),
                    }
                }
            };
            items.push(item);
        }
        Ok(BootstrapResult { items })
    }
}
