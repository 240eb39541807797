//! Axum glue for the Connect protocol (framing itself is in `hutch_envd::connect`).
//!
//! Handlers take typed extractors and return typed replies:
//! 1. [`Unary<M>`] checks the content type, reads a bounded body and decodes `M`.
//! 2. [`StreamRequest<M>`] does the same for the single enveloped request of a
//!    server-streaming call.
//! 3. [`ClientStream<M>`] yields the enveloped messages of a client-streaming
//!    request body one by one, each bounded.
//! 4. [`UnaryReply<M>`] and [`StreamReply`] encode replies in the caller's codec;
//!    a [`StreamReply`] is fed through a bounded channel, so a slow client slows
//!    the producer instead of growing a buffer (R16), and it always ends with the
//!    end-of-stream envelope.
//! 5. [`RpcError`] is the one place a Connect error becomes an HTTP reply.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hutch_envd::connect::{
    CallKind, Code, Codec, ConnectError, FLAG_END_STREAM, FrameDecoder, end_stream, envelope,
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::mpsc;

use crate::GuestState;

/// A Connect error as a handler returns it.
#[derive(Debug)]
pub struct RpcError(pub ConnectError);

impl From<ConnectError> for RpcError {
    fn from(e: ConnectError) -> Self {
        RpcError(e)
    }
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcError(ConnectError::new(code, message))
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // An error may be raised before the request body was read to its
        // end (wrong content type, message too large): the connection cannot
        // be reused then, so every error reply closes it. Errors are rare
        // enough that the reconnect costs nothing measurable.
        (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONNECTION, "close"),
            ],
            self.0.to_json().to_string(),
        )
            .into_response()
    }
}

/// Reads the whole body, refusing more than `limit` bytes as it arrives.
async fn read_bounded(body: Body, limit: usize) -> Result<Bytes, RpcError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(RpcError::new(
            Code::ResourceExhausted,
            format!("request message exceeds the limit of {limit} bytes"),
        )),
        Err(e) => Err(RpcError::new(
            Code::Canceled,
            format!("reading the request failed: {e}"),
        )),
    }
}

fn codec_of(headers: &HeaderMap, want: CallKind) -> Result<Codec, RpcError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match Codec::from_content_type(ct) {
        Some((codec, kind)) if kind == want => Ok(codec),
        _ => Err(RpcError::new(
            Code::InvalidArgument,
            format!(
                "unsupported content type {ct:?}; this method takes {} or {}",
                Codec::Json.content_type(want),
                Codec::Proto.content_type(want)
            ),
        )),
    }
}

/// The decoded request of a unary call.
pub struct Unary<M> {
    pub codec: Codec,
    pub msg: M,
}

impl<M> FromRequest<GuestState> for Unary<M>
where
    M: prost::Message + DeserializeOwned + Default,
{
    type Rejection = RpcError;

    async fn from_request(req: Request, state: &GuestState) -> Result<Self, Self::Rejection> {
        let codec = codec_of(req.headers(), CallKind::Unary)?;
        let body = read_bounded(req.into_body(), state.config.max_message_bytes).await?;
        Ok(Unary {
            codec,
            msg: codec.decode(&body)?,
        })
    }
}

/// The reply of a unary call, encoded in the request's codec.
pub struct UnaryReply<M> {
    pub codec: Codec,
    pub msg: M,
}

impl<M: prost::Message + Serialize> IntoResponse for UnaryReply<M> {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                self.codec.content_type(CallKind::Unary),
            )],
            self.codec.encode(&self.msg),
        )
            .into_response()
    }
}

/// The single request message of a server-streaming call.
pub struct StreamRequest<M> {
    pub codec: Codec,
    pub msg: M,
    /// From `Keepalive-Ping-Interval` (seconds), else the configured default.
    pub keepalive: Duration,
}

impl<M> FromRequest<GuestState> for StreamRequest<M>
where
    M: prost::Message + DeserializeOwned + Default,
{
    type Rejection = RpcError;

    async fn from_request(req: Request, state: &GuestState) -> Result<Self, Self::Rejection> {
        let codec = codec_of(req.headers(), CallKind::Stream)?;
        let keepalive = keepalive_interval(req.headers(), state.config.keepalive_default);
        let limit = state.config.max_message_bytes;
        let body = read_bounded(
            req.into_body(),
            limit + hutch_envd::connect::ENVELOPE_HEADER,
        )
        .await?;
        let mut dec = FrameDecoder::new(limit);
        dec.push(&body);
        let frame = dec.next_frame()?.ok_or_else(|| {
            RpcError::new(
                Code::InvalidArgument,
                "the request holds no complete message envelope",
            )
        })?;
        if frame.flags & FLAG_END_STREAM != 0 || dec.pending() != 0 {
            return Err(RpcError::new(
                Code::InvalidArgument,
                "a server-streaming request must hold exactly one message",
            ));
        }
        Ok(StreamRequest {
            codec,
            msg: codec.decode(&frame.payload)?,
            keepalive,
        })
    }
}

/// Reads `Keepalive-Ping-Interval` (whole seconds, as the SDKs send it),
/// clamped to [1 s, 1 h].
pub fn keepalive_interval(headers: &HeaderMap, default: Duration) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.clamp(1, 3600)))
        .unwrap_or(default)
}

/// The messages of a client-streaming request, decoded as they arrive.
pub struct ClientStream<M> {
    pub codec: Codec,
    body: axum::body::BodyDataStream,
    decoder: FrameDecoder,
    done: bool,
    _m: std::marker::PhantomData<M>,
}

impl<M> FromRequest<GuestState> for ClientStream<M>
where
    M: prost::Message + DeserializeOwned + Default + Send,
{
    type Rejection = RpcError;

    async fn from_request(req: Request, state: &GuestState) -> Result<Self, Self::Rejection> {
        let codec = codec_of(req.headers(), CallKind::Stream)?;
        Ok(ClientStream {
            codec,
            body: req.into_body().into_data_stream(),
            decoder: FrameDecoder::new(state.config.max_message_bytes),
            done: false,
            _m: std::marker::PhantomData,
        })
    }
}

impl<M> ClientStream<M>
where
    M: prost::Message + DeserializeOwned + Default,
{
    /// The next message; `Ok(None)` at the end of the request (an end-stream
    /// envelope or the end of the body).
    pub async fn next(&mut self) -> Result<Option<M>, RpcError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(frame) = self.decoder.next_frame()? {
                if frame.is_end_stream() {
                    self.done = true;
                    return Ok(None);
                }
                return Ok(Some(self.codec.decode(&frame.payload)?));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => {
                    return Err(RpcError::new(
                        Code::Canceled,
                        format!("reading the request failed: {e}"),
                    ));
                }
                None => {
                    self.done = true;
                    if self.decoder.pending() != 0 {
                        return Err(RpcError::new(
                            Code::InvalidArgument,
                            "the request ended inside a message envelope",
                        ));
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// Capacity of the channel between a stream's producer and the HTTP body, in
/// messages. Small on purpose: it is the whole buffer between a process's
/// pipe and a slow client.
pub const STREAM_CHANNEL_MESSAGES: usize = 4;

/// The sending half of a server stream.
pub struct StreamSender<M> {
    codec: Codec,
    tx: mpsc::Sender<Bytes>,
    _m: std::marker::PhantomData<fn(M)>,
}

impl<M> Clone for StreamSender<M> {
    fn clone(&self) -> Self {
        StreamSender {
            codec: self.codec,
            tx: self.tx.clone(),
            _m: std::marker::PhantomData,
        }
    }
}

/// The client went away; the producer should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientGone;

impl<M: prost::Message + Serialize> StreamSender<M> {
    /// Sends one message, waiting while the client is slow.
    pub async fn send(&self, msg: &M) -> Result<(), ClientGone> {
        let payload = self.codec.encode(msg);
        self.tx
            .send(envelope(0, &payload))
            .await
            .map_err(|_| ClientGone)
    }

    /// Queues `msg` at once if the stream has room (a fresh one always has),
    /// so that it leaves with the response's headers in one write; gives it
    /// back when the stream is full. A client that went away is not an
    /// error here: the next `send` reports it.
    pub fn try_send(&self, msg: M) -> Result<(), M> {
        let payload = self.codec.encode(&msg);
        match self.tx.try_send(envelope(0, &payload)) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(msg),
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Ends the stream with an error (the end-of-stream envelope is sent by
    /// [`StreamReply`] when every sender is dropped, without error).
    pub async fn fail(self, err: ConnectError) {
        let _ = self.tx.send(end_stream(Some(&err))).await;
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A server-streaming reply.
pub struct StreamReply {
    codec: Codec,
    rx: mpsc::Receiver<Bytes>,
}

/// Opens a server stream: the handler returns the [`StreamReply`] and feeds
/// the [`StreamSender`] from a task it spawns.
pub fn server_stream<M>(codec: Codec) -> (StreamSender<M>, StreamReply) {
    let (tx, rx) = mpsc::channel(STREAM_CHANNEL_MESSAGES);
    (
        StreamSender {
            codec,
            tx,
            _m: std::marker::PhantomData,
        },
        StreamReply { codec, rx },
    )
}

impl IntoResponse for StreamReply {
    fn into_response(self) -> Response {
        let frames = futures::stream::unfold((self.rx, false), |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Some(frame) => {
                    let is_end = frame.first().is_some_and(|f| f & FLAG_END_STREAM != 0);
                    Some((Ok::<_, std::convert::Infallible>(frame), (rx, is_end)))
                }
                None => Some((Ok(end_stream(None)), (rx, true))),
            }
        });
        let mut resp = Response::new(Body::from_stream(frames));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.codec.content_type(CallKind::Stream)),
        );
        resp
    }
}

/// An error raised before a server stream started: Connect sends it as a
/// stream holding only the end-of-stream envelope, with HTTP 200.
pub fn stream_error(codec: Codec, err: ConnectError) -> Response {
    let mut resp = Response::new(Body::from(end_stream(Some(&err))));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.content_type(CallKind::Stream)),
    );
    resp
}

/// Stream handlers return this: either a live stream or an early error.
pub type StreamResult = Result<StreamReply, (Codec, ConnectError)>;

/// Convenience to turn a [`StreamResult`] into a response.
pub fn stream_response(r: StreamResult) -> Response {
    match r {
        Ok(s) => s.into_response(),
        Err((codec, e)) => stream_error(codec, e),
    }
}

/// Extracts nothing, but makes a handler's parts available (e.g. headers).
pub struct Headers(pub HeaderMap);

impl<S: Send + Sync> FromRequestParts<S> for Headers {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Headers(parts.headers.clone()))
    }
}
