//! The Connect protocol (connectrpc.com/docs/protocol), the parts envd uses.
//!
//! 1. A unary call is `POST /{package}.{Service}/{Method}` with
//!    `Content-Type: application/json` (or `application/proto`); the reply is
//!    200 with the response message, or an error status with a JSON body
//!    `{"code": "not_found", "message": "..."}`.
//! 2. A streaming call uses `application/connect+json` (or `+proto`). Each
//!    message travels in an envelope: 1 flag byte, a 4-byte big-endian length,
//!    then the payload. A client-streaming request body is a sequence of
//!    envelopes; a server-streaming response is a sequence of envelopes ending
//!    with one whose flag has [`FLAG_END_STREAM`] and whose JSON body is
//!    `{}` or `{"error": {"code", "message"}}`. Errors of a stream therefore
//!    travel with HTTP 200.
//! 3. Messages are encoded with proto3's JSON mapping (pbjson: both field name
//!    styles accepted, unknown fields ignored) or protobuf binary.
//!
//! We write this ourselves rather than use a framework crate: the server side
//! is these few functions, and the guest needs exact control of keepalive
//! frames and back-pressure in its streams (see hutch-guest's process module).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

/// Envelope flag: the payload is compressed (we never negotiate compression,
/// so a request carrying it is refused).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: this is the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Size of an envelope's prefix.
pub const ENVELOPE_HEADER: usize = 5;

/// A Hutch extension of envd's replies: a 401 for a user the sandbox does not have carries
/// this header with [`UNKNOWN_USER`], so a client can tell the caller's bad input from a
/// refused access token (both are `unauthenticated` in envd). The E2B SDKs ignore it.
pub const REFUSAL_HEADER: &str = "x-hutch-refusal";
/// The value of [`REFUSAL_HEADER`] for a user the sandbox does not have.
pub const UNKNOWN_USER: &str = "unknown-user";

/// Connect error codes and the HTTP status each maps to for unary calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Some(match s {
            "canceled" => Code::Canceled,
            "unknown" => Code::Unknown,
            "invalid_argument" => Code::InvalidArgument,
            "deadline_exceeded" => Code::DeadlineExceeded,
            "not_found" => Code::NotFound,
            "already_exists" => Code::AlreadyExists,
            "permission_denied" => Code::PermissionDenied,
            "resource_exhausted" => Code::ResourceExhausted,
            "failed_precondition" => Code::FailedPrecondition,
            "aborted" => Code::Aborted,
            "out_of_range" => Code::OutOfRange,
            "unimplemented" => Code::Unimplemented,
            "internal" => Code::Internal,
            "unavailable" => Code::Unavailable,
            "data_loss" => Code::DataLoss,
            "unauthenticated" => Code::Unauthenticated,
            _ => return None,
        })
    }

    /// The HTTP status of a unary error reply with this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown => 500,
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 400,
            Code::Aborted => 409,
            Code::OutOfRange => 400,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::DataLoss => 500,
            Code::Unauthenticated => 401,
        }
    }
}

/// An error as Connect sends it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// `{"code": "...", "message": "..."}`: the body of a unary error reply
    /// and the `error` member of an end-of-stream message.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }

    /// Parses a unary error body or an end-of-stream `error` member.
    pub fn from_json(v: &serde_json::Value) -> Option<ConnectError> {
        let code = Code::parse(v.get("code")?.as_str()?)?;
        let message = v
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
        Some(ConnectError { code, message })
    }
}

/// Which message encoding a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

/// Whether a content type names a unary or a streaming call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Unary,
    Stream,
}

impl Codec {
    /// Reads `Content-Type` (parameters such as `; charset=utf-8` ignored).
    pub fn from_content_type(ct: &str) -> Option<(Codec, CallKind)> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        Some(match base.as_str() {
            "application/json" => (Codec::Json, CallKind::Unary),
            "application/proto" => (Codec::Proto, CallKind::Unary),
            "application/connect+json" => (Codec::Json, CallKind::Stream),
            "application/connect+proto" => (Codec::Proto, CallKind::Stream),
            _ => return None,
        })
    }

    pub fn content_type(self, kind: CallKind) -> &'static str {
        match (self, kind) {
            (Codec::Json, CallKind::Unary) => "application/json",
            (Codec::Proto, CallKind::Unary) => "application/proto",
            (Codec::Json, CallKind::Stream) => "application/connect+json",
            (Codec::Proto, CallKind::Stream) => "application/connect+proto",
        }
    }

    /// Decodes one message. JSON that is empty is the default message, as
    /// some clients send nothing for `{}`.
    pub fn decode<M>(self, payload: &[u8]) -> Result<M, ConnectError>
    where
        M: prost::Message + DeserializeOwned + Default,
    {
        match self {
            Codec::Json => {
                if payload.iter().all(u8::is_ascii_whitespace) {
                    return Ok(M::default());
                }
                serde_json::from_slice(payload).map_err(|e| {
                    ConnectError::invalid(format!("cannot decode request message: {e}"))
                })
            }
            Codec::Proto => M::decode(payload)
                .map_err(|e| ConnectError::invalid(format!("cannot decode request message: {e}"))),
        }
    }

    pub fn encode<M>(self, msg: &M) -> Bytes
    where
        M: prost::Message + Serialize,
    {
        match self {
            // Serialising a generated message to JSON cannot fail: every
            // field type has a total JSON mapping.
            Codec::Json => Bytes::from(serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec())),
            Codec::Proto => Bytes::from(msg.encode_to_vec()),
        }
    }
}

/// Wraps a payload in an envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(ENVELOPE_HEADER + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// The end-of-stream envelope, carrying an error if the stream failed.
/// Always JSON, whatever the message codec (Connect requires it).
pub fn end_stream(error: Option<&ConnectError>) -> Bytes {
    let body = match error {
        Some(e) => serde_json::json!({ "error": e.to_json() }),
        None => serde_json::json!({}),
    };
    envelope(FLAG_END_STREAM, body.to_string().as_bytes())
}

/// One envelope read off a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: u8,
    pub payload: Bytes,
}

impl Frame {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// For an end-of-stream frame: the error it carries, if any.
    pub fn end_stream_error(&self) -> Result<Option<ConnectError>, ConnectError> {
        let v: serde_json::Value = serde_json::from_slice(&self.payload).map_err(|e| {
            ConnectError::new(Code::Internal, format!("bad end-of-stream message: {e}"))
        })?;
        Ok(v.get("error").and_then(ConnectError::from_json))
    }
}

/// Splits a byte stream into envelopes, refusing any larger than a bound
/// before buffering it (R15: the peer is untrusted).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ConnectError> {
        if self.buf.len() < ENVELOPE_HEADER {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max_frame {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!(
                    "message of {len} bytes exceeds the limit of {} bytes",
                    self.max_frame
                ),
            ));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(ConnectError::new(
                Code::Unimplemented,
                "compressed messages are not supported",
            ));
        }
        if self.buf.len() < ENVELOPE_HEADER + len {
            return Ok(None);
        }
        self.buf.advance(ENVELOPE_HEADER);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { flags, payload }))
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process;

    #[test]
    fn content_types() {
        assert_eq!(
            Codec::from_content_type("application/json; charset=utf-8"),
            Some((Codec::Json, CallKind::Unary))
        );
        assert_eq!(
            Codec::from_content_type("application/connect+json"),
            Some((Codec::Json, CallKind::Stream))
        );
        assert_eq!(
            Codec::from_content_type("Application/Connect+Proto"),
            Some((Codec::Proto, CallKind::Stream))
        );
        assert_eq!(Codec::from_content_type("text/plain"), None);
    }

    #[test]
    fn envelopes_split_across_chunks() {
        let a = envelope(0, b"{\"a\":1}");
        let b = end_stream(None);
        let all = [a.as_ref(), b.as_ref()].concat();
        let mut d = FrameDecoder::new(1024);
        for byte in &all {
            d.push(std::slice::from_ref(byte));
        }
        let f1 = d.next_frame().unwrap().unwrap();
        assert_eq!(&f1.payload[..], b"{\"a\":1}");
        assert!(!f1.is_end_stream());
        let f2 = d.next_frame().unwrap().unwrap();
        assert!(f2.is_end_stream());
        assert_eq!(f2.end_stream_error().unwrap(), None);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn oversized_and_compressed_frames_refused() {
        let mut d = FrameDecoder::new(4);
        d.push(&[0, 0, 0, 0, 5]);
        assert_eq!(d.next_frame().unwrap_err().code, Code::ResourceExhausted);
        let mut d = FrameDecoder::new(4);
        d.push(&[FLAG_COMPRESSED, 0, 0, 0, 1, b'x']);
        assert_eq!(d.next_frame().unwrap_err().code, Code::Unimplemented);
    }

    #[test]
    fn end_stream_carries_error() {
        let e = ConnectError::not_found("process with pid 7 not found");
        let mut d = FrameDecoder::new(1024);
        d.push(&end_stream(Some(&e)));
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.end_stream_error().unwrap(), Some(e));
    }

    #[test]
    fn proto3_json_mapping() {
        // snake_case and lowerCamelCase both accepted, unknown fields ignored.
        let req: process::StartRequest = Codec::Json
            .decode(br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"1"}},"stdin":false,"futureField":3}"#)
            .unwrap();
        assert_eq!(req.process.as_ref().unwrap().cmd, "/bin/bash");
        assert_eq!(req.stdin, Some(false));

        // bytes are base64, sint32 a number, zero values omitted, enums by name.
        let ev = process::ProcessEvent {
            event: Some(process::process_event::Event::Data(
                process::process_event::DataEvent {
                    output: Some(process::process_event::data_event::Output::Stdout(
                        Bytes::from_static(b"hi\n"),
                    )),
                },
            )),
        };
        let json = String::from_utf8(Codec::Json.encode(&ev).to_vec()).unwrap();
        assert_eq!(json, r#"{"data":{"stdout":"aGkK"}}"#);

        let end = process::process_event::EndEvent {
            exit_code: -1,
            exited: false,
            status: "signal: killed".into(),
            error: None,
        };
        let json = String::from_utf8(Codec::Json.encode(&end).to_vec()).unwrap();
        assert_eq!(json, r#"{"exitCode":-1,"status":"signal: killed"}"#);

        let sig: process::SendSignalRequest = Codec::Json
            .decode(br#"{"process":{"pid":5},"signal":"SIGNAL_SIGKILL"}"#)
            .unwrap();
        assert_eq!(sig.signal(), process::Signal::Sigkill);

        let snake: crate::filesystem::ListDirRequest =
            Codec::Json.decode(br#"{"path":"/tmp","depth":2}"#).unwrap();
        assert_eq!(snake.depth, 2);
        let w: crate::filesystem::CreateWatcherRequest = Codec::Json
            .decode(br#"{"path":"/x","include_entry":true,"allowNetworkMounts":true}"#)
            .unwrap();
        assert!(w.include_entry && w.allow_network_mounts);

        // int64 as a string.
        let e = crate::filesystem::EntryInfo {
            size: 5,
            ..Default::default()
        };
        let json = String::from_utf8(Codec::Json.encode(&e).to_vec()).unwrap();
        assert!(json.contains(r#""size":"5""#), "{json}");
        let back: crate::filesystem::EntryInfo = Codec::Json.decode(br#"{"size":"7"}"#).unwrap();
        assert_eq!(back.size, 7);
        let back: crate::filesystem::EntryInfo = Codec::Json.decode(br#"{"size":7}"#).unwrap();
        assert_eq!(back.size, 7);
    }

    #[test]
    fn proto_codec_round_trip() {
        let req = process::ConnectRequest {
            process: Some(process::ProcessSelector {
                selector: Some(process::process_selector::Selector::Tag("t".into())),
            }),
        };
        let bytes = Codec::Proto.encode(&req);
        let back: process::ConnectRequest = Codec::Proto.decode(&bytes).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [&b"{"[..], b"[]", b"\xff\xfe", b"{\"process\":5}", b"null"] {
            let r: Result<process::StartRequest, _> = Codec::Json.decode(input);
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(input));
        }
    }
}
