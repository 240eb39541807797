//! The conformance suite every [`Store`] implementation must pass.
//!
//! Call [`run`] with a fresh, migrated store. Each check creates its own workspaces with random
//! IDs; checks that read global views (expiry sweeps, jobs) use times and data no other check
//! produces. A failure panics with the check's name, like any test assertion.
//!
//! This file holds [`run`] and the fixtures several checks share; each aggregate's checks live in
//! the file of the same name as its trait's (`workspaces.rs`, `api_keys.rs`, `sandboxes.rs`,
//! `templates.rs`, `audit.rs`, `jobs.rs`).

#![allow(clippy::unwrap_used)]

mod api_keys;
mod audit;
mod jobs;
mod sandboxes;
mod templates;
mod workspaces;

use std::collections::BTreeMap;

use hutch_core::request::CreateSandboxRequest;
use hutch_core::{
    KeyId, Quota, SandboxId, SandboxSpec, SandboxState, Timestamp, WorkspaceId, WorkspaceName,
};

use crate::model::*;
use crate::prelude::*;

/// Runs every check against `store`, which must be fresh (no jobs, no sandboxes).
pub async fn run(store: &dyn Store) {
    workspaces::workspaces(store).await;
    api_keys::api_keys(store).await;
    sandboxes::sandboxes_scoping_and_cas(store).await;
    sandboxes::sandbox_listing(store).await;
    sandboxes::sandbox_expiry_and_recovery(store).await;
    workspaces::usage(store).await;
    templates::templates(store).await;
    audit::audit_log(store).await;
    jobs::jobs(store).await;
    workspaces::workspace_delete_cascades(store).await;
}

const T0: i64 = 1_700_000_000_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

async fn new_workspace(store: &dyn Store) -> WorkspaceId {
    let id = WorkspaceId::generate();
    let name = WorkspaceName::parse(&format!("w{}", &id.as_str()[2..])).unwrap();
    store
        .create_workspace(NewWorkspace {
            id: id.clone(),
            name,
            quota: Quota::default(),
            created_by: None,
            now: at(T0),
        })
        .await
        .unwrap();
    id
}

fn spec(template: &str, metadata: &[(&str, &str)], timeout_s: u64) -> SandboxSpec {
    SandboxSpec::try_from(CreateSandboxRequest {
        template: template.to_owned(),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        timeout_s: Some(timeout_s),
        ..Default::default()
    })
    .unwrap()
}

async fn new_sandbox(
    store: &dyn Store,
    ws: &WorkspaceId,
    metadata: &[(&str, &str)],
    now: i64,
    timeout_s: u64,
) -> SandboxRecord {
    store
        .insert_sandbox(NewSandbox {
            id: SandboxId::generate(),
            workspace_id: ws.clone(),
            spec: spec("busybox", metadata, timeout_s),
            template_id: None,
            created_by: Some(KeyId::generate()),
            now: at(now),
        })
        .await
        .unwrap()
}

async fn move_to(store: &dyn Store, s: &SandboxRecord, path: &[SandboxState]) -> SandboxRecord {
    let mut cur = s.clone();
    for (i, to) in path.iter().enumerate() {
        cur = store
            .transition_sandbox(
                &cur.id,
                Transition {
                    expected: cur.generation,
                    to: *to,
                    reason: None,
                    now: at(T0 + i as i64 + 1),
                },
            )
            .await
            .unwrap();
    }
    cur
}
