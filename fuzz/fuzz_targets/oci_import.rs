//! Arbitrary bytes as an image archive (OCI layout, docker-save or rootfs tar): no panic, nothing outside the store touched, tmp/ empty, nothing committed on rejection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strata_hostile_tests::harness::fuzz_oci_import(data);
});
