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
    #[error("inherited fd {fd} is not a listening socket")]
    InheritedFd {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("nothing to listen on: give --listen, --listen-unix or --listen-fd")]
    NoListener,
    #[error("serving")]
    Serve(#[source] std::io::Error),
}

/// Binds a Unix socket at `path`, replacing a stale socket file, mode 0600.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::BindUnix {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket_like() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// A listener inherited from the parent.
pub enum Inherited {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Takes over an inherited listening socket (see `--listen-fd`): checks that
/// it is a socket in the listening state, marks it close-on-exec so no
/// sandbox process inherits it, and makes it non-blocking.
#[allow(unsafe_code)]
pub fn adopt_listener(fd: i32) -> Result<Inherited, ServeError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let err = |source| ServeError::InheritedFd { fd, source };
    // SAFETY: the fd number comes from our parent by contract (--listen-fd);
    // we take sole ownership of it here, once, before any other code could
    // have opened or closed it (this runs at start-up, before the server).
    // fcntl first proves the number is an open descriptor.
    rustix::io::fcntl_getfd(unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) })
        .map_err(|e| err(e.into()))?;
    // SAFETY: see above; the descriptor is open and owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if !rustix::net::sockopt::socket_acceptconn(&owned).map_err(|e| err(e.into()))? {
        return Err(err(std::io::Error::other("socket is not listening")));
    }
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC).map_err(|e| err(e.into()))?;
    let is_unix = matches!(
        rustix::net::getsockname(&owned)
            .map_err(|e| err(e.into()))?
            .address_family(),
        rustix::net::AddressFamily::UNIX
    );
    if is_unix {
        let l = std::os::unix::net::UnixListener::from(owned);
        l.set_nonblocking(true).map_err(err)?;
        Ok(Inherited::Unix(UnixListener::from_std(l).map_err(err)?))
    } else {
        let l = std::net::TcpListener::from(owned);
        l.set_nonblocking(true).map_err(err)?;
        Ok(Inherited::Tcp(TcpListener::from_std(l).map_err(err)?))
    }
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
    serve_all(
        app,
        tcp.into_iter().collect(),
        unix.into_iter().collect(),
        shutdown,
    )
    .await
}

/// Like [`serve`], on any number of listeners of each kind.
pub async fn serve_all(
    app: Router,
    tcp: Vec<TcpListener>,
    unix: Vec<UnixListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if tcp.is_empty() && unix.is_empty() {
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
    let mut tasks = Vec::new();
    for l in tcp {
        let app = app.clone();
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(stopped(rx))
                .await
        }));
    }
    for l in unix {
        let app = app.clone();
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(stopped(rx))
                .await
        }));
    }
    for task in tasks {
        match task.await {
            Ok(r) => r.map_err(ServeError::Serve)?,
            Err(e) => return Err(ServeError::Serve(std::io::Error::other(e))),
        }
    }
    Ok(())
}
