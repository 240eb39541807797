//! The envd wire contract: what E2B's in-sandbox daemon speaks, and therefore
//! what `hutch-guest` serves and the host agent's guest client sends.
//!
//! Owns: the protobuf messages of `process.Process` and `filesystem.Filesystem`
//! (generated from `proto/` with proto3-JSON serde impls), the Connect protocol
//! framing ([`connect`]), the signed-URL scheme of `/files` ([`signing`]) and
//! the words of a process's end event ([`exit`]).
//! Must not: do IO of its own or know about sandboxes; it is pure encoding so
//! both sides and the fuzz target can share it.

#![forbid(unsafe_code)]

pub mod connect;
pub mod exit;
pub mod signing;

/// `process.*` messages (E2B envd `process/process.proto`).
#[allow(clippy::all, missing_docs)]
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

/// `filesystem.*` messages (E2B envd `filesystem/filesystem.proto`).
#[allow(clippy::all, missing_docs)]
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}

/// The compiled `FileDescriptorSet` of `proto/`, for the drift test that
/// compares it with the descriptors shipped in the e2b SDK.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envd_descriptor.bin"));

/// The envd version Hutch's guest advertises. The SDKs gate features on it
/// (see shared/protocols/e2b.md §3); everything up to this version is served.
pub const ENVD_VERSION: &str = "0.6.13";

/// E2B's envd port, which the guest listens on by default.
pub const DEFAULT_PORT: u16 = 49983;
