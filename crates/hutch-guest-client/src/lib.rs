//! The host side of the envd wire contract: how the control plane, the agent
//! and the benchmarks talk to a `hutch-guest`, in typed calls.
//!
//! Owns: connections to one guest over its Unix socket (how the agent reaches
//! a sandbox without any network) or TCP, pooled and kept alive; the typed
//! calls of the guest's two services, [`process`] (start, connect, input,
//! signal, resize, list) and [`fs`] (list, stat, mkdir, move, remove, `/files`
//! download and upload); the one translation of the guest's errors into
//! [`ClientError`] and [`ErrorKind`].
//! Must not: trust the guest (R15). Every reply is bounded: unary bodies and
//! stream frames by [`Limits`], error messages truncated, and a stream that
//! ends without its end-of-stream envelope is an error, not a success. Nor
//! let the wire out: callers name no Connect method and build no protobuf
//! message; the Connect plumbing (`rpc`) is private.

#![forbid(unsafe_code)]

use std::{
    future::Future,
    path::PathBuf,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, BodyStream, Full, combinators::BoxBody};
use hutch_envd::connect::ConnectError;
use hyper_util::{
    client::legacy::{Client, connect::Connected, connect::Connection},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::UnixStream;

mod error;
pub mod fs;
pub mod process;
mod rpc;

pub use error::{ClientError, ErrorKind, GuestError};

type Body = BoxBody<Bytes, std::io::Error>;

/// Bounds on what the guest may send back.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest unary reply or stream message.
    pub max_message: usize,
    /// Longest error message kept.
    pub max_error_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 4 << 20,
            max_error_message: 1024,
        }
    }
}

/// Where the guest listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// A Unix-socket connector for hyper-util's pooled client: every URI maps to
/// the one socket of this guest.
#[derive(Clone)]
struct UnixConnector(PathBuf);

struct UnixIo(TokioIo<UnixStream>);

impl Connection for UnixIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for UnixIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UnixIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower::Service<http::Uri> for UnixConnector {
    type Response = UnixIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<UnixIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(UnixIo(TokioIo::new(UnixStream::connect(path).await?))) })
    }
}

#[derive(Clone)]
enum Transport {
    Unix(Client<UnixConnector, Body>),
    Tcp(Client<hyper_util::client::legacy::connect::HttpConnector, Body>),
}

/// A client of one guest. Cheap to clone; clones share the pool of connections.
#[derive(Clone)]
pub struct GuestClient {
    transport: Transport,
    base: String,
    token: Option<String>,
    limits: Limits,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

impl GuestClient {
    pub fn new(endpoint: Endpoint) -> GuestClient {
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(8);
            b
        };
        let (transport, base) = match endpoint {
            Endpoint::Unix(p) => (
                Transport::Unix(builder().build(UnixConnector(p))),
                "http://guest".to_owned(),
            ),
            Endpoint::Tcp(a) => (
                Transport::Tcp(builder().build_http()),
                format!("http://{a}"),
            ),
        };
        GuestClient {
            transport,
            base,
            token: None,
            limits: Limits::default(),
        }
    }

    /// Sends `X-Access-Token` on every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A request to the guest, acting as `user` when given: the guest reads
    /// `Authorization: Basic base64(user:)` as the user to act as (`/files`
    /// names it in its query instead).
    fn request(
        &self,
        method: Method,
        path_and_query: &str,
        user: Option<&str>,
    ) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path_and_query));
        if let Some(t) = &self.token {
            b = b.header("x-access-token", t);
        }
        if let Some(u) = user {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:"));
            b = b.header(header::AUTHORIZATION, format!("Basic {token}"));
        }
        b
    }

    async fn send(
        &self,
        req: Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        match &self.transport {
            Transport::Unix(c) => c.request(req).await,
            Transport::Tcp(c) => c.request(req).await,
        }
        .map_err(ClientError::Connect)
    }

    /// Sends `req`; a reply with an error status is the guest's error.
    async fn call(
        &self,
        req: Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let resp = self.send(req).await?;
        let status = resp.status();
        if status.is_success() {
            Ok(resp)
        } else {
            let unknown_user = resp
                .headers()
                .get(hutch_envd::connect::REFUSAL_HEADER)
                .is_some_and(|v| v == hutch_envd::connect::UNKNOWN_USER);
            match self.http_error(status, resp.into_body()).await {
                ClientError::Refused(e) if unknown_user && status == StatusCode::UNAUTHORIZED => {
                    Err(ClientError::Refused(e.unknown_user()))
                }
                e => Err(e),
            }
        }
    }

    /// Reads at most `limit` bytes of a body; more is a protocol error.
    async fn read_bounded(
        &self,
        body: hyper::body::Incoming,
        limit: usize,
    ) -> Result<Bytes, ClientError> {
        let mut out = bytes::BytesMut::new();
        let mut stream = BodyStream::new(body);
        while let Some(frame) = stream.next().await {
            let frame = frame.map_err(ClientError::Body)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(ClientError::Protocol(format!(
                        "reply larger than {limit} bytes"
                    )));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    }

    /// The error of a reply with status `status`: a Connect error (an RPC,
    /// or a refused access token) or envd's `{"code": <status>, "message"}`
    /// of `/files`, of which only the message is kept.
    async fn http_error(&self, status: StatusCode, body: hyper::body::Incoming) -> ClientError {
        let raw = self.read_bounded(body, 64 << 10).await.unwrap_or_default();
        let json = serde_json::from_slice::<serde_json::Value>(&raw).ok();
        if let Some(mut e) = json.as_ref().and_then(ConnectError::from_json) {
            e.message = truncate(e.message, self.limits.max_error_message);
            return ClientError::Refused(GuestError::connect(e));
        }
        let message = json
            .as_ref()
            .and_then(|v| v.get("message")?.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&raw).into_owned());
        let message = truncate(message, self.limits.max_error_message);
        ClientError::Refused(GuestError::http(status, message))
    }

    /// `GET /health`: Ok once the guest serves.
    pub async fn health(&self) -> Result<(), ClientError> {
        let req = self
            .request(Method::GET, "/health", None)
            .body(full(Bytes::new()))?;
        self.call(req).await?;
        Ok(())
    }
}

/// Cuts a message of the guest to `max` bytes (R15).
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
