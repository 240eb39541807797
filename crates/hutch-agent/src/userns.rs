//! Each sandbox's own host ids (DESIGN §3): a range of 65 536 unprivileged host uids and gids,
//! and a user namespace owned by the first of them that maps ids `0..65536` inside onto it.
//!
//! Why the namespace is made here and not by the runtime: the kernel charges per-user limits
//! (inotify instances and watches, keys, message queues, ...) inside a user namespace to the
//! uid inside *and* to the namespace's owner outside. A namespace the runtime creates is owned
//! by the runtime's uid, host root, so every sandbox would still charge root's limits (measured:
//! 128 inotify instances in one sandbox left none for the host). Made by a process that first
//! becomes the range's first uid, it is owned by that uid: each sandbox charges its own.
//!
//! The ranges are recorded as files `uids/<slot>` holding the sandbox id, created exclusively
//! (a crash leaves a record, never a double allocation); a range is released only once the
//! sandbox's files and processes are gone (see `launch::userns`).

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::Mutex;

use hutch_core::SandboxId;

/// Ids in one sandbox's range: 0 (root) to 65 535 (`nobody` is 65 534) inside.
pub const RANGE: u32 = 65_536;

/// Where the ranges start and how many there are (see [`crate::AgentConfig::user_namespaces`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRanges {
    /// The first host uid (and gid) of slot 0. Above any system or login user.
    pub base: u32,
    /// How many sandboxes can hold a range at once.
    pub slots: u32,
}

impl Default for UidRanges {
    /// 2^30 up to 2^31: 16 384 ranges, clear of the usual subordinate-id ranges (100 000 up)
    /// and of ids some tools read as negative (2^31 and above).
    fn default() -> Self {
        UidRanges {
            base: 1 << 30,
            slots: 1 << 14,
        }
    }
}

/// The record of which sandbox holds which range.
#[derive(Debug)]
pub struct Allocations {
    dir: PathBuf,
    ranges: UidRanges,
    /// Serialises this process's allocations (the exclusive create guards against others).
    lock: Mutex<()>,
}

/// A sandbox's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub slot: u32,
    /// The host uid and gid of root inside.
    pub host_id: u32,
}

impl Allocations {
    /// Opens (creating, 0700) the record in `dir`.
    pub fn open(dir: PathBuf, ranges: UidRanges) -> io::Result<Allocations> {
        let last = u64::from(ranges.base) + u64::from(ranges.slots) * u64::from(RANGE);
        if ranges.base == 0 || ranges.slots == 0 || last > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "uid ranges: base {} with {} ranges of {RANGE} does not fit in the uid space above 0",
                    ranges.base, ranges.slots
                ),
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Allocations {
            dir,
            ranges,
            lock: Mutex::new(()),
        })
    }

    fn range(&self, slot: u32) -> Range {
        Range {
            slot,
            host_id: self.ranges.base + slot * RANGE,
        }
    }

    /// Every recorded slot and its holder.
    fn records(&self) -> io::Result<Vec<(u32, String)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let Some(slot) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // A record being written reads empty for a moment: it is taken all the same.
            let holder = fs::read_to_string(e.path()).unwrap_or_default();
            out.push((slot, holder.trim().to_owned()));
        }
        Ok(out)
    }

    /// The sandboxes holding a range: what the host holds of them includes their ids (a crash
    /// between the last undos leaves only the record; recovery then releases it).
    pub fn holders(&self) -> io::Result<Vec<String>> {
        Ok(self
            .records()?
            .into_iter()
            .map(|(_, holder)| holder)
            .filter(|h| !h.is_empty())
            .collect())
    }

    /// The range `id` holds, if any.
    pub fn of(&self, id: &SandboxId) -> io::Result<Option<Range>> {
        Ok(self
            .records()?
            .into_iter()
            .find(|(_, holder)| holder == id.as_str())
            .map(|(slot, _)| self.range(slot)))
    }

    /// Takes the lowest free range for `id` (or returns the one it holds).
    pub fn allocate(&self, id: &SandboxId) -> io::Result<Range> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let records = self.records()?;
        if let Some((slot, _)) = records.iter().find(|(_, h)| h == id.as_str()) {
            return Ok(self.range(*slot));
        }
        let mut taken: Vec<u32> = records.into_iter().map(|(s, _)| s).collect();
        taken.sort_unstable();
        let mut next = 0u32;
        for slot in 0..self.ranges.slots {
            // Skip the taken ones in order; the first gap is free.
            while taken.get(next as usize).is_some_and(|t| *t < slot) {
                next += 1;
            }
            if taken.get(next as usize) == Some(&slot) {
                continue;
            }
            let path = self.dir.join(slot.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(id.as_str().as_bytes())?;
                    return Ok(self.range(slot));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!("all {} uid ranges are in use", self.ranges.slots),
        ))
    }

    /// Forgets every range `id` holds. Idempotent.
    pub fn release(&self, id: &SandboxId) -> io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, holder) in self.records()? {
            if holder == id.as_str() {
                match fs::remove_file(self.dir.join(slot.to_string())) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// Makes a user namespace owned by host uid/gid `host_id` in which ids `0..RANGE` are
/// `host_id..host_id+RANGE` outside, and returns a descriptor of it. Blocking (~1 ms).
///
/// 1. Fork. The child drops its supplementary groups, becomes `host_id` (gid, then uid),
///    unshares a user namespace (now owned by `host_id`), says so on a pipe and waits.
/// 2. The parent, host root, writes the child's `uid_map` and `gid_map`, opens
///    `/proc/<child>/ns/user`, then tells the child to exit and reaps it. The descriptor
///    keeps the namespace alive. Both sides signal with a byte, never with the end of a pipe:
///    children other threads fork meanwhile hold copies of the pipes.
///
/// A fork and not a thread: unsharing a user namespace needs a single-threaded caller.
pub fn create(host_id: u32) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    let (ready_w_raw, done_r_raw) = (ready_w.as_raw_fd(), done_r.as_raw_fd());
    #[allow(unsafe_code)]
    // SAFETY: fork in a multi-threaded process; the child calls only async-signal-safe system
    // calls (setgroups, setresgid, setresuid, unshare, write, read, _exit) on values prepared
    // before the fork, and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        #[allow(unsafe_code)]
        // SAFETY: see above; every call takes plain integers or a pointer to a local byte.
        unsafe {
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(host_id, host_id, host_id) == 0
                && libc::setresuid(host_id, host_id, host_id) == 0
                && libc::unshare(libc::CLONE_NEWUSER) == 0;
            let byte: u8 = if ok { b'1' } else { b'0' };
            libc::write(ready_w_raw, (&raw const byte).cast(), 1);
            let mut wait: u8 = 0;
            libc::read(done_r_raw, (&raw mut wait).cast(), 1);
            libc::_exit(i32::from(!ok));
        }
    }
    drop(ready_w);
    drop(done_r);
    let result = (|| {
        let mut byte = [0u8; 1];
        let mut ready = fs::File::from(ready_r);
        let n = ready.read(&mut byte)?;
        if n != 1 || byte[0] != b'1' {
            return Err(io::Error::other(format!(
                "the helper could not become uid {host_id} in a new user namespace"
            )));
        }
        let map = format!("0 {host_id} {RANGE}\n");
        fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        let ns = fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(ns))
    })();
    // Let the child go and reap it. A byte, not the end of the pipe: a child another thread
    // forks meanwhile holds copies of our pipe ends until it exits.
    let _ = fs::File::from(done_w).write_all(b"1");
    let mut status = 0;
    #[allow(unsafe_code)]
    // SAFETY: waits for our own child, whose pid we hold; no other code reaps it.
    unsafe {
        libc::waitpid(pid, &raw mut status, 0)
    };
    result
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    #[allow(unsafe_code)]
    // SAFETY: pipe2 writes two descriptors into the array, which we then own.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn allocations(slots: u32) -> (tempfile::TempDir, Allocations) {
        let dir = tempfile::tempdir().unwrap();
        let a = Allocations::open(
            dir.path().join("uids"),
            UidRanges {
                base: 1 << 30,
                slots,
            },
        )
        .unwrap();
        (dir, a)
    }

    #[test]
    fn ranges_are_taken_lowest_first_held_once_and_reused_after_release() {
        let (_dir, a) = allocations(3);
        let (x, y, z, w) = (
            SandboxId::generate(),
            SandboxId::generate(),
            SandboxId::generate(),
            SandboxId::generate(),
        );
        assert_eq!(a.allocate(&x).unwrap().host_id, 1 << 30);
        assert_eq!(a.allocate(&y).unwrap().slot, 1);
        assert_eq!(a.allocate(&x).unwrap().slot, 0, "a holder keeps its range");
        assert_eq!(a.allocate(&z).unwrap().slot, 2);
        let full = a.allocate(&w).unwrap_err();
        assert!(full.to_string().contains("all 3 uid ranges"), "{full}");
        a.release(&y).unwrap();
        a.release(&y).unwrap();
        assert_eq!(a.of(&y).unwrap(), None);
        assert_eq!(a.allocate(&w).unwrap().slot, 1);
        let mut holders = a.holders().unwrap();
        holders.sort();
        let mut want = vec![x.to_string(), z.to_string(), w.to_string()];
        want.sort();
        assert_eq!(holders, want);
        assert_eq!(a.of(&z).unwrap().unwrap().host_id, (1 << 30) + 2 * RANGE);
    }

    #[test]
    fn ranges_that_leave_the_uid_space_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bad = UidRanges {
            base: u32::MAX - RANGE,
            slots: 2,
        };
        assert!(Allocations::open(dir.path().join("u"), bad).is_err());
    }
}
