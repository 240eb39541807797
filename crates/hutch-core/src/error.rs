//! The domain error every layer converts into before it reaches a client.
//!
//! Each variant has a stable [`ErrorCode`]; the API crate maps codes to HTTP statuses in one
//! place. Messages are about the client's own request: never host paths, errno strings or
//! another tenant's objects.

use std::fmt;

/// Stable, machine-readable error codes (`snake_case` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or a value is out of bounds.
    InvalidInput,
    /// The object does not exist, or belongs to another workspace (indistinguishable).
    NotFound,
    /// The object exists but its state forbids the operation, or a name is taken.
    Conflict,
    /// A workspace quota would be exceeded.
    QuotaExceeded,
    /// The host (or fleet) has no room for the request right now.
    CapacityExhausted,
    /// The caller is authenticated but its role may not do this.
    Forbidden,
    /// No key, or a key that is unknown or revoked.
    Unauthenticated,
    /// The request body is larger than the route accepts.
    PayloadTooLarge,
    /// The client sent its request too slowly (its body below the minimum rate).
    RequestTimeout,
    /// The client's address holds as many connections as one address may.
    TooManyConnections,
    /// A dependency (runtime, store, guest) is temporarily unavailable.
    Unavailable,
    /// A bug or an unexpected host failure; details go to the log only.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidInput,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::QuotaExceeded,
        ErrorCode::CapacityExhausted,
        ErrorCode::Forbidden,
        ErrorCode::Unauthenticated,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::TooManyConnections,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The wire spelling. Never change one: clients match on it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::CapacityExhausted => "capacity_exhausted",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain error: a code plus a message meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidInput(String),
    /// `kind` names the object type ("sandbox", "template", ...), never its owner.
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    CapacityExhausted(String),
    #[error("this key's role may not {action}")]
    Forbidden { action: &'static str },
    #[error("missing, unknown or revoked API key")]
    Unauthenticated,
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("request body arrived too slowly (below {min_rate} bytes/s)")]
    RequestTimeout { min_rate: u64 },
    #[error("too many connections from this address (at most {limit})")]
    TooManyConnections { limit: usize },
    #[error("{0}")]
    Unavailable(String),
    /// The message is generic on purpose; the cause belongs in the log with the request id.
    #[error("internal error")]
    Internal,
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidInput(_) => ErrorCode::InvalidInput,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            Error::CapacityExhausted(_) => ErrorCode::CapacityExhausted,
            Error::Forbidden { .. } => ErrorCode::Forbidden,
            Error::Unauthenticated => ErrorCode::Unauthenticated,
            Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::RequestTimeout { .. } => ErrorCode::RequestTimeout,
            Error::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal => ErrorCode::Internal,
        }
    }
}

/// An error and its sources joined with `: `, for log lines (never for clients: sources name
/// host paths and errno strings).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }

    #[test]
    fn each_error_maps_to_its_code() {
        let cases = [
            (Error::InvalidInput("x".into()), "invalid_input"),
            (Error::NotFound { kind: "sandbox" }, "not_found"),
            (Error::Conflict("x".into()), "conflict"),
            (Error::QuotaExceeded("x".into()), "quota_exceeded"),
            (Error::CapacityExhausted("x".into()), "capacity_exhausted"),
            (Error::Forbidden { action: "x" }, "forbidden"),
            (Error::Unauthenticated, "unauthenticated"),
            (Error::PayloadTooLarge { limit: 1 }, "payload_too_large"),
            (Error::Unavailable("x".into()), "unavailable"),
            (Error::Internal, "internal"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code().as_str(), code);
        }
        assert_eq!(
            Error::NotFound { kind: "sandbox" }.to_string(),
            "sandbox not found"
        );
    }
}
