//! The control plane's service layer: everything `hutch serve` decides, with no HTTP in sight.
//!
//! This crate owns:
//! - authentication of API keys and the bootstrap of the operator's key ([`admin`]);
//! - workspaces, quotas, API keys and the audit log ([`admin`]);
//! - the sandbox lifecycle: create, get, list, delete, timeout, the expiry sweeper and recovery
//!   at start ([`sandboxes`]), with one async lock per sandbox and compare-and-swap state
//!   changes (R12);
//! - exec, files and PTY sessions, translated onto the sandbox's guest (`hutch-guest`, E2B's
//!   envd protocol) through [`hutch_host::HostAgent::guest`] ([`exec`], [`files`], [`pty`]);
//! - Prometheus metrics ([`metrics`]);
//!
//! It must not: know about HTTP (the API crate extracts, authenticates and calls a method
//! here with typed arguments, and maps [`ControlError`] to a status in one place); talk to a
//! host other than through [`hutch_host::HostAgent`]; trust a guest's replies (R15: every
//! one is bounded); hold unbounded output (R16); log or store a key's secret.
//!
//! [`Control`] holds the shared state and is composed of one service per aggregate, each a
//! borrow of it: [`Control::sandboxes`], [`Control::commands`], [`Control::terminals`],
//! [`Control::files`], [`Control::workspaces`], [`Control::keys`], [`Control::audit_log`],
//! [`Control::templates`]. What spans aggregates (start, recovery, authentication, the
//! sweeper, metrics) stays on `Control`.
//!
//! Every service method takes a [`Caller`] (an authenticated principal and the request id),
//! checks [`hutch_core::authorize`], and treats another workspace's object as not found.
//! Every mutating call appends an audit entry with its outcome.

#![forbid(unsafe_code)]

pub mod admin;
mod cache;
pub mod error;
pub mod exec;
pub mod files;
pub mod metrics;
pub mod pty;
pub mod sandboxes;
pub mod templates;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use hutch_core::locks::KeyedLocks;
use hutch_core::{Principal, RequestId, SandboxId};
use hutch_host::HostAgent;
use hutch_store::Store;

pub use admin::{AuditLog, Bootstrap, Keys, Workspaces};
pub use error::{ControlError, Result};
pub use exec::Commands;
pub use files::Files;
pub use metrics::Metrics;
pub use pty::Terminals;
pub use sandboxes::Sandboxes;
pub use templates::{LayerSource, ManifestLayers, Templates};

/// Settings of the control plane.
#[derive(Clone)]
pub struct ControlConfig {
    /// `HUTCH_ADMIN_KEY`: on first start, the operator's key. `None`: one is generated and
    /// returned once by [`Control::start`].
    pub admin_key: Option<String>,
    /// How often the sweeper looks for expired sandboxes.
    pub sweep_interval: Duration,
    /// Most stdout (and, separately, stderr) bytes kept by `exec` with `wait: true`.
    pub exec_output_cap: usize,
    /// Turns a ready template row into the layers the host needs.
    pub layers: Arc<dyn LayerSource>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            admin_key: None,
            sweep_interval: Duration::from_secs(5),
            exec_output_cap: 1 << 20,
            layers: Arc::new(ManifestLayers),
        }
    }
}

/// Who is calling: an authenticated principal, and the request id for logs and the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: Option<RequestId>,
}

/// The control plane. Cheap to clone; background tasks hold a clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    agent: Arc<dyn HostAgent>,
    config: ControlConfig,
    /// One async lock per sandbox: operations on a sandbox run one at a time (R12).
    locks: KeyedLocks<SandboxId, tokio::sync::Mutex<()>>,
    /// Serialises the quota and capacity check with the insert that consumes it.
    admission: tokio::sync::Mutex<()>,
    metrics: Metrics,
    /// Held for reading by each audit entry written in the background; taken for writing to
    /// wait for all of them.
    audit_writes: Arc<tokio::sync::RwLock<()>>,
    /// Accepted keys by the hex SHA-256 of their secret, for [`KEY_TTL`]; emptied when a key
    /// is revoked or a workspace deleted. Only keys the store accepted are kept (unknown keys
    /// always reach the store, and a new key works at once).
    keys: cache::TtlCache<String, Principal>,
    /// Rows of running sandboxes for exec, file and terminal calls, for [`ROW_TTL`]; every
    /// state change this server makes forgets the row (`Control::transition`, the create,
    /// delete and timeout paths).
    rows: cache::TtlCache<SandboxId, hutch_store::SandboxRecord>,
    /// The tag prefix of this server's exec and terminal sessions, `hutch-session-<random>-`:
    /// their processes are named `<prefix><n>` in the guest, so recovery after a crash can tell
    /// an orphaned session of an earlier server from a process started any other way.
    session_prefix: String,
    sessions: std::sync::atomic::AtomicU64,
}

/// How every exec and terminal session's process tag starts.
pub(crate) const SESSION_TAG: &str = "hutch-session-";

/// How long an accepted key is trusted without asking the store again.
const KEY_TTL: Duration = Duration::from_secs(5);
/// How long a running sandbox's row is used without reading it again.
const ROW_TTL: Duration = Duration::from_secs(2);

impl Control {
    pub fn new(store: Arc<dyn Store>, agent: Arc<dyn HostAgent>, config: ControlConfig) -> Self {
        Control {
            inner: Arc::new(Inner {
                store,
                agent,
                config,
                locks: KeyedLocks::default(),
                admission: tokio::sync::Mutex::new(()),
                metrics: Metrics::new(),
                audit_writes: Arc::default(),
                keys: cache::TtlCache::new(KEY_TTL),
                rows: cache::TtlCache::new(ROW_TTL),
                session_prefix: format!("{SESSION_TAG}{:016x}-", rand::random::<u64>()),
                sessions: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    fn agent(&self) -> &dyn HostAgent {
        self.inner.agent.as_ref()
    }

    /// The sandbox lifecycle: create, get, list, delete, timeout.
    pub fn sandboxes(&self) -> Sandboxes<'_> {
        Sandboxes { control: self }
    }

    /// Commands in a running sandbox: run, with streamed output and stdin.
    pub fn commands(&self) -> Commands<'_> {
        Commands { control: self }
    }

    /// Interactive terminals in a running sandbox.
    pub fn terminals(&self) -> Terminals<'_> {
        Terminals { control: self }
    }

    /// A running sandbox's files.
    pub fn files(&self) -> Files<'_> {
        Files { control: self }
    }

    /// Workspaces and their quotas.
    pub fn workspaces(&self) -> Workspaces<'_> {
        Workspaces { control: self }
    }

    /// API keys.
    pub fn keys(&self) -> Keys<'_> {
        Keys { control: self }
    }

    /// The audit log.
    pub fn audit_log(&self) -> AuditLog<'_> {
        AuditLog { control: self }
    }

    /// Templates.
    pub fn templates(&self) -> Templates<'_> {
        Templates { control: self }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// A new tag for the process of an exec or terminal session (see `Inner::session_prefix`).
    fn session_tag(&self) -> String {
        let n = self
            .inner
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}{n}", self.inner.session_prefix)
    }

    /// Whether `tag` names a session of an earlier server: its client is gone with that server.
    fn is_orphaned_session(&self, tag: &str) -> bool {
        tag.starts_with(SESSION_TAG) && !tag.starts_with(&self.inner.session_prefix)
    }

    /// Activity on a sandbox (exec, files, PTY). The idle clock of the sleep/wake work hooks
    /// in here; today it does nothing.
    fn touch(&self, _id: &SandboxId) {}
}
