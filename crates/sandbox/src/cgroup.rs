//! Reading, resizing and removing container cgroups, on cgroup v1, v2 and hybrid hosts.
//!
//! The runtime creates cgroups and applies a container's first limits. Strata reads OOM
//! counters and memory usage, removes cgroups a crash left behind, and resizes a running
//! container's limits by writing its cgroup files directly ([`set_limits`]): a warm instance
//! takes on its function's limits in microseconds, without spawning `runc update`.
//!
//! Each controller is looked up on its own: a v1 hierarchy that carries it wins (hybrid hosts
//! keep `memory`, `cpu` and `pids` on v1 and an empty v2 mount beside them); otherwise the
//! unified (v2) hierarchy holds it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::SandboxError;
use crate::mount::unescape_mountinfo;
use crate::spec::{limits_problem, Limits, CPU_PERIOD_US};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub(crate) mount_point: PathBuf,
    /// `true` for the unified (v2) hierarchy.
    pub(crate) unified: bool,
    /// v1 controllers of the hierarchy (`memory`, `cpu`, `name=systemd`...).
    pub(crate) controllers: Vec<String>,
}

pub(crate) fn hierarchies() -> Result<Vec<Hierarchy>, SandboxError> {
    let path = Path::new("/proc/self/mountinfo");
    let table = std::fs::read_to_string(path).map_err(|source| SandboxError::ReadHost {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hierarchies_in(&table))
}

pub(crate) fn hierarchies_in(mountinfo: &str) -> Vec<Hierarchy> {
    let mut found: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let super_options = right.nth(1).unwrap_or_default();
        let unified = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if unified {
            Vec::new()
        } else {
            super_options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("release_agent"))
                .map(String::from)
                .collect()
        };
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        // A hierarchy mounted twice (bind mounts) is cleaned once.
        if !found.iter().any(|h| h.mount_point == mount_point) {
            found.push(Hierarchy {
                mount_point,
                unified,
                controllers,
            });
        }
    }
    found
}

/// The cgroup hierarchies, read from the mount table once per process: they do not change
/// while Strata runs, and the mount table of a busy host is long.
fn hierarchies_cached() -> Result<&'static [Hierarchy], SandboxError> {
    static CACHE: OnceLock<Vec<Hierarchy>> = OnceLock::new();
    if let Some(hs) = CACHE.get() {
        return Ok(hs);
    }
    let hs = hierarchies()?;
    Ok(CACHE.get_or_init(|| hs))
}

/// The directory of the cgroup at `rel` that `controller` (`memory`, `cpu`, `pids`) limits,
/// and whether it is a v2 (unified) cgroup.
fn controller_dir(hs: &[Hierarchy], controller: &str, rel: &str) -> Option<(PathBuf, bool)> {
    hs.iter()
        .find(|h| !h.unified && h.controllers.iter().any(|c| c == controller))
        .or_else(|| hs.iter().find(|h| h.unified))
        .map(|h| (h.mount_point.join(rel), h.unified))
}

/// `cgroups_path` without its leading `/`, if it names a cgroup below the root safely.
fn relative_cgroup(cgroups_path: &str) -> Result<&str, SandboxError> {
    let rel = cgroups_path.trim_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(SandboxError::InvalidSpec {
            id: cgroups_path.to_string(),
            reason: "a cgroup path looks like /<parent>/<id>, without empty, . or .. components"
                .to_string(),
        });
    }
    Ok(rel)
}

/// Resizes a running container's cgroup to `limits`, writing its cgroup files directly (no
/// process is spawned; a call takes some microseconds).
///
/// `cgroups_path` is the container's [`ContainerSpec::cgroups_path`], e.g. `/strata/<id>`.
/// The result matches what [`oci_config`] would have asked the runtime for: `None` makes a
/// resource unlimited, and memory limits keep the container from swapping.
///
/// - cgroup v1: `memory.limit_in_bytes` and, when swap accounting exists,
///   `memory.memsw.limit_in_bytes` (set to the same value; the kernel wants memory ≤
///   memory+swap at every step, so a raise writes memsw first and a cut writes it last);
///   `cpu.cfs_period_us` and `cpu.cfs_quota_us`; `pids.max`.
/// - cgroup v2: `memory.max`, `memory.swap.max` (`0`, when it exists), `cpu.max`
///   (`"<quota> <period>"`), `pids.max`.
///
/// Cutting memory below current usage makes the kernel reclaim; v1 fails with `EBUSY` if it
/// cannot, v2 OOM-kills inside the container. The runtime's own record of the container's
/// limits is not updated, so do not mix this with `runc update`. A write that fails stops
/// the resize there, with the earlier controllers already resized.
///
/// [`ContainerSpec::cgroups_path`]: crate::ContainerSpec::cgroups_path
/// [`oci_config`]: crate::oci_config
pub fn set_limits(cgroups_path: &str, limits: &Limits) -> Result<(), SandboxError> {
    let rel = relative_cgroup(cgroups_path)?;
    if let Some(reason) = limits_problem(limits) {
        return Err(SandboxError::InvalidSpec {
            id: cgroups_path.to_string(),
            reason,
        });
    }
    let hs = hierarchies_cached()?;
    let dir = |controller: &str| {
        controller_dir(hs, controller, rel).ok_or_else(|| SandboxError::WriteCgroup {
            path: PathBuf::from(cgroups_path),
            value: String::new(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no cgroup hierarchy carries the {controller} controller"),
            ),
        })
    };

    let (memory, v2) = dir("memory")?;
    if v2 {
        let value = limits
            .memory_bytes
            .map_or_else(|| "max".to_string(), |b| b.to_string());
        write_cgroup(&memory.join("memory.max"), &value)?;
        let swap = if limits.memory_bytes.is_some() {
            "0"
        } else {
            "max"
        };
        write_optional(&memory.join("memory.swap.max"), swap)?;
    } else {
        let value = limits
            .memory_bytes
            .map_or_else(|| "-1".to_string(), |b| b.to_string());
        let mem = memory.join("memory.limit_in_bytes");
        let memsw = memory.join("memory.memsw.limit_in_bytes");
        // A raise writes memory+swap first, a cut writes it last.
        let current = read_u64(&mem);
        let raising = current.is_some_and(|c| limits.memory_bytes.unwrap_or(u64::MAX) >= c);
        if raising {
            write_optional(&memsw, &value)?;
            write_cgroup(&mem, &value)?;
        } else {
            write_cgroup(&mem, &value)?;
            write_optional(&memsw, &value)?;
        }
    }

    let quota = limits
        .cpu_millis
        .map(|m| u64::from(m) * CPU_PERIOD_US / 1000);
    let (cpu, v2) = dir("cpu")?;
    if v2 {
        let quota = quota.map_or_else(|| "max".to_string(), |q| q.to_string());
        write_cgroup(&cpu.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
    } else {
        write_cgroup(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        let quota = quota.map_or_else(|| "-1".to_string(), |q| q.to_string());
        write_cgroup(&cpu.join("cpu.cfs_quota_us"), &quota)?;
    }

    let (pids, _) = dir("pids")?;
    let value = limits
        .pids
        .map_or_else(|| "max".to_string(), |p| p.to_string());
    write_cgroup(&pids.join("pids.max"), &value)
}

/// The memory a container's cgroup charges right now, in bytes (v1
/// `memory.usage_in_bytes`, v2 `memory.current`); `None` if it cannot be read.
pub fn memory_usage(cgroups_path: &str) -> Option<u64> {
    let rel = relative_cgroup(cgroups_path).ok()?;
    let hs = hierarchies_cached().ok()?;
    let (dir, v2) = controller_dir(hs, "memory", rel)?;
    read_u64(&dir.join(if v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    }))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_cgroup(path: &Path, value: &str) -> Result<(), SandboxError> {
    std::fs::write(path, value).map_err(|source| SandboxError::WriteCgroup {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Writes a file that only exists with some kernel options (swap accounting); a missing one
/// is skipped, but only when the cgroup itself exists.
fn write_optional(path: &Path, value: &str) -> Result<(), SandboxError> {
    match write_cgroup(path, value) {
        Err(SandboxError::WriteCgroup { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound
                && path.parent().is_some_and(Path::is_dir) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Best effort: whether the OOM killer struck in the cgroup at `cgroups_path` (relative to each
/// hierarchy's root, e.g. `/strata/<id>`). Reads v1 `memory.oom_control` when the memory
/// controller is on v1, else v2 `memory.events`. `false` if nothing can be read.
pub(crate) fn oom_killed(cgroups_path: &str) -> bool {
    let Ok(hs) = hierarchies() else { return false };
    let rel = cgroups_path.trim_start_matches('/');
    if let Some(h) = hs
        .iter()
        .find(|h| !h.unified && h.controllers.iter().any(|c| c == "memory"))
    {
        let text = std::fs::read_to_string(h.mount_point.join(rel).join("memory.oom_control"));
        return text.is_ok_and(|t| counter(&t, "oom_kill") > 0 || counter(&t, "under_oom") > 0);
    }
    hs.iter().filter(|h| h.unified).any(|h| {
        std::fs::read_to_string(h.mount_point.join(rel).join("memory.events"))
            .is_ok_and(|t| counter(&t, "oom_kill") > 0)
    })
}

/// The value of a `key value` line in a cgroup stats file.
fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Removes cgroups left behind under `parent` whose name starts with `prefix` and that hold no
/// processes, in every mounted hierarchy (v1: `/sys/fs/cgroup/<ctrl>/<parent>/<id>`; v2:
/// `/sys/fs/cgroup/<parent>/<id>`). Only `rmdir`: a cgroup with processes stays. Returns how
/// many cgroup directories were removed.
pub fn cleanup_cgroups(parent: &str, prefix: &str) -> Result<usize, SandboxError> {
    let parent = parent.trim_matches('/');
    if prefix.is_empty() || prefix.contains('/') || parent.split('/').any(|c| c == "..") {
        return Err(SandboxError::InvalidSpec {
            id: prefix.to_string(),
            reason:
                "cgroup cleanup needs a non-empty id prefix without '/' and a parent without '..'"
                    .to_string(),
        });
    }
    let mut removed = 0;
    for h in hierarchies()? {
        let dir = h.mount_point.join(parent);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && name.to_string_lossy().starts_with(prefix) {
                removed += remove_if_empty(&entry.path())?;
            }
        }
    }
    Ok(removed)
}

/// Removes an empty cgroup and its empty children, deepest first.
fn remove_if_empty(dir: &Path) -> Result<usize, SandboxError> {
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                removed += remove_if_empty(&entry.path())?;
            }
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if !procs.trim().is_empty() {
        tracing::debug!(cgroup = %dir.display(), "leaving a cgroup that still has processes");
        return Ok(removed);
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(removed + 1),
        // Gone already, or a process joined meanwhile: not ours to force.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(removed),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => Ok(removed),
        Err(source) => Err(SandboxError::RemoveCgroup {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_and_v2_hierarchies() {
        let hs = hierarchies_in(HYBRID);
        assert_eq!(hs.len(), 4);
        assert_eq!(hs[1].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(hs[1].controllers, vec!["memory"]);
        assert!(!hs[1].unified);
        assert!(hs[3].unified);
        assert!(hs[2].controllers.contains(&"name=systemd".to_string()));
        let v2 = hierarchies_in("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(v2.len(), 1);
        assert!(v2[0].unified);
    }

    #[test]
    fn reads_counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(counter(v1, "oom_kill"), 2);
        assert_eq!(counter(v1, "under_oom"), 0);
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), 1);
        assert_eq!(counter(v2, "missing"), 0);
    }

    #[test]
    fn controllers_prefer_v1_and_fall_back_to_v2() {
        let hybrid = hierarchies_in(HYBRID);
        assert_eq!(
            controller_dir(&hybrid, "memory", "strata/c"),
            Some((PathBuf::from("/sys/fs/cgroup/memory/strata/c"), false))
        );
        // pids is not on v1 in this table: the unified hierarchy carries it.
        assert_eq!(
            controller_dir(&hybrid, "pids", "strata/c"),
            Some((PathBuf::from("/sys/fs/cgroup/unified/strata/c"), true))
        );
        let v2 = hierarchies_in("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            controller_dir(&v2, "cpu", "strata/c"),
            Some((PathBuf::from("/sys/fs/cgroup/strata/c"), true))
        );
        assert_eq!(controller_dir(&[], "cpu", "strata/c"), None);
    }

    #[test]
    fn set_limits_rejects_bad_input_before_writing() {
        for bad in ["", "/", "/strata/../etc", "strata//c", "/./c"] {
            let err = set_limits(bad, &Limits::default()).expect_err(bad);
            assert_eq!(
                err.kind(),
                strata_types::ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        let zero_pids = Limits {
            pids: Some(0),
            ..Limits::default()
        };
        let err = set_limits("/strata/c", &zero_pids).expect_err("pids 0");
        assert!(err.to_string().contains("pids"), "{err}");
        assert_eq!(memory_usage("/strata/../etc"), None);
    }

    #[test]
    fn cleanup_rejects_unsafe_arguments() {
        assert!(cleanup_cgroups("strata", "").is_err());
        assert!(cleanup_cgroups("strata/..", "x").is_err());
        assert!(cleanup_cgroups("strata", "a/b").is_err());
    }
}
