//! The shapes of requests and replies that are not `hutch-core` types: what the API
//! serialises, and what the CLI in `crates/hutch/src/cli` reads (field names are part of the
//! API: extend, don't rename). Request types reject unknown fields (STYLE 6).
//!
//! With feature `openapi`, each derives `utoipa::ToSchema` for the generated document.

use std::collections::BTreeMap;

use hutch_core::{Quota, Timestamp};
use hutch_store::{
    ApiKeyRecord, AuditEntry, SandboxRecord, TemplateOwner, TemplateRecord, Workspace,
};
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

fn ts(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// A sandbox as the API shows it. `env` is not shown: it may hold secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SandboxView {
    pub id: String,
    /// `creating`, `running`, `sleeping`, `asleep`, `waking`, `stopping`, `stopped`, `failed`.
    pub state: String,
    /// `name:tag`.
    pub template: String,
    /// CPUs (fractions allowed).
    pub cpu: f64,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub pids: u32,
    /// The runtime asked for; `null` for the host's default.
    pub runtime: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub timeout_s: u64,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// When the sweeper removes it; `null`: never.
    pub expires_at: Option<String>,
    /// Why it is `failed`.
    pub failure_reason: Option<String>,
    /// The key that created it.
    pub created_by: Option<String>,
}

impl From<&SandboxRecord> for SandboxView {
    fn from(r: &SandboxRecord) -> Self {
        SandboxView {
            id: r.id.to_string(),
            state: r.state.to_string(),
            template: r.spec.template.to_string(),
            cpu: f64::from(r.spec.resources.cpu_millis) / 1000.0,
            memory_mb: r.spec.resources.memory_mb,
            disk_mb: r.spec.resources.disk_mb,
            pids: r.spec.resources.pids,
            runtime: r.spec.runtime.map(|r| r.to_string()),
            metadata: r.spec.metadata.clone(),
            timeout_s: r.spec.timeout_s,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
            expires_at: r.expires_at.map(ts),
            failure_reason: r.failure_reason.clone(),
            created_by: r.created_by.as_ref().map(ToString::to_string),
        }
    }
}

/// One page of sandboxes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TimeoutRequest {
    /// Remaining life in seconds from now.
    pub timeout_s: u64,
}

/// A template as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TemplateView {
    pub id: String,
    pub name: String,
    pub tag: String,
    /// `pending`, `building`, `ready`, `failed`.
    pub state: String,
    /// `platform` for built-in templates, else the owning workspace's id.
    pub owner: String,
    pub digest: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: String,
}

impl From<&TemplateRecord> for TemplateView {
    fn from(t: &TemplateRecord) -> Self {
        TemplateView {
            id: t.id.to_string(),
            name: t.reference.name.as_str().to_owned(),
            tag: t.reference.tag.as_str().to_owned(),
            state: t.state.to_string(),
            owner: match &t.owner {
                TemplateOwner::Platform => "platform".to_owned(),
                TemplateOwner::Workspace(w) => w.to_string(),
            },
            digest: t.digest.as_ref().map(ToString::to_string),
            failure_reason: t.failure_reason.clone(),
            created_at: ts(t.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}

/// A workspace's quota; `null` means unlimited.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QuotaBody {
    #[serde(default)]
    pub max_running_sandboxes: Option<u32>,
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    #[serde(default)]
    pub max_disk_mb: Option<u64>,
}

impl From<QuotaBody> for Quota {
    fn from(q: QuotaBody) -> Quota {
        Quota {
            max_running_sandboxes: q.max_running_sandboxes,
            max_memory_mb: q.max_memory_mb,
            max_disk_mb: q.max_disk_mb,
        }
    }
}

impl From<Quota> for QuotaBody {
    fn from(q: Quota) -> QuotaBody {
        QuotaBody {
            max_running_sandboxes: q.max_running_sandboxes,
            max_memory_mb: q.max_memory_mb,
            max_disk_mb: q.max_disk_mb,
        }
    }
}

/// `POST /v1/workspaces`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateWorkspace {
    /// 1–63 lowercase letters, digits or `-`.
    pub name: String,
    #[serde(default)]
    pub quota: Option<QuotaBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    pub quota: QuotaBody,
    pub created_by: Option<String>,
    pub created_at: String,
}

impl From<&Workspace> for WorkspaceView {
    fn from(w: &Workspace) -> Self {
        WorkspaceView {
            id: w.id.to_string(),
            name: w.name.to_string(),
            quota: w.quota.into(),
            created_by: w.created_by.as_ref().map(ToString::to_string),
            created_at: ts(w.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceView>,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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

impl From<&ApiKeyRecord> for KeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        KeyView {
            id: k.id.to_string(),
            workspace_id: k.workspace_id.to_string(),
            name: k.name.clone(),
            role: k.role.to_string(),
            prefix: k.prefix.to_string(),
            created_by: k.created_by.as_ref().map(ToString::to_string),
            created_at: ts(k.created_at),
            revoked_at: k.revoked_at.map(ts),
        }
    }
}

/// A new key: its secret is shown here once and never again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// One audit log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
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

impl From<&AuditEntry> for AuditView {
    fn from(a: &AuditEntry) -> Self {
        let e = &a.entry;
        AuditView {
            seq: a.seq,
            at: ts(e.at),
            workspace_id: e.workspace_id.as_ref().map(ToString::to_string),
            key_id: e.key_id.as_ref().map(ToString::to_string),
            request_id: e.request_id.as_ref().map(ToString::to_string),
            action: e.action.clone(),
            object: e.object.clone(),
            outcome: e.outcome.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditList {
    pub entries: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

/// A page request from a query's `limit` and `cursor`.
pub fn page(limit: Option<u32>, cursor: Option<&str>) -> hutch_store::PageRequest {
    hutch_store::PageRequest {
        limit: limit.unwrap_or(0),
        cursor: cursor.map(str::to_owned),
    }
}
