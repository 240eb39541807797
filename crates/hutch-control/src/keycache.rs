//! Recently authenticated keys, so that a call does not cost a store round trip (on SQLite a
//! hop to the connection's worker thread and back: about 50 µs of a 1.5 ms exec).
//!
//! Only keys the store accepted are kept (unknown keys always reach the store, and a new key
//! works at once). Entries live [`TTL`]; revoking a key or deleting a workspace on this server
//! empties the cache at once, and a generation count keeps a lookup that raced with that from
//! putting its stale answer back. A revocation made by another server on a shared database is
//! seen within [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hutch_core::Principal;
use hutch_core::key::KeyHash;

/// How long an accepted key is trusted without asking the store again.
pub const TTL: Duration = Duration::from_secs(5);
/// Most keys kept; when full the cache starts over.
const MAX_KEYS: usize = 4096;

#[derive(Default)]
pub(crate) struct KeyCache {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    generation: u64,
    keys: HashMap<String, (Principal, Instant)>,
}

impl KeyCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The principal of a key accepted less than [`TTL`] ago, and the generation to hand to
    /// [`KeyCache::put`] after asking the store otherwise.
    pub fn get(&self, hash: &KeyHash) -> Result<Principal, u64> {
        let state = self.state();
        match state.keys.get(&hash.to_hex()) {
            Some((p, at)) if at.elapsed() < TTL => Ok(p.clone()),
            _ => Err(state.generation),
        }
    }

    /// Remembers an accepted key, unless the cache was emptied since `generation` was read.
    pub fn put(&self, hash: &KeyHash, principal: Principal, generation: u64) {
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.keys.len() >= MAX_KEYS {
            state.keys.clear();
        }
        state
            .keys
            .insert(hash.to_hex(), (principal, Instant::now()));
    }

    /// Forgets every key (a key was revoked or a workspace deleted).
    pub fn clear(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_core::auth::Role;
    use hutch_core::key::ApiKeySecret;
    use hutch_core::{KeyId, WorkspaceId};

    fn principal() -> Principal {
        Principal {
            key_id: KeyId::generate(),
            workspace_id: WorkspaceId::generate(),
            role: Role::Member,
        }
    }

    #[test]
    fn a_clear_wins_over_a_lookup_that_raced_with_it() {
        let cache = KeyCache::default();
        let hash = ApiKeySecret::generate().hash();
        let generation = cache.get(&hash).expect_err("empty");
        cache.put(&hash, principal(), generation);
        assert!(cache.get(&hash).is_ok(), "a put is found");
        // A lookup starts, the key is revoked meanwhile, the lookup finishes.
        let generation = cache
            .get(&ApiKeySecret::generate().hash())
            .expect_err("unknown");
        cache.clear();
        assert!(cache.get(&hash).is_err(), "a clear forgets");
        let late = ApiKeySecret::generate().hash();
        cache.put(&late, principal(), generation);
        assert!(cache.get(&late).is_err(), "a stale answer is not put back");
    }
}
