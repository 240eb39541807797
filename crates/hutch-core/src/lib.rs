//! Domain types of Hutch: IDs, names, states and their transitions, resource specs and their
//! validation. No IO.
//!
//! This crate owns:
//! - the identifier grammar ([`id`]) and API key format and hashing ([`key`]);
//! - roles and the one authorisation table ([`auth`]);
//! - the sandbox lifecycle state machine with its generation counter ([`sandbox`]);
//! - template names and build states ([`template`]);
//! - the validation of the create-sandbox request into a [`request::SandboxSpec`] (the
//!   request's JSON shape is `hutch-api-types`'s, the one Hutch crate this one depends on);
//! - quotas and host capacity checks ([`quota`]);
//! - workspace names ([`workspace`]);
//! - content digests ([`digest`]) and timestamps ([`time`]);
//! - the domain error with its stable codes ([`error`]), which the API crate maps to HTTP
//!   statuses in exactly one place.
//!
//! It must not do IO of any kind (files, sockets, clocks other than the caller-supplied
//! timestamp, processes), depend on a runtime, a database or HTTP, or contain `unsafe` code.
//! Random generation of IDs and keys uses the operating system's generator through `rand`;
//! every other function is pure.

#![forbid(unsafe_code)]

pub mod auth;
pub mod digest;
pub mod error;
pub mod id;
pub mod key;
pub mod locks;
pub mod quota;
pub mod request;
pub mod sandbox;
pub mod template;
pub mod time;
pub mod workspace;

pub use auth::{Action, Principal, Role, Scope, authorize};
pub use digest::{Digest, DigestError};
pub use error::{Error, ErrorCode};
pub use id::{
    BuildId, FunctionId, IdError, JobId, KeyId, RequestId, SandboxId, TaskId, TemplateId, VolumeId,
    WorkspaceId,
};
pub use key::{ApiKeySecret, KeyError, KeyHash, KeyPrefix};
pub use quota::{Capacity, Quota, QuotaError, Usage, check_capacity, check_quota};
pub use request::{Runtime, SandboxSpec, ValidationError};
pub use sandbox::{Generation, SandboxState, TransitionError, Versioned};
pub use template::{TemplateName, TemplateRef, TemplateState};
pub use time::Timestamp;
pub use workspace::WorkspaceName;
