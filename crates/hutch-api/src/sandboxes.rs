//! Sandbox routes: lifecycle, exec, PTY and files. Each handler extracts, authenticates and
//! calls one `Control` method with typed arguments.

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::Request};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hutch_api_types::{
    CreateSandboxRequest, ErrorBody, ExecEvent, ExecRequest, ExecResult, FileEntry, FileList,
    MakeDir, MoveFile, PtyControl, SandboxList, SandboxView, TimeoutRequest,
};
use hutch_control::pty::{PtyEvent, PtyInput, PtyOutput, PtyRequest};
use hutch_control::sandboxes::ListSandboxes;

use crate::error::ApiError;
use crate::extract::{AppState, Auth, JsonBody, Query};

/// The largest exec request (stdin may be 16 MiB, JSON-escaped).
pub const EXEC_LIMIT: usize = 40 << 20;

#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
    request_body = CreateSandboxRequest,
    responses(
        (status = 201, description = "Running: it can run a command", body = SandboxView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "Unknown template", body = ErrorBody),
        (status = 429, description = "Workspace quota reached", body = ErrorBody),
        (status = 503, description = "Host capacity reached", body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    Auth(caller): Auth,
    JsonBody(req): JsonBody<CreateSandboxRequest>,
) -> Result<(StatusCode, Json<SandboxView>), ApiError> {
    let view = app.control.sandboxes().create(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(
        ("state" = Option<String>, Query, description = "Only sandboxes in this state"),
        ("metadata" = Option<String>, Query, description = "`key=value`; repeatable, all must match"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = SandboxList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<SandboxList>, ApiError> {
    let q = Query::parse(raw.as_deref(), &["state", "metadata", "limit", "cursor"])?;
    let query = ListSandboxes {
        state: q.get("state").map(str::to_owned),
        metadata: q.all("metadata"),
        limit: q.number("limit")?,
        cursor: q.get("cursor").map(str::to_owned),
    };
    Ok(Json(app.control.sandboxes().list(&caller, query).await?))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 200, body = SandboxView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    Ok(Json(app.control.sandboxes().get(&caller, &id).await?))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 204, description = "Gone, with every trace on the host"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.control.sandboxes().delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes",
    params(("id" = String, Path)), request_body = TimeoutRequest,
    responses((status = 200, body = SandboxView), (status = 404, body = ErrorBody)))]
pub async fn timeout(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TimeoutRequest>,
) -> Result<Json<SandboxView>, ApiError> {
    Ok(Json(
        app.control
            .sandboxes()
            .set_timeout(&caller, &id, req)
            .await?,
    ))
}

/// With `wait`, the JSON result; else an NDJSON stream of events, one per line, read by the
/// server only as fast as the client reads the reply.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec",
    params(("id" = String, Path)), request_body = ExecRequest,
    responses(
        (status = 200, description = "`wait: true`", body = ExecResult),
        (status = 200, description = "Without `wait`: `application/x-ndjson`, one ExecEvent per line", body = ExecEvent),
        (status = 404, body = ErrorBody), (status = 409, description = "Not running", body = ErrorBody)))]
pub async fn exec(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ExecRequest, EXEC_LIMIT>,
) -> Result<Response, ApiError> {
    let wait = req.wait;
    let stream = app.control.commands().run(&caller, &id, req).await?;
    if wait {
        return Ok(Json(stream.collect().await?).into_response());
    }
    let lines = futures::stream::unfold(stream, |mut s| async move {
        let ev = s.next().await?;
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(line)), s))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// A WebSocket terminal: binary frames carry terminal bytes both ways; text frames carry
/// `{"type":"resize","cols","rows"}` from the client and `{"type":"exit","exit_code","signal"}`
/// from the server, which then closes.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/pty", tag = "exec",
    params(("id" = String, Path),
        ("cols" = Option<u16>, Query), ("rows" = Option<u16>, Query),
        ("user" = Option<String>, Query), ("cwd" = Option<String>, Query),
        ("cmd" = Option<String>, Query, description = "Repeatable: the command and its arguments (default: login shell)")),
    responses((status = 101, description = "Switching to the WebSocket"),
        (status = 404, body = ErrorBody)))]
pub async fn pty(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), &["cols", "rows", "user", "cwd", "cmd"])?;
    let req = PtyRequest {
        cols: q.number("cols")?.unwrap_or(80),
        rows: q.number("rows")?.unwrap_or(24),
        user: q.get("user").map(str::to_owned),
        cwd: q.get("cwd").map(str::to_owned),
        cmd: q.all("cmd"),
    };
    let (output, input) = app.control.terminals().open(&caller, &id, req).await?;
    Ok(ws
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| bridge(socket, output, input)))
}

/// Pumps bytes between the WebSocket and the terminal until either side ends.
async fn bridge(socket: WebSocket, mut output: PtyOutput, input: PtyInput) {
    let (mut tx, mut rx) = socket.split();
    let mut exited = false;
    loop {
        tokio::select! {
            ev = output.next() => match ev {
                Some(Ok(PtyEvent::Data(b))) => {
                    if tx.send(Message::Binary(b)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(PtyEvent::Exit { exit_code, signal })) => {
                    exited = true;
                    let msg = serde_json::to_string(&PtyControl::Exit { exit_code, signal })
                        .unwrap_or_default();
                    let _ = tx.send(Message::Text(msg.into())).await;
                    let _ = tx.send(Message::Close(None)).await;
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "terminal stream failed");
                    let _ = tx.send(Message::Close(None)).await;
                    break;
                }
                None => {
                    let _ = tx.send(Message::Close(None)).await;
                    break;
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Err(e) = input.send(b).await {
                        tracing::debug!(error = %e, "terminal input");
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(PtyControl::Resize { cols, rows }) = serde_json::from_str(&t)
                        && let Err(e) = input.resize(cols, rows).await
                    {
                        tracing::debug!(error = %e, "terminal resize");
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    if !exited {
        input.kill().await;
    }
}

const FILE_QUERY: &[&str] = &["path", "user"];

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path), ("path" = String, Query), ("user" = Option<String>, Query)),
    responses((status = 200, description = "The file's bytes, streamed", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ErrorBody)))]
pub async fn download(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), FILE_QUERY)?;
    let body = app
        .control
        .files()
        .download(&caller, &id, q.required("path")?, q.get("user"))
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path), ("path" = String, Query), ("user" = Option<String>, Query)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes, streamed"),
    responses((status = 204, description = "Written (created or replaced)"), (status = 404, body = ErrorBody)))]
pub async fn upload(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let q = Query::parse(raw.as_deref(), FILE_QUERY)?;
    let body = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    app.control
        .files()
        .upload(&caller, &id, q.required("path")?, q.get("user"), body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path), ("path" = String, Query), ("user" = Option<String>, Query)),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = Query::parse(raw.as_deref(), FILE_QUERY)?;
    app.control
        .files()
        .remove(&caller, &id, q.required("path")?, q.get("user"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "files",
    params(("id" = String, Path), ("path" = String, Query), ("user" = Option<String>, Query)),
    responses((status = 200, body = FileList), (status = 404, body = ErrorBody)))]
pub async fn list_files(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<FileList>, ApiError> {
    let q = Query::parse(raw.as_deref(), FILE_QUERY)?;
    Ok(Json(
        app.control
            .files()
            .list(&caller, &id, q.required("path")?, q.get("user"))
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "files",
    params(("id" = String, Path), ("path" = String, Query), ("user" = Option<String>, Query)),
    responses((status = 200, body = FileEntry), (status = 404, body = ErrorBody)))]
pub async fn stat(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<FileEntry>, ApiError> {
    let q = Query::parse(raw.as_deref(), FILE_QUERY)?;
    Ok(Json(
        app.control
            .files()
            .stat(&caller, &id, q.required("path")?, q.get("user"))
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files",
    params(("id" = String, Path)), request_body = MakeDir,
    responses((status = 201, body = FileEntry), (status = 404, body = ErrorBody)))]
pub async fn mkdir(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<MakeDir>,
) -> Result<(StatusCode, Json<FileEntry>), ApiError> {
    let entry = app.control.files().make_dir(&caller, &id, req).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/move", tag = "files",
    params(("id" = String, Path)), request_body = MoveFile,
    responses((status = 200, body = FileEntry), (status = 404, body = ErrorBody)))]
pub async fn move_file(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<MoveFile>,
) -> Result<Json<FileEntry>, ApiError> {
    Ok(Json(app.control.files().rename(&caller, &id, req).await?))
}
