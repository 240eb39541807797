//! Running filesystem work as the request's user.
//!
//! The guest usually runs as root, but a request acts as a sandbox user: a
//! non-root user must not read a root-only file through the API, and what it
//! creates must be owned by it. We let the kernel decide, rather than
//! re-implementing permission checks (owner/group/other bits, ACLs, search
//! permission on every path component, symlinks, sticky directories...),
//! which would be both incomplete and racy:
//!
//! 1. The blocking closure runs on a `spawn_blocking` thread.
//! 2. That thread switches its *filesystem* identity to the user's:
//!    supplementary groups (raw per-thread `setgroups`, not glibc's
//!    process-wide wrapper), then `setfsgid`, then `setfsuid`. On Linux all
//!    three are per-thread, so no other task sees the change; `setfsuid` away
//!    from 0 also drops the filesystem capabilities (DAC override, fowner,
//!    chown) of this thread only.
//! 3. Every open/mkdir/rename/unlink in the closure is checked against the
//!    user, and every file or directory it creates is owned by the user from
//!    the start (no window where a root-owned file exists, no fchown needed;
//!    a setgid directory still passes its group on, as for any process).
//! 4. A guard restores root's identity when the closure returns or unwinds,
//!    before the pooled thread runs anything else.
//!
//! Descriptors opened here keep the user's access after the switch back (the
//! check happens at open), so streaming reads and writes happen later on
//! ordinary runtime threads.
//!
//! When the guest itself does not run as root it cannot switch; the work then
//! runs with the guest's own identity, which the kernel checks just the same.

use nix::unistd::{Gid, Uid, getgroups, setfsgid, setfsuid};

use super::FsError;
use crate::users::User;

/// Restores the thread's filesystem identity on drop.
struct Switched {
    groups: Vec<Gid>,
    gid: Gid,
}

impl Drop for Switched {
    fn drop(&mut self) {
        // Uid first: back at fsuid 0 the capabilities needed to set the
        // groups return.
        setfsuid(Uid::from_raw(0));
        setfsgid(self.gid);
        let groups: Vec<rustix::process::Gid> = self
            .groups
            .iter()
            .map(|g| rustix::process::Gid::from_raw_unchecked(g.as_raw()))
            .collect();
        if let Err(e) = rustix::thread::set_thread_groups(&groups) {
            tracing::error!(error = %e, "restoring the supplementary groups of a blocking thread failed");
        }
    }
}

/// Switches the calling thread's filesystem identity to `user`'s.
fn switch_to(user: &User) -> Result<Option<Switched>, FsError> {
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 || user.uid == 0 {
        // Not root: nothing to switch to. Root user: keep root's identity.
        return Ok(None);
    }
    let saved_groups = getgroups()
        .map_err(|e| FsError::Internal(format!("reading the supplementary groups: {e}")))?;
    let saved_gid = setfsgid(Gid::from_raw(user.gid));
    let guard = Switched {
        groups: saved_groups,
        gid: saved_gid,
    };
    let mut groups = vec![rustix::process::Gid::from_raw_unchecked(user.gid)];
    groups.extend(
        user.groups
            .iter()
            .map(|g| rustix::process::Gid::from_raw_unchecked(*g)),
    );
    groups.truncate(65536);
    if let Err(e) = rustix::thread::set_thread_groups(&groups) {
        return Err(FsError::Internal(format!(
            "switching to the groups of user {}: {e}",
            user.name
        )));
    }
    setfsuid(Uid::from_raw(user.uid));
    // setfsuid reports the previous value even on failure: ask again.
    let now = setfsuid(Uid::from_raw(user.uid));
    if now.as_raw() != user.uid {
        return Err(FsError::Internal(format!(
            "switching to user {} failed",
            user.name
        )));
    }
    Ok(Some(guard))
}

/// Runs `f` on this thread with `user`'s filesystem identity (blocking).
pub fn with_user<T>(user: &User, f: impl FnOnce() -> Result<T, FsError>) -> Result<T, FsError> {
    let _guard = switch_to(user)?;
    f()
}

/// Runs blocking filesystem work as `user` on the blocking pool (STYLE.md 8).
pub async fn blocking_as<T, F>(user: &User, f: F) -> Result<T, FsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, FsError> + Send + 'static,
{
    let user = user.clone();
    tokio::task::spawn_blocking(move || with_user(&user, f)).await?
}
