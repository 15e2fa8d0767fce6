//! Where a deploy's code comes from (an uploaded archive or a git repository the server
//! fetches), and the declarative deploy behind `strata up`: make a function match a complete
//! configuration and say what changed.

use std::path::Path;
use std::sync::Arc;

use strata_meta::{CodeRecord, FunctionRecord};
use strata_types::api::{
    ApplyAction, ApplyResult, FunctionConfig, FunctionInfo, FunctionUpdate, GitOrigin, GitSource,
};
use strata_types::{validate_name, Digest};

use crate::functions::apply_update;
use crate::{ControlError, Platform};

/// The code of a deploy.
#[derive(Debug, Clone, Copy)]
pub enum CodeInput<'a> {
    /// An uploaded zip, tar or tar.gz.
    Archive(&'a Path),
    /// A directory of a git repository at a ref, fetched by the server.
    Git(&'a GitSource),
}

/// Stored code and, when it came from git, where from.
struct StoredCode {
    record: CodeRecord,
    git: Option<GitOrigin>,
}

impl Platform {
    /// Fetches a directory of a git repository at a ref and stores it as function code, through
    /// the same import (and the same rules on content) as an uploaded archive.
    async fn store_git(self: &Arc<Self>, src: &GitSource) -> Result<StoredCode, ControlError> {
        let scratch = self.store.scratch_dir("git")?;
        let tar = scratch.path().join("code.tar");
        let req = strata_sandbox::git::GitRequest {
            url: src.url.clone(),
            reference: src.reference.clone(),
            subdir: src.subdir.clone(),
        };
        let fetched = strata_sandbox::git::fetch_archive(
            &self.settings.git,
            &req,
            &scratch.path().join("fetch"),
            &tar,
        )
        .await?;
        let record = self.store_code(&tar).await?;
        Ok(StoredCode {
            record,
            git: Some(GitOrigin {
                url: src.url.clone(),
                reference: fetched.reference,
                commit: fetched.commit,
                subdir: fetched.subdir,
            }),
        })
    }

    async fn store_input(
        self: &Arc<Self>,
        input: CodeInput<'_>,
    ) -> Result<StoredCode, ControlError> {
        match input {
            CodeInput::Archive(p) => Ok(StoredCode {
                record: self.store_code(p).await?,
                git: None,
            }),
            CodeInput::Git(src) => self.store_git(src).await,
        }
    }

    /// Creates a function at revision 1 from an archive or a git repository.
    pub async fn create_function_from(
        self: &Arc<Self>,
        name: &str,
        config: FunctionConfig,
        input: CodeInput<'_>,
    ) -> Result<FunctionInfo, ControlError> {
        self.check_new_function(name, &config)?;
        let code = self.store_input(input).await?;
        self.insert_function(name, &config, code)?;
        self.function(name)
    }

    fn check_new_function(&self, name: &str, config: &FunctionConfig) -> Result<(), ControlError> {
        validate_name(name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if self.meta.function(name)?.is_some() {
            return Err(ControlError::AlreadyExists {
                what: "function",
                name: name.into(),
            });
        }
        self.check_config(config)
    }

    fn insert_function(
        &self,
        name: &str,
        config: &FunctionConfig,
        code: StoredCode,
    ) -> Result<(), ControlError> {
        self.meta
            .insert_function(name, config, &code.record.digest)?;
        self.record_git(name, 1, code.git.as_ref())?;
        self.forget_resolutions();
        tracing::info!(function = name, revision = 1, code = %code.record.digest, "function created");
        Ok(())
    }

    fn record_git(
        &self,
        name: &str,
        revision: u32,
        git: Option<&GitOrigin>,
    ) -> Result<(), ControlError> {
        let json = git.and_then(|g| serde_json::to_string(g).ok());
        self.meta
            .set_revision_git(name, revision, json.as_deref())?;
        Ok(())
    }

    /// Makes the next revision of a function from a configuration change and/or new code (an
    /// archive or a git repository). An update that changes nothing keeps the current revision.
    pub async fn update_function_from(
        self: &Arc<Self>,
        name: &str,
        update: FunctionUpdate,
        input: Option<CodeInput<'_>>,
    ) -> Result<FunctionInfo, ControlError> {
        let current = self.function_record(name)?;
        let config = apply_update(&current.config, update);
        self.check_config(&config)?;
        let code = match input {
            Some(i) => Some(self.store_input(i).await?),
            None => None,
        };
        self.commit_revision(&current, &config, code).await?;
        self.function(name)
    }

    /// Adds a revision when the configuration or the code differs from `current`; returns
    /// whether it did. New code without a git origin clears the origin; no new code keeps it.
    async fn commit_revision(
        self: &Arc<Self>,
        current: &FunctionRecord,
        config: &FunctionConfig,
        code: Option<StoredCode>,
    ) -> Result<bool, ControlError> {
        let name = current.name.as_str();
        let (digest, git): (Digest, Option<GitOrigin>) = match code {
            Some(c) => (c.record.digest, c.git),
            None => (
                current.code.digest.clone(),
                self.meta
                    .revision_git(name, current.revision)?
                    .and_then(|j| serde_json::from_str(&j).ok()),
            ),
        };
        if *config == current.config && digest == current.code.digest {
            // Same content is the same stored code (content-addressed): nothing to collect.
            return Ok(false);
        }
        let rev = self
            .meta
            .add_revision(name, config, &digest)?
            .ok_or_else(|| ControlError::NotFound {
                what: "function",
                name: name.into(),
            })?;
        self.record_git(name, rev, git.as_ref())?;
        self.forget_resolutions();
        tracing::info!(function = name, revision = rev, "function updated");
        self.instances.retire_function(name, Some(rev)).await;
        self.collect_code();
        Ok(true)
    }

    /// Makes function `name` match `config` and, when given, `code`: creates it, adds a
    /// revision, or does nothing, and says which fields changed. Without code an existing
    /// function keeps its code (a new one needs code). With `dry_run` nothing is changed: the
    /// code is still fetched and checked (and then collected), so the answer is exact.
    pub async fn apply_function(
        self: &Arc<Self>,
        name: &str,
        config: FunctionConfig,
        input: Option<CodeInput<'_>>,
        dry_run: bool,
    ) -> Result<ApplyResult, ControlError> {
        validate_name(name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        self.check_config(&config)?;
        let Some(current) = self.meta.function(name)? else {
            let input = input.ok_or_else(|| {
                ControlError::Invalid(format!(
                    "function {name:?} does not exist yet: its first deploy needs code (a code archive or a git source)"
                ))
            })?;
            self.check_new_function(name, &config)?;
            let code = self.store_input(input).await?;
            let function = if dry_run {
                self.collect_code();
                None
            } else {
                self.insert_function(name, &config, code)?;
                Some(self.function(name)?)
            };
            return Ok(ApplyResult {
                action: ApplyAction::Created,
                changed: Vec::new(),
                dry_run,
                function,
            });
        };
        let code = match input {
            Some(i) => Some(self.store_input(i).await?),
            None => None,
        };
        let mut changed = config_changes(&current.config, &config);
        if code
            .as_ref()
            .is_some_and(|c| c.record.digest != current.code.digest)
        {
            changed.push("code".into());
        }
        let action = if changed.is_empty() {
            ApplyAction::Unchanged
        } else {
            ApplyAction::Updated
        };
        if dry_run {
            self.collect_code();
        } else if action == ApplyAction::Updated {
            self.commit_revision(&current, &config, code).await?;
        }
        Ok(ApplyResult {
            action,
            changed,
            dry_run,
            function: Some(self.function(name)?),
        })
    }
}

/// The fields in which two configurations differ, named as in [`ApplyResult::changed`].
pub fn config_changes(old: &FunctionConfig, new: &FunctionConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |name: &str, differs: bool| {
        if differs {
            out.push(name.to_string());
        }
    };
    diff("runtime", old.runtime != new.runtime);
    diff("handler", old.handler != new.handler);
    diff(
        "resources.memory",
        old.resources.memory_bytes != new.resources.memory_bytes,
    );
    diff(
        "resources.cpu",
        old.resources.cpu_millis != new.resources.cpu_millis,
    );
    diff(
        "resources.timeout",
        old.resources.timeout_ms != new.resources.timeout_ms,
    );
    diff("env", old.env != new.env);
    diff("secret_env", old.secret_env != new.secret_env);
    diff("volumes", old.volumes != new.volumes);
    diff("network", old.network != new.network);
    diff("public", old.public != new.public);
    diff("scaling", old.scaling != new.scaling);
    diff("routes", old.routes != new.routes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::api::Route;

    #[test]
    fn changes_are_named_by_field() {
        let a = FunctionConfig {
            runtime: "python3".into(),
            handler: "app.handler".into(),
            ..Default::default()
        };
        assert!(config_changes(&a, &a).is_empty());
        let mut b = a.clone();
        b.handler = "app.other".into();
        b.resources.memory_bytes = Some(128 << 20);
        b.secret_env.insert("K".into(), "v".into());
        b.routes.push(Route {
            path: "/x".into(),
            methods: vec![],
        });
        b.scaling.max_instances = 3;
        assert_eq!(
            config_changes(&a, &b),
            vec![
                "handler",
                "resources.memory",
                "secret_env",
                "scaling",
                "routes"
            ]
        );
        // A secret's value counts even though it is never shown.
        let mut c = b.clone();
        c.secret_env.insert("K".into(), "other".into());
        assert_eq!(config_changes(&b, &c), vec!["secret_env"]);
    }
}
