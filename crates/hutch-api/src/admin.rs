//! Platform and workspace administration routes, templates, metrics and health.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use hutch_api_types::{
    AuditList, CreateKey, CreateWorkspace, CreatedKey, ErrorBody, KeyList, Quota, TemplateList,
    WorkspaceList, WorkspaceView,
};
use hutch_control::views::page;

use crate::error::ApiError;
use crate::extract::{AppState, Auth, JsonBody, Query};

#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = TemplateList)))]
pub async fn templates(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<TemplateList>, ApiError> {
    Ok(Json(app.control.templates().list(&caller).await?))
}

#[utoipa::path(post, path = "/v1/workspaces", tag = "admin", request_body = CreateWorkspace,
    responses((status = 201, body = WorkspaceView), (status = 403, body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn create_workspace(
    State(app): State<AppState>,
    Auth(caller): Auth,
    JsonBody(req): JsonBody<CreateWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    let ws = app.control.workspaces().create(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(ws)))
}

#[utoipa::path(get, path = "/v1/workspaces", tag = "admin",
    responses((status = 200, body = WorkspaceList), (status = 403, body = ErrorBody)))]
pub async fn list_workspaces(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<WorkspaceList>, ApiError> {
    Ok(Json(app.control.workspaces().list(&caller).await?))
}

#[utoipa::path(delete, path = "/v1/workspaces/{id}", tag = "admin",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted with everything it owned"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_workspace(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.control.workspaces().delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/workspaces/{id}/quota", tag = "admin",
    params(("id" = String, Path)), request_body = Quota,
    responses((status = 200, body = WorkspaceView), (status = 403, body = ErrorBody)))]
pub async fn set_quota(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(quota): JsonBody<Quota>,
) -> Result<Json<WorkspaceView>, ApiError> {
    Ok(Json(
        app.control
            .workspaces()
            .set_quota(&caller, &id, quota)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/keys", tag = "admin", request_body = CreateKey,
    responses((status = 201, description = "The secret is shown this once", body = CreatedKey),
        (status = 403, body = ErrorBody)))]
pub async fn create_key(
    State(app): State<AppState>,
    Auth(caller): Auth,
    JsonBody(req): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let key = app.control.keys().create(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(get, path = "/v1/keys", tag = "admin",
    params(("workspace_id" = Option<String>, Query, description = "Operator only: another workspace")),
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody)))]
pub async fn list_keys(
    State(app): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<KeyList>, ApiError> {
    let q = Query::parse(raw.as_deref(), &["workspace_id"])?;
    Ok(Json(
        app.control
            .keys()
            .list(&caller, q.get("workspace_id"))
            .await?,
    ))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "admin",
    params(("id" = String, Path),
        ("workspace_id" = Option<String>, Query, description = "Operator only: another workspace")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
pub async fn revoke_key(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = Query::parse(raw.as_deref(), &["workspace_id"])?;
    app.control
        .keys()
        .revoke(&caller, &id, q.get("workspace_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/audit", tag = "admin",
    params(("workspace_id" = Option<String>, Query, description = "Operator only: another workspace"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Newest first", body = AuditList), (status = 403, body = ErrorBody)))]
pub async fn audit(
    State(app): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditList>, ApiError> {
    let q = Query::parse(raw.as_deref(), &["workspace_id", "limit", "cursor"])?;
    let page = page(q.number("limit")?, q.get("cursor"));
    Ok(Json(
        app.control
            .audit_log()
            .list(&caller, q.get("workspace_id"), page)
            .await?,
    ))
}

/// Prometheus text format. Needs the operator's key.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, content_type = "text/plain", body = String), (status = 403, body = ErrorBody)))]
pub async fn metrics(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let text = app.control.metrics_text(&caller).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// Liveness: no key needed, says nothing.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}
