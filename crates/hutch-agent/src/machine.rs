//! What a [`crate::LocalAgent`] is made of: the host's parts it drives and the little state it
//! keeps about them.
//!
//! [`Parts`] are the external systems: the OCI runtimes, the privileged operations of the
//! root-filesystem manager, the cgroup parent and the posture reader. [`Parts::open`] finds the
//! real ones of this host; tests pass fakes (a recording runtime, recording host operations,
//! fixture trees for cgroups and `/proc`) to [`crate::LocalAgent::with_parts`], so the launch
//! steps run without root. [`Machine`] holds them with the agent's directories and its
//! in-memory helpers (guest clients, layer pins), and answers the questions that are not a
//! launch step: what the host holds of a sandbox, and whether any of its processes holds a host
//! file.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hutch_cgroup::{CgroupFs, CgroupParent};
use hutch_core::error::error_chain;
use hutch_core::request::Runtime;
use hutch_core::{Capacity, Digest, SandboxId};
use hutch_guest_client::GuestClient;
use hutch_host::{AgentError, HostSandboxState};
use hutch_rootfs::ops::HostOps;
use hutch_rootfs::{PoolFiller, RootfsManager};
use hutch_runtime::posture::{FdPolicy, Mismatch, Posture, PostureError};
use hutch_runtime::{ContainerStatus, OciRuntime, RuntimeError};

use crate::config::AgentConfig;
use crate::launch::host_err;
use crate::layers::LayerCache;
use crate::local::InitError;
use crate::state::StateDir;

/// The external systems a [`crate::LocalAgent`] drives.
pub struct Parts {
    /// Usable runtimes, the default first.
    pub runtimes: Vec<(Runtime, Arc<dyn OciRuntime>)>,
    /// Mounts, loop devices and mkfs for the root filesystems.
    pub rootfs_ops: Arc<dyn HostOps>,
    /// Where sandboxes' cgroups live.
    pub cgroups: CgroupParent,
    /// Reads processes' posture.
    pub posture: Posture,
}

impl Parts {
    /// The real parts of this host, as `config` asks: the runtimes that work here (default
    /// first), the kernel's mounts and loop devices, the cgroup parent (turning on the cgroup2
    /// option `favordynmods` unless told not to), and `/proc`. Blocking (a few runtime
    /// `--version` calls).
    pub fn open(config: &AgentConfig) -> Result<Parts, InitError> {
        let cgroup_fs =
            CgroupFs::open(&config.cgroup_root).map_err(|source| InitError::Cgroup {
                path: config.cgroup_root.clone(),
                source,
            })?;
        if config.favor_cgroup_dynmods {
            let mountinfo = config.proc_root.join("self/mountinfo");
            match hutch_cgroup::dynmods::favor_dynamic_modifications(&mountinfo) {
                Ok(hutch_cgroup::dynmods::Dynmods::TurnedOn(at)) => tracing::info!(
                    mount = %at.display(),
                    "turned on the cgroup2 option favordynmods: sandbox starts skip an RCU grace period"
                ),
                Ok(outcome) => tracing::debug!(?outcome, "cgroup2 favordynmods"),
                // Slower starts, nothing worse: not a reason to refuse to run.
                Err(e) => tracing::warn!(
                    error = %error_chain(&e),
                    "cannot turn on the cgroup2 option favordynmods; sandbox starts will be slower"
                ),
            }
        }
        let cgroups =
            cgroup_fs
                .parent(&config.cgroup_parent)
                .map_err(|source| InitError::Cgroup {
                    path: config.cgroup_root.join(&config.cgroup_parent),
                    source,
                })?;

        let default = config
            .default_runtime
            .or_else(hutch_runtime::default_for_host);
        let mut order = vec![Runtime::Crun, Runtime::Runc];
        if let Some(d) = default {
            order.retain(|k| *k != d);
            order.insert(0, d);
        }
        let mut runtimes: Vec<(Runtime, Arc<dyn OciRuntime>)> = Vec::new();
        let mut why = Vec::new();
        for kind in order {
            let root = config.data_dir.join("runtime").join(kind.as_str());
            match hutch_runtime::open(kind, &root, &cgroup_fs) {
                Ok(rt) => runtimes.push((kind, Arc::from(rt))),
                Err(e) => why.push(e.to_string()),
            }
        }
        if runtimes.is_empty() {
            return Err(InitError::NoRuntime(why.join("; ")));
        }
        if let Some(wanted) = config.default_runtime
            && runtimes[0].0 != wanted
        {
            return Err(InitError::DefaultUnavailable(wanted));
        }
        Ok(Parts {
            runtimes,
            rootfs_ops: Arc::new(hutch_rootfs::real::RealHostOps::default()),
            cgroups,
            posture: Posture::new(&config.proc_root, "self"),
        })
    }
}

/// The agent's parts, directories and in-memory helpers (module docs).
pub(crate) struct Machine {
    pub config: AgentConfig,
    pub sandboxes_dir: PathBuf,
    pub layers: LayerCache,
    pub rootfs: Arc<RootfsManager<Arc<dyn HostOps>>>,
    /// Refills the disk-image pool in the background.
    pub disk_pool: PoolFiller,
    /// Which sandbox holds which range of host uids; `None` without user namespaces.
    pub uids: Option<Arc<crate::userns::Allocations>>,
    pub cgroups: CgroupParent,
    /// Usable runtimes, the default first.
    pub runtimes: Vec<(Runtime, Arc<dyn OciRuntime>)>,
    pub posture: Posture,
    /// What this host can hold, for the control plane's admission.
    pub capacity: Capacity,
    /// A client of each sandbox's guest seen since start (its token is also in the state
    /// dir). Kept so that calls reuse the client's pooled connections: a new connection per
    /// exec cost a connect and an accept on the guest's side.
    clients: Mutex<HashMap<SandboxId, GuestClient>>,
    /// The layers of each launch from its start, before they are fetched (its `meta.json`
    /// records them too, once written). Held while choosing layers to evict, so a layer
    /// fetched for a launch stays until its claim and a claim never sees a layer about to go.
    pub pinned: Mutex<HashMap<SandboxId, Vec<Digest>>>,
    /// One lock per layer being fetched: concurrent launches of a new template download it
    /// once.
    pub fetches: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl Machine {
    pub fn new(
        config: AgentConfig,
        sandboxes_dir: PathBuf,
        layers: LayerCache,
        rootfs: Arc<RootfsManager<Arc<dyn HostOps>>>,
        disk_pool: PoolFiller,
        uids: Option<Arc<crate::userns::Allocations>>,
        parts: Parts,
    ) -> Machine {
        let capacity = host_capacity(&config);
        Machine {
            capacity,
            config,
            sandboxes_dir,
            layers,
            rootfs,
            disk_pool,
            uids,
            cgroups: parts.cgroups,
            runtimes: parts.runtimes,
            posture: parts.posture,
            clients: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashMap::new()),
            fetches: Mutex::new(HashMap::new()),
        }
    }

    pub fn state(&self, id: &SandboxId) -> StateDir {
        StateDir::new(&self.sandboxes_dir, id.as_str())
    }

    pub fn runtime(&self, r: Runtime) -> Option<Arc<dyn OciRuntime>> {
        self.runtimes
            .iter()
            .find(|(k, _)| *k == r)
            .map(|(_, rt)| rt.clone())
    }

    pub fn client(&self, id: &SandboxId) -> Option<GuestClient> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.get(id).cloned()
    }

    pub fn set_client(&self, id: &SandboxId, client: Option<GuestClient>) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match client {
            Some(c) => clients.insert(id.clone(), c),
            None => clients.remove(id),
        };
    }

    /// Keeps `layers` out of every eviction until [`Machine::unpin`].
    pub fn pin(&self, id: &SandboxId, layers: &[Digest]) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        pinned.insert(id.clone(), layers.to_vec());
    }

    pub fn unpin(&self, id: &SandboxId) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        pinned.remove(id);
    }

    /// Descriptors of host files held by any process of sandbox `id` (blocking): each
    /// process's pid and what [`Posture::check_fds`] found against
    /// [`FdPolicy::sandbox_process`]. Empty is the only healthy answer.
    pub fn host_files(&self, id: &SandboxId) -> Result<Vec<(i32, Vec<Mismatch>)>, AgentError> {
        let procs = self
            .cgroups
            .sandbox(id.as_str())
            .and_then(|cg| cg.procs())
            .map_err(host_err("list the sandbox's processes", id))?;
        let policy = FdPolicy::sandbox_process();
        let mut found = Vec::new();
        for pid in procs {
            match self.posture.check_fds(pid, &policy) {
                Ok(m) if m.is_empty() => {}
                Ok(m) => found.push((pid, m)),
                // Exited between the listing and the check: it holds nothing any more.
                Err(PostureError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(host_err("check the sandbox's descriptors", id)(e)),
            }
        }
        Ok(found)
    }

    /// The host pid of the sandbox's init: the process of its cgroup that is PID 1 of its
    /// own pid namespace (`NSpid: <host> 1`). A file read instead of a `runtime state` child
    /// process (5–10 ms), and a pid listed in the cgroup cannot be a recycled one of another
    /// process.
    pub fn init_pid_from_cgroup(&self, id: &SandboxId) -> Option<i32> {
        let procs = self.cgroups.sandbox(id.as_str()).ok()?.procs().ok()?;
        procs.into_iter().find(|pid| {
            let status = self.config.proc_root.join(pid.to_string()).join("status");
            fs::read_to_string(status).is_ok_and(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .is_some_and(|ns| ns.split_whitespace().last() == Some("1"))
            })
        })
    }

    /// What the host holds of `id` (blocking).
    pub fn inspect(&self, id: &SandboxId) -> Result<HostSandboxState, AgentError> {
        let state = self.state(id);
        let cg = self
            .cgroups
            .sandbox(id.as_str())
            .map_err(host_err("name the cgroup", id))?;
        if !state.exists() {
            let leftovers = cg.exists()
                || self
                    .runtimes
                    .iter()
                    .any(|(_, rt)| rt.state_root().join(id.as_str()).exists())
                || self.rootfs.root().join(id.as_str()).exists();
            return Ok(if leftovers {
                HostSandboxState::Dead {
                    reason: "leftover host state without a sandbox state dir".into(),
                }
            } else {
                HostSandboxState::Missing
            });
        }
        let dead = |what: &str| {
            let oom = cg.oom_kills().unwrap_or(0);
            let reason = if oom > 0 {
                format!("{what}; the OOM killer killed {oom} process(es) in it (out of memory)")
            } else {
                what.to_owned()
            };
            Ok(HostSandboxState::Dead { reason })
        };
        let Ok(meta) = state.read_meta() else {
            return dead("its state dir has no readable meta.json (a launch died halfway)");
        };
        let Some(rt) = self.runtime(meta.runtime) else {
            return dead(&format!("its runtime {} is not usable here", meta.runtime));
        };
        match rt.state(id.as_str()) {
            Ok(info) => match info.status {
                ContainerStatus::Running | ContainerStatus::Paused => Ok(HostSandboxState::Running),
                ContainerStatus::Stopped => dead("its guest (the sandbox's init) exited"),
                ContainerStatus::Creating | ContainerStatus::Created => {
                    dead("its container was created but never started")
                }
            },
            Err(RuntimeError::NotFound { .. }) => dead("the runtime holds no container for it"),
            Err(e) => Err(host_err("read the container state", id)(e)),
        }
    }

    /// Every sandbox id with a state dir, runtime container, cgroup or rootfs (blocking).
    pub fn held(&self) -> Result<Vec<SandboxId>, AgentError> {
        let mut names = BTreeSet::new();
        let entries =
            fs::read_dir(&self.sandboxes_dir).map_err(host_wide_err("list state dirs"))?;
        for e in entries.flatten() {
            names.insert(e.file_name().to_string_lossy().into_owned());
        }
        names.extend(
            self.rootfs
                .list()
                .map_err(host_wide_err("list root filesystems"))?,
        );
        names.extend(self.cgroups.list().map_err(host_wide_err("list cgroups"))?);
        if let Some(uids) = &self.uids {
            names.extend(
                uids.holders()
                    .map_err(host_wide_err("list the holders of host uid ranges"))?,
            );
        }
        for (_, rt) in &self.runtimes {
            for c in rt
                .list()
                .map_err(host_wide_err("list runtime containers"))?
            {
                names.insert(c.id);
            }
        }
        Ok(names
            .into_iter()
            .filter_map(|n| match SandboxId::parse(&n) {
                Ok(id) => Some(id),
                Err(_) => {
                    tracing::warn!(name = %n, "ignoring host state that is not a sandbox id");
                    None
                }
            })
            .collect())
    }
}

/// An error of a host operation that concerns no one sandbox.
pub(crate) fn host_wide_err<E>(op: &'static str) -> impl FnOnce(E) -> AgentError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| AgentError::HostWide {
        op,
        source: Box::new(e),
    }
}

/// What this host can hold: its cores, memory (`MemTotal` of the configured proc root) and
/// the data dir's disk, each times its overcommit factor, and `max_sandboxes`.
fn host_capacity(config: &AgentConfig) -> Capacity {
    let memory_mb = fs::read_to_string(config.proc_root.join("meminfo"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(1024);
    let disk_mb = rustix::fs::statvfs(&config.data_dir)
        .map(|s| s.f_blocks * s.f_frsize / (1 << 20))
        .unwrap_or(1 << 20);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let o = config.overcommit;
    Capacity {
        max_sandboxes: u32::try_from(config.max_sandboxes).unwrap_or(u32::MAX),
        cpu_millis: cores * 1000 * o.cpu.max(1),
        memory_mb: memory_mb * o.memory.max(1),
        disk_mb: disk_mb * o.disk.max(1),
    }
}
