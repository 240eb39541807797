//! API keys for SQLite: the `api_keys` table, looked up by its indexed clear prefix. The hash
//! is stored as hex; the secret never reaches this file.

use async_trait::async_trait;
use hutch_core::key::{KeyHash, KeyPrefix};
use hutch_core::{KeyId, Role, Timestamp, WorkspaceId};
use sqlx::FromRow;

use super::{SqliteStore, convert, corrupt, opt_parse, parse, ts};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::store::ApiKeyStore;

#[derive(FromRow)]
struct ApiKeyRow {
    id: String,
    workspace_id: String,
    name: String,
    role: String,
    prefix: String,
    hash: String,
    created_by: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> Result<Self> {
        Ok(ApiKeyRecord {
            id: parse(&r.id, "key id")?,
            workspace_id: parse(&r.workspace_id, "workspace id")?,
            name: r.name,
            role: parse::<Role>(&r.role, "role")?,
            prefix: KeyPrefix::parse(&r.prefix).map_err(corrupt("key prefix"))?,
            hash: KeyHash::from_hex(&r.hash).map_err(corrupt("key hash"))?,
            created_by: opt_parse(r.created_by.as_deref(), "key id")?,
            created_at: ts(r.created_at),
            revoked_at: r.revoked_at.map(ts),
        })
    }
}

const KEY_COLS: &str =
    "id, workspace_id, name, role, prefix, hash, created_by, created_at, revoked_at";

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKeyRecord> {
        let row: ApiKeyRow = sqlx::query_as(&format!(
            "INSERT INTO api_keys ({KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL) \
             RETURNING {KEY_COLS}"
        ))
        .bind(new.id.as_str())
        .bind(new.workspace_id.as_str())
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(new.prefix.as_str())
        .bind(new.hash.to_hex())
        .bind(new.created_by.as_ref().map(KeyId::as_str))
        .bind(new.now.unix_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("create api key"))?;
        row.try_into()
    }

    async fn api_keys_by_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<ApiKeyRow> =
            sqlx::query_as(&format!("SELECT {KEY_COLS} FROM api_keys WHERE prefix = ?"))
                .bind(prefix.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("look up api key"))?;
        convert(rows)
    }

    async fn list_api_keys(&self, workspace: &WorkspaceId) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE workspace_id = ? ORDER BY created_at, id"
        ))
        .bind(workspace.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("list api keys"))?;
        convert(rows)
    }

    async fn revoke_api_key(
        &self,
        workspace: &WorkspaceId,
        id: &KeyId,
        now: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? \
             WHERE workspace_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(now.unix_ms())
        .bind(workspace.as_str())
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("revoke api key"))?;
        Ok(done.rows_affected() > 0)
    }
}
