//! The crun and runc backends: both drive an OCI runtime CLI the same way (`--root <state dir>`,
//! `create`/`start`/`state`/`kill`/`delete`/`list`/`run`), so they share [`CliDriver`] and differ
//! only in their quirks.
//!
//! # crun on a hybrid cgroup host
//!
//! crun 1.8 refuses to run when the hybrid cgroup2 mount (`/sys/fs/cgroup/unified`) holds a
//! controller (MACHINE-NOTES). When [`CgroupFs::hybrid_v2_controllers`] is non-empty, each crun
//! invocation is made in a private mount namespace in which that mount is detached. The child
//! does it itself between `fork` and `exec` (`unshare(CLONE_NEWNS)`, mark `/` recursively slave
//! so nothing propagates back to the host, `umount2(MNT_DETACH)`), three system calls and no
//! extra program. Measured here (median of 30 `run_to_exit` of `/bin/true` with the full
//! sandbox bundle, `tests/system.rs::measure_run_latency`): crun with this launch 51 ms, crun
//! through the `unshare -m sh -c 'umount … && exec crun'` wrapper 80 ms, runc 78 ms. Hosts with
//! pure cgroup v2 or no controller in the hybrid mount run crun directly.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hutch_cgroup::CgroupFs;
use hutch_core::Runtime;

use crate::runtime::{
    ContainerInfo, ContainerIo, ContainerStatus, OciRuntime, RuntimeError, Signal, validate_id,
};

/// Longest runtime error text kept in an error.
const MAX_DETAIL: usize = 2048;

/// How a runtime binary must be started on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Exec the binary as is.
    Direct,
    /// Exec it in a private mount namespace with this hybrid cgroup2 mount detached.
    DetachHybridCgroup2(PathBuf),
}

/// Runs one OCI runtime binary with a fixed `--root`.
#[derive(Debug, Clone)]
pub struct CliDriver {
    kind: Runtime,
    binary: PathBuf,
    root: PathBuf,
    invocation: Invocation,
}

impl CliDriver {
    fn new(kind: Runtime, binary: PathBuf, root: PathBuf, invocation: Invocation) -> Self {
        Self {
            kind,
            binary,
            root,
            invocation,
        }
    }

    pub fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    fn command(&self) -> Result<Command, RuntimeError> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        if self.kind == Runtime::Crun {
            cmd.arg("--cgroup-manager=cgroupfs");
        }
        cmd.stdin(Stdio::null());
        if let Invocation::DetachHybridCgroup2(mount) = &self.invocation {
            let target =
                CString::new(mount.as_os_str().as_bytes()).map_err(|_| RuntimeError::Io {
                    op: "hybrid cgroup2 mount path",
                    path: mount.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                })?;
            // SAFETY: the closure runs in the forked child before exec. It only makes three
            // system calls through rustix on a CString allocated before the fork (no allocation,
            // no lock, async-signal-safe), and only changes the child's own mount namespace.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    use rustix::mount::{MountPropagationFlags, UnmountFlags};
                    // SAFETY: CLONE_NEWNS alone only gives this single-threaded child its own
                    // copy of the mount table; it invalidates no memory or file descriptor.
                    rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)?;
                    rustix::mount::mount_change(
                        c"/",
                        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
                    )?;
                    rustix::mount::unmount(target.as_c_str(), UnmountFlags::DETACH)?;
                    Ok(())
                });
            }
        }
        Ok(cmd)
    }

    fn spawn_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
        move |source| RuntimeError::Spawn {
            op,
            binary: self.binary.clone(),
            source,
        }
    }

    fn failure(&self, op: &'static str, id: &str, status: String, detail: String) -> RuntimeError {
        let not_found = detail.contains("does not exist")
            || (detail.contains("No such file or directory")
                && detail.contains(&format!("{}/{id}", self.root.display())));
        if not_found && !id.is_empty() {
            return RuntimeError::NotFound {
                runtime: self.kind,
                op,
                id: id.to_owned(),
            };
        }
        RuntimeError::Failed {
            runtime: self.kind,
            op,
            id: id.to_owned(),
            status,
            detail,
        }
    }

    /// Runs a short command with piped output, failing on a non-zero exit.
    fn output(&self, op: &'static str, id: &str, args: &[&str]) -> Result<Output, RuntimeError> {
        let mut cmd = self.command()?;
        cmd.args(args);
        let out = cmd.output().map_err(self.spawn_err(op))?;
        if out.status.success() {
            Ok(out)
        } else {
            let detail = bounded(&String::from_utf8_lossy(&out.stderr));
            Err(self.failure(op, id, out.status.to_string(), detail))
        }
    }

    /// The runtime process's (and so the container init's) stdin, stdout and stderr.
    fn open_io(&self, io: &ContainerIo) -> Result<(Stdio, Stdio, Stdio), RuntimeError> {
        match io {
            ContainerIo::Null => Ok((Stdio::null(), Stdio::null(), Stdio::null())),
            ContainerIo::LogFile(path) => {
                let f = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| RuntimeError::Io {
                        op: "open container log",
                        path: path.clone(),
                        source,
                    })?;
                let f2 = f.try_clone().map_err(|source| RuntimeError::Io {
                    op: "dup container log",
                    path: path.clone(),
                    source,
                })?;
                Ok((Stdio::null(), f.into(), f2.into()))
            }
            ContainerIo::Pipe(writer) => {
                let io_err = |op| {
                    move |source: std::io::Error| RuntimeError::Io {
                        op,
                        path: PathBuf::from("pipe"),
                        source,
                    }
                };
                // Close-on-exec until `Command` puts them on 0, 1 and 2 of the child only.
                let (stdin, input_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .map_err(|e| io_err("create the stdin pipe")(e.into()))?;
                drop(input_end);
                let out = writer.try_clone().map_err(io_err("dup the output pipe"))?;
                let err = writer.try_clone().map_err(io_err("dup the output pipe"))?;
                Ok((stdin.into(), out.into(), err.into()))
            }
        }
    }

    /// The runtime's own log for a container: `<bundle>/runtime.log`.
    fn runtime_log(bundle: &Path) -> PathBuf {
        bundle.join("runtime.log")
    }

    fn create(
        &self,
        id: &str,
        bundle: &Path,
        io: &ContainerIo,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), RuntimeError> {
        self.spawn_container("create", &["create"], id, bundle, io, fds)
    }

    /// `run --detach`: create and start in one runtime process, which saves
    /// a whole runtime start-up (and, for crun here, its mount-namespace
    /// workaround) per sandbox against `create` then `start`.
    fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        io: &ContainerIo,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), RuntimeError> {
        self.spawn_container("run", &["run", "--detach"], id, bundle, io, fds)
    }

    fn spawn_container(
        &self,
        op: &'static str,
        subcommand: &[&str],
        id: &str,
        bundle: &Path,
        io: &ContainerIo,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let (stdin, stdout, stderr) = self.open_io(io)?;
        let log = Self::runtime_log(bundle);
        let log_offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command()?;
        cmd.arg("--log").arg(&log);
        cmd.args(subcommand);
        if !fds.is_empty() {
            cmd.arg("--preserve-fds").arg(fds.len().to_string());
            preserve_fds(&mut cmd, fds).map_err(|source| RuntimeError::Io {
                op: "preserve fds",
                path: bundle.to_path_buf(),
                source,
            })?;
        }
        if let Some(nofile) = nofile_annotation(bundle)? {
            limit_nofile(&mut cmd, nofile);
        }
        cmd.arg("--bundle").arg(bundle).arg(id);
        // The container's init inherits the runtime's stdio: files or a pipe its caller
        // drains, never a terminal.
        cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        let status = cmd.status().map_err(self.spawn_err(op))?;
        if status.success() {
            return Ok(());
        }
        Err(self.failure(op, id, status.to_string(), read_tail(&log, log_offset)))
    }

    fn run_to_exit(
        &self,
        rt: &dyn OciRuntime,
        id: &str,
        bundle: &Path,
        io: &ContainerIo,
        timeout: Duration,
    ) -> Result<i32, RuntimeError> {
        validate_id(id)?;
        let (stdin, stdout, stderr) = self.open_io(io)?;
        let log = Self::runtime_log(bundle);
        let log_offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command()?;
        cmd.arg("--log").arg(&log);
        cmd.arg("run").arg("--bundle").arg(bundle).arg(id);
        cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        let mut child = cmd.spawn().map_err(self.spawn_err("run"))?;
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() > timeout => {
                    let _ = rt.kill(id, Signal::KILL, true);
                    let _ = child.wait();
                    let _ = rt.delete(id, true);
                    return Err(RuntimeError::Failed {
                        runtime: self.kind,
                        op: "run",
                        id: id.to_owned(),
                        status: format!("timed out after {timeout:?}"),
                        detail: String::new(),
                    });
                }
                Ok(None) => thread::sleep(Duration::from_millis(2)),
                Err(source) => {
                    return Err(RuntimeError::Spawn {
                        op: "wait for run",
                        binary: self.binary.clone(),
                        source,
                    });
                }
            }
        };
        // `run` removes the container when its process exits; make sure of it.
        match rt.delete(id, true) {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        match (status.code(), status.signal()) {
            (Some(code), _) => {
                // A non-zero exit with something new in the runtime's own log means the
                // runtime failed (before or around the process), not the process: say why.
                let detail = read_tail(&log, log_offset);
                if code != 0 && !detail.is_empty() {
                    return Err(self.failure("run", id, status.to_string(), detail));
                }
                Ok(code)
            }
            (None, Some(sig)) => Ok(128 + sig),
            (None, None) => Err(RuntimeError::Parse {
                runtime: self.kind,
                op: "run",
                reason: format!("exit status {status}"),
            }),
        }
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        self.output("start", id, &["start", id]).map(drop)
    }

    /// `exec` through the runtime, output discarded; the exit code (128 +
    /// signal when a signal ended it).
    fn exec(&self, id: &str, args: &[&str]) -> Result<i32, RuntimeError> {
        use std::os::unix::process::ExitStatusExt;
        validate_id(id)?;
        let mut cmd = self.command()?;
        cmd.arg("exec").arg(id).args(args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let status = cmd.status().map_err(self.spawn_err("exec"))?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    fn state(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        validate_id(id)?;
        let out = self.output("state", id, &["state", id])?;
        let raw: RawState =
            serde_json::from_slice(&out.stdout).map_err(|e| self.parse_err("state", e))?;
        raw.into_info(self.kind, "state")
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let sig = signal.0.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        self.output("kill", id, &args).map(drop)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        match self.output("delete", id, &args) {
            Ok(_) => Ok(()),
            // runc treats a forced delete of a missing container as done; crun does not.
            Err(RuntimeError::NotFound { .. }) if force => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let args: &[&str] = match self.kind {
            Runtime::Crun => &["list", "--format=json"],
            _ => &["list", "--format", "json"],
        };
        let out = self.output("list", "", args)?;
        // runc prints `null` when there is no container.
        let raw: Option<Vec<RawState>> =
            serde_json::from_slice(&out.stdout).map_err(|e| self.parse_err("list", e))?;
        raw.unwrap_or_default()
            .into_iter()
            .map(|r| r.into_info(self.kind, "list"))
            .collect()
    }

    fn parse_err(&self, op: &'static str, e: serde_json::Error) -> RuntimeError {
        RuntimeError::Parse {
            runtime: self.kind,
            op,
            reason: e.to_string(),
        }
    }
}

/// The fields of `state`/`list` JSON both runtimes print.
#[derive(serde::Deserialize)]
struct RawState {
    id: String,
    status: String,
    #[serde(default)]
    pid: i32,
    #[serde(default)]
    bundle: PathBuf,
}

impl RawState {
    fn into_info(self, runtime: Runtime, op: &'static str) -> Result<ContainerInfo, RuntimeError> {
        let status = ContainerStatus::parse(&self.status).ok_or_else(|| RuntimeError::Parse {
            runtime,
            op,
            reason: format!("unknown status {:?}", self.status),
        })?;
        let pid = (self.pid > 0 && status != ContainerStatus::Stopped).then_some(self.pid);
        Ok(ContainerInfo {
            id: self.id,
            status,
            pid,
            bundle: self.bundle,
        })
    }
}

/// The RLIMIT_NOFILE a bundle asks to be set on the runtime's process
/// ([`crate::bundle::NOFILE_ANNOTATION`], written with a user namespace), if any.
fn nofile_annotation(bundle: &Path) -> Result<Option<u64>, RuntimeError> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let path = bundle.join("config.json");
    let text = fs::read(&path).map_err(|source| RuntimeError::Io {
        op: "read the bundle's config",
        path: path.clone(),
        source,
    })?;
    let config: Config = serde_json::from_slice(&text).map_err(|e| RuntimeError::Io {
        op: "parse the bundle's config",
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    config
        .annotations
        .get(crate::bundle::NOFILE_ANNOTATION)
        .map(|v| {
            v.parse().map_err(|_| RuntimeError::Io {
                op: "parse the file limit annotation of",
                path: path.clone(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidData),
            })
        })
        .transpose()
}

/// Sets RLIMIT_NOFILE (soft and hard) to `n` on the process `cmd` starts, which the
/// container's process inherits.
fn limit_nofile(cmd: &mut Command, n: u64) {
    // SAFETY: the closure runs in the forked child before exec and only makes the setrlimit
    // system call with values copied before the fork (no allocation, no lock).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(n),
                    maximum: Some(n),
                },
            )
            .map_err(std::io::Error::from)
        });
    }
}

/// Makes `fds` descriptors 3, 4, ... of the runtime process `cmd` will start (both runtimes
/// pass `--preserve-fds N` descriptors from 3 on to the container's process).
///
/// In the child, between `fork` and `exec`: each source is first duplicated above the target
/// range (close-on-exec), so a source that already sits at a target number cannot be clobbered
/// by another's `dup2`; then `dup2` puts each copy at its target, which clears close-on-exec on
/// the target only. The temporary copies close at `exec`.
fn preserve_fds(cmd: &mut Command, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, RawFd};
    if fds.len() > crate::runtime::MAX_PRESERVED_FDS {
        return Err(std::io::Error::other(format!(
            "at most {} descriptors can be preserved",
            crate::runtime::MAX_PRESERVED_FDS
        )));
    }
    let n = fds.len();
    let mut sources: [RawFd; crate::runtime::MAX_PRESERVED_FDS] =
        [-1; crate::runtime::MAX_PRESERVED_FDS];
    for (slot, fd) in sources.iter_mut().zip(fds) {
        *slot = fd.as_raw_fd();
    }
    // Descriptor numbers are small non-negative ints; n <= 8.
    let first_free = 3 + n as RawFd;
    // SAFETY: the closure runs in the forked child before exec. It only calls `fcntl` and
    // `dup2` on descriptor numbers copied into a fixed array before the fork (no allocation,
    // no lock, async-signal-safe). The sources stay open in the parent until the child has been
    // spawned because the caller's borrows outlive `cmd.status()`.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            let mut copies: [RawFd; crate::runtime::MAX_PRESERVED_FDS] =
                [-1; crate::runtime::MAX_PRESERVED_FDS];
            for i in 0..n {
                // SAFETY: F_DUPFD_CLOEXEC on an open descriptor only allocates a new number.
                let c = libc::fcntl(sources[i], libc::F_DUPFD_CLOEXEC, first_free);
                if c < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                copies[i] = c;
            }
            for (i, &c) in copies.iter().enumerate().take(n) {
                // SAFETY: dup2 onto 3 + i replaces whatever the child had there (the parent's
                // close-on-exec descriptors only); the new descriptor is inheritable.
                if libc::dup2(c, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

fn bounded(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX_DETAIL {
        return s.to_owned();
    }
    let mut start = s.len() - MAX_DETAIL;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// What a runtime appended to its log since `offset`, bounded.
fn read_tail(path: &Path, offset: u64) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(64 * 1024).read_to_end(&mut buf);
    bounded(&String::from_utf8_lossy(&buf))
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn resolve_binary(kind: Runtime, binary: Option<PathBuf>) -> Result<PathBuf, RuntimeError> {
    binary
        .or_else(|| find_binary(kind.as_str()))
        .filter(|p| p.is_file())
        .ok_or_else(|| RuntimeError::Unavailable {
            runtime: kind,
            reason: format!("`{}` binary not found in PATH", kind.as_str()),
        })
}

fn create_root(root: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|source| RuntimeError::Io {
            op: "create runtime state root",
            path: root.to_path_buf(),
            source,
        })
}

macro_rules! delegate_runtime {
    ($ty:ty) => {
        impl OciRuntime for $ty {
            fn kind(&self) -> Runtime {
                self.0.kind
            }
            fn state_root(&self) -> &Path {
                &self.0.root
            }
            fn create(
                &self,
                id: &str,
                bundle: &Path,
                io: &ContainerIo,
            ) -> Result<(), RuntimeError> {
                self.0.create(id, bundle, io, &[])
            }
            fn create_with_fds(
                &self,
                id: &str,
                bundle: &Path,
                io: &ContainerIo,
                fds: &[BorrowedFd<'_>],
            ) -> Result<(), RuntimeError> {
                self.0.create(id, bundle, io, fds)
            }
            fn start(&self, id: &str) -> Result<(), RuntimeError> {
                self.0.start(id)
            }
            fn run_detached_with_fds(
                &self,
                id: &str,
                bundle: &Path,
                io: &ContainerIo,
                fds: &[BorrowedFd<'_>],
            ) -> Result<(), RuntimeError> {
                self.0.run_detached(id, bundle, io, fds)
            }
            fn exec(&self, id: &str, args: &[&str]) -> Result<i32, RuntimeError> {
                self.0.exec(id, args)
            }
            fn run_to_exit(
                &self,
                id: &str,
                bundle: &Path,
                io: &ContainerIo,
                timeout: Duration,
            ) -> Result<i32, RuntimeError> {
                self.0.run_to_exit(self, id, bundle, io, timeout)
            }
            fn state(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
                self.0.state(id)
            }
            fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
                self.0.kill(id, signal, all)
            }
            fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
                self.0.delete(id, force)
            }
            fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
                self.0.list()
            }
        }
    };
}

/// The crun backend (the default).
#[derive(Debug, Clone)]
pub struct Crun(CliDriver);

impl Crun {
    /// crun from `binary` (or `PATH`) with its state under `root`. `cgroups` decides whether
    /// the hybrid-layout workaround is needed.
    pub fn new(
        binary: Option<PathBuf>,
        root: impl Into<PathBuf>,
        cgroups: &CgroupFs,
    ) -> Result<Self, RuntimeError> {
        let binary = resolve_binary(Runtime::Crun, binary)?;
        let root = root.into();
        create_root(&root)?;
        let invocation = crun_invocation(cgroups).map_err(|e| RuntimeError::Unavailable {
            runtime: Runtime::Crun,
            reason: format!("cannot read cgroup layout: {e}"),
        })?;
        Ok(Self(CliDriver::new(
            Runtime::Crun,
            binary,
            root,
            invocation,
        )))
    }

    /// Like [`Crun::new`] with an explicit invocation (benchmarks compare them).
    pub fn with_invocation(
        binary: Option<PathBuf>,
        root: impl Into<PathBuf>,
        invocation: Invocation,
    ) -> Result<Self, RuntimeError> {
        let binary = resolve_binary(Runtime::Crun, binary)?;
        let root = root.into();
        create_root(&root)?;
        Ok(Self(CliDriver::new(
            Runtime::Crun,
            binary,
            root,
            invocation,
        )))
    }

    pub fn invocation(&self) -> &Invocation {
        self.0.invocation()
    }
}

/// How crun must be invoked on a host with this cgroup layout.
pub fn crun_invocation(cgroups: &CgroupFs) -> Result<Invocation, hutch_cgroup::CgroupError> {
    match cgroups.layout() {
        hutch_cgroup::Layout::V1 {
            unified: Some(dir), ..
        } if !cgroups.hybrid_v2_controllers()?.is_empty() => {
            Ok(Invocation::DetachHybridCgroup2(cgroups.root().join(dir)))
        }
        _ => Ok(Invocation::Direct),
    }
}

delegate_runtime!(Crun);

/// The runc backend.
#[derive(Debug, Clone)]
pub struct Runc(CliDriver);

impl Runc {
    /// runc from `binary` (or `PATH`) with its state under `root`.
    pub fn new(binary: Option<PathBuf>, root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let binary = resolve_binary(Runtime::Runc, binary)?;
        let root = root.into();
        create_root(&root)?;
        Ok(Self(CliDriver::new(
            Runtime::Runc,
            binary,
            root,
            Invocation::Direct,
        )))
    }
}

delegate_runtime!(Runc);

/// crun when its binary runs here, else runc when its binary runs, else `None`. On a hybrid
/// cgroup host crun is usable through the launch workaround, so it stays the default.
pub fn default_for_host() -> Option<Runtime> {
    [Runtime::Crun, Runtime::Runc].into_iter().find(|k| {
        find_binary(k.as_str()).is_some_and(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    })
}

/// Opens `runtime`'s backend with its state under `root`.
pub fn open(
    runtime: Runtime,
    root: impl Into<PathBuf>,
    cgroups: &CgroupFs,
) -> Result<Box<dyn OciRuntime>, RuntimeError> {
    match runtime {
        Runtime::Crun => Ok(Box::new(Crun::new(None, root, cgroups)?)),
        Runtime::Runc => Ok(Box::new(Runc::new(None, root)?)),
        Runtime::Runsc => Err(RuntimeError::Unavailable {
            runtime,
            reason: "the runsc backend is not implemented yet".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_stopped_has_no_pid() {
        let raw: RawState = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","id":"a1","pid":0,"status":"stopped","bundle":"/b","rootfs":"/b/r","created":"x","owner":""}"#,
        )
        .expect("json");
        let info = raw.into_info(Runtime::Runc, "state").expect("info");
        assert_eq!(info.status, ContainerStatus::Stopped);
        assert_eq!(info.pid, None);
        let raw: RawState =
            serde_json::from_str(r#"{"id":"a1","pid":42,"status":"running","bundle":"/b"}"#)
                .expect("json");
        assert_eq!(
            raw.into_info(Runtime::Crun, "state").expect("info").pid,
            Some(42)
        );
        let raw: RawState =
            serde_json::from_str(r#"{"id":"a1","pid":1,"status":"zombie"}"#).expect("json");
        assert!(raw.into_info(Runtime::Crun, "state").is_err());
    }

    #[test]
    fn runc_null_list_is_empty() {
        let raw: Option<Vec<RawState>> = serde_json::from_str("null").expect("json");
        assert!(raw.unwrap_or_default().is_empty());
    }

    #[test]
    fn not_found_is_recognised_for_both_runtimes() {
        let d = CliDriver::new(
            Runtime::Crun,
            "/usr/bin/crun".into(),
            "/run/hutch/crun".into(),
            Invocation::Direct,
        );
        let e = d.failure(
            "state",
            "abc",
            "1".into(),
            "error opening file `/run/hutch/crun/abc/status`: No such file or directory".into(),
        );
        assert!(matches!(e, RuntimeError::NotFound { .. }), "{e}");
        let e = d.failure(
            "state",
            "abc",
            "1".into(),
            "container does not exist".into(),
        );
        assert!(matches!(e, RuntimeError::NotFound { .. }), "{e}");
        let e = d.failure(
            "create",
            "abc",
            "1".into(),
            "mount: Permission denied".into(),
        );
        assert!(matches!(e, RuntimeError::Failed { .. }), "{e}");
    }

    #[test]
    fn bounded_keeps_the_end() {
        let long = "x".repeat(5000) + "the cause";
        let b = bounded(&long);
        assert!(b.len() <= MAX_DETAIL + 4);
        assert!(b.ends_with("the cause"));
    }

    #[test]
    fn hybrid_with_controllers_needs_the_workaround() {
        let tmp = tempfile::TempDir::new().expect("tmp");
        for h in ["memory", "pids"] {
            fs::create_dir_all(tmp.path().join(h)).expect("mkdir");
            fs::write(tmp.path().join(h).join("cgroup.procs"), "").expect("write");
        }
        fs::create_dir_all(tmp.path().join("unified")).expect("mkdir");
        fs::write(tmp.path().join("unified/cgroup.controllers"), "hugetlb\n").expect("write");
        let cg = CgroupFs::open(tmp.path()).expect("open");
        assert_eq!(
            crun_invocation(&cg).expect("launch"),
            Invocation::DetachHybridCgroup2(tmp.path().join("unified"))
        );
        fs::write(tmp.path().join("unified/cgroup.controllers"), "").expect("write");
        let cg = CgroupFs::open(tmp.path()).expect("open");
        assert_eq!(crun_invocation(&cg).expect("launch"), Invocation::Direct);
    }
}
