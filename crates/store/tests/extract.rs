//! The hostile-archive corpus for `extract_tar`: every case checks the typed error (or the
//! result) and that nothing outside the destination was created or touched.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::{RawTar, Sandbox, MTIME};
use strata_store::archive::{extract_tar, ApplyStats, ExtractOptions, Limits, Whiteouts};
use strata_store::{tree_digest, StoreError};
use strata_types::ErrorKind;
use tar::EntryType;

fn extract(sb: &Sandbox, tar: &[u8], wh: Whiteouts) -> Result<ApplyStats, StoreError> {
    extract_with(sb, tar, wh, &ExtractOptions::default(), &Limits::default())
}

fn extract_with(
    sb: &Sandbox,
    tar: &[u8],
    wh: Whiteouts,
    opts: &ExtractOptions,
    limits: &Limits,
) -> Result<ApplyStats, StoreError> {
    let r = extract_tar(&mut &tar[..], &sb.dest, wh, opts, limits);
    sb.assert_contained();
    r
}

/// Asserts the extraction was rejected as unsafe, naming `entry`.
fn assert_unsafe(r: Result<ApplyStats, StoreError>, entry: &str) {
    match r {
        Err(e @ StoreError::UnsafeEntry { .. }) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let msg = e.to_string();
            assert!(msg.contains(entry), "error {msg:?} should name {entry:?}");
        }
        other => panic!("expected UnsafeEntry for {entry:?}, got {other:?}"),
    }
}

fn assert_limit(r: Result<ApplyStats, StoreError>, limit: &str) {
    match r {
        Err(e @ StoreError::LimitExceeded { .. }) => {
            assert_eq!(e.kind(), ErrorKind::TooLarge);
            assert!(e.to_string().contains(limit), "{e} should mention {limit}");
        }
        other => panic!("expected LimitExceeded({limit}), got {other:?}"),
    }
}

#[test]
fn plain_archive_extracts_with_metadata() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .dir_mtime("./", 1_500_000_000)
        .dir_mtime("./etc/", 1_600_000_000)
        .file_mode("./etc/motd", b"hello", 0o640)
        .file("usr/lib/deep/file", b"implicit parents")
        .symlink("etc/link", "motd")
        .hardlink("etc/motd2", "etc/motd")
        .fifo("run/fifo")
        .bytes();
    let stats = extract(&sb, &tar, Whiteouts::Keep).expect("extract");
    assert_eq!(stats.entries, 7);
    assert_eq!(stats.bytes, 5 + 16);
    let d = &sb.dest;
    assert_eq!(fs::read(d.join("etc/motd")).expect("read"), b"hello");
    let md = fs::symlink_metadata(d.join("etc/motd")).expect("stat");
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(md.mtime(), MTIME as i64);
    assert_eq!(md.nlink(), 2, "hardlink shares the inode");
    assert_eq!(
        fs::read_link(d.join("etc/link"))
            .expect("readlink")
            .to_str(),
        Some("motd")
    );
    assert!(fs::symlink_metadata(d.join("run/fifo"))
        .expect("fifo")
        .file_type()
        .is_fifo());
    // Directory mtimes are applied last, so writing children did not disturb them.
    assert_eq!(
        fs::metadata(d.join("etc")).expect("stat").mtime(),
        1_600_000_000
    );
    assert_eq!(fs::metadata(d).expect("stat").mtime(), 1_500_000_000);
    // Unlisted parents: 0755 and mtime 0, for reproducible digests.
    let implicit = fs::metadata(d.join("usr/lib")).expect("stat");
    assert_eq!(implicit.mode() & 0o7777, 0o755);
    assert_eq!(implicit.mtime(), 0);
}

#[test]
fn same_archive_gives_same_tree_digest() {
    let tar = RawTar::new()
        .file("a/b/c", b"one")
        .dir("a/")
        .symlink("a/l", "/etc/passwd")
        .bytes();
    let one = Sandbox::new();
    extract(&one, &tar, Whiteouts::Keep).expect("extract");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = Sandbox::new();
    extract(&two, &tar, Whiteouts::Keep).expect("extract");
    assert_eq!(
        tree_digest(&one.dest).expect("digest"),
        tree_digest(&two.dest).expect("digest")
    );
}

#[test]
fn dotdot_escape_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new().file("../escape", b"x").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "../escape");
    assert!(!sb.t.path().join("escape").exists());
}

#[test]
fn nested_dotdot_escape_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new().file("a/../../escape", b"x").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "a/../../escape");
    // A `..` that stays inside is resolved lexically.
    let sb = Sandbox::new();
    let tar = RawTar::new().file("a/../inside", b"x").bytes();
    extract(&sb, &tar, Whiteouts::Keep).expect("inside");
    assert!(sb.dest.join("inside").is_file());
}

// The absolute-path and symlink-to-`/` cases aim at the sandbox's own directory (by its absolute
// path), never at real host files: if extraction ever regressed, the damage would stay in a temp
// dir and `assert_contained` would report it.

#[test]
fn absolute_path_lands_inside_dest() {
    let sb = Sandbox::new();
    let host_target = sb.t.path().join("outside/abs-file");
    let name = host_target.to_str().expect("utf8").to_string();
    let tar = RawTar::new().file(&name, b"inside").bytes();
    extract(&sb, &tar, Whiteouts::Keep).expect("extract");
    assert_eq!(fs::read(sb.dest.join(&name[1..])).expect("read"), b"inside");
    assert!(
        !host_target.exists(),
        "must not write to the absolute host path"
    );
}

#[test]
fn write_through_symlink_to_root_is_rejected() {
    let sb = Sandbox::new();
    // `link -> /`, then `link/<absolute path of the sentinel>`: the classic escape shape.
    let through = format!("link{}", sb.sentinel.to_str().expect("utf8"));
    let tar = RawTar::new()
        .symlink("link", "/")
        .file(&through, b"root::0:0::/:/bin/sh\n")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), &through);
}

#[test]
fn write_through_symlink_to_sentinel_dir_is_rejected() {
    let sb = Sandbox::new();
    let outside = sb.t.path().to_str().expect("utf8").to_string();
    let tar = RawTar::new()
        .symlink("link", &outside)
        .file("link/sentinel", b"overwritten")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "link/sentinel");
}

#[test]
fn write_through_dotdot_symlink_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("link", "..")
        .file("link/x", b"x")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "link/x");
    assert!(!sb.t.path().join("x").exists());
    // A directory entry through the symlink is refused too.
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("link", "..")
        .dir("link/newdir/")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "link/newdir");
}

#[test]
fn hardlink_to_host_file_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new().hardlink("pw", "/etc/passwd").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "pw");
    assert!(!sb.dest.join("pw").exists());
}

#[test]
fn hardlink_outside_root_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new().hardlink("h", "../sentinel").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "h");
    let sb = Sandbox::new();
    let outside = sb.t.path().to_str().expect("utf8").to_string();
    let tar = RawTar::new()
        .symlink("l", &outside)
        .hardlink("h", "l/sentinel")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "h");
    assert_eq!(fs::metadata(&sb.sentinel).expect("stat").nlink(), 1);
}

#[test]
fn hardlink_to_symlink_or_dir_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("l", "/etc/passwd")
        .hardlink("h", "l")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "h");
    let sb = Sandbox::new();
    let tar = RawTar::new().dir("d/").hardlink("h", "d").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "h");
}

#[test]
fn empty_and_nul_names_are_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new().file("", b"x").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "");
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .pax(&[("path", b"a\0b")])
        .file("placeholder", b"x")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "a");
    let sb = Sandbox::new();
    let tar = RawTar::new().file(".", b"x").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), ".");
}

#[test]
fn duplicate_entries_later_wins() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .file("f", b"first")
        .file("f", b"second")
        .file("d/inner", b"x")
        .file("d", b"file replaces dir")
        .file("g", b"file")
        .dir("g/")
        .symlink("s", "/nowhere")
        .file("s", b"file replaces symlink")
        .dir("m/")
        .file("m/a", b"a")
        .dir("m/")
        .bytes();
    extract(&sb, &tar, Whiteouts::Keep).expect("extract");
    let d = &sb.dest;
    assert_eq!(fs::read(d.join("f")).expect("read"), b"second");
    assert_eq!(fs::read(d.join("d")).expect("read"), b"file replaces dir");
    assert!(fs::symlink_metadata(d.join("g")).expect("stat").is_dir());
    assert_eq!(
        fs::read(d.join("s")).expect("read"),
        b"file replaces symlink"
    );
    assert!(d.join("m/a").is_file(), "a dir over a dir merges");
}

#[test]
fn file_under_a_file_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new().file("a", b"x").file("a/b", b"y").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "a/b");
}

#[test]
fn too_big_file_is_rejected() {
    let sb = Sandbox::new();
    let limits = Limits {
        max_file_bytes: 10,
        ..Limits::default()
    };
    let tar = RawTar::new().file("big", &[7u8; 11]).bytes();
    let r = extract_with(
        &sb,
        &tar,
        Whiteouts::Keep,
        &ExtractOptions::default(),
        &limits,
    );
    assert_limit(r, "file size");
    // A header that merely claims a huge size is refused before anything is read.
    let sb = Sandbox::new();
    let tar = RawTar::new().file_claiming("huge", 1 << 20, b"x").bytes();
    let r = extract_with(
        &sb,
        &tar,
        Whiteouts::Keep,
        &ExtractOptions::default(),
        &limits,
    );
    assert_limit(r, "file size");
    assert!(!sb.dest.join("huge").exists());
}

#[test]
fn total_size_is_capped() {
    let sb = Sandbox::new();
    let limits = Limits {
        max_bytes: 15,
        ..Limits::default()
    };
    let tar = RawTar::new()
        .file("a", &[1u8; 10])
        .file("b", &[2u8; 10])
        .bytes();
    let r = extract_with(
        &sb,
        &tar,
        Whiteouts::Keep,
        &ExtractOptions::default(),
        &limits,
    );
    assert_limit(r, "total size");
}

#[test]
fn too_many_entries_are_rejected() {
    let sb = Sandbox::new();
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let tar = RawTar::new()
        .file("a", b"")
        .file("b", b"")
        .file("c", b"")
        .bytes();
    let r = extract_with(
        &sb,
        &tar,
        Whiteouts::Keep,
        &ExtractOptions::default(),
        &limits,
    );
    assert_limit(r, "entry count");
    assert!(!sb.dest.join("c").exists());
}

#[test]
fn long_names_are_rejected() {
    let sb = Sandbox::new();
    let limits = Limits {
        max_path_len: 8,
        ..Limits::default()
    };
    let tar = RawTar::new().file("a/very/long/name", b"").bytes();
    let r = extract_with(
        &sb,
        &tar,
        Whiteouts::Keep,
        &ExtractOptions::default(),
        &limits,
    );
    assert_limit(r, "name length");
}

#[test]
fn whiteout_names_are_rejected_in_plain_mode() {
    let sb = Sandbox::new();
    let tar = RawTar::new().file("etc/.wh.passwd", b"").bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Keep), "etc/.wh.passwd");
}

#[test]
fn impossible_whiteouts_are_rejected() {
    for name in [
        "a/.wh..",
        "a/.wh...",
        "a/.wh.",
        ".wh..wh..opq",
        ".wh.dir/file",
    ] {
        let sb = Sandbox::new();
        let tar = RawTar::new().file(name, b"").bytes();
        assert_unsafe(extract(&sb, &tar, Whiteouts::Oci), name);
    }
}

#[test]
fn whiteout_through_symlinked_parent_is_rejected() {
    let sb = Sandbox::new();
    let outside = sb.t.path().to_str().expect("utf8").to_string();
    let tar = RawTar::new()
        .symlink("l", &outside)
        .file("l/.wh.sentinel", b"")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Oci), "l/.wh.sentinel");
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("l", &outside)
        .file("l/outside/.wh..wh..opq", b"")
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Oci), "l/outside/.wh..wh..opq");
}

#[test]
fn whiteouts_become_overlay_whiteouts_root() {
    if !common::is_root() {
        println!("skipped: creating whiteouts (mknod) and trusted.* xattrs needs root");
        return;
    }
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .file("etc/x", b"replaced by the whiteout")
        .file("etc/.wh.x", b"")
        .file("opt/pkg/keep", b"same layer")
        .file("opt/pkg/.wh..wh..opq", b"")
        .file("var/.wh.cache", b"")
        .file(".wh..wh..plnk", b"")
        .bytes();
    let stats = extract(&sb, &tar, Whiteouts::Oci).expect("extract");
    assert_eq!(stats.whiteouts, 3);
    assert_eq!(
        stats.skipped.len(),
        1,
        "aufs metadata is skipped: {:?}",
        stats.skipped
    );
    let d = &sb.dest;
    for w in ["etc/x", "var/cache"] {
        let md = fs::symlink_metadata(d.join(w)).expect("whiteout");
        assert!(md.file_type().is_char_device(), "{w} is a char device");
        assert_eq!(md.rdev(), 0, "{w} is 0:0");
        assert_eq!(md.mtime(), MTIME as i64);
    }
    assert!(!d.join("etc/.wh.x").exists());
    let opaque = rustix::fs::lgetxattr(
        d.join("opt/pkg"),
        "trusted.overlay.opaque",
        &mut [0u8; 8][..],
    )
    .expect("opaque xattr");
    assert_eq!(opaque, 1);
    assert!(
        d.join("opt/pkg/keep").is_file(),
        "the opaque marker keeps same-layer entries"
    );
}

#[test]
fn zero_zero_char_device_entry_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .device("fake-whiteout", EntryType::Char, 0, 0)
        .bytes();
    assert_unsafe(extract(&sb, &tar, Whiteouts::Oci), "fake-whiteout");
}

#[test]
fn device_nodes_are_skipped_when_asked() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/sda", EntryType::Block, 8, 0)
        .file("dev/keep", b"x")
        .bytes();
    let opts = ExtractOptions {
        skip_device_nodes: true,
        preserve_owner: false,
    };
    let stats =
        extract_with(&sb, &tar, Whiteouts::Keep, &opts, &Limits::default()).expect("extract");
    assert_eq!(stats.skipped.len(), 2);
    assert!(stats.skipped[0].contains("dev/null"));
    assert!(!sb.dest.join("dev/null").exists());
    assert!(!sb.dest.join("dev/sda").exists());
    assert!(sb.dest.join("dev/keep").exists());
}

#[test]
fn device_nodes_are_created_otherwise_root() {
    if !common::is_root() {
        println!("skipped: mknod of device nodes needs root");
        return;
    }
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/sda", EntryType::Block, 8, 0)
        .bytes();
    let stats = extract(&sb, &tar, Whiteouts::Keep).expect("extract");
    assert!(stats.skipped.is_empty());
    let md = fs::symlink_metadata(sb.dest.join("dev/null")).expect("null");
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(md.mode() & 0o7777, 0o666);
    let md = fs::symlink_metadata(sb.dest.join("dev/sda")).expect("sda");
    assert!(md.file_type().is_block_device());
    assert_eq!(md.rdev(), rustix::fs::makedev(8, 0));
}

#[test]
fn owners_and_capabilities_are_applied_root() {
    if !common::is_root() {
        println!("skipped: chown and security.capability need root");
        return;
    }
    let sb = Sandbox::new();
    // VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_BIND_SERVICE.
    let mut cap = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    let tar = RawTar::new()
        .file_meta("bin/suid", b"#!", 0o4755, 1234, 5678, MTIME)
        .pax(&[
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.user.ignored", b"1"),
        ])
        .file_meta("bin/server", b"elf", 0o755, 0, 0, MTIME)
        .bytes();
    let opts = ExtractOptions {
        skip_device_nodes: false,
        preserve_owner: true,
    };
    extract_with(&sb, &tar, Whiteouts::Keep, &opts, &Limits::default()).expect("extract");
    let md = fs::symlink_metadata(sb.dest.join("bin/suid")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(md.mode() & 0o7777, 0o4755, "setuid survives the chown");
    let mut buf = [0u8; 64];
    let n = rustix::fs::lgetxattr(
        sb.dest.join("bin/server"),
        "security.capability",
        &mut buf[..],
    )
    .expect("capability");
    assert_eq!(&buf[..n], &cap[..]);
    assert!(
        rustix::fs::lgetxattr(sb.dest.join("bin/server"), "user.ignored", &mut buf[..]).is_err(),
        "only security.capability is applied"
    );
}

#[test]
fn symlink_metadata_never_follows_root() {
    if !common::is_root() {
        println!("skipped: owner preservation needs root");
        return;
    }
    let sb = Sandbox::new();
    fs::set_permissions(&sb.sentinel, fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = fs::metadata(&sb.sentinel).expect("stat");
    let target = sb.sentinel.to_str().expect("utf8").to_string();
    let mut h = tar::Header::new_gnu();
    h.set_path("l").expect("path");
    h.set_link_name(&target).expect("link");
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(4242);
    h.set_gid(4242);
    h.set_mtime(12345);
    h.set_cksum();
    // The header followed by the end-of-archive blocks.
    let mut raw = h.as_bytes().to_vec();
    raw.extend_from_slice(&[0u8; 1024]);
    let opts = ExtractOptions {
        skip_device_nodes: false,
        preserve_owner: true,
    };
    extract_with(&sb, &raw, Whiteouts::Keep, &opts, &Limits::default()).expect("extract");
    let link = fs::symlink_metadata(sb.dest.join("l")).expect("stat");
    assert_eq!((link.uid(), link.mtime()), (4242, 12345));
    let after = fs::metadata(&sb.sentinel).expect("stat");
    assert_eq!(
        (after.uid(), after.mode(), after.mtime()),
        (before.uid(), before.mode(), before.mtime())
    );
}

#[test]
fn truncated_archive_is_an_error() {
    let sb = Sandbox::new();
    let mut tar = RawTar::new().file("a", &[1u8; 2000]).bytes();
    tar.truncate(1024);
    let err = extract(&sb, &tar, Whiteouts::Keep).expect_err("truncated");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}
