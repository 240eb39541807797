//! The host side of the envd wire contract: how the agent (and the
//! benchmarks) talk to a `hutch-guest`.
//!
//! Owns: connections to one guest over its Unix socket (how the agent reaches
//! a sandbox without any network) or TCP, pooled and kept alive; Connect
//! unary and server-streaming calls in the JSON codec; `/files` download and
//! upload as streams.
//! Must not: trust the guest (R15). Every reply is bounded: unary bodies and
//! stream frames by [`Limits`], error messages truncated, and a stream that
//! ends without its end-of-stream envelope is an error, not a success.
//!
//! Flow of a server-streaming call:
//! 1. POST `/{service}/{method}` with `application/connect+json` and the
//!    request in one envelope;
//! 2. read envelopes as they arrive with a bounded [`FrameDecoder`];
//! 3. yield each message; the end-of-stream envelope ends the stream,
//!    carrying the call's error if it failed.

#![forbid(unsafe_code)]

use std::{
    future::Future,
    path::PathBuf,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, BodyStream, Full, combinators::BoxBody};
use hutch_envd::connect::{CallKind, Code, Codec, ConnectError, FrameDecoder, envelope};
use hyper_util::{
    client::legacy::{Client, connect::Connected, connect::Connection},
    rt::{TokioExecutor, TokioIo},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

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

/// What went wrong talking to a guest.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the guest")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("reading the guest's reply")]
    Body(#[source] hyper::Error),
    #[error("the guest answered {0}")]
    Rpc(#[from] ConnectError),
    #[error("the guest answered HTTP {status}: {message}")]
    Http { status: StatusCode, message: String },
    #[error("the guest sent a malformed reply: {0}")]
    Protocol(String),
    #[error("building the request")]
    Request(#[from] http::Error),
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
    /// Extra headers sent on every call (e.g. `Authorization: Basic` naming the user).
    headers: http::HeaderMap,
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
            headers: http::HeaderMap::new(),
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

    /// Sends `name: value` on every call; e.g. `Authorization: Basic
    /// base64(user:)`, which the guest reads as the user to act as.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    fn request(&self, method: Method, path_and_query: &str) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path_and_query));
        if let Some(t) = &self.token {
            b = b.header("x-access-token", t);
        }
        for (name, value) in &self.headers {
            b = b.header(name, value);
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

    async fn http_error(&self, status: StatusCode, body: hyper::body::Incoming) -> ClientError {
        let raw = self.read_bounded(body, 64 << 10).await.unwrap_or_default();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw)
            && let Some(mut e) = ConnectError::from_json(&v)
        {
            e.message = truncate(e.message, self.limits.max_error_message);
            return ClientError::Rpc(e);
        }
        ClientError::Http {
            status,
            message: truncate(
                String::from_utf8_lossy(&raw).into_owned(),
                self.limits.max_error_message,
            ),
        }
    }

    /// `GET /health`: Ok once the guest serves.
    pub async fn health(&self) -> Result<(), ClientError> {
        let resp = self
            .send(
                self.request(Method::GET, "/health")
                    .body(full(Bytes::new()))?,
            )
            .await?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(self.http_error(status, resp.into_body()).await)
        }
    }

    /// A unary call, e.g. `unary("process.Process/List", &req)`.
    pub async fn unary<Req, Resp>(&self, method: &str, req: &Req) -> Result<Resp, ClientError>
    where
        Req: prost::Message + Serialize,
        Resp: prost::Message + DeserializeOwned + Default,
    {
        let body = Codec::Json.encode(req);
        let http = self
            .request(Method::POST, &format!("/{method}"))
            .header(
                header::CONTENT_TYPE,
                Codec::Json.content_type(CallKind::Unary),
            )
            .header("connect-protocol-version", "1")
            .body(full(body))?;
        let resp = self.send(http).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.http_error(status, resp.into_body()).await);
        }
        let raw = self
            .read_bounded(resp.into_body(), self.limits.max_message)
            .await?;
        Codec::Json
            .decode(&raw)
            .map_err(|e| ClientError::Protocol(e.message))
    }

    /// A server-streaming call; the stream yields messages until the
    /// end-of-stream envelope.
    pub async fn server_stream<Req, Resp>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<ReplyStream<Resp>, ClientError>
    where
        Req: prost::Message + Serialize,
        Resp: prost::Message + DeserializeOwned + Default,
    {
        let body = envelope(0, &Codec::Json.encode(req));
        let http = self
            .request(Method::POST, &format!("/{method}"))
            .header(
                header::CONTENT_TYPE,
                Codec::Json.content_type(CallKind::Stream),
            )
            .header("connect-protocol-version", "1")
            .body(full(body))?;
        let resp = self.send(http).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.http_error(status, resp.into_body()).await);
        }
        Ok(ReplyStream {
            body: Some(BodyStream::new(resp.into_body())),
            decoder: FrameDecoder::new(self.limits.max_message),
            done: false,
            max_error_message: self.limits.max_error_message,
            _m: std::marker::PhantomData,
        })
    }

    /// `GET /files?path=`: the file's bytes as a stream.
    pub async fn download(
        &self,
        path: &str,
        user: Option<&str>,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        let resp = self
            .send(
                self.request(Method::GET, &files_query(path, user))
                    .body(full(Bytes::new()))?,
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.http_error(status, resp.into_body()).await);
        }
        Ok(
            BodyStream::new(resp.into_body()).filter_map(|f| async move {
                match f {
                    Ok(frame) => frame.into_data().ok().map(Ok),
                    Err(e) => Some(Err(ClientError::Body(e))),
                }
            }),
        )
    }

    /// `POST /files?path=` with an octet-stream body, streamed.
    pub async fn upload<S>(
        &self,
        path: &str,
        user: Option<&str>,
        body: S,
    ) -> Result<(), ClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let body = BodyExt::boxed(http_body_util::StreamBody::new(
            body.map(|r| r.map(hyper::body::Frame::data)),
        ));
        let http = self
            .request(Method::POST, &files_query(path, user))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)?;
        let resp = self.send(http).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.http_error(status, resp.into_body()).await);
        }
        self.read_bounded(resp.into_body(), 64 << 10).await?;
        Ok(())
    }
}

fn files_query(path: &str, user: Option<&str>) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let mut q = format!(
        "/files?path={}",
        utf8_percent_encode(path, NON_ALPHANUMERIC)
    );
    if let Some(u) = user {
        q.push_str(&format!(
            "&username={}",
            utf8_percent_encode(u, NON_ALPHANUMERIC)
        ));
    }
    q
}

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

/// How long a stream's body may go on after its end-of-stream message
/// before the connection is given up (see [`ReplyStream::finish_body`]).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Frames read after the end-of-stream message before the connection is
/// given up.
const DRAIN_FRAMES: usize = 4;

/// Messages of a server stream.
pub struct ReplyStream<M> {
    /// `None` once the end-of-stream message has been read.
    body: Option<BodyStream<hyper::body::Incoming>>,
    decoder: FrameDecoder,
    done: bool,
    max_error_message: usize,
    _m: std::marker::PhantomData<M>,
}

impl<M: prost::Message + DeserializeOwned + Default> ReplyStream<M> {
    /// The next message, `Ok(None)` after a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<M>, ClientError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(frame) = self.decoder.next_frame()? {
                if frame.is_end_stream() {
                    self.done = true;
                    self.finish_body();
                    return match frame.end_stream_error()? {
                        None => Ok(None),
                        Some(mut e) => {
                            e.message = truncate(e.message, self.max_error_message);
                            Err(ClientError::Rpc(e))
                        }
                    };
                }
                return Codec::Json
                    .decode(&frame.payload)
                    .map(Some)
                    .map_err(|e| ClientError::Protocol(e.message));
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match body.next().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
                Some(Err(e)) => return Err(ClientError::Body(e)),
                None => {
                    self.done = true;
                    return Err(ClientError::Rpc(ConnectError::new(
                        Code::Unavailable,
                        "the stream ended without its end-of-stream message",
                    )));
                }
            }
        }
    }

    /// Stops reading messages (the caller has what it needs, e.g. a
    /// process's end event) and lets the connection go back to the pool:
    /// what is left of the body is read and dropped (see `finish_body`).
    pub fn finish(&mut self) {
        self.done = true;
        self.finish_body();
    }

    /// Reads the HTTP body to its end after the end-of-stream message, so the
    /// connection goes back to the pool: hyper closes a connection whose
    /// response body is dropped unfinished, and the next call would pay a
    /// new connect (and the guest an accept). The guest ends the body in the
    /// same write as the end-of-stream message, so this rarely waits; when it
    /// would, a task finishes the drain, bounded in frames and time, off the
    /// caller's path.
    fn finish_body(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        for _ in 0..DRAIN_FRAMES {
            match body.next().now_or_never() {
                Some(Some(Ok(_))) => continue,
                Some(None | Some(Err(_))) => return,
                None => {
                    tokio::spawn(async move {
                        let drain = async {
                            for _ in 0..DRAIN_FRAMES {
                                if !matches!(body.next().await, Some(Ok(_))) {
                                    break;
                                }
                            }
                        };
                        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
                    });
                    return;
                }
            }
        }
    }
}
