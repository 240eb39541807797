//! Step 4, cgroup: the sandbox's cgroup is `<parent>/<id>` in every controller; the runtime
//! creates it from the bundle's `cgroupsPath` with the memory (no swap), pids and CPU limits.
//! This step names it for the bundle.
//!
//! Undo: kill whatever is left in the cgroup and remove its directories (with a fixed
//! `cgroupsPath` they outlive the container).

use std::sync::Arc;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_host::AgentError;

use super::{Cx, Step, blocking, host_err};
use crate::machine::Machine;

pub(crate) struct Cgroup;

#[async_trait]
impl Step for Cgroup {
    fn name(&self) -> &'static str {
        "cgroup"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        let cgroup = machine
            .cgroups
            .sandbox(cx.id().as_str())
            .map_err(host_err("name the cgroup", cx.id()))?;
        cx.cgroup_path = Some(cgroup.oci_path());
        Ok(())
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        let m = machine.clone();
        let id2 = id.clone();
        blocking(id, move || {
            let cg = m
                .cgroups
                .sandbox(id2.as_str())
                .map_err(host_err("name the cgroup", &id2))?;
            // Both run: a failed kill must not keep the directories from going.
            let killed = cg
                .kill_all(hutch_cgroup::Signal::KILL)
                .map_err(host_err("kill the cgroup", &id2));
            let removed = cg.remove().map_err(host_err("remove the cgroup", &id2));
            killed.and(removed)
        })
        .await
    }
}
