//! The hutch-guest executable: make itself non-dumpable, parse flags, bind, serve; as PID 1,
//! also forward SIGTERM to every process in the sandbox and reap orphans.

use std::process::ExitCode;

use clap::Parser;
use hutch_guest::{Config, GuestState, config::Args, server};

fn main() -> ExitCode {
    // Before anything else, and so before serving: a non-dumpable process's `/proc/<pid>`
    // entries (fd/, mem, environ, ...) can be opened only with CAP_SYS_PTRACE, which no
    // sandbox process has. Root inside therefore cannot reopen the guest's descriptors
    // (its listening sockets, its output pipe) through `/proc/1/fd`. The commands it starts
    // are dumpable again after their execve, as usual.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("hutch-guest: making the guest non-dumpable: {e}");
        return ExitCode::FAILURE;
    }
    let config = match Config::from_args(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hutch-guest: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HUTCH_GUEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One thread: the guest idles in every sandbox, so its footprint matters
    // more than parallelism; blocking file work goes to the blocking pool.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hutch-guest: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hutch-guest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let mut tcp = Vec::new();
    let mut unix = Vec::new();
    if let Some(fd) = config.listen_fd {
        match server::adopt_listener(fd)? {
            server::Inherited::Tcp(l) => tcp.push(l),
            server::Inherited::Unix(l) => unix.push(l),
        }
    }
    if let Some(addr) = config.listen {
        tcp.push(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| server::ServeError::BindTcp { addr, source })?,
        );
    }
    if let Some(path) = config.listen_unix.as_deref() {
        unix.push(server::bind_unix(path)?);
    }
    let socket_path = config.listen_unix.clone();
    let grace = config.stop_grace;
    let state = GuestState::new(config)?;
    let processes = state.processes.clone();
    let reaper = state.reaper.clone();
    let app = hutch_guest::router(state);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve_all(app, tcp, unix, async move {
        let _ = stop_rx.await;
    }));

    // Stopping, in order:
    // 1. pass SIGTERM on to every process (their streams end as they exit,
    //    which lets the servers' graceful shutdown finish);
    // 2. stop accepting and let in-flight requests finish, and wait for the
    //    children, both within the grace period;
    // 3. past it, SIGKILL whatever is left and go.
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    signal_children(&processes, nix::sys::signal::Signal::SIGTERM);
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(grace, async {
        reaper.all_exited().await;
        server.await
    })
    .await;
    match drained {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => return Err(Box::new(join)),
        Err(_) => {
            tracing::warn!("processes or requests outlived the stop grace period; killing them");
            signal_children(&processes, nix::sys::signal::Signal::SIGKILL);
        }
    }
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Signals every process in the sandbox (as PID 1) or every process group
/// the guest started (as an ordinary process).
fn signal_children(processes: &hutch_guest::process::Processes, sig: nix::sys::signal::Signal) {
    if std::process::id() == 1 {
        // As PID 1 of a PID namespace, kill(-1) reaches every other process in it.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), sig);
    } else {
        processes.signal_all(sig);
    }
}
