//! The bootstrap process: starting it, signalling its process group, and reaping every child.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};

/// Where function code is mounted; the bootstrap's working directory when it exists.
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

/// Starts the bootstrap in its own process group with the function's environment: the agent's
/// environment minus every `STRATA_*` variable, plus `AWS_LAMBDA_RUNTIME_API`.
pub(crate) fn spawn(argv: &[OsString], runtime_api: SocketAddr) -> io::Result<Bootstrap> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no bootstrap command"))?;
    let cwd = if Path::new(TASK_ROOT).is_dir() {
        TASK_ROOT
    } else {
        "/"
    };
    let mut command = Command::new(program);
    command
        .args(args)
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
    command.env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string());
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

/// Sends `signal` to the bootstrap's process group. A group that is already gone is fine.
pub(crate) fn signal_group(group: Pid, signal: Signal) {
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => eprintln!("strata-init: cannot signal process group {group:?}: {e}"),
    }
}

/// Reaps every child forever (the agent is PID 1, or a child subreaper when it is not), and
/// reports the bootstrap's end to `on_exit`. Start it only after the bootstrap was spawned, so that
/// it never steals a status std's `spawn` waits for.
pub(crate) fn reap_forever(bootstrap: Pid, on_exit: impl Fn(ExitStatus)) {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid == bootstrap => {
                let status = ExitStatus {
                    code: status.exit_status(),
                    signal: status.terminating_signal(),
                };
                on_exit(status);
            }
            Ok(_) | Err(Errno::INTR) => {}
            // No children right now; orphans may be re-parented to us later.
            Err(Errno::CHILD) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                eprintln!("strata-init: waitpid failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Makes orphaned descendants of the bootstrap our children, so that they are reaped here even
/// when the agent is not PID 1 (as in tests).
pub(crate) fn become_subreaper() {
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("strata-init: cannot become a child subreaper: {e}");
    }
}
