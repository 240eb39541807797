//! `filesystem.Filesystem` over Connect: the file RPCs of E2B's envd.
//!
//! Layout:
//! - [`path`]: request path → absolute clean path (envd's `ExpandAndResolve`).
//! - [`identity`]: blocking work runs as the request's user (per-thread
//!   fsuid/fsgid/groups), so the kernel enforces that user's permissions and
//!   what it creates is the user's.
//! - [`entry`]: `EntryInfo` as envd fills it.
//! - [`handlers`]: `Stat`, `MakeDir`, `Move`, `ListDir`, `Remove`.
//! - [`watch`]: `WatchDir` and the polling trio, with inotify.
//! - [`error`]: the one error type, mapped once to Connect codes and HTTP
//!   statuses (`/files` shares it).
//!
//! A request flows: 1. `auth` has checked the token and names the user
//! (`RequestUser`); 2. `rpc::Unary`/`StreamRequest` decode the bounded body;
//! 3. the path is resolved; 4. the work runs on the blocking pool as the
//! user; 5. the reply or an `FsError` goes back in the request's codec.

pub mod entry;
pub mod error;
pub mod handlers;
pub mod identity;
pub mod path;
pub mod watch;

use std::path::{Path, PathBuf};

use axum::{Router, routing::post};

pub use error::FsError;
pub use watch::Watchers;

use crate::GuestState;

pub fn routes() -> Router<GuestState> {
    Router::new()
        .route("/filesystem.Filesystem/Stat", post(handlers::stat))
        .route("/filesystem.Filesystem/MakeDir", post(handlers::make_dir))
        .route("/filesystem.Filesystem/Move", post(handlers::move_entry))
        .route("/filesystem.Filesystem/ListDir", post(handlers::list_dir))
        .route("/filesystem.Filesystem/Remove", post(handlers::remove))
        .route("/filesystem.Filesystem/WatchDir", post(watch::watch_dir))
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(watch::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(watch::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(watch::remove_watcher),
        )
}

/// A fresh hidden name next to `target`, for writing then renaming into place.
pub fn temp_sibling(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Keep the temp name within NAME_MAX whatever the target's length.
    let short: String = name.chars().take(128).collect();
    let tag: u64 = rand::random();
    target.with_file_name(format!(".{short}.hutch-{tag:016x}.part"))
}
