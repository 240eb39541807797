//! Rows of running sandboxes, for the calls that use one (exec, files, terminals): the row
//! lookup was a SQLite round trip of about 0.1 ms on every exec (measured inside the server).
//!
//! Only rows in state `running` are kept, for at most [`TTL`]. Every state change this server
//! makes goes through [`RowCache::forget`] (see `Control::transition` and the create and
//! delete paths), so a row never outlives its change here; [`TTL`] bounds how long a change
//! made by another server on a shared database can go unseen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hutch_core::{SandboxId, SandboxState};
use hutch_store::SandboxRecord;

/// How long a row is used without reading it again.
pub const TTL: Duration = Duration::from_secs(2);
/// Most rows kept; when full the cache starts over.
const MAX_ROWS: usize = 4096;

#[derive(Default)]
pub(crate) struct RowCache {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    generation: u64,
    rows: HashMap<SandboxId, (SandboxRecord, Instant)>,
}

impl RowCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The row of `id` if it was read less than [`TTL`] ago, or the generation to hand to
    /// [`RowCache::put`] after reading it.
    pub fn get(&self, id: &SandboxId) -> Result<SandboxRecord, u64> {
        let state = self.state();
        match state.rows.get(id) {
            Some((row, at)) if at.elapsed() < TTL => Ok(row.clone()),
            _ => Err(state.generation),
        }
    }

    /// Keeps `row` if it is running and nothing was forgotten since `generation` was read
    /// (a change that raced with the read wins).
    pub fn put(&self, row: &SandboxRecord, generation: u64) {
        if row.state != SandboxState::Running {
            return;
        }
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.rows.len() >= MAX_ROWS {
            state.rows.clear();
        }
        state
            .rows
            .insert(row.id.clone(), (row.clone(), Instant::now()));
    }

    /// Drops the row of `id`: its state is about to change or has changed.
    pub fn forget(&self, id: &SandboxId) {
        let mut state = self.state();
        state.generation += 1;
        state.rows.remove(id);
    }
}
