//! Strata's benchmark, measured against a running server through its public `/v1` API and its
//! `/metrics`. Two scenarios: **functions** — deploy latency, cold and warm invocation latency,
//! and the HTTP floor they stand on; **pools** — cold starts with the runtime's generic pool warm
//! and with nothing warm, warm throughput of a function held at several instances, and a burst of
//! new functions invoked at once; **packages** — a library of environment packages built once,
//! runtimes composed from them, their updates and rollbacks, the store's size, and the same
//! runtimes built from their whole Dockerfile.
//!
//! It owns the measurement and the report only. It never writes to the server's data directory
//! (it reads the server's log when given one, for the server's own times), never starts or
//! stops the server, and leaves behind nothing it created: every function it
//! deploys is removed before it returns, whether the measurement succeeded or not, and the pools
//! scenario leaves the runtime's pool at its default bounds; the packages scenario removes its
//! runtimes and packages and collects the store.

pub mod client;
pub mod functions;
pub mod machine;
pub mod packages;
pub mod packages_report;
pub mod pools;
pub mod pools_report;
pub mod prom;
pub mod report;
pub mod stats;
