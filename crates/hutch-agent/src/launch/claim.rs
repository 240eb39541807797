//! Step 2, claim: the runtime is usable here and every layer is cached (whether the host has
//! room is the control plane's admission, against [`hutch_host::HostAgent::capacity`]); then
//! `sandboxes/<id>/` is created (0700) and written: `meta.json` (runtime, template, layers:
//! what a restarted agent needs), the guest's token and env files.
//!
//! If the directory exists it belongs to another launch: the step fails and touches nothing.
//! Undo: forget the guest client, remove the state directory.

use std::sync::Arc;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_core::error::error_chain;
use hutch_host::AgentError;

use super::{Cx, Step, blocking, host_err};
use crate::machine::Machine;
use crate::state::Meta;

pub(crate) struct Claim;

#[async_trait]
impl Step for Claim {
    fn name(&self) -> &'static str {
        "claim"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        let m = machine.clone();
        let launch = cx.launch.clone();
        let state = cx.state.clone();
        blocking(cx.id(), move || {
            let id = &launch.id;
            if m.runtime(launch.runtime).is_none() {
                return Err(AgentError::RuntimeUnavailable(launch.runtime.to_string()));
            }
            // Pinned by the layers step before they were fetched: no eviction took them since.
            for layer in &launch.template.layers {
                if !m.layers.contains(layer) {
                    return Err(AgentError::Template {
                        name: launch.template.name.clone(),
                        reason: format!("layer {layer} is not cached on this host"),
                    });
                }
            }
            for layer in &launch.template.layers {
                if let Err(e) = m.layers.touch(layer) {
                    tracing::warn!(layer = %layer, error = %error_chain(&e), "marking a layer used");
                }
            }
            state
                .create()
                .map_err(host_err("create the sandbox state dir", id))?;
            let meta = Meta {
                runtime: launch.runtime,
                template: launch.template.name.clone(),
                layers: launch.template.layers.clone(),
            };
            if let Err(e) = state.write(&meta, &launch.guest_token, &launch.environment()) {
                // The directory is ours: leave nothing of it behind.
                let _ = state.remove();
                return Err(host_err("write the guest's config", id)(e));
            }
            Ok(())
        })
        .await
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        machine.set_client(id, None);
        let state = machine.state(id);
        let id2 = id.clone();
        blocking(id, move || {
            state
                .remove()
                .map_err(host_err("remove the state dir", &id2))
        })
        .await
    }
}
