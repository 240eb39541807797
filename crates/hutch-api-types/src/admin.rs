//! Administration: workspaces and their quotas, API keys, the audit log.

use serde::{Deserialize, Serialize};

/// A workspace's quota; `null` (or absent) means unlimited. The one quota type: the control
/// plane checks it and the store keeps it as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quota {
    /// Sandboxes holding memory (creating, running, sleeping, waking, stopping).
    #[serde(default)]
    pub max_running_sandboxes: Option<u32>,
    /// Sum of `memory_mb` over those sandboxes.
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// Sum of `disk_mb` over every sandbox that is not stopped or failed.
    #[serde(default)]
    pub max_disk_mb: Option<u64>,
}

/// `POST /v1/workspaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateWorkspace {
    /// 1–63 lowercase letters, digits or `-`.
    pub name: String,
    #[serde(default)]
    pub quota: Option<Quota>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    pub quota: Quota,
    pub created_by: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceView>,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateKey {
    /// A label for people (1–64 printable characters).
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// The workspace the key belongs to; default: the caller's. Only the operator may name
    /// another one.
    #[serde(default)]
    pub workspace_id: Option<String>,
}

/// An API key as the API shows it: never the secret, except once in [`CreatedKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub role: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub created_by: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// A new key: its secret is shown here once and never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditView {
    pub seq: i64,
    pub at: String,
    pub workspace_id: Option<String>,
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    /// e.g. `sandbox.create`.
    pub action: String,
    pub object: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditList {
    pub entries: Vec<AuditView>,
    pub next_cursor: Option<String>,
}
