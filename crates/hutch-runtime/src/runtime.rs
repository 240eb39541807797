//! The [`OciRuntime`] trait: one OCI runtime backend (crun, runc; runsc later) driven through its
//! command line.
//!
//! Every method blocks on a child process: call them from `spawn_blocking` or a thread of their
//! own, never directly on an async worker (STYLE.md 8). Nothing here forks without exec.

use std::fmt;
use std::os::fd::BorrowedFd;

use hutch_core::Runtime;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A container's lifecycle status as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl ContainerStatus {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "stopped" => Self::Stopped,
            _ => return None,
        })
    }
}

/// What the runtime knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub status: ContainerStatus,
    /// PID of the container's init in the host's pid namespace; `None` once stopped.
    pub pid: Option<i32>,
    pub bundle: PathBuf,
}

/// Where the container's stdio goes. CRIU needs files or pipes here, never a host terminal
/// (MACHINE-NOTES).
#[derive(Debug, Clone)]
pub enum ContainerIo {
    /// stdin, stdout and stderr `/dev/null`.
    Null,
    /// stdin `/dev/null`; stdout and stderr appended to this file (created 0600). The
    /// container's init then holds a host file: root inside can reach it through
    /// `/proc/<pid>/fd` unless the init is non-dumpable. For tests and the bench; sandboxes
    /// use [`ContainerIo::Pipe`].
    LogFile(PathBuf),
    /// stdout and stderr are this descriptor (the write end of a pipe whose read end the
    /// caller drains); stdin is a pipe whose write end is already closed (end of input at
    /// once). The container's init holds no host file at all.
    Pipe(std::sync::Arc<std::os::fd::OwnedFd>),
}

/// Most descriptors [`OciRuntime::create_with_fds`] passes.
pub const MAX_PRESERVED_FDS: usize = 8;

/// A signal to deliver with [`OciRuntime::kill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

impl Signal {
    pub const KILL: Signal = Signal(libc::SIGKILL);
    pub const TERM: Signal = Signal(libc::SIGTERM);
}

/// Options of a checkpoint (used once a CRIU-enabled runtime is available).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointOptions {
    pub image_dir: PathBuf,
    pub work_dir: PathBuf,
    /// Keep the container running after the dump.
    pub leave_running: bool,
}

/// Errors of a runtime backend, naming the operation, runtime and container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{op}: run {binary}")]
    Spawn {
        op: &'static str,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{runtime} {op} {id}: exit {status}: {detail}")]
    Failed {
        runtime: Runtime,
        op: &'static str,
        id: String,
        status: String,
        /// The runtime's own error text, bounded.
        detail: String,
    },
    #[error("{runtime} {op}: container {id} does not exist")]
    NotFound {
        runtime: Runtime,
        op: &'static str,
        id: String,
    },
    #[error("{runtime} {op}: unexpected output: {reason}")]
    Parse {
        runtime: Runtime,
        op: &'static str,
        reason: String,
    },
    #[error("{runtime} does not support {op} on this host")]
    Unsupported { runtime: Runtime, op: &'static str },
    #[error("{runtime} is not usable here: {reason}")]
    Unavailable { runtime: Runtime, reason: String },
    #[error("invalid container id {id:?}: [a-z0-9] and 1..=64 long")]
    InvalidId { id: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One OCI runtime, driven through its CLI with its state under a root directory of ours.
///
/// Container ids are `[a-z0-9]{1,64}` (Hutch ids). Backends are shaped alike so a shared
/// conformance suite runs against each (`tests/conformance`).
pub trait OciRuntime: Send + Sync + fmt::Debug {
    fn kind(&self) -> Runtime;

    /// The `--root` state directory of this runtime instance.
    fn state_root(&self) -> &Path;

    /// Creates the container from `bundle` (runtime `create`): namespaces, cgroup and mounts
    /// are set up and the process waits for [`OciRuntime::start`].
    fn create(&self, id: &str, bundle: &Path, io: &ContainerIo) -> Result<(), RuntimeError>;

    /// Like [`OciRuntime::create`], also handing `fds` to the container's process as descriptors
    /// 3, 4, ... (the runtimes' `--preserve-fds`), e.g. a listening socket bound by the caller
    /// in a directory the sandbox never sees. At most [`MAX_PRESERVED_FDS`]. The caller keeps
    /// its own copies; close them once this returns.
    fn create_with_fds(
        &self,
        id: &str,
        bundle: &Path,
        io: &ContainerIo,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), RuntimeError> {
        if fds.is_empty() {
            return self.create(id, bundle, io);
        }
        Err(RuntimeError::Unsupported {
            runtime: self.kind(),
            op: "create with preserved fds",
        })
    }

    /// Starts a created container's process.
    fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// Creates and starts a container, returning once its process runs.
    fn run_detached(&self, id: &str, bundle: &Path, io: &ContainerIo) -> Result<(), RuntimeError> {
        self.run_detached_with_fds(id, bundle, io, &[])
    }

    /// [`OciRuntime::run_detached`] with descriptors passed as in [`OciRuntime::create_with_fds`].
    fn run_detached_with_fds(
        &self,
        id: &str,
        bundle: &Path,
        io: &ContainerIo,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), RuntimeError> {
        self.create_with_fds(id, bundle, io, fds)?;
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            return Err(e);
        }
        Ok(())
    }

    /// Runs a container in the foreground until its process exits and returns its exit code
    /// (128 + signal number when killed by a signal). The container is deleted afterwards.
    /// A non-zero exit while the runtime wrote to its own log (`<bundle>/runtime.log`) is
    /// reported as [`RuntimeError::Failed`] with that text.
    fn run_to_exit(
        &self,
        id: &str,
        bundle: &Path,
        io: &ContainerIo,
        timeout: Duration,
    ) -> Result<i32, RuntimeError>;

    fn state(&self, id: &str) -> Result<ContainerInfo, RuntimeError>;

    /// Runs `args` in a running container through the runtime (`exec`), output discarded,
    /// and returns the exit code. Hutch runs commands through the guest; this is the
    /// baseline `make bench` compares that path with.
    fn exec(&self, id: &str, args: &[&str]) -> Result<i32, RuntimeError> {
        let _ = (id, args);
        Err(RuntimeError::Unsupported {
            runtime: self.kind(),
            op: "exec",
        })
    }

    /// Sends `signal` to the container's init, or with `all` to every process in it.
    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError>;

    /// Deletes the container's runtime state. With `force` a running container is killed
    /// first and a missing one is not an error (idempotent); without it a missing container is
    /// [`RuntimeError::NotFound`].
    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError>;

    /// Every container under this runtime's state root.
    fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// PID of the container's init in the host's pid namespace (`None` when stopped).
    fn pid(&self, id: &str) -> Result<Option<i32>, RuntimeError> {
        Ok(self.state(id)?.pid)
    }

    /// Dumps the container with CRIU.
    fn checkpoint(&self, id: &str, _opts: &CheckpointOptions) -> Result<(), RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported {
            runtime: self.kind(),
            op: "checkpoint",
        })
    }

    /// Restores a container dumped with [`OciRuntime::checkpoint`].
    fn restore(
        &self,
        id: &str,
        _bundle: &Path,
        _opts: &CheckpointOptions,
    ) -> Result<(), RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported {
            runtime: self.kind(),
            op: "restore",
        })
    }
}

pub(crate) fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId { id: id.to_owned() })
    }
}
