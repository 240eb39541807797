//! The store traits: everything Hutch keeps about workspaces, keys, sandboxes, templates,
//! the audit log and jobs, one trait per aggregate, each in its own file:
//! `workspaces.rs` ([`WorkspaceStore`]), `api_keys.rs` ([`ApiKeyStore`]), `sandboxes.rs`
//! ([`SandboxStore`]), `templates.rs` ([`TemplateStore`]), `audit.rs` ([`AuditStore`]) and
//! `jobs.rs` ([`JobStore`]). [`Store`] is all of them at once, the name callers hold
//! (`Arc<dyn Store>`); on a backend type, a method needs its trait in scope
//! (`use hutch_store::prelude::*`).
//! One implementation per database; all must pass [`crate::conformance`].
//!
//! Scoping rule (R11): every read of a tenant's object takes the workspace id, and another
//! workspace's object is simply `None` / `NotFound`. The few unscoped reads
//! (`get_sandbox_unscoped`, `active_sandboxes`, `expired_sandboxes`) serve the platform's own
//! background work and must never be reachable with a client-chosen id without a scope check.

mod api_keys;
mod audit;
mod jobs;
mod sandboxes;
mod templates;
mod workspaces;

pub use api_keys::ApiKeyStore;
pub use audit::AuditStore;
pub use jobs::JobStore;
pub use sandboxes::SandboxStore;
pub use templates::TemplateStore;
pub use workspaces::WorkspaceStore;

/// The whole metadata store: every aggregate's trait. Implement the six aggregate traits and a
/// type is a `Store` (blanket impl below); nothing is implemented on `Store` itself.
pub trait Store:
    WorkspaceStore + ApiKeyStore + SandboxStore + TemplateStore + AuditStore + JobStore + Send + Sync
{
}

impl<T> Store for T where
    T: WorkspaceStore
        + ApiKeyStore
        + SandboxStore
        + TemplateStore
        + AuditStore
        + JobStore
        + Send
        + Sync
{
}
