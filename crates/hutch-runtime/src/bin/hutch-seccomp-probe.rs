//! Test helper for the system tests: makes the system calls the seccomp profile refuses and
//! prints one line `<check> <errno>` per check (`0` = the call succeeded). It runs inside test
//! containers; Hutch itself never ships or runs it.
//!
//! Usage: `hutch-seccomp-probe <check>...` or `all`; `hutch-seccomp-probe list` prints the
//! check names. Each check runs in its own forked child; a check killed by a signal prints
//! minus the signal number.
#![allow(unsafe_code)]

use std::ffi::CString;

fn errno_of(ret: libc::c_long) -> i32 {
    if ret < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

fn socket(domain: i32, typ: i32, protocol: i32) -> i32 {
    // SAFETY: socket(2) takes plain integers; the returned fd is closed below.
    let fd = unsafe { libc::socket(domain, typ, protocol) };
    let e = errno_of(fd.into());
    if fd >= 0 {
        // SAFETY: fd was just returned by socket(2) and is owned here.
        unsafe { libc::close(fd) };
    }
    e
}

fn mknod(path: &str, mode: libc::mode_t, dev: libc::dev_t) -> i32 {
    let c = CString::new(path).expect("no NUL in probe path");
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    let e = errno_of(r.into());
    if r == 0 {
        // SAFETY: same valid path.
        unsafe { libc::unlink(c.as_ptr()) };
    }
    e
}

/// clone(2) with `flags` through the raw system call (glibc's wrapper may prefer clone3).
fn raw_clone(flags: libc::c_long) -> i32 {
    // SAFETY: a fork-like clone (no CLONE_VM, null stack: the child runs on a copy of this
    // stack) whose child only calls _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_long,
            0,
            0,
            0,
            0,
        )
    };
    if r == 0 {
        // SAFETY: in the child; _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    if r > 0 {
        let mut status = 0;
        // SAFETY: waits for the child created above; status is a valid out pointer.
        unsafe { libc::waitpid(r as libc::pid_t, &mut status, 0) };
    }
    errno_of(r)
}

fn check(name: &str) -> Option<i32> {
    // SAFETY (for every raw call below): the arguments are integers, null pointers the kernel
    // rejects or checks, or pointers to live, zeroed local buffers of the size passed.
    let e = unsafe {
        match name {
            "mount" => {
                let src = CString::new("none").expect("c");
                let dst = CString::new("/mnt").expect("c");
                let typ = CString::new("tmpfs").expect("c");
                errno_of(
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        typ.as_ptr(),
                        0,
                        std::ptr::null(),
                    )
                    .into(),
                )
            }
            "umount2" => {
                let dst = CString::new("/proc").expect("c");
                errno_of(libc::umount2(dst.as_ptr(), libc::MNT_DETACH).into())
            }
            "unshare-user" => errno_of(libc::unshare(libc::CLONE_NEWUSER).into()),
            "unshare-net" => errno_of(libc::unshare(libc::CLONE_NEWNET).into()),
            "unshare-files" => errno_of(libc::unshare(libc::CLONE_FILES).into()),
            "clone-newuser" => raw_clone(libc::CLONE_NEWUSER as libc::c_long),
            "clone-plain" => raw_clone(0),
            "clone3" => errno_of(libc::syscall(
                libc::SYS_clone3,
                std::ptr::null::<u8>(),
                0usize,
            )),
            "setns" => errno_of(libc::setns(-1, 0).into()),
            "ptrace" => errno_of(libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0)),
            "bpf" => {
                let attr = [0u8; 128];
                errno_of(libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()))
            }
            "io_uring_setup" => {
                let params = [0u8; 120];
                let r = libc::syscall(libc::SYS_io_uring_setup, 1, params.as_ptr());
                if r >= 0 {
                    libc::close(r as i32);
                }
                errno_of(r)
            }
            "keyctl" => errno_of(libc::syscall(libc::SYS_keyctl, 0, -3i64, 0)),
            "add_key" => errno_of(libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"probe".as_ptr(),
                c"x".as_ptr(),
                1usize,
                -3i64,
            )),
            "userfaultfd" => errno_of(libc::syscall(libc::SYS_userfaultfd, 0)),
            "perf_event_open" => {
                let attr = [0u8; 128];
                errno_of(libc::syscall(
                    libc::SYS_perf_event_open,
                    attr.as_ptr(),
                    0,
                    -1,
                    -1,
                    0,
                ))
            }
            "process_vm_readv" => errno_of(libc::syscall(
                libc::SYS_process_vm_readv,
                libc::getpid(),
                std::ptr::null::<u8>(),
                0,
                std::ptr::null::<u8>(),
                0,
                0,
            )),
            "open_by_handle_at" => errno_of(libc::syscall(
                libc::SYS_open_by_handle_at,
                -1,
                std::ptr::null::<u8>(),
                0,
            )),
            "socket-unix" => socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
            "socket-inet" => socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            "socket-inet6" => socket(libc::AF_INET6, libc::SOCK_DGRAM, 0),
            "socket-netlink-route" => socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            "socket-netlink-audit" => socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
            "socket-alg" => socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
            "socket-packet" => socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            ),
            "socket-vsock" => socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0),
            "mknod-char" => mknod(
                "/tmp/probe-null",
                libc::S_IFCHR | 0o600,
                libc::makedev(1, 3),
            ),
            "mknod-fifo" => mknod("/tmp/probe-fifo", libc::S_IFIFO | 0o600, 0),
            "x32-getpid" => {
                #[cfg(target_arch = "x86_64")]
                {
                    errno_of(libc::syscall(0x4000_0000 | libc::SYS_getpid))
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    libc::ENOSYS
                }
            }
            "getpid" => errno_of(libc::getpid().into()),
            _ => return None,
        }
    };
    Some(e)
}

const CHECKS: &[&str] = &[
    "mount",
    "umount2",
    "unshare-user",
    "unshare-net",
    "unshare-files",
    "clone-newuser",
    "clone-plain",
    "clone3",
    "setns",
    "ptrace",
    "bpf",
    "io_uring_setup",
    "keyctl",
    "add_key",
    "userfaultfd",
    "perf_event_open",
    "process_vm_readv",
    "open_by_handle_at",
    "socket-unix",
    "socket-inet",
    "socket-inet6",
    "socket-netlink-route",
    "socket-netlink-audit",
    "socket-alg",
    "socket-packet",
    "socket-vsock",
    "mknod-char",
    "mknod-fifo",
    "x32-getpid",
    "getpid",
];

/// Runs one check in a forked child so that no check changes the process the next one runs in
/// (a user namespace entered by one would change the errno of the next). Returns the errno, or
/// minus the signal number that killed the child (SIGSYS from a seccomp kill).
fn isolated(name: &str) -> i32 {
    // SAFETY: this helper is single-threaded; the child only runs the check and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = check(name).unwrap_or(255);
        // SAFETY: in the child; _exit skips at-exit handlers of the parent's state.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork failed: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: waits for the child just forked; status is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = if args.is_empty() || args[0] == "all" {
        CHECKS.to_vec()
    } else if args[0] == "list" {
        for c in CHECKS {
            println!("{c}");
        }
        return;
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in &names {
        if check_known(name) {
            println!("{name} {}", isolated(name));
        } else {
            eprintln!("unknown check {name}");
            std::process::exit(2);
        }
    }
}

fn check_known(name: &str) -> bool {
    CHECKS.contains(&name)
}
