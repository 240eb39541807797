//! Metadata store traits with their SQLite backend (sqlx), migrations per backend and a shared
//! conformance suite.
//!
//! This crate owns:
//! - the store traits, one per aggregate: workspaces and quotas, API keys (hash + prefix, never
//!   the secret), sandboxes with compare-and-swap state changes, templates (built-in and per
//!   workspace), the audit log and the jobs queue; [`Store`] is all of them at once;
//! - one implementation per database: [`SqliteStore`] now, PostgreSQL later, each with its own
//!   migration folder (`migrations/<backend>/`);
//! - [`conformance`] (feature `conformance`): the suite every implementation must pass.
//!
//! It must not: decide policy (who may do what, which transition to ask for, quota checks —
//! those are `hutch-core`'s pure functions, called by the API and lifecycle code); touch blobs,
//! runtimes or the network; see or log an API key's secret; let a tenant-facing read skip its
//! workspace scope. Times are `hutch_core::Timestamp` (Unix milliseconds) throughout.
//!
//! Layout, one file per aggregate (`workspaces`, `api_keys`, `sandboxes`, `templates`, `audit`,
//! `jobs`) in each folder:
//! - `store/<aggregate>.rs`: that aggregate's trait; `store/mod.rs`: [`Store`], their sum;
//! - `sqlite/mod.rs`: the pool, opening, migrations and the row helpers several aggregates share;
//!   `sqlite/<aggregate>.rs`: its trait implemented for [`SqliteStore`], with its row mapping;
//! - `conformance/mod.rs`: `conformance::run` and shared fixtures; `conformance/<aggregate>.rs`:
//!   its checks.
//!
//! The PostgreSQL backend mirrors `sqlite/` file for file (`postgres/mod.rs`,
//! `postgres/sandboxes.rs`, ...). A `dyn Store` answers every aggregate's methods as is; calling
//! them on a backend type or a generic `S: Store` needs the traits in scope:
//! `use hutch_store::prelude::*;`.

#![forbid(unsafe_code)]

pub mod error;
pub mod model;
pub mod sqlite;
pub mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Result, StoreError};
pub use model::*;
pub use sqlite::SqliteStore;
pub use store::{
    ApiKeyStore, AuditStore, JobStore, SandboxStore, Store, TemplateStore, WorkspaceStore,
};

/// Every store trait, so store methods can be called on a backend type (`SqliteStore`) or a
/// generic `S: Store`: `use hutch_store::prelude::*;`.
pub mod prelude {
    pub use crate::store::{
        ApiKeyStore, AuditStore, JobStore, SandboxStore, Store, TemplateStore, WorkspaceStore,
    };
}
