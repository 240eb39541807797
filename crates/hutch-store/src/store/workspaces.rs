//! Workspaces: creation, lookup by id or name, quotas, deletion (with every row a workspace
//! owns), and the resources held by its sandboxes.

use async_trait::async_trait;
use hutch_core::{Quota, Usage, WorkspaceId, WorkspaceName};

use crate::error::Result;
use crate::model::*;

/// Workspaces and their quotas.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates a workspace. `Conflict` if the name is taken.
    async fn create_workspace(&self, new: NewWorkspace) -> Result<Workspace>;
    async fn get_workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>>;
    async fn get_workspace_by_name(&self, name: &WorkspaceName) -> Result<Option<Workspace>>;
    /// Every workspace, oldest first.
    async fn list_workspaces(&self) -> Result<Vec<Workspace>>;
    /// Deletes a workspace and every row it owns (keys, sandboxes, templates, jobs). The
    /// caller tears down running sandboxes first. Audit entries are kept. `false` if absent.
    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool>;
    /// Replaces a workspace's quota. `false` if absent.
    async fn set_quota(&self, id: &WorkspaceId, quota: Quota) -> Result<bool>;
    /// Resources held by one workspace's sandboxes (see `SandboxState::holds_memory`).
    async fn workspace_usage(&self, id: &WorkspaceId) -> Result<Usage>;
    /// Resources held by every sandbox (single-node: the host's usage).
    async fn total_usage(&self) -> Result<Usage>;
}
