//! The audit log: append-only, read per workspace newest first. Entries outlive their
//! workspace.

use async_trait::async_trait;
use hutch_core::WorkspaceId;

use crate::error::Result;
use crate::model::*;

/// The append-only audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an entry; returns its sequence number.
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<i64>;
    /// A workspace's entries, newest first.
    async fn list_audit(
        &self,
        workspace: &WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>>;
}
