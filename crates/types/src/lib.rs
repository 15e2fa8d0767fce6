//! Strata's vocabulary: the words of `docs/architecture.md` as Rust types.
//!
//! This crate owns names, digests, resource quantities, image and runtime configuration, the error
//! kinds every boundary maps to, and the JSON shapes of the HTTP API. It does no I/O and knows
//! nothing of tokio, HTTP or the filesystem.

pub mod api;
mod config;
mod digest;
mod error;
mod name;
mod resources;

pub use config::{ImageConfig, DEFAULT_PATH};
pub use digest::{Digest, DigestError};
pub use error::ErrorKind;
pub use name::{validate_name, validate_package_version, NameError, PackageRef, RuntimeRef};
pub use resources::{
    format_bytes, parse_cpu, parse_duration, parse_memory, QuantityError, Resources,
};
