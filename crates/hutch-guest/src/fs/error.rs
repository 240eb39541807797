//! The one error type of filesystem work, and the one place it becomes a
//! Connect code (RPC routes) or an HTTP status (`/files`).
//!
//! Messages name the operation and the path *as the client gave it*, never
//! an errno string; the `source` of an [`FsError::Io`] goes to the log only.

use std::{io, path::Path};

use hutch_envd::connect::{Code, ConnectError};

use crate::rpc::RpcError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The request itself is malformed (path too long, NUL, bad `~user`, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("{0} is a directory")]
    IsADirectory(String),
    #[error("not enough disk space to write {0}")]
    NoSpace(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Exhausted(String),
    /// A mount point, or a program that is running (`EBUSY`, `ETXTBSY`).
    #[error("{0} is in use (a mount point or a running program)")]
    Busy(String),
    #[error("{op} {path} failed")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl FsError {
    /// Classifies an IO error of operation `op` on `path`.
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> FsError {
        let p = path.display().to_string();
        match source.raw_os_error() {
            Some(libc::ENOENT) => FsError::NotFound(p),
            Some(libc::EACCES | libc::EPERM | libc::EROFS) => FsError::PermissionDenied(p),
            Some(libc::EEXIST | libc::ENOTEMPTY) => FsError::AlreadyExists(p),
            Some(libc::ENOTDIR) => FsError::NotADirectory(p),
            Some(libc::EISDIR) => FsError::IsADirectory(p),
            Some(libc::ENOSPC | libc::EDQUOT) => FsError::NoSpace(p),
            Some(libc::ELOOP) => {
                FsError::Invalid(format!("too many levels of symbolic links at {p}"))
            }
            Some(libc::EBUSY | libc::ETXTBSY) => FsError::Busy(p),
            Some(libc::EINVAL) => FsError::Invalid(format!("{op} {p}: invalid argument")),
            Some(libc::EFBIG) => FsError::TooLarge(format!("{p}: file too large")),
            Some(libc::ENAMETOOLONG) => FsError::Invalid(format!("path too long: {p}")),
            Some(libc::EXDEV) => FsError::Invalid(format!(
                "{op} {p}: source and destination are on different filesystems"
            )),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => {
                FsError::Exhausted(format!("{op} {p}: out of resources"))
            }
            _ => FsError::Io {
                op,
                path: p,
                source,
            },
        }
    }

    pub fn code(&self) -> Code {
        match self {
            FsError::Invalid(_) | FsError::NotADirectory(_) | FsError::IsADirectory(_) => {
                Code::InvalidArgument
            }
            FsError::NotFound(_) => Code::NotFound,
            FsError::AlreadyExists(_) => Code::AlreadyExists,
            FsError::Busy(_) => Code::FailedPrecondition,
            FsError::PermissionDenied(_) => Code::PermissionDenied,
            FsError::NoSpace(_) | FsError::TooLarge(_) | FsError::Exhausted(_) => {
                Code::ResourceExhausted
            }
            FsError::Io { .. } | FsError::Internal(_) => Code::Internal,
        }
    }

    /// The status of a plain-HTTP (`/files`) error reply, as envd.yaml has them.
    pub fn http_status(&self) -> u16 {
        match self {
            FsError::Invalid(_) | FsError::NotADirectory(_) | FsError::IsADirectory(_) => 400,
            FsError::NotFound(_) => 404,
            FsError::AlreadyExists(_) | FsError::Busy(_) => 409,
            FsError::PermissionDenied(_) => 403,
            FsError::NoSpace(_) => 507,
            FsError::TooLarge(_) => 413,
            FsError::Exhausted(_) => 429,
            FsError::Io { .. } | FsError::Internal(_) => 500,
        }
    }

    /// Logs the cause of an internal error (the client only sees the message).
    fn log(&self) {
        if let FsError::Io { source, .. } = self {
            tracing::warn!(error = %self, cause = %source, "filesystem operation failed");
        }
    }
}

impl From<FsError> for ConnectError {
    fn from(e: FsError) -> Self {
        e.log();
        ConnectError::new(e.code(), e.to_string())
    }
}

impl From<FsError> for RpcError {
    fn from(e: FsError) -> Self {
        RpcError(e.into())
    }
}

impl From<tokio::task::JoinError> for FsError {
    fn from(_: tokio::task::JoinError) -> Self {
        FsError::Internal("a filesystem task failed".into())
    }
}
