//! Extractors: the authenticated caller, JSON bodies and query strings, each failing with an
//! [`ApiError`] (so with the JSON error body and the one status mapping).
//!
//! Per request, [`request_context`]:
//! 1. gives the request an id (`rq…`), returned in `x-request-id`;
//! 2. runs the handler inside a tracing span carrying the id, method and path (never headers:
//!    they hold the key);
//! 3. counts error replies by code in the metrics, and logs one line per request.

use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use hutch_control::{Caller, Control};
use hutch_core::{Error, RequestId};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::{ApiError, ErrorTag};

/// The largest JSON body of most routes.
pub const JSON_LIMIT: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub control: Control,
}

/// Steps 1–3 of the module docs.
pub async fn request_context(
    State(app): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = RequestId::generate();
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    if let Some(ErrorTag(code)) = resp.extensions().get::<ErrorTag>().copied() {
        app.control.metrics().count_error(code.as_str());
    }
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "handled"
        );
    });
    if let Ok(v) = http::HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The authenticated caller: key from `Authorization: Bearer <key>` or `X-API-Key: <key>`.
pub struct Auth(pub Caller);

/// The key a request presents, if any.
pub fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, key) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let key = presented_key(&parts.headers).ok_or(Error::Unauthenticated)?;
        let principal = app.control.authenticate(key).await?;
        Ok(Auth(Caller {
            principal,
            request_id: parts.extensions.get::<RequestId>().cloned(),
        }))
    }
}

/// A JSON body of at most `LIMIT` bytes (the route's `DefaultBodyLimit` must match). Unknown
/// fields and wrong types are 400 naming the field; a larger body is 413: at once, before a
/// byte of it is read, when its `Content-Length` says so (axum's `Json` would wait for the
/// first `LIMIT` bytes, however slowly they come), else once `LIMIT` bytes have arrived.
pub struct JsonBody<T, const LIMIT: usize = JSON_LIMIT>(pub T);

/// The length a request declares, if it declares one that parses.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl<S, T, const LIMIT: usize> FromRequest<S> for JsonBody<T, LIMIT>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if declared_length(req.headers()).is_some_and(|n| n > LIMIT as u64) {
            return Err(Error::PayloadTooLarge {
                limit: LIMIT as u64,
            }
            .into());
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rejection) if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::PayloadTooLarge {
                    limit: LIMIT as u64,
                }
                .into())
            }
            Err(rejection) => Err(Error::InvalidInput(rejection.body_text()).into()),
        }
    }
}

/// A query string as `(key, value)` pairs, percent-decoded, only with keys the route knows
/// (repeated keys kept in order, e.g. `metadata=a=1&metadata=b=2`).
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| Error::InvalidInput("query: not UTF-8".to_owned()))
            };
            let (k, v) = (decode(k)?, decode(v)?);
            if !allowed.contains(&k.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "query: unknown parameter `{}`, expected one of {}",
                    k.chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect::<String>(),
                    allowed.join(", ")
                ))
                .into());
            }
            out.push((k, v));
        }
        Ok(Query(out))
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `key` parsed as a number.
    pub fn number<N: std::str::FromStr>(&self, key: &str) -> Result<Option<N>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::InvalidInput(format!("{key}: not a number")).into())
            })
            .transpose()
    }

    /// `key`, which must be present.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .ok_or_else(|| Error::InvalidInput(format!("{key}: required")).into())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::Router;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn serve(router: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    /// Sends the head of a 1 TB JSON body and nothing more; the reply within 1 s.
    async fn declare_a_terabyte(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /j HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 1000000000000\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
            .await
            .map_or(0, |r| r.unwrap_or(0));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn a_json_body_declared_over_the_limit_is_refused_before_it_is_read() {
        let addr = serve(Router::new().route(
            "/j",
            post(|JsonBody(_): JsonBody<serde_json::Value, 1024>| async {}),
        ))
        .await;
        let reply = declare_a_terabyte(addr).await;
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains("payload_too_large"), "{reply}");
    }

    /// Twin: axum's `Json` under the same limit waits for the body.
    #[tokio::test]
    async fn axums_json_awaits_a_body_declared_over_the_limit() {
        let addr = serve(
            Router::new()
                .route("/j", post(|_: axum::Json<serde_json::Value>| async {}))
                .layer(axum::extract::DefaultBodyLimit::max(1024)),
        )
        .await;
        let reply = declare_a_terabyte(addr).await;
        assert_eq!(reply, "", "no answer while the body is awaited");
    }
}
