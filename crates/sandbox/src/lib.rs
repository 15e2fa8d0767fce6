//! Strata's sandbox: the one crate that spawns processes and touches mounts and cgroups.
//!
//! It owns turning container plans ([`ContainerSpec`], pure data) into OCI runtime configs
//! ([`oci_config`], pure) and running them under runc ([`Runc`]); overlay and bind mounts of
//! layer stacks ([`mount`]); resolving a `USER` against a root filesystem
//! ([`host_user_lookup`]); bootstrapping Debian root filesystems ([`debootstrap_tar`]); and
//! removing cgroups a crash left behind ([`cleanup_cgroups`]).
//!
//! It also gives warm pools their two mechanisms for turning a generic, already running
//! instance into one of a function:
//!
//! - **Code without a restart.** A plan's [`ContainerSpec::slave_binds`] become `rslave`
//!   binds of host dirs that [`mount::make_shared_mountpoint`] made shared; a later
//!   [`mount::bind_into`] of the function's code onto such a dir appears inside the running
//!   container (read-only if asked), and unmounting it takes it out again. The [`mount`]
//!   module explains the propagation design.
//! - **Limits without an exec.** [`set_limits`] writes a running container's cgroup files
//!   directly (v1, v2 and hybrid hosts), in microseconds; [`memory_usage`] reads its charge.
//!   [`Runc::state`] and [`Runc::exec`] inspect a running container.
//!
//! It gives functions with network access their own network namespace on a host bridge with
//! NAT egress and a deny list (the host, link-local metadata, other instances, private
//! ranges): [`net`] plans it (pure) and makes it (`ip`, `nft`).
//!
//! It fetches function code from git repositories with the system `git` binary, hardened and
//! time- and size-limited ([`git`]), as a tar for the ordinary code import.
//!
//! It owns two defaults every caller gets unless a plan opts out or an operator overrides:
//! the seccomp profile of every container ([`Seccomp`], [`default_seccomp_profile`]) and the
//! list of runc releases known to let a container escape ([`runc_verdict`]).
//!
//! It must not decide policy: which layers to stack, which limits, capabilities or network a
//! container gets, when to start or stop one — callers hand it complete plans. It keeps no
//! state of its own beyond what runc records under its state root, embeds no OCI runtime (runc
//! is driven through its command line, never forked from inside this process), and knows
//! nothing of HTTP, the metadata store or the content store.

mod bootstrap;
mod cgroup;
mod error;
pub mod git;
mod ldconfig;
pub mod mount;
pub mod net;
mod output;
mod runc;
mod runc_version;
mod seccomp;
mod spec;
mod user;

pub use bootstrap::debootstrap_tar;
pub use cgroup::{cleanup_cgroups, memory_usage, set_limits};
pub use error::SandboxError;
pub use ldconfig::regenerate_ld_cache;
pub use output::MAX_LINE_BYTES;
pub use runc::{ContainerState, RunOutcome, Runc};
pub use runc_version::{runc_verdict, Cve, Verdict, RUNC_FIXED_RELEASES};
pub use seccomp::{default_seccomp_profile, Seccomp, SeccompArch};
pub use spec::{
    build_capabilities, oci_config, validate_container_id, BindMount, ContainerSpec, Limits,
    Network, TmpfsMount, DEFAULT_PATH_ENV,
};
pub use strata_types::api::Stream;
pub use user::host_user_lookup;
