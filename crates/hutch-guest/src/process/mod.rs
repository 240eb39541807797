//! `process.Process` (scaffold; being written).
use std::sync::Arc;

use axum::Router;

use crate::{Config, GuestState, reaper::Reaper};

pub struct Processes {
    #[allow(dead_code)]
    config: Arc<Config>,
    #[allow(dead_code)]
    reaper: Reaper,
}

impl Processes {
    pub fn new(config: Arc<Config>, reaper: Reaper) -> Self {
        Processes { config, reaper }
    }

    /// Sends `sig` to every process started through the API.
    pub fn signal_all(&self, _sig: nix::sys::signal::Signal) {}
}

pub fn routes() -> Router<GuestState> {
    Router::new()
}
