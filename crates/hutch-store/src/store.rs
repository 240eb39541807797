//! The `Store` trait: everything Hutch keeps about workspaces, keys, sandboxes, templates,
//! the audit log and jobs. One implementation per database; all must pass
//! [`crate::conformance`].
//!
//! Scoping rule (R11): every read of a tenant's object takes the workspace id, and another
//! workspace's object is simply `None` / `NotFound`. The few unscoped reads
//! (`get_sandbox_unscoped`, `active_sandboxes`, `expired_sandboxes`) serve the platform's own
//! background work and must never be reachable with a client-chosen id without a scope check.

use async_trait::async_trait;
use hutch_core::key::{ApiKeySecret, KeyPrefix};
use hutch_core::template::TemplateRef;
use hutch_core::{
    JobId, KeyId, Quota, SandboxId, TemplateId, Timestamp, Usage, WorkspaceId, WorkspaceName,
};

use crate::error::Result;
use crate::model::*;

#[async_trait]
pub trait Store: Send + Sync {
    // --- workspaces --------------------------------------------------------------------------

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

    // --- API keys ----------------------------------------------------------------------------

    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKeyRecord>;
    /// Every key (revoked ones included) whose clear prefix is `prefix`.
    async fn api_keys_by_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<ApiKeyRecord>>;
    /// A workspace's keys, oldest first, revoked ones included.
    async fn list_api_keys(&self, workspace: &WorkspaceId) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes a key of `workspace`. `false` if absent, in another workspace, or already revoked.
    async fn revoke_api_key(
        &self,
        workspace: &WorkspaceId,
        id: &KeyId,
        now: Timestamp,
    ) -> Result<bool>;

    /// The live key matching `secret`: looked up by prefix, then compared by hash in constant
    /// time. Revoked keys never authenticate.
    async fn authenticate(&self, secret: &ApiKeySecret) -> Result<Option<ApiKeyRecord>> {
        let presented = secret.hash();
        let mut found = None;
        for candidate in self.api_keys_by_prefix(&secret.prefix()).await? {
            // Compare every candidate so timing does not depend on which one matches.
            if candidate.hash.ct_eq_hash(&presented) && candidate.revoked_at.is_none() {
                found = Some(candidate);
            }
        }
        Ok(found)
    }

    // --- sandboxes ---------------------------------------------------------------------------

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

    // --- templates ---------------------------------------------------------------------------

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

    // --- audit log ---------------------------------------------------------------------------

    /// Appends an entry; returns its sequence number.
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<i64>;
    /// A workspace's entries, newest first.
    async fn list_audit(
        &self,
        workspace: &WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>>;

    // --- jobs --------------------------------------------------------------------------------

    async fn enqueue_job(&self, new: NewJob) -> Result<Job>;
    /// A job; with `Some(workspace)`, only if it belongs to that workspace.
    async fn get_job(&self, workspace: Option<&WorkspaceId>, id: &JobId) -> Result<Option<Job>>;
    /// Leases the oldest queued job of one of `kinds` (or a running one whose lease expired)
    /// to `owner` until `now + lease_ms`. At most one worker wins each job.
    async fn lease_job(
        &self,
        owner: &str,
        kinds: &[JobKind],
        now: Timestamp,
        lease_ms: i64,
    ) -> Result<Option<Job>>;
    /// Extends a lease `owner` still holds. `Conflict` if it lost the lease.
    async fn renew_job_lease(
        &self,
        id: &JobId,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
    ) -> Result<Job>;
    /// Finishes a job `owner` holds. `Conflict` if it no longer holds the lease.
    async fn complete_job(
        &self,
        id: &JobId,
        owner: &str,
        outcome: JobOutcome,
        now: Timestamp,
    ) -> Result<Job>;
    /// Cancels a queued or running job (with `Some(workspace)`, only that workspace's).
    /// `NotFound` if absent or not visible, `Conflict` if already finished.
    async fn cancel_job(
        &self,
        workspace: Option<&WorkspaceId>,
        id: &JobId,
        now: Timestamp,
    ) -> Result<Job>;
}
