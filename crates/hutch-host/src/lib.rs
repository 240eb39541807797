//! The host interface: how the control plane drives sandboxes on a host.
//!
//! Owns the [`HostAgent`] trait, the types that cross it ([`Launch`], [`Launched`],
//! [`TemplateLayers`], [`HostSandboxState`], [`AgentError`]), the environment every sandbox
//! process gets ([`Launch::environment`]), and, with feature `testing`, the suite every
//! implementation passes ([`conformance::run`]) and a process-backed test agent
//! ([`testing::ProcessAgent`]). Implementations: `hutch-agent`'s `LocalAgent` (this machine),
//! the test agent, and later a remote agent speaking to `hutch agent` on another host.
//!
//! Must not: depend on any implementation (runtime, cgroups, root filesystems), or on the
//! control plane; do IO outside the test agent and the suite.
//!
//! The contract, in the order a sandbox lives it:
//!
//! 1. `ensure_template` makes a template's layers present in the host cache.
//! 2. `launch` creates a sandbox from the template's layers (fetching any the
//!    cache lacks, kept from eviction from before the fetch) and returns only
//!    when its guest answers `/health` and its posture checked out; on any
//!    failure it leaves nothing behind. A launch of an id the host already holds
//!    fails and leaves that sandbox alone.
//! 3. `guest` gives a client of the sandbox's guest (commands and files).
//! 4. `destroy` removes every trace: processes, cgroups, mounts, upper dir,
//!    runtime state; it is idempotent.
//! 5. `inspect` and `held` let the control plane reconcile after a restart:
//!    what runs, what died, what is left over.

#![forbid(unsafe_code)]

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeMap;

use async_trait::async_trait;
use hutch_core::{Capacity, Digest, SandboxId, WorkspaceId, request::Resources, request::Runtime};
use hutch_guest_client::GuestClient;

/// A template as the host needs it: its layers, lowest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateLayers {
    /// `name:tag`, for logs and `HUTCH_TEMPLATE`.
    pub name: String,
    pub layers: Vec<Digest>,
    /// The user processes run as unless a request names one.
    pub default_user: String,
    /// The working directory of processes that name none.
    pub default_workdir: Option<String>,
}

/// Everything needed to start one sandbox on this host.
#[derive(Debug, Clone)]
pub struct Launch {
    pub id: SandboxId,
    pub workspace: WorkspaceId,
    pub template: TemplateLayers,
    pub resources: Resources,
    pub runtime: Runtime,
    /// Environment of every process (the agent adds `HUTCH_SANDBOX_ID`,
    /// `HUTCH_TEMPLATE`, `E2B_SANDBOX=true`, `E2B_SANDBOX_ID`).
    pub env: BTreeMap<String, String>,
    /// The guest's access token (`X-Access-Token`).
    pub guest_token: String,
}

impl Launch {
    /// The environment every process of the sandbox gets: the request's plus the platform's
    /// names, which win. (Templates carry no environment of their own yet.)
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.insert("HUTCH_SANDBOX_ID".into(), self.id.to_string());
        env.insert("HUTCH_TEMPLATE".into(), self.template.name.clone());
        env.insert("E2B_SANDBOX".into(), "true".into());
        env.insert("E2B_SANDBOX_ID".into(), self.id.to_string());
        env
    }
}

/// A started sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub id: SandboxId,
    pub runtime: Runtime,
    /// Host pid of the sandbox's init (the guest), for diagnostics only:
    /// the agent signals by handle, never by this number (R13).
    pub init_pid: u32,
}

/// What the host knows of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSandboxState {
    Running,
    /// Its processes are gone; `reason` says what the host saw.
    Dead {
        reason: String,
    },
    /// The host holds nothing for it.
    Missing,
}

/// Errors of a host agent. Messages are for logs; the control plane gives
/// clients a stable code and a message about their own request.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("sandbox {0} is not on this host")]
    NotFound(SandboxId),
    #[error("template {name} is not available on this host: {reason}")]
    Template { name: String, reason: String },
    #[error("runtime {0} is not available on this host")]
    RuntimeUnavailable(String),
    #[error("the host has no room: {0}")]
    Capacity(String),
    #[error("sandbox {id} failed its posture check: {mismatches}")]
    Posture { id: SandboxId, mismatches: String },
    #[error("the guest of sandbox {id} did not become ready: {reason}")]
    GuestNotReady { id: SandboxId, reason: String },
    #[error("{op} for sandbox {id}")]
    Host {
        op: &'static str,
        id: SandboxId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A host operation that concerns no one sandbox (listing what the host holds).
    #[error("{op} on the host")]
    HostWide {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One host's agent, as the control plane sees it.
#[async_trait]
pub trait HostAgent: Send + Sync {
    /// Makes the template's layers present in the host cache.
    async fn ensure_template(&self, template: &TemplateLayers) -> Result<(), AgentError>;
    /// Starts a sandbox; returns once its guest answers. Nothing is left
    /// behind on error.
    async fn launch(&self, launch: Launch) -> Result<Launched, AgentError>;
    /// A client of the sandbox's guest.
    fn guest(&self, id: &SandboxId) -> Result<GuestClient, AgentError>;
    /// Removes every trace of the sandbox. Succeeds if there is none.
    async fn destroy(&self, id: &SandboxId) -> Result<(), AgentError>;
    /// What the host sees of a sandbox.
    async fn inspect(&self, id: &SandboxId) -> Result<HostSandboxState, AgentError>;
    /// Every sandbox the host holds any state for (for leftover cleanup).
    async fn held(&self) -> Result<Vec<SandboxId>, AgentError>;
    /// Runtimes usable on this host, default first.
    fn runtimes(&self) -> Vec<Runtime>;
    /// What this host can hold in total. The control plane admits each create against it
    /// (with its own count of what the host holds): capacity is checked there and only there.
    fn capacity(&self) -> Capacity;
}
