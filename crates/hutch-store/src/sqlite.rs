//! The SQLite backend (embedded, single node).
//!
//! Connections run with WAL journaling, foreign keys on and a busy timeout. Queries are built at
//! run time (`sqlx::query*`), so no database is needed to compile. Job leasing takes the write
//! lock up front with `BEGIN IMMEDIATE`; the PostgreSQL backend will use
//! `FOR UPDATE SKIP LOCKED` instead.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use hutch_core::key::{KeyHash, KeyPrefix};
use hutch_core::request::{Resources, Runtime};
use hutch_core::template::TemplateRef;
use hutch_core::{
    Digest, Generation, JobId, KeyId, Quota, RequestId, Role, SandboxId, SandboxSpec, SandboxState,
    TemplateId, TemplateState, Timestamp, Usage, Versioned, WorkspaceId, WorkspaceName,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, QueryBuilder, Sqlite};

use crate::error::{Result, StoreError};
use crate::model::*;
use crate::store::Store;

/// How long a connection waits for the write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const PLATFORM_OWNER: &str = "_platform";

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // sqlx pings a connection before every checkout by default, a round trip to
            // the connection's worker thread for a check that only matters for networked
            // databases: an open SQLite file does not go away under us.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(StoreError::db("open database"))?;
        Self::migrated(pool).await
    }

    /// A private in-memory database (tests). One connection, kept open for the pool's life,
    /// so every query sees the same database.
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(":memory:")
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(StoreError::db("open in-memory database"))?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(Self { pool })
    }

    /// The underlying pool, for backend-specific tests (query plans, constraints).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

// ---------------------------------------------------------------------------------------------
// Row conversion

fn corrupt<E>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |_| StoreError::Corrupt { what }
}

fn parse<T: FromStr>(s: &str, what: &'static str) -> Result<T> {
    s.parse().map_err(corrupt(what))
}

fn opt_parse<T: FromStr>(s: Option<&str>, what: &'static str) -> Result<Option<T>> {
    s.map(|s| parse(s, what)).transpose()
}

fn to_u32(v: i64, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(corrupt(what))
}

fn to_u64(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(corrupt(what))
}

fn to_i64<T: TryInto<i64>>(v: T, what: &'static str) -> Result<i64> {
    v.try_into()
        .map_err(|_| StoreError::Conflict(format!("{what} is too large to store")))
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn in_list(states: impl Iterator<Item = &'static str>) -> String {
    let quoted: Vec<String> = states.map(|s| format!("'{s}'")).collect();
    format!("({})", quoted.join(", "))
}

fn states_where(pred: fn(SandboxState) -> bool) -> String {
    in_list(
        SandboxState::ALL
            .into_iter()
            .filter(|s| pred(*s))
            .map(SandboxState::as_str),
    )
}

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

#[derive(FromRow)]
struct TemplateRow {
    id: String,
    workspace_id: Option<String>,
    name: String,
    tag: String,
    state: String,
    digest: Option<String>,
    failure_reason: Option<String>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<TemplateRow> for TemplateRecord {
    type Error = StoreError;
    fn try_from(r: TemplateRow) -> Result<Self> {
        let name =
            hutch_core::template::TemplateName::parse(&r.name).map_err(corrupt("template name"))?;
        let tag =
            hutch_core::template::TemplateTag::parse(&r.tag).map_err(corrupt("template tag"))?;
        Ok(TemplateRecord {
            id: parse(&r.id, "template id")?,
            owner: match r.workspace_id {
                None => TemplateOwner::Platform,
                Some(ws) => TemplateOwner::Workspace(parse(&ws, "workspace id")?),
            },
            reference: TemplateRef::new(name, tag),
            state: parse::<TemplateState>(&r.state, "template state")?,
            digest: r
                .digest
                .as_deref()
                .map(Digest::parse)
                .transpose()
                .map_err(corrupt("template digest"))?,
            failure_reason: r.failure_reason,
            created_by: opt_parse(r.created_by.as_deref(), "key id")?,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        })
    }
}

const TEMPLATE_COLS: &str = "id, workspace_id, name, tag, state, digest, failure_reason, \
     created_by, created_at, updated_at";

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

#[derive(FromRow)]
struct JobRow {
    id: String,
    workspace_id: Option<String>,
    kind: String,
    payload: String,
    state: String,
    attempts: i64,
    max_attempts: i64,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    result: Option<String>,
    error: Option<String>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self> {
        Ok(Job {
            id: parse(&r.id, "job id")?,
            workspace_id: opt_parse(r.workspace_id.as_deref(), "workspace id")?,
            kind: JobKind::parse(&r.kind)?,
            payload: serde_json::from_str(&r.payload).map_err(corrupt("job payload"))?,
            state: JobState::parse(&r.state)?,
            attempts: to_u32(r.attempts, "job attempts")?,
            max_attempts: to_u32(r.max_attempts, "job max attempts")?,
            lease_owner: r.lease_owner,
            lease_expires_at: r.lease_expires_at.map(ts),
            result: r
                .result
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(corrupt("job result"))?,
            error: r.error,
            created_by: opt_parse(r.created_by.as_deref(), "key id")?,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        })
    }
}

const JOB_COLS: &str = "id, workspace_id, kind, payload, state, attempts, max_attempts, \
     lease_owner, lease_expires_at, result, error, created_by, created_at, updated_at";

fn convert<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

fn sandbox_cursor(s: &SandboxRecord) -> String {
    format!("{}.{}", s.created_at.unix_ms(), s.id)
}

fn parse_sandbox_cursor(c: &str) -> Result<(i64, SandboxId)> {
    let (t, id) = c.split_once('.').ok_or(StoreError::InvalidCursor)?;
    let t = t.parse().map_err(|_| StoreError::InvalidCursor)?;
    let id = SandboxId::parse(id).map_err(|_| StoreError::InvalidCursor)?;
    Ok((t, id))
}

fn json_text<T: serde::Serialize>(v: &T, what: &'static str) -> Result<String> {
    serde_json::to_string(v).map_err(|_| StoreError::Conflict(format!("{what} cannot be encoded")))
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Store for SqliteStore {
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

    async fn insert_template(&self, new: NewTemplate) -> Result<TemplateRecord> {
        let (workspace_id, owner) = match &new.owner {
            TemplateOwner::Platform => (None, PLATFORM_OWNER),
            TemplateOwner::Workspace(ws) => (Some(ws.as_str()), ws.as_str()),
        };
        let row: TemplateRow = sqlx::query_as(&format!(
            "INSERT INTO templates (id, workspace_id, owner, name, tag, state, created_by, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {TEMPLATE_COLS}"
        ))
        .bind(new.id.as_str())
        .bind(workspace_id)
        .bind(owner)
        .bind(new.reference.name.as_str())
        .bind(new.reference.tag.as_str())
        .bind(TemplateState::Pending.as_str())
        .bind(new.created_by.as_ref().map(KeyId::as_str))
        .bind(new.now.unix_ms())
        .bind(new.now.unix_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("insert template"))?;
        row.try_into()
    }

    async fn get_template(
        &self,
        workspace: &WorkspaceId,
        id: &TemplateId,
    ) -> Result<Option<TemplateRecord>> {
        let row: Option<TemplateRow> = sqlx::query_as(&format!(
            "SELECT {TEMPLATE_COLS} FROM templates WHERE id = ? AND owner IN (?, ?)"
        ))
        .bind(id.as_str())
        .bind(workspace.as_str())
        .bind(PLATFORM_OWNER)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("get template"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn find_template(
        &self,
        workspace: &WorkspaceId,
        reference: &TemplateRef,
    ) -> Result<Option<TemplateRecord>> {
        let row: Option<TemplateRow> = sqlx::query_as(&format!(
            "SELECT {TEMPLATE_COLS} FROM templates \
             WHERE name = ? AND tag = ? AND owner IN (?, ?) \
             ORDER BY CASE WHEN owner = ? THEN 1 ELSE 0 END LIMIT 1"
        ))
        .bind(reference.name.as_str())
        .bind(reference.tag.as_str())
        .bind(workspace.as_str())
        .bind(PLATFORM_OWNER)
        .bind(PLATFORM_OWNER)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("find template"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn find_platform_template(
        &self,
        reference: &TemplateRef,
    ) -> Result<Option<TemplateRecord>> {
        let row: Option<TemplateRow> = sqlx::query_as(&format!(
            "SELECT {TEMPLATE_COLS} FROM templates WHERE name = ? AND tag = ? AND owner = ?"
        ))
        .bind(reference.name.as_str())
        .bind(reference.tag.as_str())
        .bind(PLATFORM_OWNER)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("find platform template"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_templates(&self, workspace: &WorkspaceId) -> Result<Vec<TemplateRecord>> {
        let rows: Vec<TemplateRow> = sqlx::query_as(&format!(
            "SELECT {TEMPLATE_COLS} FROM templates WHERE owner IN (?, ?) \
             ORDER BY name, tag, owner"
        ))
        .bind(workspace.as_str())
        .bind(PLATFORM_OWNER)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("list templates"))?;
        convert(rows)
    }

    async fn transition_template(
        &self,
        id: &TemplateId,
        t: TemplateTransition,
    ) -> Result<TemplateRecord> {
        t.from.check_transition(t.to)?;
        let row: Option<TemplateRow> = sqlx::query_as(&format!(
            "UPDATE templates SET state = ?, digest = COALESCE(?, digest), \
             failure_reason = COALESCE(?, failure_reason), updated_at = ? \
             WHERE id = ? AND state = ? RETURNING {TEMPLATE_COLS}"
        ))
        .bind(t.to.as_str())
        .bind(t.digest.map(|d| d.to_string()))
        .bind(t.reason.as_deref())
        .bind(t.now.unix_ms())
        .bind(id.as_str())
        .bind(t.from.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("transition template"))?;
        match row {
            Some(row) => row.try_into(),
            None => {
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM templates WHERE id = ?")
                        .bind(id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(StoreError::db("transition template"))?;
                match state {
                    None => Err(StoreError::NotFound { kind: "template" }),
                    Some(s) => Err(StoreError::Conflict(format!(
                        "template is {s}, not {}",
                        t.from
                    ))),
                }
            }
        }
    }

    async fn delete_template(&self, workspace: &WorkspaceId, id: &TemplateId) -> Result<bool> {
        let Some(found) = self.get_template(workspace, id).await? else {
            return Ok(false);
        };
        if found.owner == TemplateOwner::Platform {
            return Err(StoreError::Conflict(
                "built-in templates cannot be deleted".to_owned(),
            ));
        }
        let done = sqlx::query("DELETE FROM templates WHERE id = ? AND workspace_id = ?")
            .bind(id.as_str())
            .bind(workspace.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("delete template"))?;
        Ok(done.rows_affected() > 0)
    }

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

    async fn enqueue_job(&self, new: NewJob) -> Result<Job> {
        if new.max_attempts == 0 {
            return Err(StoreError::Conflict(
                "a job needs at least one attempt".to_owned(),
            ));
        }
        let row: JobRow = sqlx::query_as(&format!(
            "INSERT INTO jobs (id, workspace_id, kind, payload, state, attempts, max_attempts, \
             created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?) \
             RETURNING {JOB_COLS}"
        ))
        .bind(new.id.as_str())
        .bind(new.workspace_id.as_ref().map(WorkspaceId::as_str))
        .bind(new.kind.as_str())
        .bind(json_text(&new.payload, "job payload")?)
        .bind(JobState::Queued.as_str())
        .bind(i64::from(new.max_attempts))
        .bind(new.created_by.as_ref().map(KeyId::as_str))
        .bind(new.now.unix_ms())
        .bind(new.now.unix_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("enqueue job"))?;
        row.try_into()
    }

    async fn get_job(&self, workspace: Option<&WorkspaceId>, id: &JobId) -> Result<Option<Job>> {
        let row: Option<JobRow> =
            sqlx::query_as(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?"))
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("get job"))?;
        let job: Option<Job> = row.map(TryInto::try_into).transpose()?;
        Ok(job.filter(|j| workspace.is_none() || j.workspace_id.as_ref() == workspace))
    }

    /// Leasing, in one `BEGIN IMMEDIATE` transaction (the write lock is taken first, so two
    /// workers never both read the same job as free):
    /// 1. jobs whose lease expired with no attempts left become `failed`;
    /// 2. the oldest queued job of the wanted kinds, or a running one whose lease expired, is
    ///    picked;
    /// 3. it becomes `running` under `owner` with a new deadline and one more attempt.
    async fn lease_job(
        &self,
        owner: &str,
        kinds: &[JobKind],
        now: Timestamp,
        lease_ms: i64,
    ) -> Result<Option<Job>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db("lease job"))?;
        sqlx::query(
            "UPDATE jobs SET state = 'failed', error = 'lease expired on the last attempt', \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ? \
             WHERE state = 'running' AND lease_expires_at <= ? AND attempts >= max_attempts",
        )
        .bind(now.unix_ms())
        .bind(now.unix_ms())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("lease job"))?;
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id FROM jobs WHERE (state = 'queued' OR (state = 'running' \
             AND lease_expires_at <= ",
        );
        q.push_bind(now.unix_ms()).push(")) AND kind IN (");
        let mut sep = q.separated(", ");
        for k in kinds {
            sep.push_bind(k.as_str());
        }
        q.push(") ORDER BY created_at, id LIMIT 1");
        let picked: Option<String> = q
            .build_query_scalar()
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("lease job"))?;
        let Some(id) = picked else {
            tx.commit().await.map_err(StoreError::db("lease job"))?;
            return Ok(None);
        };
        let row: JobRow = sqlx::query_as(&format!(
            "UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires_at = ?, \
             attempts = attempts + 1, updated_at = ? WHERE id = ? RETURNING {JOB_COLS}"
        ))
        .bind(owner)
        .bind(now.plus_ms(lease_ms).unix_ms())
        .bind(now.unix_ms())
        .bind(&id)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db("lease job"))?;
        tx.commit().await.map_err(StoreError::db("lease job"))?;
        row.try_into().map(Some)
    }

    async fn renew_job_lease(
        &self,
        id: &JobId,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
    ) -> Result<Job> {
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET lease_expires_at = ?, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_owner = ? RETURNING {JOB_COLS}"
        ))
        .bind(now.plus_ms(lease_ms).unix_ms())
        .bind(now.unix_ms())
        .bind(id.as_str())
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("renew job lease"))?;
        self.leased_row(id, row).await
    }

    async fn complete_job(
        &self,
        id: &JobId,
        owner: &str,
        outcome: JobOutcome,
        now: Timestamp,
    ) -> Result<Job> {
        let (state, result, error) = match &outcome {
            JobOutcome::Succeeded(v) => {
                (JobState::Succeeded, Some(json_text(v, "job result")?), None)
            }
            JobOutcome::Failed(e) => (JobState::Failed, None, Some(e.as_str())),
        };
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET state = ?, result = ?, error = ?, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_owner = ? RETURNING {JOB_COLS}"
        ))
        .bind(state.as_str())
        .bind(result)
        .bind(error)
        .bind(now.unix_ms())
        .bind(id.as_str())
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("complete job"))?;
        self.leased_row(id, row).await
    }

    async fn cancel_job(
        &self,
        workspace: Option<&WorkspaceId>,
        id: &JobId,
        now: Timestamp,
    ) -> Result<Job> {
        let Some(job) = self.get_job(workspace, id).await? else {
            return Err(StoreError::NotFound { kind: "job" });
        };
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = ? WHERE id = ? AND state IN ('queued', 'running') RETURNING {JOB_COLS}"
        ))
        .bind(now.unix_ms())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("cancel job"))?;
        match row {
            Some(row) => row.try_into(),
            None => Err(StoreError::Conflict(format!(
                "job already {}",
                self.get_job(None, id)
                    .await?
                    .map_or(job.state, |j| j.state)
                    .as_str()
            ))),
        }
    }
}

impl SqliteStore {
    /// The row a lease-holder's update returned, or why there was none.
    async fn leased_row(&self, id: &JobId, row: Option<JobRow>) -> Result<Job> {
        match row {
            Some(row) => row.try_into(),
            None => match self.get_job(None, id).await? {
                None => Err(StoreError::NotFound { kind: "job" }),
                Some(j) => Err(StoreError::Conflict(format!(
                    "job lease not held (job is {})",
                    j.state.as_str()
                ))),
            },
        }
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
