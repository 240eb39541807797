//! The built-in templates (`busybox`, `debian:12`): the agent builds them on its host at
//! start; [`register`] records each as a ready platform template in the store (idempotent)
//! and returns the [`LayerSource`] that maps their rows to the layers the host built.

use std::collections::HashMap;

use hutch_core::{TemplateId, TemplateRef, TemplateState, Timestamp};
use hutch_host::TemplateLayers;
use hutch_store::{NewTemplate, Store, TemplateOwner, TemplateRecord, TemplateTransition};

use super::LayerSource;
use crate::{ControlError, Result};

/// Built-in templates by reference: their layers as this host built them.
pub struct BuiltinLayers(HashMap<String, TemplateLayers>);

#[async_trait::async_trait]
impl LayerSource for BuiltinLayers {
    async fn layers(&self, t: &TemplateRecord) -> Result<TemplateLayers> {
        self.0
            .get(&t.reference.to_string())
            .cloned()
            .ok_or_else(|| {
                ControlError::from(hutch_core::Error::Unavailable(format!(
                    "template {} has no layers on this host",
                    t.reference
                )))
            })
    }
}

/// Records each of `built` as a ready platform template (those already ready are left as
/// they are) and returns their layer source.
pub async fn register(store: &dyn Store, built: Vec<TemplateLayers>) -> Result<BuiltinLayers> {
    let mut by_reference = HashMap::new();
    for layers in built {
        let reference = TemplateRef::parse(&layers.name).map_err(|e| {
            ControlError::from(hutch_core::Error::InvalidInput(format!(
                "built-in template name {}: {e}",
                layers.name
            )))
        })?;
        register_one(store, &reference, layers.layers.last().copied()).await?;
        by_reference.insert(reference.to_string(), layers);
    }
    Ok(BuiltinLayers(by_reference))
}

async fn register_one(
    store: &dyn Store,
    reference: &TemplateRef,
    digest: Option<hutch_core::Digest>,
) -> Result<()> {
    let record = match store.find_platform_template(reference).await? {
        Some(r) if r.state == TemplateState::Ready => return Ok(()),
        Some(r) => r,
        None => {
            store
                .insert_template(NewTemplate {
                    id: TemplateId::generate(),
                    owner: TemplateOwner::Platform,
                    reference: reference.clone(),
                    created_by: None,
                    now: Timestamp::now(),
                })
                .await?
        }
    };
    let mut state = record.state;
    for to in [TemplateState::Building, TemplateState::Ready] {
        if state.can_become(to) {
            store
                .transition_template(
                    &record.id,
                    TemplateTransition {
                        from: state,
                        to,
                        digest,
                        reason: None,
                        now: Timestamp::now(),
                    },
                )
                .await?;
            state = to;
        }
    }
    Ok(())
}
