//! Workspaces for SQLite: the `workspaces` table and usage sums over `sandboxes`. Deleting a
//! workspace relies on the schema's `ON DELETE CASCADE` for the rows it owns.

use async_trait::async_trait;
use hutch_core::{KeyId, Quota, SandboxState, Usage, WorkspaceId, WorkspaceName};
use sqlx::FromRow;
use sqlx::sqlite::SqlitePool;

use super::{
    SqliteStore, convert, corrupt, opt_parse, parse, states_where, to_i64, to_u32, to_u64, ts,
};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::store::WorkspaceStore;

#[derive(FromRow)]
struct WorkspaceRow {
    id: String,
    name: String,
    max_running_sandboxes: Option<i64>,
    max_memory_mb: Option<i64>,
    max_disk_mb: Option<i64>,
    created_by: Option<String>,
    created_at: i64,
}

impl TryFrom<WorkspaceRow> for Workspace {
    type Error = StoreError;
    fn try_from(r: WorkspaceRow) -> Result<Self> {
        Ok(Workspace {
            id: parse(&r.id, "workspace id")?,
            name: WorkspaceName::parse(&r.name).map_err(corrupt("workspace name"))?,
            quota: Quota {
                max_running_sandboxes: r
                    .max_running_sandboxes
                    .map(|v| to_u32(v, "quota"))
                    .transpose()?,
                max_memory_mb: r.max_memory_mb.map(|v| to_u64(v, "quota")).transpose()?,
                max_disk_mb: r.max_disk_mb.map(|v| to_u64(v, "quota")).transpose()?,
            },
            created_by: opt_parse(r.created_by.as_deref(), "key id")?,
            created_at: ts(r.created_at),
        })
    }
}

const WORKSPACE_COLS: &str =
    "id, name, max_running_sandboxes, max_memory_mb, max_disk_mb, created_by, created_at";

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(&self, new: NewWorkspace) -> Result<Workspace> {
        let row: WorkspaceRow = sqlx::query_as(&format!(
            "INSERT INTO workspaces ({WORKSPACE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?) \
             RETURNING {WORKSPACE_COLS}"
        ))
        .bind(new.id.as_str())
        .bind(new.name.as_str())
        .bind(new.quota.max_running_sandboxes.map(i64::from))
        .bind(
            new.quota
                .max_memory_mb
                .map(|v| to_i64(v, "quota"))
                .transpose()?,
        )
        .bind(
            new.quota
                .max_disk_mb
                .map(|v| to_i64(v, "quota"))
                .transpose()?,
        )
        .bind(new.created_by.as_ref().map(KeyId::as_str))
        .bind(new.now.unix_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("create workspace"))?;
        row.try_into()
    }

    async fn get_workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>> {
        let row: Option<WorkspaceRow> = sqlx::query_as(&format!(
            "SELECT {WORKSPACE_COLS} FROM workspaces WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("get workspace"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn get_workspace_by_name(&self, name: &WorkspaceName) -> Result<Option<Workspace>> {
        let row: Option<WorkspaceRow> = sqlx::query_as(&format!(
            "SELECT {WORKSPACE_COLS} FROM workspaces WHERE name = ?"
        ))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("get workspace by name"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        let rows: Vec<WorkspaceRow> = sqlx::query_as(&format!(
            "SELECT {WORKSPACE_COLS} FROM workspaces ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("list workspaces"))?;
        convert(rows)
    }

    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM workspaces WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("delete workspace"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_quota(&self, id: &WorkspaceId, quota: Quota) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE workspaces SET max_running_sandboxes = ?, max_memory_mb = ?, max_disk_mb = ? \
             WHERE id = ?",
        )
        .bind(quota.max_running_sandboxes.map(i64::from))
        .bind(
            quota
                .max_memory_mb
                .map(|v| to_i64(v, "quota"))
                .transpose()?,
        )
        .bind(quota.max_disk_mb.map(|v| to_i64(v, "quota")).transpose()?)
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("set quota"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn workspace_usage(&self, id: &WorkspaceId) -> Result<Usage> {
        usage(&self.pool, Some(id)).await
    }

    async fn total_usage(&self) -> Result<Usage> {
        usage(&self.pool, None).await
    }
}

async fn usage(pool: &SqlitePool, workspace: Option<&WorkspaceId>) -> Result<Usage> {
    let mem = states_where(SandboxState::holds_memory);
    let disk = states_where(SandboxState::holds_disk);
    let sql = format!(
        "SELECT \
           COALESCE(SUM(CASE WHEN state IN {mem} THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN {mem} THEN cpu_millis ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN {mem} THEN memory_mb ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN {disk} THEN disk_mb ELSE 0 END), 0) \
         FROM sandboxes WHERE (? IS NULL OR workspace_id = ?)"
    );
    let ws = workspace.map(WorkspaceId::as_str);
    let (running, cpu, memory, disk): (i64, i64, i64, i64) = sqlx::query_as(&sql)
        .bind(ws)
        .bind(ws)
        .fetch_one(pool)
        .await
        .map_err(StoreError::db("compute usage"))?;
    Ok(Usage {
        running_sandboxes: to_u32(running, "usage")?,
        cpu_millis: to_u64(cpu, "usage")?,
        memory_mb: to_u64(memory, "usage")?,
        disk_mb: to_u64(disk, "usage")?,
    })
}
