//! Conformance checks for [`JobStore`]: oldest-first leasing by kind, lease ownership and
//! expiry, attempts, cancellation.

use hutch_core::JobId;

use super::{T0, at, new_workspace};
use crate::error::StoreError;
use crate::model::*;
use crate::prelude::*;

pub(super) async fn jobs(store: &dyn Store) {
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
