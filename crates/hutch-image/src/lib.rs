//! Root-filesystem images: archives in and out, and the built-in templates.
//!
//! What this crate owns:
//! - [`unpack`] / [`validate`]: the **one** strict archive unpacker of DESIGN.md
//!   R6. Template layers, volume archives and uploads all go through it; no
//!   other code in Hutch calls `tar::Archive::unpack` or `tar::Entry::unpack`
//!   (banned in `clippy.toml`). See [`unpack`]'s module docs for the policy and
//!   how OCI whiteouts are materialised.
//! - [`pack`]: the deterministic packer (tree → tar + SHA-256) used for
//!   content-addressed layers.
//! - [`template`]: the built-in templates `busybox` and `debian:12` and their
//!   cache outside the data directory.
//!
//! What it must not do: mount anything, talk to the store, the blob store or a
//! registry, or run on the async runtime. Every function here is blocking
//! (file-tree IO, child processes): callers use `spawn_blocking` or their own
//! thread. Paths (destinations, cache directory, tools) are parameters.

pub mod error;
pub mod pack;
pub mod template;
pub mod unpack;

pub use error::{PackError, Rejection, TemplateError, UnpackError};
pub use pack::{PackOptions, Packed, Specials, pack};
pub use template::{BuildConfig, Builtin, CachedTemplate, TemplateCache};
pub use unpack::{
    Compression, Limits, Owner, UnpackOptions, UnpackStats, Whiteouts, unpack, validate,
};
