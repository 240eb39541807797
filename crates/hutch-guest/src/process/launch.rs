//! Starting a child without copying the guest: `clone(CLONE_VM |
//! CLONE_VFORK)`, set up, `execve`, the way glibc's `posix_spawn` does.
//!
//! Why not `std::process::Command`: our child must call `setsid`, take its
//! controlling terminal and switch to the user's credentials before exec,
//! which needs a `pre_exec` hook, and with one std forks. A fork copies the
//! guest's page tables, and every page the guest then writes faults until the
//! child has exec'd; `posix_spawn` (std's fast path) cannot change
//! credentials. Measured on the CI machine: fork + exec + wait of `true` from
//! a process of the guest's size took 0.61–0.63 ms, `posix_spawn` 0.52–0.53.
//!
//! The flow:
//! 1. The parent prepares everything the child needs as C data ([`Prepared`]):
//!    the argument and environment vectors, the paths to try (the `PATH`
//!    search of `execvp`, done here so the child allocates nothing), the
//!    stdio descriptors (moved above 2 if they sit where another belongs),
//!    the credentials, the cwd, and a stack for the child.
//! 2. It blocks every signal in its own thread: the child shares the guest's
//!    memory, and a guest signal handler running in the child could corrupt it.
//! 3. `clone(CLONE_VM | CLONE_VFORK | SIGCHLD)`: the calling thread sleeps
//!    until the child has exec'd or exited; the guest's other threads run on.
//! 4. The child ([`child_main`]): every signal's disposition back to default,
//!    an empty signal mask (raw system calls: glibc keeps its own two
//!    signals out of reach), `setsid`, `TIOCSCTTY` for a PTY, stdio onto 0–2,
//!    supplementary groups, gid, uid (raw per-thread system calls: glibc's
//!    `setuid` would signal the guest's threads), `chdir` as the user, then
//!    `execve` of each candidate path as `execvp` does (`ENOEXEC` runs the file
//!    with `/bin/sh`). On failure it stores the errno where the parent reads it
//!    and exits with 127.
//! 5. The parent restores its signal mask. If the child stored an errno, the
//!    parent reaps it at once (the caller holds the reaper's lock, so nothing
//!    else can) and returns the error.
//!
//! Between clone and exec the child only makes system calls on data prepared
//! in step 1: it allocates nothing, takes no lock and touches no thread-local
//! state of the guest (errno aside, which no Rust code reads later).

#![allow(unsafe_code)]

use std::{
    collections::BTreeMap,
    ffi::{CString, c_char, c_int, c_void},
    io,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    sync::atomic::{AtomicI32, Ordering},
};

use rustix::{
    io::FdFlags,
    process::{Gid, Uid},
};

/// Bytes of stack for the child; it needs well under a page.
const CHILD_STACK: usize = 64 << 10;

/// `execvp`'s default when the environment has no `PATH`.
const EXECVP_DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Who the child becomes (as root; an unprivileged guest passes none).
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary group included.
    pub groups: Vec<u32>,
}

/// What to start.
pub struct Launch<'a> {
    pub program: &'a str,
    /// Arguments after the program name.
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    /// Becomes stdin, stdout and stderr.
    pub stdio: [BorrowedFd<'a>; 3],
    /// The PTY slave to make the controlling terminal.
    pub ctty: Option<BorrowedFd<'a>>,
    pub creds: Option<&'a Credentials>,
    pub cwd: &'a std::ffi::CStr,
}

/// Step 1: the child's whole world, prepared in the parent.
struct Prepared {
    /// Paths `execve` tries, in order; each NUL-terminated.
    candidates: Vec<CString>,
    /// Keep the strings `argv` and `envp` point into alive.
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    /// `/bin/sh`, a slot for the candidate (filled by the child), `args`.
    sh_argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// Descriptors moved above 2 (closed when this is dropped).
    _moved: Vec<OwnedFd>,
    stdio: [c_int; 3],
    ctty: c_int,
    creds: Option<(Uid, Gid, Vec<Gid>)>,
    cwd: *const c_char,
    /// 0, or the errno the child failed with.
    errno: AtomicI32,
}

static SH: &std::ffi::CStr = c"/bin/sh";

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

impl Prepared {
    fn new(l: &Launch<'_>) -> io::Result<Prepared> {
        let mut strings = Vec::with_capacity(1 + l.args.len() + l.env.len());
        strings.push(cstring(l.program)?);
        for a in l.args {
            strings.push(cstring(a)?);
        }
        for (k, v) in l.env {
            strings.push(cstring(&format!("{k}={v}"))?);
        }
        let argc = 1 + l.args.len();
        let mut argv: Vec<*const c_char> = strings[..argc].iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut sh_argv = vec![SH.as_ptr(), std::ptr::null()];
        sh_argv.extend(strings[1..argc].iter().map(|s| s.as_ptr()));
        sh_argv.push(std::ptr::null());
        let mut envp: Vec<*const c_char> = strings[argc..].iter().map(|s| s.as_ptr()).collect();
        envp.push(std::ptr::null());

        let candidates = if l.program.contains('/') {
            vec![cstring(l.program)?]
        } else {
            let path = l.env.get("PATH").map_or(EXECVP_DEFAULT_PATH, |p| p);
            path.split(':')
                .map(|dir| match dir {
                    "" => cstring(l.program),
                    dir => cstring(&format!("{}/{}", dir.trim_end_matches('/'), l.program)),
                })
                .collect::<io::Result<_>>()?
        };

        // A source sitting on 0–2 where another stream belongs would be
        // overwritten by an earlier dup2: move every low source above 2.
        let mut moved = Vec::new();
        let mut stdio = [0; 3];
        for (i, fd) in l.stdio.iter().enumerate() {
            let raw = fd.as_raw_fd();
            stdio[i] = if raw <= 2 && raw != i as c_int {
                let up = rustix::io::fcntl_dupfd_cloexec(fd, 3)?;
                let r = up.as_raw_fd();
                moved.push(up);
                r
            } else {
                raw
            };
        }
        Ok(Prepared {
            candidates,
            _strings: strings,
            argv,
            sh_argv,
            envp,
            _moved: moved,
            stdio,
            ctty: l.ctty.map_or(-1, |fd| fd.as_raw_fd()),
            creds: l.creds.map(|c| {
                (
                    Uid::from_raw(c.uid),
                    Gid::from_raw(c.gid),
                    c.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
                )
            }),
            cwd: l.cwd.as_ptr(),
            errno: AtomicI32::new(0),
        })
    }
}

/// Steps 1–5 of the module docs: starts the child and returns its pid once it
/// has exec'd. Call it with the reaper's lock held, so that a child that
/// failed is reaped here and a child that exec'd is registered before anyone
/// can reap it.
pub fn launch(l: &Launch<'_>) -> io::Result<u32> {
    let mut prepared = Prepared::new(l)?;
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its 16-byte-aligned top.
    let top = {
        let end = stack.as_mut_ptr().wrapping_add(CHILD_STACK) as usize;
        (end & !15) as *mut c_void
    };

    // Step 2.
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask reads it and
    // writes the previous mask into `old`. Both only touch these locals.
    let rc = unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr())
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }

    // Step 3.
    // SAFETY: `child_main` runs on `stack`, which outlives the call (with
    // CLONE_VFORK this thread sleeps until the child has exec'd or exited,
    // after which the child no longer uses it), and gets a pointer to
    // `prepared`, which stays alive and is not touched by this thread until
    // clone returns. What the child does is listed in the module docs: only
    // system calls on the prepared data.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut prepared).cast::<c_void>(),
        )
    };
    let clone_error = (pid < 0).then(io::Error::last_os_error);

    // Step 5.
    // SAFETY: `old` was initialised by the pthread_sigmask call above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
    }
    drop(stack);
    if let Some(e) = clone_error {
        return Err(e);
    }
    match prepared.errno.load(Ordering::SeqCst) {
        0 => Ok(pid as u32),
        errno => {
            // The child has exited (it stored the errno just before); take
            // its status so it does not linger as a zombie.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// Step 4: the child, between clone and exec.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Prepared` the parent passed to clone; it lives
    // until the parent wakes, which is after this function has exec'd or
    // returned. Only the `sh_argv` slot and `errno` are written.
    let p = unsafe { &mut *arg.cast::<Prepared>() };
    let Err(e) = setup_and_exec(p);
    let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
    p.errno.store(errno, Ordering::SeqCst);
    // SAFETY: _exit ends this child (its own thread group) without running
    // any of the guest's exit handlers.
    unsafe { libc::_exit(127) }
}

/// Returns only on failure (`Ok` cannot happen: exec replaced us).
fn setup_and_exec(p: &mut Prepared) -> Result<std::convert::Infallible, io::Error> {
    // SAFETY (for the libc calls below): rt_sigaction with an all-zero
    // kernel `struct sigaction` (SIG_DFL, no flags, empty mask; 32 bytes on
    // every 64-bit Linux) and pthread_sigmask with an empty set only change
    // this child's signal state; execve gets NUL-terminated vectors of
    // pointers to live NUL-terminated strings.
    unsafe {
        // The raw call, not glibc's sigaction, which refuses its two
        // internal signals: an ignored signal 32 or 33 would survive exec.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<c_void>(),
                    8usize,
                );
            }
        }
        let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            empty.as_ptr(),
            std::ptr::null_mut::<c_void>(),
            8usize,
        );
    }

    rustix::process::setsid()?;
    if p.ctty >= 0 {
        // SAFETY: the descriptor is open in the parent for the child's lifetime.
        rustix::process::ioctl_tiocsctty(unsafe { BorrowedFd::borrow_raw(p.ctty) })?;
    }
    for (target, &src) in p.stdio.iter().enumerate() {
        // SAFETY: as above, every source is open until the parent wakes.
        let fd = unsafe { BorrowedFd::borrow_raw(src) };
        if src == target as c_int {
            // dup2 onto itself would keep close-on-exec.
            rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
            continue;
        }
        match target {
            0 => rustix::stdio::dup2_stdin(fd)?,
            1 => rustix::stdio::dup2_stdout(fd)?,
            _ => rustix::stdio::dup2_stderr(fd)?,
        }
    }
    if let Some((uid, gid, groups)) = &p.creds {
        rustix::thread::set_thread_groups(groups)?;
        rustix::thread::set_thread_res_gid(*gid, *gid, *gid)?;
        rustix::thread::set_thread_res_uid(*uid, *uid, *uid)?;
    }
    // SAFETY: `cwd` points into the caller's CString, alive until we exec.
    rustix::process::chdir(unsafe { std::ffi::CStr::from_ptr(p.cwd) })?;

    // The search of glibc's execvp: a missing or inaccessible candidate
    // moves on to the next; a file without a known format runs under
    // /bin/sh; any other failure ends the search.
    let mut denied = false;
    let mut last = libc::ENOENT;
    for candidate in &p.candidates {
        // SAFETY: see the block at the top of this function.
        unsafe { libc::execve(candidate.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr()) };
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        match e {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            libc::ENOEXEC => {
                p.sh_argv[1] = candidate.as_ptr();
                // SAFETY: see the block at the top of this function.
                unsafe { libc::execve(SH.as_ptr(), p.sh_argv.as_ptr(), p.envp.as_ptr()) };
                return Err(io::Error::last_os_error());
            }
            e => return Err(io::Error::from_raw_os_error(e)),
        }
        last = e;
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        last
    }))
}
