//! The conformance suite every [`Store`] implementation must pass.
//!
//! Call [`run`] with a fresh, migrated store. Each check creates its own workspaces with random
//! IDs; checks that read global views (expiry sweeps, jobs) use times and data no other check
//! produces. A failure panics with the check's name, like any test assertion.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use hutch_core::key::ApiKeySecret;
use hutch_core::request::CreateSandboxRequest;
use hutch_core::template::TemplateRef;
use hutch_core::{
    Digest, Generation, JobId, KeyId, Quota, RequestId, Role, SandboxId, SandboxSpec, SandboxState,
    TemplateId, TemplateState, Timestamp, TransitionError, WorkspaceId, WorkspaceName,
};

use crate::error::StoreError;
use crate::model::*;
use crate::store::Store;

/// Runs every check against `store`, which must be fresh (no jobs, no sandboxes).
pub async fn run(store: &dyn Store) {
    workspaces(store).await;
    api_keys(store).await;
    sandboxes_scoping_and_cas(store).await;
    sandbox_listing(store).await;
    sandbox_expiry_and_recovery(store).await;
    usage(store).await;
    templates(store).await;
    audit_log(store).await;
    jobs(store).await;
    workspace_delete_cascades(store).await;
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

async fn workspaces(store: &dyn Store) {
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

async fn api_keys(store: &dyn Store) {
    let ws = new_workspace(store).await;
    let other = new_workspace(store).await;
    let secret = ApiKeySecret::generate();
    let rec = store
        .create_api_key(NewApiKey::for_secret(
            &secret,
            ws.clone(),
            "ci",
            Role::Admin,
            None,
            at(T0),
        ))
        .await
        .unwrap();
    assert_eq!(rec.role, Role::Admin);
    assert_eq!(rec.prefix, secret.prefix());
    assert_eq!(
        store.authenticate(&secret).await.unwrap(),
        Some(rec.clone())
    );

    // A key sharing the prefix but not the rest: both found by prefix, each authenticates only
    // as itself.
    let twin_text = format!("{}{}", secret.prefix().as_str(), "z".repeat(31));
    let twin = ApiKeySecret::parse(&twin_text).unwrap();
    assert_eq!(twin.prefix(), secret.prefix());
    assert_ne!(twin, secret);
    assert_eq!(store.authenticate(&twin).await.unwrap(), None);
    let twin_rec = store
        .create_api_key(NewApiKey::for_secret(
            &twin,
            ws.clone(),
            "twin",
            Role::Member,
            Some(rec.id.clone()),
            at(T0 + 1),
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .api_keys_by_prefix(&secret.prefix())
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store.authenticate(&twin).await.unwrap(),
        Some(twin_rec.clone())
    );
    assert_eq!(
        store.authenticate(&secret).await.unwrap(),
        Some(rec.clone())
    );

    // The same secret cannot be registered twice.
    let again = store
        .create_api_key(NewApiKey::for_secret(
            &secret,
            other.clone(),
            "copy",
            Role::Member,
            None,
            at(T0),
        ))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    let listed = store.list_api_keys(&ws).await.unwrap();
    assert_eq!(listed, vec![rec.clone(), twin_rec.clone()]);
    assert!(store.list_api_keys(&other).await.unwrap().is_empty());

    // Revocation is scoped and final.
    assert!(
        !store
            .revoke_api_key(&other, &rec.id, at(T0 + 5))
            .await
            .unwrap()
    );
    assert!(store.authenticate(&secret).await.unwrap().is_some());
    assert!(
        store
            .revoke_api_key(&ws, &rec.id, at(T0 + 5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_api_key(&ws, &rec.id, at(T0 + 6))
            .await
            .unwrap()
    );
    assert_eq!(store.authenticate(&secret).await.unwrap(), None);
    assert!(store.authenticate(&twin).await.unwrap().is_some());
    let revoked = store.list_api_keys(&ws).await.unwrap();
    assert_eq!(revoked[0].revoked_at, Some(at(T0 + 5)));

    // A key for a workspace that does not exist is refused.
    let orphan = store
        .create_api_key(NewApiKey::for_secret(
            &ApiKeySecret::generate(),
            WorkspaceId::generate(),
            "x",
            Role::Member,
            None,
            at(T0),
        ))
        .await;
    assert!(orphan.is_err(), "{orphan:?}");
}

async fn sandboxes_scoping_and_cas(store: &dyn Store) {
    let ws = new_workspace(store).await;
    let other = new_workspace(store).await;
    let sb = new_sandbox(store, &ws, &[("team", "ml")], T0, 60).await;
    assert_eq!(sb.state, SandboxState::Creating);
    assert_eq!(sb.generation, Generation(0));
    assert_eq!(sb.expires_at, Some(at(T0 + 60_000)));
    assert_eq!(sb.spec.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(sb.spec.template.to_string(), "busybox:latest");
    assert!(sb.created_by.is_some());

    assert_eq!(
        store.get_sandbox(&ws, &sb.id).await.unwrap(),
        Some(sb.clone())
    );
    assert_eq!(store.get_sandbox(&other, &sb.id).await.unwrap(), None);
    assert_eq!(
        store.get_sandbox_unscoped(&sb.id).await.unwrap(),
        Some(sb.clone())
    );
    let dup = store
        .insert_sandbox(NewSandbox {
            id: sb.id.clone(),
            workspace_id: ws.clone(),
            spec: sb.spec.clone(),
            template_id: None,
            created_by: None,
            now: at(T0),
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    // Compare-and-swap.
    let running = store
        .transition_sandbox(
            &sb.id,
            Transition {
                expected: Generation(0),
                to: SandboxState::Running,
                reason: None,
                now: at(T0 + 10),
            },
        )
        .await
        .unwrap();
    assert_eq!(running.state, SandboxState::Running);
    assert_eq!(running.generation, Generation(1));
    assert_eq!(running.updated_at, at(T0 + 10));
    let stale = store
        .transition_sandbox(
            &sb.id,
            Transition {
                expected: Generation(0),
                to: SandboxState::Stopping,
                reason: None,
                now: at(T0 + 11),
            },
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::Transition(
                TransitionError::StaleGeneration { .. }
            ))
        ),
        "{stale:?}"
    );
    let illegal = store
        .transition_sandbox(
            &sb.id,
            Transition {
                expected: Generation(1),
                to: SandboxState::Asleep,
                reason: None,
                now: at(T0 + 11),
            },
        )
        .await;
    assert!(
        matches!(
            illegal,
            Err(StoreError::Transition(TransitionError::Illegal { .. }))
        ),
        "{illegal:?}"
    );
    let missing = store
        .transition_sandbox(
            &SandboxId::generate(),
            Transition {
                expected: Generation(0),
                to: SandboxState::Running,
                reason: None,
                now: at(T0),
            },
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));

    // Two writers racing from the same generation: exactly one wins.
    let race = |to| {
        store.transition_sandbox(
            &sb.id,
            Transition {
                expected: Generation(1),
                to,
                reason: None,
                now: at(T0 + 12),
            },
        )
    };
    let (a, b) = futures::join!(race(SandboxState::Sleeping), race(SandboxState::Stopping));
    assert_eq!(
        a.is_ok() as u8 + b.is_ok() as u8,
        1,
        "exactly one writer wins: {a:?} {b:?}"
    );
    let after = store.get_sandbox(&ws, &sb.id).await.unwrap().unwrap();
    assert_eq!(after.generation, Generation(2));

    // A failure records its reason; the record survives until removed.
    let failed = store
        .transition_sandbox(
            &sb.id,
            Transition {
                expected: Generation(2),
                to: SandboxState::Failed,
                reason: Some("runtime exited".to_owned()),
                now: at(T0 + 13),
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.failure_reason.as_deref(), Some("runtime exited"));

    // Deletion: scoped, and only of a stopped or failed sandbox.
    let live = new_sandbox(store, &ws, &[], T0, 60).await;
    let still = store.delete_sandbox(&ws, &live.id).await;
    assert!(matches!(still, Err(StoreError::Conflict(_))), "{still:?}");
    assert!(!store.delete_sandbox(&other, &failed.id).await.unwrap());
    assert!(store.delete_sandbox(&ws, &failed.id).await.unwrap());
    assert!(!store.delete_sandbox(&ws, &failed.id).await.unwrap());
    assert_eq!(store.get_sandbox(&ws, &failed.id).await.unwrap(), None);
    let stopped = move_to(
        store,
        &live,
        &[SandboxState::Stopping, SandboxState::Stopped],
    )
    .await;
    assert!(store.delete_sandbox(&ws, &stopped.id).await.unwrap());
}

async fn sandbox_listing(store: &dyn Store) {
    let ws = new_workspace(store).await;
    let other = new_workspace(store).await;
    let mut made = Vec::new();
    for i in 0..7i64 {
        let team = if i % 2 == 0 { "ml" } else { "web" };
        let tier = if i < 3 { "gold" } else { "free" };
        // Two share a creation time, so the cursor must break ties by id.
        let now = T0 + (i / 2) * 1000;
        made.push(new_sandbox(store, &ws, &[("team", team), ("tier", tier)], now, 60).await);
    }
    new_sandbox(store, &other, &[("team", "ml")], T0, 60).await;
    move_to(store, &made[1], &[SandboxState::Running]).await;
    move_to(store, &made[4], &[SandboxState::Running]).await;

    // Pages of 3 cover all 7 exactly once, in creation order.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_sandboxes(
                &ws,
                &SandboxFilter::default(),
                &PageRequest { limit: 3, cursor },
            )
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|s| s.id.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<(Timestamp, SandboxId)> =
        made.iter().map(|s| (s.created_at, s.id.clone())).collect();
    expected.sort();
    assert_eq!(
        seen,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );

    let ids = |page: Page<SandboxRecord>| {
        let mut v: Vec<SandboxId> = page.items.into_iter().map(|s| s.id).collect();
        v.sort();
        v
    };
    let want = |idx: &[usize]| {
        let mut v: Vec<SandboxId> = idx.iter().map(|i| made[*i].id.clone()).collect();
        v.sort();
        v
    };
    let by_state = SandboxFilter {
        state: Some(SandboxState::Running),
        ..Default::default()
    };
    assert_eq!(
        ids(store
            .list_sandboxes(&ws, &by_state, &PageRequest::first(0))
            .await
            .unwrap()),
        want(&[1, 4])
    );
    let ml = SandboxFilter {
        state: None,
        metadata: BTreeMap::from([("team".to_owned(), "ml".to_owned())]),
    };
    assert_eq!(
        ids(store
            .list_sandboxes(&ws, &ml, &PageRequest::first(0))
            .await
            .unwrap()),
        want(&[0, 2, 4, 6])
    );
    let ml_gold = SandboxFilter {
        state: None,
        metadata: BTreeMap::from([
            ("team".to_owned(), "ml".to_owned()),
            ("tier".to_owned(), "gold".to_owned()),
        ]),
    };
    assert_eq!(
        ids(store
            .list_sandboxes(&ws, &ml_gold, &PageRequest::first(0))
            .await
            .unwrap()),
        want(&[0, 2])
    );
    let all = SandboxFilter {
        state: Some(SandboxState::Running),
        metadata: ml.metadata.clone(),
    };
    assert_eq!(
        ids(store
            .list_sandboxes(&ws, &all, &PageRequest::first(0))
            .await
            .unwrap()),
        want(&[4])
    );
    let nothing = SandboxFilter {
        state: None,
        metadata: BTreeMap::from([("team".to_owned(), "nope".to_owned())]),
    };
    assert!(
        store
            .list_sandboxes(&ws, &nothing, &PageRequest::first(0))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let bad = store
        .list_sandboxes(
            &ws,
            &SandboxFilter::default(),
            &PageRequest {
                limit: 2,
                cursor: Some("garbage".to_owned()),
            },
        )
        .await;
    assert!(matches!(bad, Err(StoreError::InvalidCursor)), "{bad:?}");
}

async fn sandbox_expiry_and_recovery(store: &dyn Store) {
    // Times in 1970 so no other check's sandboxes are due before these.
    let ws = new_workspace(store).await;
    let a = new_sandbox(store, &ws, &[], 1_000, 10).await; // expires at 11_000
    let b = new_sandbox(store, &ws, &[], 2_000, 5).await; // expires at 7_000
    let c = new_sandbox(store, &ws, &[], 3_000, 100).await; // expires at 103_000
    let d = new_sandbox(store, &ws, &[], 500, 1).await; // expires at 1_500, but stopped
    move_to(store, &d, &[SandboxState::Stopping, SandboxState::Stopped]).await;
    let e = new_sandbox(store, &ws, &[], 600, 1).await; // expires at 1_600, but stopping
    move_to(store, &e, &[SandboxState::Stopping]).await;

    let due = |v: Vec<SandboxRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        due(store.expired_sandboxes(at(6_999), 10).await.unwrap()),
        vec![]
    );
    assert_eq!(
        due(store.expired_sandboxes(at(20_000), 10).await.unwrap()),
        vec![b.id.clone(), a.id.clone()]
    );
    assert_eq!(
        due(store.expired_sandboxes(at(20_000), 1).await.unwrap()),
        vec![b.id.clone()]
    );

    // Extending moves it out of the sweep; `None` means never.
    let extended = store
        .set_sandbox_expiry(&ws, &b.id, Some(at(50_000)), at(6_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(extended.expires_at, Some(at(50_000)));
    store
        .set_sandbox_expiry(&ws, &a.id, None, at(6_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        due(store.expired_sandboxes(at(60_000), 10).await.unwrap()),
        vec![b.id.clone()]
    );
    let other = new_workspace(store).await;
    assert_eq!(
        store
            .set_sandbox_expiry(&other, &c.id, Some(at(1)), at(6_000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .set_sandbox_expiry(&ws, &d.id, Some(at(1)), at(6_000))
            .await
            .unwrap(),
        None,
        "a stopped sandbox has no life to extend"
    );

    // Recovery sees every live sandbox, transitional ones included, and no terminal one.
    let active: Vec<SandboxId> = store
        .active_sandboxes()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    for live in [&a.id, &b.id, &c.id, &e.id] {
        assert!(active.contains(live));
    }
    assert!(!active.contains(&d.id));
}

async fn usage(store: &dyn Store) {
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

async fn templates(store: &dyn Store) {
    let ws = new_workspace(store).await;
    let other = new_workspace(store).await;
    let name = format!("base{}", &TemplateId::generate().as_str()[2..]);
    let reference = TemplateRef::parse(&format!("{name}:12")).unwrap();
    let new = |owner: TemplateOwner| NewTemplate {
        id: TemplateId::generate(),
        owner,
        reference: reference.clone(),
        created_by: None,
        now: at(T0),
    };
    let builtin = store
        .insert_template(new(TemplateOwner::Platform))
        .await
        .unwrap();
    assert_eq!(builtin.state, TemplateState::Pending);
    assert_eq!(builtin.owner, TemplateOwner::Platform);
    let dup = store.insert_template(new(TemplateOwner::Platform)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    // Every workspace sees the built-in one.
    for w in [&ws, &other] {
        assert_eq!(
            store.get_template(w, &builtin.id).await.unwrap(),
            Some(builtin.clone())
        );
        assert_eq!(
            store.find_template(w, &reference).await.unwrap(),
            Some(builtin.clone())
        );
        assert!(store.list_templates(w).await.unwrap().contains(&builtin));
    }
    assert_eq!(
        store.find_platform_template(&reference).await.unwrap(),
        Some(builtin.clone())
    );

    // A workspace's own template of the same name shadows the built-in one for it only.
    let own = store
        .insert_template(new(TemplateOwner::Workspace(ws.clone())))
        .await
        .unwrap();
    let dup_own = store
        .insert_template(new(TemplateOwner::Workspace(ws.clone())))
        .await;
    assert!(
        matches!(dup_own, Err(StoreError::Conflict(_))),
        "{dup_own:?}"
    );
    assert_eq!(
        store.find_template(&ws, &reference).await.unwrap(),
        Some(own.clone())
    );
    assert_eq!(
        store.find_template(&other, &reference).await.unwrap(),
        Some(builtin.clone())
    );
    assert_eq!(store.get_template(&other, &own.id).await.unwrap(), None);
    assert!(!store.list_templates(&other).await.unwrap().contains(&own));
    assert!(store.list_templates(&ws).await.unwrap().contains(&own));

    // State changes are compare-and-swap on the state, along the legal edges only.
    let digest = Digest::of(b"manifest");
    let building = store
        .transition_template(
            &own.id,
            TemplateTransition {
                from: TemplateState::Pending,
                to: TemplateState::Building,
                digest: None,
                reason: None,
                now: at(T0 + 1),
            },
        )
        .await
        .unwrap();
    assert_eq!(building.state, TemplateState::Building);
    let stale = store
        .transition_template(
            &own.id,
            TemplateTransition {
                from: TemplateState::Pending,
                to: TemplateState::Failed,
                digest: None,
                reason: None,
                now: at(T0 + 2),
            },
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let ready = store
        .transition_template(
            &own.id,
            TemplateTransition {
                from: TemplateState::Building,
                to: TemplateState::Ready,
                digest: Some(digest),
                reason: None,
                now: at(T0 + 3),
            },
        )
        .await
        .unwrap();
    assert_eq!(ready.state, TemplateState::Ready);
    assert_eq!(ready.digest, Some(digest));
    let illegal = store
        .transition_template(
            &own.id,
            TemplateTransition {
                from: TemplateState::Ready,
                to: TemplateState::Building,
                digest: None,
                reason: None,
                now: at(T0 + 4),
            },
        )
        .await;
    assert!(
        matches!(illegal, Err(StoreError::TemplateTransition(_))),
        "{illegal:?}"
    );

    // Built-in templates cannot be deleted by anyone; a workspace deletes only its own.
    let del_builtin = store.delete_template(&ws, &builtin.id).await;
    assert!(
        matches!(del_builtin, Err(StoreError::Conflict(_))),
        "{del_builtin:?}"
    );
    assert!(!store.delete_template(&other, &own.id).await.unwrap());
    assert!(store.delete_template(&ws, &own.id).await.unwrap());
    assert_eq!(
        store.find_template(&ws, &reference).await.unwrap(),
        Some(builtin.clone())
    );
}

async fn audit_log(store: &dyn Store) {
    let ws = new_workspace(store).await;
    let other = new_workspace(store).await;
    let key = KeyId::generate();
    let mut seqs = Vec::new();
    for i in 0..5i64 {
        let entry = NewAuditEntry {
            at: at(T0 + i),
            workspace_id: Some(ws.clone()),
            key_id: Some(key.clone()),
            request_id: Some(RequestId::generate()),
            action: "sandbox.create".to_owned(),
            object: Some(format!("object-{i}")),
            outcome: if i == 3 {
                AuditOutcome::Denied
            } else {
                AuditOutcome::Ok
            },
        };
        seqs.push(store.append_audit(entry).await.unwrap());
        store
            .append_audit(NewAuditEntry {
                at: at(T0 + i),
                workspace_id: Some(other.clone()),
                key_id: None,
                request_id: None,
                action: "key.create".to_owned(),
                object: None,
                outcome: AuditOutcome::Failed,
            })
            .await
            .unwrap();
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let first = store.list_audit(&ws, &PageRequest::first(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let objects: Vec<_> = first
        .items
        .iter()
        .map(|e| e.entry.object.clone().unwrap())
        .collect();
    assert_eq!(objects, ["object-4", "object-3", "object-2"]);
    assert_eq!(first.items[1].entry.outcome, AuditOutcome::Denied);
    assert_eq!(first.items[0].entry.key_id, Some(key.clone()));
    let second = store
        .list_audit(
            &ws,
            &PageRequest {
                limit: 3,
                cursor: first.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items.len(), 2);
    assert_eq!(second.next_cursor, None);
    assert!(
        second
            .items
            .iter()
            .all(|e| e.entry.workspace_id == Some(ws.clone()))
    );
    let bad = store
        .list_audit(
            &ws,
            &PageRequest {
                limit: 3,
                cursor: Some("x".to_owned()),
            },
        )
        .await;
    assert!(matches!(bad, Err(StoreError::InvalidCursor)));
}

async fn jobs(store: &dyn Store) {
    let ws = new_workspace(store).await;
    let other = new_workspace(store).await;
    let enqueue = |kind, n: i64, max_attempts| {
        let ws = ws.clone();
        async move {
            store
                .enqueue_job(NewJob {
                    id: JobId::generate(),
                    workspace_id: Some(ws),
                    kind,
                    payload: serde_json::json!({"n": n}),
                    max_attempts,
                    created_by: None,
                    now: at(T0 + n),
                })
                .await
                .unwrap()
        }
    };
    let j1 = enqueue(JobKind::Build, 1, 2).await;
    let j2 = enqueue(JobKind::Build, 2, 1).await;
    let v1 = enqueue(JobKind::Validation, 3, 1).await;
    assert_eq!(j1.state, JobState::Queued);
    assert_eq!(
        store.get_job(Some(&ws), &j1.id).await.unwrap(),
        Some(j1.clone())
    );
    assert_eq!(store.get_job(Some(&other), &j1.id).await.unwrap(), None);

    let now = T0 + 100;
    let builds = [JobKind::Build];
    let l1 = store
        .lease_job("worker-a", &builds, at(now), 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l1.id, j1.id, "oldest first");
    assert_eq!(l1.state, JobState::Running);
    assert_eq!(l1.attempts, 1);
    assert_eq!(l1.lease_owner.as_deref(), Some("worker-a"));
    assert_eq!(l1.lease_expires_at, Some(at(now + 1_000)));
    let l2 = store
        .lease_job("worker-b", &builds, at(now), 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l2.id, j2.id);
    assert_eq!(
        store
            .lease_job("worker-c", &builds, at(now), 1_000)
            .await
            .unwrap(),
        None,
        "validation jobs are not builds"
    );
    assert_eq!(
        store
            .lease_job("worker-c", &[], at(now), 1_000)
            .await
            .unwrap(),
        None
    );

    // Only the holder completes.
    let wrong = store
        .complete_job(
            &j1.id,
            "worker-b",
            JobOutcome::Failed("x".into()),
            at(now + 1),
        )
        .await;
    assert!(matches!(wrong, Err(StoreError::Conflict(_))), "{wrong:?}");
    let renewed = store
        .renew_job_lease(&j2.id, "worker-b", at(now + 500), 1_000)
        .await
        .unwrap();
    assert_eq!(renewed.lease_expires_at, Some(at(now + 1_500)));

    // worker-a's lease lapses: worker-c takes j1 over on its second attempt.
    let took = store
        .lease_job("worker-c", &builds, at(now + 1_200), 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(took.id, j1.id);
    assert_eq!(took.attempts, 2);
    let late = store
        .complete_job(
            &j1.id,
            "worker-a",
            JobOutcome::Succeeded(serde_json::json!(1)),
            at(now + 1_300),
        )
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    let done = store
        .complete_job(
            &j1.id,
            "worker-c",
            JobOutcome::Succeeded(serde_json::json!({"digest": "d"})),
            at(now + 1_300),
        )
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(serde_json::json!({"digest": "d"})));
    assert_eq!(done.lease_owner, None);

    // j2 (one attempt allowed) lapses: it fails instead of being leased again.
    assert_eq!(
        store
            .lease_job("worker-d", &builds, at(now + 5_000), 1_000)
            .await
            .unwrap(),
        None
    );
    let j2_now = store.get_job(None, &j2.id).await.unwrap().unwrap();
    assert_eq!(j2_now.state, JobState::Failed);
    assert!(j2_now.error.is_some());

    // Cancellation: scoped; queued -> cancelled; finished -> conflict.
    let hidden = store.cancel_job(Some(&other), &v1.id, at(now)).await;
    assert!(
        matches!(hidden, Err(StoreError::NotFound { .. })),
        "{hidden:?}"
    );
    let cancelled = store.cancel_job(Some(&ws), &v1.id, at(now)).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        store
            .lease_job("worker-e", &[JobKind::Validation], at(now), 1_000)
            .await
            .unwrap(),
        None
    );
    let again = store.cancel_job(None, &v1.id, at(now)).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    // A running job can be cancelled; its holder then learns it lost the lease.
    let j3 = enqueue(JobKind::VolumeSync, 4, 1).await;
    let l3 = store
        .lease_job("worker-f", &[JobKind::VolumeSync], at(now), 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l3.id, j3.id);
    store
        .cancel_job(Some(&ws), &j3.id, at(now + 1))
        .await
        .unwrap();
    let lost = store
        .complete_job(
            &j3.id,
            "worker-f",
            JobOutcome::Failed("x".into()),
            at(now + 2),
        )
        .await;
    assert!(matches!(lost, Err(StoreError::Conflict(_))), "{lost:?}");
    let zero = store
        .enqueue_job(NewJob {
            id: JobId::generate(),
            workspace_id: None,
            kind: JobKind::Build,
            payload: serde_json::Value::Null,
            max_attempts: 0,
            created_by: None,
            now: at(now),
        })
        .await;
    assert!(zero.is_err());
}

async fn workspace_delete_cascades(store: &dyn Store) {
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
