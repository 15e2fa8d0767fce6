//! Replays every checked-in fuzz input — crash regressions under `fuzz/regressions/<target>/`
//! and seeds under `fuzz/corpus/<target>/` — through the same harness the fuzz targets call, on
//! the stable toolchain, so the main test suite needs neither nightly nor cargo-fuzz.
//!
//! `write_fuzz_seeds` (ignored) regenerates the seeds from the hostile corpus:
//! `cargo test -p strata-hostile-tests --test fuzz_regressions -- --ignored write_fuzz_seeds`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_hostile_tests::cases;
use strata_hostile_tests::harness::{self, is_root, Target};

const FUZZ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");
/// Largest input replayed (libFuzzer's inputs here are far smaller).
const MAX_INPUT: u64 = 1 << 20;
/// Largest seed written (the checked-in corpus stays well under 1 MB).
const MAX_SEED: usize = 8 << 10;

const TARGETS: [&str; 4] = [
    "tar_extract",
    "code_import",
    "oci_import",
    "dockerfile_parse",
];

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["regressions", "corpus"] {
        let dir = Path::new(FUZZ).join(kind).join(target);
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One test: the harness checks process-wide rejection counters.
#[test]
fn fuzz_regressions_replay_root() {
    let root = is_root();
    if !root {
        println!(
            "fuzz_regressions_replay_root: not root: replaying code_import and dockerfile_parse \
             only (tar_extract and oci_import create device nodes and apply owners)"
        );
    }
    let mut replayed = 0;
    let mut slowest = Duration::ZERO;
    for target in TARGETS {
        if !root && matches!(target, "tar_extract" | "oci_import") {
            continue;
        }
        for path in inputs(target) {
            let data = harness::read_input(&path, MAX_INPUT).expect("read input");
            match target {
                "tar_extract" => harness::fuzz_tar_extract(&data),
                "code_import" => harness::fuzz_code_import(&data),
                "oci_import" => harness::fuzz_oci_import(&data),
                _ => slowest = slowest.max(harness::fuzz_dockerfile(&data)),
            }
            replayed += 1;
        }
    }
    println!("replayed {replayed} fuzz inputs; slowest Dockerfile {slowest:?}");
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    if bytes.len() > MAX_SEED {
        return;
    }
    let dir = Path::new(FUZZ).join("corpus").join(target);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

const DOCKERFILES: [(&str, &str); 5] = [
    (
        "multi-stage",
        "FROM debian-bookworm AS build\nARG V=1\nENV A=$V B=\"x y\"\nRUN make \\\n  all\n\
         FROM scratch\nCOPY --from=build /out /\nCMD [\"/app\"]\n",
    ),
    (
        "escape-directive",
        "# escape=`\nFROM debian-bookworm\nRUN echo a `\n  b\nWORKDIR /w\nUSER 1000:1000\n",
    ),
    (
        "args-and-expansion",
        "ARG BASE=debian-bookworm\nFROM ${BASE}\nARG X\nENV P=${X:-def}/${X:+alt}\n\
         LABEL a=b c=\"d e\"\nEXPOSE 8080/tcp\nENTRYPOINT [\"sh\", \"-c\"]\n",
    ),
    (
        "heredoc-and-shell",
        "FROM debian-bookworm\nSHELL [\"/bin/bash\", \"-c\"]\nRUN <<EOF\necho hi\nEOF\n\
         COPY --chmod=0755 a b /dst/\n",
    ),
    ("unknown-image", "FROM nosuchimage\nRUN true\n"),
];

#[test]
#[ignore = "regenerates fuzz/corpus; run on demand"]
fn write_fuzz_seeds() {
    // A fixed victim path so the seeds are the same on every machine.
    let victim = Path::new("/tmp/strata-hostile-seed/victim");
    for (i, case) in cases::all(victim).into_iter().enumerate() {
        if case.bomb {
            continue;
        }
        if let Some(t) = case.input(Target::ExtractOci) {
            write_seed("tar_extract", &case.name, &t);
        }
        if let Some(t) = case.input(Target::ImportOci) {
            write_seed("oci_import", &format!("{}.oci", case.name), &t);
        }
        // A docker-save wrapper for one case in four, to keep the corpus small.
        if i % 4 == 0 {
            if let Some(t) = case.input(Target::ImportDocker) {
                write_seed("oci_import", &format!("{}.docker", case.name), &t);
            }
        }
        for (t, ext) in [(Target::CodeTarGz, "tgz"), (Target::CodeZip, "zip")] {
            if let Some(b) = case.input(t) {
                write_seed("code_import", &format!("{}.{ext}", case.name), &b);
            }
        }
    }
    for (name, text) in DOCKERFILES {
        write_seed("dockerfile_parse", name, text.as_bytes());
    }
}
