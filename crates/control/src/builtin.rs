//! `strata bootstrap`: the base image and built-in runtimes every installation starts with.

use std::sync::Arc;

use sha2::Digest as _;
use strata_types::api::{BootstrapImageRequest, BootstrapItem, BootstrapResult, CreateRuntimeSpec};
use strata_types::{Resources, RuntimeRef};

use crate::runtimes::text_digest;
use crate::{ControlError, Emitter, Platform};

/// The base image of the built-in runtimes.
pub const BASE_IMAGE: &str = "debian-bookworm";
/// Its Debian suite.
pub const BASE_SUITE: &str = "bookworm";

/// A built-in runtime: name, Dockerfile, and build-context files (path, content).
pub type Builtin = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static [u8])],
);

/// The built-in runtimes, kept in the repository under `runtimes/` and embedded in the binary.
pub const BUILTIN_RUNTIMES: &[Builtin] = &[
    (
        "python3",
        include_str!("../../../runtimes/python3/Dockerfile"),
        &[
            (
                "bootstrap/start.py",
                include_bytes!("../../../runtimes/python3/bootstrap/start.py"),
            ),
            (
                "bootstrap/strata_bootstrap.py",
                include_bytes!("../../../runtimes/python3/bootstrap/strata_bootstrap.py"),
            ),
        ],
    ),
    (
        "nodejs",
        include_str!("../../../runtimes/nodejs/Dockerfile"),
        &[(
            "bootstrap/strata_bootstrap.mjs",
            include_bytes!("../../../runtimes/nodejs/bootstrap/strata_bootstrap.mjs"),
        )],
    ),
];

/// A digest of a built-in runtime's Dockerfile and context: it is rebuilt when this changes.
fn builtin_digest(dockerfile: &str, files: &[(&str, &[u8])]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(dockerfile.as_bytes());
    for (name, data) in files {
        h.update(b"\0");
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(data);
    }
    hex::encode(h.finalize())
}

/// Writes context files into a tar archive.
fn context_tar(path: &std::path::Path, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(path)?);
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, *data)?;
    }
    b.into_inner()?.sync_all()
}

impl Platform {
    /// Makes sure the base image and the built-in runtimes exist. Idempotent: an existing image
    /// is kept, and a runtime is rebuilt (as a new version) only when its Dockerfile or context
    /// changed.
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
        for (i, (name, dockerfile, files)) in BUILTIN_RUNTIMES.iter().enumerate() {
            events.progress_of(format!("runtime {name}"), i as u64 + 2, total);
            let digest = builtin_digest(dockerfile, files);
            let key = format!("builtin.{name}");
            let current = self.meta.runtime(name, None)?;
            let unchanged = match &current {
                Some(rt) => {
                    rt.dockerfile_digest == text_digest(dockerfile)
                        && self.meta.setting(&key)?.as_deref() == Some(digest.as_str())
                }
                None => false,
            };
            let item = match current {
                Some(rt) if unchanged => BootstrapItem {
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
                        base: None,
                        packages: vec![],
                        layered: false,
                    };
                    let scratch = self.store.scratch_dir("builtin")?;
                    let tar = scratch.path().join("context.tar");
                    context_tar(&tar, files)
                        .map_err(|e| ControlError::io("write a built-in build context", e))?;
                    let rt = self.create_runtime(&spec, Some(&tar), events).await?;
                    self.meta.set_setting(&key, &digest)?;
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
