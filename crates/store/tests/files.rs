//! The file pool, layer manifests and space accounting, through the store's public API.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_store::{tree_digest, EntryKind, Store, StoreError};
use strata_types::ErrorKind;

const MTIME: i64 = 1_700_000_000;

fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

/// Stages a layer under the store's tmp/ with `files` (path, content), fixed mtimes everywhere.
fn stage(store: &Store, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = store.scratch_dir("stage").expect("scratch").keep();
    for (path, content) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).expect("write");
    }
    for entry in walkdir::WalkDir::new(&dir).contents_first(true) {
        let entry = entry.expect("walk");
        set_mtime(entry.path(), MTIME);
    }
    dir
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).expect("stat").ino()
}

fn pool_len(root: &Path) -> usize {
    fs::read_dir(root.join("files")).expect("ls files").count()
}

#[test]
fn identical_files_across_layers_share_one_inode_and_keep_digests() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(t.path()).expect("open");
    let lib = vec![7u8; 10_000];
    let a = stage(
        &store,
        &[
            ("usr/lib/libkrb5.so.3", &lib),
            ("usr/bin/curl", b"curl"),
            ("etc/empty", b""),
        ],
    );
    let b = stage(
        &store,
        &[
            ("usr/lib/libkrb5.so.3", &lib),
            ("usr/lib/python3/requests.py", b"import urllib3"),
            ("etc/empty", b""),
        ],
    );
    let ma = store.commit_layer(&a).expect("commit a");
    let mb = store.commit_layer(&b).expect("commit b");
    assert_ne!(ma.digest, mb.digest);
    let (la, lb) = (store.layer_path(&ma.digest), store.layer_path(&mb.digest));
    assert_eq!(
        ino(&la.join("usr/lib/libkrb5.so.3")),
        ino(&lb.join("usr/lib/libkrb5.so.3")),
        "identical file stored once"
    );
    assert_eq!(
        fs::metadata(la.join("usr/lib/libkrb5.so.3"))
            .expect("stat")
            .nlink(),
        3,
        "two layers and the pool"
    );
    assert_ne!(ino(&la.join("etc/empty")), ino(&lb.join("etc/empty")));
    // Dedup changed neither layer's identity (directory mtimes included).
    assert_eq!(tree_digest(&la).expect("digest a"), ma);
    assert_eq!(tree_digest(&lb).expect("digest b"), mb);
    assert_eq!(
        fs::read(lb.join("usr/lib/libkrb5.so.3")).expect("read"),
        lib
    );
    // No temporary link names left in the layers.
    for l in [&la, &lb] {
        for e in walkdir::WalkDir::new(l) {
            let e = e.expect("walk");
            assert!(
                !e.file_name().to_string_lossy().starts_with(".strata-dedup"),
                "{}",
                e.path().display()
            );
        }
    }
    // libkrb5, curl, requests.py: three pool entries (empty files are not pooled).
    assert_eq!(pool_len(t.path()), 3);
    assert_eq!(
        fs::metadata(t.path().join("files"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    let stats = store.stats().expect("stats");
    assert_eq!(stats.layers, 2);
    assert_eq!(stats.pool_files, 3);
    assert_eq!(stats.pool_unreferenced, 0);
    let manifests: u64 = fs::read_dir(t.path().join("manifests"))
        .expect("ls")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum();
    assert_eq!(stats.logical_bytes, 10_000 * 2 + 4 + 14 + manifests);
    assert_eq!(stats.dedup_saved_bytes, 10_000);
    assert_eq!(stats.apparent_bytes, 10_000 + 4 + 14 + manifests);
    assert!(stats.allocated_bytes >= 10_000);

    // Removing one layer leaves the other intact and nothing to collect yet for shared files.
    store.remove_layer(&ma.digest).expect("remove a");
    assert_eq!(tree_digest(&lb).expect("digest b"), mb);
    let stats = store.stats().expect("stats");
    assert_eq!(stats.pool_unreferenced, 1, "curl");
    assert_eq!(stats.dedup_saved_bytes, 0);
    assert_eq!(store.collect_files().expect("collect"), (1, 4));
    assert_eq!(pool_len(t.path()), 2);
    store.remove_layer(&mb.digest).expect("remove b");
    assert_eq!(store.collect_files().expect("collect"), (2, 10_000 + 14));
    assert_eq!(pool_len(t.path()), 0);
    assert_eq!(
        fs::read_dir(t.path().join("manifests"))
            .expect("ls")
            .count(),
        0
    );
}

#[test]
fn a_different_mtime_or_mode_is_not_shared() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(t.path()).expect("open");
    let a = stage(&store, &[("m.py", b"print(1)"), ("x", b"x")]);
    let b = stage(&store, &[("m.py", b"print(1)"), ("y", b"y")]);
    set_mtime(&b.join("m.py"), MTIME + 1);
    let c = stage(&store, &[("m.py", b"print(1)"), ("z", b"z")]);
    fs::set_permissions(c.join("m.py"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let la = store.layer_path(&store.commit_layer(&a).expect("a").digest);
    let lb = store.layer_path(&store.commit_layer(&b).expect("b").digest);
    let lc = store.layer_path(&store.commit_layer(&c).expect("c").digest);
    assert_ne!(ino(&la.join("m.py")), ino(&lb.join("m.py")), "mtime");
    assert_ne!(ino(&la.join("m.py")), ino(&lc.join("m.py")), "mode");
    assert_eq!(
        fs::metadata(lb.join("m.py")).expect("stat").mtime(),
        MTIME + 1
    );
}

#[test]
fn committing_an_existing_layer_again_keeps_one_copy() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(t.path()).expect("open");
    let first = store
        .commit_layer(&stage(&store, &[("a", b"aaaa")]))
        .expect("commit");
    let again = store
        .commit_layer(&stage(&store, &[("a", b"aaaa")]))
        .expect("again");
    assert_eq!(first, again);
    assert_eq!(pool_len(t.path()), 1);
    // The duplicate staged copy never joined the pool for good.
    assert_eq!(store.collect_files().expect("collect"), (0, 0));
    assert_eq!(
        fs::metadata(store.layer_path(&first.digest).join("a"))
            .expect("stat")
            .nlink(),
        2
    );
}

#[test]
fn code_trees_share_files_too() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&t.path().join("store")).expect("open");
    let lib = "def helper():\n    return 42\n".repeat(100);
    let mut digests = Vec::new();
    for (i, handler) in ["v1", "v2"].iter().enumerate() {
        let src = t.path().join(format!("src{i}"));
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join("lib.py"), &lib).expect("write");
        fs::write(src.join("app.py"), handler).expect("write");
        let tar = t.path().join(format!("code{i}.tar"));
        let mut b = tar::Builder::new(fs::File::create(&tar).expect("create"));
        b.append_dir_all(".", &src).expect("append");
        b.finish().expect("finish");
        drop(b);
        let meta = store
            .import_code(&tar, &Default::default())
            .expect("import");
        digests.push(meta.digest);
    }
    let (c0, c1) = (store.code_path(&digests[0]), store.code_path(&digests[1]));
    assert_eq!(ino(&c0.join("lib.py")), ino(&c1.join("lib.py")));
    assert_ne!(ino(&c0.join("app.py")), ino(&c1.join("app.py")));
    assert_eq!(tree_digest(&c1).expect("digest").digest, digests[1]);
    assert_eq!(
        store.stats().expect("stats").dedup_saved_bytes,
        lib.len() as u64
    );
}

#[test]
fn manifests_are_written_at_commit_and_recomputed_when_missing_or_damaged() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(t.path()).expect("open");
    let staged = stage(
        &store,
        &[("usr/bin/curl", b"curl binary"), ("etc/curlrc", b"-s")],
    );
    symlink("curl", staged.join("usr/bin/curl-link")).expect("symlink");
    set_mtime(&staged.join("usr/bin/curl-link"), MTIME);
    set_mtime(&staged.join("usr/bin"), MTIME);
    fs::set_permissions(
        staged.join("usr/bin/curl"),
        fs::Permissions::from_mode(0o4755),
    )
    .expect("chmod");
    let meta = store.commit_layer(&staged).expect("commit");
    let on_disk = t.path().join("manifests").join(meta.digest.hex());
    assert!(on_disk.is_file(), "written at commit");

    let m = store.manifest(&meta.digest).expect("manifest");
    let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/etc",
            "/etc/curlrc",
            "/usr",
            "/usr/bin",
            "/usr/bin/curl",
            "/usr/bin/curl-link"
        ]
    );
    let curl = m.get("/usr/bin/curl").expect("curl");
    assert_eq!(curl.mode, 0o4755);
    assert_eq!(curl.mtime, MTIME);
    assert!(matches!(&curl.kind, EntryKind::File { size: 11, sha256 } if sha256.len() == 64));
    assert_eq!(
        m.get("/usr/bin/curl-link").map(|e| &e.kind),
        Some(&EntryKind::Symlink {
            target: "curl".into()
        })
    );
    assert_eq!(
        m.get("/usr").map(|e| &e.kind),
        Some(&EntryKind::Dir { opaque: false })
    );
    assert_eq!(m.file_bytes(), 13);
    assert_eq!(store.layer_size(&meta.digest).expect("size"), 13);
    assert!(Arc::ptr_eq(
        &m,
        &store.manifest(&meta.digest).expect("again")
    ));

    // A fresh store (no memory cache) reads the file; a damaged file is recomputed and rewritten.
    let fresh = Store::open(t.path()).expect("open");
    assert_eq!(*fresh.manifest(&meta.digest).expect("from disk"), *m);
    fs::write(&on_disk, b"strata-manifest-v1 garbage\n").expect("damage");
    let fresh = Store::open(t.path()).expect("open");
    assert_eq!(*fresh.manifest(&meta.digest).expect("recomputed"), *m);
    assert!(fs::read_to_string(&on_disk)
        .expect("read")
        .ends_with("end 6\n"));
    fs::remove_file(&on_disk).expect("rm");
    let fresh = Store::open(t.path()).expect("open");
    assert_eq!(*fresh.manifest(&meta.digest).expect("recomputed"), *m);
    assert!(on_disk.is_file(), "rewritten");

    store.remove_layer(&meta.digest).expect("remove");
    assert!(!on_disk.exists(), "removing a layer drops its manifest");
    let err = store.manifest(&meta.digest).expect_err("gone");
    assert!(matches!(err, StoreError::LayerNotFound { .. }));
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn a_layer_changed_on_disk_is_reported_not_described() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(t.path()).expect("open");
    let meta = store
        .commit_layer(&stage(&store, &[("a", b"1")]))
        .expect("commit");
    fs::remove_file(t.path().join("manifests").join(meta.digest.hex())).expect("rm");
    fs::write(store.layer_path(&meta.digest).join("b"), b"intruder").expect("write");
    let fresh = Store::open(t.path()).expect("open");
    let err = fresh.manifest(&meta.digest).expect_err("mismatch");
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
}

#[test]
fn stray_pool_and_manifest_entries_are_harmless() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(t.path()).expect("open");
    let meta = store
        .commit_layer(&stage(&store, &[("a", b"content")]))
        .expect("commit");
    // Leftovers a crash could leave: an unlinked pool file, a manifest of a removed layer, a
    // stray name.
    fs::write(t.path().join("files/leftover"), b"partial").expect("write");
    fs::write(t.path().join("manifests").join("ab".repeat(32)), b"x").expect("write");
    fs::write(t.path().join("manifests/junk"), b"x").expect("write");
    let stats = store.stats().expect("stats");
    assert_eq!(stats.pool_files, 2);
    assert_eq!(stats.pool_unreferenced, 1);
    assert_eq!(store.collect_files().expect("collect"), (1, 7));
    let left: Vec<_> = fs::read_dir(t.path().join("manifests"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(left, vec![meta.digest.hex().to_string()]);
    assert_eq!(store.manifest(&meta.digest).expect("manifest").len(), 1);
}

#[test]
fn collection_racing_commits_never_breaks_a_layer() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(t.path()).expect("open");
    let shared: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 3000]).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.collect_files().expect("collect");
                runs += 1;
            }
            runs
        })
    };
    let mut kept = Vec::new();
    for round in 0..30 {
        let own = format!("round {round}");
        let mut files: Vec<(String, &[u8])> = shared
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("lib/{i}.so"), c.as_slice()))
            .collect();
        files.push(("own".into(), own.as_bytes()));
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        let meta = store.commit_layer(&stage(&store, &refs)).expect("commit");
        // Drop every other layer so pool entries keep falling to one link.
        if round % 2 == 0 {
            store.remove_layer(&meta.digest).expect("remove");
        } else {
            kept.push(meta);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(collector.join().expect("collector") > 0);
    for meta in &kept {
        let dir = store.layer_path(&meta.digest);
        assert_eq!(tree_digest(&dir).expect("digest"), *meta);
        for (i, c) in shared.iter().enumerate() {
            assert_eq!(&fs::read(dir.join(format!("lib/{i}.so"))).expect("read"), c);
        }
    }
    // Whatever the interleaving, once collection has run nothing unreferenced remains and every
    // kept layer's files are intact.
    store.collect_files().expect("collect");
    assert_eq!(store.stats().expect("stats").pool_unreferenced, 0);
}

#[test]
fn whiteouts_and_opaque_dirs_appear_in_manifests_root() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: whiteouts and trusted.* xattrs need root");
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(t.path()).expect("open");
    let staged = stage(&store, &[("opt/pkg/new", b"new")]);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        staged.join("opt/gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .expect("mknod");
    rustix::fs::lsetxattr(
        staged.join("opt/pkg"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setxattr");
    // A file with an xattr is never pooled (the inode would share it).
    fs::write(staged.join("opt/cap"), b"binary").expect("write");
    rustix::fs::lsetxattr(
        staged.join("opt/cap"),
        "user.strata.test",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setxattr");
    set_mtime(&staged.join("opt"), MTIME);
    let meta = store.commit_layer(&staged).expect("commit");
    let m = store.manifest(&meta.digest).expect("manifest");
    assert_eq!(
        m.get("/opt/gone").map(|e| &e.kind),
        Some(&EntryKind::Whiteout)
    );
    assert_eq!(
        m.get("/opt/pkg").map(|e| &e.kind),
        Some(&EntryKind::Dir { opaque: true })
    );
    let layer = store.layer_path(&meta.digest);
    assert_eq!(
        fs::metadata(layer.join("opt/cap")).expect("stat").nlink(),
        1
    );
    assert_eq!(
        fs::metadata(layer.join("opt/pkg/new"))
            .expect("stat")
            .nlink(),
        2
    );
    assert_eq!(tree_digest(&layer).expect("digest"), meta);
}
