//! Arbitrary bytes as a (possibly gzipped) tar, extracted with OCI and plain whiteouts: no panic, nothing written outside the destination, typed errors only.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strata_hostile_tests::harness::fuzz_tar_extract(data);
});
