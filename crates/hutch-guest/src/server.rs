//! Serving the router on TCP and/or a Unix socket until shutdown.
//!
//! Listeners are bound by the caller (tests bind `127.0.0.1:0`), then
//! [`serve`] runs both with one shutdown signal (STYLE.md 11).

use std::{
    future::Future,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use axum::Router;
use tokio::net::{TcpListener, UnixListener};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding TCP {addr}")]
    BindTcp {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("binding unix socket {path}")]
    BindUnix {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nothing to listen on: give --listen or --listen-unix")]
    NoListener,
    #[error("serving")]
    Serve(#[source] std::io::Error),
}

/// Binds a Unix socket at `path`, replacing a stale socket file, mode 0600.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::BindUnix { path: path.to_owned(), source };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket_like() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a socket")));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_socket()
    }
}

/// Serves `app` on whichever listeners are given until `shutdown` resolves,
/// then lets in-flight requests finish.
pub async fn serve(
    app: Router,
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if tcp.is_none() && unix.is_none() {
        return Err(ServeError::NoListener);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let tcp_task = tcp.map(|l| {
        let app = app.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stopped(rx)).await })
    });
    let unix_task = unix.map(|l| {
        let rx = stop_rx.clone();
        tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stopped(rx)).await })
    });
    for task in [tcp_task, unix_task].into_iter().flatten() {
        match task.await {
            Ok(r) => r.map_err(ServeError::Serve)?,
            Err(e) => return Err(ServeError::Serve(std::io::Error::other(e))),
        }
    }
    Ok(())
}
