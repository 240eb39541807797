//! Templates in the control plane: where a ready template's layers come from
//! ([`LayerSource`]) and the built-in templates this host builds at start ([`builtin`]).
//! The template builder (recipes, builds, uploads) lands here with its issue.
//!
//! Must not: build or unpack anything itself (the agent and `hutch-image` do), or know a
//! host's paths.

pub mod builtin;

use hutch_host::TemplateLayers;
use hutch_store::TemplateRecord;

use hutch_api_types::TemplateList;
use hutch_core::{Action, Scope, authorize};

use crate::{Caller, Control, Result, views};

/// Where a template's layer list comes from. The template builder owns the real answer (the
/// layer manifest in the blob store); until it is wired in, [`ManifestLayers`] passes the
/// manifest digest as the one layer and lets the agent resolve it.
#[async_trait::async_trait]
pub trait LayerSource: Send + Sync {
    async fn layers(&self, template: &TemplateRecord) -> Result<TemplateLayers>;
}

/// The default [`LayerSource`]: the template's manifest digest as its only layer, `root` as
/// its user.
pub struct ManifestLayers;

#[async_trait::async_trait]
impl LayerSource for ManifestLayers {
    async fn layers(&self, t: &TemplateRecord) -> Result<TemplateLayers> {
        Ok(TemplateLayers {
            name: t.reference.to_string(),
            layers: t.digest.into_iter().collect(),
            default_user: "root".to_owned(),
            default_workdir: None,
        })
    }
}

/// Templates as the API shows them, borrowed from a [`Control`]: `control.templates()`.
pub struct Templates<'a> {
    pub(crate) control: &'a Control,
}

impl Templates<'_> {
    /// The templates the caller's workspace can use: its own and the built-in ones.
    pub async fn list(&self, caller: &Caller) -> Result<TemplateList> {
        let ws = &caller.principal.workspace_id;
        authorize(
            &caller.principal,
            Action::TemplateRead,
            Scope::Workspace(ws),
        )?;
        let all = self.control.store().list_templates(ws).await?;
        Ok(TemplateList {
            templates: all.iter().map(views::template).collect(),
        })
    }
}
