//! Overlay and bind mounts, unmounting, and reading the mount table.
//!
//! Overlays use the kernel's new mount API (`fsopen("overlay")` with one `lowerdir+` per layer,
//! kernel ≥ 6.8), so a stack is not limited by the one-page option string of `mount(2)`. On
//! older kernels they fall back to `mount(2)` with a `lowerdir=a:b:c` string, and say clearly
//! when that string would not fit.
//!
//! # Filling a running container's directory: propagating mount points
//!
//! A warm instance is started before it knows its function, and its code appears at
//! `/var/task` later, without restarting it. Strata does that with mount propagation:
//!
//! 1. Before the container starts, [`make_shared_mountpoint`] bind-mounts an empty host dir
//!    onto itself and marks the mount *shared*: it becomes the only member of a new peer
//!    group, so mount events on it can propagate and nothing else's events leak in.
//! 2. The container plan lists that dir in [`ContainerSpec::slave_binds`], which
//!    [`oci_config`] turns into a bind with `rbind, rslave`: the container's `/var/task` is a
//!    *slave* of the host mount. Events flow host → container only; nothing the container
//!    mounts reaches the host.
//! 3. To specialize, [`bind_into`] mounts the code dir onto the host dir. The kernel copies
//!    that mount into every slave, so the code appears at `/var/task` in the running
//!    container, with the same flags — including read-only.
//! 4. Cleanup is [`unmount`] of each path [`mounts_under`] lists (the code mount, then the
//!    shared mount under it), after the container is deleted.
//!
//! Read-only needs care: `mount(2)` ignores `MS_RDONLY` together with `MS_BIND`, and a later
//! read-only remount changes only the host's mount, not the copies already propagated into
//! containers. So [`bind_into`] first makes a private, read-only bind in a staging dir beside
//! the target and then binds *that* onto the target: the propagated copies are born
//! read-only.
//!
//! [`ContainerSpec::slave_binds`]: crate::ContainerSpec::slave_binds
//! [`oci_config`]: crate::oci_config

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, mount, mount_bind, mount_change,
    mount_remount, move_mount, unmount as umount2, FsMountFlags, FsOpenFlags, MountAttrFlags,
    MountFlags, MountPropagationFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::SandboxError;

/// The largest `mount(2)` data string the kernel accepts (one 4 KiB page, with its NUL).
pub const CLASSIC_OPTIONS_MAX: usize = 4095;

/// Overlay features Strata turns off: layers are plain directories shared by many mounts, so
/// no inode index, no redirect or metacopy xattrs written into uppers, no xino bits.
const OVERLAY_FEATURES_OFF: &[&str] = &["index", "redirect_dir", "xino", "metacopy"];

/// Mounts an overlay at `target`. `lowers_top_first` are the lower dirs, topmost first.
/// `upper = Some((upperdir, workdir))` makes it writable; `None` makes it read-only, which needs
/// at least two lowers — a single lower is bind-mounted read-only instead.
pub fn mount_overlay(
    lowers_top_first: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), SandboxError> {
    if lowers_top_first.is_empty() {
        return Err(SandboxError::OverlayUnsupported {
            target: target.to_path_buf(),
            reason: "an overlay needs at least one lower dir".to_string(),
        });
    }
    if upper.is_none() && lowers_top_first.len() == 1 {
        return bind_readonly(&lowers_top_first[0], target);
    }
    if kernel_has_lowerdir_plus() {
        mount_overlay_fsopen(lowers_top_first, upper, target)
    } else {
        tracing::debug!(
            target_dir = %target.display(),
            "kernel older than 6.8 (no lowerdir+); mounting the overlay with mount(2)"
        );
        mount_overlay_classic(lowers_top_first, upper, target)
    }
}

/// Whether the running kernel takes overlay lower dirs one by one (`lowerdir+`, Linux 6.8).
pub fn kernel_has_lowerdir_plus() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    parse_kernel_version(&release).is_some_and(|v| v >= (6, 8))
}

fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The new mount API: one `fsconfig` call per lower dir, no length limit.
fn mount_overlay_fsopen(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), SandboxError> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| overlay_error(target, lowers.len(), e, None))?;
    let fail = |e: Errno| {
        // The kernel explains fsconfig failures in the context's message log.
        let detail = read_fs_context_log(fs.as_fd());
        overlay_error(target, lowers.len(), e, Some(detail))
    };
    for lower in lowers {
        fsconfig_set_string(&fs, "lowerdir+", lower.as_path()).map_err(fail)?;
    }
    if let Some((upperdir, workdir)) = upper {
        fsconfig_set_string(&fs, "upperdir", upperdir).map_err(fail)?;
        fsconfig_set_string(&fs, "workdir", workdir).map_err(fail)?;
    }
    for feature in OVERLAY_FEATURES_OFF {
        fsconfig_set_string(&fs, *feature, "off").map_err(fail)?;
    }
    fsconfig_set_string(&fs, "source", "overlay").map_err(fail)?;
    fsconfig_create(&fs).map_err(fail)?;
    let attrs = if upper.is_some() {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(fail)?;
    move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(fail)?;
    Ok(())
}

/// Mounts an overlay with classic `mount(2)` and all lower dirs in one option string, as
/// [`mount_overlay`] does on kernels older than 6.8. Fails with
/// [`SandboxError::OverlayUnsupported`] when the options would exceed one page or a path
/// contains `,`, `:` or `\\`.
pub fn mount_overlay_classic(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), SandboxError> {
    let data = classic_overlay_options(lowers, upper, target)?;
    let data = std::ffi::CString::new(data).map_err(|_| SandboxError::OverlayUnsupported {
        target: target.to_path_buf(),
        reason: "a layer path contains a NUL byte".to_string(),
    })?;
    let flags = if upper.is_some() {
        MountFlags::empty()
    } else {
        MountFlags::RDONLY
    };
    mount("overlay", target, "overlay", flags, data.as_c_str())
        .map_err(|e| overlay_error(target, lowers.len(), e, None))
}

/// The `mount(2)` option string of an overlay; an error if it cannot be expressed or exceeds
/// one page.
pub(crate) fn classic_overlay_options(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<String, SandboxError> {
    let unsupported = |reason: String| SandboxError::OverlayUnsupported {
        target: target.to_path_buf(),
        reason,
    };
    let text = |p: &Path| -> Result<String, SandboxError> {
        let s = p
            .to_str()
            .ok_or_else(|| unsupported(format!("path {p:?} is not UTF-8")))?;
        if s.contains([',', ':', '\\']) {
            return Err(unsupported(format!(
                "path {s:?} contains ',', ':' or '\\', which mount(2) overlay options cannot carry; \
                 use plain layer paths or a kernel ≥ 6.8"
            )));
        }
        Ok(s.to_string())
    };
    let lowerdir = lowers
        .iter()
        .map(|l| text(l))
        .collect::<Result<Vec<_>, _>>()?
        .join(":");
    let mut data = format!("lowerdir={lowerdir}");
    if let Some((upperdir, workdir)) = upper {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            text(upperdir)?,
            text(workdir)?
        ));
    }
    for feature in OVERLAY_FEATURES_OFF {
        data.push_str(&format!(",{feature}=off"));
    }
    if data.len() > CLASSIC_OPTIONS_MAX {
        return Err(unsupported(format!(
            "{} lower dirs need {} bytes of mount options but mount(2) takes at most {}; \
             use shorter layer paths, fewer layers, or a kernel ≥ 6.8 (lowerdir+)",
            lowers.len(),
            data.len(),
            CLASSIC_OPTIONS_MAX
        )));
    }
    Ok(data)
}

fn overlay_error(target: &Path, lowers: usize, e: Errno, detail: Option<String>) -> SandboxError {
    let detail = match detail {
        Some(d) if !d.is_empty() => format!(" ({d})"),
        _ => String::new(),
    };
    SandboxError::MountOverlay {
        target: target.to_path_buf(),
        lowers,
        detail,
        source: io::Error::from(e),
    }
}

/// Drains the messages the kernel attached to a filesystem context (`e overlayfs: ...`).
fn read_fs_context_log(fs: std::os::fd::BorrowedFd<'_>) -> String {
    let mut messages = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        messages.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        if messages.len() >= 8 {
            break;
        }
    }
    messages.join("; ")
}

/// Mounts a tmpfs capped at `size_bytes` at `target` (nosuid, nodev). Its pages are charged to
/// the memory cgroup of whoever writes them, so a container writing to it spends its own
/// memory limit, never the host's disk.
pub fn mount_tmpfs(target: &Path, size_bytes: u64, mode: u32) -> Result<(), SandboxError> {
    let err = |e: io::Error| SandboxError::Tmpfs {
        target: target.to_path_buf(),
        size_bytes,
        source: e,
    };
    let data = std::ffi::CString::new(format!("size={size_bytes},mode={mode:o}"))
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    mount(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|e| err(io::Error::from(e)))
}

/// Bind-mounts `source` at `target` and makes the new mount read-only. Mounts below `source`
/// are not carried along.
pub fn bind_readonly(source: &Path, target: &Path) -> Result<(), SandboxError> {
    let err = |e: Errno| SandboxError::BindMount {
        from: source.to_path_buf(),
        target: target.to_path_buf(),
        source: io::Error::from(e),
    };
    mount_bind(source, target).map_err(err)?;
    if let Err(e) = mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "") {
        // Never leave a writable bind behind.
        if let Err(u) = umount2(target, UnmountFlags::DETACH) {
            tracing::warn!(target_dir = %target.display(), error = %u, "undoing a bind mount failed");
        }
        return Err(err(e));
    }
    Ok(())
}

/// Makes `dir` a shared mount point whose later mounts propagate into containers.
///
/// Bind-mounts `dir` onto itself, makes the bind private (leaving any peer group it inherited
/// from its parent) and then shared, so it heads a new peer group of its own. A container
/// that lists `dir` in [`ContainerSpec::slave_binds`](crate::ContainerSpec::slave_binds)
/// gets a slave copy of it; whatever is later mounted on `dir` (see [`bind_into`]) appears
/// there too. Each call stacks one more mount on `dir`; [`unmount`] removes one. On failure
/// nothing is left mounted.
pub fn make_shared_mountpoint(dir: &Path) -> Result<(), SandboxError> {
    let err = |e: Errno| SandboxError::SharedMount {
        path: dir.to_path_buf(),
        source: io::Error::from(e),
    };
    mount_bind(dir, dir).map_err(err)?;
    let shared = mount_change(dir, MountPropagationFlags::PRIVATE)
        .and_then(|()| mount_change(dir, MountPropagationFlags::SHARED));
    if let Err(e) = shared {
        undo_mount(dir);
        return Err(err(e));
    }
    Ok(())
}

/// Bind-mounts `source` onto `target`, read-only if asked. Mounts below `source` are not
/// carried along.
///
/// Made for filling a [`make_shared_mountpoint`] dir under running containers: the mount
/// propagates into every container holding a slave copy of `target`, and is read-only there
/// too. To get that, `source` is first bound onto a staging dir created beside `target`
/// (`.<name>.strata-stage-<pid>-<n>`), made private (so it joins no peer group of
/// `source`'s mount) and remounted read-only if asked; that mount is then bound onto
/// `target`, and the staging mount and dir are removed. A read-only remount after the fact
/// would not reach the propagated copies. On failure nothing is left mounted.
pub fn bind_into(source: &Path, target: &Path, readonly: bool) -> Result<(), SandboxError> {
    static STAGES: AtomicU64 = AtomicU64::new(0);
    let err = |e: io::Error| SandboxError::BindInto {
        from: source.to_path_buf(),
        target: target.to_path_buf(),
        readonly,
        source: e,
    };
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the target needs a parent directory to stage the mount in",
        )));
    };
    let mut stage_name = std::ffi::OsString::from(".");
    stage_name.push(name);
    stage_name.push(format!(
        ".strata-stage-{}-{}",
        std::process::id(),
        STAGES.fetch_add(1, Ordering::Relaxed)
    ));
    let stage = parent.join(stage_name);
    std::fs::create_dir(&stage).map_err(err)?;

    let mut staged = mount_bind(source, &stage);
    if staged.is_ok() {
        staged = mount_change(&stage, MountPropagationFlags::PRIVATE);
        if staged.is_ok() && readonly {
            staged = mount_remount(&stage, MountFlags::BIND | MountFlags::RDONLY, "");
        }
        if staged.is_ok() {
            // The staging mount already has its final flags, so every copy does too.
            staged = mount_bind(&stage, target);
        }
        undo_mount(&stage);
    }
    if let Err(e) = std::fs::remove_dir(&stage) {
        tracing::warn!(stage = %stage.display(), error = %e, "removing a staging dir failed");
    }
    staged.map_err(|e| err(io::Error::from(e)))
}

/// Best effort: detaches a mount this module just made, on an error path.
fn undo_mount(target: &Path) {
    if let Err(e) = umount2(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
        tracing::warn!(target_dir = %target.display(), error = %e, "undoing a mount failed");
    }
}

/// Unmounts `target` (the topmost mount there, when several are stacked). A busy mount is
/// detached lazily; a path that is not a mount point (or does not exist) is already
/// unmounted. Unmounting a [`bind_into`] mount also unmounts its propagated copies in
/// containers that still run; unmounting a [`make_shared_mountpoint`] dir leaves their slave
/// copies in place (they just stop receiving mounts).
pub fn unmount(target: &Path) -> Result<(), SandboxError> {
    let err = |e: Errno| SandboxError::Unmount {
        target: target.to_path_buf(),
        source: io::Error::from(e),
    };
    match umount2(target, UnmountFlags::NOFOLLOW) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::BUSY) => {
            tracing::warn!(target_dir = %target.display(), "mount busy; detaching lazily");
            umount2(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

/// Mount points at or below `prefix`, from `/proc/self/mountinfo`, deepest first (and, at one
/// path, the most recent mount first), so unmounting them in order succeeds.
pub fn mounts_under(prefix: &Path) -> Result<Vec<PathBuf>, SandboxError> {
    let path = Path::new("/proc/self/mountinfo");
    let table = std::fs::read_to_string(path).map_err(|source| SandboxError::ReadHost {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(mounts_under_in(&table, prefix))
}

pub(crate) fn mounts_under_in(mountinfo: &str, prefix: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|p| p.starts_with(prefix))
        .collect();
    found.reverse();
    // Stable: among equal depths the later mount stays first.
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Undoes the octal escapes (`\040` for space, ...) of a mountinfo field.
pub(crate) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
44 22 0:39 / /tmp/x/merged rw,relatime - overlay overlay rw,lowerdir=/a
45 44 0:40 / /tmp/x/merged/proc rw - proc proc rw
46 22 0:41 / /tmp/x/with\\040space rw - tmpfs tmpfs rw
47 22 0:42 / /tmp/xy rw - tmpfs tmpfs rw
48 44 0:43 / /tmp/x/merged rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_under_is_deepest_first_and_component_wise() {
        let got = mounts_under_in(MOUNTINFO, Path::new("/tmp/x"));
        let want: Vec<PathBuf> = [
            "/tmp/x/merged/proc",
            "/tmp/x/merged",
            "/tmp/x/with space",
            "/tmp/x/merged",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        // Deepest first; the two stacked mounts at merged come out newest first; /tmp/xy is
        // not under /tmp/x.
        assert_eq!(got, want);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo("a\\040b\\134c\\011"), "a b\\c\t");
        assert_eq!(unescape_mountinfo("plain\\x"), "plain\\x");
    }

    #[test]
    fn classic_options_and_page_limit() {
        let t = Path::new("/m");
        let lowers = vec![PathBuf::from("/l/2"), PathBuf::from("/l/1")];
        let opts = classic_overlay_options(&lowers, Some((Path::new("/u"), Path::new("/w"))), t)
            .expect("fits");
        assert_eq!(
            opts,
            "lowerdir=/l/2:/l/1,upperdir=/u,workdir=/w,index=off,redirect_dir=off,xino=off,metacopy=off"
        );
        let many: Vec<PathBuf> = (0..60)
            .map(|i| PathBuf::from(format!("/var/lib/strata/layers/{i:064}")))
            .collect();
        let err = classic_overlay_options(&many, None, t).expect_err("60 long paths exceed a page");
        assert!(err.to_string().contains("at most 4095"), "{err}");
        let colon = vec![PathBuf::from("/a:b"), PathBuf::from("/c")];
        assert!(classic_overlay_options(&colon, None, t).is_err());
    }
}
