//! Arbitrary bytes as an uploaded function code package (zip, tar or tar.gz by content): no panic, nothing outside the store touched, tmp/ empty, nothing committed on rejection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strata_hostile_tests::harness::fuzz_code_import(data);
});
