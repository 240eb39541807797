//! API keys: stored as a hash and a clear prefix, never the secret, and the one way a
//! presented secret becomes a key record ([`ApiKeyStore::authenticate`]).

use async_trait::async_trait;
use hutch_core::key::{ApiKeySecret, KeyPrefix};
use hutch_core::{KeyId, Timestamp, WorkspaceId};

use crate::error::Result;
use crate::model::*;

/// API keys and authentication by secret.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKeyRecord>;
    /// Every key (revoked ones included) whose clear prefix is `prefix`.
    async fn api_keys_by_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<ApiKeyRecord>>;
    /// A workspace's keys, oldest first, revoked ones included.
    async fn list_api_keys(&self, workspace: &WorkspaceId) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes a key of `workspace`. `false` if absent, in another workspace, or already revoked.
    async fn revoke_api_key(
        &self,
        workspace: &WorkspaceId,
        id: &KeyId,
        now: Timestamp,
    ) -> Result<bool>;

    /// The live key matching `secret`: looked up by prefix, then compared by hash in constant
    /// time. Revoked keys never authenticate.
    async fn authenticate(&self, secret: &ApiKeySecret) -> Result<Option<ApiKeyRecord>> {
        let presented = secret.hash();
        let mut found = None;
        for candidate in self.api_keys_by_prefix(&secret.prefix()).await? {
            // Compare every candidate so timing does not depend on which one matches.
            if candidate.hash.ct_eq_hash(&presented) && candidate.revoked_at.is_none() {
                found = Some(candidate);
            }
        }
        Ok(found)
    }
}
