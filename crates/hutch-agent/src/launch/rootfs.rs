//! Step 3, rootfs: the sandbox's root filesystem, an overlay over the template's layers
//! (top-most first) with its upper dir on an ext4 image of `disk_mb` (writing past it is
//! ENOSPC inside; nothing outside grows). A prepare takes a pre-formatted image from the pool
//! and asks the pool thread for the next one.
//!
//! Undo: tear the root filesystem down (unmount, detach the loop device, remove its files),
//! then wait until no loop device is backed by its image any more: the kernel releases a
//! sandbox's mount namespace, and with it the last reference to the ext4 upper dir, a moment
//! after its last process left, so the loop device's autoclear can trail the teardown by a
//! few milliseconds. The undo returns only once nothing is left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_host::AgentError;
use hutch_rootfs::PrepareSpec;
use hutch_rootfs::ops::HostOps;

use super::{Cx, Step, blocking, host_err};
use crate::machine::Machine;

/// How long the undo waits for the loop device to be released.
const LOOP_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Rootfs;

#[async_trait]
impl Step for Rootfs {
    fn name(&self) -> &'static str {
        "rootfs"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        let m = machine.clone();
        let id = cx.id().clone();
        let lower = cx
            .launch
            .template
            .layers
            .iter()
            .rev()
            .map(|d| machine.layers.path(d))
            .collect();
        let disk_mb = u64::from(cx.launch.resources.disk_mb);
        let idmap = cx.userns.as_ref().map(|u| hutch_rootfs::Idmap {
            userns: u.fd.clone(),
            uid: u.host_id,
            gid: u.host_id,
        });
        let prepared = blocking(cx.id(), move || {
            // `prepare` undoes its own partial work on a failure.
            m.rootfs
                .prepare(
                    id.as_str(),
                    &PrepareSpec {
                        idmap,
                        lower,
                        disk_mb: (disk_mb > 0).then_some(disk_mb),
                    },
                )
                .map_err(host_err("prepare the root filesystem", &id))
        })
        .await?;
        if disk_mb > 0 {
            machine.disk_pool.request(disk_mb);
        }
        cx.rootfs = Some(prepared.rootfs);
        Ok(())
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        let m = machine.clone();
        let id2 = id.clone();
        blocking(id, move || {
            m.rootfs
                .teardown(id2.as_str())
                .map_err(host_err("tear down the root filesystem", &id2))?;
            wait_for_loop_release(&m, &id2)
        })
        .await
    }
}

/// Waits until no loop device is backed by a file of the sandbox's rootfs dir (blocking).
fn wait_for_loop_release(m: &Machine, id: &SandboxId) -> Result<(), AgentError> {
    let dir = m.rootfs.root().join(id.as_str());
    let start = Instant::now();
    loop {
        let left = m
            .rootfs
            .ops()
            .loops_backed_under(&dir)
            .map_err(host_err("list loop devices", id))?;
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() > LOOP_RELEASE_TIMEOUT {
            return Err(host_err("wait for the loop device to be released", id)(
                std::io::Error::other(format!("{left:?} still bound")),
            ));
        }
        for dev in &left {
            let _ = m.rootfs.ops().loop_detach(dev);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
