//! Conformance checks for [`ApiKeyStore`]: lookup by prefix, authentication by hash only,
//! scoped and final revocation.

use hutch_core::key::ApiKeySecret;
use hutch_core::{Role, WorkspaceId};

use super::{T0, at, new_workspace};
use crate::error::StoreError;
use crate::model::*;
use crate::prelude::*;

pub(super) async fn api_keys(store: &dyn Store) {
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
