//! The host agent: everything Hutch does on one machine to run sandboxes.
//!
//! Owns, on its host: the template layer cache ([`layers`]), each sandbox's root
//! filesystem (overlay + disk limit, through `hutch-rootfs`), cgroups, OCI bundle and runtime
//! state, the listening socket of its guest, the posture check after start (R17), and finding
//! and cleaning what a crash left behind. [`LocalAgent`] is the implementation; its module
//! docs give the launch and destroy flows step by step, [`state`] the per-sandbox state dir.
//! Must not: know about workspaces' keys, quotas or the API, or keep any
//! state of its own beyond what it can rediscover from the host (the control
//! plane's store is the source of truth; the agent reconciles to it), or run blocking work
//! (runtime CLI calls, mounts, unpacking) on the async workers.
//!
//! The control plane talks to agents only through [`HostAgent`]: in-process
//! in single-node mode, over HTTP to `hutch agent` on other hosts later.

pub mod config;
pub mod guest_log;
mod launch;
pub mod layers;
pub mod local;
mod machine;
pub mod state;
pub mod userns;

pub use config::{AgentConfig, Overcommit};
pub use local::{InitError, LocalAgent};
pub use machine::Parts;
pub use userns::UidRanges;
