//! Resolving a Dockerfile `USER` against a root filesystem's `/etc/passwd` and `/etc/group`.

use std::io::Read;
use std::path::Path;

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

use crate::error::SandboxError;

/// The largest passwd or group file read (a real one is a few KiB).
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// Resolves Docker `USER` syntax — `name`, `uid`, `name:group`, `uid:gid`, `name:gid`,
/// `uid:group` — against `<rootfs>/etc/passwd` and `<rootfs>/etc/group` into
/// `(uid, gid, additional_gids)`.
///
/// The files are opened with every path component resolved inside `rootfs`, so a symlink in
/// the image cannot make Strata read a host file. An empty `user` is root: `(0, 0, [])`.
/// A numeric uid need not exist in `/etc/passwd` (its gid is then 0); an unknown name is an
/// error. The additional gids are those of the groups that list the user as a member, without
/// the primary gid.
pub fn host_user_lookup(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), SandboxError> {
    let user = user.trim();
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let invalid = |reason: &str| SandboxError::InvalidUser {
        user: user.to_string(),
        reason: reason.to_string(),
    };
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if user_part.is_empty()
        || group_part.is_some_and(str::is_empty)
        || group_part.is_some_and(|g| g.contains(':'))
    {
        return Err(invalid("expected name, uid, name:group or uid:gid"));
    }

    let passwd = read_in_root(rootfs, "etc/passwd")?;
    let entries = parse_passwd(passwd.as_deref().unwrap_or(""));
    let (uid, primary_gid, name) = match parse_id(user_part) {
        Some(uid) => match entries.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.clone())),
            None => (uid, 0, None),
        },
        None => {
            let e = entries
                .iter()
                .find(|e| e.name == user_part)
                .ok_or_else(|| SandboxError::UnknownUser {
                    user: user_part.to_string(),
                    rootfs: rootfs.to_path_buf(),
                })?;
            (e.uid, e.gid, Some(e.name.clone()))
        }
    };

    let group_text = read_in_root(rootfs, "etc/group")?;
    let groups = parse_group(group_text.as_deref().unwrap_or(""));
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match parse_id(g) {
            Some(gid) => gid,
            None => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| SandboxError::UnknownGroup {
                    group: g.to_string(),
                    rootfs: rootfs.to_path_buf(),
                })?,
        },
    };

    let mut additional = Vec::new();
    if let Some(name) = name {
        for g in groups.iter().filter(|g| g.members.contains(&name)) {
            if g.gid != gid && !additional.contains(&g.gid) {
                additional.push(g.gid);
            }
        }
    }
    Ok((uid, gid, additional))
}

fn parse_id(s: &str) -> Option<u32> {
    if s.chars().all(|c| c.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Reads `<rootfs>/<relative>` with the path resolved inside `rootfs` (`RESOLVE_IN_ROOT`):
/// absolute symlinks and `..` stay within the root filesystem. `None` if it does not exist.
fn read_in_root(rootfs: &Path, relative: &str) -> Result<Option<String>, SandboxError> {
    let err = |source: std::io::Error| SandboxError::ReadRootfs {
        rootfs: rootfs.to_path_buf(),
        path: format!("/{relative}"),
        source,
    };
    let root = openat2(
        CWD,
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::empty(),
    )
    .map_err(|e| err(e.into()))?;
    let fd = match openat2(
        &root,
        relative,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    let file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.take(MAX_ACCOUNT_FILE)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn account_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    account_lines(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    account_lines(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::ErrorKind;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
broken line
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
audio:x:29:app,other
app:x:1000:
video:x:44:other, app
staff:x:50:
";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir etc");
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).expect("write passwd");
        std::fs::write(dir.path().join("etc/group"), GROUP).expect("write group");
        dir
    }

    #[test]
    fn empty_is_root() {
        let r = rootfs();
        assert_eq!(host_user_lookup(r.path(), "").expect("ok"), (0, 0, vec![]));
    }

    #[test]
    fn by_name_with_supplementary_groups() {
        let r = rootfs();
        assert_eq!(
            host_user_lookup(r.path(), "app").expect("ok"),
            (1000, 1000, vec![29, 44])
        );
        assert_eq!(
            host_user_lookup(r.path(), "daemon").expect("ok"),
            (1, 1, vec![])
        );
    }

    #[test]
    fn by_uid_known_and_unknown() {
        let r = rootfs();
        assert_eq!(
            host_user_lookup(r.path(), "1000").expect("ok"),
            (1000, 1000, vec![29, 44])
        );
        assert_eq!(
            host_user_lookup(r.path(), "4242").expect("ok"),
            (4242, 0, vec![])
        );
    }

    #[test]
    fn with_explicit_group() {
        let r = rootfs();
        assert_eq!(
            host_user_lookup(r.path(), "app:staff").expect("ok"),
            (1000, 50, vec![29, 44])
        );
        assert_eq!(
            host_user_lookup(r.path(), "app:audio").expect("ok"),
            (1000, 29, vec![44])
        );
        assert_eq!(
            host_user_lookup(r.path(), "4242:4343").expect("ok"),
            (4242, 4343, vec![])
        );
        assert_eq!(
            host_user_lookup(r.path(), "nobody:0").expect("ok"),
            (65534, 0, vec![])
        );
    }

    #[test]
    fn unknown_names_are_invalid_arguments() {
        let r = rootfs();
        let e = host_user_lookup(r.path(), "ghost").expect_err("unknown user");
        assert!(matches!(e, SandboxError::UnknownUser { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = host_user_lookup(r.path(), "app:ghosts").expect_err("unknown group");
        assert!(matches!(e, SandboxError::UnknownGroup { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        for bad in [":", "app:", ":0", "a:b:c"] {
            let e = host_user_lookup(r.path(), bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn missing_files_allow_numeric_ids_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            host_user_lookup(dir.path(), "12:34").expect("ok"),
            (12, 34, vec![])
        );
        assert!(host_user_lookup(dir.path(), "app").is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        // An image whose /etc/passwd is an absolute symlink must not read the host's file.
        let host = tempfile::tempdir().expect("tempdir");
        let host_passwd = host.path().join("passwd");
        std::fs::write(&host_passwd, "hostonly:x:7:7::/:/bin/sh\n").expect("write");
        let r = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(r.path().join("etc")).expect("mkdir");
        std::os::unix::fs::symlink(&host_passwd, r.path().join("etc/passwd")).expect("symlink");
        let e = host_user_lookup(r.path(), "hostonly").expect_err("host file must stay invisible");
        assert!(matches!(e, SandboxError::UnknownUser { .. }), "{e}");

        // The same absolute link resolves fine when its target exists inside the rootfs.
        let inside = r
            .path()
            .join(host_passwd.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(inside.parent().expect("parent")).expect("mkdir");
        std::fs::write(&inside, "imageuser:x:9:9::/:/bin/sh\n").expect("write");
        assert_eq!(
            host_user_lookup(r.path(), "imageuser").expect("ok"),
            (9, 9, vec![])
        );

        // `..` cannot climb out either.
        std::fs::remove_file(r.path().join("etc/passwd")).expect("rm");
        std::os::unix::fs::symlink(
            "../../../../../../../../etc/passwd",
            r.path().join("etc/passwd"),
        )
        .expect("symlink");
        let e = host_user_lookup(r.path(), "root").expect_err("the link loops inside the rootfs");
        assert!(matches!(e, SandboxError::ReadRootfs { .. }), "{e}");
    }
}
