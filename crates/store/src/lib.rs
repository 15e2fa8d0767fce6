//! Strata's content store: the data directory's `blobs/`, `layers/`, `code/`, `files/`,
//! `manifests/` and `tmp/`.
//!
//! This crate owns content-addressed blobs (`blobs/sha256/<hex>`), unpacked layers
//! (`layers/<hex>`, named by their [`tree_digest`] and used directly as overlayfs lower dirs, so
//! they hold overlay-native whiteouts — character devices 0:0 — and opaque directories —
//! `trusted.overlay.opaque=y`), scratch space under `tmp/`, safe extraction of untrusted tar
//! archives ([`archive`]), normalization of captured overlay upper dirs into canonical layers
//! ([`diff`]), import of image archives ([`import`]) and function code packages (`code/<hex>`,
//! unpacked once from an uploaded zip, tar or tar.gz and normalized, see [`code`]).
//!
//! Identical regular files across layers and code trees are stored once: committing a tree
//! hardlinks its files to a pool `files/<key>` keyed by content, mode, owner and mtime, without
//! changing any tree digest ([`Store::collect_files`] removes entries nothing uses;
//! [`Store::stats`] reports physical and logical space). Each layer has a [`Manifest`] (path,
//! type, mode, owner, mtime, content digest of every entry) cached in `manifests/` and in memory
//! ([`Store::manifest`]). [`compose`] holds the pure rules for stacking independently built
//! package layers: merge rules for package-manager state, the volatile paths left out of
//! packages, and conflict detection.
//!
//! Every object is written under `tmp/`, made durable, renamed into place and its parent
//! directory fsynced, so a crash never leaves a half-written object visible.
//!
//! It must not mount anything, spawn processes, touch cgroups or namespaces, or know about
//! metadata, HTTP or async runtimes: callers (build, sandbox, control) do that and hand the store
//! plain directories and readers.

pub mod archive;
pub mod code;
pub mod compose;
pub mod diff;
mod error;
mod fsutil;
pub mod import;
pub mod manifest;
mod pool;
mod store;
mod tree;

pub use error::StoreError;
pub use manifest::{Entry, EntryKind, Manifest};
pub use store::{ScratchDir, Store, StoreStats};
pub use tree::{tree_digest, LayerMeta};
