//! Strata's hostile-input corpus: a deterministic generator of crafted archives ([`gen`],
//! [`cases`]) and a harness ([`harness`]) that runs one input against every extractor — the safe
//! tar extractor (OCI and plain whiteouts), image import (docker-save and OCI layout) and function
//! code import (tar, tar.gz, zip) — and checks that it was either refused with a typed error or
//! contained below the destination, with nothing outside it touched.
//!
//! The corpus test lives in `tests/hostile.rs`; the fuzz targets under `fuzz/` call the same
//! harness entry points ([`harness::fuzz_tar_extract`] and friends), and `tests/fuzz_regressions.rs`
//! replays the checked-in fuzz inputs through them on the stable toolchain.

pub mod cases;
pub mod gen;
pub mod harness;
