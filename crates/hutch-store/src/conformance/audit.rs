//! Conformance checks for [`AuditStore`]: ordering, workspace scoping, cursor paging.

use hutch_core::{KeyId, RequestId};

use super::{T0, at, new_workspace};
use crate::error::StoreError;
use crate::model::*;
use crate::prelude::*;

pub(super) async fn audit_log(store: &dyn Store) {
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
