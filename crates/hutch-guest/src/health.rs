//! `GET /health` (204 once the guest serves) and `GET /envs` (the environment
//! every process gets).

use axum::{Json, extract::State, http::StatusCode};

use crate::GuestState;

pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

pub async fn envs(
    State(state): State<GuestState>,
) -> Json<std::collections::BTreeMap<String, String>> {
    Json(state.config.envs.clone())
}
