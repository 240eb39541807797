//! Step 8, posture (R17): the guest's posture from outside — capability sets, no_new_privs,
//! seccomp mode 2, namespaces distinct from the agent's, open descriptors of allowed kinds
//! only, `/proc/cmdline` masked and `/sys` (cgroup mounts included) and `/proc/sys` read-only
//! — and that no process of the sandbox holds a descriptor of a host file.
//!
//! The guest is found as the process of the sandbox's cgroup that is PID 1 of its own pid
//! namespace; only if that fails is the runtime asked. Undo: nothing (the step only reads).

use std::sync::Arc;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_host::AgentError;
use hutch_runtime::ContainerStatus;

use super::{Cx, Step, blocking, host_err};
use crate::machine::Machine;

pub(crate) struct Posture;

#[async_trait]
impl Step for Posture {
    fn name(&self) -> &'static str {
        "posture"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        let id = cx.id().clone();
        let expected = cx.need("the expected posture", &cx.expected)?.clone();
        let rt = machine
            .runtime(cx.launch.runtime)
            .ok_or_else(|| AgentError::RuntimeUnavailable(cx.launch.runtime.to_string()))?;
        let m = machine.clone();
        let pid = blocking(&id.clone(), move || {
            let pid = match m.init_pid_from_cgroup(&id) {
                Some(pid) => pid,
                None => {
                    let info = rt
                        .state(id.as_str())
                        .map_err(host_err("read the container state", &id))?;
                    match (info.status, info.pid) {
                        (ContainerStatus::Running, Some(pid)) => pid,
                        (status, _) => {
                            return Err(AgentError::GuestNotReady {
                                id: id.clone(),
                                reason: format!("the container is {status:?} after start"),
                            });
                        }
                    }
                }
            };
            let report = m
                .posture
                .check(pid, &expected)
                .map_err(host_err("check the posture", &id))?;
            if !report.is_ok() {
                return Err(AgentError::Posture {
                    id: id.clone(),
                    mismatches: format!("{:?}", report.mismatches),
                });
            }
            let host_files = m.host_files(&id)?;
            if !host_files.is_empty() {
                return Err(AgentError::Posture {
                    id: id.clone(),
                    mismatches: format!("{host_files:?}"),
                });
            }
            u32::try_from(pid).map_err(|_| AgentError::GuestNotReady {
                id: id.clone(),
                reason: format!("bad pid {pid}"),
            })
        })
        .await?;
        cx.init_pid = Some(pid);
        Ok(())
    }

    async fn undo(&self, _machine: &Arc<Machine>, _id: &SandboxId) -> Result<(), AgentError> {
        Ok(())
    }
}
