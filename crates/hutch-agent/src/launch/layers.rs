//! Step 1, layers: pin the template's layers, then fetch from the blob store any the host
//! cache lacks (one download per layer at a time, whatever the number of launches).
//!
//! The pin comes first, so an eviction for another launch cannot take a layer between its
//! fetch and this launch's claim; from the claim on, `meta.json` records the layers too.
//! Undo: unpin (pins are keyed by sandbox id; ids are random, so a launch never shares one
//! with another sandbox).

use std::sync::Arc;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_host::AgentError;

use super::{Cx, Step};
use crate::machine::Machine;

pub(crate) struct Layers;

#[async_trait]
impl Step for Layers {
    fn name(&self) -> &'static str {
        "layers"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        machine.pin(cx.id(), &cx.launch.template.layers);
        if let Err(e) = crate::local::fetch_layers(machine, &cx.launch.template).await {
            machine.unpin(cx.id());
            return Err(e);
        }
        Ok(())
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        machine.unpin(id);
        Ok(())
    }
}
