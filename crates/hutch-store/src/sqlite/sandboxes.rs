//! Sandboxes for SQLite: the `sandboxes` table (spec, env and metadata as JSON) and
//! `sandbox_metadata`, one row per metadata pair for filtering. State changes are a conditional
//! `UPDATE` on (state, generation); the sweeper and recovery queries are pinned to their indexes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use hutch_core::request::{Resources, Runtime};
use hutch_core::template::TemplateRef;
use hutch_core::{
    Generation, KeyId, SandboxId, SandboxSpec, SandboxState, TemplateId, Timestamp, Versioned,
    WorkspaceId,
};
use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::{
    SqliteStore, convert, corrupt, json_text, opt_parse, parse, states_where, to_i64, to_u32,
    to_u64, ts,
};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::store::SandboxStore;

#[derive(FromRow)]
struct SandboxRow {
    id: String,
    workspace_id: String,
    template: String,
    template_id: Option<String>,
    state: String,
    generation: i64,
    cpu_millis: i64,
    memory_mb: i64,
    disk_mb: i64,
    pids: i64,
    runtime: Option<String>,
    env: String,
    metadata: String,
    timeout_s: i64,
    expires_at: Option<i64>,
    failure_reason: Option<String>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<SandboxRow> for SandboxRecord {
    type Error = StoreError;
    fn try_from(r: SandboxRow) -> Result<Self> {
        let env: BTreeMap<String, String> =
            serde_json::from_str(&r.env).map_err(corrupt("sandbox env"))?;
        let metadata: BTreeMap<String, String> =
            serde_json::from_str(&r.metadata).map_err(corrupt("sandbox metadata"))?;
        Ok(SandboxRecord {
            id: parse(&r.id, "sandbox id")?,
            workspace_id: parse(&r.workspace_id, "workspace id")?,
            spec: SandboxSpec {
                template: TemplateRef::parse(&r.template).map_err(corrupt("template name"))?,
                resources: Resources {
                    cpu_millis: to_u32(r.cpu_millis, "cpu")?,
                    memory_mb: to_u32(r.memory_mb, "memory")?,
                    disk_mb: to_u32(r.disk_mb, "disk")?,
                    pids: to_u32(r.pids, "pids")?,
                },
                env,
                metadata,
                runtime: opt_parse::<Runtime>(r.runtime.as_deref(), "runtime")?,
                timeout_s: to_u64(r.timeout_s, "timeout")?,
            },
            template_id: opt_parse(r.template_id.as_deref(), "template id")?,
            state: parse(&r.state, "sandbox state")?,
            generation: Generation(to_u64(r.generation, "generation")?),
            expires_at: r.expires_at.map(ts),
            failure_reason: r.failure_reason,
            created_by: opt_parse(r.created_by.as_deref(), "key id")?,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        })
    }
}

const SANDBOX_COLS: &str = "id, workspace_id, template, template_id, state, generation, \
     cpu_millis, memory_mb, disk_mb, pids, runtime, env, metadata, timeout_s, expires_at, \
     failure_reason, created_by, created_at, updated_at";

fn sandbox_cursor(s: &SandboxRecord) -> String {
    format!("{}.{}", s.created_at.unix_ms(), s.id)
}

fn parse_sandbox_cursor(c: &str) -> Result<(i64, SandboxId)> {
    let (t, id) = c.split_once('.').ok_or(StoreError::InvalidCursor)?;
    let t = t.parse().map_err(|_| StoreError::InvalidCursor)?;
    let id = SandboxId::parse(id).map_err(|_| StoreError::InvalidCursor)?;
    Ok((t, id))
}

#[async_trait]
impl SandboxStore for SqliteStore {
    async fn insert_sandbox(&self, new: NewSandbox) -> Result<SandboxRecord> {
        let spec = &new.spec;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::db("insert sandbox"))?;
        let row: SandboxRow = sqlx::query_as(&format!(
            "INSERT INTO sandboxes ({SANDBOX_COLS}) \
             VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) \
             RETURNING {SANDBOX_COLS}"
        ))
        .bind(new.id.as_str())
        .bind(new.workspace_id.as_str())
        .bind(spec.template.to_string())
        .bind(new.template_id.as_ref().map(TemplateId::as_str))
        .bind(SandboxState::Creating.as_str())
        .bind(i64::from(spec.resources.cpu_millis))
        .bind(i64::from(spec.resources.memory_mb))
        .bind(i64::from(spec.resources.disk_mb))
        .bind(i64::from(spec.resources.pids))
        .bind(spec.runtime.map(Runtime::as_str))
        .bind(json_text(&spec.env, "env")?)
        .bind(json_text(&spec.metadata, "metadata")?)
        .bind(to_i64(spec.timeout_s, "timeout")?)
        .bind(new.now.plus_secs(spec.timeout_s).unix_ms())
        .bind(new.created_by.as_ref().map(KeyId::as_str))
        .bind(new.now.unix_ms())
        .bind(new.now.unix_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db("insert sandbox"))?;
        for (k, v) in &spec.metadata {
            sqlx::query("INSERT INTO sandbox_metadata (sandbox_id, key, value) VALUES (?, ?, ?)")
                .bind(new.id.as_str())
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("insert sandbox metadata"))?;
        }
        tx.commit()
            .await
            .map_err(StoreError::db("insert sandbox"))?;
        row.try_into()
    }

    async fn get_sandbox(
        &self,
        workspace: &WorkspaceId,
        id: &SandboxId,
    ) -> Result<Option<SandboxRecord>> {
        let row: Option<SandboxRow> = sqlx::query_as(&format!(
            "SELECT {SANDBOX_COLS} FROM sandboxes WHERE workspace_id = ? AND id = ?"
        ))
        .bind(workspace.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("get sandbox"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn get_sandbox_unscoped(&self, id: &SandboxId) -> Result<Option<SandboxRecord>> {
        let row: Option<SandboxRow> = sqlx::query_as(&format!(
            "SELECT {SANDBOX_COLS} FROM sandboxes WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("get sandbox"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_sandboxes(
        &self,
        workspace: &WorkspaceId,
        filter: &SandboxFilter,
        page: &PageRequest,
    ) -> Result<Page<SandboxRecord>> {
        let limit = page.effective_limit();
        let after = page
            .cursor
            .as_deref()
            .map(parse_sandbox_cursor)
            .transpose()?;
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {SANDBOX_COLS} FROM sandboxes s WHERE s.workspace_id = "
        ));
        q.push_bind(workspace.as_str());
        if let Some(state) = filter.state {
            q.push(" AND s.state = ").push_bind(state.as_str());
        }
        for (k, v) in &filter.metadata {
            q.push(
                " AND EXISTS (SELECT 1 FROM sandbox_metadata m \
                 WHERE m.sandbox_id = s.id AND m.key = ",
            )
            .push_bind(k.as_str())
            .push(" AND m.value = ")
            .push_bind(v.as_str())
            .push(")");
        }
        if let Some((t, id)) = after {
            q.push(" AND (s.created_at > ")
                .push_bind(t)
                .push(" OR (s.created_at = ")
                .push_bind(t)
                .push(" AND s.id > ")
                .push_bind(id.as_str().to_owned())
                .push("))");
        }
        q.push(" ORDER BY s.created_at, s.id LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<SandboxRow> = q
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list sandboxes"))?;
        let mut items: Vec<SandboxRecord> = convert(rows)?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = if more {
            items.last().map(sandbox_cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn transition_sandbox(&self, id: &SandboxId, t: Transition) -> Result<SandboxRecord> {
        let current = self
            .get_sandbox_unscoped(id)
            .await?
            .ok_or(StoreError::NotFound { kind: "sandbox" })?;
        let next = Versioned {
            state: current.state,
            generation: current.generation,
        }
        .advance(t.expected, t.to)?;
        let row: Option<SandboxRow> = sqlx::query_as(&format!(
            "UPDATE sandboxes SET state = ?, generation = ?, updated_at = ?, \
             failure_reason = COALESCE(?, failure_reason) \
             WHERE id = ? AND generation = ? AND state = ? RETURNING {SANDBOX_COLS}"
        ))
        .bind(next.state.as_str())
        .bind(to_i64(next.generation.0, "generation")?)
        .bind(t.now.unix_ms())
        .bind(t.reason.as_deref())
        .bind(id.as_str())
        .bind(to_i64(current.generation.0, "generation")?)
        .bind(current.state.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("transition sandbox"))?;
        match row {
            Some(row) => row.try_into(),
            // Someone else moved it between our read and our write.
            None => match self.get_sandbox_unscoped(id).await? {
                None => Err(StoreError::NotFound { kind: "sandbox" }),
                Some(now) => Err(hutch_core::TransitionError::StaleGeneration {
                    expected: t.expected,
                    actual: now.generation,
                }
                .into()),
            },
        }
    }

    async fn set_sandbox_expiry(
        &self,
        workspace: &WorkspaceId,
        id: &SandboxId,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Option<SandboxRecord>> {
        let row: Option<SandboxRow> = sqlx::query_as(&format!(
            "UPDATE sandboxes SET expires_at = ?, updated_at = ? \
             WHERE workspace_id = ? AND id = ? AND state NOT IN {} RETURNING {SANDBOX_COLS}",
            states_where(SandboxState::is_terminal)
        ))
        .bind(expires_at.map(Timestamp::unix_ms))
        .bind(now.unix_ms())
        .bind(workspace.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("set sandbox expiry"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn delete_sandbox(&self, workspace: &WorkspaceId, id: &SandboxId) -> Result<bool> {
        let done = sqlx::query(&format!(
            "DELETE FROM sandboxes WHERE workspace_id = ? AND id = ? AND state IN {}",
            states_where(SandboxState::is_terminal)
        ))
        .bind(workspace.as_str())
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("delete sandbox"))?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        match self.get_sandbox(workspace, id).await? {
            None => Ok(false),
            Some(s) => Err(StoreError::Conflict(format!(
                "sandbox is {}; stop it before removing its record",
                s.state
            ))),
        }
    }

    async fn expired_sandboxes(&self, now: Timestamp, limit: u32) -> Result<Vec<SandboxRecord>> {
        let rows: Vec<SandboxRow> = sqlx::query_as(&expired_sql())
            .bind(now.unix_ms())
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list expired sandboxes"))?;
        convert(rows)
    }

    async fn active_sandboxes(&self) -> Result<Vec<SandboxRecord>> {
        let rows: Vec<SandboxRow> = sqlx::query_as(&active_sql())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list active sandboxes"))?;
        convert(rows)
    }
}

/// The sweeper's query. `INDEXED BY` pins the plan to the `expires_at` range scan (the planner
/// would otherwise prefer the state index on small or unanalysed tables): rows come out in
/// deadline order and the scan stops at `LIMIT`. SQLite-only syntax; PostgreSQL gets its own.
fn expired_sql() -> String {
    format!(
        "SELECT {SANDBOX_COLS} FROM sandboxes INDEXED BY sandboxes_expires \
         WHERE expires_at <= ? AND state IN {} ORDER BY expires_at LIMIT ?",
        states_where(SandboxState::is_sweepable)
    )
}

/// Recovery's query: every sandbox not stopped or failed, through the state index.
fn active_sql() -> String {
    format!(
        "SELECT {SANDBOX_COLS} FROM sandboxes WHERE state IN {} ORDER BY created_at, id",
        states_where(|s| !s.is_terminal())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn plan(store: &SqliteStore, sql: &str, binds: &[i64]) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
        for b in binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(store.pool()).await.expect("explain");
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn sweeper_and_recovery_queries_use_their_indexes() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        let expired = plan(&store, &expired_sql(), &[5, 10]).await;
        assert!(
            expired.contains("USING INDEX sandboxes_expires"),
            "{expired}"
        );
        assert!(
            !expired.contains("TEMP B-TREE"),
            "sorted by the index: {expired}"
        );
        let active = plan(&store, &active_sql(), &[]).await;
        assert!(active.contains("USING INDEX sandboxes_state"), "{active}");
        let keys = plan(&store, "SELECT id FROM api_keys WHERE prefix = ?", &[1]).await;
        assert!(keys.contains("USING INDEX api_keys_prefix"), "{keys}");
        let md = plan(
            &store,
            "SELECT sandbox_id FROM sandbox_metadata WHERE key = ? AND value = ?",
            &[1, 2],
        )
        .await;
        assert!(md.contains("sandbox_metadata_kv"), "{md}");
        // The positive twin: a query on an unindexed column is a full scan, so the checks
        // above can tell the difference.
        let scan = plan(&store, "SELECT id FROM sandboxes WHERE timeout_s = ?", &[5]).await;
        assert!(scan.contains("SCAN sandboxes"), "{scan}");
        assert!(!scan.contains("INDEX"), "{scan}");
    }

    #[test]
    fn cursor_round_trip_and_rejects() {
        let id = SandboxId::generate();
        let c = format!("{}.{}", 1234, id);
        assert_eq!(parse_sandbox_cursor(&c).expect("valid"), (1234, id));
        for bad in ["", "1234", "x.sb0000000000000000000", "12.notanid"] {
            assert!(
                matches!(parse_sandbox_cursor(bad), Err(StoreError::InvalidCursor)),
                "{bad}"
            );
        }
    }
}
