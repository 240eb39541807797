//! The service layer's error: what the client may see, and what only the log may see.
//!
//! Every failure is one of two kinds:
//! 1. [`ControlError::Domain`]: a `hutch_core::Error` about the client's own request (invalid
//!    input, not found, conflict, quota...). Its message is safe to show.
//! 2. [`ControlError::Hidden`]: a failure of the platform (database, host agent, guest). The
//!    client sees only `public` (`internal` or `unavailable` with a generic message); `detail`
//!    (the whole cause chain, which may name host paths or errno strings) goes to the log with
//!    the request id.
//!
//! The API crate maps [`ControlError::public`]'s code to an HTTP status in exactly one place.

use hutch_core::{Error, SandboxId};
use hutch_guest_client::{ClientError, ErrorKind};
use hutch_host::AgentError;
use hutch_store::StoreError;

/// A failed service call.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// About the client's request; shown as is.
    #[error(transparent)]
    Domain(#[from] Error),
    /// A platform failure: `public` is shown, `detail` is logged.
    #[error("{context}: {detail}")]
    Hidden {
        public: Error,
        context: &'static str,
        detail: String,
    },
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// The error and its sources, joined for the log (one implementation, in hutch-core).
pub use hutch_core::error::error_chain as chain;

impl ControlError {
    /// What the client is told.
    pub fn public(&self) -> Error {
        match self {
            ControlError::Domain(e) => e.clone(),
            ControlError::Hidden { public, .. } => public.clone(),
        }
    }

    /// What only the log is told (`None` for domain errors, whose message says it all).
    pub fn detail(&self) -> Option<String> {
        match self {
            ControlError::Domain(_) => None,
            ControlError::Hidden {
                context, detail, ..
            } => Some(format!("{context}: {detail}")),
        }
    }

    pub fn internal(context: &'static str, e: &(dyn std::error::Error + 'static)) -> Self {
        ControlError::Hidden {
            public: Error::Internal,
            context,
            detail: chain(e),
        }
    }

    /// An agent failure: capacity stays visible (503), the rest is internal.
    pub fn agent(context: &'static str, e: AgentError) -> Self {
        let public = match &e {
            AgentError::Capacity(_) => {
                Error::CapacityExhausted("the host has no room for this sandbox".to_owned())
            }
            AgentError::RuntimeUnavailable(r) => {
                Error::InvalidInput(format!("runtime {r} is not available on this server"))
            }
            AgentError::NotFound(_) => Error::NotFound { kind: "sandbox" },
            _ => Error::Internal,
        };
        ControlError::Hidden {
            public,
            context,
            detail: chain(&e),
        }
    }

    /// A failure talking to a sandbox's guest. The guest is untrusted (R15): its messages are
    /// already truncated by the client, and only refusals about the client's request (a
    /// missing file, a bad argument) are passed on with them.
    pub fn guest(id: &SandboxId, kind: &'static str, e: ClientError) -> Self {
        let detail = format!("sandbox {id}: {}", chain(&e));
        let public = match &e {
            ClientError::Refused(r) => match r.kind {
                ErrorKind::NotFound => Error::NotFound { kind },
                ErrorKind::InvalidArgument => Error::InvalidInput(r.message.clone()),
                // The guest's message says "permission denied: <path>" already.
                ErrorKind::PermissionDenied => Error::InvalidInput(r.message.clone()),
                ErrorKind::UnknownUser => Error::InvalidInput(format!("user: {}", r.message)),
                ErrorKind::Conflict | ErrorKind::ResourceExhausted => {
                    Error::Conflict(r.message.clone())
                }
                ErrorKind::NoSpace => Error::Conflict("not enough space in the sandbox".to_owned()),
                ErrorKind::Other => unavailable(),
            },
            _ => unavailable(),
        };
        ControlError::Hidden {
            public,
            context: "guest call",
            detail,
        }
    }
}

fn unavailable() -> Error {
    Error::Unavailable("the sandbox's guest did not answer as expected".to_owned())
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. }
            | StoreError::Conflict(_)
            | StoreError::Transition(_)
            | StoreError::TemplateTransition(_)
            | StoreError::InvalidCursor => ControlError::Domain(e.into()),
            other => {
                let detail = chain(&other);
                ControlError::Hidden {
                    public: other.into(),
                    context: "store",
                    detail,
                }
            }
        }
    }
}

impl From<tokio::task::JoinError> for ControlError {
    fn from(e: tokio::task::JoinError) -> Self {
        ControlError::internal("background task", &e)
    }
}
