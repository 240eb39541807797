//! Moving a process's output to its subscribers, with back-pressure instead
//! of buffering (R16).
//!
//! 1. One pump task per process reads stdout and stderr (or the PTY master)
//!    in chunks of at most [`chunk_size`] bytes.
//! 2. Each chunk goes to every subscriber (the Start stream and any Connect
//!    attachers) through that subscriber's channel of capacity 1. The pump
//!    waits while a subscriber is slow; meanwhile it reads nothing, so the
//!    pipe fills and the writing process blocks in `write(2)`.
//! 3. A subscriber's forwarder task moves events from its channel into the
//!    HTTP stream (itself a small bounded channel) and adds `keepalive`
//!    events at the client's interval, so ordering is kept: `start` first
//!    (queued before the forwarder starts, and moved into the HTTP stream
//!    before the response is returned, so it leaves with the headers), `end`
//!    last.
//! 4. With no subscriber (every client disconnected), the pump reads and
//!    drops output, so a background command never hangs on a full pipe;
//!    a disconnect never kills the process (E2B semantics: only
//!    `SendSignal` or the Start call's `Connect-Timeout-Ms` deadline do).
//! 5. When the reaper reports the exit, the pump drains what is left in the
//!    pipes without waiting (the process is dead; a grandchild still holding
//!    the pipe does not delay the end, as with envd's `cmd.Wait`), removes
//!    the process from the registry, and sends `end` to every subscriber.
//!
//! Memory held per process is at most one chunk in the pump plus, per
//! subscriber (at most [`MAX_SUBSCRIBERS`]), one queued and one in-flight
//! event and the HTTP stream's [`crate::rpc::STREAM_CHANNEL_MESSAGES`] encoded frames
//! (base64 JSON is 4/3 of the bytes): (1 + 4 × (2 + 4 × 4/3)) ≈ 30.3 chunks,
//! and [`chunk_size`] is a 32nd of `max_output_buffer`.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use hutch_envd::process::{
    ConnectResponse, ProcessEvent, StartResponse,
    process_event::{DataEvent, EndEvent, Event, KeepAlive, StartEvent, data_event::Output},
};
use serde::Serialize;
use tokio::{sync::mpsc, time::Instant};

use super::{
    Proc, Processes,
    exit::{self, end_event},
    fdio::{Fd, ReadNow},
};
use crate::{reaper::Exit, rpc::StreamSender};

/// Subscribers one process may have at once (its Start stream and Connects).
pub const MAX_SUBSCRIBERS: usize = 4;

/// Largest read from a process's pipe, derived from `max_output_buffer`
/// (see the module docs for the arithmetic).
pub fn chunk_size(max_output_buffer: usize) -> usize {
    (max_output_buffer / 32).clamp(1 << 10, 32 << 10)
}

/// A subscriber as the pump sees it.
#[derive(Clone)]
pub struct Subscriber {
    pub id: u64,
    pub tx: mpsc::Sender<ProcessEvent>,
}

pub fn event(e: Event) -> ProcessEvent {
    ProcessEvent { event: Some(e) }
}

pub fn start_event(pid: u32) -> ProcessEvent {
    event(Event::Start(StartEvent { pid }))
}

/// Creates a subscriber whose channel already holds `start{pid}`.
pub fn new_subscriber(id: u64, pid: u32) -> (Subscriber, mpsc::Receiver<ProcessEvent>) {
    let (tx, rx) = mpsc::channel(1);
    // A fresh channel of capacity 1 always has room for the first event.
    let _ = tx.try_send(start_event(pid));
    (Subscriber { id, tx }, rx)
}

/// A stream message that carries a `ProcessEvent` (Start and Connect replies).
pub trait EventMessage: prost::Message + Serialize + Send + 'static {
    fn wrap(event: ProcessEvent) -> Self;
}

impl EventMessage for StartResponse {
    fn wrap(event: ProcessEvent) -> Self {
        StartResponse { event: Some(event) }
    }
}

impl EventMessage for ConnectResponse {
    fn wrap(event: ProcessEvent) -> Self {
        ConnectResponse { event: Some(event) }
    }
}

/// Step 3: forwards a subscriber's events to its HTTP stream, with keepalives.
pub fn spawn_forwarder<M: EventMessage>(
    sender: StreamSender<M>,
    mut rx: mpsc::Receiver<ProcessEvent>,
    keepalive: Duration,
) {
    // What is queued already (`start{pid}`) goes into the HTTP stream now,
    // before the response is returned, so hyper writes it together with the
    // headers: one write, and one wake-up of the client, fewer.
    let mut first = None;
    while let Ok(ev) = rx.try_recv() {
        if let Err(msg) = sender.try_send(M::wrap(ev)) {
            first = Some(msg);
            break;
        }
    }
    tokio::spawn(async move {
        if let Some(msg) = first
            && sender.send(&msg).await.is_err()
        {
            return;
        }
        let mut tick = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                biased;
                ev = rx.recv() => match ev {
                    Some(ev) => ev,
                    // The pump is done with us (after `end`, or it dropped us).
                    None => return,
                },
                _ = tick.tick() => event(Event::Keepalive(KeepAlive {})),
                _ = sender.closed() => return,
            };
            if sender.send(&M::wrap(ev)).await.is_err() {
                return;
            }
        }
    });
}

/// The guest's ends of the output of one process.
pub enum OutputIo {
    Pipes { stdout: Fd, stderr: Fd },
    Pty(Arc<Fd>),
}

/// Which stream a chunk came from.
#[derive(Clone, Copy)]
enum Source {
    Stdout,
    Stderr,
    Pty,
}

fn data(source: Source, b: Bytes) -> ProcessEvent {
    let output = match source {
        Source::Stdout => Output::Stdout(b),
        Source::Stderr => Output::Stderr(b),
        Source::Pty => Output::Pty(b),
    };
    event(Event::Data(DataEvent {
        output: Some(output),
    }))
}

/// Step 2: hands `ev` to every current subscriber, waiting for slow ones and
/// forgetting those that went away.
async fn deliver(proc: &Proc, ev: ProcessEvent) {
    let subs = proc.subscribers_snapshot();
    let sends = subs.iter().map(|s| s.tx.send(ev.clone()));
    for (s, sent) in subs.iter().zip(futures::future::join_all(sends).await) {
        if sent.is_err() {
            proc.remove_subscriber(s.id);
        }
    }
}

/// Stands in for "no deadline" (the timer is never armed then).
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the pump needs besides the process.
pub struct PumpArgs {
    pub io: OutputIo,
    pub exit: tokio::sync::oneshot::Receiver<Exit>,
    pub chunk: usize,
    pub oom_kills_before: Option<u64>,
    pub timeout: Option<Duration>,
}

/// Steps 1, 2, 4 and 5: the pump of one process, run as a task.
pub async fn pump(processes: Arc<Processes>, proc: Arc<Proc>, args: PumpArgs) {
    let PumpArgs {
        io,
        exit: mut exit_rx,
        chunk,
        oom_kills_before,
        timeout,
    } = args;
    let (first, second, first_src, second_src) = match &io {
        OutputIo::Pipes { stdout, stderr } => {
            (stdout, Some(stderr), Source::Stdout, Source::Stderr)
        }
        OutputIo::Pty(master) => (&**master, None, Source::Pty, Source::Pty),
    };
    let mut first_open = true;
    let mut second_open = second.is_some();
    let deadline = tokio::time::sleep(timeout.unwrap_or(NO_DEADLINE));
    tokio::pin!(deadline);
    let mut deadline_armed = timeout.is_some();

    let exit = loop {
        tokio::select! {
            biased;
            r = &mut exit_rx => break r.ok(),
            r = first.read_chunk(chunk), if first_open => match r {
                Ok(Some(b)) => deliver(&proc, data(first_src, b)).await,
                Ok(None) => first_open = false,
                Err(e) => {
                    tracing::debug!(pid = proc.pid, error = %e, "reading process output");
                    first_open = false;
                }
            },
            r = read_opt(second, chunk), if second_open => match r {
                Ok(Some(b)) => deliver(&proc, data(second_src, b)).await,
                Ok(None) => second_open = false,
                Err(e) => {
                    tracing::debug!(pid = proc.pid, error = %e, "reading process output");
                    second_open = false;
                }
            },
            _ = &mut deadline, if deadline_armed => {
                deadline_armed = false;
                tracing::debug!(pid = proc.pid, "the Start call's timeout passed: killing the process group");
                processes.kill(proc.pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    };

    // Step 5: drain what the dead process left, without waiting.
    for (fd, open, src) in [
        (Some(first), first_open, first_src),
        (second, second_open, second_src),
    ] {
        let Some(fd) = fd.filter(|_| open) else {
            continue;
        };
        while let Ok(ReadNow::Data(b)) = fd.try_read_chunk(chunk) {
            deliver(&proc, data(src, b)).await;
        }
    }
    drop(io);

    let end = match exit {
        Some(exit) => {
            let oom = matches!(
                exit,
                Exit::Signal {
                    signal: libc::SIGKILL,
                    ..
                }
            ) && oom_rose(&processes.config.cgroup_root, oom_kills_before).await;
            end_event(exit, oom)
        }
        None => exit::lost_event(),
    };
    finish(&processes, &proc, end).await;
}

async fn read_opt(fd: Option<&Fd>, chunk: usize) -> std::io::Result<Option<Bytes>> {
    match fd {
        Some(fd) => fd.read_chunk(chunk).await,
        None => std::future::pending().await,
    }
}

/// Whether the cgroup's OOM-kill counter is above `before`.
async fn oom_rose(root: &std::path::Path, before: Option<u64>) -> bool {
    let Some(before) = before else { return false };
    let root = root.to_owned();
    let after = tokio::task::spawn_blocking(move || exit::read_oom_kills(&root))
        .await
        .ok()
        .flatten();
    after.is_some_and(|after| after > before)
}

/// Removes the process from the registry, then sends `end` to the
/// subscribers it had (no one can attach after the removal).
async fn finish(processes: &Processes, proc: &Proc, end: EndEvent) {
    let subs = processes.remove(proc);
    let ev = event(Event::End(end));
    futures::future::join_all(subs.iter().map(|s| s.tx.send(ev.clone()))).await;
}
