//! Conformance checks for [`WorkspaceStore`]: creation, lookup, quotas, usage sums, and
//! deletion taking every row the workspace owns with it (audit entries excepted).

use hutch_core::key::ApiKeySecret;
use hutch_core::template::TemplateRef;
use hutch_core::{JobId, KeyId, Quota, Role, SandboxState, TemplateId, WorkspaceId, WorkspaceName};

use super::{T0, at, move_to, new_sandbox, new_workspace};
use crate::error::StoreError;
use crate::model::*;
use crate::prelude::*;

pub(super) async fn workspaces(store: &dyn Store) {
    let id = WorkspaceId::generate();
    let name = WorkspaceName::parse(&format!("team-{}", &id.as_str()[2..])).unwrap();
    let creator = KeyId::generate();
    let quota = Quota {
        max_running_sandboxes: Some(3),
        max_memory_mb: Some(4096),
        max_disk_mb: None,
    };
    let ws = store
        .create_workspace(NewWorkspace {
            id: id.clone(),
            name: name.clone(),
            quota,
            created_by: Some(creator.clone()),
            now: at(T0),
        })
        .await
        .unwrap();
    assert_eq!(ws.id, id);
    assert_eq!(ws.quota, quota);
    assert_eq!(ws.created_by, Some(creator));
    assert_eq!(store.get_workspace(&id).await.unwrap(), Some(ws.clone()));
    assert_eq!(
        store.get_workspace_by_name(&name).await.unwrap(),
        Some(ws.clone())
    );
    assert!(store.list_workspaces().await.unwrap().contains(&ws));

    let dup = store
        .create_workspace(NewWorkspace {
            id: WorkspaceId::generate(),
            name: name.clone(),
            quota: Quota::default(),
            created_by: None,
            now: at(T0),
        })
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(_))),
        "duplicate name: {dup:?}"
    );

    let quota2 = Quota {
        max_running_sandboxes: None,
        max_memory_mb: None,
        max_disk_mb: Some(10),
    };
    assert!(store.set_quota(&id, quota2).await.unwrap());
    assert_eq!(
        store.get_workspace(&id).await.unwrap().unwrap().quota,
        quota2
    );
    assert!(
        !store
            .set_quota(&WorkspaceId::generate(), quota2)
            .await
            .unwrap()
    );

    assert!(store.delete_workspace(&id).await.unwrap());
    assert!(!store.delete_workspace(&id).await.unwrap());
    assert_eq!(store.get_workspace(&id).await.unwrap(), None);
}

pub(super) async fn usage(store: &dyn Store) {
    let ws = new_workspace(store).await;
    let u0 = store.workspace_usage(&ws).await.unwrap();
    assert_eq!(u0, hutch_core::Usage::default());
    let total0 = store.total_usage().await.unwrap();

    let a = new_sandbox(store, &ws, &[], T0, 60).await; // creating: counts
    let b = new_sandbox(store, &ws, &[], T0, 60).await;
    let b = move_to(store, &b, &[SandboxState::Running, SandboxState::Sleeping]).await;
    move_to(store, &b, &[SandboxState::Asleep]).await; // asleep: disk only
    let c = new_sandbox(store, &ws, &[], T0, 60).await;
    move_to(store, &c, &[SandboxState::Failed]).await; // failed: nothing

    let r = a.spec.resources;
    let u = store.workspace_usage(&ws).await.unwrap();
    assert_eq!(u.running_sandboxes, 1);
    assert_eq!(u.cpu_millis, u64::from(r.cpu_millis));
    assert_eq!(u.memory_mb, u64::from(r.memory_mb));
    assert_eq!(u.disk_mb, 2 * u64::from(r.disk_mb));
    let total = store.total_usage().await.unwrap();
    assert_eq!(total.running_sandboxes, total0.running_sandboxes + 1);
    assert_eq!(total.disk_mb, total0.disk_mb + 2 * u64::from(r.disk_mb));
}

pub(super) async fn workspace_delete_cascades(store: &dyn Store) {
    let ws = new_workspace(store).await;
    let secret = ApiKeySecret::generate();
    store
        .create_api_key(NewApiKey::for_secret(
            &secret,
            ws.clone(),
            "k",
            Role::Member,
            None,
            at(T0),
        ))
        .await
        .unwrap();
    let sb = new_sandbox(store, &ws, &[("a", "b")], T0, 60).await;
    let tp = store
        .insert_template(NewTemplate {
            id: TemplateId::generate(),
            owner: TemplateOwner::Workspace(ws.clone()),
            reference: TemplateRef::parse("mine:1").unwrap(),
            created_by: None,
            now: at(T0),
        })
        .await
        .unwrap();
    let job = store
        .enqueue_job(NewJob {
            id: JobId::generate(),
            workspace_id: Some(ws.clone()),
            kind: JobKind::Build,
            payload: serde_json::json!({}),
            max_attempts: 1,
            created_by: None,
            now: at(T0),
        })
        .await
        .unwrap();
    store
        .append_audit(NewAuditEntry {
            at: at(T0),
            workspace_id: Some(ws.clone()),
            key_id: None,
            request_id: None,
            action: "workspace.delete".to_owned(),
            object: Some(ws.to_string()),
            outcome: AuditOutcome::Ok,
        })
        .await
        .unwrap();

    assert!(store.delete_workspace(&ws).await.unwrap());
    assert_eq!(store.authenticate(&secret).await.unwrap(), None);
    assert!(
        store
            .api_keys_by_prefix(&secret.prefix())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get_sandbox_unscoped(&sb.id).await.unwrap(), None);
    assert_eq!(store.get_template(&ws, &tp.id).await.unwrap(), None);
    assert_eq!(store.get_job(None, &job.id).await.unwrap(), None);
    // The audit trail outlives the workspace.
    assert_eq!(
        store
            .list_audit(&ws, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}
