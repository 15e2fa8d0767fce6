//! The bootstrap processes: starting them, signalling their process groups, and reaping every
//! child.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};

/// Where function code is mounted; the bootstrap's working directory when it exists (unless the
/// function's environment names another `LAMBDA_TASK_ROOT`).
pub(crate) const TASK_ROOT: &str = "/var/task";

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub(crate) fn as_code(self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }
}

/// A started bootstrap.
pub(crate) struct Bootstrap {
    pub pid: Pid,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// How to start one bootstrap process.
pub(crate) struct Launch<'a> {
    /// The bootstrap's argv.
    pub argv: &'a [OsString],
    /// Appended to `argv` (the handler, when the agent knows it).
    pub extra_arg: Option<&'a str>,
    /// Where its Runtime API is served (`AWS_LAMBDA_RUNTIME_API`).
    pub runtime_api: SocketAddr,
    /// Set on top of the agent's environment (minus `STRATA_*`), in order.
    pub env: &'a [(String, String)],
}

/// The bootstrap processes the agent started, shared by the threads that start them and the
/// reaper. Starting a process and reaping are serialized by one lock: std's `spawn` waits for a
/// child whose `exec` failed, and a concurrent `wait(-1)` would steal that status.
#[derive(Debug, Default)]
pub(crate) struct Children {
    /// Started and not yet reaped.
    pids: Mutex<Vec<Pid>>,
}

impl Children {
    fn lock(&self) -> MutexGuard<'_, Vec<Pid>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a bootstrap in its own process group with the function's environment: the agent's
    /// environment minus every `STRATA_*` variable, plus `AWS_LAMBDA_RUNTIME_API` and
    /// `launch.env`.
    pub(crate) fn spawn(&self, launch: &Launch<'_>) -> io::Result<Bootstrap> {
        let mut pids = self.lock();
        let bootstrap = spawn(launch)?;
        pids.push(bootstrap.pid);
        Ok(bootstrap)
    }

    /// Reaps every child forever (the agent is PID 1, or a child subreaper when it is not), and
    /// reports the end of each started bootstrap to `on_exit`.
    pub(crate) fn reap_forever(&self, on_exit: impl Fn(Pid, ExitStatus)) {
        loop {
            // Wait for a zombie without reaping it, then reap under the lock.
            match rustix::process::waitid(
                WaitId::All,
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => self.reap_ready(&on_exit),
                Err(Errno::INTR) => {}
                // No children right now; orphans may be re-parented to us later, and bootstraps
                // may be started later (generic instances).
                Err(Errno::CHILD) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    eprintln!("strata-init: waitid failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn reap_ready(&self, on_exit: &impl Fn(Pid, ExitStatus)) {
        let mut pids = self.lock();
        loop {
            // `wait`, not `waitpid(None)`: the latter only waits for our own process group.
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    if let Some(at) = pids.iter().position(|p| *p == pid) {
                        pids.swap_remove(at);
                        on_exit(
                            pid,
                            ExitStatus {
                                code: status.exit_status(),
                                signal: status.terminating_signal(),
                            },
                        );
                    }
                }
                Err(Errno::INTR) => {}
                Ok(None) | Err(Errno::CHILD) => return,
                Err(e) => {
                    eprintln!("strata-init: waitpid failed: {e}");
                    return;
                }
            }
        }
    }
}

fn spawn(launch: &Launch<'_>) -> io::Result<Bootstrap> {
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no bootstrap command"))?;
    // The function's code: `LAMBDA_TASK_ROOT` when the environment names one, else /var/task.
    let cwd = launch
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "LAMBDA_TASK_ROOT")
        .map(|(_, v)| v.as_str())
        .into_iter()
        .chain([TASK_ROOT])
        .find(|dir| Path::new(dir).is_dir())
        .unwrap_or("/");
    let mut command = Command::new(program);
    command
        .args(args)
        .args(launch.extra_arg)
        .current_dir(cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"STRATA_") {
            command.env_remove(key);
        }
    }
    command.env("AWS_LAMBDA_RUNTIME_API", launch.runtime_api.to_string());
    command.envs(launch.env.iter().map(|(k, v)| (k, v)));
    crate::signals::unblock_in_child(&mut command);
    let mut child = command.spawn()?;
    let pid = Pid::from_raw(child.id() as i32)
        .ok_or_else(|| io::Error::other("the bootstrap got an invalid pid"))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io::Error::other("the bootstrap's output pipes are missing"));
    };
    // `child` is dropped without waiting: the reaper collects it.
    Ok(Bootstrap {
        pid,
        stdout,
        stderr,
    })
}

/// Sends `signal` to a bootstrap's process group. A group that is already gone is fine.
pub(crate) fn signal_group(group: Pid, signal: Signal) {
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => eprintln!("strata-init: cannot signal process group {group:?}: {e}"),
    }
}

/// Makes orphaned descendants of the bootstrap our children, so that they are reaped here even
/// when the agent is not PID 1 (as in tests).
pub(crate) fn become_subreaper() {
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("strata-init: cannot become a child subreaper: {e}");
    }
}
