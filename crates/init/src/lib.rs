//! `strata-init`: the in-container agent, PID 1 of every Strata instance.
//!
//! It owns everything between the Strata server and a function's bootstrap processes inside one
//! instance:
//!
//! - the **host protocol** ([`protocol`]): length-prefixed JSON-header frames over the unix
//!   socket named by `STRATA_SOCKET`; the server reuses this module to speak to the agent;
//! - the **AWS Lambda Runtime API** (2018-06-01), so Strata's own bootstraps and unmodified
//!   Lambda clients (awslambdaric, aws-lambda-ric, `lambda_runtime`) work as is. Each bootstrap
//!   process (*worker*) gets its own listener: the first on `STRATA_RUNTIME_API` (default
//!   `127.0.0.1:9001`), the others on a free port of the same address; each is told its own in
//!   `AWS_LAMBDA_RUNTIME_API`. That is how the agent knows which worker runs which invocation;
//! - the **bootstrap processes**: each started in its own process group with the function's
//!   environment (every `STRATA_*` variable removed, `AWS_LAMBDA_RUNTIME_API` set), its stdout and
//!   stderr forwarded line by line as `Log` frames tagged with the invocation that worker is
//!   running, within a per-invocation byte budget; every worker's process group is killed when an
//!   invocation times out or the instance stops;
//! - **PID 1 duties**: reaping every zombie, forwarding SIGTERM and SIGINT to the bootstraps'
//!   process groups, stopping them (SIGTERM, 2 s grace, SIGKILL) on a `Shutdown` frame or SIGTERM.
//!
//! # Modes
//!
//! - **Direct**: `strata-init -- <bootstrap argv...>`, the argv (or the environment) already
//!   naming the function's handler. `STRATA_WORKERS` bootstraps (default 1) start at once.
//! - **Generic**: `strata-init --generic -- <bootstrap argv without the handler>`, for instances
//!   kept warm before any function needs them. A `Specialize` frame (function, handler, `K=V`
//!   environment, number of workers) turns the instance into one of that function; the server
//!   has already made the code visible at `/var/task`. A second `Specialize`, or one in direct
//!   mode, is refused with an `InitError` of type `Strata.AlreadySpecialized` and ignored.
//!   - With `STRATA_DEFERRED=1` (the runtime's bootstrap supports deferral, which its image says
//!     with the label `org.strata.bootstrap.deferred=true`), one bootstrap starts at once with
//!     `STRATA_SPECIALIZE=1` in its environment. It loads its interpreter, then calls
//!     `GET /2018-06-01/strata/specialization`, which blocks until the `Specialize` frame arrives
//!     and answers `{"function": …, "handler": …, "env": {"K": "V", …}}` (`_HANDLER` included).
//!     The agent sends `Waiting` when that request arrives and `Specialized` when it is answered.
//!     Further workers start then as in the next case.
//!   - Otherwise the agent sends `Waiting` right after `Hello`, and on `Specialize` starts the
//!     workers with the handler appended to the argv and the frame's environment on top of the
//!     instance's, then sends `Specialized`.
//!
//! With several workers, up to that many invocations run at once, each with its own clock. An
//! invocation beyond that is refused (`Error` of type `Strata.InstanceBusy`). A timeout kills
//! every worker and ends the instance (`Timeout`, then `Exited`), as does any worker exiting
//! (`Exited`, with the invocation it was running as `during`).
//!
//! It must not: decide anything about scheduling, retries or formatting of results (the server
//! does; the agent reports facts), resolve names (no NSS: it must run from a static binary in any
//! root file system), or panic on bad input from either side — a malformed HTTP request gets a
//! 400, a malformed frame ends the instance.
//!
//! Configuration comes from the environment: `STRATA_SOCKET`, `STRATA_INSTANCE`, and optionally
//! `STRATA_LOG_LIMIT` (bytes per invocation, default 1 MiB), `STRATA_RUNTIME_API` (a literal
//! `ip:port`, default `127.0.0.1:9001`; port 0 picks a free port, which tests use),
//! `STRATA_WORKERS` (direct mode, default 1) and `STRATA_DEFERRED` (generic mode, `1` or `0`).
//!
//! # Building the static binary
//!
//! The binary is linked statically against glibc so that it runs in any root file system:
//!
//! ```text
//! cargo rustc -p strata-init --bin strata-init --release --target x86_64-unknown-linux-gnu \
//!     -- -C target-feature=+crt-static
//! ```
//!
//! The result is `target/x86_64-unknown-linux-gnu/release/strata-init`.

mod agent;
mod host;
mod http;
mod invocation;
mod logs;
mod process;
pub mod protocol;
mod runtime_api;
mod signals;
mod specialize;

pub use agent::{
    run, AgentError, Config, Mode, CONNECT_PATIENCE, DEFAULT_LOG_LIMIT, DEFAULT_RUNTIME_API,
    SHUTDOWN_GRACE,
};
