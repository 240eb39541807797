//! Starting a validated command (blocking: call it from `spawn_blocking`).
//!
//! 1. Check the cwd is an existing directory, so a typo is a clear
//!    invalid_argument before anything starts (envd's wording).
//! 2. Decide the credentials: as root we switch to the user's uid, gid and
//!    supplementary groups; unprivileged we can only run as ourselves.
//! 3. Make the stdio: close-on-exec pipes (stdin a pipe or `/dev/null`), or
//!    a PTY whose slave is the child's stdin, stdout and stderr.
//! 4. Read the cgroup's OOM-kill counter (see `exit`).
//! 5. Start it through [`Reaper::spawn`], the only waiter, with
//!    [`launch`](super::launch): in the child, before exec, `setsid` (a new
//!    session and process group, so a signal to the group reaches everything
//!    the command starts), `TIOCSCTTY` for a PTY, the stdio, `setgroups`,
//!    `setgid`, `setuid`, then `chdir` as the user.
//! 6. Drop the child's ends in the guest, so the output pipes see EOF when
//!    the process and its children are done.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use tokio::sync::oneshot;

use super::{
    error::ProcessError,
    exit,
    launch::{self, Credentials, Launch},
    pty,
    spec::StartSpec,
};
use crate::reaper::{Exit, Reaper};

/// The guest's ends of a started process's stdio.
pub enum SpawnedIo {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Pty {
        master: OwnedFd,
    },
}

pub struct Spawned {
    pub pid: u32,
    pub exit: oneshot::Receiver<Exit>,
    pub io: SpawnedIo,
    /// The cgroup's OOM-kill counter just before the start.
    pub oom_kills_before: Option<u64>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

fn dev_null() -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        c"/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// Steps 1–6 of the module docs.
pub fn spawn(
    spec: &StartSpec,
    reaper: &Reaper,
    cgroup_root: &Path,
) -> Result<Spawned, ProcessError> {
    match std::fs::metadata(&spec.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ProcessError::invalid(format!(
                "cwd '{}' is not a directory",
                spec.cwd.display()
            )));
        }
        Err(_) => {
            return Err(ProcessError::invalid(format!(
                "cwd '{}' does not exist",
                spec.cwd.display()
            )));
        }
    }
    let creds = credentials(spec)?;
    let cwd = CString::new(spec.cwd.as_os_str().as_bytes())
        .map_err(|_| ProcessError::invalid("cwd must not contain NUL bytes"))?;

    // Step 3: `child` holds the child's ends until the launch is over.
    let (io, child): (SpawnedIo, [OwnedFd; 3]) = match spec.pty {
        Some(size) => {
            let pair = pty::open(size)
                .map_err(|e| ProcessError::internal("opening a pseudo-terminal", e))?;
            let clone = |fd: &OwnedFd| {
                fd.try_clone()
                    .map_err(|e| ProcessError::internal("duplicating the pty", e))
            };
            let child = [clone(&pair.slave)?, clone(&pair.slave)?, pair.slave];
            (
                SpawnedIo::Pty {
                    master: pair.master,
                },
                child,
            )
        }
        None => {
            let err = |e: io::Error| ProcessError::internal("creating pipes", e);
            let (stdin, child_in) = if spec.stdin {
                let (child, guest) = pipe().map_err(err)?;
                (Some(guest), child)
            } else {
                (None, dev_null().map_err(err)?)
            };
            let (stdout, child_out) = pipe().map_err(err)?;
            let (stderr, child_err) = pipe().map_err(err)?;
            (
                SpawnedIo::Pipes {
                    stdin,
                    stdout,
                    stderr,
                },
                [child_in, child_out, child_err],
            )
        }
    };
    let l = Launch {
        program: &spec.cmd,
        args: &spec.args,
        env: &spec.env,
        stdio: [child[0].as_fd(), child[1].as_fd(), child[2].as_fd()],
        ctty: spec.pty.map(|_| child[0].as_fd()),
        creds: creds.as_ref(),
        cwd: &cwd,
    };

    let oom_kills_before = exit::read_oom_kills(cgroup_root);
    let spawned = reaper.spawn(|| launch::launch(&l));
    drop(child);
    let (pid, exit) = spawned.map_err(|e| exec_error(&spec.cmd, e))?;
    Ok(Spawned {
        pid,
        exit,
        io,
        oom_kills_before,
    })
}

/// Step 2 of the module docs.
fn credentials(spec: &StartSpec) -> Result<Option<Credentials>, ProcessError> {
    let euid = rustix::process::geteuid().as_raw();
    let user = &spec.user;
    if euid == 0 {
        let mut groups = vec![user.gid];
        for g in &user.groups {
            if !groups.contains(g) {
                groups.push(*g);
            }
        }
        return Ok(Some(Credentials {
            uid: user.uid,
            gid: user.gid,
            groups,
        }));
    }
    if user.uid == euid {
        return Ok(None);
    }
    Err(ProcessError::PermissionDenied(format!(
        "the guest runs unprivileged and cannot start processes as user {:?}",
        user.name
    )))
}

/// Maps a failed spawn to what the client can act on.
fn exec_error(cmd: &str, e: io::Error) -> ProcessError {
    let reason = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => "no such file or directory",
        (io::ErrorKind::PermissionDenied, _) => "permission denied",
        (_, Some(libc::ENOEXEC)) => "not an executable format",
        (_, Some(libc::E2BIG)) => "argument list too long",
        (_, Some(libc::ENOTDIR)) => "a path component is not a directory",
        (_, Some(libc::ELOOP)) => "too many levels of symbolic links",
        (_, Some(libc::EAGAIN)) => {
            return ProcessError::Exhausted(format!("cannot start {cmd:?}: process limit reached"));
        }
        _ => return ProcessError::internal("starting a process", e),
    };
    ProcessError::Exec {
        cmd: cmd.to_owned(),
        reason,
    }
}
