//! The JSON shapes of Hutch's REST API (`/v1`), defined once: every request body the API
//! reads and every view it answers with. The API (`hutch-api`) parses and serialises them,
//! the control plane (`hutch-control`) builds the views, the CLI (`crates/hutch/src/cli`)
//! sends the requests and reads the views, and the OpenAPI document (`docs/openapi.json`) is
//! generated from them.
//!
//! This crate owns:
//! - the field names and JSON types on the wire (DESIGN §2a: extend, don't rename);
//! - their documentation, which is also the OpenAPI document's: with feature `openapi`, every
//!   type derives `utoipa::ToSchema` and its doc comments become the schema's descriptions;
//! - examples of them (below, checked as doctests);
//! - the first step of "parse, then validate, then act" (STYLE 6): requests reject unknown
//!   fields and wrong JSON types.
//!
//! It must not: do IO; validate beyond shape (bounds, grammars, defaults and permissions
//! belong to the domain: `hutch_core::request` turns a [`CreateSandboxRequest`] into a
//! `SandboxSpec`, `hutch-control` checks the other requests); know about HTTP, the store or
//! the guest's protocol; depend on another Hutch crate.
//!
//! **Why the dependency points this way.** This crate is a leaf, and `hutch-core` depends on
//! it: core's validation takes the wire request as its input
//! (`SandboxSpec::try_from(CreateSandboxRequest)`). The other way round (this crate on core)
//! would have left core's validation needing its own copy of the request's fields, so a new
//! field would be written twice. Views carry ids, states and times as the strings the wire
//! shows, so nothing here needs core's types; the conversions from store records are
//! `hutch_control::views`. A client (the CLI, a bench, an SDK) can use these types without
//! the rest of Hutch.
//!
//! **Adding a field**: add it here with its doc; give it meaning where it belongs (validate a
//! request field in `hutch_core::request` or `hutch-control`, fill a view field in
//! `hutch_control::views`); then regenerate `docs/openapi.json` as its test
//! (`crates/hutch-api/tests/openapi.rs`) says.
//!
//! # Examples
//!
//! A create request as a client sends it; a typo is an error, not a silent default:
//!
//! ```
//! use hutch_api_types::CreateSandboxRequest;
//!
//! let req: CreateSandboxRequest = serde_json::from_str(
//!     r#"{"template": "debian:12", "cpu": 1, "memory_mb": 512, "env": {"A": "1"}}"#,
//! )?;
//! assert_eq!((req.template.as_str(), req.memory_mb), ("debian:12", Some(512)));
//! assert!(serde_json::from_str::<CreateSandboxRequest>(r#"{"template": "x", "cpus": 2}"#).is_err());
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! The events of a streamed exec, one NDJSON line each:
//!
//! ```
//! use hutch_api_types::ExecEvent;
//!
//! let lines = [
//!     r#"{"type":"start","pid":42}"#,
//!     r#"{"type":"stdout","data":"hi\n"}"#,
//!     r#"{"type":"stderr","data_b64":"/w=="}"#,
//!     r#"{"type":"exit","exit_code":0,"signal":null,"oom":false,"timed_out":false}"#,
//! ];
//! for line in lines {
//!     let ev: ExecEvent = serde_json::from_str(line)?;
//!     assert_eq!(serde_json::to_string(&ev)?, line);
//! }
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! Every error reply:
//!
//! ```
//! use hutch_api_types::ErrorBody;
//!
//! let e: ErrorBody = serde_json::from_str(r#"{"code": "not_found", "message": "no such sandbox"}"#)?;
//! assert_eq!(e.code, "not_found");
//! # Ok::<(), serde_json::Error>(())
//! ```

#![forbid(unsafe_code)]

mod admin;
mod error;
mod exec;
mod files;
mod pty;
mod sandbox;
mod template;

pub use admin::{
    AuditList, AuditView, CreateKey, CreateWorkspace, CreatedKey, KeyList, KeyView, Quota,
    WorkspaceList, WorkspaceView,
};
pub use error::ErrorBody;
pub use exec::{ExecEvent, ExecRequest, ExecResult};
pub use files::{FileEntry, FileList, MakeDir, MoveFile};
pub use pty::PtyControl;
pub use sandbox::{CreateSandboxRequest, SandboxList, SandboxView, TimeoutRequest};
pub use template::{TemplateList, TemplateView};
