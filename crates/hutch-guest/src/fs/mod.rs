//! `filesystem.Filesystem` (scaffold; being written).
use std::sync::Arc;

use axum::Router;

use crate::{Config, GuestState};

pub struct Watchers {
    #[allow(dead_code)]
    config: Arc<Config>,
}

impl Watchers {
    pub fn new(config: Arc<Config>) -> Self {
        Watchers { config }
    }
}

pub fn routes() -> Router<GuestState> {
    Router::new()
}
