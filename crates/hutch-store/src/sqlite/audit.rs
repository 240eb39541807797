//! The audit log for SQLite: the append-only `audit_log` table, paged newest first by
//! sequence number.

use async_trait::async_trait;
use hutch_core::{KeyId, RequestId, WorkspaceId};
use sqlx::FromRow;

use super::{SqliteStore, convert, opt_parse, ts};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::store::AuditStore;

#[derive(FromRow)]
struct AuditRow {
    seq: i64,
    at: i64,
    workspace_id: Option<String>,
    key_id: Option<String>,
    request_id: Option<String>,
    action: String,
    object: Option<String>,
    outcome: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self> {
        Ok(AuditEntry {
            seq: r.seq,
            entry: NewAuditEntry {
                at: ts(r.at),
                workspace_id: opt_parse(r.workspace_id.as_deref(), "workspace id")?,
                key_id: opt_parse(r.key_id.as_deref(), "key id")?,
                request_id: opt_parse::<RequestId>(r.request_id.as_deref(), "request id")?,
                action: r.action,
                object: r.object,
                outcome: AuditOutcome::parse(&r.outcome)?,
            },
        })
    }
}

const AUDIT_COLS: &str = "seq, at, workspace_id, key_id, request_id, action, object, outcome";

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, e: NewAuditEntry) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, workspace_id, key_id, request_id, action, object, \
             outcome) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(e.at.unix_ms())
        .bind(e.workspace_id.as_ref().map(WorkspaceId::as_str))
        .bind(e.key_id.as_ref().map(KeyId::as_str))
        .bind(e.request_id.as_ref().map(RequestId::as_str))
        .bind(&e.action)
        .bind(e.object.as_deref())
        .bind(e.outcome.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("append audit entry"))?;
        Ok(seq)
    }

    async fn list_audit(
        &self,
        workspace: &WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let limit = page.effective_limit();
        let before: i64 = match page.cursor.as_deref() {
            None => i64::MAX,
            Some(c) => c.parse().map_err(|_| StoreError::InvalidCursor)?,
        };
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE workspace_id = ? AND seq < ? \
             ORDER BY seq DESC LIMIT ?"
        ))
        .bind(workspace.as_str())
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("list audit log"))?;
        let mut items: Vec<AuditEntry> = convert(rows)?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = if more {
            items.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
