//! Templates: built-in ones every workspace sees and a workspace's own, which shadow them by
//! `name:tag`, with compare-and-swap state changes.

use async_trait::async_trait;
use hutch_core::template::TemplateRef;
use hutch_core::{TemplateId, WorkspaceId};

use crate::error::Result;
use crate::model::*;

/// Built-in and per-workspace templates.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Inserts a template in state `pending`. `Conflict` if the owner already has `name:tag`.
    async fn insert_template(&self, new: NewTemplate) -> Result<TemplateRecord>;
    /// A template visible to `workspace` (its own or a built-in one).
    async fn get_template(
        &self,
        workspace: &WorkspaceId,
        id: &TemplateId,
    ) -> Result<Option<TemplateRecord>>;
    /// Resolves `name:tag` for `workspace`: its own template first, else the built-in one.
    async fn find_template(
        &self,
        workspace: &WorkspaceId,
        reference: &TemplateRef,
    ) -> Result<Option<TemplateRecord>>;
    /// A built-in template by name.
    async fn find_platform_template(
        &self,
        reference: &TemplateRef,
    ) -> Result<Option<TemplateRecord>>;
    /// Every template `workspace` sees, by name and tag.
    async fn list_templates(&self, workspace: &WorkspaceId) -> Result<Vec<TemplateRecord>>;
    /// Compare-and-swap on the template's state.
    async fn transition_template(
        &self,
        id: &TemplateId,
        t: TemplateTransition,
    ) -> Result<TemplateRecord>;
    /// Deletes a template of `workspace`. `false` if absent; `Conflict` for a built-in one.
    async fn delete_template(&self, workspace: &WorkspaceId, id: &TemplateId) -> Result<bool>;
}
