//! `process.Process`: starting, watching and steering the processes of a
//! sandbox, as E2B's envd does (shared/protocols/e2b.md §2).
//!
//! The flow of one process:
//! 1. `Start` validates the request into a `StartSpec` (`spec`), reserves the
//!    tag, and spawns through the reaper (`spawn`): own session and process
//!    group, the user's credentials, pipes or a PTY (`pty`).
//! 2. The process enters the registry (by pid; tag unique among running
//!    processes), and the Start stream becomes its first subscriber, whose
//!    first event is `start{pid}`.
//! 3. A pump task moves output to subscribers with back-pressure (`output`);
//!    `Connect` adds subscribers, `SendInput`/`StreamInput`/`CloseStdin`
//!    write its stdin or PTY, `Update` resizes the PTY, `SendSignal` signals
//!    its process group.
//! 4. When the reaper reports the exit, the pump drains the pipes, removes
//!    the process from the registry and sends `end` (`exit`) to every
//!    subscriber; from then on its pid is not_found.
//!
//! Signals go to the process group by the pid we spawned, through
//! [`Reaper::kill_group`]: the pid stays ours until our own reaper reaps it,
//! and that check and the `kill` happen under the reaper's lock, so a signal
//! never reaches a recycled pid (R13).

mod error;
pub mod exit;
mod fdio;
mod handlers;
mod launch;
mod output;
mod pty;
mod spawn;
pub mod spec;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{Router, routing::post};
use hutch_envd::process::{
    ProcessConfig, ProcessInfo, ProcessSelector, process_input::Input as InputData,
    process_selector::Selector,
};
use nix::sys::signal::Signal;

pub use error::ProcessError;
use fdio::Fd;
use output::{OutputIo, PumpArgs, Subscriber};
use spawn::SpawnedIo;
use spec::{PtySize, StartSpec};

use crate::{Config, GuestState, reaper::Reaper};

/// The receiving end of a subscriber's events.
type EventRx = tokio::sync::mpsc::Receiver<hutch_envd::process::ProcessEvent>;

/// Processes tracked at once (running, or ended and not yet reported).
pub const MAX_PROCESSES: usize = 1024;

/// Every process started through the API, by pid.
pub struct Processes {
    config: Arc<Config>,
    reaper: Reaper,
    /// PATH given to processes: the guest's own, else a default.
    path: String,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_pid: HashMap<u32, Arc<Proc>>,
    /// Tags of processes being started (not yet in `by_pid`).
    reserved_tags: HashSet<String>,
    starting: usize,
    next_id: u64,
}

impl Table {
    fn tag_in_use(&self, tag: &str) -> bool {
        self.reserved_tags.contains(tag)
            || self.by_pid.values().any(|p| p.tag.as_deref() == Some(tag))
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// Where input to a process goes.
enum Input {
    Pipe {
        enabled: bool,
        /// `None` once closed (or never opened).
        stdin: Mutex<Option<Arc<Fd>>>,
        /// Serialises writers so concurrent messages do not interleave.
        write: tokio::sync::Mutex<()>,
    },
    Pty(Arc<Fd>),
}

/// One tracked process.
pub struct Proc {
    /// Unique for the guest's lifetime (pids are reused).
    id: u64,
    pid: u32,
    tag: Option<String>,
    config: ProcessConfig,
    input: Input,
    subscribers: Mutex<Vec<Subscriber>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proc {
    fn subscribers_snapshot(&self) -> Vec<Subscriber> {
        lock(&self.subscribers).clone()
    }

    fn remove_subscriber(&self, id: u64) {
        lock(&self.subscribers).retain(|s| s.id != id);
    }

    fn info(&self) -> ProcessInfo {
        ProcessInfo {
            config: Some(self.config.clone()),
            pid: self.pid,
            tag: self.tag.clone(),
        }
    }

    fn close_stdin(&self) {
        if let Input::Pipe { stdin, .. } = &self.input {
            lock(stdin).take();
        }
    }
}

impl Processes {
    pub fn new(config: Arc<Config>, reaper: Reaper) -> Self {
        let path = std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| spec::DEFAULT_PATH.into());
        Processes {
            config,
            reaper,
            path,
            table: Mutex::default(),
        }
    }

    /// Sends `sig` to every process group we started.
    pub fn signal_all(&self, sig: Signal) {
        let pids: Vec<u32> = lock(&self.table).by_pid.keys().copied().collect();
        for pid in pids {
            self.kill(pid, sig);
        }
    }

    /// Signals the group of `pid` if the reaper has not reaped it yet.
    fn kill(&self, pid: u32, sig: Signal) {
        if let Err(e) = self.reaper.kill_group(pid, sig) {
            tracing::warn!(pid, error = %e, "signalling a process group");
        }
    }

    /// Running processes, as `List` returns them.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut all: Vec<ProcessInfo> = lock(&self.table)
            .by_pid
            .values()
            .map(|p| p.info())
            .collect();
        all.sort_by_key(|p| p.pid);
        all
    }

    /// The process a selector names.
    fn find(&self, selector: Option<&ProcessSelector>) -> Result<Arc<Proc>, ProcessError> {
        let table = lock(&self.table);
        Self::find_in(&table, selector)
    }

    fn find_in(
        table: &Table,
        selector: Option<&ProcessSelector>,
    ) -> Result<Arc<Proc>, ProcessError> {
        match selector.and_then(|s| s.selector.as_ref()) {
            Some(Selector::Pid(pid)) => table
                .by_pid
                .get(pid)
                .cloned()
                .ok_or(ProcessError::PidNotFound(*pid)),
            Some(Selector::Tag(tag)) => table
                .by_pid
                .values()
                .find(|p| p.tag.as_deref() == Some(tag.as_str()))
                .cloned()
                .ok_or_else(|| ProcessError::TagNotFound(tag.clone())),
            None => Err(ProcessError::invalid(
                "process selector (pid or tag) is required",
            )),
        }
    }

    /// Starts a validated command (flow steps 1–3); returns its pid and the
    /// receiver of its events, which holds `start{pid}` already.
    ///
    /// Runs as a task of its own: a client that disconnects mid-start drops
    /// the handler, but never a half-registered process.
    pub(crate) async fn start(
        self: &Arc<Self>,
        spec: StartSpec,
    ) -> Result<(u32, EventRx), ProcessError> {
        let this = self.clone();
        match tokio::spawn(async move { this.start_inner(spec).await }).await {
            Ok(r) => r,
            Err(e) => Err(ProcessError::internal(
                "starting a process",
                std::io::Error::other(e),
            )),
        }
    }

    async fn start_inner(self: Arc<Self>, spec: StartSpec) -> Result<(u32, EventRx), ProcessError> {
        {
            let mut table = lock(&self.table);
            if table.by_pid.len() + table.starting >= MAX_PROCESSES {
                return Err(ProcessError::Exhausted(format!(
                    "too many processes: at most {MAX_PROCESSES} at once"
                )));
            }
            if let Some(tag) = &spec.tag {
                if table.tag_in_use(tag) {
                    return Err(ProcessError::TagTaken(tag.clone()));
                }
                table.reserved_tags.insert(tag.clone());
            }
            table.starting += 1;
        }
        let spec = Arc::new(spec);
        let spawned = {
            let (spec, reaper, root) = (
                spec.clone(),
                self.reaper.clone(),
                self.config.cgroup_root.clone(),
            );
            tokio::task::spawn_blocking(move || spawn::spawn(&spec, &reaper, &root)).await
        };
        let unreserve = |table: &mut Table| {
            table.starting -= 1;
            if let Some(tag) = &spec.tag {
                table.reserved_tags.remove(tag);
            }
        };
        let spawned = match spawned {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                unreserve(&mut lock(&self.table));
                return Err(e);
            }
            Err(join) => {
                unreserve(&mut lock(&self.table));
                return Err(ProcessError::internal(
                    "spawning a process",
                    std::io::Error::other(join),
                ));
            }
        };
        let pid = spawned.pid;

        // From here the process runs: failures must not lose track of it.
        let fd = |fd| {
            Fd::new(fd).map_err(|e| ProcessError::internal("registering a process's pipes", e))
        };
        let io = match spawned.io {
            SpawnedIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let stdin = stdin.map(fd).transpose();
                let out = fd(stdout).and_then(|o| Ok((o, fd(stderr)?)));
                match (stdin, out) {
                    (Ok(stdin), Ok((stdout, stderr))) => (
                        Input::Pipe {
                            enabled: spec.stdin,
                            stdin: Mutex::new(stdin.map(Arc::new)),
                            write: tokio::sync::Mutex::new(()),
                        },
                        OutputIo::Pipes { stdout, stderr },
                    ),
                    (Err(e), _) | (_, Err(e)) => return Err(self.abandon(pid, &spec, e)),
                }
            }
            SpawnedIo::Pty { master } => match fd(master) {
                Ok(m) => {
                    let m = Arc::new(m);
                    (Input::Pty(m.clone()), OutputIo::Pty(m))
                }
                Err(e) => return Err(self.abandon(pid, &spec, e)),
            },
        };
        let (input, output) = io;

        let (proc, rx) = {
            let mut table = lock(&self.table);
            unreserve(&mut table);
            let id = table.next_id();
            let (sub, rx) = output::new_subscriber(table.next_id(), pid);
            let proc = Arc::new(Proc {
                id,
                pid,
                tag: spec.tag.clone(),
                config: spec.config.clone(),
                input,
                subscribers: Mutex::new(vec![sub]),
            });
            // A stale entry with this pid was reaped already (the pid was
            // reused); its pump will see the entry is no longer its own.
            table.by_pid.insert(pid, proc.clone());
            (proc, rx)
        };
        let args = PumpArgs {
            io: output,
            exit: spawned.exit,
            chunk: output::chunk_size(self.config.max_output_buffer),
            oom_kills_before: spawned.oom_kills_before,
            timeout: spec.timeout,
        };
        tokio::spawn(output::pump(self.clone(), proc, args));
        Ok((pid, rx))
    }

    /// A process started but cannot be tracked: kill it (the reaper still
    /// reaps it) and report the error.
    fn abandon(&self, pid: u32, spec: &StartSpec, e: ProcessError) -> ProcessError {
        self.kill(pid, Signal::SIGKILL);
        let mut table = lock(&self.table);
        table.starting -= 1;
        if let Some(tag) = &spec.tag {
            table.reserved_tags.remove(tag);
        }
        e
    }

    /// Attaches a new subscriber to a running process (`Connect`).
    pub(crate) fn attach(
        &self,
        selector: Option<&ProcessSelector>,
    ) -> Result<(u32, EventRx), ProcessError> {
        let mut table = lock(&self.table);
        let proc = Self::find_in(&table, selector)?;
        let id = table.next_id();
        let mut subs = lock(&proc.subscribers);
        if subs.len() >= output::MAX_SUBSCRIBERS {
            return Err(ProcessError::Exhausted(format!(
                "process {} already has {} connected streams",
                proc.pid,
                output::MAX_SUBSCRIBERS
            )));
        }
        let (sub, rx) = output::new_subscriber(id, proc.pid);
        subs.push(sub);
        Ok((proc.pid, rx))
    }

    /// Removes `proc` from the registry (if the entry is still its own) and
    /// returns its subscribers; called once, by its pump.
    fn remove(&self, proc: &Proc) -> Vec<Subscriber> {
        let mut table = lock(&self.table);
        if table.by_pid.get(&proc.pid).is_some_and(|p| p.id == proc.id) {
            table.by_pid.remove(&proc.pid);
        }
        proc.close_stdin();
        std::mem::take(&mut *lock(&proc.subscribers))
    }

    /// Writes input to a process (`SendInput`, `StreamInput`).
    pub(crate) async fn write_input(
        &self,
        proc: &Proc,
        input: Option<InputData>,
    ) -> Result<(), ProcessError> {
        let input =
            input.ok_or_else(|| ProcessError::invalid("input (stdin or pty) is required"))?;
        match (&proc.input, input) {
            (
                Input::Pipe {
                    enabled,
                    stdin,
                    write,
                },
                InputData::Stdin(bytes),
            ) => {
                let _serial = write.lock().await;
                let Some(fd) = lock(stdin).clone() else {
                    return Err(ProcessError::precondition(if *enabled {
                        format!("stdin of process {} is closed", proc.pid)
                    } else {
                        format!(
                            "process {} was started without stdin (start it with stdin: true)",
                            proc.pid
                        )
                    }));
                };
                fd.write_all(&bytes)
                    .await
                    .map_err(|e| write_error(proc.pid, "stdin", e))
            }
            (Input::Pty(master), InputData::Pty(bytes)) => master
                .write_all(&bytes)
                .await
                .map_err(|e| write_error(proc.pid, "terminal", e)),
            (Input::Pty(_), InputData::Stdin(_)) => Err(ProcessError::precondition(format!(
                "process {} has a PTY: send input as `pty`, not `stdin`",
                proc.pid
            ))),
            (Input::Pipe { .. }, InputData::Pty(_)) => Err(ProcessError::precondition(format!(
                "process {} has no PTY: send input as `stdin`, not `pty`",
                proc.pid
            ))),
        }
    }

    pub(crate) async fn send_input(
        &self,
        selector: Option<&ProcessSelector>,
        input: Option<InputData>,
    ) -> Result<(), ProcessError> {
        let proc = self.find(selector)?;
        self.write_input(&proc, input).await
    }

    /// `CloseStdin`: EOF on a pipe stdin; idempotent, as envd's.
    pub(crate) fn close_stdin(
        &self,
        selector: Option<&ProcessSelector>,
    ) -> Result<(), ProcessError> {
        let proc = self.find(selector)?;
        if let Input::Pty(_) = proc.input {
            return Err(ProcessError::precondition(format!(
                "process {} has a PTY: send Ctrl-D (0x04) as pty input instead of closing stdin",
                proc.pid
            )));
        }
        proc.close_stdin();
        Ok(())
    }

    /// `SendSignal`: SIGTERM or SIGKILL to the process group.
    pub(crate) fn send_signal(
        &self,
        selector: Option<&ProcessSelector>,
        signal: i32,
    ) -> Result<(), ProcessError> {
        use hutch_envd::process::Signal as Wire;
        let sig = match Wire::try_from(signal) {
            Ok(Wire::Sigterm) => Signal::SIGTERM,
            Ok(Wire::Sigkill) => Signal::SIGKILL,
            _ => {
                return Err(ProcessError::invalid(format!(
                    "signal {signal} is not supported: send SIGNAL_SIGTERM or SIGNAL_SIGKILL"
                )));
            }
        };
        let proc = self.find(selector)?;
        self.reaper
            .kill_group(proc.pid, sig)
            .map_err(|e| ProcessError::internal("signalling a process group", e))?;
        Ok(())
    }

    /// `Update`: resizes the PTY (no size: nothing to do).
    pub(crate) fn resize(
        &self,
        selector: Option<&ProcessSelector>,
        size: Option<PtySize>,
    ) -> Result<(), ProcessError> {
        let proc = self.find(selector)?;
        let Input::Pty(master) = &proc.input else {
            return Err(ProcessError::precondition(format!(
                "process {} has no PTY to resize",
                proc.pid
            )));
        };
        let Some(size) = size else { return Ok(()) };
        pty::resize(&**master, size).map_err(|e| ProcessError::internal("resizing a terminal", e))
    }
}

fn write_error(pid: u32, what: &str, e: std::io::Error) -> ProcessError {
    match e.raw_os_error() {
        Some(libc::EPIPE) | Some(libc::EIO) => {
            ProcessError::precondition(format!("process {pid} no longer reads its {what}"))
        }
        _ => ProcessError::internal("writing process input", e),
    }
}

/// The `process.Process` routes.
pub fn routes() -> Router<GuestState> {
    Router::new()
        .route("/process.Process/List", post(handlers::list))
        .route("/process.Process/Connect", post(handlers::connect))
        .route("/process.Process/Start", post(handlers::start))
        .route("/process.Process/Update", post(handlers::update))
        .route("/process.Process/StreamInput", post(handlers::stream_input))
        .route("/process.Process/SendInput", post(handlers::send_input))
        .route("/process.Process/SendSignal", post(handlers::send_signal))
        .route("/process.Process/CloseStdin", post(handlers::close_stdin))
}
