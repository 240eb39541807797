//! Conformance checks for [`SandboxStore`]: workspace scoping, compare-and-swap transitions,
//! filtered pagination, expiry sweeps and recovery.

use std::collections::BTreeMap;

use hutch_core::{Generation, SandboxId, SandboxState, Timestamp, TransitionError};

use super::{T0, at, move_to, new_sandbox, new_workspace};
use crate::error::StoreError;
use crate::model::*;
use crate::prelude::*;

pub(super) async fn sandboxes_scoping_and_cas(store: &dyn Store) {
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

pub(super) async fn sandbox_listing(store: &dyn Store) {
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

pub(super) async fn sandbox_expiry_and_recovery(store: &dyn Store) {
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
