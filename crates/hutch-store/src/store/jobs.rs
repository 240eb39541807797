//! The jobs queue: enqueue, lease (at most one worker holds a job), renew, complete, cancel.

use async_trait::async_trait;
use hutch_core::{JobId, Timestamp, WorkspaceId};

use crate::error::Result;
use crate::model::*;

/// The background jobs queue.
#[async_trait]
pub trait JobStore: Send + Sync {
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
