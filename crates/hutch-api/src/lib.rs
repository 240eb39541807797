//! The REST API (axum): a transport over `hutch_control::Control`.
//!
//! This crate owns: routing; extracting typed arguments (JSON bodies with unknown fields
//! rejected and a size limit applied before parsing, query strings with unknown parameters
//! rejected); authentication of the key (`Authorization: Bearer` or `X-API-Key`); the one
//! mapping from error codes to HTTP statuses ([`error::status_of`]); request ids and request
//! logs; streaming bodies (NDJSON exec events, file transfers) and the PTY WebSocket; the
//! OpenAPI document, generated from the handlers ([`ApiDoc`]) and checked in at
//! `docs/openapi.json`.
//!
//! It must not: decide anything (authorisation, validation beyond parsing, lifecycle: all in
//! `hutch-control` and `hutch-core`), define a JSON shape of its own (request bodies and views
//! are `hutch-api-types`'), send a platform failure's details to a client, or log a key
//! (headers are never logged).
//!
//! A connection is admitted (or refused) under the connection caps and held to the header and
//! body timeouts by [`server::serve`]'s accept loop.
//!
//! A request's path through here:
//! 1. [`extract::request_context`] gives it an id and a tracing span;
//! 2. the route's extractors authenticate ([`extract::Auth`]) and parse the arguments;
//! 3. the handler calls one `Control` method;
//! 4. the result is serialised, or [`error::ApiError`] becomes `{"code", "message"}` with its
//!    status.
//!
//! Routes without a key: `GET /healthz` and `GET /v1/openapi.json`. Every other route needs
//! one; `/metrics` needs the operator's.

// `unsafe` is denied (workspace lints) except in `memory`, one call to glibc.

pub mod admin;
pub mod error;
pub mod extract;
pub mod linger;
pub mod memory;
pub mod sandboxes;
pub mod server;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use hutch_control::Control;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::extract::{AppState, JSON_LIMIT};
pub use crate::server::{BodyRate, ServeConfig, serve};

/// The OpenAPI document of every route.
#[derive(OpenApi)]
#[openapi(
    info(title = "Hutch API", description = "Sandboxes for untrusted code. Errors are `{\"code\", \"message\"}`."),
    paths(
        sandboxes::create, sandboxes::list, sandboxes::get, sandboxes::delete, sandboxes::timeout,
        sandboxes::exec, sandboxes::pty,
        sandboxes::download, sandboxes::upload, sandboxes::remove, sandboxes::list_files,
        sandboxes::stat, sandboxes::mkdir, sandboxes::move_file,
        admin::templates, admin::create_workspace, admin::list_workspaces, admin::delete_workspace,
        admin::set_quota, admin::create_key, admin::list_keys, admin::revoke_key, admin::audit,
        admin::metrics, admin::healthz,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The OpenAPI document as served and checked in (pretty JSON, trailing newline).
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned());
    s.push('\n');
    s
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}

async fn fallback() -> error::ApiError {
    hutch_core::Error::NotFound { kind: "route" }.into()
}

/// Every route, over `control`.
pub fn router(control: Control) -> Router {
    let state = AppState { control };
    let sandbox = Router::new()
        .route("/", get(sandboxes::get).delete(sandboxes::delete))
        .route("/timeout", post(sandboxes::timeout))
        .route(
            "/exec",
            post(sandboxes::exec).layer(DefaultBodyLimit::max(sandboxes::EXEC_LIMIT)),
        )
        .route("/pty", get(sandboxes::pty))
        .route(
            "/files",
            get(sandboxes::download)
                .put(sandboxes::upload)
                .delete(sandboxes::remove)
                // Uploads stream to the guest; the sandbox's disk limit bounds them.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/files/list", get(sandboxes::list_files))
        .route("/files/stat", get(sandboxes::stat))
        .route("/files/mkdir", post(sandboxes::mkdir))
        .route("/files/move", post(sandboxes::move_file));
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route("/v1/openapi.json", get(openapi))
        .route(
            "/v1/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .nest("/v1/sandboxes/{id}", sandbox)
        .route("/v1/templates", get(admin::templates))
        .route(
            "/v1/workspaces",
            post(admin::create_workspace).get(admin::list_workspaces),
        )
        .route(
            "/v1/workspaces/{id}",
            axum::routing::delete(admin::delete_workspace),
        )
        .route("/v1/workspaces/{id}/quota", put(admin::set_quota))
        .route("/v1/keys", post(admin::create_key).get(admin::list_keys))
        .route("/v1/keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/v1/audit", get(admin::audit))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            server::reserve_gate,
        ))
        .layer(axum::middleware::from_fn(server::answer_slow_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::request_context,
        ))
        .layer(axum::middleware::from_fn(linger::drain_refused))
        .with_state(state)
}
