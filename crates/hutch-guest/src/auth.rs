//! Who may call the guest, and as which user.
//!
//! 1. With an access token configured, every route but `GET /health` needs
//!    `X-Access-Token: <token>`; `/files` alternatively accepts a signed URL
//!    (`signature`, `signature_expiration`; see `hutch_envd::signing`).
//!    Anything else is a 401 with a Connect-style JSON error.
//! 2. The user a request acts as comes from `Authorization: Basic
//!    base64(user:)`, else the `username` query parameter of `/files`, else
//!    the configured default user; it must exist in the sandbox's passwd.

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use hutch_envd::{
    connect::{self, Code, ConnectError},
    signing::{self, Operation},
};

use crate::{GuestState, users::User};

/// A 401. The request body is at most partly read (see [`refuse`]), so the
/// connection cannot be reused: say so, or a keep-alive client sends its
/// next request into a socket the server is closing.
fn unauthorized(message: impl Into<String>) -> Response {
    let e = ConnectError::new(Code::Unauthenticated, message);
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONNECTION, "close"),
        ],
        e.to_json().to_string(),
    )
        .into_response()
}

/// A 401 for a user the sandbox does not have, marked as such (see
/// [`hutch_envd::connect::REFUSAL_HEADER`]).
fn unknown_user(message: impl Into<String>) -> Response {
    let mut resp = unauthorized(message);
    resp.headers_mut().insert(
        connect::REFUSAL_HEADER,
        header::HeaderValue::from_static(connect::UNKNOWN_USER),
    );
    resp
}

/// How much of a refused request's body is read and dropped before the 401
/// goes out, and for how long at most. Replying while the client is still
/// writing makes its next write fail with EPIPE and the client reports a
/// broken pipe instead of the 401 (Go's net/http, which envd uses, drains
/// 256 KiB for the same reason). Anything larger is cut off.
const REFUSED_BODY_DRAIN: usize = 256 << 10;
const REFUSED_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A 401 for `req`, after reading a bounded part of its body.
async fn refuse(req: Request, message: impl Into<String>) -> Response {
    use futures::StreamExt as _;
    let mut body = req.into_body().into_data_stream();
    let _ = tokio::time::timeout(REFUSED_BODY_WAIT, async {
        let mut seen = 0usize;
        while seen < REFUSED_BODY_DRAIN {
            match body.next().await {
                Some(Ok(chunk)) => seen += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
    unauthorized(message)
}

/// The value of query parameter `name`, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_encoding::percent_decode_str(&k.replace('+', " "))
            .decode_utf8()
            .ok()?
            .into_owned();
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware enforcing rule 1 above.
pub async fn require_access_token(
    State(state): State<GuestState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = state.config.access_token.as_deref() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if path == "/health" {
        return next.run(req).await;
    }
    if let Some(given) = req.headers().get("x-access-token") {
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return next.run(req).await;
        }
        return refuse(req, "invalid access token").await;
    }
    if path == "/files" {
        let query = req.uri().query();
        if let Some(signature) = query_param(query, "signature") {
            let op = match *req.method() {
                Method::GET | Method::HEAD => Operation::Read,
                _ => Operation::Write,
            };
            let file = query_param(query, "path").unwrap_or_default();
            let user = query_param(query, "username").unwrap_or_default();
            let expiration = query_param(query, "signature_expiration");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            return match signing::verify(
                &file,
                op,
                &user,
                token,
                &signature,
                expiration.as_deref(),
                now,
            ) {
                Ok(()) => next.run(req).await,
                Err(e) => refuse(req, format!("invalid signature: {e}")).await,
            };
        }
    }
    refuse(req, "missing access token: send X-Access-Token").await
}

/// The user a request acts as (rule 2 above).
#[derive(Debug, Clone)]
pub struct RequestUser(pub User);

/// The user named by a request, if it names one.
pub fn requested_user_name(parts: &Parts) -> Option<String> {
    if let Some(v) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(b64) = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim())
    {
        let raw = String::from_utf8_lossy(&raw);
        let name = raw.split(':').next().unwrap_or_default();
        if !name.is_empty() {
            return Some(name.to_owned());
        }
    }
    if parts.uri.path() == "/files" {
        return query_param(parts.uri.query(), "username").filter(|u| !u.is_empty());
    }
    None
}

impl FromRequestParts<GuestState> for RequestUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GuestState,
    ) -> Result<Self, Self::Rejection> {
        let name = requested_user_name(parts).unwrap_or_else(|| state.config.default_user.clone());
        if name.len() > 256 {
            return Err(unknown_user("user name too long"));
        }
        if let Some(u) = state.users.get(&state.config.etc_root, &name) {
            return Ok(RequestUser(u));
        }
        let (etc, users) = (state.config.etc_root.clone(), state.users.clone());
        let looked = tokio::task::spawn_blocking(move || users.lookup(&etc, &name)).await;
        match looked {
            Ok(Ok(u)) => Ok(RequestUser(u)),
            Ok(Err(e @ crate::users::UserError::NotFound(_))) => Err(unknown_user(e.to_string())),
            Ok(Err(e)) => Err(unauthorized(e.to_string())),
            Err(_) => Err(unauthorized("user lookup failed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        let q = Some("path=%2Fhome%2Fa+b.txt&username=user&signature=v1_abc%2B");
        assert_eq!(query_param(q, "path").as_deref(), Some("/home/a b.txt"));
        assert_eq!(query_param(q, "username").as_deref(), Some("user"));
        assert_eq!(query_param(q, "signature").as_deref(), Some("v1_abc+"));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "path"), None);
    }
}
