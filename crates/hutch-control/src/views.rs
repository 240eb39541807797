//! Store records as the API shows them: the views of `hutch-api-types` are filled in here
//! (their field names are part of the API: extend, don't rename), and a list query's page
//! becomes the store's. Functions rather than `From` impls, as both sides are other crates'
//! types.

use hutch_api_types::{AuditView, KeyView, SandboxView, TemplateView, WorkspaceView};
use hutch_core::Timestamp;
use hutch_store::{
    ApiKeyRecord, AuditEntry, SandboxRecord, TemplateOwner, TemplateRecord, Workspace,
};

fn ts(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// A sandbox; its `env` is left out: it may hold secrets.
pub fn sandbox(r: &SandboxRecord) -> SandboxView {
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

pub fn template(t: &TemplateRecord) -> TemplateView {
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

pub fn workspace(w: &Workspace) -> WorkspaceView {
    WorkspaceView {
        id: w.id.to_string(),
        name: w.name.to_string(),
        quota: w.quota,
        created_by: w.created_by.as_ref().map(ToString::to_string),
        created_at: ts(w.created_at),
    }
}

/// A key, never its secret.
pub fn key(k: &ApiKeyRecord) -> KeyView {
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

pub fn audit(a: &AuditEntry) -> AuditView {
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

/// A page request from a query's `limit` and `cursor`.
pub fn page(limit: Option<u32>, cursor: Option<&str>) -> hutch_store::PageRequest {
    hutch_store::PageRequest {
        limit: limit.unwrap_or(0),
        cursor: cursor.map(str::to_owned),
    }
}
