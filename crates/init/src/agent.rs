//! The agent's configuration and main loop: start everything, then react to host frames, the
//! invocation clock, signals and the bootstrap's exit.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::host::HostLink;
use crate::invocation::{Invocation, Invocations};
use crate::process::{self, ExitStatus};
use crate::protocol::{error_json, read_frame, Header};
use crate::runtime_api::{self, RuntimeApi};
use crate::{logs, signals};

/// Default address of the Runtime API (what Lambda clients are told in `AWS_LAMBDA_RUNTIME_API`).
pub const DEFAULT_RUNTIME_API: &str = "127.0.0.1:9001";
/// Default per-invocation log budget, in bytes.
pub const DEFAULT_LOG_LIMIT: u64 = 1024 * 1024;
/// How long the bootstrap gets between SIGTERM and SIGKILL when the instance stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long to keep retrying the host socket at start.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(2);
/// How long to wait, after the bootstrap is gone, for the rest of its output.
const DRAIN_PATIENCE: Duration = Duration::from_secs(1);
/// How long to wait for a SIGKILLed bootstrap to be reaped.
const KILL_PATIENCE: Duration = Duration::from_secs(1);

/// What the agent needs to run, read once from the environment and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `STRATA_SOCKET`: the server's unix socket.
    pub socket: PathBuf,
    /// `STRATA_INSTANCE`: this instance's id, sent in `Hello`.
    pub instance: String,
    /// `STRATA_RUNTIME_API` (default `127.0.0.1:9001`): a literal `ip:port` to serve the Runtime
    /// API on; port 0 picks a free port (the bootstrap is told the real one).
    pub runtime_api: SocketAddr,
    /// `STRATA_LOG_LIMIT` (default 1 MiB): log bytes forwarded per invocation.
    pub log_limit: u64,
    /// The bootstrap's argv (everything after `--`).
    pub bootstrap: Vec<OsString>,
}

/// Why the agent could not start or keep running.
#[derive(Debug)]
pub enum AgentError {
    /// Bad command line.
    Usage(String),
    /// A `STRATA_*` variable is missing or malformed.
    Config { var: &'static str, message: String },
    /// The server's socket could not be reached.
    Connect { path: PathBuf, source: io::Error },
    /// The Runtime API address could not be bound.
    Bind { addr: SocketAddr, source: io::Error },
    /// Another start-up step failed.
    Setup {
        step: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Usage(msg) => {
                write!(f, "{msg}; usage: strata-init -- <bootstrap> [args...]")
            }
            AgentError::Config { var, message } => write!(f, "{var}: {message}"),
            AgentError::Connect { path, .. } => {
                write!(f, "cannot connect to the Strata host at {}", path.display())
            }
            AgentError::Bind { addr, .. } => write!(f, "cannot serve the Runtime API on {addr}"),
            AgentError::Setup { step, .. } => write!(f, "cannot {step}"),
        }
    }
}

impl std::error::Error for AgentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AgentError::Connect { source, .. }
            | AgentError::Bind { source, .. }
            | AgentError::Setup { source, .. } => Some(source),
            AgentError::Usage(_) | AgentError::Config { .. } => None,
        }
    }
}

impl Config {
    /// Reads the configuration from `STRATA_*` variables and the arguments after the program name
    /// (`-- <bootstrap argv...>`; the `--` may be omitted).
    pub fn from_env(args: impl IntoIterator<Item = OsString>) -> Result<Config, AgentError> {
        Config::from_vars(args, |name| std::env::var_os(name))
    }

    fn from_vars(
        args: impl IntoIterator<Item = OsString>,
        var: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Config, AgentError> {
        let mut bootstrap: Vec<OsString> = args.into_iter().collect();
        if bootstrap.first().is_some_and(|a| a == "--") {
            bootstrap.remove(0);
        } else if bootstrap
            .first()
            .is_some_and(|a| a.as_encoded_bytes().starts_with(b"-"))
        {
            return Err(AgentError::Usage(format!(
                "unknown option {:?}",
                bootstrap[0].to_string_lossy()
            )));
        }
        if bootstrap.is_empty() {
            return Err(AgentError::Usage("no bootstrap command given".into()));
        }
        let text = |name: &'static str| -> Result<Option<String>, AgentError> {
            var(name)
                .map(|v| {
                    v.into_string().map_err(|_| AgentError::Config {
                        var: name,
                        message: "not valid UTF-8".into(),
                    })
                })
                .transpose()
        };
        let socket = var("STRATA_SOCKET")
            .filter(|s| !s.is_empty())
            .ok_or(AgentError::Config {
                var: "STRATA_SOCKET",
                message: "not set; it must name the Strata host's unix socket".into(),
            })?;
        let instance =
            text("STRATA_INSTANCE")?
                .filter(|s| !s.is_empty())
                .ok_or(AgentError::Config {
                    var: "STRATA_INSTANCE",
                    message: "not set; it must hold the instance id".into(),
                })?;
        let runtime_api = text("STRATA_RUNTIME_API")?
            .unwrap_or_else(|| DEFAULT_RUNTIME_API.into())
            .parse()
            .map_err(|_| AgentError::Config {
                var: "STRATA_RUNTIME_API",
                message: "must be a literal ip:port such as 127.0.0.1:9001".into(),
            })?;
        let log_limit = match text("STRATA_LOG_LIMIT")? {
            None => DEFAULT_LOG_LIMIT,
            Some(v) => v.parse().map_err(|_| AgentError::Config {
                var: "STRATA_LOG_LIMIT",
                message: format!("{v:?} is not a byte count such as 1048576"),
            })?,
        };
        Ok(Config {
            socket: socket.into(),
            instance,
            runtime_api,
            log_limit,
            bootstrap,
        })
    }
}

/// What the main loop waits for.
enum Event {
    Host(Header, Vec<u8>),
    HostClosed(String),
    Exited(ExitStatus),
    Signal(i32),
}

/// Runs the agent until the bootstrap is gone; returns the process exit status.
pub fn run(config: Config) -> Result<i32, AgentError> {
    // First, before any thread exists, so that every thread inherits the mask.
    let signals = signals::block().map_err(|source| AgentError::Setup {
        step: "block SIGTERM and SIGINT",
        source,
    })?;
    let (host, host_reader) =
        HostLink::connect(&config.socket, CONNECT_PATIENCE).map_err(|source| {
            AgentError::Connect {
                path: config.socket.clone(),
                source,
            }
        })?;
    let host = Arc::new(host);
    let hello = Header::Hello {
        instance: config.instance.clone(),
        pid: std::process::id(),
    };
    host.send(&hello, b"").map_err(|source| AgentError::Setup {
        step: "say hello to the Strata host",
        source,
    })?;
    let listener = TcpListener::bind(config.runtime_api).map_err(|source| AgentError::Bind {
        addr: config.runtime_api,
        source,
    })?;
    let api_addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.runtime_api,
        source,
    })?;

    process::become_subreaper();
    let bootstrap = match process::spawn(&config.bootstrap, api_addr) {
        Ok(bootstrap) => bootstrap,
        Err(e) => {
            let program = config
                .bootstrap
                .first()
                .map(|p| p.to_string_lossy())
                .unwrap_or_default();
            let error_type = "Runtime.InvalidEntrypoint";
            let message = format!("cannot start the bootstrap {program:?}: {e}");
            eprintln!("strata-init: {message}");
            host.send_or_warn(
                &Header::InitError {
                    error_type: Some(error_type.into()),
                },
                &error_json(error_type, &message),
            );
            let status = ExitStatus {
                code: Some(127),
                signal: None,
            };
            host.send_or_warn(&exited(status, None), b"");
            return Ok(status.as_code());
        }
    };
    let group = bootstrap.pid;
    match start_threads(
        bootstrap,
        listener,
        host,
        host_reader,
        signals,
        config.log_limit,
    ) {
        Ok(agent) => Ok(agent.run()),
        Err(e) => {
            process::signal_group(group, Signal::KILL);
            Err(e)
        }
    }
}

/// Starts the reaper, signal, host-reader, log and Runtime API threads.
fn start_threads(
    bootstrap: process::Bootstrap,
    listener: TcpListener,
    host: Arc<HostLink>,
    host_reader: UnixStream,
    signals: signals::Blocked,
    log_limit: u64,
) -> Result<Agent, AgentError> {
    let group = bootstrap.pid;
    let (events, rx) = mpsc::channel::<Event>();
    let invocations = Arc::new(Invocations::new(log_limit));
    let (logs_done_tx, logs_done) = mpsc::channel::<()>();

    let tx = events.clone();
    spawn_thread("reaper", move || {
        process::reap_forever(group, |status| {
            let _ = tx.send(Event::Exited(status));
        })
    })?;
    let tx = events.clone();
    spawn_thread("signals", move || loop {
        match signals.wait() {
            Ok(sig) => {
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("strata-init: sigwait failed: {e}");
                return;
            }
        }
    })?;
    let tx = events.clone();
    spawn_thread("host-reader", move || read_host(host_reader, &tx))?;
    for (name, pipe) in [
        (
            "stdout",
            Box::new(bootstrap.stdout) as Box<dyn io::Read + Send>,
        ),
        ("stderr", Box::new(bootstrap.stderr)),
    ] {
        let (invocations, host, done) = (invocations.clone(), host.clone(), logs_done_tx.clone());
        spawn_thread("logs", move || {
            logs::pump(name, pipe, &invocations, &host);
            let _ = done.send(());
        })?;
    }
    drop(logs_done_tx);
    let api = Arc::new(RuntimeApi {
        invocations: invocations.clone(),
        host: host.clone(),
    });
    spawn_thread("runtime-api", move || runtime_api::serve(listener, api))?;
    drop(events);

    Ok(Agent {
        host,
        invocations,
        group,
        events: rx,
        logs_done,
    })
}

fn spawn_thread(name: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), AgentError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|source| AgentError::Setup {
            step: "start a thread",
            source,
        })
}

fn read_host(mut stream: UnixStream, events: &Sender<Event>) {
    loop {
        let event = match read_frame(&mut stream) {
            Ok(Some((header, body))) => Event::Host(header, body),
            Ok(None) => Event::HostClosed("the host closed the connection".into()),
            Err(e) => Event::HostClosed(format!("cannot read from the host: {e}")),
        };
        let last = matches!(event, Event::HostClosed(_));
        if events.send(event).is_err() || last {
            return;
        }
    }
}

fn exited(status: ExitStatus, during: Option<String>) -> Header {
    Header::Exited {
        code: status.code,
        signal: status.signal,
        during,
    }
}

/// The running invocation's clock.
struct Clock {
    id: String,
    timeout_ms: u64,
    deadline: Instant,
}

struct Agent {
    host: Arc<HostLink>,
    invocations: Arc<Invocations>,
    group: Pid,
    events: Receiver<Event>,
    logs_done: Receiver<()>,
}

impl Agent {
    fn run(self) -> i32 {
        let mut clock: Option<Clock> = None;
        let mut stop_by: Option<Instant> = None;
        loop {
            let wake = [clock.as_ref().map(|c| c.deadline), stop_by]
                .into_iter()
                .flatten()
                .min();
            let event = match wake {
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .events
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match event {
                Err(RecvTimeoutError::Disconnected) => {
                    // Every event source is gone; nothing can happen any more.
                    process::signal_group(self.group, Signal::KILL);
                    return 1;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if stop_by.is_some_and(|at| at <= now) {
                        process::signal_group(self.group, Signal::KILL);
                        let status = self.await_exit(now + KILL_PATIENCE);
                        return self.finish(status, self.invocations.in_progress(), 0);
                    }
                    if let Some(c) = clock.take_if(|c| c.deadline <= now) {
                        if self.invocations.expire(&c.id) {
                            return self.time_out(c);
                        }
                    }
                }
                Ok(Event::Host(
                    Header::Invoke {
                        id,
                        deadline_ms,
                        timeout_ms,
                        function_arn,
                        trace_id,
                        client_context,
                        cognito_identity,
                    },
                    event,
                )) => {
                    if stop_by.is_some() {
                        let message = "the instance is shutting down";
                        self.reject(&id, message);
                        continue;
                    }
                    let invocation = Invocation {
                        id: id.clone(),
                        deadline_ms,
                        function_arn,
                        trace_id,
                        client_context,
                        cognito_identity,
                        event,
                    };
                    match self.invocations.invoke(invocation) {
                        Ok(()) => {
                            // A timeout too large for the clock means no timeout at all.
                            clock = Instant::now()
                                .checked_add(Duration::from_millis(timeout_ms))
                                .map(|deadline| Clock {
                                    id,
                                    timeout_ms,
                                    deadline,
                                });
                        }
                        Err(busy) => self.reject(
                            &id,
                            &format!("invocation {:?} is still in progress", busy.running),
                        ),
                    }
                }
                Ok(Event::Host(Header::Shutdown, _)) | Ok(Event::Signal(libc::SIGTERM)) => {
                    if stop_by.is_none() {
                        process::signal_group(self.group, Signal::TERM);
                        stop_by = Some(Instant::now() + SHUTDOWN_GRACE);
                    }
                }
                Ok(Event::Signal(sig)) => {
                    if let Some(signal) = Signal::from_named_raw(sig) {
                        process::signal_group(self.group, signal);
                    }
                }
                Ok(Event::Host(other, _)) => {
                    eprintln!("strata-init: ignoring an unexpected frame from the host: {other:?}");
                }
                Ok(Event::HostClosed(why)) => {
                    eprintln!("strata-init: {why}; stopping the bootstrap");
                    process::signal_group(self.group, Signal::KILL);
                    self.await_exit(Instant::now() + KILL_PATIENCE);
                    return 0;
                }
                Ok(Event::Exited(status)) => {
                    let code = if stop_by.is_some() {
                        0
                    } else {
                        status.as_code()
                    };
                    return self.finish(Some(status), self.invocations.in_progress(), code);
                }
            }
        }
    }

    /// Refuses an invocation the agent cannot run.
    fn reject(&self, id: &str, message: &str) {
        let error_type = "Strata.InstanceBusy";
        self.host.send_or_warn(
            &Header::Error {
                id: id.to_string(),
                error_type: Some(error_type.into()),
            },
            &error_json(error_type, message),
        );
    }

    /// The invocation ran out of time: kill the whole group, report, and end the instance.
    fn time_out(&self, clock: Clock) -> i32 {
        process::signal_group(self.group, Signal::KILL);
        self.host.send_or_warn(
            &Header::Timeout {
                id: clock.id.clone(),
                timeout_ms: clock.timeout_ms,
            },
            b"",
        );
        let status = self.await_exit(Instant::now() + KILL_PATIENCE);
        self.finish(status, Some(clock.id), 0)
    }

    /// Waits for the bootstrap to be reaped, ignoring everything else.
    fn await_exit(&self, until: Instant) -> Option<ExitStatus> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Exited(status)) => return Some(status),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The bootstrap is gone: clear out its process group, forward its last output, send `Exited`.
    fn finish(&self, status: Option<ExitStatus>, during: Option<String>, code: i32) -> i32 {
        process::signal_group(self.group, Signal::KILL);
        let until = Instant::now() + DRAIN_PATIENCE;
        for _ in 0..2 {
            if self
                .logs_done
                .recv_timeout(until.saturating_duration_since(Instant::now()))
                .is_err()
            {
                break;
            }
        }
        let status = status.unwrap_or(ExitStatus {
            code: None,
            signal: Some(libc::SIGKILL),
        });
        self.host.send_or_warn(&exited(status, during), b"");
        code
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, AgentError> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Config::from_vars(args.iter().map(OsString::from), |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    const BASE: &[(&str, &str)] = &[
        ("STRATA_SOCKET", "/run/strata/host.sock"),
        ("STRATA_INSTANCE", "i-1"),
    ];

    #[test]
    fn defaults() {
        let c = config(&["--", "/var/runtime/bootstrap", "x"], BASE).unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/strata/host.sock"));
        assert_eq!(c.instance, "i-1");
        assert_eq!(c.runtime_api.to_string(), "127.0.0.1:9001");
        assert_eq!(c.log_limit, 1024 * 1024);
        assert_eq!(
            c.bootstrap,
            vec![OsString::from("/var/runtime/bootstrap"), "x".into()]
        );
    }

    #[test]
    fn overrides() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("STRATA_RUNTIME_API", "127.0.0.1:0"),
            ("STRATA_LOG_LIMIT", "100"),
        ]);
        let c = config(&["python3"], &vars).unwrap();
        assert_eq!(c.runtime_api.port(), 0);
        assert_eq!(c.log_limit, 100);
    }

    #[test]
    fn bad_configuration_says_what_is_wrong() {
        let err = config(&["--"], BASE).unwrap_err().to_string();
        assert!(err.contains("no bootstrap"), "{err}");
        let err = config(&["--help"], BASE).unwrap_err().to_string();
        assert!(err.contains("usage"), "{err}");
        let err = config(&["--", "b"], &BASE[1..]).unwrap_err().to_string();
        assert!(err.contains("STRATA_SOCKET"), "{err}");
        let err = config(&["--", "b"], &BASE[..1]).unwrap_err().to_string();
        assert!(err.contains("STRATA_INSTANCE"), "{err}");
        let mut vars = BASE.to_vec();
        vars.push(("STRATA_RUNTIME_API", "localhost:9001"));
        let err = config(&["--", "b"], &vars).unwrap_err().to_string();
        assert!(err.contains("literal ip:port"), "{err}");
        let mut vars = BASE.to_vec();
        vars.push(("STRATA_LOG_LIMIT", "1MiB"));
        let err = config(&["--", "b"], &vars).unwrap_err().to_string();
        assert!(err.contains("STRATA_LOG_LIMIT"), "{err}");
    }
}
