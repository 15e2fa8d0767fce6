//! The default seccomp profile: the one place that decides which system calls a Strata
//! container may make.
//!
//! It follows Docker's default profile: every call is refused with `EPERM` unless allowed, the
//! large allow list covers what ordinary programs use, and the calls Docker allows only with a
//! capability are reduced to what Strata's capability sets can contain (build steps get
//! Docker's default set, function instances nothing or a runtime-declared subset of it; none
//! includes `SYS_ADMIN`, `SYS_PTRACE`, `SYS_MODULE`, `SYS_TIME`, `SYS_BOOT`, ...). On top of
//! Docker's choices:
//!
//! - `ptrace`, `process_vm_readv` and `process_vm_writev` are refused (Docker allows them on
//!   kernels ≥ 4.8). Function code shares its uid with the strata-init agent, and ptrace would
//!   let it rewrite the agent's memory (timeouts, log caps, the Runtime API); debuggers and
//!   `strace` are not a use case of build steps or functions.
//! - `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with `ENOSYS`, as on a
//!   kernel built without io_uring: io_uring has been a steady source of kernel privilege
//!   escalations, and its users (libuv, liburing, Tokio's io-uring backends) fall back to
//!   ordinary calls when it is missing.
//! - `name_to_handle_at` is refused like its dangerous partner `open_by_handle_at`.
//! - A few calls newer than Docker's list that are as harmless as their older forms
//!   (`fchmodat2`, `futex_wait`, `mseal`, ...) are allowed.
//!
//! `clone` is allowed only without namespace flags (Docker's rule masking the `CLONE_NEW*`
//! bits), `clone3` fails with `ENOSYS` — its flags live in memory a filter cannot read — so
//! glibc falls back to `clone`, `personality` is limited to the values Docker allows, and
//! `socket` refuses `AF_VSOCK`.
//!
//! Unlike Docker's, the profile lists only the host's native architecture ([`SeccompArch`]): a
//! process that makes a 32-bit (`int 0x80`) or x32 system call on x86_64, or an AArch32 one on
//! arm64, is killed with `SIGSYS`. The allow list keeps Docker's names of 32-bit-only calls
//! (`chown32`, `mmap2`, `socketcall`, ...); without their architectures they match nothing.
//!
//! Names a runtime's libseccomp does not know are skipped by runc, and runc answers `ENOSYS`
//! for calls newer than any it knows, so the profile stays valid on older hosts.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The seccomp filter a container runs under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// Strata's default profile ([`default_seccomp_profile`]).
    #[default]
    Default,
    /// No filter at all (`linux.seccomp` absent from the config).
    Unconfined,
}

/// Architecture family of the host, which decides the profile's architecture list and its few
/// architecture-specific calls.
///
/// The profile lists the native architecture only. A system call made through another ABI of
/// the same CPU — 32-bit x86 (`int 0x80`) or x32 on x86_64, AArch32 on arm64 — then matches no
/// listed architecture, and libseccomp's bad-architecture action kills the process with
/// `SIGSYS`. Strata's runtimes are 64-bit; the compatibility ABIs are kernel attack surface of
/// their own, and every extra architecture makes libseccomp compile the whole allow list again
/// at each container start (`scripts/coldstart-phases` measures it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompArch {
    /// x86_64 hosts: native (64-bit) system calls only.
    X86_64,
    /// arm64 hosts: native (64-bit) system calls only.
    Aarch64,
    /// Anything else: the native architecture only, no architecture-specific calls.
    Other,
}

impl SeccompArch {
    /// The architecture this binary was built for.
    pub fn host() -> SeccompArch {
        if cfg!(target_arch = "x86_64") {
            SeccompArch::X86_64
        } else if cfg!(target_arch = "aarch64") {
            SeccompArch::Aarch64
        } else {
            SeccompArch::Other
        }
    }

    fn architectures(self) -> &'static [&'static str] {
        match self {
            SeccompArch::X86_64 => &["SCMP_ARCH_X86_64"],
            SeccompArch::Aarch64 => &["SCMP_ARCH_AARCH64"],
            SeccompArch::Other => &[],
        }
    }

    fn extra_calls(self) -> &'static [&'static str] {
        match self {
            SeccompArch::X86_64 => &["arch_prctl", "modify_ldt"],
            SeccompArch::Aarch64 => &[
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ],
            SeccompArch::Other => &[],
        }
    }
}

/// `EPERM`: what a refused call returns.
const EPERM: u32 = 1;
/// `ENOSYS`: "not implemented", which callers treat as an old kernel and fall back.
const ENOSYS: u32 = 38;
/// `AF_VSOCK`, refused as a socket family (host ↔ VM sockets).
const AF_VSOCK: u64 = 40;
/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`: `clone` is allowed when none of these bits is set.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// `personality` values allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32 | UNAME26`, and `0xffffffff` (query the current persona).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Allowed unconditionally: Docker's default allow list without `ptrace`, `io_uring_*` and
/// `name_to_handle_at`, plus `chroot` (every Strata capability set that can reach a container
/// may hold `SYS_CHROOT`, and the kernel still checks it) and calls newer than Docker's list.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "chroot",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Calls that answer `ENOSYS` instead of `EPERM`, so callers fall back as on an older kernel.
const NOT_IMPLEMENTED: &[&str] = &[
    "clone3",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
];

/// Calls the profile must never allow, whatever the list above says: escapes, kernel state,
/// other namespaces, kernel attack surface. Checked by the tests.
#[cfg(test)]
const NEVER_ALLOWED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_settime",
    "clock_settime64",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setdomainname",
    "sethostname",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "vhangup",
];

/// Strata's default seccomp profile for `arch`, as the OCI `linux.seccomp` object.
pub fn default_seccomp_profile(arch: SeccompArch) -> Value {
    let mut allowed: Vec<&str> = ALLOWED.iter().chain(arch.extra_calls()).copied().collect();
    allowed.sort_unstable();
    let mut syscalls = vec![
        json!({ "names": allowed, "action": "SCMP_ACT_ALLOW" }),
        json!({
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE" }],
        }),
    ];
    for value in PERSONALITIES {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": value, "op": "SCMP_CMP_EQ" }],
        }));
    }
    syscalls.push(json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{
            "index": 0,
            "value": CLONE_NAMESPACE_FLAGS,
            "valueTwo": 0,
            "op": "SCMP_CMP_MASKED_EQ",
        }],
    }));
    syscalls.push(json!({
        "names": NOT_IMPLEMENTED,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": ENOSYS,
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": arch.architectures(),
        "syscalls": syscalls,
    })
}

/// The `linux.seccomp` object for a plan's choice on this host, `None` when unconfined.
pub(crate) fn seccomp_section(seccomp: Seccomp) -> Option<Value> {
    match seccomp {
        Seccomp::Default => Some(default_seccomp_profile(SeccompArch::host())),
        Seccomp::Unconfined => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names the profile lets through (unconditionally or with an argument rule).
    fn allowed_names(profile: &Value) -> Vec<String> {
        profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().expect("names").clone())
            .map(|n| n.as_str().expect("name").to_string())
            .collect()
    }

    #[test]
    fn dangerous_calls_are_never_allowed() {
        for arch in [
            SeccompArch::X86_64,
            SeccompArch::Aarch64,
            SeccompArch::Other,
        ] {
            let allowed = allowed_names(&default_seccomp_profile(arch));
            for bad in NEVER_ALLOWED {
                assert!(
                    !allowed.iter().any(|a| a == bad),
                    "{bad} is allowed on {arch:?}"
                );
            }
        }
    }

    #[test]
    fn refuses_by_default_with_eperm() {
        let p = default_seccomp_profile(SeccompArch::X86_64);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        // The native architecture only: 32-bit and x32 calls match no listed architecture and
        // are killed by libseccomp's bad-architecture action.
        assert_eq!(p["architectures"], json!(["SCMP_ARCH_X86_64"]));
        let arm = default_seccomp_profile(SeccompArch::Aarch64);
        assert_eq!(arm["architectures"], json!(["SCMP_ARCH_AARCH64"]));
        assert_eq!(
            default_seccomp_profile(SeccompArch::Other)["architectures"],
            json!([])
        );
        let arm_allowed = allowed_names(&arm);
        assert!(arm_allowed.iter().any(|n| n == "set_tls"));
        assert!(!arm_allowed.iter().any(|n| n == "arch_prctl"));
    }

    #[test]
    fn ordinary_calls_are_allowed_and_the_list_has_no_duplicates() {
        let allowed = allowed_names(&default_seccomp_profile(SeccompArch::X86_64));
        for needed in [
            "read",
            "write",
            "openat",
            "execve",
            "fork",
            "vfork",
            "wait4",
            "mmap",
            "futex",
            "epoll_wait",
            "socket",
            "connect",
            "clone",
            "arch_prctl",
            "chroot",
            "rseq",
        ] {
            assert!(allowed.iter().any(|a| a == needed), "{needed} is refused");
        }
        let mut sorted = ALLOWED.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALLOWED.len(), "duplicate names in ALLOWED");
    }

    #[test]
    fn clone_without_namespaces_and_clone3_as_enosys() {
        let p = default_seccomp_profile(SeccompArch::X86_64);
        let rules = p["syscalls"].as_array().expect("syscalls");
        let clone = rules
            .iter()
            .find(|r| r["names"] == json!(["clone"]))
            .expect("clone rule");
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["value"], 2_114_060_288u64);
        let enosys = rules
            .iter()
            .find(|r| r["errnoRet"] == 38)
            .expect("ENOSYS rule");
        assert!(enosys["names"]
            .as_array()
            .expect("names")
            .contains(&json!("clone3")));
    }

    #[test]
    fn unconfined_has_no_section() {
        assert!(seccomp_section(Seccomp::Unconfined).is_none());
        assert!(seccomp_section(Seccomp::Default).is_some());
        assert_eq!(Seccomp::default(), Seccomp::Default);
    }
}
