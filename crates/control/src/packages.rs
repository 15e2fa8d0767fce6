//! Environment packages: named, versioned recipes (Dockerfile snippets) built once against a
//! base into one layer each, and their listing, description and removal.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use strata_dockerfile::{Action, Command};
use strata_meta::{LayerRecord, NewPackage, PackageBuildRecord, PackageRecord};
use strata_store::archive::{ExtractOptions, Limits as ArchiveLimits, Whiteouts};
use strata_types::api::{CreatePackageSpec, Event, PackageBuildInfo, PackageInfo};
use strata_types::{validate_name, validate_package_version, Digest, ImageConfig, PackageRef};

use crate::build::{blocking, chain_id, MountGuard, StepDirs, STEP_EXCLUDES};
use crate::{ControlError, Emitter, Platform};

/// The name a package recipe's `FROM` line uses for the stack it is built on.
const RECIPE_BASE: &str = "strata-package-base";

/// What a package layer never holds besides the volatile files: the dynamic-linker cache, which
/// a runtime's merge layer regenerates for the whole stack.
const PACKAGE_EXCLUDES: &[&str] = &["/etc/ld.so.cache"];

/// Requirement chains deeper than this are refused.
const MAX_REQUIRE_DEPTH: usize = 32;

/// A base a package or package runtime is built on: an image, or a pinned runtime version.
#[derive(Debug, Clone)]
pub(crate) struct BaseStack {
    /// As recorded: the image name, or `runtime@version`.
    pub name: String,
    /// Layers, bottom first.
    pub layers: Vec<Digest>,
    /// Process configuration.
    pub config: ImageConfig,
    /// The image at the root of the chain.
    pub base_image: Option<String>,
}

impl BaseStack {
    /// Identity of the base's file tree.
    pub(crate) fn chain(&self) -> String {
        chain_id(&self.layers)
    }
}

/// A package built against one base: what a runtime stacks.
#[derive(Debug, Clone)]
pub(crate) struct BuiltPackage {
    /// `name@version`.
    pub reference: String,
    /// Its layer; `None` when the recipe changed no file.
    pub layer: Option<Digest>,
    /// `KEY=VALUE` it adds to the environment.
    pub env: Vec<String>,
}

impl Platform {
    /// Resolves a base: an image name, else a runtime reference pinned to its version.
    pub(crate) fn resolve_base(&self, name: &str) -> Result<BaseStack, ControlError> {
        if let Some(img) = self.meta.image(name)? {
            return Ok(BaseStack {
                name: img.name.clone(),
                layers: img.layers,
                config: img.config,
                base_image: Some(img.name),
            });
        }
        let not_found = || ControlError::NotFound {
            what: "image or runtime",
            name: name.to_string(),
        };
        let r: strata_types::RuntimeRef = name.parse().map_err(|_| not_found())?;
        let rt = self
            .meta
            .runtime(&r.name, r.version)?
            .ok_or_else(not_found)?;
        Ok(BaseStack {
            name: rt.reference(),
            layers: rt.layers,
            config: rt.config,
            base_image: rt.base_image,
        })
    }

    /// Creates a package version from a recipe and builds it against its base (with its
    /// requirements). The same recipe on the same base is built once: an unchanged recipe
    /// without a version returns the newest version as it is. Nothing is recorded unless the
    /// build succeeds.
    pub async fn create_package(
        self: &Arc<Self>,
        spec: &CreatePackageSpec,
        context: Option<&Path>,
        events: &Emitter,
    ) -> Result<PackageInfo, ControlError> {
        validate_name(&spec.name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if let Some(v) = &spec.version {
            validate_package_version(v).map_err(|e| ControlError::Invalid(e.to_string()))?;
        }
        let recipe = recipe_text(spec)?;
        let base = self.resolve_base(&spec.base)?;
        // The recipe must parse and use only the allowed instructions before anything runs.
        plan_recipe(&recipe, &base.config)?;
        let requires = self.resolve_requires(&spec.requires, &spec.name)?;
        let _lease = self.gc_lock.read().await;
        let context_blob = match context {
            Some(tar) => Some(self.store_context(tar).await?),
            None => None,
        };
        let recipe_digest = recipe_digest(&recipe, context_blob.as_ref());
        let same = |p: &PackageRecord| p.recipe_digest == recipe_digest && p.requires == requires;
        let existing = match &spec.version {
            Some(v) => self.meta.package(&spec.name, Some(v))?,
            None => self.meta.package(&spec.name, None)?.filter(same),
        };
        let record = match existing {
            Some(p) if same(&p) => {
                events.progress(format!(
                    "package {} has this recipe already",
                    p.reference()
                ));
                p
            }
            Some(p) => {
                return Err(ControlError::AlreadyExists {
                    what: "package",
                    name: format!(
                        "{} (with another recipe; versions are immutable: choose a new version, or omit it to take the next number)",
                        p.reference()
                    ),
                })
            }
            None => {
                let version = match &spec.version {
                    Some(v) => v.clone(),
                    None => self.next_package_version(&spec.name)?,
                };
                // Build first, record second: a failed build leaves no package behind.
                let draft = PackageRecord {
                    name: spec.name.clone(),
                    version,
                    seq: 0,
                    base: base.name.clone(),
                    recipe: recipe.clone(),
                    recipe_digest: recipe_digest.clone(),
                    context: context_blob.clone(),
                    requires: requires.clone(),
                    created_at: String::new(),
                };
                let built = self
                    .build_package_on(&draft, &base, spec.no_cache, events, 0)
                    .await?;
                let rec = self.meta.insert_package(&NewPackage {
                    name: draft.name.clone(),
                    version: draft.version.clone(),
                    base: draft.base.clone(),
                    recipe: draft.recipe.clone(),
                    recipe_digest: draft.recipe_digest.clone(),
                    context: draft.context.clone(),
                    requires: draft.requires.clone(),
                })?;
                self.record_build(&rec, &base, &built)?;
                tracing::info!(package = %rec.reference(), layer = ?built.layer, "package created");
                return self.package_info(rec);
            }
        };
        // An existing version: make sure it is built against this base.
        self.ensure_package_built(&record, &base, spec.no_cache, events, 0)
            .await?;
        self.package_info(record)
    }

    /// Every package version.
    pub fn packages(&self) -> Result<Vec<PackageInfo>, ControlError> {
        self.meta
            .packages()?
            .into_iter()
            .map(|p| self.package_info(p))
            .collect()
    }

    /// One package version (`name` alone: the newest).
    pub fn package(&self, r: &PackageRef) -> Result<PackageInfo, ControlError> {
        let rec = self.package_record(r)?;
        self.package_info(rec)
    }

    /// Removes one version of a package, or every version of a name; refused while a runtime
    /// version or another package uses it. Layers nothing else uses are collected.
    pub async fn delete_package(
        self: &Arc<Self>,
        r: &PackageRef,
    ) -> Result<Vec<String>, ControlError> {
        self.package_record(r)?;
        let removed = self.meta.delete_package(&r.name, r.version.as_deref())?;
        self.collect_layers().await;
        Ok(removed)
    }

    pub(crate) fn package_record(&self, r: &PackageRef) -> Result<PackageRecord, ControlError> {
        self.meta
            .package(&r.name, r.version.as_deref())?
            .ok_or_else(|| ControlError::NotFound {
                what: "package",
                name: r.to_string(),
            })
    }

    fn package_info(&self, p: PackageRecord) -> Result<PackageInfo, ControlError> {
        let records = self.meta.package_builds(&p.name, &p.version)?;
        let env = records.first().map(|b| b.env.clone()).unwrap_or_default();
        let builds = records
            .into_iter()
            .map(|b| {
                let layer = match &b.layer {
                    Some(d) => self.layer_infos(std::slice::from_ref(d))?.pop(),
                    None => None,
                };
                Ok(PackageBuildInfo {
                    base: b.base,
                    layer,
                    created_at: b.created_at,
                })
            })
            .collect::<Result<Vec<_>, ControlError>>()?;
        Ok(PackageInfo {
            used_by: self.meta.package_users(&p.name, &p.version)?,
            name: p.name,
            version: p.version,
            base: p.base,
            recipe: p.recipe,
            recipe_digest: p.recipe_digest,
            requires: p.requires,
            env,
            builds,
            created_at: p.created_at,
        })
    }

    /// The next free number among a package's versions.
    fn next_package_version(&self, name: &str) -> Result<String, ControlError> {
        let highest = self
            .meta
            .packages()?
            .into_iter()
            .filter(|p| p.name == name)
            .filter_map(|p| p.version.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Ok((highest + 1).to_string())
    }

    /// Resolves requirement references to `name@version` (the newest when unversioned).
    fn resolve_requires(&self, refs: &[String], own: &str) -> Result<Vec<String>, ControlError> {
        let mut out = Vec::new();
        for s in refs {
            let r: PackageRef = s
                .parse()
                .map_err(|e| ControlError::Invalid(format!("--requires {s}: {e}")))?;
            if r.name == own {
                return Err(ControlError::Invalid(format!(
                    "package {own} cannot require itself"
                )));
            }
            let rec = self.package_record(&r).map_err(|_| {
                ControlError::Invalid(format!(
                    "required package {r} does not exist; create it first with `strata package create {} ...`",
                    r.name
                ))
            })?;
            let reference = rec.reference();
            if !out.contains(&reference) {
                out.push(reference);
            }
        }
        Ok(out)
    }

    /// Packages with their requirements first (depth first, in the order given), each once.
    /// Two versions of one package name are refused.
    pub(crate) fn package_closure(
        &self,
        refs: &[String],
    ) -> Result<Vec<PackageRecord>, ControlError> {
        let mut out: Vec<PackageRecord> = Vec::new();
        for s in refs {
            let r: PackageRef = s
                .parse()
                .map_err(|e| ControlError::Invalid(format!("package {s}: {e}")))?;
            self.visit_package(&r, &mut out, &mut Vec::new())?;
        }
        Ok(out)
    }

    fn visit_package(
        &self,
        r: &PackageRef,
        out: &mut Vec<PackageRecord>,
        path: &mut Vec<String>,
    ) -> Result<(), ControlError> {
        if path.len() > MAX_REQUIRE_DEPTH {
            return Err(ControlError::Invalid(format!(
                "package requirements nest deeper than {MAX_REQUIRE_DEPTH}: {}",
                path.join(" -> ")
            )));
        }
        let rec = self.package_record(r)?;
        if let Some(seen) = out.iter().find(|p| p.name == rec.name) {
            if seen.version != rec.version {
                return Err(ControlError::Invalid(format!(
                    "two versions of package {} are wanted: {} and {}{}",
                    rec.name,
                    seen.reference(),
                    rec.reference(),
                    if path.is_empty() {
                        String::new()
                    } else {
                        format!(" (required by {})", path.join(" -> "))
                    }
                )));
            }
            return Ok(());
        }
        path.push(rec.reference());
        for req in &rec.requires {
            let rr: PackageRef = req
                .parse()
                .map_err(|e| ControlError::Internal(format!("stored requirement {req}: {e}")))?;
            self.visit_package(&rr, out, path)?;
        }
        path.pop();
        if !out.iter().any(|p| p.name == rec.name) {
            out.push(rec);
        }
        Ok(())
    }

    /// A package built against `base`: the recorded build if its layer is stored, else a build
    /// now (requirements first).
    pub(crate) async fn ensure_package_built(
        self: &Arc<Self>,
        pkg: &PackageRecord,
        base: &BaseStack,
        no_cache: bool,
        events: &Emitter,
        depth: usize,
    ) -> Result<BuiltPackage, ControlError> {
        if !no_cache {
            if let Some(b) = self
                .meta
                .package_build(&pkg.name, &pkg.version, &base.chain())?
            {
                if b.layer.as_ref().is_none_or(|l| self.store.has_layer(l)) {
                    return Ok(BuiltPackage {
                        reference: pkg.reference(),
                        layer: b.layer,
                        env: b.env,
                    });
                }
            }
        }
        let built = self
            .build_package_on(pkg, base, no_cache, events, depth)
            .await?;
        self.record_build(pkg, base, &built)?;
        Ok(built)
    }

    fn record_build(
        &self,
        pkg: &PackageRecord,
        base: &BaseStack,
        built: &BuiltPackage,
    ) -> Result<(), ControlError> {
        self.meta.put_package_build(&PackageBuildRecord {
            package: pkg.name.clone(),
            version: pkg.version.clone(),
            base: base.name.clone(),
            base_chain: base.chain(),
            layer: built.layer.clone(),
            env: built.env.clone(),
            created_at: strata_meta::now_rfc3339(),
        })?;
        Ok(())
    }

    /// Builds a package's recipe on `base` plus its requirements (composed), into one layer.
    fn build_package_on<'a>(
        self: &'a Arc<Self>,
        pkg: &'a PackageRecord,
        base: &'a BaseStack,
        no_cache: bool,
        events: &'a Emitter,
        depth: usize,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<BuiltPackage, ControlError>> + Send + 'a>,
    > {
        Box::pin(async move {
            if depth > MAX_REQUIRE_DEPTH {
                return Err(ControlError::Invalid(format!(
                    "package requirements of {} nest deeper than {MAX_REQUIRE_DEPTH}",
                    pkg.reference()
                )));
            }
            // The stack the recipe runs on: the base, then the requirements composed.
            let (layers, config) = if pkg.requires.is_empty() {
                (base.layers.clone(), base.config.clone())
            } else {
                let closure = self.package_closure(&pkg.requires)?;
                let mut built = Vec::new();
                for p in &closure {
                    built.push(
                        self.ensure_package_built(p, base, no_cache, events, depth + 1)
                            .await?,
                    );
                }
                let composed = self.compose_stack(base, &built, events).await?;
                (composed.layers, composed.config)
            };
            let key = package_build_key(&layers, &pkg.recipe_digest);
            if !no_cache {
                if let Some(layer) = self.cached_layer(&key)? {
                    events.send(Event::Step {
                        stage: 0,
                        index: 1,
                        total: 1,
                        instruction: format!("package {} (cached)", pkg.reference()),
                        cached: true,
                    });
                    let env = package_env(&plan_recipe(&pkg.recipe, &config)?.1, &config);
                    return Ok(BuiltPackage {
                        reference: pkg.reference(),
                        layer,
                        env,
                    });
                }
            }
            events.progress(format!(
                "building package {} on {}",
                pkg.reference(),
                base.name
            ));
            let context = self.recipe_context(pkg).await?;
            let (layer, env) = self
                .run_recipe(pkg, &layers, &config, context.path(), events)
                .await?;
            self.meta.cache_put(&key, layers.last(), layer.as_ref())?;
            Ok(BuiltPackage {
                reference: pkg.reference(),
                layer,
                env,
            })
        })
    }

    /// Runs a recipe's steps on `layers` in one overlay and captures the change as one layer.
    pub(crate) async fn run_recipe(
        self: &Arc<Self>,
        pkg: &PackageRecord,
        layers: &[Digest],
        config: &ImageConfig,
        context: &Path,
        events: &Emitter,
    ) -> Result<(Option<Digest>, Vec<String>), ControlError> {
        let (plan, end_config) = plan_recipe(&pkg.recipe, config)?;
        let env = package_env(&end_config, config);
        let scratch = self.store.scratch_dir("package")?;
        let dirs = StepDirs::create(&scratch)?;
        let lowers = self.lowers(layers, &dirs)?;
        let mounted =
            MountGuard::overlay(&lowers, Some((&dirs.upper, &dirs.work)), &dirs.merged).await?;
        let total = plan.len();
        let mut result = Ok(());
        for (i, step) in plan.iter().enumerate() {
            events.send(Event::Step {
                stage: 0,
                index: i + 1,
                total,
                instruction: format!("{}: {}", pkg.reference(), step.text),
                cached: false,
            });
            let sources = match &step.action {
                Action::Copy { sources, .. } => {
                    Some(crate::copy::expand_sources(context, sources).map_err(|e| {
                        ControlError::Copy {
                            line: step.line,
                            message: e.to_string(),
                        }
                    })?)
                }
                _ => None,
            };
            result = self
                .apply_step(
                    step,
                    &dirs,
                    &scratch,
                    sources,
                    &HashMap::new(),
                    &HashMap::new(),
                    events,
                )
                .await;
            if result.is_err() {
                break;
            }
        }
        mounted.unmount().await?;
        result?;
        let platform = Arc::clone(self);
        let upper = dirs.upper.clone();
        let created_by = format!("package {}", pkg.reference());
        let layer = blocking(move || -> Result<Option<Digest>, ControlError> {
            let excludes: Vec<&str> = STEP_EXCLUDES
                .iter()
                .chain(PACKAGE_EXCLUDES)
                .copied()
                .collect();
            strata_store::diff::normalize_upper(&upper, &lowers, &excludes)?;
            strata_store::compose::remove_volatile(&upper)?;
            if std::fs::read_dir(&upper)
                .map_err(|e| ControlError::io("read package layer", e))?
                .next()
                .is_none()
            {
                return Ok(None);
            }
            let meta = platform.store.commit_layer(&upper)?;
            platform.meta.put_layer(&LayerRecord {
                digest: meta.digest.clone(),
                size_bytes: meta.size_bytes,
                entries: meta.entries,
                created_by,
            })?;
            Ok(Some(meta.digest))
        })
        .await?;
        Ok((layer, env))
    }

    /// Stores an uploaded COPY context (a tar) as a blob, after checking that it unpacks.
    async fn store_context(self: &Arc<Self>, tar: &Path) -> Result<Digest, ControlError> {
        let platform = Arc::clone(self);
        let tar = tar.to_path_buf();
        let limits = self.context_limits();
        blocking(move || -> Result<Digest, ControlError> {
            let check = platform.store.scratch_dir("context")?;
            unpack_context(&tar, check.path(), &limits)?;
            let mut file =
                std::fs::File::open(&tar).map_err(|e| ControlError::io("open context", e))?;
            let (digest, _) = platform.store.put_blob(&mut file)?;
            Ok(digest)
        })
        .await
    }

    /// A recipe's COPY context unpacked into a scratch dir (an empty one when it has none).
    pub(crate) async fn recipe_context(
        self: &Arc<Self>,
        pkg: &PackageRecord,
    ) -> Result<strata_store::ScratchDir, ControlError> {
        let platform = Arc::clone(self);
        let blob = pkg.context.clone();
        let limits = self.context_limits();
        blocking(move || -> Result<strata_store::ScratchDir, ControlError> {
            let dir = platform.store.scratch_dir("context")?;
            if let Some(blob) = blob {
                let path = platform.store.blob_path(&blob);
                unpack_context(&path, dir.path(), &limits)?;
            }
            Ok(dir)
        })
        .await
    }

    /// The limits an uploaded build or package context is unpacked with.
    pub(crate) fn context_limits(&self) -> ArchiveLimits {
        ArchiveLimits {
            max_bytes: self.settings.max_context_bytes,
            ..ArchiveLimits::default()
        }
    }
}

/// Unpacks a (possibly compressed) context tar into `dest`: no device nodes, owners not kept.
pub(crate) fn unpack_context(
    tar: &Path,
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<(), ControlError> {
    let file = std::fs::File::open(tar).map_err(|e| ControlError::io("open context", e))?;
    let mut reader = strata_store::archive::open_maybe_compressed(Box::new(file))?;
    strata_store::archive::extract_tar(
        &mut reader,
        dest,
        Whiteouts::Keep,
        &ExtractOptions {
            skip_device_nodes: true,
            preserve_owner: false,
        },
        limits,
    )?;
    Ok(())
}

/// The recipe of a spec as one Dockerfile snippet: apt, pip, npm, run, then the snippet.
/// Package specifiers become exec-form arguments (no shell), and none may start with `-`.
pub(crate) fn recipe_text(spec: &CreatePackageSpec) -> Result<String, ControlError> {
    let mut lines: Vec<String> = Vec::new();
    let exec = |argv: Vec<String>| -> String {
        format!(
            "RUN {}",
            serde_json::to_string(&argv).unwrap_or_else(|_| "[]".into())
        )
    };
    let check = |what: &str, items: &[String], ok: &dyn Fn(char) -> bool| {
        for item in items {
            if item.is_empty() || item.starts_with('-') || !item.chars().all(ok) || item.len() > 256
            {
                return Err(ControlError::Invalid(format!(
                    "invalid --{what} entry {item:?}: expected a package specifier (no leading '-', no spaces or shell characters)"
                )));
            }
        }
        Ok(())
    };
    if !spec.apt.is_empty() {
        check("apt", &spec.apt, &|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '=' | ':' | '~')
        })?;
        lines.push(exec(vec!["apt-get".into(), "update".into()]));
        let mut argv: Vec<String> = [
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(spec.apt.iter().cloned());
        lines.push(exec(argv));
    }
    let spec_chars = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '.' | '_'
                    | '-'
                    | '['
                    | ']'
                    | '<'
                    | '>'
                    | '='
                    | '!'
                    | '~'
                    | ','
                    | '@'
                    | '/'
                    | '+'
                    | '*'
                    | '^'
                    | ':'
            )
    };
    if !spec.pip.is_empty() {
        check("pip", &spec.pip, &spec_chars)?;
        let mut argv: Vec<String> = [
            "python3",
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            "--break-system-packages",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(spec.pip.iter().cloned());
        lines.push(exec(argv));
    }
    if !spec.npm.is_empty() {
        check("npm", &spec.npm, &spec_chars)?;
        let mut argv: Vec<String> = [
            "npm",
            "install",
            "--global",
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(spec.npm.iter().cloned());
        lines.push(exec(argv));
    }
    for cmd in &spec.run {
        if cmd.trim().is_empty() || cmd.contains('\n') {
            return Err(ControlError::Invalid(format!(
                "invalid --run command {cmd:?}: expected one non-empty line"
            )));
        }
        lines.push(format!("RUN {cmd}"));
    }
    if let Some(snippet) = &spec.snippet {
        lines.push(snippet.trim_end().to_string());
    }
    if lines.is_empty() {
        return Err(ControlError::Invalid(
            "a package needs a recipe: -f SNIPPET, --run CMD, --apt PKG,..., --pip SPEC,... or --npm SPEC,..."
                .into(),
        ));
    }
    Ok(lines.join("\n") + "\n")
}

/// Plans a recipe on a stack with `config`: its file-system steps and the configuration it
/// ends with. Only RUN, ENV, COPY (from the context) and WORKDIR are allowed. Line numbers in
/// errors count from the recipe's first line.
pub(crate) fn plan_recipe(
    recipe: &str,
    config: &ImageConfig,
) -> Result<(Vec<strata_dockerfile::Step>, ImageConfig), ControlError> {
    let text = format!("FROM {RECIPE_BASE}\n{recipe}");
    let shift = |e: strata_dockerfile::DockerfileError| recipe_error(&e.to_string());
    let df = strata_dockerfile::parse(&text).map_err(shift)?;
    for ins in df.instructions.iter().skip(1) {
        let allowed = match &ins.command {
            Command::Run(_) | Command::Env(_) | Command::Workdir(_) => true,
            Command::Copy(c) => c.from.is_none(),
            _ => false,
        };
        if !allowed {
            return Err(ControlError::Invalid(format!(
                "package recipe line {}: {} is not allowed in a package; use RUN, ENV, COPY (from the uploaded context) and WORKDIR",
                ins.line - 1,
                match &ins.command {
                    Command::Copy(_) => "COPY --from",
                    other => other.keyword(),
                }
            )));
        }
    }
    let cfg = config.clone();
    let resolve = move |name: &str| (name == RECIPE_BASE).then(|| cfg.clone());
    let plan = strata_dockerfile::plan(&df, &BTreeMap::new(), &resolve).map_err(shift)?;
    let stage = plan
        .stages
        .into_iter()
        .next_back()
        .ok_or_else(|| ControlError::Internal("a recipe plan has no stage".into()))?;
    let steps = stage
        .steps
        .into_iter()
        .filter(|s| !matches!(s.action, Action::Config))
        .map(|mut s| {
            s.line -= 1;
            s
        })
        .collect();
    Ok((steps, stage.config))
}

/// Rewrites a Dockerfile error about the recipe wrapped in a FROM line to the recipe's lines.
fn recipe_error(message: &str) -> ControlError {
    if let Some(rest) = message.strip_prefix("line ") {
        if let Some((n, tail)) = rest.split_once(':') {
            if let Ok(n) = n.parse::<usize>() {
                return ControlError::Invalid(format!(
                    "package recipe line {}:{tail}",
                    n.saturating_sub(1)
                ));
            }
        }
    }
    ControlError::Invalid(format!("package recipe: {message}"))
}

/// The environment a recipe adds: variables its ENV set or changed relative to `start`.
fn package_env(end: &ImageConfig, start: &ImageConfig) -> Vec<String> {
    end.env
        .iter()
        .filter(|e| !start.env.contains(e))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The identity of a recipe and its context.
fn recipe_digest(recipe: &str, context: Option<&Digest>) -> Digest {
    let mut h = Sha256::new();
    h.update(b"strata-recipe-v1\n");
    h.update(recipe.as_bytes());
    h.update(b"\n");
    if let Some(c) = context {
        h.update(c.to_string().as_bytes());
    }
    Digest::from_bytes(&h.finalize().into())
}

/// The build-cache key of a recipe run on a stack.
pub(crate) fn package_build_key(layers: &[Digest], recipe: &Digest) -> String {
    let mut h = Sha256::new();
    h.update(b"strata-package-v1\n");
    h.update(chain_id(layers).as_bytes());
    h.update(b"\n");
    h.update(recipe.to_string().as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CreatePackageSpec {
        CreatePackageSpec {
            name: "x".into(),
            base: "debian".into(),
            ..CreatePackageSpec::default()
        }
    }

    #[test]
    fn recipes_are_exec_form_and_refuse_option_injection() {
        let mut s = spec();
        s.apt = vec!["curl".into(), "libxml2=2.9.14+dfsg-1.3~deb12u1".into()];
        s.pip = vec!["requests==2.31.0".into(), "pillow[avif]>=10".into()];
        s.npm = vec!["left-pad@1.3.0".into(), "@scope/pkg".into()];
        s.run = vec!["echo hi > /opt/hi".into()];
        let text = recipe_text(&s).expect("test");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"RUN ["apt-get","update"]"#);
        assert!(lines[1].ends_with(r#""curl","libxml2=2.9.14+dfsg-1.3~deb12u1"]"#));
        assert!(lines[2]
            .contains(r#""--break-system-packages","requests==2.31.0","pillow[avif]>=10"]"#));
        assert!(lines[3].starts_with(r#"RUN ["npm","install","--global""#));
        assert_eq!(lines[4], "RUN echo hi > /opt/hi");
        for bad in ["--index-url=http://evil", "a b", "a;rm", "$(x)", ""] {
            let mut s = spec();
            s.pip = vec![bad.into()];
            assert!(recipe_text(&s).is_err(), "{bad}");
        }
        let mut s = spec();
        s.apt = vec!["curl|sh".into()];
        assert!(recipe_text(&s).is_err());
        assert!(recipe_text(&spec()).is_err(), "an empty recipe is refused");
    }

    #[test]
    fn recipes_allow_only_run_env_copy_workdir_with_recipe_line_numbers() {
        let cfg = ImageConfig {
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            ..ImageConfig::default()
        };
        let (steps, end) = plan_recipe(
            "ENV FOO=bar PATH=/opt/x/bin:$PATH\nWORKDIR /opt/x\nRUN make\nCOPY a.txt .\n",
            &cfg,
        )
        .expect("test");
        assert_eq!(steps.len(), 3, "ENV makes no step");
        assert_eq!(steps[1].line, 3);
        let env = package_env(&end, &cfg);
        assert!(env.contains(&"FOO=bar".to_string()), "{env:?}");
        assert!(
            env.contains(&"PATH=/opt/x/bin:/usr/bin:/bin".to_string()),
            "{env:?}"
        );
        assert_eq!(env.len(), 2, "{env:?}");
        for (bad, word) in [
            ("RUN true\nFROM debian\n", "FROM"),
            ("CMD [\"x\"]\n", "CMD"),
            ("ENTRYPOINT x\n", "ENTRYPOINT"),
            ("USER nobody\n", "USER"),
            ("COPY --from=other /a /b\n", "COPY --from"),
            ("LABEL a=b\n", "LABEL"),
        ] {
            let err = plan_recipe(bad, &cfg).expect_err("test").to_string();
            assert!(
                err.contains(word) && err.contains("not allowed"),
                "{bad}: {err}"
            );
        }
        let err = plan_recipe("RUN true\nBOGUS x\n", &cfg)
            .expect_err("test")
            .to_string();
        assert!(err.starts_with("package recipe line 2:"), "{err}");
    }

    #[test]
    fn build_keys_follow_the_stack_and_the_recipe() {
        let a = Digest::from_bytes(&[1; 32]);
        let b = Digest::from_bytes(&[2; 32]);
        let r1 = recipe_digest("RUN a\n", None);
        let r2 = recipe_digest("RUN a\n", Some(&b));
        assert_ne!(r1, r2, "the context is part of a recipe's identity");
        assert_eq!(
            package_build_key(std::slice::from_ref(&a), &r1),
            package_build_key(std::slice::from_ref(&a), &r1)
        );
        assert_ne!(
            package_build_key(std::slice::from_ref(&a), &r1),
            package_build_key(&[b], &r1)
        );
        assert_ne!(
            package_build_key(std::slice::from_ref(&a), &r1),
            package_build_key(&[a], &r2)
        );
    }
}
