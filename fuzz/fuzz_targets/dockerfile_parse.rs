//! Arbitrary bytes as a Dockerfile, parsed and planned against a resolver that knows one image: no panic, decided within the time budget.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strata_hostile_tests::harness::fuzz_dockerfile(data);
});
