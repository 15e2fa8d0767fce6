//! The agent's configuration and main loop: start everything, then react to host frames, the
//! invocation clocks, signals and the bootstraps' exits.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::host::HostLink;
use crate::invocation::{Invocation, Invocations};
use crate::process::{self, Children, ExitStatus, Launch};
use crate::protocol::{error_json, read_frame, Header};
use crate::runtime_api::{self, RuntimeApi};
use crate::specialize::{Rendezvous, Spec};
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

/// How the agent starts its bootstraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `strata-init -- <argv...>`: the bootstrap argv already names the function's handler; the
    /// bootstraps start at once.
    Direct,
    /// `strata-init --generic -- <argv...>`: a generic instance of a runtime, specialized for a
    /// function by a `Specialize` frame.
    Generic {
        /// `STRATA_DEFERRED=1`: the bootstrap supports deferral. It starts at once (with
        /// `STRATA_SPECIALIZE=1`) and fetches its handler and environment from
        /// `GET /2018-06-01/strata/specialization`. Otherwise the bootstraps start only when the
        /// `Specialize` frame arrives, with the handler appended to their argv.
        deferred: bool,
    },
}

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
    /// `--generic` and `STRATA_DEFERRED`.
    pub mode: Mode,
    /// Direct mode: `STRATA_WORKERS` (default 1), how many bootstrap processes serve
    /// invocations concurrently. Generic mode takes it from the `Specialize` frame.
    pub workers: usize,
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
                write!(
                    f,
                    "{msg}; usage: strata-init [--generic] -- <bootstrap> [args...]"
                )
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
    /// (`[--generic] -- <bootstrap argv...>`; the `--` may be omitted).
    pub fn from_env(args: impl IntoIterator<Item = OsString>) -> Result<Config, AgentError> {
        Config::from_vars(args, |name| std::env::var_os(name))
    }

    fn from_vars(
        args: impl IntoIterator<Item = OsString>,
        var: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Config, AgentError> {
        let mut bootstrap: Vec<OsString> = args.into_iter().collect();
        let mut generic = false;
        loop {
            match bootstrap.first() {
                Some(a) if a == "--" => {
                    bootstrap.remove(0);
                    break;
                }
                Some(a) if a == "--generic" => {
                    generic = true;
                    bootstrap.remove(0);
                }
                Some(a) if a.as_encoded_bytes().starts_with(b"-") => {
                    return Err(AgentError::Usage(format!(
                        "unknown option {:?}",
                        a.to_string_lossy()
                    )));
                }
                _ => break,
            }
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
        let mode = if generic {
            let deferred = match text("STRATA_DEFERRED")?.as_deref() {
                None | Some("" | "0" | "false") => false,
                Some("1" | "true") => true,
                Some(other) => {
                    return Err(AgentError::Config {
                        var: "STRATA_DEFERRED",
                        message: format!("{other:?} is neither 1 nor 0"),
                    })
                }
            };
            Mode::Generic { deferred }
        } else {
            Mode::Direct
        };
        let workers = match text("STRATA_WORKERS")? {
            None => 1,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| AgentError::Config {
                    var: "STRATA_WORKERS",
                    message: format!("{v:?} is not a number of processes from 1 to 1024"),
                })?,
        };
        Ok(Config {
            socket: socket.into(),
            instance,
            runtime_api,
            log_limit,
            bootstrap,
            mode,
            workers,
        })
    }
}

/// What the main loop waits for.
enum Event {
    Host(Header, Vec<u8>),
    HostClosed(String),
    Exited(Pid, ExitStatus),
    Signal(i32),
}

/// Runs the agent until the bootstrap processes are gone; returns the process exit status.
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

    process::become_subreaper();
    let mut agent = Agent::start(config, listener, host, host_reader, signals)?;
    match agent.mode {
        Mode::Direct => {
            for _ in 0..agent.direct_workers {
                if let Err(message) = agent.start_worker(None, &[]) {
                    return Ok(agent.fail_start(&message));
                }
            }
        }
        Mode::Generic { deferred: true } => {
            let env = [("STRATA_SPECIALIZE".to_string(), "1".to_string())];
            if let Err(message) = agent.start_worker(None, &env) {
                return Ok(agent.fail_start(&message));
            }
        }
        Mode::Generic { deferred: false } => agent.host.send_or_warn(&Header::Waiting, b""),
    }
    Ok(agent.run())
}

fn spawn_thread(name: &'static str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
}

fn setup_thread(name: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), AgentError> {
    spawn_thread(name, f).map_err(|source| AgentError::Setup {
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

/// One invocation's clock.
struct Clock {
    id: String,
    timeout_ms: u64,
    deadline: Instant,
}

/// One started bootstrap process (its pid is also its process group).
struct Worker {
    pid: Pid,
    exited: bool,
}

struct Agent {
    mode: Mode,
    bootstrap: Vec<OsString>,
    /// Direct mode: how many bootstraps to start.
    direct_workers: usize,
    /// The Runtime API listener of the first worker; later workers get a free port on the same
    /// address.
    first_listener: Option<TcpListener>,
    api_ip: IpAddr,
    host: Arc<HostLink>,
    invocations: Arc<Invocations>,
    children: Arc<Children>,
    workers: Vec<Worker>,
    /// Deferred generic mode: where the first bootstrap waits for its specialization.
    rendezvous: Option<Arc<Rendezvous>>,
    /// The function this instance was specialized for (generic mode).
    specialized: Option<String>,
    events: Receiver<Event>,
    logs_done_tx: Sender<()>,
    logs_done: Receiver<()>,
}

impl Agent {
    /// Starts the reaper, signal and host-reader threads; no bootstrap yet.
    fn start(
        config: Config,
        listener: TcpListener,
        host: Arc<HostLink>,
        host_reader: UnixStream,
        signals: signals::Blocked,
    ) -> Result<Agent, AgentError> {
        let (events, rx) = mpsc::channel::<Event>();
        let children = Arc::new(Children::default());
        let (logs_done_tx, logs_done) = mpsc::channel::<()>();

        let tx = events.clone();
        let reaped = children.clone();
        setup_thread("reaper", move || {
            reaped.reap_forever(|pid, status| {
                let _ = tx.send(Event::Exited(pid, status));
            })
        })?;
        let tx = events.clone();
        setup_thread("signals", move || loop {
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
        let tx = events;
        setup_thread("host-reader", move || read_host(host_reader, &tx))?;

        let capacity = match config.mode {
            Mode::Direct => config.workers,
            Mode::Generic { .. } => 1,
        };
        Ok(Agent {
            mode: config.mode,
            bootstrap: config.bootstrap,
            direct_workers: config.workers,
            first_listener: Some(listener),
            api_ip: config.runtime_api.ip(),
            host,
            invocations: Arc::new(Invocations::new(config.log_limit, capacity)),
            children,
            workers: Vec::new(),
            rendezvous: match config.mode {
                Mode::Generic { deferred: true } => Some(Arc::new(Rendezvous::default())),
                _ => None,
            },
            specialized: None,
            events: rx,
            logs_done_tx,
            logs_done,
        })
    }

    /// Starts one bootstrap process with its own Runtime API listener, log pumps and index.
    fn start_worker(
        &mut self,
        handler: Option<&str>,
        env: &[(String, String)],
    ) -> Result<(), String> {
        let program = self
            .bootstrap
            .first()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let listener = match self.first_listener.take() {
            Some(listener) => listener,
            None => TcpListener::bind(SocketAddr::new(self.api_ip, 0))
                .map_err(|e| format!("cannot serve the Runtime API on {}:0: {e}", self.api_ip))?,
        };
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot serve the Runtime API: {e}"))?;
        let launch = Launch {
            argv: &self.bootstrap,
            extra_arg: handler,
            runtime_api: addr,
            env,
        };
        let bootstrap = self
            .children
            .spawn(&launch)
            .map_err(|e| format!("cannot start the bootstrap {program:?}: {e}"))?;
        let worker = self.workers.len();
        self.workers.push(Worker {
            pid: bootstrap.pid,
            exited: false,
        });
        let thread_failed = |e: io::Error| format!("cannot start a thread: {e}");
        for (name, pipe) in [
            (
                "stdout",
                Box::new(bootstrap.stdout) as Box<dyn io::Read + Send>,
            ),
            ("stderr", Box::new(bootstrap.stderr)),
        ] {
            let invocations = self.invocations.clone();
            let (host, done) = (self.host.clone(), self.logs_done_tx.clone());
            spawn_thread("logs", move || {
                logs::pump(name, pipe, worker, &invocations, &host);
                let _ = done.send(());
            })
            .map_err(thread_failed)?;
        }
        let api = Arc::new(RuntimeApi {
            invocations: self.invocations.clone(),
            host: self.host.clone(),
            worker,
            specialization: self.rendezvous.clone().filter(|_| worker == 0),
        });
        spawn_thread("runtime-api", move || runtime_api::serve(listener, api))
            .map_err(thread_failed)?;
        Ok(())
    }

    /// A bootstrap could not be started: stop any other, report an init error, end the instance.
    fn fail_start(&self, message: &str) -> i32 {
        eprintln!("strata-init: {message}");
        self.signal_all(Signal::KILL);
        self.await_exits(Instant::now() + KILL_PATIENCE);
        let error_type = "Runtime.InvalidEntrypoint";
        self.host.send_or_warn(
            &Header::InitError {
                error_type: Some(error_type.into()),
            },
            &error_json(error_type, message),
        );
        let status = ExitStatus {
            code: Some(127),
            signal: None,
        };
        self.host.send_or_warn(&exited(status, None), b"");
        status.as_code()
    }

    fn run(mut self) -> i32 {
        let mut clocks: Vec<Clock> = Vec::new();
        let mut stop_by: Option<Instant> = None;
        // While stopping: the first status seen, reported once every worker is gone.
        let mut first_exit: Option<(ExitStatus, Option<String>)> = None;
        loop {
            let wake = clocks.iter().map(|c| c.deadline).chain(stop_by).min();
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
                    self.signal_all(Signal::KILL);
                    return 1;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if stop_by.is_some_and(|at| at <= now) {
                        self.signal_all(Signal::KILL);
                        let status = self.await_exits(now + KILL_PATIENCE);
                        let (status, during) = match first_exit.take() {
                            Some((status, during)) => (Some(status), during),
                            None => (status, self.invocations.in_progress(None)),
                        };
                        return self.finish(status, during, 0);
                    }
                    let (expired, pending) = clocks.into_iter().partition(|c| c.deadline <= now);
                    clocks = pending;
                    for c in expired {
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
                            // Forget the clocks of finished invocations (at most one per worker
                            // stays then).
                            clocks.retain(|c| self.invocations.is_in_progress(&c.id));
                            // A timeout too large for the clock means no timeout at all.
                            if let Some(deadline) =
                                Instant::now().checked_add(Duration::from_millis(timeout_ms))
                            {
                                clocks.push(Clock {
                                    id,
                                    timeout_ms,
                                    deadline,
                                });
                            }
                        }
                        Err(busy) => {
                            let message = match busy.in_progress.as_slice() {
                                [one] => format!("invocation {one:?} is still in progress"),
                                all => format!(
                                    "all {} workers are busy with invocations {all:?}",
                                    all.len()
                                ),
                            };
                            self.reject(&id, &message);
                        }
                    }
                }
                Ok(Event::Host(
                    Header::Specialize {
                        function,
                        handler,
                        env,
                        workers,
                    },
                    _,
                )) => {
                    if stop_by.is_some() {
                        eprintln!("strata-init: ignoring a Specialize frame while stopping");
                        continue;
                    }
                    let spec = Spec::new(function, handler, &env, workers);
                    if let Some(code) = self.specialize(spec) {
                        return code;
                    }
                }
                Ok(Event::Host(Header::Shutdown, _)) | Ok(Event::Signal(libc::SIGTERM)) => {
                    if stop_by.is_none() {
                        if self.live_workers() == 0 {
                            // A generic instance that never started a bootstrap.
                            let status = ExitStatus {
                                code: Some(0),
                                signal: None,
                            };
                            self.host.send_or_warn(&exited(status, None), b"");
                            return 0;
                        }
                        self.signal_all(Signal::TERM);
                        stop_by = Some(Instant::now() + SHUTDOWN_GRACE);
                    }
                }
                Ok(Event::Signal(sig)) => {
                    if let Some(signal) = Signal::from_named_raw(sig) {
                        self.signal_all(signal);
                    }
                }
                Ok(Event::Host(other, _)) => {
                    eprintln!("strata-init: ignoring an unexpected frame from the host: {other:?}");
                }
                Ok(Event::HostClosed(why)) => {
                    eprintln!("strata-init: {why}; stopping the bootstrap");
                    self.signal_all(Signal::KILL);
                    self.await_exits(Instant::now() + KILL_PATIENCE);
                    return 0;
                }
                Ok(Event::Exited(pid, status)) => {
                    let Some(worker) = self.note_exit(pid) else {
                        continue;
                    };
                    let during = self.invocations.in_progress(Some(worker));
                    if stop_by.is_some() {
                        let (status, during) = first_exit.get_or_insert((status, during)).clone();
                        if self.live_workers() == 0 {
                            return self.finish(Some(status), during, 0);
                        }
                        continue;
                    }
                    // Any worker ending ends the instance.
                    self.signal_all(Signal::KILL);
                    self.await_exits(Instant::now() + KILL_PATIENCE);
                    return self.finish(Some(status), during, status.as_code());
                }
            }
        }
    }

    /// Applies a `Specialize` frame. Returns an exit code if the instance had to end.
    fn specialize(&mut self, spec: Spec) -> Option<i32> {
        let refusal = match (&self.mode, &self.specialized) {
            (Mode::Direct, _) => Some(
                "the instance was started for its function (direct mode) and cannot be specialized"
                    .to_string(),
            ),
            (_, Some(function)) => Some(format!(
                "the instance is already specialized for function {function:?}"
            )),
            _ => None,
        };
        if let Some(message) = refusal {
            let error_type = "Strata.AlreadySpecialized";
            self.host.send_or_warn(
                &Header::InitError {
                    error_type: Some(error_type.into()),
                },
                &error_json(error_type, &message),
            );
            return None;
        }
        self.specialized = Some(spec.function.clone());
        self.invocations.set_capacity(spec.workers);
        let (first_direct, announce) = match &self.rendezvous {
            // The deferred bootstrap fetches it (`Specialized` goes out then); more workers start
            // with the handler in their argv.
            Some(rendezvous) => {
                rendezvous.provide(spec.payload());
                (1, false)
            }
            None => (0, true),
        };
        for _ in first_direct..spec.workers {
            if let Err(message) = self.start_worker(Some(&spec.handler), &spec.env) {
                return Some(self.fail_start(&message));
            }
        }
        if announce {
            self.host.send_or_warn(&Header::Specialized, b"");
        }
        None
    }

    fn live_workers(&self) -> usize {
        self.workers.iter().filter(|w| !w.exited).count()
    }

    /// Records a worker's exit; returns its index (None for a pid that is not a worker's).
    fn note_exit(&mut self, pid: Pid) -> Option<usize> {
        let at = self.workers.iter().position(|w| w.pid == pid)?;
        self.workers[at].exited = true;
        Some(at)
    }

    /// Sends `signal` to every worker's process group (exited workers too: their children may
    /// still be around).
    fn signal_all(&self, signal: Signal) {
        for worker in &self.workers {
            process::signal_group(worker.pid, signal);
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

    /// An invocation ran out of time: kill every worker's group, report, and end the instance.
    fn time_out(&self, clock: Clock) -> i32 {
        self.signal_all(Signal::KILL);
        self.host.send_or_warn(
            &Header::Timeout {
                id: clock.id.clone(),
                timeout_ms: clock.timeout_ms,
            },
            b"",
        );
        let status = self.await_exits(Instant::now() + KILL_PATIENCE);
        self.finish(status, Some(clock.id), 0)
    }

    /// Waits until every worker is reaped (or `until`), ignoring everything else; returns the
    /// first status seen.
    fn await_exits(&self, until: Instant) -> Option<ExitStatus> {
        let mut left: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| !w.exited)
            .map(|w| w.pid)
            .collect();
        let mut first = None;
        while !left.is_empty() {
            match self
                .events
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Exited(pid, status)) => {
                    if let Some(at) = left.iter().position(|p| *p == pid) {
                        left.swap_remove(at);
                        first.get_or_insert(status);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        first
    }

    /// The bootstraps are gone: clear out their process groups, forward their last output, send
    /// `Exited`.
    fn finish(&self, status: Option<ExitStatus>, during: Option<String>, code: i32) -> i32 {
        self.signal_all(Signal::KILL);
        let until = Instant::now() + DRAIN_PATIENCE;
        for _ in 0..2 * self.workers.len() {
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
    fn modes_and_workers() {
        let c = config(&["--", "python3", "x"], BASE).unwrap();
        assert_eq!((c.mode, c.workers), (Mode::Direct, 1));
        let c = config(&["--generic", "--", "python3"], BASE).unwrap();
        assert_eq!(c.mode, Mode::Generic { deferred: false });
        assert_eq!(c.bootstrap, vec![OsString::from("python3")]);
        let mut vars = BASE.to_vec();
        vars.extend([("STRATA_DEFERRED", "1"), ("STRATA_WORKERS", "4")]);
        let c = config(&["--generic", "python3"], &vars).unwrap();
        assert_eq!(c.mode, Mode::Generic { deferred: true });
        let c = config(&["--", "python3"], &vars).unwrap();
        assert_eq!((c.mode, c.workers), (Mode::Direct, 4));
        let c = config(&["--", "--generic"], BASE).unwrap();
        assert_eq!(c.mode, Mode::Direct, "after --, it is the bootstrap's");
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
        for workers in ["0", "x", "100000"] {
            let mut vars = BASE.to_vec();
            vars.push(("STRATA_WORKERS", workers));
            let err = config(&["--", "b"], &vars).unwrap_err().to_string();
            assert!(err.contains("STRATA_WORKERS"), "{err}");
        }
        let mut vars = BASE.to_vec();
        vars.push(("STRATA_DEFERRED", "yes"));
        let err = config(&["--generic", "--", "b"], &vars)
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRATA_DEFERRED"), "{err}");
        let err = config(&["--generik", "--", "b"], BASE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--generic"), "the usage names it: {err}");
    }
}
