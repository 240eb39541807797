//! The sandbox's seccomp profile: an allowlist built in code (R7, DESIGN §3).
//!
//! **Owns**: which system calls a sandbox may make, with which arguments, and which errno each
//! refusal returns. **Must not**: depend on the host (the profile is the same everywhere except
//! for the architecture list) or be weakened outside tests (see `Isolation::seccomp`).
//!
//! # Errnos, chosen deliberately
//!
//! | refusal | errno | why |
//! |---|---|---|
//! | a call not on the allowlist (the default action) | `ENOSYS` | looks like an older kernel, so libc and runtimes fall back to an older call instead of failing hard (`faccessat2`→`faccessat`, `fchmodat2`, ...) |
//! | `clone3` | `ENOSYS` | its flags live in memory seccomp cannot read; `ENOSYS` makes glibc fall back to `clone`, whose flags are checked |
//! | user/any namespace creation: `clone`/`unshare` with a `CLONE_NEW*` flag, `setns` | `EPERM` | a policy refusal, what a program expects when it lacks the privilege |
//! | mount family, `bpf`, `perf_event_open`, `userfaultfd`, keyrings, `io_uring_*`, `kexec_*`, modules, `open_by_handle_at`, `process_vm_*`, `ptrace`, `mknod` of a device node, clock/`reboot`/swap/quota/`acct` | `EPERM` | same |
//! | `socket` with a family other than AF_UNIX/AF_INET/AF_INET6/AF_NETLINK (AF_PACKET, AF_ALG, AF_VSOCK, ...) | `EAFNOSUPPORT` | what the kernel says for an unbuilt family, handled gracefully by socket libraries |
//! | `socket(AF_NETLINK, _, p)` with `p != NETLINK_ROUTE` | `EPROTONOSUPPORT` | same, for a netlink protocol |
//!
//! Explicitly denied calls get a rule of their own so the errno is stated, not left to the
//! default. Argument rules compare whole 64-bit registers: a caller that sets high bits to smuggle
//! a value past a rule matches no allow rule and is refused (fail closed).
//!
//! # Architectures
//!
//! x86_64 hosts list only `SCMP_ARCH_X86_64`: 32-bit (`int 0x80`) calls fail the architecture
//! check, and libseccomp refuses x32 system call numbers (bit 30 set) in an x86_64-only filter.
//! aarch64 hosts list `SCMP_ARCH_AARCH64`. Names that do not exist on an architecture (`open`,
//! `fork`, ... on aarch64) are skipped by libseccomp when the filter is compiled.
//!
//! # Devices
//!
//! `mknod`/`mknodat` stay allowed for FIFOs, sockets and regular files (`mkfifo` is ordinary
//! userland); character and block devices are refused here with `EPERM` and also lack
//! `CAP_MKNOD`, so both layers must fail for a device node to appear.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// `errno` values used by the profile (Linux, identical on x86_64 and aarch64).
pub mod errno {
    pub const EPERM: u32 = libc::EPERM as u32;
    pub const ENOSYS: u32 = libc::ENOSYS as u32;
    pub const EAFNOSUPPORT: u32 = libc::EAFNOSUPPORT as u32;
    pub const EPROTONOSUPPORT: u32 = libc::EPROTONOSUPPORT as u32;
}

/// System calls an ordinary Linux userland needs (shells, package managers, language runtimes,
/// servers). `clone`, `unshare`, `socket`, `mknod`, `mknodat` and `personality` are absent on
/// purpose: they are allowed only with the argument rules below.
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
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
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "membarrier",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
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
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
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
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
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
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
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
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// Calls refused with `EPERM` by a rule of their own (see the module table).
pub const DENIED_EPERM: &[&str] = &[
    // mount family
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "chroot",
    // kernel attack surface
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // host control
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "vhangup",
    "iopl",
    "ioperm",
    // reaching other processes or the host's files by handle
    "open_by_handle_at",
    "name_to_handle_at",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "kcmp",
    "pidfd_getfd",
    "setns",
];

/// Flags of `clone`/`unshare` that create a namespace. `CLONE_NEWTIME` (0x80) overlaps the exit
/// signal byte of `clone`'s flags, so it is checked for `unshare` only.
const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];
const CLONE_NEWTIME: u64 = 0x80;

const AF_UNIX: u64 = libc::AF_UNIX as u64;
const AF_INET: u64 = libc::AF_INET as u64;
const AF_INET6: u64 = libc::AF_INET6 as u64;
const AF_NETLINK: u64 = libc::AF_NETLINK as u64;
const NETLINK_ROUTE: u64 = libc::NETLINK_ROUTE as u64;

/// `personality` values allowed (as in the usual container profiles): query, PER_LINUX,
/// UNAME26, PER_LINUX32, and both with ADDR_NO_RANDOMIZE is not among them.
const PERSONALITY_ALLOWED: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn rule(names: &[&str], action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| (*n).to_owned()).collect());
    s.set_action(action);
    s.set_errno_ret(errno);
    s
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    // Every field has a default: building cannot fail.
    b.build().expect("LinuxSeccompArg fields all set")
}

fn with_args(mut s: LinuxSyscall, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    s.set_args(Some(args));
    s
}

fn allow_if(names: &[&str], args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    with_args(rule(names, LinuxSeccompAction::ScmpActAllow, None), args)
}

fn deny_if(names: &[&str], errno: u32, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    with_args(
        rule(names, LinuxSeccompAction::ScmpActErrno, Some(errno)),
        args,
    )
}

/// `(arg & mask) == value`.
fn masked(index: usize, mask: u64, value: u64) -> LinuxSeccompArg {
    // OCI: for SCMP_CMP_MASKED_EQ `value` is the mask and `valueTwo` the datum.
    arg(
        index,
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        mask,
        Some(value),
    )
}

fn eq(index: usize, value: u64) -> LinuxSeccompArg {
    arg(index, LinuxSeccompOperator::ScmpCmpEq, value, None)
}

/// The architectures the profile names for the host it is built on.
pub fn host_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64]
    } else {
        vec![Arch::ScmpArchX86_64]
    }
}

/// The sandbox profile for this host's architecture.
pub fn profile() -> LinuxSeccomp {
    profile_for(host_architectures())
}

/// The sandbox profile for the given architectures.
pub fn profile_for(architectures: Vec<Arch>) -> LinuxSeccomp {
    let mut rules = vec![
        rule(ALLOWED, LinuxSeccompAction::ScmpActAllow, None),
        rule(
            DENIED_EPERM,
            LinuxSeccompAction::ScmpActErrno,
            Some(errno::EPERM),
        ),
        rule(
            &["clone3"],
            LinuxSeccompAction::ScmpActErrno,
            Some(errno::ENOSYS),
        ),
    ];

    // clone: allowed without namespace flags; each namespace flag refused with EPERM.
    let clone_mask: u64 = CLONE_NS_FLAGS.iter().fold(0, |m, f| m | f);
    rules.push(allow_if(&["clone"], vec![masked(0, clone_mask, 0)]));
    for &flag in CLONE_NS_FLAGS {
        rules.push(deny_if(
            &["clone"],
            errno::EPERM,
            vec![masked(0, flag, flag)],
        ));
    }
    // unshare: the same, plus CLONE_NEWTIME (no exit-signal byte here).
    let unshare_mask = clone_mask | CLONE_NEWTIME;
    rules.push(allow_if(&["unshare"], vec![masked(0, unshare_mask, 0)]));
    for &flag in CLONE_NS_FLAGS.iter().chain([&CLONE_NEWTIME]) {
        rules.push(deny_if(
            &["unshare"],
            errno::EPERM,
            vec![masked(0, flag, flag)],
        ));
    }

    // socket(domain, type, protocol): four families; netlink only for NETLINK_ROUTE.
    for family in [AF_UNIX, AF_INET, AF_INET6] {
        rules.push(allow_if(&["socket"], vec![eq(0, family)]));
    }
    rules.push(allow_if(
        &["socket"],
        vec![eq(0, AF_NETLINK), eq(2, NETLINK_ROUTE)],
    ));
    rules.push(deny_if(
        &["socket"],
        errno::EPROTONOSUPPORT,
        vec![
            eq(0, AF_NETLINK),
            arg(2, LinuxSeccompOperator::ScmpCmpNe, NETLINK_ROUTE, None),
        ],
    ));
    for family in (0..AF_NETLINK).filter(|f| ![AF_UNIX, AF_INET, AF_INET6].contains(f)) {
        rules.push(deny_if(
            &["socket"],
            errno::EAFNOSUPPORT,
            vec![eq(0, family)],
        ));
    }
    rules.push(deny_if(
        &["socket"],
        errno::EAFNOSUPPORT,
        vec![arg(0, LinuxSeccompOperator::ScmpCmpGt, AF_NETLINK, None)],
    ));

    // mknod(path, mode, dev) / mknodat(dirfd, path, mode, dev): no device nodes.
    let s_ifmt = libc::S_IFMT as u64;
    for (name, mode_arg) in [("mknod", 1), ("mknodat", 2)] {
        for kind in [0, libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK] {
            rules.push(allow_if(
                &[name],
                vec![masked(mode_arg, s_ifmt, kind as u64)],
            ));
        }
        for kind in [libc::S_IFCHR, libc::S_IFBLK] {
            rules.push(deny_if(
                &[name],
                errno::EPERM,
                vec![masked(mode_arg, s_ifmt, kind as u64)],
            ));
        }
    }

    for &value in PERSONALITY_ALLOWED {
        rules.push(allow_if(&["personality"], vec![eq(0, value)]));
    }

    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(LinuxSeccompAction::ScmpActErrno);
    seccomp.set_default_errno_ret(Some(errno::ENOSYS));
    seccomp.set_architectures(Some(architectures));
    seccomp.set_syscalls(Some(rules));
    seccomp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .as_ref()
            .expect("rules")
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn unconditional(p: &LinuxSeccomp, name: &str) -> Option<(LinuxSeccompAction, Option<u32>)> {
        rules_for(p, name)
            .into_iter()
            .find(|s| s.args().as_ref().is_none_or(|a| a.is_empty()))
            .map(|s| (s.action(), s.errno_ret()))
    }

    #[test]
    fn default_is_enosys_and_arch_is_x86_64_only() {
        let p = profile_for(vec![Arch::ScmpArchX86_64]);
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(errno::ENOSYS));
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64][..])
        );
    }

    #[test]
    fn design_denials_are_eperm_and_never_allowed() {
        let p = profile();
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsmount",
            "fsconfig",
            "fspick",
            "mount_setattr",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
            "setns",
        ] {
            assert_eq!(
                unconditional(&p, name),
                Some((LinuxSeccompAction::ScmpActErrno, Some(errno::EPERM))),
                "{name}"
            );
            assert!(
                rules_for(&p, name)
                    .iter()
                    .all(|r| r.action() != LinuxSeccompAction::ScmpActAllow),
                "{name} allowed somewhere"
            );
        }
        assert_eq!(
            unconditional(&p, "clone3"),
            Some((LinuxSeccompAction::ScmpActErrno, Some(errno::ENOSYS)))
        );
    }

    #[test]
    fn lists_do_not_overlap_and_have_no_duplicates() {
        let allowed: HashSet<_> = ALLOWED.iter().collect();
        assert_eq!(allowed.len(), ALLOWED.len(), "duplicate in ALLOWED");
        let denied: HashSet<_> = DENIED_EPERM.iter().collect();
        assert_eq!(
            denied.len(),
            DENIED_EPERM.len(),
            "duplicate in DENIED_EPERM"
        );
        assert!(allowed.is_disjoint(&denied));
        for conditional in [
            "clone",
            "clone3",
            "unshare",
            "socket",
            "mknod",
            "mknodat",
            "personality",
        ] {
            assert!(
                !allowed.contains(&conditional),
                "{conditional} allowed unconditionally"
            );
        }
    }

    #[test]
    fn clone_allowed_only_without_namespace_flags() {
        let p = profile();
        let rules = rules_for(&p, "clone");
        let allow: Vec<_> = rules
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
            .collect();
        assert_eq!(allow.len(), 1);
        let a = &allow[0].args().as_ref().expect("args")[0];
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            a.value() & libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWUSER as u64
        );
        assert_eq!(a.value_two(), Some(0));
        // CLONE_NEWUSER has its own EPERM rule.
        assert!(rules.iter().any(|r| {
            r.errno_ret() == Some(errno::EPERM)
                && r.args().as_ref().is_some_and(|a| {
                    a[0].value() == libc::CLONE_NEWUSER as u64
                        && a[0].value_two() == Some(libc::CLONE_NEWUSER as u64)
                })
        }));
    }

    #[test]
    fn socket_families() {
        let p = profile();
        let rules = rules_for(&p, "socket");
        let allowed_families: Vec<u64> = rules
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
            .map(|r| r.args().as_ref().expect("args")[0].value())
            .collect();
        assert_eq!(allowed_families, vec![1, 2, 10, 16]);
        let netlink = rules
            .iter()
            .find(|r| {
                r.action() == LinuxSeccompAction::ScmpActAllow
                    && r.args().as_ref().expect("args")[0].value() == AF_NETLINK
            })
            .expect("netlink rule");
        let args = netlink.args().as_ref().expect("args");
        assert_eq!((args[1].index(), args[1].value()), (2, NETLINK_ROUTE));
        // AF_PACKET (17) and AF_ALG (38) fall under the `> AF_NETLINK` refusal.
        assert!(rules.iter().any(|r| {
            r.errno_ret() == Some(errno::EAFNOSUPPORT)
                && r.args().as_ref().is_some_and(|a| {
                    a[0].op() == LinuxSeccompOperator::ScmpCmpGt && a[0].value() == AF_NETLINK
                })
        }));
    }

    #[test]
    fn serialises_with_oci_field_names() {
        let json = serde_json::to_value(profile()).expect("json");
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], libc::ENOSYS);
        let rules = json["syscalls"].as_array().expect("array");
        let masked = rules
            .iter()
            .flat_map(|r| r["args"].as_array().into_iter().flatten())
            .find(|a| a["op"] == "SCMP_CMP_MASKED_EQ")
            .expect("a masked rule");
        assert!(masked.get("valueTwo").is_some(), "{masked}");
    }
}
