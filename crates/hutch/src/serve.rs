//! `hutch serve`: the single-node server. One process holds the REST API,
//! the control plane and an embedded host agent.
//!
//! Start-up, in order:
//! 1. Open the data directory (0700) and the SQLite store in it.
//! 2. Open the blob store in `<data>/blobs` (template layers, for good).
//! 3. Open the host agent on `<data>/agent` (it finds what a previous run
//!    left: sandboxes to re-attach, leftovers to clean); its layer cache is
//!    a cache of the blob store's layers.
//! 4. Make sure the built-in templates exist (built the first time with
//!    their progress printed; from the cache outside the data dir after
//!    that), put their layers in the blob store and register them in the
//!    store as platform templates.
//! 5. Start the control plane: bootstrap the operator's key (printed once if
//!    generated), reconcile the store with the host, start the sweeper.
//! 6. Bind the listener, print the URL, serve until SIGTERM or SIGINT.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Args;
use hutch_agent::{LocalAgent, config::AgentConfig};
use hutch_blob::{BlobStore, ObjectBlobStore};
use hutch_control::{Control, ControlConfig};
use hutch_host::HostAgent;
use hutch_store::{SqliteStore, Store};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the REST API.
    #[arg(long, env = "HUTCH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where Hutch keeps its database and host state.
    #[arg(long, env = "HUTCH_DATA_DIR", default_value = "/var/lib/hutch")]
    pub data_dir: PathBuf,
    /// The static hutch-guest binary put into every sandbox.
    #[arg(long, env = "HUTCH_GUEST_BIN")]
    pub guest_bin: PathBuf,
    /// Cache of built-in template archives (outside the data dir, so a fresh
    /// data dir reuses them).
    #[arg(
        long,
        env = "HUTCH_TEMPLATE_CACHE",
        default_value = "/var/cache/hutch/templates"
    )]
    pub template_cache: PathBuf,
    /// Size cap of the host's cache of unpacked template layers, in MiB: above
    /// it, the least recently used layers no sandbox uses are removed (the blob
    /// store keeps them; a later sandbox fetches them again).
    #[arg(long, env = "HUTCH_LAYER_CACHE_MB", default_value_t = hutch_agent::config::DEFAULT_LAYER_CACHE_MAX_MB)]
    pub layer_cache_mb: u64,
    /// Turn on the host's cgroup2 option `favordynmods` at start: moving a
    /// sandbox's first process into its cgroup then skips an RCU grace period
    /// (10-20 ms of each create on a small host). Host-wide until reboot;
    /// `false` leaves the host's cgroup mount as it is.
    #[arg(long, env = "HUTCH_CGROUP_FAVOR_DYNMODS", default_value_t = true, action = clap::ArgAction::Set)]
    pub cgroup_favor_dynmods: bool,
    /// The cgroup every sandbox of this server lives under. Two servers on one
    /// host need two parents: each cleans up whatever it finds under its own.
    #[arg(long, env = "HUTCH_CGROUP_PARENT", default_value = "hutch")]
    pub cgroup_parent: String,
    /// How many times the host's cores sandboxes' CPU limits may add up to.
    /// Limits are ceilings, not reservations: idle sandboxes use none, and
    /// the default lets 1000 one-CPU sandboxes share two cores.
    #[arg(long, env = "HUTCH_OVERCOMMIT_CPU", default_value_t = 500)]
    pub overcommit_cpu: u64,
    /// How many times the host's memory sandboxes' memory limits may add up
    /// to (the default lets 1000 sandboxes of 512 MB share 24 GiB).
    #[arg(long, env = "HUTCH_OVERCOMMIT_MEMORY", default_value_t = 24)]
    pub overcommit_memory: u64,
    /// How many times the data dir's size sandboxes' disk limits may add up
    /// to (disk images are sparse: only what is written takes space).
    #[arg(long, env = "HUTCH_OVERCOMMIT_DISK", default_value_t = 4)]
    pub overcommit_disk: u64,
    /// Give each sandbox a user namespace mapped onto its own range of
    /// unprivileged host uids: root inside is not root outside. `false`
    /// shares the host's user namespace (kernels without idmapped mounts).
    #[arg(long, env = "HUTCH_USER_NAMESPACES", default_value_t = true, action = clap::ArgAction::Set)]
    pub user_namespaces: bool,
    /// Seconds a client may take to send a request's headers, and a kept-alive
    /// connection may stay idle (0: no limit).
    #[arg(long, env = "HUTCH_HEADER_TIMEOUT_S", default_value_t = 10)]
    pub header_timeout_s: u64,
    /// The slowest a request body may arrive, in bytes per second after a 10 s
    /// grace; a slower one is cut off with 408 (0: no limit).
    #[arg(long, env = "HUTCH_BODY_MIN_RATE", default_value_t = 1024)]
    pub body_min_rate: u64,
    /// API connections open at once (0: no cap). Over it, new connections are
    /// refused with 503, except a few kept for `/healthz` and the operator's key.
    #[arg(long, env = "HUTCH_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// API connections open at once from one IPv4 address or IPv6 /64 (0: no
    /// cap); over it, 429. Raise it (or use 0) behind a reverse proxy.
    #[arg(long, env = "HUTCH_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub max_connections_per_client: usize,
    /// Connections admitted beyond the caps for `/healthz` and requests with the
    /// operator's key.
    #[arg(long, env = "HUTCH_CONNECTION_RESERVE", default_value_t = 128)]
    pub connection_reserve: usize,
}

impl ServeArgs {
    /// The API's connection bounds from the flags (0 turns a bound off).
    fn serve_config(&self) -> hutch_api::ServeConfig {
        let some = |n: usize| (n > 0).then_some(n);
        let defaults = hutch_api::ServeConfig::default();
        hutch_api::ServeConfig {
            header_timeout: (self.header_timeout_s > 0)
                .then(|| std::time::Duration::from_secs(self.header_timeout_s)),
            body_rate: (self.body_min_rate > 0).then(|| hutch_api::BodyRate {
                min_bytes_per_s: self.body_min_rate,
                ..hutch_api::BodyRate::default()
            }),
            max_connections: some(self.max_connections),
            max_connections_per_client: some(self.max_connections_per_client),
            reserve: self.connection_reserve,
            reserve_per_client: defaults.reserve_per_client.min(self.connection_reserve),
            ..defaults
        }
    }
}

/// Creates the data dir and what in it is the operator's alone. The dir itself is 0711: with
/// user namespaces, a sandbox's runtime passes through `<data>/agent` as the sandbox's
/// unprivileged host uid. So every entry of its own must keep others out: the store's file is
/// made 0600 before SQLite opens it (its WAL and shm files take the same mode) and the blob
/// store's dir 0700 before it is opened.
fn private_data_dir(data: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", path.display()))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(hutch_agent::state::STATE_DIR_MODE)
        .create(data)
        .with_context(|| format!("creating data dir {}", data.display()))?;
    mode(data, hutch_agent::state::STATE_DIR_MODE)?;
    let db = data.join("hutch.db");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&db)
        .with_context(|| format!("creating {}", db.display()))?;
    mode(&db, 0o600)?;
    let blobs = data.join("blobs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&blobs)
        .with_context(|| format!("creating {}", blobs.display()))?;
    mode(&blobs, 0o700)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let files = raise_nofile();
    let serve_config = args.serve_config();
    let connections =
        serve_config.max_connections.unwrap_or(usize::MAX) as u64 + serve_config.reserve as u64;
    if connections > files / 2 {
        tracing::warn!(
            files,
            connections,
            "the connection caps allow more than half the open-file limit: a flood of \
             connections can leave sandboxes without file descriptors; lower --max-connections"
        );
    }
    private_data_dir(&args.data_dir)?;
    anyhow::ensure!(
        args.guest_bin.is_file(),
        "guest binary {} not found (build it with `make guest`)",
        args.guest_bin.display()
    );

    // 1. Store.
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&args.data_dir.join("hutch.db"))
            .await
            .with_context(|| format!("opening the store in {}", args.data_dir.display()))?,
    );

    // 2. Blobs: template layers for good (the agent's layer cache is a cache of them).
    let blob_dir = args.data_dir.join("blobs");
    let blobs: Arc<dyn BlobStore> = Arc::new(
        ObjectBlobStore::local(&blob_dir)
            .with_context(|| format!("opening the blob store in {}", blob_dir.display()))?,
    );

    // 3. Host agent.
    let mut config = AgentConfig::new(args.data_dir.join("agent"), &args.guest_bin, blobs);
    config.layer_cache_max_mb = args.layer_cache_mb;
    config.favor_cgroup_dynmods = args.cgroup_favor_dynmods;
    config.template_cache_dir = args.template_cache.clone();
    config.cgroup_parent = args.cgroup_parent.clone();
    config.user_namespaces = args.user_namespaces.then(hutch_agent::UidRanges::default);
    config.overcommit = hutch_agent::Overcommit {
        cpu: args.overcommit_cpu,
        memory: args.overcommit_memory,
        disk: args.overcommit_disk,
    };
    let agent = Arc::new(LocalAgent::new(config).context("starting the host agent")?);

    // 4. Built-in templates.
    let progress: Arc<dyn Fn(&str) + Send + Sync> =
        Arc::new(|line: &str| say(&format!("  template: {line}")));
    say(
        "hutch: making sure the built-in templates exist (the first build of debian:12 takes a few minutes)",
    );
    let builtins = agent
        .ensure_builtin_templates(progress)
        .await
        .context("building the built-in templates")?;
    let names: Vec<String> = builtins.iter().map(|t| t.name.clone()).collect();
    let builtin_layers = hutch_control::templates::builtin::register(store.as_ref(), builtins)
        .await
        .context("registering the built-in templates")?;
    for name in names {
        say(&format!("hutch: template {name} ready"));
    }

    // Disk images for sandboxes of the default size, formatted ahead.
    agent.warm_disk_pool(u64::from(hutch_core::request::limits::DISK_MB_DEFAULT));

    // 5. Control plane.
    let shutdown = CancellationToken::new();
    let control = Control::new(
        store,
        agent.clone() as Arc<dyn HostAgent>,
        ControlConfig {
            admin_key: std::env::var("HUTCH_ADMIN_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            layers: Arc::new(builtin_layers),
            ..ControlConfig::default()
        },
    );
    let startup = control
        .start(shutdown.clone())
        .await
        .context("starting the control plane")?;
    let r = &startup.recovery;
    if !(r.reattached.is_empty()
        && r.failed.is_empty()
        && r.removed.is_empty()
        && r.leftovers.is_empty()
        && r.ended_sessions == 0)
    {
        say(&format!(
            "hutch: recovered: {} re-attached, {} failed, {} deletions finished, {} leftovers removed, {} orphaned sessions ended",
            r.reattached.len(),
            r.failed.len(),
            r.removed.len(),
            r.leftovers.len(),
            r.ended_sessions
        ));
    }

    // 6. Serve.
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut banner = format!("Hutch is serving at {url}\n");
    match &startup.bootstrap.generated_key {
        Some(key) => {
            banner += &format!(
                "Operator API key (shown once, store it now): {}\n",
                key.expose()
            );
            banner += &format!("  export HUTCH_URL={url} HUTCH_API_KEY={}\n", key.expose());
        }
        None => {
            banner += &format!(
                "  export HUTCH_URL={url}  (the operator key is HUTCH_ADMIN_KEY or the one printed at first start)\n"
            )
        }
    }
    // Whoever started us may have closed stdout after reading the URL: that must not end
    // the server (`println!` panics on EPIPE), but a key nobody saw is worth saying.
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = std::io::Write::write_all(&mut stdout, banner.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut stdout))
    {
        tracing::warn!(error = %e, "cannot print the URL and key to stdout");
        if startup.bootstrap.generated_key.is_some() {
            tracing::warn!(
                "the generated operator key was not shown; set HUTCH_ADMIN_KEY or use a fresh data directory"
            );
        }
    }
    let stop = shutdown.clone();
    let signals = async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    };
    tokio::spawn(signals);
    let stopped = shutdown.clone();
    hutch_api::serve(
        listener,
        hutch_api::router(control.clone()),
        serve_config,
        async move { stopped.cancelled().await },
    )
    .await
    .context("serving the API")?;
    // Audit entries still being written land before the process ends.
    control.settle_audit().await;
    // Sandboxes keep running across a restart of the server: the next start
    // re-attaches them.
    let _ = startup.sweeper.await;
    Ok(())
}

/// Lifts the soft limit on open files to the hard one, as Go's runtime does for every
/// program: the server keeps a pooled connection to each busy sandbox's guest, and a
/// systemd service's soft default of 1024 is below what a full host needs. Returns the soft
/// limit in force.
fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current == limit.maximum {
        return before.unwrap_or(u64::MAX);
    }
    limit.current = limit.maximum;
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) => {
            tracing::debug!(?before, now = ?limit.maximum, "raised RLIMIT_NOFILE");
            limit.maximum.unwrap_or(u64::MAX)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE");
            before.unwrap_or(u64::MAX)
        }
    }
}

/// A progress line on stderr. Unlike `eprintln!` it cannot panic: a server
/// whose stderr was closed keeps serving.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
