//! The jobs queue for SQLite: the `jobs` table. Leases are taken under `BEGIN IMMEDIATE`, so
//! two workers never both see a job as free.

use async_trait::async_trait;
use hutch_core::{JobId, KeyId, Timestamp, WorkspaceId};
use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::{SqliteStore, corrupt, json_text, opt_parse, parse, to_u32, ts};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::store::JobStore;

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

#[async_trait]
impl JobStore for SqliteStore {
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
