//! Sandboxes: records with compare-and-swap state changes on (state, generation), expiry, and
//! the unscoped views the platform's own background work uses (sweeper, recovery).

use async_trait::async_trait;
use hutch_core::{SandboxId, Timestamp, WorkspaceId};

use crate::error::Result;
use crate::model::*;

/// Sandbox records and their lifecycle state.
#[async_trait]
pub trait SandboxStore: Send + Sync {
    /// Inserts a sandbox in state `creating`, generation 0, expiring `timeout_s` after `now`.
    async fn insert_sandbox(&self, new: NewSandbox) -> Result<SandboxRecord>;
    /// The sandbox if it exists *in this workspace*.
    async fn get_sandbox(
        &self,
        workspace: &WorkspaceId,
        id: &SandboxId,
    ) -> Result<Option<SandboxRecord>>;
    /// Platform-internal lookup (lifecycle manager, proxy after its own authorisation).
    async fn get_sandbox_unscoped(&self, id: &SandboxId) -> Result<Option<SandboxRecord>>;
    /// A workspace's sandboxes, oldest first, filtered and paginated.
    async fn list_sandboxes(
        &self,
        workspace: &WorkspaceId,
        filter: &SandboxFilter,
        page: &PageRequest,
    ) -> Result<Page<SandboxRecord>>;
    /// Compare-and-swap on (state, generation): applies `t` if the transition is legal and
    /// `t.expected` is the current generation, bumping the generation. `NotFound` if absent,
    /// `Transition` if illegal or stale.
    async fn transition_sandbox(&self, id: &SandboxId, t: Transition) -> Result<SandboxRecord>;
    /// Sets when a live sandbox expires (`None`: never). `None` if absent or stopped/failed.
    async fn set_sandbox_expiry(
        &self,
        workspace: &WorkspaceId,
        id: &SandboxId,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Option<SandboxRecord>>;
    /// Removes the row of a `stopped` or `failed` sandbox. `false` if absent; `Conflict` if the
    /// sandbox is still live.
    async fn delete_sandbox(&self, workspace: &WorkspaceId, id: &SandboxId) -> Result<bool>;
    /// Sweepable sandboxes whose `expires_at <= now`, earliest first, at most `limit`.
    async fn expired_sandboxes(&self, now: Timestamp, limit: u32) -> Result<Vec<SandboxRecord>>;
    /// Every sandbox not `stopped` or `failed`, for recovery at start.
    async fn active_sandboxes(&self) -> Result<Vec<SandboxRecord>>;
}
