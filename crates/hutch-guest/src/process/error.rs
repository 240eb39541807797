//! Errors of the process service, and the one place they become Connect
//! errors. Messages speak about the client's own request (its command, pid,
//! tag or cwd), never about guest paths or errno strings; causes go to the log.

use hutch_envd::connect::{Code, ConnectError};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The request itself is malformed or out of bounds.
    #[error("{0}")]
    Invalid(String),
    #[error("process with pid {0} not found")]
    PidNotFound(u32),
    #[error("process with tag {0:?} not found")]
    TagNotFound(String),
    #[error("a running process already has the tag {0:?}")]
    TagTaken(String),
    /// The process exists but cannot do what was asked (stdin closed, no PTY...).
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// Starting the command failed in a way the client can act on.
    #[error("cannot start {cmd:?}: {reason}")]
    Exec { cmd: String, reason: &'static str },
    /// Something in the guest failed; the cause is logged, not sent.
    #[error("{what}")]
    Internal {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ProcessError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ProcessError::Invalid(msg.into())
    }

    pub fn precondition(msg: impl Into<String>) -> Self {
        ProcessError::Precondition(msg.into())
    }

    pub fn internal(what: &'static str, source: std::io::Error) -> Self {
        ProcessError::Internal { what, source }
    }

    pub fn code(&self) -> Code {
        match self {
            ProcessError::Invalid(_) | ProcessError::Exec { .. } => Code::InvalidArgument,
            ProcessError::PidNotFound(_) | ProcessError::TagNotFound(_) => Code::NotFound,
            ProcessError::TagTaken(_) => Code::AlreadyExists,
            ProcessError::Precondition(_) => Code::FailedPrecondition,
            ProcessError::Exhausted(_) => Code::ResourceExhausted,
            ProcessError::PermissionDenied(_) => Code::PermissionDenied,
            ProcessError::Internal { .. } => Code::Internal,
        }
    }
}

impl From<ProcessError> for ConnectError {
    fn from(e: ProcessError) -> Self {
        if let ProcessError::Internal { what, source } = &e {
            tracing::warn!(error = %source, "{what}");
        }
        ConnectError::new(e.code(), e.to_string())
    }
}

impl From<ProcessError> for crate::rpc::RpcError {
    fn from(e: ProcessError) -> Self {
        crate::rpc::RpcError(e.into())
    }
}
