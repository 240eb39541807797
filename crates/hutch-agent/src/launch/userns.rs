//! Step 3, userns: the sandbox's own host ids (see [`crate::userns`]). Takes a free range of
//! 65 536 unprivileged host uids and gids, makes a user namespace owned by the range's first
//! id that maps ids `0..65536` inside onto it, and gives the guest's config files to the
//! sandbox's root (they are bound read-only into the sandbox, and root inside is now that
//! host id). The rootfs step mounts the template's layers seen through the namespace, the
//! bundle step has the container join it. Off (`AgentConfig::user_namespaces` = `None`):
//! nothing, and root inside is host root.
//!
//! Undo: release the range, once nothing of the sandbox that could hold its ids is left: no
//! root filesystem (its files) and no cgroup (its processes). While either is there the undo
//! fails and the range stays taken, so a later destroy releases it; a range is never handed
//! to another sandbox while a file or process of the old one remains.

use std::sync::Arc;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_host::AgentError;

use super::{Cx, Step, blocking, host_err};
use crate::machine::Machine;
use crate::userns::RANGE;

/// A sandbox's user namespace, as the later steps need it.
#[derive(Debug, Clone)]
pub(crate) struct SandboxUserns {
    /// Keeps the namespace alive until the container has joined it.
    pub fd: Arc<std::os::fd::OwnedFd>,
    /// The host uid and gid of root inside.
    pub host_id: u32,
    pub size: u32,
}

pub(crate) struct Userns;

#[async_trait]
impl Step for Userns {
    fn name(&self) -> &'static str {
        "userns"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        let Some(allocations) = machine.uids.clone() else {
            return Ok(());
        };
        let id = cx.id().clone();
        let state = cx.state.clone();
        let userns = blocking(&id.clone(), move || {
            let range = allocations
                .allocate(&id)
                .map_err(host_err("take a range of host uids", &id))?;
            let made = crate::userns::create(range.host_id)
                .map_err(host_err("make the sandbox's user namespace", &id))
                .and_then(|fd| {
                    state.give_guest_config_to(range.host_id).map_err(host_err(
                        "give the guest's config to the sandbox's root",
                        &id,
                    ))?;
                    Ok(fd)
                });
            match made {
                Ok(fd) => Ok(SandboxUserns {
                    fd: Arc::new(fd),
                    host_id: range.host_id,
                    size: RANGE,
                }),
                Err(e) => {
                    // Nothing of the sandbox uses the range yet.
                    let _ = allocations.release(&id);
                    Err(e)
                }
            }
        })
        .await?;
        cx.userns = Some(userns);
        Ok(())
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        let Some(allocations) = machine.uids.clone() else {
            return Ok(());
        };
        let m = machine.clone();
        let id2 = id.clone();
        blocking(id, move || {
            let files = m.rootfs.root().join(id2.as_str()).exists();
            let processes = m
                .cgroups
                .sandbox(id2.as_str())
                .map_err(host_err("name the cgroup", &id2))?
                .exists();
            if files || processes {
                let what = match (files, processes) {
                    (true, true) => "its files and processes remain",
                    (true, false) => "its files remain",
                    _ => "its processes remain",
                };
                return Err(host_err("keep the sandbox's host uids taken", &id2)(
                    std::io::Error::other(what),
                ));
            }
            allocations
                .release(&id2)
                .map_err(host_err("release the sandbox's host uids", &id2))
        })
        .await
    }
}
