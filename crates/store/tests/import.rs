//! Import of tiny docker-save, OCI layout and rootfs archives built in the test.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::RawTar;
use sha2::{Digest as _, Sha256};
use strata_store::diff::lookup;
use strata_store::import::{import_archive, ArchiveFormat, ImportedImage};
use strata_store::{Store, StoreError};
use strata_types::ErrorKind;
use tar::EntryType;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// An outer archive: plain files with the given names and contents.
fn outer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, name, *data).expect("append");
    }
    b.into_inner().expect("finish")
}

/// Layer 1: a small tree. Layer 2: deletes /etc/a, replaces /opt/pkg (opaque), adds a file.
fn layers(with_whiteouts: bool) -> (Vec<u8>, Vec<u8>) {
    let l1 = RawTar::new()
        .dir("etc/")
        .file("etc/a", b"a1")
        .file("etc/b", b"b1")
        .dir("opt/pkg/")
        .file("opt/pkg/old", b"old")
        .file_mode("usr/bin/tool", b"#!/bin/sh\n", 0o755)
        .bytes();
    let mut l2 = RawTar::new();
    if with_whiteouts {
        l2.file("etc/.wh.a", b"").file("opt/pkg/.wh..wh..opq", b"");
    }
    let l2 = l2.file("opt/pkg/new", b"new-content").bytes();
    (l1, l2)
}

fn config_json(diff_ids: &[String], arch: &str, env_marker: &str) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"sha256:{d}\"")).collect();
    format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{
            "Env":["PATH=/usr/local/bin:/usr/bin:/bin","MARK={env_marker}"],
            "WorkingDir":"/srv","User":"app","Cmd":["serve","--port","8080"],
            "Entrypoint":["/usr/bin/tool"],"Labels":{{"org.example":"yes"}},
            "ExposedPorts":{{"8080/tcp":{{}}}}}},
            "rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        ids.join(",")
    )
    .into_bytes()
}

fn docker_archive(l1: &[u8], l2: &[u8], diff_ids: &[String]) -> Vec<u8> {
    let cfg = config_json(diff_ids, "amd64", "docker");
    let cfg_name = format!("{}.json", sha(&cfg));
    let manifest = format!(
        r#"[{{"Config":"{cfg_name}","RepoTags":["demo:latest"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}}]"#
    );
    outer(&[
        ("manifest.json", manifest.as_bytes()),
        (&cfg_name, &cfg),
        ("aaa/layer.tar", l1),
        ("bbb/layer.tar", l2),
        ("repositories", b"{}"),
    ])
}

fn descriptor(media: &str, bytes: &[u8], extra: &str) -> String {
    format!(
        r#"{{"mediaType":"{media}","digest":"sha256:{}","size":{}{extra}}}"#,
        sha(bytes),
        bytes.len()
    )
}

/// An OCI layout whose index lists an arm64 manifest first and the amd64 one second. The second
/// layer blob is gzip-compressed.
fn oci_archive(l1: &[u8], l2_blob: &[u8], diff_ids: &[String]) -> Vec<u8> {
    let layer_descs = format!(
        "[{},{}]",
        descriptor("application/vnd.oci.image.layer.v1.tar", l1, ""),
        descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l2_blob, "")
    );
    let mut blobs: Vec<(String, Vec<u8>)> =
        vec![(sha(l1), l1.to_vec()), (sha(l2_blob), l2_blob.to_vec())];
    let mut index_entries = Vec::new();
    for arch in ["arm64", "amd64"] {
        let cfg = config_json(diff_ids, arch, &format!("oci-{arch}"));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":{layer_descs}}}"#,
            descriptor("application/vnd.oci.image.config.v1+json", &cfg, "")
        )
        .into_bytes();
        index_entries.push(descriptor(
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
            &format!(r#","platform":{{"architecture":"{arch}","os":"linux"}}"#),
        ));
        blobs.push((sha(&cfg), cfg));
        blobs.push((sha(&manifest), manifest));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
        index_entries.join(",")
    );
    let names: Vec<String> = blobs
        .iter()
        .map(|(h, _)| format!("blobs/sha256/{h}"))
        .collect();
    let mut files: Vec<(&str, &[u8])> = vec![
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", index.as_bytes()),
    ];
    for (name, (_, data)) in names.iter().zip(&blobs) {
        files.push((name, data));
    }
    outer(&files)
}

struct Env {
    _t: tempfile::TempDir,
    store: Store,
    dir: PathBuf,
}

fn env() -> Env {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&t.path().join("store")).expect("store");
    let dir = t.path().to_path_buf();
    Env { _t: t, store, dir }
}

fn import(env: &Env, name: &str, bytes: &[u8]) -> (Result<ImportedImage, StoreError>, Vec<String>) {
    let path = env.dir.join(name);
    fs::write(&path, bytes).expect("write archive");
    let mut messages = Vec::new();
    let r = import_archive(&env.store, &path, true, &mut |m| messages.push(m));
    (r, messages)
}

fn assert_tmp_empty(store: &Store) {
    let left: Vec<_> = fs::read_dir(store.tmp_dir()).expect("tmp").collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

fn check_config(img: &ImportedImage, marker: &str) {
    let c = &img.config;
    assert_eq!(c.get_env("MARK"), Some(marker));
    assert_eq!(c.get_env("PATH"), Some("/usr/local/bin:/usr/bin:/bin"));
    assert_eq!(c.workdir, "/srv");
    assert_eq!(c.user, "app");
    assert_eq!(
        c.cmd.as_deref(),
        Some(&["serve".to_string(), "--port".into(), "8080".into()][..])
    );
    assert_eq!(
        c.entrypoint.as_deref(),
        Some(&["/usr/bin/tool".to_string()][..])
    );
    assert_eq!(c.labels.get("org.example").map(String::as_str), Some("yes"));
    assert_eq!(c.exposed_ports, vec!["8080/tcp".to_string()]);
}

/// Checks the two committed layers and what the stack shows.
fn check_layers(store: &Store, img: &ImportedImage) {
    assert_eq!(img.layers.len(), 2);
    for l in &img.layers {
        assert!(store.has_layer(&l.digest));
    }
    let l1 = store.layer_path(&img.layers[0].digest);
    let l2 = store.layer_path(&img.layers[1].digest);
    assert_eq!(fs::read(l1.join("etc/a")).expect("read"), b"a1");
    let md = fs::symlink_metadata(l1.join("usr/bin/tool")).expect("stat");
    assert_eq!(md.mode() & 0o777, 0o755);
    let wh = fs::symlink_metadata(l2.join("etc/a")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let mut buf = [0u8; 4];
    let n = rustix::fs::lgetxattr(l2.join("opt/pkg"), "trusted.overlay.opaque", &mut buf[..])
        .expect("opaque");
    assert_eq!(&buf[..n], b"y");
    let stack = [l2.clone(), l1.clone()];
    assert_eq!(lookup(&stack, "/etc/a"), None, "deleted by layer 2");
    assert_eq!(lookup(&stack, "/etc/b"), Some(l1.join("etc/b")));
    assert_eq!(
        lookup(&stack, "/opt/pkg/old"),
        None,
        "hidden by the opaque dir"
    );
    assert_eq!(lookup(&stack, "/opt/pkg/new"), Some(l2.join("opt/pkg/new")));
    assert_eq!(store.list_layers().expect("list").len(), 2);
}

#[test]
fn docker_save_archive_imports_root() {
    if !common::is_root() {
        println!("skipped: layers with whiteouts need root (mknod, trusted.* xattrs)");
        return;
    }
    let env = env();
    let (l1, l2) = layers(true);
    let archive = docker_archive(&l1, &l2, &[sha(&l1), sha(&l2)]);
    let (r, messages) = import(&env, "docker.tar", &archive);
    let img = r.expect("import");
    assert_eq!(img.format, ArchiveFormat::DockerArchive);
    check_config(&img, "docker");
    check_layers(&env.store, &img);
    assert!(
        messages.iter().any(|m| m.starts_with("layer 2/2: ")),
        "{messages:?}"
    );
    assert_tmp_empty(&env.store);

    // Importing again is idempotent: same layers, nothing new.
    let (again, _) = import(&env, "docker.tar", &archive);
    assert_eq!(again.expect("import again").layers, img.layers);
    assert_eq!(env.store.list_layers().expect("list").len(), 2);
    assert_tmp_empty(&env.store);
}

#[test]
fn oci_layout_archive_imports_root() {
    if !common::is_root() {
        println!("skipped: layers with whiteouts need root (mknod, trusted.* xattrs)");
        return;
    }
    let env = env();
    let (l1, l2) = layers(true);
    let archive = oci_archive(&l1, &gzip(&l2), &[sha(&l1), sha(&l2)]);
    let (r, _) = import(&env, "oci.tar", &archive);
    let img = r.expect("import");
    assert_eq!(img.format, ArchiveFormat::OciLayout);
    check_config(&img, "oci-amd64"); // the linux/amd64 manifest, though listed second
    check_layers(&env.store, &img);
    assert_tmp_empty(&env.store);

    // The same image from a docker archive has the same layer identities.
    let env2 = self::env();
    let (d, _) = import(
        &env2,
        "docker.tar",
        &docker_archive(&l1, &l2, &[sha(&l1), sha(&l2)]),
    );
    let digests = |i: &ImportedImage| {
        i.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&d.expect("docker import")), digests(&img));
}

#[test]
fn gzipped_oci_archive_imports_root() {
    if !common::is_root() {
        println!("skipped: layers with whiteouts need root (mknod, trusted.* xattrs)");
        return;
    }
    let env = env();
    let (l1, l2) = layers(true);
    let archive = gzip(&oci_archive(&l1, &gzip(&l2), &[sha(&l1), sha(&l2)]));
    let (r, messages) = import(&env, "oci.tar.gz", &archive);
    assert_eq!(r.expect("import").layers.len(), 2);
    assert!(messages.iter().any(|m| m.contains("decompressing")));
    assert_tmp_empty(&env.store);
}

#[test]
fn corrupted_docker_layer_is_rejected_and_nothing_committed() {
    let env = env();
    let (l1, l2) = layers(false);
    let ids = [sha(&l1), sha(&l2)];
    // Same length, different content: still a valid tar, but not the layer the config names.
    let mut bad = l2.clone();
    let pos = bad
        .windows(11)
        .position(|w| w == b"new-content")
        .expect("content");
    bad[pos] = b'N';
    let (r, _) = import(&env, "docker.tar", &docker_archive(&l1, &bad, &ids));
    let err = r.expect_err("corrupted layer");
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("layer 2/2"), "{err}");
    assert!(
        env.store.list_layers().expect("list").is_empty(),
        "no layer committed"
    );
    assert_tmp_empty(&env.store);

    // The uncorrupted archive imports (layers without whiteouts need no root).
    let (ok, _) = import(&env, "docker.tar", &docker_archive(&l1, &l2, &ids));
    assert_eq!(ok.expect("import").layers.len(), 2);
}

#[test]
fn corrupted_oci_blob_is_rejected_and_nothing_committed() {
    let env = env();
    let (l1, l2) = layers(false);
    let ids = [sha(&l1), sha(&l2)];
    let mut archive = oci_archive(&l1, &l2, &ids);
    // Flip a byte of layer 2's content inside the outer archive: the blob no longer matches its
    // name and descriptor.
    let pos = archive
        .windows(11)
        .position(|w| w == b"new-content")
        .expect("content");
    archive[pos] = b'N';
    let (r, _) = import(&env, "oci.tar", &archive);
    let err = r.expect_err("corrupted blob");
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(env.store.list_layers().expect("list").is_empty());
    assert_tmp_empty(&env.store);
}

#[test]
fn docker_config_named_by_digest_is_verified() {
    let env = env();
    let (l1, l2) = layers(false);
    let cfg = config_json(&[sha(&l1), sha(&l2)], "amd64", "x");
    let wrong_name = format!("{}.json", sha(b"something else"));
    let manifest =
        format!(r#"[{{"Config":"{wrong_name}","Layers":["a/layer.tar","b/layer.tar"]}}]"#);
    let archive = outer(&[
        ("manifest.json", manifest.as_bytes()),
        (&wrong_name, &cfg),
        ("a/layer.tar", &l1),
        ("b/layer.tar", &l2),
    ]);
    let (r, _) = import(&env, "docker.tar", &archive);
    assert!(matches!(r, Err(StoreError::DigestMismatch { .. })), "{r:?}");
}

#[test]
fn missing_layer_is_an_invalid_image() {
    let env = env();
    let (l1, l2) = layers(false);
    let cfg = config_json(&[sha(&l1), sha(&l2)], "amd64", "x");
    let manifest = r#"[{"Config":"config.json","Layers":["a/layer.tar","b/layer.tar"]}]"#;
    let archive = outer(&[
        ("manifest.json", manifest.as_bytes()),
        ("config.json", &cfg),
        ("a/layer.tar", &l1),
    ]);
    let (r, _) = import(&env, "docker.tar", &archive);
    let err = r.expect_err("missing layer");
    assert!(matches!(err, StoreError::InvalidImage { .. }), "{err}");
    assert!(err.to_string().contains("b/layer.tar"), "{err}");
    assert!(env.store.list_layers().expect("list").is_empty());
}

fn rootfs_tar() -> Vec<u8> {
    RawTar::new()
        .dir("./")
        .dir("./etc/")
        .file("./etc/hostname", b"strata\n")
        .dir("./bin/")
        .file_mode("./bin/true", b"\x7fELF", 0o755)
        .symlink("./bin/sh", "true")
        .dir("./dev/")
        .device("./dev/null", EntryType::Char, 1, 3)
        .bytes()
}

#[test]
fn plain_rootfs_tar_imports_as_one_layer() {
    let env = env();
    let (r, messages) = import(&env, "rootfs.tar", &rootfs_tar());
    let img = r.expect("import");
    assert_eq!(img.format, ArchiveFormat::RootfsTar);
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.config, strata_types::ImageConfig::default());
    let layer = env.store.layer_path(&img.layers[0].digest);
    assert_eq!(
        fs::read(layer.join("etc/hostname")).expect("read"),
        b"strata\n"
    );
    assert_eq!(
        fs::read_link(layer.join("bin/sh")).expect("link"),
        Path::new("true")
    );
    assert!(!layer.join("dev/null").exists(), "device nodes skipped");
    assert!(
        messages.iter().any(|m| m.contains("skipped 1")),
        "{messages:?}"
    );
    assert_tmp_empty(&env.store);

    // Gzip-compressed, the same tree gives the same layer.
    let (gz, _) = import(&env, "rootfs.tar.gz", &gzip(&rootfs_tar()));
    assert_eq!(gz.expect("gz import").layers, img.layers);
}

#[test]
fn zstd_archive_is_refused_clearly() {
    let env = env();
    let (r, _) = import(&env, "x.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4]);
    let err = r.expect_err("zstd");
    assert!(err.to_string().contains("zstd"), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn empty_archive_is_refused() {
    let env = env();
    let (r, _) = import(&env, "empty.tar", &RawTar::new().bytes());
    assert!(matches!(r, Err(StoreError::InvalidImage { .. })), "{r:?}");
    assert!(env.store.list_layers().expect("list").is_empty());
}

#[test]
fn missing_archive_is_not_found() {
    let env = env();
    let r = import_archive(&env.store, &env.dir.join("nope.tar"), true, &mut |_| {});
    assert_eq!(r.expect_err("missing").kind(), ErrorKind::NotFound);
}
