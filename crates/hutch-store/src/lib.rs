//! Metadata store trait with its SQLite backend (sqlx), migrations per backend and a shared
//! conformance suite.
//!
//! This crate owns:
//! - the [`Store`] trait: workspaces and quotas, API keys (hash + prefix, never the secret),
//!   sandboxes with compare-and-swap state changes, templates (built-in and per workspace), the
//!   audit log and the jobs queue;
//! - one implementation per database: [`SqliteStore`] now, PostgreSQL later, each with its own
//!   migration folder (`migrations/<backend>/`);
//! - [`conformance`] (feature `conformance`): the suite every implementation must pass.
//!
//! It must not: decide policy (who may do what, which transition to ask for, quota checks —
//! those are `hutch-core`'s pure functions, called by the API and lifecycle code); touch blobs,
//! runtimes or the network; see or log an API key's secret; let a tenant-facing read skip its
//! workspace scope. Times are `hutch_core::Timestamp` (Unix milliseconds) throughout.

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
pub use store::Store;
