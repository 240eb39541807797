//! Roles and the one authorisation table.
//!
//! Every API route names an [`Action`] and the workspace it touches; [`authorize`] is the only
//! place that decides. Roles are ordered: `member` < `admin` < `operator`. A key belongs to one
//! workspace; the operator's key belongs to workspace `default` and may act in every workspace.
//! A non-operator naming another workspace gets `not_found`, exactly as if it did not exist (R11).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::{KeyId, WorkspaceId};

/// The role an API key carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Uses sandboxes, templates, functions in its workspace.
    Member,
    /// A member who also manages its workspace's keys and volumes and reads its audit log.
    Admin,
    /// The platform operator: manages workspaces and quotas, sees every workspace.
    Operator,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role must be one of operator, admin, member")]
pub struct RoleParseError;

impl FromStr for Role {
    type Err = RoleParseError;
    fn from_str(s: &str) -> Result<Self, RoleParseError> {
        match s {
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            _ => Err(RoleParseError),
        }
    }
}

/// Everything a caller can ask for, as far as authorisation is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    // Platform.
    WorkspaceCreate,
    WorkspaceList,
    WorkspaceDelete,
    QuotaSet,
    // Workspace administration.
    WorkspaceRead,
    KeyCreate,
    KeyList,
    KeyRevoke,
    AuditRead,
    VolumeCreate,
    VolumeDelete,
    // Workspace use.
    SandboxCreate,
    SandboxRead,
    SandboxUse,
    SandboxLifecycle,
    SandboxDelete,
    TemplateCreate,
    TemplateRead,
    TemplateDelete,
    VolumeRead,
    VolumeWrite,
    FunctionUpload,
    FunctionInvoke,
    JobRead,
    JobCancel,
}

impl Action {
    pub const ALL: [Action; 25] = [
        Action::WorkspaceCreate,
        Action::WorkspaceList,
        Action::WorkspaceDelete,
        Action::QuotaSet,
        Action::WorkspaceRead,
        Action::KeyCreate,
        Action::KeyList,
        Action::KeyRevoke,
        Action::AuditRead,
        Action::VolumeCreate,
        Action::VolumeDelete,
        Action::SandboxCreate,
        Action::SandboxRead,
        Action::SandboxUse,
        Action::SandboxLifecycle,
        Action::SandboxDelete,
        Action::TemplateCreate,
        Action::TemplateRead,
        Action::TemplateDelete,
        Action::VolumeRead,
        Action::VolumeWrite,
        Action::FunctionUpload,
        Action::FunctionInvoke,
        Action::JobRead,
        Action::JobCancel,
    ];

    /// A short verb phrase for messages and the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::WorkspaceCreate => "workspace.create",
            Action::WorkspaceList => "workspace.list",
            Action::WorkspaceDelete => "workspace.delete",
            Action::QuotaSet => "workspace.set_quota",
            Action::WorkspaceRead => "workspace.read",
            Action::KeyCreate => "key.create",
            Action::KeyList => "key.list",
            Action::KeyRevoke => "key.revoke",
            Action::AuditRead => "audit.read",
            Action::VolumeCreate => "volume.create",
            Action::VolumeDelete => "volume.delete",
            Action::SandboxCreate => "sandbox.create",
            Action::SandboxRead => "sandbox.read",
            Action::SandboxUse => "sandbox.use",
            Action::SandboxLifecycle => "sandbox.lifecycle",
            Action::SandboxDelete => "sandbox.delete",
            Action::TemplateCreate => "template.create",
            Action::TemplateRead => "template.read",
            Action::TemplateDelete => "template.delete",
            Action::VolumeRead => "volume.read",
            Action::VolumeWrite => "volume.write",
            Action::FunctionUpload => "function.upload",
            Action::FunctionInvoke => "function.invoke",
            Action::JobRead => "job.read",
            Action::JobCancel => "job.cancel",
        }
    }

    /// Actions about the platform itself rather than one workspace.
    pub const fn is_platform(self) -> bool {
        matches!(
            self,
            Action::WorkspaceCreate
                | Action::WorkspaceList
                | Action::WorkspaceDelete
                | Action::QuotaSet
        )
    }

    /// The least role that may perform this action.
    pub const fn min_role(self) -> Role {
        match self {
            Action::WorkspaceCreate
            | Action::WorkspaceList
            | Action::WorkspaceDelete
            | Action::QuotaSet => Role::Operator,
            Action::WorkspaceRead
            | Action::KeyCreate
            | Action::KeyList
            | Action::KeyRevoke
            | Action::AuditRead
            | Action::VolumeCreate
            | Action::VolumeDelete => Role::Admin,
            Action::SandboxCreate
            | Action::SandboxRead
            | Action::SandboxUse
            | Action::SandboxLifecycle
            | Action::SandboxDelete
            | Action::TemplateCreate
            | Action::TemplateRead
            | Action::TemplateDelete
            | Action::VolumeRead
            | Action::VolumeWrite
            | Action::FunctionUpload
            | Action::FunctionInvoke
            | Action::JobRead
            | Action::JobCancel => Role::Member,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: KeyId,
    pub workspace_id: WorkspaceId,
    pub role: Role,
}

/// What an action applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The platform as a whole (workspace creation and listing).
    Platform,
    /// One workspace (its keys, sandboxes, audit log, quota...).
    Workspace(&'a WorkspaceId),
}

/// Decides whether `who` may perform `action` on `scope`. Pure.
///
/// 1. Platform actions need the operator role, whatever the scope.
/// 2. A workspace other than the caller's own is `not_found` unless the caller is the operator.
/// 3. Otherwise the caller's role must be at least the action's minimum role.
pub fn authorize(who: &Principal, action: Action, scope: Scope<'_>) -> Result<(), Error> {
    let forbidden = Error::Forbidden {
        action: action.as_str(),
    };
    if action.is_platform() {
        return if who.role == Role::Operator {
            Ok(())
        } else {
            Err(forbidden)
        };
    }
    match scope {
        Scope::Platform => {
            // A workspace action needs a workspace: only the operator may name none.
            if who.role != Role::Operator {
                return Err(forbidden);
            }
        }
        Scope::Workspace(ws) => {
            if *ws != who.workspace_id && who.role != Role::Operator {
                return Err(Error::NotFound { kind: "workspace" });
            }
        }
    }
    if who.role >= action.min_role() {
        Ok(())
    } else {
        Err(forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn principal(role: Role, ws: &WorkspaceId) -> Principal {
        Principal {
            key_id: KeyId::generate(),
            workspace_id: ws.clone(),
            role,
        }
    }

    #[test]
    fn authorisation_table() {
        use Action::*;
        let own = WorkspaceId::generate();
        let other = WorkspaceId::generate();
        // (role, action, scope is own?, expected outcome)
        let ok: Result<(), ErrorCode> = Ok(());
        let forbidden = Err(ErrorCode::Forbidden);
        let hidden = Err(ErrorCode::NotFound);
        type Row = (Role, Action, Option<bool>, Result<(), ErrorCode>);
        let table: &[Row] = &[
            // Platform actions: operator only.
            (Role::Operator, WorkspaceCreate, None, ok),
            (Role::Operator, WorkspaceList, None, ok),
            (Role::Operator, WorkspaceDelete, Some(false), ok),
            (Role::Operator, QuotaSet, Some(false), ok),
            (Role::Admin, WorkspaceCreate, None, forbidden),
            (Role::Admin, WorkspaceList, None, forbidden),
            (Role::Admin, WorkspaceDelete, Some(true), forbidden),
            (Role::Admin, QuotaSet, Some(true), forbidden),
            (Role::Member, WorkspaceCreate, None, forbidden),
            (Role::Member, QuotaSet, Some(true), forbidden),
            // Key management and audit: admin of the workspace, or the operator.
            (Role::Admin, KeyCreate, Some(true), ok),
            (Role::Admin, KeyList, Some(true), ok),
            (Role::Admin, KeyRevoke, Some(true), ok),
            (Role::Admin, AuditRead, Some(true), ok),
            (Role::Member, KeyCreate, Some(true), forbidden),
            (Role::Member, KeyList, Some(true), forbidden),
            (Role::Member, KeyRevoke, Some(true), forbidden),
            (Role::Member, AuditRead, Some(true), forbidden),
            (Role::Member, VolumeCreate, Some(true), forbidden),
            (Role::Operator, KeyCreate, Some(false), ok),
            (Role::Operator, AuditRead, Some(false), ok),
            // Another workspace is invisible to non-operators.
            (Role::Admin, KeyCreate, Some(false), hidden),
            (Role::Admin, SandboxRead, Some(false), hidden),
            (Role::Member, SandboxCreate, Some(false), hidden),
            (Role::Member, SandboxUse, Some(false), hidden),
            // Using sandboxes: every role, in its own workspace.
            (Role::Member, SandboxCreate, Some(true), ok),
            (Role::Member, SandboxRead, Some(true), ok),
            (Role::Member, SandboxUse, Some(true), ok),
            (Role::Member, SandboxLifecycle, Some(true), ok),
            (Role::Member, SandboxDelete, Some(true), ok),
            (Role::Member, TemplateRead, Some(true), ok),
            (Role::Admin, SandboxCreate, Some(true), ok),
            (Role::Operator, SandboxCreate, Some(false), ok),
            // Workspace actions without a workspace: operator only.
            (Role::Member, SandboxRead, None, forbidden),
            (Role::Operator, SandboxRead, None, ok),
        ];
        for (role, action, own_scope, want) in table {
            let who = principal(*role, &own);
            let scope = match own_scope {
                None => Scope::Platform,
                Some(true) => Scope::Workspace(&own),
                Some(false) => Scope::Workspace(&other),
            };
            let got = authorize(&who, *action, scope).map_err(|e| e.code());
            assert_eq!(got, *want, "{role} {action:?} {own_scope:?}");
        }
    }

    #[test]
    fn roles_are_ordered_and_every_action_is_reachable() {
        assert!(Role::Member < Role::Admin && Role::Admin < Role::Operator);
        let ws = WorkspaceId::generate();
        let op = principal(Role::Operator, &ws);
        for a in Action::ALL {
            assert!(authorize(&op, a, Scope::Workspace(&ws)).is_ok(), "{a:?}");
        }
        let member = principal(Role::Member, &ws);
        for a in Action::ALL {
            let allowed = authorize(&member, a, Scope::Workspace(&ws)).is_ok();
            assert_eq!(allowed, a.min_role() == Role::Member, "{a:?}");
        }
    }

    #[test]
    fn role_strings_round_trip() {
        for r in [Role::Member, Role::Admin, Role::Operator] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            let json = serde_json::to_string(&r).expect("serialise");
            assert_eq!(json, format!("\"{r}\""));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
