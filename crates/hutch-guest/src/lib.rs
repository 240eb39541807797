//! hutch-guest: the daemon inside every Hutch sandbox.
//!
//! It speaks E2B's envd wire contract (shared/protocols/e2b.md §2), so the
//! E2B SDKs drive a Hutch sandbox unchanged and Hutch's own exec and file APIs
//! are translations onto it. Owns, inside one sandbox: starting and tracking
//! processes (`process`), the filesystem RPCs and watchers (`fs`), plain-HTTP
//! file transfer (`files`), health, env and metrics routes; reaping orphans
//! when it is PID 1 (`reaper`).
//!
//! Must not: trust anything it is sent (every request is bounded and
//! validated; R15 says the host treats *its* replies as untrusted too), hold
//! process output beyond a fixed bound (R16), or use `tokio::process` (the
//! reaper is the only waiter, see `reaper`).
//!
//! Routes:
//! - `POST /process.Process/{Start,Connect,List,SendInput,StreamInput,SendSignal,CloseStdin,Update}`
//! - `POST /filesystem.Filesystem/{Stat,MakeDir,Move,ListDir,Remove,WatchDir,CreateWatcher,GetWatcherEvents,RemoveWatcher}`
//! - `GET|POST /files`, `GET /health`, `GET /envs`, `GET /metrics`

pub mod auth;
pub mod config;
pub mod files;
pub mod fs;
pub mod health;
pub mod metrics;
pub mod process;
pub mod reaper;
pub mod rpc;
pub mod server;
pub mod users;

use std::sync::Arc;

use axum::{Router, routing::get};

pub use config::Config;

/// Everything a handler can reach.
#[derive(Clone)]
pub struct GuestState {
    pub config: Arc<Config>,
    pub reaper: reaper::Reaper,
    pub processes: Arc<process::Processes>,
    pub watchers: Arc<fs::Watchers>,
    /// Users as the sandbox's passwd and group name them.
    pub users: Arc<users::UserCache>,
}

impl GuestState {
    /// Builds the state; starts the reaper, so call it inside a runtime.
    pub fn new(config: Config) -> std::io::Result<GuestState> {
        let config = Arc::new(config);
        let reaper = reaper::Reaper::start()?;
        let processes = Arc::new(process::Processes::new(config.clone(), reaper.clone()));
        let watchers = Arc::new(fs::Watchers::new(config.clone()));
        Ok(GuestState {
            config,
            reaper,
            processes,
            watchers,
            users: Arc::default(),
        })
    }
}

/// The whole HTTP API.
pub fn router(state: GuestState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/envs", get(health::envs))
        .route("/metrics", get(metrics::metrics))
        .merge(files::routes())
        .merge(process::routes())
        .merge(fs::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_access_token,
        ))
        .with_state(state)
}
