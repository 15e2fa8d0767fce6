//! Reading and removing container cgroups, on cgroup v1, v2 and hybrid hosts.
//!
//! The runtime creates and limits cgroups; Strata only reads a stopped container's OOM
//! counters and removes cgroups a crash left behind.

use std::path::{Path, PathBuf};

use crate::error::SandboxError;
use crate::mount::unescape_mountinfo;

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
    fn cleanup_rejects_unsafe_arguments() {
        assert!(cleanup_cgroups("strata", "").is_err());
        assert!(cleanup_cgroups("strata/..", "x").is_err());
        assert!(cleanup_cgroups("strata", "a/b").is_err());
    }
}
