//! The records the store reads and writes, and the inputs of its write methods.
//!
//! Records carry domain types from `hutch-core`; the store converts at the row boundary and
//! reports `StoreError::Corrupt` when a row does not parse.

use std::collections::BTreeMap;

use hutch_core::key::{ApiKeySecret, KeyHash, KeyPrefix};
use hutch_core::template::TemplateRef;
use hutch_core::{
    Digest, Generation, JobId, KeyId, Quota, RequestId, Role, SandboxId, SandboxSpec, SandboxState,
    TemplateId, TemplateState, Timestamp, WorkspaceId, WorkspaceName,
};

use crate::error::{Result, StoreError};

/// Largest page any list returns.
pub const MAX_PAGE: u32 = 1000;
/// Page size when the caller gives none.
pub const DEFAULT_PAGE: u32 = 100;

/// Which page of a list to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// 1 to [`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`].
    pub limit: u32,
    /// The `next_cursor` of the previous page, opaque to callers.
    pub cursor: Option<String>,
}

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when more items may follow.
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Workspaces

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: WorkspaceName,
    pub quota: Quota,
    pub created_by: Option<KeyId>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub id: WorkspaceId,
    pub name: WorkspaceName,
    pub quota: Quota,
    pub created_by: Option<KeyId>,
    pub now: Timestamp,
}

// ---------------------------------------------------------------------------------------------
// API keys

/// An API key as stored: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: KeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub role: Role,
    pub prefix: KeyPrefix,
    pub hash: KeyHash,
    pub created_by: Option<KeyId>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: KeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub role: Role,
    pub prefix: KeyPrefix,
    pub hash: KeyHash,
    pub created_by: Option<KeyId>,
    pub now: Timestamp,
}

impl NewApiKey {
    /// The row for `secret`: its prefix and hash, never the secret.
    pub fn for_secret(
        secret: &ApiKeySecret,
        workspace_id: WorkspaceId,
        name: impl Into<String>,
        role: Role,
        created_by: Option<KeyId>,
        now: Timestamp,
    ) -> Self {
        Self {
            id: KeyId::generate(),
            workspace_id,
            name: name.into(),
            role,
            prefix: secret.prefix(),
            hash: secret.hash(),
            created_by,
            now,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sandboxes

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub workspace_id: WorkspaceId,
    pub spec: SandboxSpec,
    pub template_id: Option<TemplateId>,
    pub state: SandboxState,
    pub generation: Generation,
    pub expires_at: Option<Timestamp>,
    pub failure_reason: Option<String>,
    pub created_by: Option<KeyId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewSandbox {
    pub id: SandboxId,
    pub workspace_id: WorkspaceId,
    pub spec: SandboxSpec,
    pub template_id: Option<TemplateId>,
    pub created_by: Option<KeyId>,
    /// Creation time; the sandbox expires at `now + spec.timeout_s`.
    pub now: Timestamp,
}

/// Filters of `list_sandboxes`; all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    pub state: Option<SandboxState>,
    /// Each pair must be present in the sandbox's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A state change requested of `transition_sandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The generation the caller read; the change applies only if it is still current.
    pub expected: Generation,
    pub to: SandboxState,
    /// Recorded with the change (typically when `to` is `failed`).
    pub reason: Option<String>,
    pub now: Timestamp,
}

// ---------------------------------------------------------------------------------------------
// Templates

/// Who owns a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplateOwner {
    /// Built in: every workspace sees it, none may delete it.
    Platform,
    Workspace(WorkspaceId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub id: TemplateId,
    pub owner: TemplateOwner,
    pub reference: TemplateRef,
    pub state: TemplateState,
    /// Digest of the template's layer manifest, once ready.
    pub digest: Option<Digest>,
    pub failure_reason: Option<String>,
    pub created_by: Option<KeyId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub id: TemplateId,
    pub owner: TemplateOwner,
    pub reference: TemplateRef,
    pub created_by: Option<KeyId>,
    /// Starts `pending`.
    pub now: Timestamp,
}

/// A template state change, compare-and-swap on the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateTransition {
    pub from: TemplateState,
    pub to: TemplateState,
    pub digest: Option<Digest>,
    pub reason: Option<String>,
    pub now: Timestamp,
}

// ---------------------------------------------------------------------------------------------
// Audit log

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Ok,
    /// Refused by authentication or authorisation.
    Denied,
    /// Accepted but failed.
    Failed,
}

impl AuditOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "ok" => Ok(AuditOutcome::Ok),
            "denied" => Ok(AuditOutcome::Denied),
            "failed" => Ok(AuditOutcome::Failed),
            _ => Err(StoreError::Corrupt {
                what: "audit outcome",
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub at: Timestamp,
    pub workspace_id: Option<WorkspaceId>,
    pub key_id: Option<KeyId>,
    pub request_id: Option<RequestId>,
    /// A verb such as `sandbox.create` (see `hutch_core::Action::as_str`).
    pub action: String,
    /// The object acted on, e.g. a sandbox id.
    pub object: Option<String>,
    pub outcome: AuditOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Increases with every append.
    pub seq: i64,
    pub entry: NewAuditEntry,
}

// ---------------------------------------------------------------------------------------------
// Jobs

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Build,
    Validation,
    VolumeSync,
}

impl JobKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::Build => "build",
            JobKind::Validation => "validation",
            JobKind::VolumeSync => "volume_sync",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "build" => Ok(JobKind::Build),
            "validation" => Ok(JobKind::Validation),
            "volume_sync" => Ok(JobKind::VolumeSync),
            _ => Err(StoreError::Corrupt { what: "job kind" }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "queued" => Ok(JobState::Queued),
            "running" => Ok(JobState::Running),
            "succeeded" => Ok(JobState::Succeeded),
            "failed" => Ok(JobState::Failed),
            "cancelled" => Ok(JobState::Cancelled),
            _ => Err(StoreError::Corrupt { what: "job state" }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub workspace_id: Option<WorkspaceId>,
    pub kind: JobKind,
    pub payload: serde_json::Value,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_by: Option<KeyId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub workspace_id: Option<WorkspaceId>,
    pub kind: JobKind,
    pub payload: serde_json::Value,
    /// Leases that may expire before the job is failed for good (at least 1).
    pub max_attempts: u32,
    pub created_by: Option<KeyId>,
    pub now: Timestamp,
}

/// How a leased job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Succeeded(serde_json::Value),
    Failed(String),
}
