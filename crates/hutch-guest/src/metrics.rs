//! `GET /metrics` (scaffold; being written).
use axum::http::StatusCode;

pub async fn metrics() -> StatusCode {
    StatusCode::NOT_IMPLEMENTED
}
