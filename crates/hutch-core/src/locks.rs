//! One lock per key: a map that hands out the lock of a key, creating it on first use and
//! forgetting it once nobody holds it, so the map holds only keys in use. Generic over the
//! lock type (the control plane and the agent use tokio's async mutex), so this crate stays
//! free of any runtime.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Locks by key (module docs).
#[derive(Debug)]
pub struct KeyedLocks<K, L> {
    map: Mutex<HashMap<K, Arc<L>>>,
}

impl<K, L> Default for KeyedLocks<K, L> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, L: Default> KeyedLocks<K, L> {
    /// The lock of `key`. Entries of other keys that nobody holds any more are dropped on the
    /// way, so the map stays as small as the set of keys in use.
    pub fn of(&self, key: &K) -> Arc<L> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|k, l| k == key || Arc::strong_count(l) > 1);
        map.entry(key.clone()).or_default().clone()
    }

    /// How many keys have a lock (for tests).
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_key_and_only_while_held() {
        let locks: KeyedLocks<&str, Mutex<()>> = KeyedLocks::default();
        let a = locks.of(&"a");
        assert!(Arc::ptr_eq(&a, &locks.of(&"a")), "one lock per key");
        let b = locks.of(&"b");
        assert!(!Arc::ptr_eq(&a, &b));
        drop(b);
        // Asking for "a" drops "b", which nobody holds; "a" stays while held.
        let _again = locks.of(&"a");
        assert_eq!(locks.len(), 1);
        drop(a);
        drop(_again);
        let _c = locks.of(&"c");
        assert_eq!(locks.len(), 1, "a went once nobody held it");
    }
}
