//! Keys, workspaces, quotas, templates listing and the audit log.
//!
//! Bootstrap ([`Control::bootstrap`]), on every start:
//! 1. make sure workspace `default` exists;
//! 2. if it holds no live operator key, create one: `HUTCH_ADMIN_KEY` when set (validated),
//!    else a fresh random key, which is returned once so `hutch serve` can print it once.
//!    Only the key's prefix and hash are stored; the secret is never logged.
//!
//! Authentication ([`Control::authenticate`]): parse the presented secret, look it up by
//! prefix, compare hashes in constant time; anything wrong is `unauthenticated`, without
//! saying what.
//!
//! Every other method here: authorise with `hutch_core::authorize`, act, append an audit
//! entry for mutating calls (outcome `ok`, `denied` or `failed`).

use hutch_api_types::{
    AuditList, CreateKey, CreateWorkspace, CreatedKey, KeyList, Quota, WorkspaceList, WorkspaceView,
};
use hutch_core::key::ApiKeySecret;
use hutch_core::workspace::DEFAULT_WORKSPACE;
use hutch_core::{
    Action, Error, ErrorCode, KeyId, Principal, Role, Scope, Timestamp, WorkspaceId, WorkspaceName,
    authorize,
};
use hutch_store::{
    AuditOutcome, NewApiKey, NewAuditEntry, NewWorkspace, PageRequest, SandboxFilter,
};

use crate::views;
use crate::{Caller, Control, ControlError, Result};

/// Longest key name.
const KEY_NAME_MAX: usize = 64;

/// What the first start created.
#[derive(Debug)]
pub struct Bootstrap {
    /// The operator's key, when it was generated now: print it once, never log it.
    pub generated_key: Option<ApiKeySecret>,
    /// The `default` workspace.
    pub default_workspace: WorkspaceId,
}

/// Workspaces and their quotas, borrowed from a [`Control`]: `control.workspaces()`.
pub struct Workspaces<'a> {
    pub(crate) control: &'a Control,
}

/// API keys, borrowed from a [`Control`]: `control.keys()`.
pub struct Keys<'a> {
    pub(crate) control: &'a Control,
}

/// The audit log as the API shows it, borrowed from a [`Control`]: `control.audit_log()`.
pub struct AuditLog<'a> {
    pub(crate) control: &'a Control,
}

impl Control {
    /// Steps 1–2 of the module docs.
    pub async fn bootstrap(&self) -> Result<Bootstrap> {
        let now = Timestamp::now();
        let name = WorkspaceName::default_workspace();
        let ws = match self.store().get_workspace_by_name(&name).await? {
            Some(ws) => ws,
            None => {
                self.store()
                    .create_workspace(NewWorkspace {
                        id: WorkspaceId::generate(),
                        name,
                        quota: Default::default(),
                        created_by: None,
                        now,
                    })
                    .await?
            }
        };
        let keys = self.store().list_api_keys(&ws.id).await?;
        let has_operator = keys
            .iter()
            .any(|k| k.role == Role::Operator && k.revoked_at.is_none());
        let mut generated_key = None;
        if !has_operator {
            let secret = match &self.inner.config.admin_key {
                Some(given) => ApiKeySecret::parse(given).map_err(|e| {
                    Error::InvalidInput(format!("HUTCH_ADMIN_KEY is not a valid key: {e}"))
                })?,
                None => {
                    let s = ApiKeySecret::generate();
                    generated_key = Some(s.clone());
                    s
                }
            };
            let key = self
                .store()
                .create_api_key(NewApiKey::for_secret(
                    &secret,
                    ws.id.clone(),
                    "operator",
                    Role::Operator,
                    None,
                    now,
                ))
                .await?;
            tracing::info!(key_id = %key.id, prefix = %key.prefix, "created the operator's key");
        }
        Ok(Bootstrap {
            generated_key,
            default_workspace: ws.id,
        })
    }

    /// The principal a presented secret stands for.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal> {
        let secret = ApiKeySecret::parse(secret).map_err(|_| Error::Unauthenticated)?;
        let hash = secret.hash().to_hex();
        let generation = match self.inner.keys.get(&hash) {
            Ok(principal) => return Ok(principal),
            Err(generation) => generation,
        };
        let key = self
            .store()
            .authenticate(&secret)
            .await?
            .ok_or(Error::Unauthenticated)?;
        let principal = Principal {
            key_id: key.id,
            workspace_id: key.workspace_id,
            role: key.role,
        };
        self.inner.keys.put(hash, principal.clone(), generation);
        Ok(principal)
    }

    /// Appends an audit entry; a failure to record is logged, not returned (the action has
    /// already happened).
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        workspace: Option<&WorkspaceId>,
        action: &str,
        object: Option<String>,
        outcome: AuditOutcome,
    ) {
        let entry = NewAuditEntry {
            at: Timestamp::now(),
            workspace_id: Some(
                workspace
                    .cloned()
                    .unwrap_or_else(|| caller.principal.workspace_id.clone()),
            ),
            key_id: Some(caller.principal.key_id.clone()),
            request_id: caller.request_id.clone(),
            action: action.to_owned(),
            object,
            outcome,
        };
        if action != Action::SandboxUse.as_str() {
            append_audit(self.store(), entry).await;
            return;
        }
        // `sandbox.use` (every exec and file call) is written beside the call's own work
        // instead of before its answer: the insert was 50–140 µs of a ~1.5 ms exec. Readers of
        // the log wait for writes under way ([`Control::settle_audit`]), so nothing recorded is
        // missing from a read that follows; a crash in the write's sub-millisecond window can
        // lose the entry.
        let pending = self.inner.audit_writes.clone().read_owned().await;
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            append_audit(store.as_ref(), entry).await;
            drop(pending);
        });
    }

    /// Waits until every audit entry written in the background has landed.
    pub async fn settle_audit(&self) {
        drop(self.inner.audit_writes.write().await);
    }

    /// Records the outcome of a mutating call and passes its result on.
    pub(crate) async fn audited<T>(
        &self,
        caller: &Caller,
        workspace: Option<&WorkspaceId>,
        action: Action,
        object: Option<String>,
        result: Result<T>,
    ) -> Result<T> {
        let outcome = match &result {
            Ok(_) => AuditOutcome::Ok,
            Err(e)
                if matches!(
                    e.public().code(),
                    ErrorCode::Forbidden | ErrorCode::Unauthenticated
                ) =>
            {
                AuditOutcome::Denied
            }
            Err(_) => AuditOutcome::Failed,
        };
        self.audit(caller, workspace, action.as_str(), object, outcome)
            .await;
        result
    }

    /// [`Control::audited`] for a use of sandbox `id` (exec, files, terminal) in the caller's
    /// workspace: these entries are written in the background (see `audit`).
    pub(crate) async fn audited_use<T>(
        &self,
        caller: &Caller,
        id: &str,
        result: Result<T>,
    ) -> Result<T> {
        let ws = caller.principal.workspace_id.clone();
        self.audited(
            caller,
            Some(&ws),
            Action::SandboxUse,
            Some(id.to_owned()),
            result,
        )
        .await
    }

    // --- workspaces ------------------------------------------------------------------------

    // --- keys ------------------------------------------------------------------------------

    /// The workspace a key call is about: the named one, else the caller's.
    fn key_scope(caller: &Caller, named: Option<&str>) -> Result<WorkspaceId> {
        match named {
            None => Ok(caller.principal.workspace_id.clone()),
            Some(s) => {
                WorkspaceId::parse(s).map_err(|_| Error::NotFound { kind: "workspace" }.into())
            }
        }
    }

    // --- audit log and templates -----------------------------------------------------------
}

impl From<hutch_core::QuotaError> for ControlError {
    fn from(e: hutch_core::QuotaError) -> Self {
        ControlError::Domain(e.into())
    }
}

async fn append_audit(store: &dyn hutch_store::Store, entry: NewAuditEntry) {
    let action = entry.action.clone();
    if let Err(e) = store.append_audit(entry).await {
        tracing::error!(error = %crate::error::chain(&e), action, "appending to the audit log failed");
    }
}

impl Workspaces<'_> {
    pub async fn create(&self, caller: &Caller, req: CreateWorkspace) -> Result<WorkspaceView> {
        let result = async {
            authorize(&caller.principal, Action::WorkspaceCreate, Scope::Platform)?;
            let name = WorkspaceName::parse(&req.name)
                .map_err(|e| Error::InvalidInput(format!("name: {e}")))?;
            let ws = self
                .control
                .store()
                .create_workspace(NewWorkspace {
                    id: WorkspaceId::generate(),
                    name,
                    quota: req.quota.unwrap_or_default(),
                    created_by: Some(caller.principal.key_id.clone()),
                    now: Timestamp::now(),
                })
                .await?;
            Ok(ws)
        }
        .await;
        let object = result.as_ref().ok().map(|w| w.id.to_string());
        let ws = self
            .control
            .audited(caller, None, Action::WorkspaceCreate, object, result)
            .await?;
        Ok(views::workspace(&ws))
    }

    pub async fn list(&self, caller: &Caller) -> Result<WorkspaceList> {
        authorize(&caller.principal, Action::WorkspaceList, Scope::Platform)?;
        let all = self.control.store().list_workspaces().await?;
        Ok(WorkspaceList {
            workspaces: all.iter().map(views::workspace).collect(),
        })
    }

    /// Deletes a workspace and everything it owns, its sandboxes destroyed on the host first.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let result = async {
            authorize(&caller.principal, Action::WorkspaceDelete, Scope::Platform)?;
            let id = WorkspaceId::parse(id).map_err(|_| Error::NotFound { kind: "workspace" })?;
            let ws = self
                .control
                .store()
                .get_workspace(&id)
                .await?
                .ok_or(Error::NotFound { kind: "workspace" })?;
            if ws.name.as_str() == DEFAULT_WORKSPACE {
                return Err(
                    Error::Conflict("the default workspace cannot be deleted".to_owned()).into(),
                );
            }
            let mut page = PageRequest::first(hutch_store::MAX_PAGE);
            loop {
                let batch = self
                    .control
                    .store()
                    .list_sandboxes(&id, &SandboxFilter::default(), &page)
                    .await?;
                for sb in &batch.items {
                    self.control.remove_sandbox(&sb.id).await?;
                }
                match batch.next_cursor {
                    Some(c) => page.cursor = Some(c),
                    None => break,
                }
            }
            let deleted = self.control.store().delete_workspace(&id).await;
            self.control.inner.keys.clear();
            deleted?;
            Ok(())
        }
        .await;
        self.control
            .audited(
                caller,
                None,
                Action::WorkspaceDelete,
                Some(id.to_owned()),
                result,
            )
            .await
    }

    pub async fn set_quota(
        &self,
        caller: &Caller,
        id: &str,
        quota: Quota,
    ) -> Result<WorkspaceView> {
        let result = async {
            authorize(&caller.principal, Action::QuotaSet, Scope::Platform)?;
            let id = WorkspaceId::parse(id).map_err(|_| Error::NotFound { kind: "workspace" })?;
            if !self.control.store().set_quota(&id, quota).await? {
                return Err(Error::NotFound { kind: "workspace" }.into());
            }
            self.control
                .store()
                .get_workspace(&id)
                .await?
                .ok_or_else(|| Error::NotFound { kind: "workspace" }.into())
        }
        .await;
        let ws = self
            .control
            .audited(caller, None, Action::QuotaSet, Some(id.to_owned()), result)
            .await?;
        Ok(views::workspace(&ws))
    }
}

impl Keys<'_> {
    pub async fn create(&self, caller: &Caller, req: CreateKey) -> Result<CreatedKey> {
        let ws = Control::key_scope(caller, req.workspace_id.as_deref())?;
        let result = async {
            authorize(&caller.principal, Action::KeyCreate, Scope::Workspace(&ws))?;
            let role = match req.role.as_str() {
                "admin" => Role::Admin,
                "member" => Role::Member,
                _ => {
                    return Err(
                        Error::InvalidInput("role: must be admin or member".to_owned()).into(),
                    );
                }
            };
            let name = req.name.trim();
            if name.is_empty()
                || name.chars().count() > KEY_NAME_MAX
                || name.chars().any(char::is_control)
            {
                return Err(Error::InvalidInput(format!(
                    "name: must be 1 to {KEY_NAME_MAX} characters without control characters"
                ))
                .into());
            }
            if self.control.store().get_workspace(&ws).await?.is_none() {
                return Err(Error::NotFound { kind: "workspace" }.into());
            }
            let secret = ApiKeySecret::generate();
            let key = self
                .control
                .store()
                .create_api_key(NewApiKey::for_secret(
                    &secret,
                    ws.clone(),
                    name,
                    role,
                    Some(caller.principal.key_id.clone()),
                    Timestamp::now(),
                ))
                .await?;
            Ok((key, secret))
        }
        .await;
        let object = result.as_ref().ok().map(|(k, _)| k.id.to_string());
        let (key, secret) = self
            .control
            .audited(caller, Some(&ws), Action::KeyCreate, object, result)
            .await?;
        Ok(CreatedKey {
            key: views::key(&key),
            secret: secret.expose().to_owned(),
        })
    }

    pub async fn list(&self, caller: &Caller, workspace: Option<&str>) -> Result<KeyList> {
        let ws = Control::key_scope(caller, workspace)?;
        authorize(&caller.principal, Action::KeyList, Scope::Workspace(&ws))?;
        let keys = self.control.store().list_api_keys(&ws).await?;
        Ok(KeyList {
            keys: keys.iter().map(views::key).collect(),
        })
    }

    /// Revokes a key of the caller's workspace (or, for the operator, of `workspace`).
    pub async fn revoke(&self, caller: &Caller, id: &str, workspace: Option<&str>) -> Result<()> {
        let ws = Control::key_scope(caller, workspace)?;
        let result = async {
            authorize(&caller.principal, Action::KeyRevoke, Scope::Workspace(&ws))?;
            let id = KeyId::parse(id).map_err(|_| Error::NotFound { kind: "key" })?;
            let revoked = self
                .control
                .store()
                .revoke_api_key(&ws, &id, Timestamp::now())
                .await?;
            self.control.inner.keys.clear();
            if !revoked {
                return Err(Error::NotFound { kind: "key" }.into());
            }
            Ok(())
        }
        .await;
        self.control
            .audited(
                caller,
                Some(&ws),
                Action::KeyRevoke,
                Some(id.to_owned()),
                result,
            )
            .await
    }
}

impl AuditLog<'_> {
    pub async fn list(
        &self,
        caller: &Caller,
        workspace: Option<&str>,
        page: PageRequest,
    ) -> Result<AuditList> {
        let ws = Control::key_scope(caller, workspace)?;
        authorize(&caller.principal, Action::AuditRead, Scope::Workspace(&ws))?;
        self.control.settle_audit().await;
        let page = self.control.store().list_audit(&ws, &page).await?;
        Ok(AuditList {
            entries: page.items.iter().map(views::audit).collect(),
            next_cursor: page.next_cursor,
        })
    }
}
