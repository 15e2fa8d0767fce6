use super::*;

fn d(n: u8) -> Digest {
    Digest::from_bytes(&[n; 32])
}

fn open() -> (tempfile::TempDir, Meta) {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = Meta::open(&dir.path().join("meta.db")).expect("open");
    (dir, meta)
}

fn layer(n: u8) -> LayerRecord {
    LayerRecord {
        digest: d(n),
        size_bytes: 10 * n as u64,
        entries: n as u64,
        created_by: format!("step {n}"),
    }
}

fn runtime(name: &str, layers: Vec<Digest>) -> NewRuntime {
    NewRuntime {
        name: name.into(),
        base: "base".into(),
        base_image: Some("base".into()),
        config: ImageConfig::default(),
        resources: Resources::platform_default(),
        dockerfile: "FROM base\n".into(),
        dockerfile_digest: d(99),
        layers,
        kind: "dockerfile".into(),
        packages: vec![],
        parent: None,
    }
}

fn image() -> ImageRecord {
    ImageRecord {
        name: "base".into(),
        source: "test".into(),
        config: ImageConfig::default(),
        layers: vec![d(1)],
        created_at: now_rfc3339(),
    }
}

#[test]
fn opens_in_wal_with_schema_and_reopens() {
    let (dir, meta) = open();
    assert_eq!(meta.schema_version().expect("version"), migrations::CURRENT);
    let mode: String = meta
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
    let sync: i64 = meta
        .conn()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .expect("sync");
    assert_eq!(sync, 2, "synchronous=FULL");
    meta.set_setting("k", "v").expect("set");
    drop(meta);
    let meta = Meta::open(&dir.path().join("meta.db")).expect("reopen");
    assert_eq!(meta.setting("k").expect("get").as_deref(), Some("v"));
    assert!(meta.integrity_ok().expect("check"));
}

#[test]
fn refuses_a_newer_schema() {
    let (dir, meta) = open();
    meta.conn()
        .pragma_update(None, "user_version", 999)
        .expect("bump");
    drop(meta);
    let err = Meta::open(&dir.path().join("meta.db")).expect_err("refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn images_and_their_users() {
    let (_dir, meta) = open();
    meta.put_layer(&layer(1)).expect("layer");
    meta.put_layer(&layer(2)).expect("layer");
    meta.insert_image(&image()).expect("image");
    assert_eq!(
        meta.insert_image(&image()).err().map(|e| e.kind()),
        Some(ErrorKind::AlreadyExists)
    );
    assert_eq!(
        meta.image("base").expect("get").expect("some").layers,
        vec![d(1)]
    );

    let rt = meta
        .insert_runtime(&runtime("py", vec![d(1), d(2)]))
        .expect("runtime");
    assert_eq!(rt.version, 1);
    assert_eq!(meta.image_users("base").expect("users"), vec!["py@1"]);
    let err = meta.delete_image("base").expect_err("in use");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("py@1"));

    assert_eq!(meta.layer_users(&d(1)).expect("users"), 2);
    assert_eq!(meta.layer_users(&d(2)).expect("users"), 1);
    assert!(meta.unused_layers().expect("unused").is_empty());

    assert_eq!(meta.delete_runtime("py", None).expect("rm"), vec!["py@1"]);
    assert_eq!(meta.unused_layers().expect("unused"), vec![d(2)]);
    assert!(meta.delete_image("base").expect("rm"));
    assert_eq!(meta.unused_layers().expect("unused"), vec![d(1), d(2)]);
}

#[test]
fn runtime_versions_count_up_and_are_never_reused() {
    let (_dir, meta) = open();
    meta.put_layer(&layer(1)).expect("layer");
    meta.put_layer(&layer(2)).expect("layer");
    meta.insert_image(&image()).expect("image");
    for expect in 1..=3 {
        assert_eq!(
            meta.insert_runtime(&runtime("py", vec![d(1)]))
                .expect("rt")
                .version,
            expect
        );
    }
    assert_eq!(
        meta.runtime("py", None)
            .expect("get")
            .expect("some")
            .version,
        3
    );
    assert_eq!(
        meta.runtime("py", Some(2))
            .expect("get")
            .expect("some")
            .layers,
        vec![d(1)]
    );
    assert!(meta.runtime("py", Some(9)).expect("get").is_none());
    assert_eq!(
        meta.delete_runtime("py", Some(3)).expect("rm"),
        vec!["py@3"]
    );
    assert_eq!(
        meta.insert_runtime(&runtime("py", vec![d(2)]))
            .expect("rt")
            .version,
        4
    );
    let all: Vec<String> = meta
        .runtimes()
        .expect("all")
        .iter()
        .map(|r| r.reference())
        .collect();
    assert_eq!(all, vec!["py@1", "py@2", "py@4"]);
}

#[test]
fn build_cache_entries_die_with_their_layers() {
    let (_dir, meta) = open();
    meta.put_layer(&layer(1)).expect("layer");
    meta.put_layer(&layer(2)).expect("layer");
    meta.cache_put("k1", Some(&d(1)), Some(&d(2))).expect("put");
    meta.cache_put("k2", Some(&d(1)), None).expect("put");
    assert_eq!(meta.cache_get("k1").expect("get"), Some(Some(d(2))));
    assert_eq!(meta.cache_get("k2").expect("get"), Some(None));
    assert_eq!(meta.cache_get("k3").expect("get"), None);
    assert!(meta.delete_layer(&d(2)).expect("delete"));
    assert_eq!(meta.cache_get("k1").expect("get"), None);
    assert!(meta.delete_layer(&d(1)).expect("delete"));
    assert_eq!(meta.cache_get("k2").expect("get"), None);
    assert!(meta.layer(&d(1)).expect("get").is_none());
}

#[test]
fn a_used_layer_is_not_deleted() {
    let (_dir, meta) = open();
    meta.put_layer(&layer(1)).expect("layer");
    meta.insert_image(&image()).expect("image");
    assert!(!meta.delete_layer(&d(1)).expect("refused"));
    assert!(meta.layer(&d(1)).expect("get").is_some());
}

#[test]
fn foreign_keys_block_rows_pointing_at_unknown_layers() {
    let (_dir, meta) = open();
    assert!(
        meta.insert_image(&image()).is_err(),
        "layer 1 was never recorded"
    );
    assert!(
        meta.image("base").expect("get").is_none(),
        "the failed insert left nothing"
    );
}
