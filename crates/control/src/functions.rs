//! Functions: code-only deploys (a code package plus configuration, never an image build),
//! revisions, volumes and logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_meta::{CodeRecord, FunctionRecord};
use strata_types::api::{FunctionConfig, FunctionInfo, FunctionUpdate, VolumeInfo};
use strata_types::{validate_name, Resources, RuntimeRef};

use crate::build::blocking;
use crate::deploy::CodeInput;
use crate::{ControlError, Platform};

/// Paths a volume may not be mounted at.
const RESERVED_MOUNTS: &[&str] = &[
    "/",
    "/bin",
    "/dev",
    "/etc",
    "/lib",
    "/proc",
    "/run/strata",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var/task",
];
/// Trees a volume may not be mounted inside.
const RESERVED_TREES: &[&str] = &["/dev/", "/proc/", "/run/strata/", "/sys/", "/var/task/"];

impl Platform {
    /// Stores an uploaded code archive (zip, tar, tar.gz) content-addressed and unpacked once.
    pub async fn store_code(self: &Arc<Self>, archive: &Path) -> Result<CodeRecord, ControlError> {
        let me = Arc::clone(self);
        let archive = archive.to_path_buf();
        let limits = self.settings.code_limits.clone();
        let meta = blocking(move || me.store.import_code(&archive, &limits)).await?;
        let rec = CodeRecord {
            digest: meta.digest,
            size_bytes: meta.size_bytes,
            entries: meta.entries,
        };
        self.meta.put_code(&rec)?;
        Ok(rec)
    }

    /// Checks a configuration against what exists: the runtime, the volumes, the handler.
    pub(crate) fn check_config(&self, config: &FunctionConfig) -> Result<(), ControlError> {
        let r: RuntimeRef = config
            .runtime
            .parse()
            .map_err(|e: strata_types::NameError| {
                ControlError::Invalid(format!("--runtime: {e}"))
            })?;
        let rt = self.runtime_record(&r)?;
        if rt.config.entrypoint.as_ref().is_none_or(|e| e.is_empty()) {
            return Err(ControlError::Invalid(format!(
                "runtime {} has no ENTRYPOINT, so it has no bootstrap to run functions with; \
                 give its Dockerfile an ENTRYPOINT that serves the Lambda Runtime API",
                rt.reference()
            )));
        }
        if config.handler.trim().is_empty()
            || config.handler.len() > 256
            || config.handler.contains('\0')
        {
            return Err(ControlError::Invalid(
                "--handler must be 1-256 characters, e.g. app.handler".into(),
            ));
        }
        for (k, _) in config.env.iter().chain(config.secret_env.iter()) {
            let ok = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(ControlError::Invalid(format!(
                    "invalid environment variable name {k:?}: use letters, digits and _, not starting with a digit"
                )));
            }
            if k.starts_with("STRATA_")
                || k.starts_with("AWS_LAMBDA_")
                || k == "_HANDLER"
                || k == "LAMBDA_TASK_ROOT"
            {
                return Err(ControlError::Invalid(format!(
                    "environment variable {k} is reserved by the platform"
                )));
            }
        }
        let sc = &config.scaling;
        if sc.max_instances == 0 || sc.min_instances > sc.max_instances || sc.max_instances > 1000 {
            return Err(ControlError::Invalid(format!(
                "scaling: need 0 <= min-instances ({}) <= max-instances ({}) <= 1000 and max-instances >= 1",
                sc.min_instances, sc.max_instances
            )));
        }
        if !(1..=64).contains(&sc.concurrency) {
            return Err(ControlError::Invalid(format!(
                "scaling: concurrency must be 1-64, not {}",
                sc.concurrency
            )));
        }
        if sc.max_queue > 10_000 {
            return Err(ControlError::Invalid(format!(
                "scaling: max-queue must be at most 10000, not {}",
                sc.max_queue
            )));
        }
        if config.routes.len() > strata_types::api::MAX_ROUTES {
            return Err(ControlError::Invalid(format!(
                "routes: at most {} routes",
                strata_types::api::MAX_ROUTES
            )));
        }
        for r in &config.routes {
            r.validate().map_err(ControlError::Invalid)?;
        }
        let mut seen = std::collections::HashSet::new();
        for v in &config.volumes {
            if !self.meta.has_volume(&v.volume)? {
                return Err(ControlError::NotFound {
                    what: "volume",
                    name: v.volume.clone(),
                });
            }
            let p = if v.path == "/" {
                "/"
            } else {
                v.path.trim_end_matches('/')
            };
            if !v.path.starts_with('/') || v.path.split('/').any(|c| c == ".." || c == ".") {
                return Err(ControlError::Invalid(format!(
                    "volume path {:?} must be an absolute path",
                    v.path
                )));
            }
            if RESERVED_MOUNTS.contains(&p)
                || RESERVED_TREES
                    .iter()
                    .any(|t| format!("{p}/").starts_with(t))
            {
                return Err(ControlError::Invalid(format!(
                    "volume path {:?} is reserved; use e.g. /mnt/{}",
                    v.path, v.volume
                )));
            }
            if !seen.insert(p.to_string()) {
                return Err(ControlError::Invalid(format!(
                    "two volumes are mounted at {p}"
                )));
            }
        }
        Ok(())
    }

    /// Creates a function at revision 1 from an uploaded code archive.
    pub async fn create_function(
        self: &Arc<Self>,
        name: &str,
        config: FunctionConfig,
        code_archive: &Path,
    ) -> Result<FunctionInfo, ControlError> {
        self.create_function_from(name, config, CodeInput::Archive(code_archive))
            .await
    }

    /// Makes the next revision of a function from a configuration change and/or a new code
    /// archive. An update that changes nothing keeps the current revision.
    pub async fn update_function(
        self: &Arc<Self>,
        name: &str,
        update: FunctionUpdate,
        code_archive: Option<&Path>,
    ) -> Result<FunctionInfo, ControlError> {
        self.update_function_from(name, update, code_archive.map(CodeInput::Archive))
            .await
    }

    pub(crate) fn function_record(&self, name: &str) -> Result<FunctionRecord, ControlError> {
        self.meta
            .function(name)?
            .ok_or_else(|| ControlError::NotFound {
                what: "function",
                name: name.into(),
            })
    }

    /// A function at its current revision, with secret values masked.
    pub fn function(&self, name: &str) -> Result<FunctionInfo, ControlError> {
        let rec = self.function_record(name)?;
        self.function_info(rec)
    }

    /// Whether a function's HTTP trigger answers without the bearer token. An unknown function
    /// (or a metadata error) counts as private, so the trigger does not tell which names exist.
    pub fn function_is_public(&self, name: &str) -> bool {
        matches!(self.meta.function(name), Ok(Some(f)) if f.config.public)
    }

    /// Whether a request to a function's HTTP trigger (method, path after `/fn/NAME`) matches
    /// one of its routes (always, for a function without routes). An unknown function matches
    /// nothing.
    pub fn function_route_matches(&self, name: &str, method: &str, path: &str) -> bool {
        matches!(self.meta.function(name), Ok(Some(f))
            if strata_types::api::routes_match(&f.config.routes, method, path))
    }

    /// Every function.
    pub fn functions(&self) -> Result<Vec<FunctionInfo>, ControlError> {
        self.meta
            .functions()?
            .into_iter()
            .map(|f| self.function_info(f))
            .collect()
    }

    fn function_info(&self, f: FunctionRecord) -> Result<FunctionInfo, ControlError> {
        let (resolved, defaults) = match f
            .config
            .runtime
            .parse::<RuntimeRef>()
            .ok()
            .map(|r| self.meta.runtime(&r.name, r.version))
        {
            Some(Ok(Some(rt))) => (rt.reference(), rt.resources),
            _ => ("(missing)".to_string(), Resources::platform_default()),
        };
        let git = self
            .meta
            .revision_git(&f.name, f.revision)
            .ok()
            .flatten()
            .and_then(|j| serde_json::from_str(&j).ok());
        Ok(FunctionInfo {
            stats: self.instances.stats(&f.name),
            name: f.name,
            revision: f.revision,
            runtime: f.config.runtime.clone(),
            runtime_resolved: resolved,
            handler: f.config.handler.clone(),
            resources: f
                .config
                .resources
                .or(&defaults)
                .or(&Resources::platform_default()),
            env: f.config.env.clone(),
            secret_env: f.config.secret_env.keys().cloned().collect(),
            volumes: f.config.volumes.clone(),
            network: f.config.network,
            public: f.config.public,
            scaling: f.config.scaling.clone(),
            routes: f.config.routes.clone(),
            git,
            code_digest: f.code.digest,
            code_size_bytes: f.code.size_bytes,
            updated_at: f.updated_at,
            created_at: f.created_at,
        })
    }

    /// Removes a function: its instances stop, its revisions and logs go, unused code is collected.
    pub async fn delete_function(self: &Arc<Self>, name: &str) -> Result<(), ControlError> {
        self.function_record(name)?;
        self.instances.retire_function(name, None).await;
        self.meta.delete_function(name)?;
        self.forget_resolutions();
        self.logs.remove(name);
        self.instances.series.remove(name);
        self.collect_code();
        tracing::info!(function = name, "function removed");
        Ok(())
    }

    /// Deletes code packages no revision uses.
    pub(crate) fn collect_code(&self) {
        let Ok(unused) = self.meta.unused_code() else {
            return;
        };
        for d in unused {
            if let Ok(true) = self.meta.delete_code(&d) {
                if let Err(e) = self.store.remove_code(&d) {
                    tracing::warn!(digest = %d, error = %e, "cannot remove code");
                }
            }
        }
    }

    /// Functions whose current revision uses a runtime: `NAME@N` that version (pinned, or
    /// following the name while N is the newest), `NAME` any version.
    pub fn runtime_users(&self, r: &RuntimeRef) -> Result<Vec<String>, ControlError> {
        let newest = self.meta.runtime(&r.name, None)?.map(|rt| rt.version);
        Ok(self.meta.runtime_users(&r.name, r.version, newest)?)
    }

    /// Log entries of a function at or after `since_ms`, at most the newest `limit`.
    pub fn read_logs(
        &self,
        name: &str,
        since_ms: u64,
        limit: usize,
    ) -> Vec<strata_types::api::LogEntry> {
        self.logs.read(name, since_ms, limit)
    }

    /// New log entries of every function as they are written.
    pub fn subscribe_logs(&self) -> tokio::sync::broadcast::Receiver<strata_types::api::LogEntry> {
        self.logs.subscribe()
    }

    // ---- volumes ----

    /// Host directory of a volume.
    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.settings.data_dir.join("volumes").join(name)
    }

    /// Creates a named volume: a host directory mounted read-write into instances.
    pub fn create_volume(&self, name: &str) -> Result<VolumeInfo, ControlError> {
        validate_name(name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let path = self.volume_path(name);
        std::fs::create_dir_all(&path)
            .map_err(|e| ControlError::io(format!("create volume {}", path.display()), e))?;
        // Like /tmp: writable by the function's user whoever it is, sticky.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| ControlError::io("set volume permissions", e))?;
        self.meta.insert_volume(name)?;
        self.volume(name)
    }

    /// One volume.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, ControlError> {
        self.volumes()?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| ControlError::NotFound {
                what: "volume",
                name: name.into(),
            })
    }

    /// Every volume.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, ControlError> {
        self.meta
            .volumes()?
            .into_iter()
            .map(|(name, created_at)| {
                Ok(VolumeInfo {
                    used_by: self.meta.volume_users(&name)?,
                    name,
                    created_at,
                })
            })
            .collect()
    }

    /// Removes a volume and its data; refused while a function mounts it.
    pub fn delete_volume(&self, name: &str) -> Result<(), ControlError> {
        if !self.meta.delete_volume(name)? {
            return Err(ControlError::NotFound {
                what: "volume",
                name: name.into(),
            });
        }
        let path = self.volume_path(name);
        if let Err(e) = std::fs::remove_dir_all(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove volume data");
            }
        }
        Ok(())
    }
}

/// Applies an update to a configuration.
pub fn apply_update(base: &FunctionConfig, u: FunctionUpdate) -> FunctionConfig {
    let mut c = base.clone();
    if let Some(r) = u.runtime {
        c.runtime = r;
    }
    if let Some(h) = u.handler {
        c.handler = h;
    }
    c.resources = u.resources.or(&c.resources);
    for k in &u.unset_env {
        c.env.remove(k);
        c.secret_env.remove(k);
    }
    for (k, v) in u.env {
        c.secret_env.remove(&k);
        c.env.insert(k, v);
    }
    for (k, v) in u.secret_env {
        c.env.remove(&k);
        c.secret_env.insert(k, v);
    }
    if let Some(v) = u.volumes {
        c.volumes = v;
    }
    if let Some(n) = u.network {
        c.network = n;
    }
    if let Some(p) = u.public {
        c.public = p;
    }
    if let Some(r) = u.routes {
        c.routes = r;
    }
    let s = u.scaling;
    c.scaling.min_instances = s.min_instances.unwrap_or(c.scaling.min_instances);
    c.scaling.max_instances = s.max_instances.unwrap_or(c.scaling.max_instances);
    c.scaling.concurrency = s.concurrency.unwrap_or(c.scaling.concurrency);
    c.scaling.idle_timeout_ms = s.idle_timeout_ms.or(c.scaling.idle_timeout_ms);
    c.scaling.max_queue = s.max_queue.unwrap_or(c.scaling.max_queue);
    c
}

/// The merged environment a function's bootstrap sees, in order: runtime config, function env,
/// secret env (later wins), as `KEY=VALUE`.
pub(crate) fn function_env(runtime_env: &[String], config: &FunctionConfig) -> Vec<String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut put = |k: &str, v: &str| {
        if map.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    };
    for e in runtime_env {
        if let Some((k, v)) = e.split_once('=') {
            put(k, v);
        }
    }
    for (k, v) in config.env.iter().chain(config.secret_env.iter()) {
        put(k, v);
    }
    order
        .into_iter()
        .map(|k| format!("{k}={}", map[&k]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_merge_and_move_keys_between_plain_and_secret() {
        let mut base = FunctionConfig {
            runtime: "python3".into(),
            handler: "app.handler".into(),
            ..Default::default()
        };
        base.env.insert("A".into(), "1".into());
        base.secret_env.insert("S".into(), "x".into());
        let mut u = FunctionUpdate {
            handler: Some("app.other".into()),
            ..Default::default()
        };
        u.env.insert("S".into(), "now-plain".into());
        u.unset_env.push("A".into());
        u.resources.memory_bytes = Some(512 << 20);
        let c = apply_update(&base, u);
        assert_eq!(c.handler, "app.other");
        assert_eq!(c.runtime, "python3");
        assert!(!c.env.contains_key("A"));
        assert_eq!(c.env.get("S").map(String::as_str), Some("now-plain"));
        assert!(c.secret_env.is_empty());
        assert_eq!(c.resources.memory_bytes, Some(512 << 20));
        assert_eq!(
            apply_update(&c, FunctionUpdate::default()),
            c,
            "an empty update changes nothing"
        );
        assert!(!c.public, "private unless asked");
        let public = apply_update(
            &c,
            FunctionUpdate {
                public: Some(true),
                ..Default::default()
            },
        );
        assert!(public.public);
        assert!(
            apply_update(&public, FunctionUpdate::default()).public,
            "an update without public keeps it"
        );
        let private = apply_update(
            &public,
            FunctionUpdate {
                public: Some(false),
                ..Default::default()
            },
        );
        assert!(!private.public);
        let stored: FunctionConfig =
            serde_json::from_str(r#"{"runtime": "python3", "handler": "app.handler"}"#)
                .expect("a configuration stored before public existed");
        assert!(!stored.public, "old rows read as private");
    }

    #[test]
    fn environment_layers_in_order() {
        let mut c = FunctionConfig::default();
        c.env.insert("PATH".into(), "/custom".into());
        c.env.insert("B".into(), "2".into());
        c.secret_env.insert("TOKEN".into(), "t".into());
        let env = function_env(&["PATH=/usr/bin".into(), "LANG=C".into()], &c);
        assert_eq!(env, vec!["PATH=/custom", "LANG=C", "B=2", "TOKEN=t"]);
    }
}
