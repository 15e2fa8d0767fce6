//! Runtime builds: a Dockerfile plan executed step by step in containers, each file-system change
//! captured as a layer, with a layer cache keyed by (parent layers, step, sources).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use strata_dockerfile::{Action, Base, BuildPlan, CopyFrom, Step};
use strata_meta::LayerRecord;
use strata_sandbox::{mount, BindMount, ContainerSpec, Limits, Network};
use strata_store::archive::{ExtractOptions, Limits as ArchiveLimits, Whiteouts};
use strata_store::ScratchDir;
use strata_types::api::{Event, Stream};
use strata_types::{Digest, ImageConfig, RuntimeRef};

use crate::copy::{self, CopyOptions};
use crate::{random_hex, ControlError, Emitter, Platform, CONTAINER_PREFIX};

/// Paths a build step may create as mount points or that describe the build host; never part of
/// a layer.
pub const STEP_EXCLUDES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/hostname",
    "/run/strata",
];

/// Where build steps see the host's CA bundle.
const CA_PATH: &str = "/run/strata/ca-certificates.crt";

/// Something outside the Dockerfile that a stage starts from or copies from: an image or a
/// runtime version.
#[derive(Debug, Clone)]
pub struct External {
    /// Layers, bottom first.
    pub layers: Vec<Digest>,
    /// Process configuration.
    pub config: ImageConfig,
    /// The image at the root of its chain.
    pub base_image: Option<String>,
}

/// The outcome of a build: the final stage's layers and config.
#[derive(Debug)]
pub struct Built {
    /// Layers, bottom first.
    pub layers: Vec<Digest>,
    /// Final configuration.
    pub config: ImageConfig,
    /// What the final stage's chain starts from (an external name), for display.
    pub base: String,
    /// The image at the root of the chain.
    pub base_image: Option<String>,
}

/// A stage's result.
#[derive(Debug, Clone)]
pub(crate) struct StageOut {
    layers: Vec<Digest>,
    base: String,
    base_image: Option<String>,
}

impl Platform {
    /// Resolves an external name: an image, else a runtime reference (`name` or `name@N`).
    pub(crate) fn resolve_external(&self, name: &str) -> Result<Option<External>, ControlError> {
        if let Some(img) = self.meta.image(name)? {
            return Ok(Some(External {
                layers: img.layers,
                config: img.config,
                base_image: Some(img.name),
            }));
        }
        let Ok(r) = name.parse::<RuntimeRef>() else {
            return Ok(None);
        };
        Ok(self.meta.runtime(&r.name, r.version)?.map(|rt| External {
            layers: rt.layers,
            config: rt.config,
            base_image: rt.base_image,
        }))
    }

    /// Parses and plans a Dockerfile against the stored images and runtimes.
    pub(crate) fn plan_dockerfile(
        &self,
        text: &str,
        build_args: &BTreeMap<String, String>,
    ) -> Result<(BuildPlan, HashMap<String, External>), ControlError> {
        let df = strata_dockerfile::parse(text)?;
        let found = std::cell::RefCell::new(HashMap::new());
        let lookup_err = std::cell::RefCell::new(None);
        let resolve = |name: &str| -> Option<ImageConfig> {
            match self.resolve_external(name) {
                Ok(Some(ext)) => {
                    let cfg = ext.config.clone();
                    found.borrow_mut().insert(name.to_string(), ext);
                    Some(cfg)
                }
                Ok(None) => None,
                Err(e) => {
                    *lookup_err.borrow_mut() = Some(e);
                    None
                }
            }
        };
        let plan = strata_dockerfile::plan(&df, build_args, &resolve);
        if let Some(e) = lookup_err.into_inner() {
            return Err(e);
        }
        Ok((plan?, found.into_inner()))
    }

    /// Executes a plan. `context` is the unpacked build context.
    pub(crate) async fn execute_plan(
        self: &Arc<Self>,
        plan: &BuildPlan,
        externals: &HashMap<String, External>,
        context: &Path,
        no_cache: bool,
        events: &Emitter,
    ) -> Result<Built, ControlError> {
        let needed = plan.needed_stages();
        let total: usize = needed.iter().map(|&i| plan.stages[i].steps.len()).sum();
        let mut index = 0;
        let mut outs: HashMap<usize, StageOut> = HashMap::new();
        for &si in &needed {
            let stage = &plan.stages[si];
            let mut out = match &stage.base {
                Base::Scratch => StageOut {
                    layers: vec![],
                    base: "scratch".into(),
                    base_image: None,
                },
                Base::Stage(i) => outs.get(i).cloned().ok_or_else(|| missing_stage(*i))?,
                Base::Image(name) => {
                    let ext = externals.get(name).ok_or_else(|| ControlError::NotFound {
                        what: "image or runtime",
                        name: name.clone(),
                    })?;
                    StageOut {
                        layers: ext.layers.clone(),
                        base: name.clone(),
                        base_image: ext.base_image.clone(),
                    }
                }
            };
            for step in &stage.steps {
                index += 1;
                let fs_step = !matches!(step.action, Action::Config);
                if !fs_step {
                    events.send(Event::Step {
                        stage: si,
                        index,
                        total,
                        instruction: step.text.clone(),
                        cached: false,
                    });
                    continue;
                }
                let (extra, sources) = self.step_inputs(step, context, &outs, externals)?;
                let key = cache_key(&out.layers, step, &extra);
                let cached = if no_cache {
                    None
                } else {
                    self.cached_layer(&key)?
                };
                events.send(Event::Step {
                    stage: si,
                    index,
                    total,
                    instruction: step.text.clone(),
                    cached: cached.is_some(),
                });
                let layer = match cached {
                    Some(layer) => layer,
                    None => {
                        let layer = self
                            .run_step(step, &out.layers, sources, &outs, externals, events)
                            .await?;
                        self.meta
                            .cache_put(&key, out.layers.last(), layer.as_ref())?;
                        layer
                    }
                };
                if let Some(layer) = layer {
                    out.layers.push(layer);
                }
            }
            outs.insert(si, out);
        }
        let last = plan.stages.len() - 1;
        let out = outs.remove(&last).ok_or_else(|| missing_stage(last))?;
        Ok(Built {
            layers: out.layers,
            config: plan.stages[last].config.clone(),
            base: out.base,
            base_image: out.base_image,
        })
    }

    /// A cache hit whose layer is still on disk: `Some(Some(layer))`, or `Some(None)` for a step
    /// that changed nothing.
    pub(crate) fn cached_layer(&self, key: &str) -> Result<Option<Option<Digest>>, ControlError> {
        Ok(match self.meta.cache_get(key)? {
            Some(Some(layer)) if self.store.has_layer(&layer) => Some(Some(layer)),
            Some(Some(_)) => None,
            Some(None) => Some(None),
            None => None,
        })
    }

    /// What, besides the step text and the parent layers, decides a step's result: for COPY from
    /// the context, the sources' content; for COPY from a stage or image, its layers.
    fn step_inputs(
        &self,
        step: &Step,
        context: &Path,
        outs: &HashMap<usize, StageOut>,
        externals: &HashMap<String, External>,
    ) -> Result<(String, Option<Vec<copy::Source>>), ControlError> {
        let Action::Copy { sources, from, .. } = &step.action else {
            return Ok((String::new(), None));
        };
        match from {
            CopyFrom::Context => {
                let found =
                    copy::expand_sources(context, sources).map_err(|e| ControlError::Copy {
                        line: step.line,
                        message: e.to_string(),
                    })?;
                let hash = copy::hash_sources(&found)
                    .map_err(|e| ControlError::io("hash COPY sources", e))?;
                Ok((hash, Some(found)))
            }
            CopyFrom::Stage(i) => Ok((
                chain_id(&outs.get(i).ok_or_else(|| missing_stage(*i))?.layers),
                None,
            )),
            CopyFrom::Image(name) => {
                let ext = externals.get(name).ok_or_else(|| ControlError::NotFound {
                    what: "image or runtime",
                    name: name.clone(),
                })?;
                Ok((chain_id(&ext.layers), None))
            }
        }
    }

    /// Runs one file-system step on top of `layers` and returns the layer it made (`None` when it
    /// changed nothing).
    async fn run_step(
        self: &Arc<Self>,
        step: &Step,
        layers: &[Digest],
        context_sources: Option<Vec<copy::Source>>,
        outs: &HashMap<usize, StageOut>,
        externals: &HashMap<String, External>,
        events: &Emitter,
    ) -> Result<Option<Digest>, ControlError> {
        let scratch = self.store.scratch_dir("step")?;
        let dirs = StepDirs::create(&scratch)?;
        let lowers = self.lowers(layers, &dirs)?;
        let mounted =
            MountGuard::overlay(&lowers, Some((&dirs.upper, &dirs.work)), &dirs.merged).await?;
        let result = self
            .apply_step(
                step,
                &dirs,
                &scratch,
                context_sources,
                outs,
                externals,
                events,
            )
            .await;
        mounted.unmount().await?;
        result?;
        let store = Arc::clone(self);
        let upper = dirs.upper.clone();
        let created_by = step.text.clone();
        blocking(move || -> Result<Option<Digest>, ControlError> {
            let empty = strata_store::diff::normalize_upper(&upper, &lowers, STEP_EXCLUDES)?;
            if empty {
                return Ok(None);
            }
            let meta = store.store.commit_layer(&upper)?;
            store.meta.put_layer(&LayerRecord {
                digest: meta.digest.clone(),
                size_bytes: meta.size_bytes,
                entries: meta.entries,
                created_by,
            })?;
            Ok(Some(meta.digest))
        })
        .await
    }

    /// Applies one step to the mounted stack of `dirs`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn apply_step(
        &self,
        step: &Step,
        dirs: &StepDirs,
        scratch: &ScratchDir,
        context_sources: Option<Vec<copy::Source>>,
        outs: &HashMap<usize, StageOut>,
        externals: &HashMap<String, External>,
        events: &Emitter,
    ) -> Result<(), ControlError> {
        match &step.action {
            Action::Run {
                argv,
                env,
                workdir,
                user,
            } => {
                self.run_in_step(step, dirs, scratch, argv, env, workdir, user, events)
                    .await
            }
            Action::Copy {
                sources,
                dest,
                from,
                chown,
                chmod,
                extract,
            } => {
                let src_root = match from {
                    CopyFrom::Context => None,
                    CopyFrom::Stage(i) => {
                        Some(outs.get(i).ok_or_else(|| missing_stage(*i))?.layers.clone())
                    }
                    CopyFrom::Image(name) => Some(
                        externals
                            .get(name)
                            .ok_or_else(|| ControlError::NotFound {
                                what: "image or runtime",
                                name: name.clone(),
                            })?
                            .layers
                            .clone(),
                    ),
                };
                self.copy_in_step(
                    step,
                    dirs,
                    scratch,
                    context_sources,
                    src_root,
                    sources,
                    dest,
                    chown,
                    *chmod,
                    *extract,
                )
                .await
            }
            Action::Workdir { path, .. } => {
                let merged = dirs.merged.clone();
                let path = path.clone();
                let line = step.line;
                blocking(move || {
                    copy::mkdir_p_in_root(&merged, &path, None)
                        .map(|_| ())
                        .map_err(|e| ControlError::Copy {
                            line,
                            message: format!("WORKDIR {path}: {e}"),
                        })
                })
                .await
            }
            Action::Config => Ok(()),
        }
    }

    /// Host paths of a layer stack, top first; an empty stack gets one empty lower directory.
    pub(crate) fn lowers(
        &self,
        layers: &[Digest],
        dirs: &StepDirs,
    ) -> Result<Vec<PathBuf>, ControlError> {
        if layers.is_empty() {
            return Ok(vec![dirs.empty.clone()]);
        }
        Ok(layers
            .iter()
            .rev()
            .map(|d| self.store.layer_path(d))
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_in_step(
        &self,
        step: &Step,
        dirs: &StepDirs,
        scratch: &ScratchDir,
        argv: &[String],
        env: &[(String, String)],
        workdir: &str,
        user: &str,
        events: &Emitter,
    ) -> Result<(), ControlError> {
        let (uid, gid, groups) =
            strata_sandbox::host_user_lookup(&dirs.merged, user).map_err(|e| {
                ControlError::Copy {
                    line: step.line,
                    message: format!("USER {user}: {e}"),
                }
            })?;
        // The working directory exists before the process starts, as Docker makes it.
        {
            let merged = dirs.merged.clone();
            let wd = workdir.to_string();
            let line = step.line;
            blocking(move || {
                copy::mkdir_p_in_root(&merged, &wd, None)
                    .map(|_| ())
                    .map_err(|e| ControlError::Copy {
                        line,
                        message: format!("working directory {wd}: {e}"),
                    })
            })
            .await?;
        }
        let mut envs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let has = |envs: &[String], k: &str| envs.iter().any(|e| e.starts_with(&format!("{k}=")));
        if !has(&envs, "PATH") {
            envs.insert(0, format!("PATH={}", strata_types::DEFAULT_PATH));
        }
        if !has(&envs, "HOME") {
            envs.push(format!("HOME={}", if uid == 0 { "/root" } else { "/" }));
        }
        for e in &self.settings.build_env {
            let key = e.split('=').next().unwrap_or_default();
            if !has(&envs, key) {
                envs.push(e.clone());
            }
        }
        let mut binds = vec![];
        if Path::new("/etc/resolv.conf").exists() {
            binds.push(BindMount {
                source: PathBuf::from("/etc/resolv.conf"),
                destination: "/etc/resolv.conf".into(),
                readonly: true,
            });
        }
        if let Some(ca) = &self.settings.build_ca_bundle {
            binds.push(BindMount {
                source: ca.clone(),
                destination: CA_PATH.into(),
                readonly: true,
            });
            for k in [
                "SSL_CERT_FILE",
                "PIP_CERT",
                "REQUESTS_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
                "CURL_CA_BUNDLE",
            ] {
                if !has(&envs, k) {
                    envs.push(format!("{k}={CA_PATH}"));
                }
            }
        }
        let spec = ContainerSpec {
            id: format!("{CONTAINER_PREFIX}b-{}", random_hex(8)),
            rootfs: dirs.merged.clone(),
            readonly_rootfs: false,
            args: argv.to_vec(),
            env: envs,
            cwd: if workdir.is_empty() {
                "/".into()
            } else {
                workdir.to_string()
            },
            uid,
            gid,
            additional_gids: groups,
            hostname: "strata-build".into(),
            network: Network::Host,
            capabilities: strata_sandbox::build_capabilities(),
            binds,
            tmpfs: vec![],
            limits: Limits {
                memory_bytes: Some(self.settings.build_memory_bytes),
                cpu_millis: None,
                pids: Some(self.settings.build_pids),
            },
            cgroup_parent: self.settings.cgroup_parent.clone(),
            no_new_privileges: false,
            rlimit_nofile: 1 << 20,
            slave_binds: vec![],
            seccomp: strata_sandbox::Seccomp::Default,
        };
        let bundle = scratch.path().join("bundle");
        std::fs::create_dir_all(&bundle)
            .map_err(|e| ControlError::io("create bundle directory", e))?;
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut on_output = |stream: Stream, line: String| {
            if tail.len() == 20 {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            events.output(stream, line);
        };
        let outcome = self
            .runc
            .run(
                &bundle,
                &spec,
                Some(self.settings.build_step_timeout),
                &mut on_output,
            )
            .await?;
        if outcome.timed_out {
            return Err(ControlError::StepTimedOut {
                line: step.line,
                instruction: step.text.clone(),
                seconds: self.settings.build_step_timeout.as_secs(),
            });
        }
        if outcome.exit_code != 0 {
            let mut tail: Vec<String> = tail.into_iter().collect();
            if outcome.oom_killed {
                tail.push(format!(
                    "(the step ran out of memory: build steps are limited to {} MiB)",
                    self.settings.build_memory_bytes >> 20
                ));
            }
            return Err(ControlError::StepFailed {
                line: step.line,
                instruction: step.text.clone(),
                exit_code: outcome.exit_code,
                tail,
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_in_step(
        &self,
        step: &Step,
        dirs: &StepDirs,
        scratch: &ScratchDir,
        context_sources: Option<Vec<copy::Source>>,
        source_layers: Option<Vec<Digest>>,
        patterns: &[String],
        dest: &str,
        chown: &Option<String>,
        chmod: Option<u32>,
        extract: bool,
    ) -> Result<(), ControlError> {
        let line = step.line;
        let copy_err = move |message: String| ControlError::Copy { line, message };
        let owner = match chown {
            Some(spec) => {
                let (uid, gid, _) = strata_sandbox::host_user_lookup(&dirs.merged, spec)
                    .map_err(|e| copy_err(format!("--chown={spec}: {e}")))?;
                Some((uid, gid))
            }
            None => None,
        };
        // Sources from another stage or image are read from a read-only mount of its layers.
        let mut src_mount = None;
        let sources = match (context_sources, source_layers) {
            (Some(found), _) => found,
            (None, Some(layers)) => {
                let root = scratch.path().join("src");
                std::fs::create_dir_all(&root)
                    .map_err(|e| ControlError::io("create source mount point", e))?;
                let lowers = self.lowers(&layers, dirs)?;
                let guard = MountGuard::overlay(&lowers, None, &root).await?;
                let found =
                    copy::expand_sources(&root, patterns).map_err(|e| copy_err(e.to_string()))?;
                src_mount = Some(guard);
                found
            }
            (None, None) => return Err(copy_err("COPY has no sources".into())),
        };
        let merged = dirs.merged.clone();
        let dest = dest.to_string();
        let unpack_dir = scratch.path().join("unpack");
        let opts = CopyOptions {
            owner,
            chmod,
            preserve_owner: src_mount.is_some(),
        };
        let text = step.text.clone();
        let result = blocking(move || {
            copy_sources(&sources, &merged, &dest, &opts, extract, &unpack_dir).map_err(|e| {
                ControlError::Copy {
                    line,
                    message: format!("{text}: {e}"),
                }
            })
        })
        .await;
        if let Some(guard) = src_mount {
            guard.unmount().await?;
        }
        result
    }
}

/// Docker's COPY destination rules: into a directory when `dest` ends in `/`, when there are
/// several sources, or when `dest` is an existing directory; directories copy their contents.
fn copy_sources(
    sources: &[copy::Source],
    root: &Path,
    dest: &str,
    opts: &CopyOptions,
    extract: bool,
    unpack_dir: &Path,
) -> std::io::Result<()> {
    let dest_exists_dir = copy::resolve_in_root(root, dest, true)
        .map(|p| p.is_dir())
        .unwrap_or(false);
    let into_dir = dest.ends_with('/') || sources.len() > 1 || dest_exists_dir;
    for src in sources {
        let meta = std::fs::symlink_metadata(&src.path)?;
        if meta.is_dir() {
            copy::mkdir_p_in_root(root, dest, opts.owner)?;
            copy_children(&src.path, root, dest, opts)?;
        } else if extract && meta.is_file() && copy::looks_like_tar(&src.path) {
            std::fs::create_dir_all(unpack_dir)?;
            let unpacked = unpack_dir.join(random_hex(4));
            std::fs::create_dir(&unpacked)?;
            let file = std::fs::File::open(&src.path)?;
            let mut reader = strata_store::archive::open_maybe_compressed(Box::new(file))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            strata_store::archive::extract_tar(
                &mut reader,
                &unpacked,
                Whiteouts::Keep,
                &ExtractOptions {
                    skip_device_nodes: true,
                    preserve_owner: true,
                },
                &ArchiveLimits::default(),
            )
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            copy::mkdir_p_in_root(root, dest, opts.owner)?;
            copy_children(&unpacked, root, dest, opts)?;
        } else if into_dir {
            copy::mkdir_p_in_root(root, dest, opts.owner)?;
            let name = src
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            copy::copy_entry(
                &src.path,
                root,
                &format!("{}/{name}", dest.trim_end_matches('/')),
                opts,
            )?;
        } else {
            if let Some((parent, _)) = dest.rsplit_once('/') {
                if !parent.is_empty() {
                    copy::mkdir_p_in_root(root, parent, None)?;
                }
            }
            copy::copy_entry(&src.path, root, dest, opts)?;
        }
    }
    Ok(())
}

fn copy_children(dir: &Path, root: &Path, dest: &str, opts: &CopyOptions) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        copy::copy_entry(
            &dir.join(&name),
            root,
            &format!("{}/{}", dest.trim_end_matches('/'), name.to_string_lossy()),
            opts,
        )?;
    }
    Ok(())
}

fn missing_stage(i: usize) -> ControlError {
    ControlError::Invalid(format!("build stage {i} is used before it is built"))
}

/// The identity of a layer stack.
pub(crate) fn chain_id(layers: &[Digest]) -> String {
    let mut h = Sha256::new();
    for l in layers {
        h.update(l.hex().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The build-cache key of a step: its parent layers, the step as planned (instruction, env,
/// working directory, user) and its extra inputs.
pub(crate) fn cache_key(layers: &[Digest], step: &Step, extra: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"strata-step-v1\n");
    h.update(chain_id(layers).as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_vec(&step.action).unwrap_or_default());
    h.update(b"\n");
    h.update(extra.as_bytes());
    hex::encode(h.finalize())
}

/// The directories of one build step.
pub(crate) struct StepDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub empty: PathBuf,
}

impl StepDirs {
    pub(crate) fn create(scratch: &ScratchDir) -> Result<StepDirs, ControlError> {
        let p = scratch.path();
        let dirs = StepDirs {
            upper: p.join("u"),
            work: p.join("w"),
            merged: p.join("m"),
            empty: p.join("e"),
        };
        for d in [&dirs.upper, &dirs.work, &dirs.merged, &dirs.empty] {
            std::fs::create_dir_all(d)
                .map_err(|e| ControlError::io(format!("create {}", d.display()), e))?;
        }
        Ok(dirs)
    }
}

/// An overlay mount that is undone when dropped (best effort) or explicitly with `unmount`.
pub(crate) struct MountGuard {
    target: Option<PathBuf>,
}

impl MountGuard {
    pub(crate) async fn overlay(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
    ) -> Result<MountGuard, ControlError> {
        let lowers = lowers.to_vec();
        let upper = upper.map(|(u, w)| (u.to_path_buf(), w.to_path_buf()));
        let t = target.to_path_buf();
        blocking(move || {
            mount::mount_overlay(
                &lowers,
                upper.as_ref().map(|(u, w)| (u.as_path(), w.as_path())),
                &t,
            )
        })
        .await?;
        Ok(MountGuard {
            target: Some(target.to_path_buf()),
        })
    }

    /// A guard for a mount made elsewhere.
    pub(crate) fn adopt(target: PathBuf) -> MountGuard {
        MountGuard {
            target: Some(target),
        }
    }

    pub(crate) async fn unmount(mut self) -> Result<(), ControlError> {
        if let Some(t) = self.target.take() {
            blocking(move || mount::unmount(&t)).await?;
        }
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(t) = self.target.take() {
            if let Err(e) = mount::unmount(&t) {
                tracing::warn!(path = %t.display(), error = %e, "cannot unmount");
            }
        }
    }
}

/// Runs blocking file-system work off the async threads.
pub(crate) async fn blocking<T, E, F>(f: F) -> Result<T, ControlError>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static + Into<ControlError>,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(ControlError::Internal(format!(
            "a background task failed: {e}"
        ))),
    }
}
