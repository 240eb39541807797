//! Errors of the store, and their mapping onto the domain error.

use hutch_core::TransitionError;
use hutch_core::template::TemplateStateError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist (or is not visible to the workspace asking).
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    /// A uniqueness rule or a state precondition failed.
    #[error("{0}")]
    Conflict(String),
    /// A sandbox transition was illegal or lost a compare-and-swap.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A template transition was illegal or lost a compare-and-swap.
    #[error(transparent)]
    TemplateTransition(#[from] TemplateStateError),
    /// A pagination cursor this store did not issue.
    #[error("malformed pagination cursor")]
    InvalidCursor,
    /// A row holds a value the domain types reject: a bug or tampering.
    #[error("stored {what} is malformed")]
    Corrupt { what: &'static str },
    #[error("database operation `{op}` failed")]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Wraps a driver error for operation `op`, turning constraint violations into the
    /// domain's `Conflict` / `NotFound`.
    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| {
            if let Some(db) = source.as_database_error() {
                if db.is_unique_violation() {
                    return StoreError::Conflict(format!("{op}: the name is already taken"));
                }
                if db.is_foreign_key_violation() {
                    return StoreError::NotFound { kind: "workspace" };
                }
            }
            StoreError::Database { op, source }
        }
    }
}

impl From<StoreError> for hutch_core::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind } => hutch_core::Error::NotFound { kind },
            StoreError::Conflict(m) => hutch_core::Error::Conflict(m),
            StoreError::Transition(t) => hutch_core::Error::Conflict(t.to_string()),
            StoreError::TemplateTransition(t) => hutch_core::Error::Conflict(t.to_string()),
            StoreError::InvalidCursor => {
                hutch_core::Error::InvalidInput("malformed pagination cursor".to_owned())
            }
            StoreError::Database { source, .. } if is_busy(&source) => {
                hutch_core::Error::Unavailable("the metadata store is busy, retry".to_owned())
            }
            StoreError::Corrupt { .. } | StoreError::Database { .. } | StoreError::Migrate(_) => {
                hutch_core::Error::Internal
            }
        }
    }
}

fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut)
        || e.as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "5" || c == "6")
}
