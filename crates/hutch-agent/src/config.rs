//! What a [`crate::LocalAgent`] is built from. Every path is a parameter (STYLE.md 4).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hutch_blob::BlobStore;

use hutch_core::request::Runtime;
use hutch_image::BuildConfig;
use hutch_runtime::Isolation;

/// [`AgentConfig::layer_cache_max_mb`] unless told otherwise: 20 GiB.
pub const DEFAULT_LAYER_CACHE_MAX_MB: u64 = 20 << 10;

/// Configuration of a [`crate::LocalAgent`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Everything the agent owns on disk lives here (0700): `layers/`, `rootfs/`, `runtime/`,
    /// `sandboxes/`. Two agents must not share one.
    pub data_dir: PathBuf,
    /// The static `hutch-guest` binary, bound read-only into every sandbox at
    /// [`crate::local::GUEST_PATH`].
    pub guest_bin: PathBuf,
    /// Root of the cgroup filesystem (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The cgroup every sandbox lives under (`hutch` → `hutch/<id>`).
    pub cgroup_parent: String,
    /// Where `/proc` is, for the posture check.
    pub proc_root: PathBuf,
    /// The runtime used when a launch names none; `None`: crun where it runs, else runc.
    pub default_runtime: Option<Runtime>,
    /// Cache of built-in template archives, outside the data dir so a fresh data dir
    /// reuses them.
    pub template_cache_dir: PathBuf,
    /// Where template layers live for good (this host's layer cache is a cache of it): built-in
    /// templates are put there, and a launch fetches the layers this host lacks from it.
    pub blobs: Arc<dyn BlobStore>,
    /// The layer cache's size cap in MiB: above it, the least recently used layers no sandbox
    /// uses are removed.
    pub layer_cache_max_mb: u64,
    /// Turn on the host's cgroup2 option `favordynmods` at start (see
    /// `hutch_cgroup::dynmods`): a sandbox start then skips an RCU grace period (10–20 ms
    /// here). Host-wide and lasting until reboot; `false` leaves the host as it is.
    pub favor_cgroup_dynmods: bool,
    /// Tools and inputs of the built-in template builders.
    pub template_build: BuildConfig,
    /// Most sandboxes this host runs at once.
    pub max_sandboxes: usize,
    /// How many times the host's cores, memory and data-dir disk sandboxes' limits may add
    /// up to (limits are ceilings, not reservations; disk images are sparse).
    pub overcommit: Overcommit,
    /// How long a launch waits for the guest to answer `/health`.
    pub guest_ready_timeout: Duration,
    /// Each sandbox's own range of unprivileged host uids and gids, with a user namespace
    /// mapping root inside onto the range (see [`crate::userns`]). `None`: sandboxes share
    /// the host's user namespace and root inside is root outside (the positive twin of the
    /// tests that show the mapping protects; also where the kernel lacks idmapped mounts).
    pub user_namespaces: Option<crate::userns::UidRanges>,
    /// The sandbox's isolation. Always [`Isolation::default`] outside tests: security tests
    /// weaken it to show an attack works with a protection off (the positive twin). The
    /// posture check expects whatever this asks for.
    pub isolation: Isolation,
}

impl AgentConfig {
    /// Defaults for a host: `/sys/fs/cgroup`, parent `hutch`, `/proc`, the default template
    /// cache, 1000 sandboxes, 10 s for the guest to come up.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        guest_bin: impl Into<PathBuf>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        AgentConfig {
            blobs,
            layer_cache_max_mb: DEFAULT_LAYER_CACHE_MAX_MB,
            favor_cgroup_dynmods: true,
            data_dir: data_dir.into(),
            guest_bin: guest_bin.into(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "hutch".to_owned(),
            proc_root: PathBuf::from("/proc"),
            default_runtime: None,
            template_cache_dir: PathBuf::from(hutch_image::template::DEFAULT_CACHE_DIR),
            template_build: BuildConfig::default(),
            max_sandboxes: 1000,
            overcommit: Overcommit::default(),
            guest_ready_timeout: Duration::from_secs(10),
            isolation: Isolation::default(),
            user_namespaces: Some(crate::userns::UidRanges::default()),
        }
    }
}

/// Overcommit factors of a host's capacity (see [`AgentConfig::overcommit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overcommit {
    pub cpu: u64,
    pub memory: u64,
    pub disk: u64,
}

impl Default for Overcommit {
    /// 1000 one-CPU sandboxes on two cores; 1000 sandboxes of 512 MB in 24 GiB; sparse disk
    /// images four times the data dir.
    fn default() -> Self {
        Overcommit {
            cpu: 500,
            memory: 24,
            disk: 4,
        }
    }
}
