//! The thread that keeps the disk-image pool filled.
//!
//! `mkfs` is most of a [`RootfsManager::prepare`] with a disk limit, so prepares take a
//! pre-formatted image from the pool (`<root>/.pool/<mb>/`) and [`PoolFiller::request`] asks
//! this thread to format the next ones in the background:
//!
//! 1. [`PoolFiller::start`] spawns one thread per manager, at the lowest CPU priority (a
//!    refill starts just as a sandbox launches; on a small host, formatting beside the
//!    runtime made launches a third slower).
//! 2. `request(mb)` queues a size without blocking; a full queue means a refill is on its
//!    way, so the request is dropped.
//! 3. The thread tops the pool of that size up to its depth, one image at a time, and ends
//!    when the last [`PoolFiller`] is dropped; that drop waits for it (at most the refill under
//!    way), so nothing writes into the pool after its owner is gone (a test's temporary data
//!    dir was left behind, the thread still formatting into it).

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};

use crate::manager::RootfsManager;
use crate::ops::HostOps;

/// Pre-formatted disk images kept ready per size.
pub const POOL_DEPTH: usize = 8;

/// Asks the pool thread for refills (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct PoolFiller {
    // Dropped before `_thread`: the last sender closes the channel, then the thread is joined.
    tx: SyncSender<u64>,
    _thread: Arc<Joined>,
}

/// Joins the filler thread when the last [`PoolFiller`] goes.
#[derive(Debug)]
struct Joined(std::sync::Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for Joined {
    fn drop(&mut self) {
        let handle = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl PoolFiller {
    /// Starts the filler thread of `rootfs`, keeping `depth` images of each requested size.
    pub fn start<O: HostOps + 'static>(
        rootfs: Arc<RootfsManager<O>>,
        depth: usize,
    ) -> std::io::Result<PoolFiller> {
        let (tx, rx) = sync_channel::<u64>(4);
        let thread = std::thread::Builder::new()
            .name("hutch-disk-pool".into())
            .spawn(move || {
                // Linux applies setpriority on a thread id to that thread alone; the mkfs it
                // runs inherits it.
                if let Err(e) =
                    rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19)
                {
                    tracing::debug!(error = %e, "cannot lower the disk-pool thread's priority");
                }
                while let Ok(mb) = rx.recv() {
                    if let Err(e) = rootfs.fill_pool(mb, depth) {
                        tracing::warn!(disk_mb = mb, error = %e, "filling the disk-image pool failed");
                    }
                }
            })?;
        Ok(PoolFiller {
            tx,
            _thread: Arc::new(Joined(std::sync::Mutex::new(Some(thread)))),
        })
    }

    /// Asks for the pool of `mb` MiB images to be topped up; returns at once.
    pub fn request(&self, mb: u64) {
        let _ = self.tx.try_send(mb);
    }
}
