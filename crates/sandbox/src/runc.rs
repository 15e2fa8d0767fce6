//! Driving runc through its command line.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::cgroup;
use crate::error::SandboxError;
use crate::output::{read_some, LineSplitter};
use crate::spec::{oci_config, validate_container_id, ContainerSpec};
use crate::Stream;

/// How long a container gets to die after `runc kill`, and runc after being killed, before
/// the next, harsher step.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What runc says when a container id is taken.
pub(crate) const ID_IN_USE: &str = "container with given ID already exists";

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The process's exit code; `128 + signal` when a signal ended it.
    pub exit_code: i32,
    /// The run hit its timeout and was killed.
    pub timed_out: bool,
    /// Best effort: the kernel's OOM killer struck inside the container's cgroup.
    pub oom_killed: bool,
    /// Wall time from starting runc to the container's end.
    pub duration: Duration,
}

impl RunOutcome {
    /// Exited with code 0, in time.
    pub fn success(&self) -> bool {
        self.exit_code == 0 && !self.timed_out
    }
}

/// A container as `runc state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The host pid of the container's init process; `None` once it has stopped.
    pub pid: Option<u32>,
}

/// The runc command line: a binary and the state root its containers are recorded under.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    state_root: PathBuf,
}

impl Runc {
    /// A runc at `binary` keeping its state under `state_root` (e.g. `/run/strata/runc`).
    pub fn new(binary: PathBuf, state_root: PathBuf) -> Runc {
        Runc { binary, state_root }
    }

    /// The runtime binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The state root (`runc --root`).
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// The runtime's version, e.g. `1.1.5+ds1`, from `runc --version`.
    pub async fn version(&self) -> Result<String, SandboxError> {
        let text = self.version_output().await?;
        parse_version(&text).ok_or_else(|| SandboxError::RuntimeVersion {
            binary: self.binary.clone(),
            message: format!(
                "no version in {:?}",
                text.lines().next().unwrap_or_default()
            ),
        })
    }

    /// The whole output of `runc --version` (version, commit, spec, libseccomp lines), for
    /// [`crate::runc_verdict`].
    pub async fn version_output(&self) -> Result<String, SandboxError> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--version");
        let out = self.output(cmd, "--version").await?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a container to its end.
    ///
    /// Writes `<bundle>/config.json` from `spec`, runs
    /// `runc --root <state_root> run --keep --bundle <bundle> <id>` with stdin closed and
    /// stdout/stderr piped, and hands every output line (lossy UTF-8, at most 64 KiB; longer
    /// lines are split) to `on_output`. At `timeout` the container is killed (`runc kill <id>
    /// KILL`, then runc itself, then `runc delete --force`). The container is always deleted
    /// at the end — also when this future is dropped early. `--keep` leaves the stopped
    /// container's cgroup in place until then, so its OOM counters can be read.
    ///
    /// A container the runtime cannot start (missing executable, bad rootfs) is an error;
    /// a process that runs and fails is an outcome with its exit code.
    pub async fn run(
        &self,
        bundle: &Path,
        spec: &ContainerSpec,
        timeout: Option<Duration>,
        on_output: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Result<RunOutcome, SandboxError> {
        spec.validate()?;
        let id = spec.id.as_str();
        self.prepare_bundle(bundle, spec)?;
        let log = bundle.join("runc.log");
        let command = format!("{} run {id}", self.binary.display());

        let mut cmd = self.command();
        cmd.arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "run", "--keep", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(&command, e))?;
        // From here on the container may exist: make sure it is deleted whatever happens.
        let mut guard = DeleteOnDrop {
            runc: Some(self.clone()),
            id: id.to_string(),
        };
        tracing::debug!(instance = id, bundle = %bundle.display(), "container started");

        let wait_err = |source| SandboxError::Wait {
            command: command.clone(),
            source,
        };
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (mut out_lines, mut err_lines) = (LineSplitter::default(), LineSplitter::default());
        let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
        let mut status: Option<ExitStatus> = None;
        let mut deadline = timeout.map(|t| started + t);
        let mut kill_step = 0u8;
        let far_future = started + Duration::from_secs(86_400 * 365);

        while stdout.is_some() || stderr.is_some() || status.is_none() {
            tokio::select! {
                r = read_some(&mut stdout, &mut out_buf), if stdout.is_some() => {
                    let n = r.map_err(wait_err)?;
                    if n == 0 {
                        stdout = None;
                        out_lines.finish(&mut |l| on_output(Stream::Stdout, l));
                    } else {
                        out_lines.push(&out_buf[..n], &mut |l| on_output(Stream::Stdout, l));
                    }
                }
                r = read_some(&mut stderr, &mut err_buf), if stderr.is_some() => {
                    let n = r.map_err(wait_err)?;
                    if n == 0 {
                        stderr = None;
                        err_lines.finish(&mut |l| on_output(Stream::Stderr, l));
                    } else {
                        err_lines.push(&err_buf[..n], &mut |l| on_output(Stream::Stderr, l));
                    }
                }
                s = child.wait(), if status.is_none() => {
                    status = Some(s.map_err(wait_err)?);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far_future)), if deadline.is_some() => {
                    kill_step += 1;
                    deadline = Some(Instant::now() + KILL_GRACE);
                    match kill_step {
                        1 => {
                            tracing::info!(instance = id, ?timeout, "container timed out; killing it");
                            if let Err(e) = self.kill(id, "KILL").await {
                                tracing::warn!(instance = id, error = %e, "runc kill failed");
                            }
                        }
                        2 => {
                            tracing::warn!(instance = id, "container outlived runc kill; killing runc and deleting it");
                            if status.is_none() {
                                if let Err(e) = child.start_kill() {
                                    tracing::warn!(instance = id, error = %e, "killing runc failed");
                                }
                            }
                            if let Err(e) = self.delete_force(id).await {
                                tracing::warn!(instance = id, error = %e, "runc delete failed");
                            }
                        }
                        _ => {
                            tracing::error!(instance = id, "container output still open after delete; abandoning it");
                            stdout = None;
                            stderr = None;
                            deadline = None;
                            if status.is_none() {
                                status = Some(child.wait().await.map_err(wait_err)?);
                            }
                        }
                    }
                }
            }
        }
        let duration = started.elapsed();
        let timed_out = kill_step > 0;
        let exit_code = status.map(exit_code).unwrap_or(-1);

        let start_errors = if exit_code != 0 && !timed_out {
            runc_errors(&log)
        } else {
            Vec::new()
        };
        // Another container already has this id: it is not ours to read or delete.
        if start_errors.iter().any(|m| m.contains(ID_IN_USE)) {
            guard.disarm();
            return Err(SandboxError::StartContainer {
                id: id.to_string(),
                message: start_errors.join("; "),
            });
        }
        let oom_killed = cgroup::oom_killed(&spec.cgroups_path());
        let deleted = self.delete_force(id).await;
        guard.disarm();
        deleted?;
        if !start_errors.is_empty() {
            return Err(SandboxError::StartContainer {
                id: id.to_string(),
                message: start_errors.join("; "),
            });
        }
        tracing::debug!(
            instance = id,
            exit_code,
            timed_out,
            oom_killed,
            ?duration,
            "container ended"
        );
        Ok(RunOutcome {
            exit_code,
            timed_out,
            oom_killed,
            duration,
        })
    }

    /// Ids of the containers under the state root (`runc list -q`); empty if the state root
    /// does not exist.
    /// Kills runc processes left by an earlier server on this state root (a `runc run` whose
    /// server was killed may still be creating its container). Every runc Strata starts carries
    /// `--root <state root>`, which is how they are recognised. Returns how many were killed.
    pub fn kill_strays(&self) -> usize {
        let root = self.state_root.as_os_str().as_encoded_bytes().to_vec();
        let me = std::process::id();
        let mut killed = 0;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args
                .windows(2)
                .any(|w| w[0] == b"--root" && w[1] == root.as_slice())
                && args.first().is_some_and(|a| {
                    a.ends_with(b"runc") || a.ends_with(self.binary.as_os_str().as_encoded_bytes())
                });
            if !ours {
                continue;
            }
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                if rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok() {
                    tracing::info!(pid, "killed a runc process left by an earlier server");
                    killed += 1;
                }
            }
        }
        killed
    }

    pub async fn list_ids(&self) -> Result<Vec<String>, SandboxError> {
        if !self.state_root.exists() {
            return Ok(Vec::new());
        }
        let mut cmd = self.command();
        cmd.args(["list", "-q"]);
        let out = self.output(cmd, "list").await?;
        if !out.status.success() {
            return Err(SandboxError::ListContainers {
                root: self.state_root.clone(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// Deletes a container whatever its state, killing its processes (`runc delete --force`).
    /// Deleting a container that does not exist succeeds.
    pub async fn delete_force(&self, id: &str) -> Result<(), SandboxError> {
        validate_container_id(id)?;
        let mut cmd = self.command();
        cmd.args(["delete", "--force", id]);
        let out = self.output(cmd, "delete").await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("does not exist") {
            Ok(())
        } else {
            Err(SandboxError::DeleteContainer {
                id: id.to_string(),
                message: stderr.trim().to_string(),
            })
        }
    }

    /// A container's status and init pid (`runc state <id>`); `None` if no container has
    /// that id.
    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>, SandboxError> {
        validate_container_id(id)?;
        let mut cmd = self.command();
        cmd.args(["state", id]);
        let out = self.output(cmd, "state").await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("does not exist") {
                return Ok(None);
            }
            return Err(SandboxError::CommandFailed {
                command: format!("{} state {id}", self.binary.display()),
                status: out.status.to_string(),
                output: stderr.trim().to_string(),
            });
        }
        parse_state(&out.stdout)
            .map(Some)
            .ok_or_else(|| SandboxError::CommandFailed {
                command: format!("{} state {id}", self.binary.display()),
                status: out.status.to_string(),
                output: format!(
                    "unexpected output: {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            })
    }

    /// Runs `args` inside a running container (`runc exec <id> <args...>`) as the container's
    /// user, with stdin closed, and waits for it. Returns its exit code (`128 + signal` when a
    /// signal ended it) and its output: stdout, then stderr. An exec runc cannot start (no
    /// such container, container not running, program not found) is an error.
    pub async fn exec(&self, id: &str, args: &[String]) -> Result<(i32, String), SandboxError> {
        validate_container_id(id)?;
        let command = format!("{} exec {id}", self.binary.display());
        if args.is_empty() {
            return Err(SandboxError::InvalidSpec {
                id: id.to_string(),
                reason: "exec needs a program to run".to_string(),
            });
        }
        let mut cmd = self.command();
        // runc's own errors come as JSON lines on stderr, told apart from the program's.
        cmd.args(["--log-format", "json", "exec", id]).args(args);
        let out = self.output(cmd, "exec").await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors = parse_runc_errors(&stderr);
        if !errors.is_empty() {
            return Err(SandboxError::CommandFailed {
                command,
                status: out.status.to_string(),
                output: errors.join("; "),
            });
        }
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&stderr);
        Ok((exit_code(out.status), output))
    }

    /// Sends a signal (e.g. `KILL`, `TERM`) to a container's init process (`runc kill`).
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), SandboxError> {
        validate_container_id(id)?;
        let mut cmd = self.command();
        cmd.args(["kill", id, signal]);
        let out = self.output(cmd, "kill").await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(SandboxError::CommandFailed {
                command: format!("{} kill {id} {signal}", self.binary.display()),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `runc --root <state_root>` with stdin closed; killed if the caller gives up on it.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.state_root)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn output(
        &self,
        mut cmd: Command,
        what: &str,
    ) -> Result<std::process::Output, SandboxError> {
        let command = format!("{} {what}", self.binary.display());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| self.spawn_error(&command, e))?;
        child
            .wait_with_output()
            .await
            .map_err(|source| SandboxError::Wait { command, source })
    }

    fn spawn_error(&self, command: &str, e: std::io::Error) -> SandboxError {
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                SandboxError::BinaryMissing {
                    command: "runc".to_string(),
                    path: self.binary.clone(),
                    source: e,
                }
            }
            _ => SandboxError::Spawn {
                command: command.to_string(),
                source: e,
            },
        }
    }

    /// Creates the state root and the bundle directory and writes `config.json`.
    fn prepare_bundle(&self, bundle: &Path, spec: &ContainerSpec) -> Result<(), SandboxError> {
        let err = |path: &Path, source| SandboxError::WriteBundle {
            id: spec.id.clone(),
            path: path.to_path_buf(),
            source,
        };
        create_private_dir(&self.state_root).map_err(|e| err(&self.state_root, e))?;
        std::fs::create_dir_all(bundle).map_err(|e| err(bundle, e))?;
        let config = bundle.join("config.json");
        // A container cannot raise its open-files limit above the server's own hard limit
        // (runc sets rlimits after dropping CAP_SYS_RESOURCE), so ask for at most that.
        let mut spec = spec.clone();
        spec.rlimit_nofile = spec.rlimit_nofile.min(host_nofile_hard_limit());
        let text = serde_json::to_vec_pretty(&oci_config(&spec))
            .map_err(|e| err(&config, std::io::Error::other(e)))?;
        std::fs::write(&config, text).map_err(|e| err(&config, e))?;
        let log = bundle.join("runc.log");
        match std::fs::remove_file(&log) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&log, e)),
        }
    }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Exit code of a process: its code, or `128 + signal` when a signal ended it.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// `runc --version` prints `runc version 1.1.5+ds1` on its first line.
fn parse_version(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    let rest = first.split_once("version ")?.1;
    rest.split_whitespace().next().map(String::from)
}

/// The `status` and `pid` of `runc state` output.
fn parse_state(stdout: &[u8]) -> Option<ContainerState> {
    let v: serde_json::Value = serde_json::from_slice(stdout).ok()?;
    let status = v["status"].as_str()?.to_string();
    let pid = v["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p != 0);
    Some(ContainerState { status, pid })
}

/// The error messages runc wrote to its JSON log.
fn runc_errors(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    parse_runc_errors(&text)
}

fn parse_runc_errors(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal" | "panic")))
        .filter_map(|v| v["msg"].as_str().map(String::from))
        .collect()
}

/// Deletes a container if a run is abandoned midway (its future dropped, or an I/O error),
/// from a plain thread so it works outside an async context too.
struct DeleteOnDrop {
    runc: Option<Runc>,
    id: String,
}

impl DeleteOnDrop {
    fn disarm(&mut self) {
        self.runc = None;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let Some(runc) = self.runc.take() else { return };
        let id = std::mem::take(&mut self.id);
        tracing::warn!(instance = %id, "container run abandoned; deleting the container");
        std::thread::spawn(move || {
            let status = std::process::Command::new(&runc.binary)
                .arg("--root")
                .arg(&runc.state_root)
                .args(["delete", "--force", &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !status.as_ref().is_ok_and(|s| s.success()) {
                tracing::error!(instance = %id, ?status, "deleting an abandoned container failed");
            }
        });
    }
}

/// The server's own hard limit on open files.
fn host_nofile_hard_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let text = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n";
        assert_eq!(parse_version(text).as_deref(), Some("1.1.5+ds1"));
        assert_eq!(
            parse_version("crun version 1.8.1\n").as_deref(),
            Some("1.8.1")
        );
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn finds_errors_in_the_runc_log() {
        let log = r#"{"level":"warning","msg":"hmm","time":"t"}
{"level":"error","msg":"runc run failed: unable to start container process: exec: \"/x\": stat /x: no such file or directory","time":"t"}
not json
"#;
        let errors = parse_runc_errors(log);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("exec: \"/x\""));
    }

    #[test]
    fn parses_state() {
        let running = br#"{"ociVersion":"1.0.2-dev","id":"c","pid":4242,"status":"running","bundle":"/b","rootfs":"/r","created":"2024-01-01T00:00:00Z","owner":""}"#;
        assert_eq!(
            parse_state(running),
            Some(ContainerState {
                status: "running".into(),
                pid: Some(4242)
            })
        );
        let stopped = br#"{"id":"c","pid":0,"status":"stopped"}"#;
        assert_eq!(parse_state(stopped).and_then(|s| s.pid), None);
        assert_eq!(parse_state(b"not json"), None);
    }

    #[test]
    fn exit_codes_of_signalled_processes() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }

    #[tokio::test]
    async fn missing_binary_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runc = Runc::new(dir.path().join("no-runc"), dir.path().join("state"));
        let e = runc.version().await.expect_err("no binary");
        assert_eq!(e.kind(), strata_types::ErrorKind::Unavailable);
        assert!(runc.list_ids().await.expect("no state root").is_empty());
    }
}
