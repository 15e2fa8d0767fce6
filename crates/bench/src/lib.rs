//! Strata's functions benchmark: deploy latency, cold and warm invocation latency, and the HTTP
//! floor they stand on, measured against a running server through its public `/v1` API.
//!
//! It owns the measurement and the report only. It never touches the server's data directory,
//! never starts or stops the server, and leaves behind nothing it created: every function it
//! deploys is removed before it returns, whether the measurement succeeded or not.

pub mod client;
pub mod functions;
pub mod machine;
pub mod report;
pub mod stats;
