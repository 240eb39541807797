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
//! # Launch, destroy, restart
//!
//! A launch is the sequence of steps in [`crate::launch`], each with its undo, unwound in
//! reverse on a failure. Launch and destroy of one id are serialised by a per-id lock. A
//! launch's future must run to completion (the control plane runs lifecycle work detached
//! from requests): dropping it halfway would leave the pieces made so far for
//! [`LocalAgent::cleanup_leftovers`].
//!
//! Destroy is the undo of every step, in reverse: idempotent, from any partial state, with no
//! memory of the launch, so it is also the crash-recovery path.
//!
//! Nothing needed lives only in memory: a new agent on the same data dir finds a sandbox's
//! runtime in `meta.json`, its token in `guest/token`, and its guest on `guest.sock` (the
//! guest still holds the listening socket).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use hutch_core::error::error_chain;
use hutch_core::locks::KeyedLocks;
use hutch_core::request::Runtime;
use hutch_core::{Digest, SandboxId};
use hutch_guest_client::{Endpoint, GuestClient};
use hutch_host::{AgentError, HostAgent, HostSandboxState, Launch, Launched, TemplateLayers};
use hutch_image::Builtin;
use hutch_rootfs::ops::HostOps;
use hutch_rootfs::{POOL_DEPTH, PoolFiller, RootfsManager};
use hutch_runtime::posture::Mismatch;

use crate::config::AgentConfig;
use crate::launch::{self, Cx, STEPS, blocking};
use crate::layers::{LayerCache, LayerError};
use crate::machine::{Machine, Parts, host_wide_err};
use crate::state::StateDir;

pub use crate::launch::bundle::{GUEST_CONFIG_DIR, GUEST_LISTEN, GUEST_PATH};

/// The user processes run as when a template names none. `root` for both built-in
/// templates (they also have `user`, uid 1000; see docs/decisions.md).
pub const BUILTIN_DEFAULT_USER: &str = "root";

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
    #[error(
        "{path} is below {closed}, which others cannot pass through: sandboxes run as unprivileged host uids and their runtime must reach it (chmod o+x {closed})"
    )]
    NotTraversable { path: PathBuf, closed: PathBuf },
    #[error("open the record of host uid ranges at {path}")]
    Uids {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The host agent of this machine.
pub struct LocalAgent {
    machine: Arc<Machine>,
    /// One lock per sandbox id: launch and destroy of one id never overlap.
    locks: KeyedLocks<SandboxId, tokio::sync::Mutex<()>>,
}

/// Copies the guest binary `from` to `to` (0755), replacing any earlier copy atomically.
fn install_guest(from: &Path, to: &Path) -> Result<PathBuf, InitError> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = to.with_extension("tmp");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { path, source }
    };
    fs::copy(from, &tmp).map_err(io(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io(&tmp))?;
    fs::rename(&tmp, to).map_err(io(to))?;
    Ok(to.to_path_buf())
}

/// The first directory above `path` (or `path` itself, if a directory) that others may not
/// pass through (no `o+x`), if any.
fn closed_ancestor(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let start = if path.is_dir() {
        Some(path)
    } else {
        path.parent()
    };
    start?
        .ancestors()
        .find(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}

/// Creates a host state dir: owner root, traverse-only for others (see
/// [`crate::state::STATE_DIR_MODE`]).
fn mkdir_private(path: &Path) -> Result<(), InitError> {
    let io = |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(crate::state::STATE_DIR_MODE)
        .create(path)
        .map_err(io)?;
    // Also when it existed before (another part, or an older version, made it 0700).
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(
        path,
        fs::Permissions::from_mode(crate::state::STATE_DIR_MODE),
    )
    .map_err(io)
}

impl LocalAgent {
    /// Opens the agent on `config.data_dir` with the real parts of this host
    /// ([`Parts::open`]), creating its directories. Blocking (a few runtime `--version`
    /// calls): call it before serving or from `spawn_blocking`.
    pub fn new(config: AgentConfig) -> Result<LocalAgent, InitError> {
        let parts = Parts::open(&config)?;
        LocalAgent::with_parts(config, parts)
    }

    /// Opens the agent on `config.data_dir` with the given parts (the real ones, or fakes in
    /// tests), creating its directories.
    pub fn with_parts(mut config: AgentConfig, parts: Parts) -> Result<LocalAgent, InitError> {
        if !config.guest_bin.is_file() {
            return Err(InitError::GuestMissing(config.guest_bin.clone()));
        }
        // A host path of ours (not a sandbox's tree): canonical, so the bind mount's source
        // is absolute without `..`.
        config.guest_bin = fs::canonicalize(&config.guest_bin).map_err(|source| InitError::Io {
            path: config.guest_bin.clone(),
            source,
        })?;
        let data = config.data_dir.clone();
        mkdir_private(&data)?;
        if config.user_namespaces.is_some() {
            // A sandbox's runtime reaches its root filesystem and the guest as the sandbox's
            // unprivileged host uid: every directory on the way must let others through.
            if let Some(closed) = closed_ancestor(&data) {
                return Err(InitError::NotTraversable {
                    path: data.clone(),
                    closed,
                });
            }
        }
        // The guest every sandbox binds is a copy in the data dir: reachable whatever the
        // directories above the built binary allow, and a rebuild of it never changes the
        // file under running sandboxes (a new copy replaces the name, not the file).
        let bin = data.join("bin");
        mkdir_private(&bin)?;
        config.guest_bin = install_guest(&config.guest_bin, &bin.join("hutch-guest"))?;
        let data = &data;
        let sandboxes_dir = data.join("sandboxes");
        mkdir_private(&sandboxes_dir)?;
        let layers = LayerCache::open(data.join("layers")).map_err(InitError::Layers)?;
        let rootfs = RootfsManager::new(data.join("rootfs"), parts.rootfs_ops.clone())
            .map_err(InitError::Rootfs)?;
        let rootfs: Arc<RootfsManager<Arc<dyn HostOps>>> = Arc::new(rootfs);
        let disk_pool =
            PoolFiller::start(rootfs.clone(), POOL_DEPTH).map_err(InitError::DiskPool)?;
        let uids = match config.user_namespaces {
            None => None,
            Some(ranges) => {
                let path = data.join("uids");
                let record = crate::userns::Allocations::open(path.clone(), ranges)
                    .map_err(|source| InitError::Uids { path, source })?;
                Some(Arc::new(record))
            }
        };
        Ok(LocalAgent {
            machine: Arc::new(Machine::new(
                config,
                sandboxes_dir,
                layers,
                rootfs,
                disk_pool,
                uids,
                parts,
            )),
            locks: KeyedLocks::default(),
        })
    }

    #[cfg(test)]
    pub(crate) fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    /// Formats disk images of `disk_mb` MiB ahead of the first sandbox of
    /// that size (in the background; returns at once).
    pub fn warm_disk_pool(&self, disk_mb: u64) {
        self.machine.disk_pool.request(disk_mb);
    }

    /// The directory of a cached layer (it may not exist).
    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.machine.layers.path(digest)
    }

    /// The host state directory of a sandbox (it may not exist).
    pub fn state_dir(&self, id: &SandboxId) -> PathBuf {
        self.machine.state(id).dir
    }

    /// The runtime `--root` of `runtime` on this host, if it is usable here.
    pub fn runtime_state_root(&self, runtime: Runtime) -> Option<PathBuf> {
        self.machine
            .runtime(runtime)
            .map(|rt| rt.state_root().to_path_buf())
    }

    /// Descriptors of host files held by any process of sandbox `id`, by pid (R17: there must
    /// be none). Launch checks it for the guest; tests check it with commands running.
    pub async fn host_files(
        &self,
        id: &SandboxId,
    ) -> Result<Vec<(i32, Vec<Mismatch>)>, AgentError> {
        let m = self.machine.clone();
        let id2 = id.clone();
        blocking(id, move || m.host_files(&id2)).await
    }

    /// The cgroup directories sandbox `id` has or would have.
    pub fn cgroup_dirs(&self, id: &SandboxId) -> Vec<PathBuf> {
        self.machine
            .cgroups
            .sandbox(id.as_str())
            .map(|cg| cg.dirs())
            .unwrap_or_default()
    }

    /// Makes layer `digest` present by unpacking `archive` (which must hash to it) with the
    /// strict unpacker, into a temp dir renamed into place under a lock.
    pub async fn install_layer(&self, digest: Digest, archive: PathBuf) -> Result<(), AgentError> {
        let layers = self.machine.layers.clone();
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
            &self.machine.config.template_cache_dir,
            self.machine.config.template_build.clone(),
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
        evict_layers_but(&self.machine, vec![digest]).await;
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
        let blobs = &self.machine.config.blobs;
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
        evict_layers_but(&self.machine, Vec::new()).await
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
        self.locks.of(id)
    }
}

/// Makes `template`'s layers present: fetches each the cache lacks from the blob store (one
/// download per layer at a time), then brings the cache under its cap keeping them.
pub(crate) async fn fetch_layers(
    machine: &Arc<Machine>,
    template: &TemplateLayers,
) -> Result<(), AgentError> {
    let missing: Vec<Digest> = template
        .layers
        .iter()
        .filter(|d| !machine.layers.contains(d))
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for digest in &missing {
        let fetch = {
            let mut fetches = machine.fetches.lock().unwrap_or_else(|p| p.into_inner());
            fetches.entry(*digest).or_default().clone()
        };
        let _one_at_a_time = fetch.lock().await;
        let t = std::time::Instant::now();
        let fetched = machine
            .layers
            .fetch(digest, machine.config.blobs.as_ref())
            .await;
        {
            let mut fetches = machine.fetches.lock().unwrap_or_else(|p| p.into_inner());
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
    evict_layers_but(machine, template.layers.clone()).await;
    Ok(())
}

/// Brings the layer cache under its cap (see [`LayerCache::evict`]); the layers of every
/// sandbox this host holds, of launches under way and `keep` stay. Failures are logged: a full
/// cache is not a reason to fail the launch that filled it. Runs after every layer that
/// arrives on this host, keeping the template it arrived for.
pub(crate) async fn evict_layers_but(machine: &Arc<Machine>, keep: Vec<Digest>) {
    let m = machine.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        // The cache's lock first (an install may hold it for seconds), then the pins:
        // claims wait only while victims are chosen and renamed away.
        let lock = m.layers.lock().map_err(std::io::Error::other)?;
        let pinned = m.pinned.lock().unwrap_or_else(|p| p.into_inner());
        let mut in_use: HashSet<Digest> = pinned.values().flatten().copied().collect();
        in_use.extend(keep);
        for e in fs::read_dir(&m.sandboxes_dir)?.flatten() {
            match StateDir::new(&m.sandboxes_dir, &e.file_name().to_string_lossy()).read_meta() {
                Ok(meta) if !meta.layers.is_empty() => in_use.extend(meta.layers),
                // Not written yet (its launch is pinned above) or gone meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Written before layers were recorded, or unreadable: which layers it
                // uses is unknown, so none may go.
                _ => return Ok(Vec::new()),
            }
        }
        let max = m.config.layer_cache_max_mb.saturating_mul(1 << 20);
        let evicted = m
            .layers
            .evict(&lock, max, &in_use)
            .map_err(std::io::Error::other)?;
        drop(pinned);
        drop(lock);
        m.layers.remove_evicted();
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

#[async_trait]
impl HostAgent for LocalAgent {
    async fn ensure_template(&self, template: &TemplateLayers) -> Result<(), AgentError> {
        fetch_layers(&self.machine, template).await
    }

    async fn launch(&self, launch: Launch) -> Result<Launched, AgentError> {
        let id = launch.id.clone();
        let lock = self.lock(&id);
        let _guard = lock.lock().await;
        let mut cx = Cx::new(launch, self.machine.state(&id));
        launch::run(&self.machine, STEPS, &mut cx).await?;
        tracing::debug!(sandbox = %id, steps = ?cx.timings, "sandbox launched");
        if let Some(client) = cx.client.take() {
            self.machine.set_client(&id, Some(client));
        }
        Ok(Launched {
            id,
            runtime: cx.launch.runtime,
            init_pid: cx.init_pid.unwrap_or_default(),
        })
    }

    fn guest(&self, id: &SandboxId) -> Result<GuestClient, AgentError> {
        let state = self.machine.state(id);
        if !state.exists() {
            return Err(AgentError::NotFound(id.clone()));
        }
        if let Some(client) = self.machine.client(id) {
            return Ok(client);
        }
        // A sandbox launched before a restart: its token is in its state dir.
        let token = state
            .read_token()
            .map_err(|_| AgentError::NotFound(id.clone()))?;
        let client = GuestClient::new(Endpoint::Unix(state.socket())).with_token(token);
        self.machine.set_client(id, Some(client.clone()));
        Ok(client)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), AgentError> {
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        launch::unwind(&self.machine, STEPS, id).await
    }

    async fn inspect(&self, id: &SandboxId) -> Result<HostSandboxState, AgentError> {
        let m = self.machine.clone();
        let id2 = id.clone();
        blocking(id, move || m.inspect(&id2)).await
    }

    async fn held(&self) -> Result<Vec<SandboxId>, AgentError> {
        let m = self.machine.clone();
        tokio::task::spawn_blocking(move || m.held())
            .await
            .map_err(host_wide_err("join a blocking task"))?
    }

    fn runtimes(&self) -> Vec<Runtime> {
        self.machine.runtimes.iter().map(|(r, _)| *r).collect()
    }

    fn capacity(&self) -> hutch_core::Capacity {
        self.machine.capacity
    }
}
