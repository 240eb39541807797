//! What went wrong talking to a guest, typed so that callers act on it
//! without knowing the wire.
//!
//! Owns: [`ClientError`], and the one translation of the guest's refusals (a
//! Connect error code of an RPC, an HTTP status of `/files`) into an
//! [`ErrorKind`].
//! Must not: decide what a caller tells its own clients; the control plane
//! maps kinds onto its public errors.

use std::fmt;

use http::StatusCode;
use hutch_envd::connect::{Code, ConnectError};

/// What went wrong talking to a guest.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the guest")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("reading the guest's reply")]
    Body(#[source] hyper::Error),
    #[error("the guest answered {0}")]
    Refused(GuestError),
    #[error("the guest sent a malformed reply: {0}")]
    Protocol(String),
    #[error("building the request")]
    Request(#[from] http::Error),
}

/// Why the guest refused a call, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The path, process or watcher does not exist.
    NotFound,
    /// The request itself is wrong (a bad argument, a path that is not a
    /// regular file).
    InvalidArgument,
    /// The user may not do this.
    PermissionDenied,
    /// The target's state forbids it (it exists already, it has a PTY).
    Conflict,
    /// A limit of the guest was reached.
    ResourceExhausted,
    /// A transfer found no room in the sandbox (`/files`).
    NoSpace,
    /// The user the call acts as does not exist in the sandbox.
    UnknownUser,
    /// Anything else: the guest failed, or refused the caller itself.
    Other,
}

/// A call the guest refused. Its message is the guest's, untrusted and
/// truncated (R15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    pub kind: ErrorKind,
    pub message: String,
    /// What the guest sent, for the log.
    wire: Wire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Connect(Code),
    Http(StatusCode),
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.wire {
            Wire::Connect(code) => write!(f, "{}: {}", code.as_str(), self.message),
            Wire::Http(status) => write!(f, "HTTP {status}: {}", self.message),
        }
    }
}

impl GuestError {
    /// A Connect error: an RPC's error reply or a stream's end-of-stream error.
    pub(crate) fn connect(e: ConnectError) -> GuestError {
        let kind = match e.code {
            Code::NotFound => ErrorKind::NotFound,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => ErrorKind::Conflict,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Other,
        };
        GuestError {
            kind,
            message: e.message,
            wire: Wire::Connect(e.code),
        }
    }

    /// A refusal of the user the call acts as (see `hutch_envd::connect::REFUSAL_HEADER`).
    pub(crate) fn unknown_user(mut self) -> GuestError {
        self.kind = ErrorKind::UnknownUser;
        self
    }

    /// A plain HTTP error status (`/files`, `/health`).
    pub(crate) fn http(status: StatusCode, message: String) -> GuestError {
        let kind = match status.as_u16() {
            404 => ErrorKind::NotFound,
            400 | 405 | 406 => ErrorKind::InvalidArgument,
            403 => ErrorKind::PermissionDenied,
            413 | 507 => ErrorKind::NoSpace,
            _ => ErrorKind::Other,
        };
        GuestError {
            kind,
            message,
            wire: Wire::Http(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_what_the_wire_said_for_the_log() {
        let e = GuestError::connect(ConnectError::not_found("process 7"));
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.to_string(), "not_found: process 7");
        let e = GuestError::http(StatusCode::INSUFFICIENT_STORAGE, "disk full".into());
        assert_eq!(e.kind, ErrorKind::NoSpace);
        assert_eq!(e.to_string(), "HTTP 507 Insufficient Storage: disk full");
        let e = GuestError::connect(ConnectError::new(Code::Unauthenticated, "token"));
        assert_eq!(e.kind, ErrorKind::Other);
    }
}
