//! `GET/POST /files` (scaffold; being written).
use axum::Router;

use crate::GuestState;

pub fn routes() -> Router<GuestState> {
    Router::new()
}
