//! The one place that waits for child processes.
//!
//! As PID 1 of a sandbox the guest inherits every orphan, so it must reap
//! with `waitpid(-1)`; that would steal exit statuses from any other waiter,
//! so nothing else in the guest waits for children (no `tokio::process`).
//! Instead:
//! 1. [`Reaper::spawn`] starts a child while holding the registry lock and
//!    records a channel for its exit status before the lock is released, so a
//!    child that dies at once is never reaped before it is known.
//! 2. On every SIGCHLD (and on a slow timer, in case signals coalesced) the
//!    reaper task takes the lock and calls `waitpid(-1, WNOHANG)` until no
//!    child is left to reap: a known pid gets its status sent to its owner,
//!    an orphan is simply reaped (no zombies pile up).
//! 3. When the guest is not PID 1 it makes itself a child subreaper, so the
//!    orphans of the commands it started are reparented to it and reaped
//!    here too, just as they would be by a PID 1 guest.
//! 4. [`Reaper::kill_group`] signals a child's process group under the same
//!    lock, and only while the child is unreaped: the pid (and the group the
//!    child leads) cannot have been reused, because a pid is only freed by
//!    our own `waitpid`, which runs under that lock (R13).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::wait::{WaitPidFlag, WaitStatus, waitpid},
    unistd::Pid,
};
use tokio::sync::{oneshot, watch};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this code.
    Code(i32),
    /// A signal ended it.
    Signal { signal: i32, core_dumped: bool },
}

type Waiters = HashMap<i32, oneshot::Sender<Exit>>;

/// Handle to the reaper; cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<Waiters>>,
    /// Number of live children we spawned (for shutdown).
    live: watch::Sender<usize>,
}

impl Reaper {
    /// Starts the reaper task. Must be called inside a tokio runtime.
    pub fn start() -> std::io::Result<Reaper> {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = Reaper {
            waiters: Arc::default(),
            live: watch::Sender::new(0),
        };
        if std::process::id() != 1
            && let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans of commands go to init");
        }
        let r = reaper.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tick.tick() => {}
                }
                r.reap_all();
            }
        });
        Ok(reaper)
    }

    fn reap_all(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, core_dumped)) => (
                    pid,
                    Exit::Signal {
                        signal: sig as i32,
                        core_dumped,
                    },
                ),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    break;
                }
            };
            if let Some(tx) = waiters.remove(&pid.as_raw()) {
                let _ = tx.send(exit);
                self.live.send_modify(|n| *n = n.saturating_sub(1));
            } else {
                tracing::debug!(pid = pid.as_raw(), ?exit, "reaped an orphan");
            }
        }
    }

    /// Starts a child with `start` (which returns its pid) and returns the
    /// pid and a receiver of its exit.
    ///
    /// `start` runs under the registry lock, so a child that dies at once is
    /// registered before the reaper can reap it, and a `start` that fails
    /// after its child exited may reap that child itself.
    pub fn spawn(
        &self,
        start: impl FnOnce() -> std::io::Result<u32>,
    ) -> std::io::Result<(u32, oneshot::Receiver<Exit>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let pid = start()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid as i32, tx);
        self.live.send_modify(|n| *n += 1);
        Ok((pid, rx))
    }

    /// Sends `sig` to the process group led by `pid`, a child spawned
    /// through this reaper (with `setsid`, so its pgid is its pid).
    ///
    /// Returns `Ok(false)` when the child has already been reaped: then the
    /// pid may belong to someone else and nothing is sent. While the child is
    /// unreaped (running or a zombie) its pid and group are ours, and the
    /// lock keeps the reaper from freeing them while we signal.
    pub fn kill_group(&self, pid: u32, sig: nix::sys::signal::Signal) -> std::io::Result<bool> {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(raw) = i32::try_from(pid) else {
            return Ok(false);
        };
        if !waiters.contains_key(&raw) {
            return Ok(false);
        }
        match nix::sys::signal::killpg(Pid::from_raw(raw), sig) {
            Ok(()) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves when every child spawned through this reaper has been reaped.
    pub async fn all_exited(&self) {
        let mut rx = self.live.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
