//! A small map whose entries expire, used to spare the store a round trip on hot paths (on
//! SQLite a hop to the connection's worker thread and back: about 0.05–0.1 ms of a 1.5 ms exec).
//! Two users: accepted API keys (`Inner::keys`) and rows of running sandboxes (`Inner::rows`).
//!
//! Entries live for the cache's TTL. Whoever changes what an entry says calls
//! [`TtlCache::forget`] or [`TtlCache::clear`] after the change; a generation count keeps a
//! lookup that raced with that change from putting its stale answer back. The TTL bounds how
//! long a change made by another server on a shared database can go unseen.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most entries kept; when full the cache starts over.
const MAX_ENTRIES: usize = 4096;

pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    inner: Mutex<State<K, V>>,
}

struct State<K, V> {
    generation: u64,
    entries: HashMap<K, (V, Instant)>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            inner: Mutex::new(State {
                generation: 0,
                entries: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` if put less than the TTL ago, or else the generation to hand to
    /// [`TtlCache::put`] after asking the store.
    pub fn get(&self, key: &K) -> Result<V, u64> {
        let state = self.state();
        match state.entries.get(key) {
            Some((value, at)) if at.elapsed() < self.ttl => Ok(value.clone()),
            _ => Err(state.generation),
        }
    }

    /// Keeps `value` unless something was forgotten since `generation` was read.
    pub fn put(&self, key: K, value: V, generation: u64) {
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(key, (value, Instant::now()));
    }

    /// Drops `key`: what it says has changed.
    pub fn forget(&self, key: &K) {
        let mut state = self.state();
        state.generation += 1;
        state.entries.remove(key);
    }

    /// Drops everything (a change whose keys are not known one by one).
    pub fn clear(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_wins_over_a_lookup_that_raced_with_it() {
        let cache = TtlCache::new(Duration::from_secs(60));
        let generation = cache.get(&"a").expect_err("empty");
        cache.put("a", 1, generation);
        assert_eq!(cache.get(&"a"), Ok(1), "a put is found");
        // A lookup starts, the entry changes meanwhile, the lookup finishes.
        let generation = cache.get(&"b").expect_err("unknown");
        cache.forget(&"a");
        assert!(cache.get(&"a").is_err(), "a forget drops");
        cache.put("b", 2, generation);
        assert!(cache.get(&"b").is_err(), "a stale answer is not put back");
        // Same for a clear.
        let generation = cache.get(&"c").expect_err("unknown");
        cache.clear();
        cache.put("c", 3, generation);
        assert!(cache.get(&"c").is_err());
    }

    #[test]
    fn entries_expire() {
        let cache = TtlCache::new(Duration::from_millis(20));
        let generation = cache.get(&"a").expect_err("empty");
        cache.put("a", 1, generation);
        assert_eq!(cache.get(&"a"), Ok(1));
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(&"a").is_err(), "expired");
    }
}
