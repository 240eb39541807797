//! Connect calls in the JSON codec: the plumbing under the typed calls of
//! [`crate::process`] and [`crate::fs`].
//!
//! Owns: unary calls and server streams, every reply bounded by [`Limits`]
//! (R15), and giving a stream's connection back to the pool.
//! Must not: be seen outside this crate; callers use the typed calls.
//!
//! Flow of a server-streaming call:
//! 1. POST `/{service}/{method}` with `application/connect+json` and the
//!    request in one envelope;
//! 2. read envelopes as they arrive with a bounded [`FrameDecoder`];
//! 3. yield each message; the end-of-stream envelope ends the stream,
//!    carrying the call's error if it failed, and a body that ends without
//!    it is an error, not a success;
//! 4. read what is left of the body, so the connection goes back to the pool
//!    (see [`ReplyStream::finish`]).
//!
//! [`Limits`]: crate::Limits

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http::{Method, header};
use http_body_util::BodyStream;
use hutch_envd::connect::{CallKind, Codec, FrameDecoder, envelope};
use serde::{Serialize, de::DeserializeOwned};

use crate::{ClientError, GuestClient, GuestError, full, truncate};

impl GuestClient {
    /// POSTs a Connect call: `path` is `/{service}/{method}`, acting as
    /// `user` when given.
    async fn post_rpc(
        &self,
        path: &str,
        user: Option<&str>,
        kind: CallKind,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let req = self
            .request(Method::POST, path, user)
            .header(header::CONTENT_TYPE, Codec::Json.content_type(kind))
            .header("connect-protocol-version", "1")
            .body(full(body))?;
        self.call(req).await
    }

    /// A unary call.
    pub(crate) async fn unary<Req, Resp>(
        &self,
        path: &str,
        user: Option<&str>,
        req: &Req,
    ) -> Result<Resp, ClientError>
    where
        Req: prost::Message + Serialize,
        Resp: prost::Message + DeserializeOwned + Default,
    {
        let body = Codec::Json.encode(req);
        let resp = self.post_rpc(path, user, CallKind::Unary, body).await?;
        let raw = self
            .read_bounded(resp.into_body(), self.limits.max_message)
            .await?;
        Codec::Json
            .decode(&raw)
            .map_err(|e| ClientError::Protocol(e.message))
    }

    /// A server-streaming call (steps 1–2 of the module docs).
    pub(crate) async fn server_stream<Req, Resp>(
        &self,
        path: &str,
        user: Option<&str>,
        req: &Req,
    ) -> Result<ReplyStream<Resp>, ClientError>
    where
        Req: prost::Message + Serialize,
        Resp: prost::Message + DeserializeOwned + Default,
    {
        let body = envelope(0, &Codec::Json.encode(req));
        let resp = self.post_rpc(path, user, CallKind::Stream, body).await?;
        Ok(ReplyStream {
            body: Some(BodyStream::new(resp.into_body())),
            decoder: FrameDecoder::new(self.limits.max_message),
            done: false,
            max_error_message: self.limits.max_error_message,
            _m: std::marker::PhantomData,
        })
    }
}

/// How long a stream's body may go on after its end-of-stream message
/// before the connection is given up (see [`ReplyStream::finish_body`]).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Frames read after the end-of-stream message before the connection is
/// given up.
const DRAIN_FRAMES: usize = 4;

/// Messages of a server stream.
pub(crate) struct ReplyStream<M> {
    /// `None` once the end-of-stream message has been read.
    body: Option<BodyStream<hyper::body::Incoming>>,
    decoder: FrameDecoder,
    done: bool,
    max_error_message: usize,
    _m: std::marker::PhantomData<M>,
}

impl<M: prost::Message + DeserializeOwned + Default> ReplyStream<M> {
    /// The next message, `Ok(None)` after a clean end of stream (step 3).
    pub(crate) async fn next(&mut self) -> Result<Option<M>, ClientError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let frame = self
                .decoder
                .next_frame()
                .map_err(|e| ClientError::Protocol(e.message))?;
            if let Some(frame) = frame {
                if frame.is_end_stream() {
                    self.done = true;
                    self.finish_body();
                    return match frame.end_stream_error() {
                        Ok(None) => Ok(None),
                        Ok(Some(mut e)) => {
                            e.message = truncate(e.message, self.max_error_message);
                            Err(ClientError::Refused(GuestError::connect(e)))
                        }
                        Err(e) => Err(ClientError::Protocol(e.message)),
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
                    return Err(ClientError::Protocol(
                        "the stream ended without its end-of-stream message".to_owned(),
                    ));
                }
            }
        }
    }

    /// Stops reading messages (the caller has what it needs, e.g. a
    /// process's end event) and lets the connection go back to the pool:
    /// what is left of the body is read and dropped (see `finish_body`).
    pub(crate) fn finish(&mut self) {
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
