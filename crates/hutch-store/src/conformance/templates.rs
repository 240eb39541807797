//! Conformance checks for [`TemplateStore`]: built-in templates seen by all, a workspace's own
//! shadowing them for it only, compare-and-swap state changes, deletion rules.

use hutch_core::template::TemplateRef;
use hutch_core::{Digest, TemplateId, TemplateState};

use super::{T0, at, new_workspace};
use crate::error::StoreError;
use crate::model::*;
use crate::prelude::*;

pub(super) async fn templates(store: &dyn Store) {
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
