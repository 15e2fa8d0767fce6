//! `strata-init`: the in-container agent, PID 1 of every Strata instance.
//!
//! It owns everything between the Strata server and a function's bootstrap process inside one
//! instance:
//!
//! - the **host protocol** ([`protocol`]): length-prefixed JSON-header frames over the unix
//!   socket named by `STRATA_SOCKET`; the server reuses this module to speak to the agent;
//! - the **AWS Lambda Runtime API** (2018-06-01) on `127.0.0.1:9001`, so Strata's own bootstraps
//!   and unmodified Lambda clients (awslambdaric, aws-lambda-ric, `lambda_runtime`) work as is;
//! - the **bootstrap process**: started in its own process group with the function's environment
//!   (every `STRATA_*` variable removed, `AWS_LAMBDA_RUNTIME_API` set), its stdout and stderr
//!   forwarded line by line as `Log` frames within a per-invocation byte budget, its process group
//!   killed when an invocation times out or the instance stops;
//! - **PID 1 duties**: reaping every zombie, forwarding SIGTERM and SIGINT to the bootstrap's
//!   process group, stopping it (SIGTERM, 2 s grace, SIGKILL) on a `Shutdown` frame or SIGTERM.
//!
//! It must not: decide anything about scheduling, retries or formatting of results (the server
//! does; the agent reports facts), run more than one invocation at a time, resolve names (no NSS:
//! it must run from a static binary in any root file system), or panic on bad input from either
//! side — a malformed HTTP request gets a 400, a malformed frame ends the instance.
//!
//! Configuration comes from the environment: `STRATA_SOCKET`, `STRATA_INSTANCE`, and optionally
//! `STRATA_LOG_LIMIT` (bytes per invocation, default 1 MiB) and `STRATA_RUNTIME_API` (a literal
//! `ip:port`, default `127.0.0.1:9001`; port 0 picks a free port, which tests use).
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

pub use agent::{
    run, AgentError, Config, CONNECT_PATIENCE, DEFAULT_LOG_LIMIT, DEFAULT_RUNTIME_API,
    SHUTDOWN_GRACE,
};
