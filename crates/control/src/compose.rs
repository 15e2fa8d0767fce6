//! Package runtimes: packages stacked on a base, either composed from independently built
//! package layers plus a generated merge layer (Phase 3, the default) or built as one ordered
//! layer chain (Phase 2); their updates, rollbacks and diffs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use strata_meta::{LayerRecord, NewRuntime, PackageRecord, RuntimeRecord};
use strata_store::compose::{self as rules, MergeRule};
use strata_store::manifest::{Entry, EntryKind, Manifest};
use strata_types::api::{
    CreateRuntimeSpec, Event, PackageChange, RuntimeDiff, RuntimeInfo, UpdateRuntimeRequest,
};
use strata_types::{validate_name, Digest, ImageConfig, PackageRef, Resources, RuntimeRef};

use crate::build::{blocking, chain_id, MountGuard, StepDirs, STEP_EXCLUDES};
use crate::packages::{package_build_key, plan_recipe, BaseStack, BuiltPackage};
use crate::runtimes::text_digest;
use crate::{ControlError, Emitter, Platform};

/// At most this many conflicting paths are listed in an error.
const MAX_CONFLICTS_SHOWN: usize = 20;

/// A stack ready to record as a runtime version.
#[derive(Debug, Clone)]
pub(crate) struct Composed {
    /// Layers, bottom first: base, packages, merge layer.
    pub layers: Vec<Digest>,
    /// The base's configuration with the packages' environment.
    pub config: ImageConfig,
}

/// How a package runtime is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Composed,
    Layered,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Composed => "composed",
            Mode::Layered => "layered",
        }
    }
}

impl Platform {
    /// Creates the next version of a runtime from packages on a base: composed (default) or
    /// layered. Packages not yet built against the base are built first.
    pub(crate) async fn create_package_runtime(
        self: &Arc<Self>,
        spec: &CreateRuntimeSpec,
        events: &Emitter,
    ) -> Result<RuntimeInfo, ControlError> {
        validate_name(&spec.name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if !spec.dockerfile.trim().is_empty() {
            return Err(ControlError::Invalid(
                "a runtime is made from a Dockerfile or from packages, not both".into(),
            ));
        }
        let base_name = spec
            .base
            .as_deref()
            .ok_or_else(|| ControlError::Invalid("a package runtime needs --base IMAGE".into()))?;
        let base = self.resolve_base(base_name)?;
        let closure = self.package_closure(&spec.packages)?;
        let mode = if spec.layered {
            Mode::Layered
        } else {
            Mode::Composed
        };
        let _lease = self.gc_lock.read().await;
        let started = std::time::Instant::now();
        let composed = self
            .stack_packages(&base, &closure, mode, spec.no_cache, events)
            .await?;
        let rec = self.record_package_runtime(
            &spec.name,
            &base,
            &closure,
            mode,
            composed,
            spec.resources.or(&Resources::platform_default()),
            None,
        )?;
        tracing::info!(runtime = %rec.reference(), kind = mode.as_str(),
            ms = started.elapsed().as_millis() as u64, "package runtime created");
        self.forget_resolutions();
        self.runtime(&RuntimeRef {
            name: rec.name,
            version: Some(rec.version),
        })
    }

    /// The next version of a package runtime with packages added, removed or moved to another
    /// version. Functions that follow the runtime's name move to it.
    pub async fn update_runtime(
        self: &Arc<Self>,
        name: &str,
        req: &UpdateRuntimeRequest,
        events: &Emitter,
    ) -> Result<RuntimeInfo, ControlError> {
        let cur = self.runtime_record(&RuntimeRef {
            name: name.to_string(),
            version: None,
        })?;
        let mode = match cur.kind.as_str() {
            "composed" => Mode::Composed,
            "layered" => Mode::Layered,
            _ => {
                return Err(ControlError::Invalid(format!(
                    "runtime {} was built from a Dockerfile; only runtimes made from packages (`strata runtime create NAME --base IMAGE --packages ...`) can be updated by package",
                    cur.reference()
                )))
            }
        };
        if req.add.is_empty() && req.remove.is_empty() && req.set.is_empty() {
            return Err(ControlError::Invalid(
                "nothing to update: pass --add, --remove or --set".into(),
            ));
        }
        let mut list: Vec<PackageRef> = cur
            .packages
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| ControlError::Internal(format!("stored package list: {e}")))?;
        let has = |list: &[PackageRef]| -> String {
            list.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut removed = Vec::new();
        for s in &req.remove {
            let r: PackageRef = s
                .parse()
                .map_err(|e| ControlError::Invalid(format!("--remove {s}: {e}")))?;
            let Some(i) = list.iter().position(|p| p.name == r.name) else {
                return Err(ControlError::Invalid(format!(
                    "runtime {} has no package {}; it has: {}",
                    cur.reference(),
                    r.name,
                    has(&list)
                )));
            };
            removed.push(list.remove(i).name);
        }
        for s in &req.set {
            let r: PackageRef = s
                .parse()
                .map_err(|e| ControlError::Invalid(format!("--set {s}: {e}")))?;
            if r.version.is_none() {
                return Err(ControlError::Invalid(format!(
                    "--set {s}: expected NAME@VERSION"
                )));
            }
            self.package_record(&r)?;
            let Some(slot) = list.iter_mut().find(|p| p.name == r.name) else {
                return Err(ControlError::Invalid(format!(
                    "runtime {} has no package {} to set; add it with --add {s}",
                    cur.reference(),
                    r.name
                )));
            };
            *slot = r;
        }
        for s in &req.add {
            let r: PackageRef = s
                .parse()
                .map_err(|e| ControlError::Invalid(format!("--add {s}: {e}")))?;
            if let Some(p) = list.iter().find(|p| p.name == r.name) {
                return Err(ControlError::Invalid(format!(
                    "runtime {} already has {p}; change its version with --set {}@VERSION",
                    cur.reference(),
                    r.name
                )));
            }
            let rec = self.package_record(&r)?;
            list.push(PackageRef {
                name: rec.name,
                version: Some(rec.version),
            });
        }
        let refs: Vec<String> = list.iter().map(|p| p.to_string()).collect();
        let closure = self.package_closure(&refs)?;
        if let Some(back) = closure.iter().find(|p| removed.contains(&p.name)) {
            let needers: Vec<String> = closure
                .iter()
                .filter(|p| {
                    p.requires
                        .iter()
                        .any(|r| r.starts_with(&format!("{}@", back.name)))
                })
                .map(|p| p.reference())
                .collect();
            return Err(ControlError::Invalid(format!(
                "cannot remove {}: {} require{} it; remove {} too",
                back.name,
                needers.join(", "),
                if needers.len() == 1 { "s" } else { "" },
                if needers.len() == 1 { "that" } else { "those" }
            )));
        }
        let new_refs: Vec<String> = closure.iter().map(|p| p.reference()).collect();
        if new_refs == cur.packages {
            return Err(ControlError::Invalid(format!(
                "the update changes nothing: runtime {} already has {}",
                cur.reference(),
                new_refs.join(", ")
            )));
        }
        let base = self.resolve_base(&cur.base)?;
        let _lease = self.gc_lock.read().await;
        let started = std::time::Instant::now();
        let composed = self
            .stack_packages(&base, &closure, mode, false, events)
            .await?;
        let rec = self.record_package_runtime(
            name,
            &base,
            &closure,
            mode,
            composed,
            cur.resources.clone(),
            Some(cur.version),
        )?;
        tracing::info!(runtime = %rec.reference(), from = cur.version,
            ms = started.elapsed().as_millis() as u64, "runtime updated");
        self.forget_resolutions();
        self.runtime(&RuntimeRef {
            name: rec.name,
            version: Some(rec.version),
        })
    }

    /// Makes an earlier version current again: a new version with that version's layers,
    /// packages and configuration. By default the version the newest was made from.
    pub async fn rollback_runtime(
        self: &Arc<Self>,
        name: &str,
        to: Option<u32>,
    ) -> Result<RuntimeInfo, ControlError> {
        let cur = self.runtime_record(&RuntimeRef {
            name: name.to_string(),
            version: None,
        })?;
        let target_version = match to.or(cur.parent) {
            Some(v) => v,
            None => {
                return Err(ControlError::Invalid(format!(
                    "runtime {} was not made from an earlier version; pass --to VERSION",
                    cur.reference()
                )))
            }
        };
        if target_version == cur.version {
            return Err(ControlError::Invalid(format!(
                "runtime {} is already the newest version",
                cur.reference()
            )));
        }
        let target = self.runtime_record(&RuntimeRef {
            name: name.to_string(),
            version: Some(target_version),
        })?;
        let _lease = self.gc_lock.read().await;
        let rec = self.meta.insert_runtime(&NewRuntime {
            name: target.name.clone(),
            base: target.base.clone(),
            base_image: target.base_image.clone(),
            config: target.config.clone(),
            resources: target.resources.clone(),
            dockerfile: target.dockerfile.clone(),
            dockerfile_digest: target.dockerfile_digest.clone(),
            layers: target.layers.clone(),
            kind: target.kind.clone(),
            packages: target.packages.clone(),
            parent: target.parent,
        })?;
        tracing::info!(runtime = %rec.reference(), to = target.version, "runtime rolled back");
        self.forget_resolutions();
        self.runtime(&RuntimeRef {
            name: rec.name,
            version: Some(rec.version),
        })
    }

    /// Packages and files that differ between two runtime versions.
    pub async fn runtime_diff(
        self: &Arc<Self>,
        a: &RuntimeRef,
        b: &RuntimeRef,
    ) -> Result<RuntimeDiff, ControlError> {
        let ra = self.runtime_record(a)?;
        let rb = self.runtime_record(b)?;
        let platform = Arc::clone(self);
        let (la, lb) = (ra.layers.clone(), rb.layers.clone());
        let (added, removed, changed) = blocking(move || -> Result<_, ControlError> {
            let ta = platform.effective_tree(&la)?;
            let tb = platform.effective_tree(&lb)?;
            Ok(diff_trees(&ta, &tb))
        })
        .await?;
        let (pa, pb) = (split_refs(&ra.packages), split_refs(&rb.packages));
        Ok(RuntimeDiff {
            from: ra.reference(),
            to: rb.reference(),
            packages_added: pb
                .iter()
                .filter(|(n, _)| !pa.contains_key(*n))
                .map(|(n, v)| format!("{n}@{v}"))
                .collect(),
            packages_removed: pa
                .iter()
                .filter(|(n, _)| !pb.contains_key(*n))
                .map(|(n, v)| format!("{n}@{v}"))
                .collect(),
            packages_changed: pa
                .iter()
                .filter_map(|(n, va)| {
                    let vb = pb.get(n)?;
                    (va != vb).then(|| PackageChange {
                        name: n.to_string(),
                        from: va.to_string(),
                        to: vb.to_string(),
                    })
                })
                .collect(),
            files_added: added,
            files_removed: removed,
            files_changed: changed,
        })
    }

    /// The file tree a layer stack shows, from the layers' manifests: path → entry.
    pub(crate) fn effective_tree(
        &self,
        layers: &[Digest],
    ) -> Result<BTreeMap<String, Entry>, ControlError> {
        let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
        for d in layers {
            let m = self.store.manifest(d)?;
            apply_layer(&mut tree, &m);
        }
        Ok(tree)
    }

    /// Stacks packages on a base in one of the two modes.
    async fn stack_packages(
        self: &Arc<Self>,
        base: &BaseStack,
        closure: &[PackageRecord],
        mode: Mode,
        no_cache: bool,
        events: &Emitter,
    ) -> Result<Composed, ControlError> {
        match mode {
            Mode::Composed => {
                let mut built = Vec::new();
                for (i, p) in closure.iter().enumerate() {
                    events.progress_of(
                        format!("package {}", p.reference()),
                        i as u64 + 1,
                        closure.len() as u64,
                    );
                    built.push(
                        self.ensure_package_built(p, base, no_cache, events, 0)
                            .await?,
                    );
                }
                events.progress("composing");
                self.compose_stack(base, &built, events).await
            }
            Mode::Layered => self.layered_stack(base, closure, no_cache, events).await,
        }
    }

    /// Composes built packages on a base: conflict check, environment, merge layer.
    pub(crate) async fn compose_stack(
        self: &Arc<Self>,
        base: &BaseStack,
        built: &[BuiltPackage],
        _events: &Emitter,
    ) -> Result<Composed, ControlError> {
        // Two packages whose recipes made the very same tree share one layer: stack it once
        // (overlayfs cannot take one directory twice, and identical content is no conflict).
        let mut parts: Vec<(String, Digest)> = Vec::new();
        for b in built {
            if let Some(l) = &b.layer {
                if !base.layers.contains(l) && !parts.iter().any(|(_, d)| d == l) {
                    parts.push((b.reference.clone(), l.clone()));
                }
            }
        }
        let platform = Arc::clone(self);
        let check = parts.clone();
        blocking(move || -> Result<(), ControlError> {
            let manifests: Vec<(String, Arc<Manifest>)> = check
                .iter()
                .map(|(r, d)| Ok((r.clone(), platform.store.manifest(d)?)))
                .collect::<Result<_, ControlError>>()?;
            let refs: Vec<(String, &Manifest)> = manifests
                .iter()
                .map(|(r, m)| (r.clone(), m.as_ref()))
                .collect();
            let conflicts = rules::find_conflicts(&refs);
            if conflicts.is_empty() {
                Ok(())
            } else {
                Err(conflict_error(&conflicts))
            }
        })
        .await?;
        let env = merge_env(
            &base.config.env,
            &built
                .iter()
                .map(|b| (b.reference.clone(), b.env.clone()))
                .collect::<Vec<_>>(),
        )?;
        let merge = self.merge_layer(&base.layers, &parts, true).await?;
        let mut layers = base.layers.clone();
        layers.extend(parts.iter().map(|(_, d)| d.clone()));
        layers.extend(merge);
        Ok(Composed {
            layers,
            config: ImageConfig {
                env,
                ..base.config.clone()
            },
        })
    }

    /// Builds packages as one chain, each on the previous: every prefix is a build-cache entry
    /// any other runtime or package build reuses.
    async fn layered_stack(
        self: &Arc<Self>,
        base: &BaseStack,
        closure: &[PackageRecord],
        no_cache: bool,
        events: &Emitter,
    ) -> Result<Composed, ControlError> {
        let mut layers = base.layers.clone();
        let mut config = base.config.clone();
        let mut own: Vec<(String, Digest)> = Vec::new();
        for (i, p) in closure.iter().enumerate() {
            let key = package_build_key(&layers, &p.recipe_digest);
            let (_, end) = plan_recipe(&p.recipe, &config)?;
            let cached = if no_cache {
                None
            } else {
                self.cached_layer(&key)?
            };
            events.send(Event::Step {
                stage: 0,
                index: i + 1,
                total: closure.len(),
                instruction: format!("package {}", p.reference()),
                cached: cached.is_some(),
            });
            let layer = match cached {
                Some(l) => l,
                None => {
                    let ctx = self.recipe_context(p).await?;
                    let (l, _) = self
                        .run_recipe(p, &layers, &config, ctx.path(), events)
                        .await?;
                    self.meta.cache_put(&key, layers.last(), l.as_ref())?;
                    l
                }
            };
            config = end;
            if let Some(l) = layer {
                if !layers.contains(&l) {
                    own.push((p.reference(), l.clone()));
                    layers.push(l);
                }
            }
        }
        let merge = self.merge_layer(&base.layers, &own, false).await?;
        layers.extend(merge);
        Ok(Composed { layers, config })
    }

    /// The merge layer of a stack: package-manager state merged across the packages (when
    /// `union_state`; a layered chain's top already has it) and a regenerated `ld.so.cache`.
    /// Cached by the stack's identity, so going back to a package set costs nothing.
    async fn merge_layer(
        self: &Arc<Self>,
        base: &[Digest],
        parts: &[(String, Digest)],
        union_state: bool,
    ) -> Result<Option<Digest>, ControlError> {
        let mut all = base.to_vec();
        all.extend(parts.iter().map(|(_, d)| d.clone()));
        let key = merge_key(&all, union_state);
        if let Some(hit) = self.cached_layer(&key)? {
            return Ok(hit);
        }
        let scratch = self.store.scratch_dir("merge")?;
        let dirs = StepDirs::create(&scratch)?;
        let lowers = self.lowers(&all, &dirs)?;
        let base_lowers: Vec<PathBuf> = base
            .iter()
            .rev()
            .map(|d| self.store.layer_path(d))
            .collect();
        if union_state {
            let platform = Arc::clone(self);
            let parts = parts.to_vec();
            let upper = dirs.upper.clone();
            blocking(move || platform.write_merged_state(&base_lowers, &parts, &upper)).await?;
        }
        let mounted =
            MountGuard::overlay(&lowers, Some((&dirs.upper, &dirs.work)), &dirs.merged).await?;
        let regenerated = strata_sandbox::regenerate_ld_cache(&dirs.merged).await;
        mounted.unmount().await?;
        regenerated?;
        let platform = Arc::clone(self);
        let upper = dirs.upper.clone();
        let top = all.last().cloned();
        blocking(move || -> Result<Option<Digest>, ControlError> {
            strata_store::diff::normalize_upper(&upper, &lowers, STEP_EXCLUDES)?;
            rules::remove_volatile(&upper)?;
            let layer = if std::fs::read_dir(&upper)
                .map_err(|e| ControlError::io("read merge layer", e))?
                .next()
                .is_none()
            {
                None
            } else {
                let meta = platform.store.commit_layer(&upper)?;
                platform.meta.put_layer(&LayerRecord {
                    digest: meta.digest.clone(),
                    size_bytes: meta.size_bytes,
                    entries: meta.entries,
                    created_by: "merge layer".into(),
                })?;
                Some(meta.digest)
            };
            platform
                .meta
                .cache_put(&key, top.as_ref(), layer.as_ref())?;
            Ok(layer)
        })
        .await
    }

    /// Writes the merged package-manager state files into `upper`.
    fn write_merged_state(
        &self,
        base_lowers: &[PathBuf],
        parts: &[(String, Digest)],
        upper: &std::path::Path,
    ) -> Result<(), ControlError> {
        // Every state file any package changed, with its rule.
        let mut paths: BTreeMap<String, MergeRule> = BTreeMap::new();
        for (_, d) in parts {
            let m = self.store.manifest(d)?;
            for e in &m.entries {
                if !matches!(e.kind, EntryKind::File { .. }) {
                    continue;
                }
                if let Some(
                    rule @ (MergeRule::DpkgStatus
                    | MergeRule::AptExtendedStates
                    | MergeRule::LineUnion),
                ) = rules::merge_rule(&e.path)
                {
                    paths.insert(e.path.clone(), rule);
                }
            }
        }
        for (path, rule) in paths {
            let rel = path.trim_start_matches('/');
            let read = |p: PathBuf| -> Result<Option<String>, ControlError> {
                match std::fs::read(&p) {
                    Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(ControlError::io(format!("read {}", p.display()), e)),
                }
            };
            let base_text = match strata_store::diff::lookup(base_lowers, &path) {
                Some(p) if p.is_file() => read(p)?,
                _ => None,
            };
            let mut texts: Vec<(String, String)> = Vec::new();
            for (r, d) in parts {
                let p = self.store.layer_path(d).join(rel);
                if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                    if let Some(t) = read(p)? {
                        texts.push((r.clone(), t));
                    }
                }
            }
            let merged = match rule {
                MergeRule::LineUnion => rules::merge_lines(
                    base_text.as_deref(),
                    &texts.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
                ),
                MergeRule::AptExtendedStates => {
                    let refs: Vec<(String, &str)> =
                        texts.iter().map(|(r, t)| (r.clone(), t.as_str())).collect();
                    let merged = rules::merge_stanzas(base_text.as_deref(), &refs)
                        .map_err(|c| conflict_error(&c))?;
                    // A package one part installed by request and another pulled in as a
                    // dependency is manually installed, as apt records it in sequence.
                    let mut manual = BTreeSet::new();
                    let base_status = match strata_store::diff::lookup(base_lowers, DPKG_STATUS) {
                        Some(p) if p.is_file() => read(p)?,
                        _ => None,
                    };
                    for (r, d) in parts {
                        let status = read(self.store.layer_path(d).join(&DPKG_STATUS[1..]))?;
                        let ext = texts
                            .iter()
                            .find(|(name, _)| name == r)
                            .map(|(_, t)| t.as_str());
                        if let Some(status) = status {
                            manual.extend(manually_installed(base_status.as_deref(), &status, ext));
                        }
                    }
                    drop_auto(&merged, &manual)
                }
                _ => {
                    let refs: Vec<(String, &str)> =
                        texts.iter().map(|(r, t)| (r.clone(), t.as_str())).collect();
                    rules::merge_stanzas(base_text.as_deref(), &refs)
                        .map_err(|c| conflict_error(&c))?
                }
            };
            let dest = upper.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| ControlError::io(format!("create {}", parent.display()), e))?;
            }
            std::fs::write(&dest, merged)
                .map_err(|e| ControlError::io(format!("write {}", dest.display()), e))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record_package_runtime(
        &self,
        name: &str,
        base: &BaseStack,
        closure: &[PackageRecord],
        mode: Mode,
        composed: Composed,
        resources: Resources,
        parent: Option<u32>,
    ) -> Result<RuntimeRecord, ControlError> {
        // The Dockerfile that installs the same packages in sequence: what the runtime is
        // equivalent to, shown by `describe`.
        let mut dockerfile = format!("FROM {}\n", base.name);
        for p in closure {
            dockerfile.push_str(&format!("# package {}\n{}", p.reference(), p.recipe));
        }
        Ok(self.meta.insert_runtime(&NewRuntime {
            name: name.to_string(),
            base: base.name.clone(),
            base_image: base.base_image.clone(),
            config: composed.config,
            resources,
            dockerfile_digest: text_digest(&dockerfile),
            dockerfile,
            layers: composed.layers,
            kind: mode.as_str().into(),
            packages: closure.iter().map(|p| p.reference()).collect(),
            parent,
        })?)
    }
}

/// dpkg's database of installed packages.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// `name:arch` of every stanza of a deb822 text, with the stanza.
fn stanza_keys(text: &str) -> Vec<(String, &str)> {
    text.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let field = |f: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
                    .unwrap_or_default()
            };
            (
                format!("{}:{}", field("Package:"), field("Architecture:")),
                s,
            )
        })
        .collect()
}

/// Packages a part installed that its apt state does not mark as automatically installed.
fn manually_installed(base_status: Option<&str>, status: &str, ext: Option<&str>) -> Vec<String> {
    let before: BTreeSet<String> = base_status
        .map(|b| stanza_keys(b).into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    let auto: BTreeSet<String> = ext
        .map(|e| {
            stanza_keys(e)
                .into_iter()
                .filter(|(_, s)| s.lines().any(|l| l.trim() == "Auto-Installed: 1"))
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    stanza_keys(status)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !before.contains(k) && !auto.contains(k))
        .collect()
}

/// An extended_states text without the "automatically installed" marks of `manual` packages.
fn drop_auto(text: &str, manual: &BTreeSet<String>) -> String {
    let kept: Vec<&str> = stanza_keys(text)
        .into_iter()
        .filter(|(k, s)| {
            !(manual.contains(k) && s.lines().any(|l| l.trim() == "Auto-Installed: 1"))
        })
        .map(|(_, s)| s.trim_end_matches('\n'))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        kept.join("\n\n") + "\n"
    }
}

/// The cache key of a merge layer.
fn merge_key(layers: &[Digest], union_state: bool) -> String {
    let mut h = Sha256::new();
    h.update(b"strata-merge-v1\n");
    h.update(if union_state { b"union\n" } else { b"chain\n" });
    h.update(chain_id(layers).as_bytes());
    hex::encode(h.finalize())
}

/// One error naming every conflicting path (up to a limit) and the packages involved.
fn conflict_error(conflicts: &[rules::Conflict]) -> ControlError {
    let mut msg = format!(
        "packages conflict at {} path{} (different content at one path; remove one of the packages or make them agree):",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" }
    );
    for c in conflicts.iter().take(MAX_CONFLICTS_SHOWN) {
        msg.push_str(&format!(
            "\n  {}: {} ({})",
            c.path,
            c.packages.join(", "),
            c.detail
        ));
    }
    if conflicts.len() > MAX_CONFLICTS_SHOWN {
        msg.push_str(&format!(
            "\n  ... and {} more",
            conflicts.len() - MAX_CONFLICTS_SHOWN
        ));
    }
    ControlError::Conflict(msg)
}

/// The environment of a composition: the base's, then each package's. `PATH` entries a package
/// adds are put in front (later packages first, as ENV in sequence would); any other variable
/// two packages set to different values is a conflict.
pub(crate) fn merge_env(
    base: &[(String, String)],
    packages: &[(String, Vec<String>)],
) -> Result<Vec<(String, String)>, ControlError> {
    let mut env: Vec<(String, String)> = base.to_vec();
    let mut set_by: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (pkg, vars) in packages {
        for var in vars {
            let (k, v) = var.split_once('=').unwrap_or((var.as_str(), ""));
            if k == "PATH" {
                let current = env
                    .iter()
                    .find(|(key, _)| key == "PATH")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let have: BTreeSet<&str> = current.split(':').collect();
                let mut added: Vec<&str> = v.split(':').filter(|p| !have.contains(p)).collect();
                if added.is_empty() {
                    continue;
                }
                added.push(&current);
                let value = added
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(":");
                upsert(&mut env, "PATH", value);
                continue;
            }
            if let Some((other, value)) = set_by.get(k) {
                if value != v {
                    return Err(ControlError::Conflict(format!(
                        "packages {other} and {pkg} set {k} to different values ({value:?} and {v:?})"
                    )));
                }
                continue;
            }
            set_by.insert(k.to_string(), (pkg.clone(), v.to_string()));
            upsert(&mut env, k, v.to_string());
        }
    }
    Ok(env)
}

fn upsert(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

/// Applies one layer's manifest to a tree: whiteouts remove, opaque directories hide what is
/// below them, everything else replaces.
fn apply_layer(tree: &mut BTreeMap<String, Entry>, layer: &Manifest) {
    for e in &layer.entries {
        let hide_below = matches!(
            e.kind,
            EntryKind::Whiteout | EntryKind::Dir { opaque: true }
        ) || !matches!(e.kind, EntryKind::Dir { .. });
        if hide_below {
            let prefix = format!("{}/", e.path);
            let doomed: Vec<String> = tree
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                tree.remove(&k);
            }
        }
        if matches!(e.kind, EntryKind::Whiteout) {
            tree.remove(&e.path);
        } else {
            tree.insert(e.path.clone(), e.clone());
        }
    }
}

/// Paths added, removed and changed (content, type, mode or owner) from `a` to `b`.
fn diff_trees(
    a: &BTreeMap<String, Entry>,
    b: &BTreeMap<String, Entry>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let added = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
    let removed = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
    let changed = a
        .iter()
        .filter_map(|(k, ea)| {
            let eb = b.get(k)?;
            (!ea.same_content(eb)).then(|| k.clone())
        })
        .collect();
    (added, removed, changed)
}

fn split_refs(refs: &[String]) -> BTreeMap<&str, &str> {
    refs.iter().filter_map(|r| r.split_once('@')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_one_package_installed_by_request_is_manual() {
        let base = "Package: base\nArchitecture: amd64\nStatus: install ok installed\n";
        // Part "onig" installed libonig5 by request: in its status, not auto in its apt state.
        let status = format!(
            "{base}\nPackage: libonig5\nArchitecture: amd64\nStatus: install ok installed\n"
        );
        let manual = manually_installed(Some(base), &status, None);
        assert_eq!(manual, vec!["libonig5:amd64".to_string()]);
        // Part "jq" pulled it in as a dependency.
        let ext = "Package: libjq1\nArchitecture: amd64\nAuto-Installed: 1\n\nPackage: libonig5\nArchitecture: amd64\nAuto-Installed: 1\n";
        let jq_status = format!("{status}\nPackage: jq\nArchitecture: amd64\n");
        let jq_manual = manually_installed(Some(base), &jq_status, Some(ext));
        assert_eq!(jq_manual, vec!["jq:amd64".to_string()]);
        let merged = drop_auto(ext, &manual.into_iter().collect());
        assert_eq!(
            merged,
            "Package: libjq1\nArchitecture: amd64\nAuto-Installed: 1\n"
        );
    }

    #[test]
    fn env_merges_path_and_refuses_disagreeing_values() {
        let base = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("LANG".to_string(), "C".to_string()),
        ];
        let env = merge_env(
            &base,
            &[
                (
                    "a@1".into(),
                    vec!["PATH=/opt/a/bin:/usr/bin:/bin".into(), "A=1".into()],
                ),
                (
                    "b@1".into(),
                    vec![
                        "PATH=/opt/b/bin:/usr/bin:/bin".into(),
                        "LANG=C.UTF-8".into(),
                    ],
                ),
                ("c@1".into(), vec!["A=1".into()]),
            ],
        )
        .expect("test");
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            env,
            vec![
                "PATH=/opt/b/bin:/opt/a/bin:/usr/bin:/bin".to_string(),
                "LANG=C.UTF-8".to_string(),
                "A=1".to_string()
            ]
        );
        let err = merge_env(
            &base,
            &[
                ("a@1".into(), vec!["JAVA_HOME=/a".into()]),
                ("b@2".into(), vec!["JAVA_HOME=/b".into()]),
            ],
        )
        .expect_err("test")
        .to_string();
        assert!(
            err.contains("a@1") && err.contains("b@2") && err.contains("JAVA_HOME"),
            "{err}"
        );
    }
}
