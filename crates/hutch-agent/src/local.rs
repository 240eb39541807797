//! [`LocalAgent`]: the [`HostAgent`] of the machine it runs on.
//!
//! # Data directory
//!
//! ```text
//! <data>/                 0700
//!   layers/<hex>/         unpacked template layers, read-only overlay lower dirs, a cache of
//!                         the blob store's layer archives (see layers)
//!   rootfs/<id>/          each sandbox's overlay and disk image (hutch-rootfs)
//!   runtime/<crun|runc>/  the runtimes' `--root` state
//!   sandboxes/<id>/       each sandbox's host state dir, 0700 (see state)
//! ```
//!
//! # Launch
//!
//! 1. Check the runtime is usable here, the host has room, and every layer is cached (the
//!    control plane's `ensure_template` fetched missing ones from the blob store); mark the
//!    layers used, so the cache does not evict them while the sandbox exists.
//! 2. Create `sandboxes/<id>/` 0700. If it exists, stop here and touch nothing: it belongs to
//!    another launch.
//! 3. Write `meta.json`, the guest's token and env files (the env is the request's plus
//!    `HUTCH_SANDBOX_ID`, `HUTCH_TEMPLATE`, `E2B_SANDBOX=true`, `E2B_SANDBOX_ID`).
//! 4. Prepare the root filesystem: overlay over the layers, upper dir on an ext4 image of
//!    `disk_mb` (writing past it is ENOSPC inside, nothing outside changes).
//! 5. Bind and listen on `guest.sock` in the state dir, in this process.
//! 6. Write the OCI bundle: the guest binary bound read-only at [`GUEST_PATH`], `guest/` bound
//!    read-only at [`GUEST_CONFIG_DIR`], cgroup `<parent>/<id>` with memory (no swap), pids and
//!    CPU limits, hostname = id, the isolation defaults of DESIGN §3.
//! 7. `run --detach --preserve-fds 1`: the listening socket becomes the guest's fd 3
//!    (`--listen-fd 3`, which the guest marks close-on-exec); the guest also listens on
//!    `0.0.0.0:49983` in the sandbox's own network namespace for the proxy. Its stdout and
//!    stderr are a pipe the agent drains into `guest.log` (see [`crate::guest_log`]); its
//!    stdin a pipe at its end: the guest holds no host file. The agent closes its copies of
//!    the socket and the pipe's write end.
//! 8. Wait for `GET /health` over the socket, up to a deadline. The socket listens before the
//!    guest runs, so the first request simply waits for the guest to serve: no sleeps.
//! 9. Check the guest's posture from outside (R17): capability sets, no_new_privs, seccomp
//!    mode 2, namespaces distinct from the agent's, open descriptors of allowed kinds only;
//!    and that no process of the sandbox holds a descriptor of a host file.
//! 10. Any failure after step 2 undoes everything ([`HostAgent::destroy`]'s path) and returns
//!     the error.
//!
//! Launch and destroy of one id are serialised by a per-id lock. A launch's future must run
//! to completion (the control plane runs lifecycle work detached from requests): dropping it
//! halfway would leave the pieces made so far for [`LocalAgent::cleanup_leftovers`].
//!
//! # Destroy
//!
//! Idempotent, from any partial state, with no memory of the launch (so it is also the
//! crash-recovery path): delete the runtime container (`delete --force`), kill whatever is
//! left in the cgroup and remove its directories, tear down the rootfs (unmount, detach the
//! loop device, remove files), remove the state dir.
//!
//! # Restart
//!
//! Nothing needed lives only in memory: a new agent on the same data dir finds a sandbox's
//! runtime in `meta.json`, its token in `guest/token`, and its guest on `guest.sock` (the
//! guest still holds the listening socket).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hutch_cgroup::{CgroupFs, CgroupParent};
use hutch_core::error::error_chain;
use hutch_core::request::Runtime;
use hutch_core::{Digest, SandboxId};
use hutch_guest_client::{Endpoint, GuestClient};
use hutch_image::Builtin;
use hutch_rootfs::{PrepareSpec, RealHostOps, RootfsManager};
use hutch_runtime::bundle::{capabilities_of, capability_mask, write_bundle};
use hutch_runtime::posture::{Expected, FdPolicy, Mismatch, Posture, PostureError};
use hutch_runtime::{
    BindMount, ContainerIo, ContainerStatus, CpuLimit, Runtime as OciRuntime, RuntimeError,
    RuntimeKind, SandboxSpec, Signal,
};

use crate::config::AgentConfig;
use crate::guest_log;
use crate::layers::{LayerCache, LayerError};
use crate::state::{Meta, StateDir};
use hutch_host::{AgentError, HostAgent, HostSandboxState, Launch, Launched, TemplateLayers};

/// Where the guest binary appears inside every sandbox (read-only).
pub const GUEST_PATH: &str = "/.hutch/guest";
/// Where the guest's token and env files appear inside every sandbox (read-only).
pub const GUEST_CONFIG_DIR: &str = "/.hutch/config";
/// The guest's TCP address inside the sandbox's own network namespace (envd's port).
pub const GUEST_LISTEN: &str = "0.0.0.0:49983";
/// The user processes run as when a template names none. `root` for both built-in
/// templates (they also have `user`, uid 1000; see docs/decisions.md).
pub const BUILTIN_DEFAULT_USER: &str = "root";

const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// RLIMIT_NOFILE of sandbox processes (below this host's hard limit of 20000).
const NOFILE: u64 = 16384;
/// CFS period of the CPU limit.
const CPU_PERIOD_US: u64 = 100_000;
/// Most descriptors the guest may hold when its posture is checked.
const MAX_GUEST_FDS: usize = 64;

/// Errors building a [`LocalAgent`].
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("create {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest binary {0} is missing (build it with `make guest`)")]
    GuestMissing(PathBuf),
    #[error("open cgroups at {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: hutch_cgroup::CgroupError,
    },
    #[error("open the rootfs manager")]
    Rootfs(#[source] hutch_rootfs::RootfsError),
    #[error("open the layer cache")]
    Layers(#[source] LayerError),
    #[error("no OCI runtime is usable here: {0}")]
    NoRuntime(String),
    #[error("the configured default runtime {0} is not usable here")]
    DefaultUnavailable(Runtime),
    #[error("start the disk-image pool thread")]
    DiskPool(#[source] std::io::Error),
}

/// The host agent of this machine.
pub struct LocalAgent {
    inner: Arc<Inner>,
}

struct Inner {
    config: AgentConfig,
    sandboxes_dir: PathBuf,
    layers: LayerCache,
    rootfs: Arc<RootfsManager<RealHostOps>>,
    /// Asks the disk-pool thread to top up the pool of one size (in MiB).
    disk_pool: std::sync::mpsc::SyncSender<u64>,
    cgroups: CgroupParent,
    /// Usable runtimes, the default first.
    runtimes: Vec<(Runtime, Arc<dyn OciRuntime>)>,
    posture: Posture,
    /// A client of each sandbox's guest seen since start (its token is also in the state
    /// dir). Kept so that calls reuse the client's pooled connections: a new connection per
    /// exec cost a connect and an accept on the guest's side.
    clients: Mutex<HashMap<SandboxId, GuestClient>>,
    /// One lock per sandbox id: launch and destroy of one id never overlap.
    locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    /// The layers of each launch from its start, before they are fetched (its `meta.json`
    /// records them too, once written). Held while choosing layers to evict, so a layer
    /// fetched for a launch stays until its claim and a claim never sees a layer about to go.
    pinned: Mutex<HashMap<SandboxId, Vec<Digest>>>,
    /// One lock per layer being fetched: concurrent launches of a new template download it
    /// once.
    fetches: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

fn host_err<E>(op: &'static str, id: &SandboxId) -> impl FnOnce(E) -> AgentError + use<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let id = id.clone();
    move |e| AgentError::Host {
        op,
        id,
        source: Box::new(e),
    }
}

fn host_wide_err<E>(op: &'static str) -> impl FnOnce(E) -> AgentError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| AgentError::HostWide {
        op,
        source: Box::new(e),
    }
}

fn kind_of(r: Runtime) -> RuntimeKind {
    match r {
        Runtime::Crun => RuntimeKind::Crun,
        Runtime::Runc => RuntimeKind::Runc,
        Runtime::Runsc => RuntimeKind::Runsc,
    }
}

/// Pre-formatted disk images kept ready per size: `mkfs` is most of a
/// rootfs prepare, so creates take a pooled image and this thread formats
/// the next one in the background.
const DISK_POOL_DEPTH: usize = 8;

/// Starts the thread that fills the disk-image pool on request. It ends when
/// the agent (the only sender) is dropped.
fn spawn_disk_pool(
    rootfs: Arc<RootfsManager<RealHostOps>>,
) -> std::io::Result<std::sync::mpsc::SyncSender<u64>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(4);
    std::thread::Builder::new()
        .name("hutch-disk-pool".into())
        .spawn(move || {
            // Lowest CPU priority for this thread and the mkfs it runs (children inherit it):
            // a refill starts just as a sandbox launches, and on a small host formatting
            // the next image beside `crun run` made launches a third slower. Linux applies
            // setpriority on a thread id to that thread alone.
            if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19)
            {
                tracing::debug!(error = %e, "cannot lower the disk-pool thread's priority");
            }
            while let Ok(mb) = rx.recv() {
                if let Err(e) = rootfs.fill_pool(mb, DISK_POOL_DEPTH) {
                    tracing::warn!(disk_mb = mb, error = %e, "filling the disk-image pool failed");
                }
            }
        })?;
    Ok(tx)
}

/// Runs blocking work off the async workers (STYLE.md 8).
async fn blocking<T, F>(id: &SandboxId, f: F) -> Result<T, AgentError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, AgentError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(host_err("join a blocking task", id))?
}

fn mkdir_private(path: &Path) -> Result<(), InitError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| InitError::Io {
            path: path.to_path_buf(),
            source,
        })
}

impl LocalAgent {
    /// Opens the agent on `config.data_dir`, creating its directories. Blocking (a few
    /// runtime `--version` calls): call it before serving or from `spawn_blocking`.
    pub fn new(mut config: AgentConfig) -> Result<LocalAgent, InitError> {
        if !config.guest_bin.is_file() {
            return Err(InitError::GuestMissing(config.guest_bin.clone()));
        }
        // A host path of ours (not a sandbox's tree): canonical, so the bind mount's source
        // is absolute without `..`.
        config.guest_bin = fs::canonicalize(&config.guest_bin).map_err(|source| InitError::Io {
            path: config.guest_bin.clone(),
            source,
        })?;
        let data = &config.data_dir;
        mkdir_private(data)?;
        let sandboxes_dir = data.join("sandboxes");
        mkdir_private(&sandboxes_dir)?;
        let layers = LayerCache::open(data.join("layers")).map_err(InitError::Layers)?;
        let rootfs = RootfsManager::new(data.join("rootfs"), RealHostOps::default())
            .map_err(InitError::Rootfs)?;
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

        let default = match config.default_runtime {
            Some(r) => Some(kind_of(r)),
            None => RuntimeKind::default_for_host(),
        };
        let mut order = vec![RuntimeKind::Crun, RuntimeKind::Runc];
        if let Some(d) = default {
            order.retain(|k| *k != d);
            order.insert(0, d);
        }
        let mut runtimes: Vec<(Runtime, Arc<dyn OciRuntime>)> = Vec::new();
        let mut why = Vec::new();
        for kind in order {
            let root = data.join("runtime").join(kind.name());
            match kind.open(&root, &cgroup_fs) {
                Ok(rt) => {
                    let r = match kind {
                        RuntimeKind::Crun => Runtime::Crun,
                        RuntimeKind::Runc => Runtime::Runc,
                        RuntimeKind::Runsc => Runtime::Runsc,
                    };
                    runtimes.push((r, Arc::from(rt)));
                }
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
        let posture = Posture::new(&config.proc_root, "self");
        let rootfs = Arc::new(rootfs);
        let disk_pool = spawn_disk_pool(rootfs.clone()).map_err(InitError::DiskPool)?;
        Ok(LocalAgent {
            inner: Arc::new(Inner {
                config,
                sandboxes_dir,
                layers,
                rootfs,
                disk_pool,
                cgroups,
                runtimes,
                posture,
                clients: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                pinned: Mutex::new(HashMap::new()),
                fetches: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Formats disk images of `disk_mb` MiB ahead of the first sandbox of
    /// that size (in the background; returns at once).
    pub fn warm_disk_pool(&self, disk_mb: u64) {
        let _ = self.inner.disk_pool.try_send(disk_mb);
    }

    /// The directory of a cached layer (it may not exist).
    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.inner.layers.path(digest)
    }

    /// The host state directory of a sandbox (it may not exist).
    pub fn state_dir(&self, id: &SandboxId) -> PathBuf {
        self.inner.state(id).dir
    }

    /// The runtime `--root` of `runtime` on this host, if it is usable here.
    pub fn runtime_state_root(&self, runtime: Runtime) -> Option<PathBuf> {
        self.inner
            .runtime(runtime)
            .map(|rt| rt.state_root().to_path_buf())
    }

    /// Descriptors of host files held by any process of sandbox `id`, by pid (R17: there must
    /// be none). Launch checks it for the guest; tests check it with commands running.
    pub async fn host_files(
        &self,
        id: &SandboxId,
    ) -> Result<Vec<(i32, Vec<Mismatch>)>, AgentError> {
        let inner = self.inner.clone();
        let id2 = id.clone();
        blocking(id, move || inner.host_files(&id2)).await
    }

    /// The cgroup directories sandbox `id` has or would have.
    pub fn cgroup_dirs(&self, id: &SandboxId) -> Vec<PathBuf> {
        self.inner
            .cgroups
            .sandbox(id.as_str())
            .map(|cg| cg.dirs())
            .unwrap_or_default()
    }

    /// Makes layer `digest` present by unpacking `archive` (which must hash to it) with the
    /// strict unpacker, into a temp dir renamed into place under a lock.
    pub async fn install_layer(&self, digest: Digest, archive: PathBuf) -> Result<(), AgentError> {
        let layers = self.inner.layers.clone();
        tokio::task::spawn_blocking(move || layers.install(&digest, &archive))
            .await
            .map_err(|e| AgentError::Template {
                name: digest.to_string(),
                reason: e.to_string(),
            })?
            .map(drop)
            .map_err(|e| AgentError::Template {
                name: digest.to_string(),
                reason: error_chain(&e),
            })
    }

    /// Makes one built-in template present: its archive in the template cache (built the
    /// first time, with `progress` receiving the builder's lines) and its layer unpacked
    /// here. Returns what `hutch serve` registers in its store; the layer digest is the
    /// SHA-256 of the packed archive.
    pub async fn ensure_builtin(
        &self,
        which: Builtin,
        progress: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Result<TemplateLayers, AgentError> {
        let cache = hutch_image::TemplateCache::new(
            &self.inner.config.template_cache_dir,
            self.inner.config.template_build.clone(),
        );
        let template_err = |reason: String| AgentError::Template {
            name: which.name().to_owned(),
            reason,
        };
        let cached = tokio::task::spawn_blocking(move || {
            cache.ensure(which, &mut |line: &str| progress(line))
        })
        .await
        .map_err(|e| template_err(e.to_string()))?
        .map_err(|e| template_err(error_chain(&e)))?;
        let digest = Digest::from_hex(&cached.sha256).map_err(|e| template_err(e.to_string()))?;
        self.put_layer(digest, &cached.archive)
            .await
            .map_err(|e| template_err(error_chain(&e)))?;
        // Unpacked from the local archive: the same bytes as the blob, without reading it back.
        self.install_layer(digest, cached.archive).await?;
        self.evict_layers_but(vec![digest]).await;
        Ok(TemplateLayers {
            name: which.name().to_owned(),
            layers: vec![digest],
            default_user: BUILTIN_DEFAULT_USER.to_owned(),
            default_workdir: None,
        })
    }

    /// Puts a layer archive into the blob store under `digest` (which it must hash to), unless
    /// it is there already. Streams the file: memory stays bounded.
    async fn put_layer(&self, digest: Digest, archive: &Path) -> Result<(), hutch_blob::BlobError> {
        let blobs = &self.inner.config.blobs;
        if blobs.exists(&digest).await? {
            return Ok(());
        }
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(hutch_blob::BlobError::Input)?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        blobs.put_stream(Box::pin(stream), Some(digest)).await?;
        tracing::info!(layer = %digest, archive = %archive.display(), "layer stored in the blob store");
        Ok(())
    }

    /// Brings the layer cache under its cap (see [`LayerCache::evict`]); the layers of every
    /// sandbox this host holds, and of launches under way, stay. Failures are logged: a full
    /// cache is not a reason to fail the launch that filled it. Runs after every layer that
    /// arrives on this host, keeping the template it arrived for.
    pub async fn evict_layers(&self) {
        self.evict_layers_but(Vec::new()).await
    }

    async fn evict_layers_but(&self, keep: Vec<Digest>) {
        let inner = self.inner.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            // The cache's lock first (an install may hold it for seconds), then the pins:
            // claims wait only while victims are chosen and renamed away.
            let lock = inner.layers.lock().map_err(std::io::Error::other)?;
            let pinned = inner.pinned.lock().unwrap_or_else(|p| p.into_inner());
            let mut in_use: HashSet<Digest> = pinned.values().flatten().copied().collect();
            in_use.extend(keep);
            for e in fs::read_dir(&inner.sandboxes_dir)?.flatten() {
                match StateDir::new(&inner.sandboxes_dir, &e.file_name().to_string_lossy())
                    .read_meta()
                {
                    Ok(meta) if !meta.layers.is_empty() => in_use.extend(meta.layers),
                    // Not written yet (its launch is pinned above) or gone meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    // Written before layers were recorded, or unreadable: which layers it
                    // uses is unknown, so none may go.
                    _ => return Ok(Vec::new()),
                }
            }
            let max = inner.config.layer_cache_max_mb.saturating_mul(1 << 20);
            let evicted = inner
                .layers
                .evict(&lock, max, &in_use)
                .map_err(std::io::Error::other)?;
            drop(pinned);
            drop(lock);
            inner.layers.remove_evicted();
            Ok::<_, std::io::Error>(evicted)
        })
        .await;
        match outcome {
            Ok(Ok(evicted)) if !evicted.is_empty() => {
                tracing::info!(count = evicted.len(), "layer cache brought under its cap");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "evicting layers failed"),
            Err(e) => tracing::warn!(error = %e, "evicting layers failed"),
        }
    }

    /// [`LocalAgent::ensure_builtin`] for `busybox` and `debian:12` (the latter takes about
    /// a minute the first time: mmdebstrap).
    pub async fn ensure_builtin_templates(
        &self,
        progress: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Result<Vec<TemplateLayers>, AgentError> {
        let mut out = Vec::new();
        for which in [Builtin::Busybox, Builtin::Debian12] {
            out.push(self.ensure_builtin(which, progress.clone()).await?);
        }
        Ok(out)
    }

    /// Destroys every sandbox the host holds anything for whose id is not in `keep` (the
    /// control plane's list after a restart). Returns the ids removed.
    pub async fn cleanup_leftovers(
        &self,
        keep: &[SandboxId],
    ) -> Result<Vec<SandboxId>, AgentError> {
        let mut removed = Vec::new();
        for id in self.held().await? {
            if !keep.contains(&id) {
                tracing::info!(sandbox = %id, "removing leftover sandbox state");
                self.destroy(&id).await?;
                removed.push(id);
            }
        }
        Ok(removed)
    }

    fn lock(&self, id: &SandboxId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.clone()).or_default().clone()
    }

    /// Launch step 8: polls `/health` until it answers or the deadline passes. The socket
    /// listens before the guest runs, so a request waits in its backlog until the guest
    /// serves; a failed request means the guest is gone or refused us, and if its container
    /// is no longer running the launch fails at once.
    async fn wait_for_guest(
        &self,
        id: &SandboxId,
        client: &GuestClient,
        runtime: Arc<dyn OciRuntime>,
        mut log_task: tokio::task::JoinHandle<()>,
    ) -> Result<(), AgentError> {
        /// How long a failed launch waits for the guest's last words to reach its log.
        const LOG_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);
        let deadline = tokio::time::Instant::now() + self.inner.config.guest_ready_timeout;
        let mut pause = std::time::Duration::from_millis(1);
        let not_ready = async |reason: String, log_task: &mut tokio::task::JoinHandle<()>| {
            // A guest that died has closed the pipe: its output is all in the log once the
            // draining task ends.
            let _ = tokio::time::timeout(LOG_SETTLE, log_task).await;
            AgentError::GuestNotReady {
                id: id.clone(),
                reason: format!(
                    "{reason}; guest log: {}",
                    self.inner.state(id).log_tail(512)
                ),
            }
        };
        loop {
            let failure = match tokio::time::timeout_at(deadline, client.health()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => error_chain(&e),
                Err(_) => {
                    return Err(not_ready(
                        "no answer to /health before the deadline".into(),
                        &mut log_task,
                    )
                    .await);
                }
            };
            let rt = runtime.clone();
            let cid = id.to_string();
            let status =
                blocking(id, move || Ok(rt.state(&cid).map(|info| info.status).ok())).await?;
            if status != Some(ContainerStatus::Running) {
                return Err(
                    not_ready(format!("{failure}; container {status:?}"), &mut log_task).await,
                );
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(not_ready(failure, &mut log_task).await);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }
}

/// What step 7 of a launch leaves for the async steps.
struct Started {
    expected: Expected,
    runtime: Arc<dyn OciRuntime>,
    /// The task draining the guest's output into `guest.log` (it ends with the guest).
    log_task: tokio::task::JoinHandle<()>,
    /// Microseconds spent in steps 3–7, for the launch's debug log.
    steps: StepTimes,
}

/// How long each launch step took, in microseconds.
#[derive(Debug, Default, Clone, Copy)]
struct StepTimes {
    config: u64,
    rootfs: u64,
    bundle: u64,
    runtime: u64,
}

fn micros_since(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl Inner {
    fn state(&self, id: &SandboxId) -> StateDir {
        StateDir::new(&self.sandboxes_dir, id.as_str())
    }

    fn runtime(&self, r: Runtime) -> Option<Arc<dyn OciRuntime>> {
        self.runtimes
            .iter()
            .find(|(k, _)| *k == r)
            .map(|(_, rt)| rt.clone())
    }

    fn client(&self, id: &SandboxId) -> Option<GuestClient> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.get(id).cloned()
    }

    fn set_client(&self, id: &SandboxId, client: Option<GuestClient>) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match client {
            Some(c) => clients.insert(id.clone(), c),
            None => clients.remove(id),
        };
    }

    /// Launch steps 1–3 (blocking). Returns the state dir once it is ours.
    fn claim(&self, launch: &Launch) -> Result<StateDir, AgentError> {
        let id = &launch.id;
        if self.runtime(launch.runtime).is_none() {
            return Err(AgentError::RuntimeUnavailable(launch.runtime.to_string()));
        }
        let held = fs::read_dir(&self.sandboxes_dir)
            .map_err(host_err("count sandboxes", id))?
            .count();
        if held >= self.config.max_sandboxes {
            return Err(AgentError::Capacity(format!(
                "{held} of {} sandboxes",
                self.config.max_sandboxes
            )));
        }
        // Pinned by `launch` before they were fetched: no eviction has taken them since.
        for layer in &launch.template.layers {
            if !self.layers.contains(layer) {
                return Err(AgentError::Template {
                    name: launch.template.name.clone(),
                    reason: format!("layer {layer} is not cached on this host"),
                });
            }
        }
        for layer in &launch.template.layers {
            if let Err(e) = self.layers.touch(layer) {
                tracing::warn!(layer = %layer, error = %error_chain(&e), "marking a layer used");
            }
        }
        let state = self.state(id);
        state
            .create()
            .map_err(host_err("create the sandbox state dir", id))?;
        Ok(state)
    }

    /// Keeps `layers` out of every eviction until [`Inner::unpin`] (at the sandbox's removal,
    /// or when its launch fails before the claim).
    fn pin(&self, id: &SandboxId, layers: &[Digest]) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        pinned.insert(id.clone(), layers.to_vec());
    }

    fn unpin(&self, id: &SandboxId) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        pinned.remove(id);
    }

    /// Launch steps 3–7 (blocking), once the state dir is ours.
    fn start(&self, launch: &Launch, state: &StateDir) -> Result<Started, AgentError> {
        let id = &launch.id;
        let rt = self
            .runtime(launch.runtime)
            .ok_or_else(|| AgentError::RuntimeUnavailable(launch.runtime.to_string()))?;

        let mut steps = StepTimes::default();
        let t = std::time::Instant::now();
        // 3. meta, token, env.
        let env = launch.environment();
        let meta = Meta {
            runtime: launch.runtime,
            template: launch.template.name.clone(),
            layers: launch.template.layers.clone(),
        };
        state
            .write(&meta, &launch.guest_token, &env)
            .map_err(host_err("write the guest's config", id))?;
        steps.config = micros_since(t);

        // 4. rootfs: overlay lower dirs are top-most first; template layers lowest first.
        let t = std::time::Instant::now();
        let lower = launch
            .template
            .layers
            .iter()
            .rev()
            .map(|d| self.layers.path(d))
            .collect();
        let disk_mb = u64::from(launch.resources.disk_mb);
        let prepared = self
            .rootfs
            .prepare(
                id.as_str(),
                &PrepareSpec {
                    lower,
                    disk_mb: (disk_mb > 0).then_some(disk_mb),
                },
            )
            .map_err(host_err("prepare the root filesystem", id))?;
        if disk_mb > 0 {
            // Top the pool up for the next sandbox of this size; a full
            // queue means a refill is already on its way.
            let _ = self.disk_pool.try_send(disk_mb);
        }
        steps.rootfs = micros_since(t);

        // 5. The guest's socket, in the state dir the sandbox never sees.
        let t = std::time::Instant::now();
        let listener =
            UnixListener::bind(state.socket()).map_err(host_err("bind the guest socket", id))?;

        // 6. The bundle.
        let cgroup = self
            .cgroups
            .sandbox(id.as_str())
            .map_err(host_err("name the cgroup", id))?;
        let mut args = vec![
            GUEST_PATH.to_owned(),
            "--listen".into(),
            GUEST_LISTEN.into(),
            "--listen-fd".into(),
            "3".into(),
            "--user".into(),
            launch.template.default_user.clone(),
            "--env-file".into(),
            format!("{GUEST_CONFIG_DIR}/env"),
            "--access-token-file".into(),
            format!("{GUEST_CONFIG_DIR}/token"),
        ];
        if let Some(w) = &launch.template.default_workdir {
            args.extend(["--workdir".to_owned(), w.clone()]);
        }
        let r = &launch.resources;
        let spec = SandboxSpec {
            rootfs: prepared.rootfs,
            readonly_rootfs: false,
            args,
            env: vec![("PATH".into(), PATH_ENV.into())],
            cwd: "/".into(),
            hostname: id.to_string(),
            memory_limit_bytes: u64::from(r.memory_mb) << 20,
            pids_limit: i64::from(r.pids),
            cpu: if r.cpu_millis == 0 {
                CpuLimit::Unlimited
            } else {
                CpuLimit::Quota {
                    quota_us: i64::from(r.cpu_millis) * (CPU_PERIOD_US as i64) / 1000,
                    period_us: CPU_PERIOD_US,
                }
            },
            cgroups_path: cgroup.oci_path(),
            bind_mounts: vec![
                BindMount {
                    source: self.config.guest_bin.clone(),
                    destination: GUEST_PATH.into(),
                    readonly: true,
                },
                BindMount {
                    source: state.guest_config(),
                    destination: GUEST_CONFIG_DIR.into(),
                    readonly: true,
                },
            ],
            tmpfs_mounts: vec![],
            network_namespace: None,
            nofile: NOFILE,
            isolation: self.config.isolation.clone(),
        };
        let valid = spec
            .validate()
            .map_err(host_err("validate the sandbox spec", id))?;
        let bundle =
            write_bundle(&state.bundle(), &valid).map_err(host_err("write the bundle", id))?;
        let log = state.log();
        let expected = Expected {
            capabilities: capability_mask(&capabilities_of(&valid)),
            no_new_privs: self.config.isolation.no_new_privileges,
            seccomp_mode: if self.config.isolation.seccomp { 2 } else { 0 },
            fds: FdPolicy {
                max_fds: MAX_GUEST_FDS,
                allowed_targets: vec!["socket:".into(), "anon_inode:".into(), "pipe:".into()],
                sandbox_files: true,
            },
        };

        steps.bundle = micros_since(t);

        // 7. Create and start with the socket as fd 3 and the output pipe as stdout and
        // stderr; then both are the guest's alone. The pipe is drained from before the
        // runtime runs, so what the runtime itself prints on a failure is kept too.
        let t = std::time::Instant::now();
        let (read_end, write_end) =
            guest_log::pipe().map_err(host_err("create the guest's output pipe", id))?;
        let log_task = guest_log::drain(read_end, log, guest_log::ROTATE_AT)
            .map_err(host_err("collect the guest's output", id))?;
        let io = ContainerIo::Pipe(Arc::new(write_end));
        rt.run_detached_with_fds(id.as_str(), &bundle, &io, &[listener.as_fd()])
            .map_err(host_err("start the runtime", id))?;
        drop(io);
        drop(listener);
        steps.runtime = micros_since(t);
        Ok(Started {
            expected,
            runtime: rt,
            log_task,
            steps,
        })
    }

    /// Launch step 9 (blocking): the guest's posture, from outside.
    ///
    /// The guest is found as the process of the sandbox's cgroup that is PID 1 of its own pid
    /// namespace (`NSpid: <host> 1`): a file read instead of a `runtime state` child process
    /// (5–10 ms), and a pid listed in the cgroup cannot be a recycled one of another process.
    /// Only if that fails is the runtime asked.
    fn check_posture(
        &self,
        id: &SandboxId,
        expected: &Expected,
        runtime: &dyn OciRuntime,
    ) -> Result<u32, AgentError> {
        let pid = match self.init_pid_from_cgroup(id) {
            Some(pid) => pid,
            None => {
                let info = runtime
                    .state(id.as_str())
                    .map_err(host_err("read the container state", id))?;
                match (info.status, info.pid) {
                    (ContainerStatus::Running, Some(pid)) => pid,
                    (status, _) => {
                        return Err(AgentError::GuestNotReady {
                            id: id.clone(),
                            reason: format!("the container is {status:?} after start"),
                        });
                    }
                }
            }
        };
        let report = self
            .posture
            .check(pid, expected)
            .map_err(host_err("check the posture", id))?;
        if !report.is_ok() {
            return Err(AgentError::Posture {
                id: id.clone(),
                mismatches: format!("{:?}", report.mismatches),
            });
        }
        let host_files = self.host_files(id)?;
        if !host_files.is_empty() {
            return Err(AgentError::Posture {
                id: id.clone(),
                mismatches: format!("{host_files:?}"),
            });
        }
        u32::try_from(pid).map_err(|_| AgentError::GuestNotReady {
            id: id.clone(),
            reason: format!("bad pid {pid}"),
        })
    }

    /// Descriptors of host files held by any process of sandbox `id` (blocking): each
    /// process's pid and what [`Posture::check_fds`] found against
    /// [`FdPolicy::sandbox_process`]. Empty is the only healthy answer.
    fn host_files(&self, id: &SandboxId) -> Result<Vec<(i32, Vec<Mismatch>)>, AgentError> {
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

    /// The host pid of the sandbox's init, from its cgroup (see [`Inner::check_posture`]).
    fn init_pid_from_cgroup(&self, id: &SandboxId) -> Option<i32> {
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

    /// Removes every trace of `id` (blocking, idempotent). Every step runs even if an
    /// earlier one failed; the first failure is returned.
    fn remove_everything(&self, id: &SandboxId) -> Result<(), AgentError> {
        let state = self.state(id);
        let mut first: Option<AgentError> = None;
        let mut note = |r: Result<(), AgentError>| {
            if let Err(e) = r {
                tracing::warn!(sandbox = %id, error = %error_chain(&e), "destroy step failed");
                first.get_or_insert(e);
            }
        };
        // The runtime named in meta.json, or every runtime holding a container of this id.
        let named = state.read_meta().ok().map(|m| m.runtime);
        for (kind, rt) in &self.runtimes {
            let holds = rt.state_root().join(id.as_str()).exists();
            if Some(*kind) == named || holds {
                note(delete_container(rt.as_ref(), id));
            }
        }
        match self.cgroups.sandbox(id.as_str()) {
            Ok(cg) => {
                note(
                    cg.kill_all(hutch_cgroup::Signal::KILL)
                        .map_err(host_err("kill the cgroup", id)),
                );
                note(cg.remove().map_err(host_err("remove the cgroup", id)));
            }
            Err(e) => note(Err(host_err("name the cgroup", id)(e))),
        }
        note(
            self.rootfs
                .teardown(id.as_str())
                .map_err(host_err("tear down the root filesystem", id)),
        );
        note(self.wait_for_loop_release(id));
        note(state.remove().map_err(host_err("remove the state dir", id)));
        self.set_client(id, None);
        self.unpin(id);
        first.map_or(Ok(()), Err)
    }

    /// Waits until no loop device is backed by the sandbox's disk image any more.
    ///
    /// The kernel releases a sandbox's mount namespace (and with it the last reference to
    /// its ext4 upper dir) a moment after its last process has left the cgroup, so the
    /// autoclear of the loop device can trail the teardown by a few milliseconds. Destroy
    /// returns only once it has happened: "nothing left" holds when it returns.
    fn wait_for_loop_release(&self, id: &SandboxId) -> Result<(), AgentError> {
        use hutch_rootfs::HostOps;
        const LOOP_RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
        let dir = self.rootfs.root().join(id.as_str());
        let start = std::time::Instant::now();
        loop {
            let left = self
                .rootfs
                .ops()
                .loops_backed_under(&dir)
                .map_err(host_err("list loop devices", id))?;
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() > LOOP_RELEASE_TIMEOUT {
                return Err(host_err("wait for the loop device to be released", id)(
                    std::io::Error::other(format!("{left:?} still bound")),
                ));
            }
            for dev in &left {
                let _ = self.rootfs.ops().loop_detach(dev);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// What the host holds of `id` (blocking).
    fn inspect(&self, id: &SandboxId) -> Result<HostSandboxState, AgentError> {
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
    fn held(&self) -> Result<Vec<SandboxId>, AgentError> {
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

/// `delete --force` (which kills a running container first); a missing one is done.
fn delete_container(rt: &dyn OciRuntime, id: &SandboxId) -> Result<(), AgentError> {
    match rt.delete(id.as_str(), true) {
        Ok(()) | Err(RuntimeError::NotFound { .. }) => Ok(()),
        Err(e) => {
            // A container stuck mid-creation can refuse a forced delete: kill, then retry.
            let _ = rt.kill(id.as_str(), Signal::KILL, true);
            match rt.delete(id.as_str(), true) {
                Ok(()) | Err(RuntimeError::NotFound { .. }) => Ok(()),
                Err(_) => Err(host_err("delete the container", id)(e)),
            }
        }
    }
}

#[async_trait]
impl HostAgent for LocalAgent {
    async fn ensure_template(&self, template: &TemplateLayers) -> Result<(), AgentError> {
        let missing: Vec<Digest> = template
            .layers
            .iter()
            .filter(|d| !self.inner.layers.contains(d))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for digest in &missing {
            let fetch = {
                let mut fetches = self.inner.fetches.lock().unwrap_or_else(|p| p.into_inner());
                fetches.entry(*digest).or_default().clone()
            };
            let _one_at_a_time = fetch.lock().await;
            let t = std::time::Instant::now();
            let fetched = self
                .inner
                .layers
                .fetch(digest, self.inner.config.blobs.as_ref())
                .await;
            {
                let mut fetches = self.inner.fetches.lock().unwrap_or_else(|p| p.into_inner());
                fetches.remove(digest);
            }
            fetched.map_err(|e| AgentError::Template {
                name: template.name.clone(),
                reason: error_chain(&e),
            })?;
            tracing::info!(
                template = %template.name,
                layer = %digest,
                ms = t.elapsed().as_millis() as u64,
                "layer fetched from the blob store"
            );
        }
        self.evict_layers_but(template.layers.clone()).await;
        Ok(())
    }

    async fn launch(&self, launch: Launch) -> Result<Launched, AgentError> {
        let id = launch.id.clone();
        let lock = self.lock(&id);
        let _guard = lock.lock().await;

        // Pin the template's layers before making sure they are here, so an eviction for
        // another launch cannot take a layer between its fetch and this claim.
        self.inner.pin(&id, &launch.template.layers);
        let t = std::time::Instant::now();
        let claimed = async {
            self.ensure_template(&launch.template).await?;
            let inner = self.inner.clone();
            let l = launch.clone();
            blocking(&id, move || inner.claim(&l)).await
        }
        .await;
        let state = match claimed {
            Ok(state) => state,
            Err(e) => {
                self.inner.unpin(&id);
                return Err(e);
            }
        };
        let claim_us = micros_since(t);

        let inner = self.inner.clone();
        let l = launch.clone();
        let result: Result<(Launched, GuestClient), AgentError> = async {
            let Started {
                expected,
                runtime,
                log_task,
                steps,
            } = blocking(&id, move || inner.start(&l, &state)).await?;
            let client = GuestClient::new(Endpoint::Unix(self.inner.state(&id).socket()))
                .with_token(launch.guest_token.clone());
            let t = std::time::Instant::now();
            self.wait_for_guest(&id, &client, runtime.clone(), log_task)
                .await?;
            let guest_us = micros_since(t);
            let t = std::time::Instant::now();
            let inner = self.inner.clone();
            let id2 = id.clone();
            let init_pid = blocking(&id, move || {
                inner.check_posture(&id2, &expected, runtime.as_ref())
            })
            .await?;
            tracing::debug!(
                sandbox = %id,
                claim_us = claim_us,
                config_us = steps.config,
                rootfs_us = steps.rootfs,
                bundle_us = steps.bundle,
                runtime_us = steps.runtime,
                guest_us,
                posture_us = micros_since(t),
                "sandbox launched"
            );
            let launched = Launched {
                id: id.clone(),
                runtime: launch.runtime,
                init_pid,
            };
            Ok((launched, client))
        }
        .await;
        match result {
            Ok((launched, client)) => {
                // Its connection from the health check stays pooled for the first call.
                self.inner.set_client(&id, Some(client));
                Ok(launched)
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %error_chain(&e), "launch failed; undoing it");
                let inner = self.inner.clone();
                let id2 = id.clone();
                if let Err(undo) = blocking(&id, move || inner.remove_everything(&id2)).await {
                    tracing::error!(sandbox = %id, error = %error_chain(&undo), "undoing a failed launch");
                }
                Err(e)
            }
        }
    }

    fn guest(&self, id: &SandboxId) -> Result<GuestClient, AgentError> {
        let state = self.inner.state(id);
        if !state.exists() {
            return Err(AgentError::NotFound(id.clone()));
        }
        if let Some(client) = self.inner.client(id) {
            return Ok(client);
        }
        // A sandbox launched before a restart: its token is in its state dir.
        let token = state
            .read_token()
            .map_err(|_| AgentError::NotFound(id.clone()))?;
        let client = GuestClient::new(Endpoint::Unix(state.socket())).with_token(token);
        self.inner.set_client(id, Some(client.clone()));
        Ok(client)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), AgentError> {
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let inner = self.inner.clone();
        let id2 = id.clone();
        blocking(id, move || inner.remove_everything(&id2)).await
    }

    async fn inspect(&self, id: &SandboxId) -> Result<HostSandboxState, AgentError> {
        let inner = self.inner.clone();
        let id2 = id.clone();
        blocking(id, move || inner.inspect(&id2)).await
    }

    async fn held(&self) -> Result<Vec<SandboxId>, AgentError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.held())
            .await
            .map_err(host_wide_err("join a blocking task"))?
    }

    fn runtimes(&self) -> Vec<Runtime> {
        self.inner.runtimes.iter().map(|(r, _)| *r).collect()
    }
}
