//! One-off commands in a fresh instance of a runtime (`strata runtime run`), the runtime
//! developer's check that a runtime works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_sandbox::{ContainerSpec, Limits, Network};
use strata_types::api::{RunRequest, RunResult};
use strata_types::RuntimeRef;

use crate::build::{MountGuard, StepDirs};
use crate::{random_hex, ControlError, Emitter, Platform, CONTAINER_PREFIX};

/// Longest a one-off command may run.
const MAX_RUN: Duration = Duration::from_secs(3600);
/// Default limit when the request sets none.
const DEFAULT_RUN: Duration = Duration::from_secs(600);

impl Platform {
    /// Runs a command in a fresh, throw-away instance of a runtime version: the runtime's layers
    /// under a private writable layer that is discarded afterwards. With no command, the
    /// runtime's ENTRYPOINT and CMD run; a given command replaces both.
    pub async fn run_runtime(
        self: &Arc<Self>,
        r: &RuntimeRef,
        req: &RunRequest,
        events: &Emitter,
    ) -> Result<RunResult, ControlError> {
        let rt = self.runtime_record(r)?;
        let mut args = req.command.clone();
        if args.is_empty() {
            args = rt.config.entrypoint.clone().unwrap_or_default();
            args.extend(rt.config.cmd.clone().unwrap_or_default());
        }
        if args.is_empty() {
            return Err(ControlError::Invalid(format!(
                "runtime {} has no ENTRYPOINT or CMD: give a command after --",
                rt.reference()
            )));
        }
        let mut env = rt.config.env_strings();
        for e in &req.env {
            let Some((k, _)) = e.split_once('=') else {
                return Err(ControlError::Invalid(format!(
                    "invalid environment entry {e:?}: expected KEY=VALUE"
                )));
            };
            if k.is_empty() {
                return Err(ControlError::Invalid(format!(
                    "invalid environment entry {e:?}: empty name"
                )));
            }
            env.retain(|x| !x.starts_with(&format!("{k}=")));
            env.push(e.clone());
        }
        let timeout = req
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_RUN)
            .min(MAX_RUN);
        let _lease = self.gc_lock.read().await;
        let scratch = self.store.scratch_dir("run")?;
        let dirs = StepDirs::create(&scratch)?;
        let lowers = self.lowers(&rt.layers, &dirs)?;
        let mounted =
            MountGuard::overlay(&lowers, Some((&dirs.upper, &dirs.work)), &dirs.merged).await?;
        let result = async {
            let (uid, gid, groups) =
                strata_sandbox::host_user_lookup(&dirs.merged, &rt.config.user)
                    .map_err(|e| ControlError::Invalid(format!("USER {}: {e}", rt.config.user)))?;
            if !env.iter().any(|e| e.starts_with("HOME=")) {
                env.push(format!("HOME={}", if uid == 0 { "/root" } else { "/" }));
            }
            let spec = ContainerSpec {
                id: format!("{CONTAINER_PREFIX}r-{}", random_hex(8)),
                rootfs: dirs.merged.clone(),
                readonly_rootfs: false,
                args,
                env,
                cwd: if rt.config.workdir.is_empty() {
                    "/".into()
                } else {
                    rt.config.workdir.clone()
                },
                uid,
                gid,
                additional_gids: groups,
                hostname: rt.name.clone(),
                network: if req.network {
                    Network::Host
                } else {
                    Network::Isolated
                },
                capabilities: strata_sandbox::build_capabilities(),
                binds: vec![],
                tmpfs: vec![],
                limits: Limits {
                    memory_bytes: rt.resources.memory_bytes,
                    cpu_millis: rt.resources.cpu_millis,
                    pids: Some(1024),
                },
                cgroup_parent: self.settings.cgroup_parent.clone(),
                no_new_privileges: true,
                rlimit_nofile: 65_536,
                slave_binds: vec![],
                seccomp: strata_sandbox::Seccomp::Default,
            };
            let bundle = scratch.path().join("bundle");
            std::fs::create_dir_all(&bundle)
                .map_err(|e| ControlError::io("create bundle directory", e))?;
            let started = Instant::now();
            let mut on_output = |stream, line| events.output(stream, line);
            let outcome = self
                .runc
                .run(&bundle, &spec, Some(timeout), &mut on_output)
                .await?;
            Ok::<_, ControlError>(RunResult {
                exit_code: outcome.exit_code,
                timed_out: outcome.timed_out,
                duration_ms: started.elapsed().as_millis() as u64,
            })
        }
        .await;
        mounted.unmount().await?;
        result
    }
}
