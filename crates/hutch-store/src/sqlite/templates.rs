//! Templates for SQLite: the `templates` table, where built-in templates have the owner
//! `_platform` and no workspace, so one `owner IN (?, ?)` reads what a workspace sees.

use async_trait::async_trait;
use hutch_core::template::TemplateRef;
use hutch_core::{Digest, KeyId, TemplateId, TemplateState, WorkspaceId};
use sqlx::FromRow;

use super::{SqliteStore, convert, corrupt, opt_parse, parse, ts};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::store::TemplateStore;

const PLATFORM_OWNER: &str = "_platform";

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

#[async_trait]
impl TemplateStore for SqliteStore {
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
}
