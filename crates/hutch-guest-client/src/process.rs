//! The guest's `process` service, typed: start a process and read its
//! events, attach to a running one, write its input, signal it, resize its
//! terminal, list what runs.
//!
//! Owns: the typed requests ([`Spec`], [`Input`], [`Signal`], [`PtySize`]),
//! the typed events ([`Event`], [`End`]) and reading an end event's words
//! back into a signal number and an OOM flag (with `hutch_envd::exit`, which
//! the guest writes them with).
//! Must not: set policy (timeouts, output caps, the size of input chunks
//! belong to the caller), or hold more than one guest message of a stream:
//! events come as the caller takes them, so back-pressure reaches the
//! process through the guest.
//!
//! Flow of a Start stream ([`GuestClient::start`]):
//! 1. POST `Start` with the [`Spec`], acting as its user; stdin is open only
//!    when the spec asks.
//! 2. The first event is [`Event::Started`] with the pid, which from then on
//!    addresses the process: [`GuestClient::send_input`],
//!    [`GuestClient::close_stdin`], [`GuestClient::send_signal`],
//!    [`GuestClient::resize_pty`], [`GuestClient::connect_process`]. A
//!    request the guest refuses (an unknown user, a bad cwd, a program that
//!    cannot start) fails the call, or the stream's first [`Events::next`].
//! 3. Output follows, one guest message per event: [`Event::Stdout`] and
//!    [`Event::Stderr`], or [`Event::Pty`] under a terminal. Keepalives are
//!    read and skipped.
//! 4. [`Event::End`] is the last event: the exit code, the signal read from
//!    the status, the OOM flag. Reading it gives the connection back to the
//!    pool; [`Events::next`] then says `None`.
//! 5. Dropping [`Events`] before the end closes its connection; the process
//!    runs on (envd's semantics: only a signal ends it).

use std::collections::HashMap;

use bytes::Bytes;
use hutch_envd::{
    exit::{OOM_KILLED_ERROR, status_signal},
    process::{
        self as wire, CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse,
        ListRequest, ListResponse, ProcessConfig, ProcessInput, ProcessSelector, SendInputRequest,
        SendInputResponse, SendSignalRequest, SendSignalResponse, StartRequest, StartResponse,
        UpdateRequest, UpdateResponse, process_event, process_event::data_event::Output,
        process_input, process_selector,
    },
};

use crate::{ClientError, GuestClient, rpc::ReplyStream};

const START: &str = "/process.Process/Start";
const CONNECT: &str = "/process.Process/Connect";
const LIST: &str = "/process.Process/List";
const SEND_INPUT: &str = "/process.Process/SendInput";
const CLOSE_STDIN: &str = "/process.Process/CloseStdin";
const SEND_SIGNAL: &str = "/process.Process/SendSignal";
const UPDATE: &str = "/process.Process/Update";

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The program: a path, or a name the guest looks up in `PATH`.
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: HashMap<String, String>,
    /// Working directory (default: the user's home).
    pub cwd: Option<String>,
    /// The sandbox user to run as (default: the guest's default user).
    pub user: Option<String>,
    /// Whether the process gets a stdin to write to with
    /// [`GuestClient::send_input`]; without it, stdin is at its end at once.
    pub stdin: bool,
    /// Runs the process on a pseudo-terminal of this size.
    pub pty: Option<PtySize>,
    /// A name for the process, unique among running ones.
    pub tag: Option<String>,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

impl From<PtySize> for wire::Pty {
    fn from(size: PtySize) -> Self {
        wire::Pty {
            size: Some(wire::pty::Size {
                cols: u32::from(size.cols),
                rows: u32::from(size.rows),
            }),
        }
    }
}

/// Bytes for a running process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// To its stdin (started with [`Spec::stdin`]).
    Stdin(Bytes),
    /// To its terminal, as keystrokes (started with [`Spec::pty`]).
    Pty(Bytes),
}

/// The signals the guest sends on request (to the process's group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: asks the process to end.
    Term,
    /// SIGKILL: ends it.
    Kill,
}

impl From<Signal> for wire::Signal {
    fn from(s: Signal) -> Self {
        match s {
            Signal::Term => wire::Signal::Sigterm,
            Signal::Kill => wire::Signal::Sigkill,
        }
    }
}

/// Something a process did (steps 2–4 of the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        pid: u32,
    },
    Stdout(Bytes),
    Stderr(Bytes),
    /// Output of a process on a terminal (stdout and stderr together).
    Pty(Bytes),
    End(End),
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The exit code; -1 when a signal ended it.
    pub exit_code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (the signal is then SIGKILL).
    pub oom: bool,
    /// Go's words for the end: `exit status 1`, `signal: killed`.
    pub status: String,
    /// Go's `cmd.Wait` error: the status unless the process exited 0.
    pub error: Option<String>,
}

impl From<process_event::EndEvent> for End {
    fn from(end: process_event::EndEvent) -> Self {
        End {
            exit_code: end.exit_code,
            signal: if end.exited {
                None
            } else {
                status_signal(&end.status)
            },
            oom: end.error.as_deref() == Some(OOM_KILLED_ERROR),
            status: end.status,
            error: end.error,
        }
    }
}

impl Event {
    /// The typed event of a wire event; `None` for keepalives and empty data.
    fn from_wire(event: process_event::Event) -> Option<Event> {
        Some(match event {
            process_event::Event::Start(s) => Event::Started { pid: s.pid },
            process_event::Event::Data(d) => match d.output? {
                Output::Stdout(b) => Event::Stdout(b),
                Output::Stderr(b) => Event::Stderr(b),
                Output::Pty(b) => Event::Pty(b),
            },
            process_event::Event::End(end) => Event::End(end.into()),
            process_event::Event::Keepalive(_) => return None,
        })
    }
}

/// A process that runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tag: Option<String>,
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: HashMap<String, String>,
    pub cwd: Option<String>,
}

impl From<wire::ProcessInfo> for ProcessInfo {
    fn from(p: wire::ProcessInfo) -> Self {
        let config = p.config.unwrap_or_default();
        ProcessInfo {
            pid: p.pid,
            tag: p.tag,
            cmd: config.cmd,
            args: config.args,
            envs: config.envs,
            cwd: config.cwd,
        }
    }
}

/// The events of a started or attached process, read as the caller takes
/// them.
pub struct Events {
    reply: Reply,
}

/// `Start` and `Connect` answer with different messages carrying the same
/// event.
enum Reply {
    Start(ReplyStream<StartResponse>),
    Connect(ReplyStream<ConnectResponse>),
}

impl Events {
    /// The next event; `Ok(None)` after [`Event::End`], or when the guest
    /// ended the stream without one.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            let message = match &mut self.reply {
                Reply::Start(r) => r.next().await?.map(|m| m.event),
                Reply::Connect(r) => r.next().await?.map(|m| m.event),
            };
            let Some(message) = message else {
                return Ok(None);
            };
            let Some(event) = message.and_then(|e| e.event).and_then(Event::from_wire) else {
                continue;
            };
            if let Event::End(_) = event {
                // Step 4: the end-of-stream message follows; reading it off
                // the caller's path keeps the connection reusable.
                match &mut self.reply {
                    Reply::Start(r) => r.finish(),
                    Reply::Connect(r) => r.finish(),
                }
            }
            return Ok(Some(event));
        }
    }
}

fn selector(pid: u32) -> Option<ProcessSelector> {
    Some(ProcessSelector {
        selector: Some(process_selector::Selector::Pid(pid)),
    })
}

impl GuestClient {
    /// `Start`: starts a process; its events follow (see the module docs).
    pub async fn start(&self, spec: Spec) -> Result<Events, ClientError> {
        let req = StartRequest {
            process: Some(ProcessConfig {
                cmd: spec.cmd,
                args: spec.args,
                envs: spec.envs,
                cwd: spec.cwd,
            }),
            pty: spec.pty.map(wire::Pty::from),
            tag: spec.tag,
            stdin: Some(spec.stdin),
        };
        let reply = self
            .server_stream(START, spec.user.as_deref(), &req)
            .await?;
        Ok(Events {
            reply: Reply::Start(reply),
        })
    }

    /// `Connect`: the events of a running process from now on, ending with
    /// its end.
    pub async fn connect_process(&self, pid: u32) -> Result<Events, ClientError> {
        let req = ConnectRequest {
            process: selector(pid),
        };
        let reply = self.server_stream(CONNECT, None, &req).await?;
        Ok(Events {
            reply: Reply::Connect(reply),
        })
    }

    /// `List`: the processes that run.
    pub async fn list_processes(&self) -> Result<Vec<ProcessInfo>, ClientError> {
        let resp: ListResponse = self.unary(LIST, None, &ListRequest {}).await?;
        Ok(resp.processes.into_iter().map(ProcessInfo::from).collect())
    }

    /// `SendInput`: writes to a process's stdin or terminal.
    pub async fn send_input(&self, pid: u32, input: Input) -> Result<(), ClientError> {
        let input = match input {
            Input::Stdin(b) => process_input::Input::Stdin(b),
            Input::Pty(b) => process_input::Input::Pty(b),
        };
        let req = SendInputRequest {
            process: selector(pid),
            input: Some(ProcessInput { input: Some(input) }),
        };
        let _: SendInputResponse = self.unary(SEND_INPUT, None, &req).await?;
        Ok(())
    }

    /// `CloseStdin`: the process reads the end of its stdin.
    pub async fn close_stdin(&self, pid: u32) -> Result<(), ClientError> {
        let req = CloseStdinRequest {
            process: selector(pid),
        };
        let _: CloseStdinResponse = self.unary(CLOSE_STDIN, None, &req).await?;
        Ok(())
    }

    /// `SendSignal`: signals a process's group.
    pub async fn send_signal(&self, pid: u32, signal: Signal) -> Result<(), ClientError> {
        let req = SendSignalRequest {
            process: selector(pid),
            signal: wire::Signal::from(signal).into(),
        };
        let _: SendSignalResponse = self.unary(SEND_SIGNAL, None, &req).await?;
        Ok(())
    }

    /// `Update`: resizes a process's terminal.
    pub async fn resize_pty(&self, pid: u32, size: PtySize) -> Result<(), ClientError> {
        let req = UpdateRequest {
            process: selector(pid),
            pty: Some(size.into()),
        };
        let _: UpdateResponse = self.unary(UPDATE, None, &req).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_envd::exit::signal_status;
    use process_event::EndEvent;

    fn end(exit_code: i32, exited: bool, status: String, error: Option<&str>) -> End {
        End::from(EndEvent {
            exit_code,
            exited,
            status,
            error: error.map(str::to_owned),
        })
    }

    #[test]
    fn an_end_reads_its_signal_and_oom() {
        let e = end(0, true, "exit status 0".into(), None);
        assert_eq!((e.signal, e.oom), (None, false));
        let e = end(
            -1,
            false,
            signal_status(11, true),
            Some("signal: segmentation fault (core dumped)"),
        );
        assert_eq!((e.signal, e.oom), (Some(11), false));
        let e = end(-1, false, signal_status(9, false), Some(OOM_KILLED_ERROR));
        assert_eq!((e.signal, e.oom), (Some(9), true));
        // An exit code's status never names a signal, whatever it says.
        let e = end(1, true, "signal: killed".into(), Some("exit status 1"));
        assert_eq!((e.signal, e.oom), (None, false));
    }

    #[test]
    fn keepalives_and_empty_data_are_no_events() {
        assert_eq!(
            Event::from_wire(process_event::Event::Keepalive(Default::default())),
            None
        );
        assert_eq!(
            Event::from_wire(process_event::Event::Data(Default::default())),
            None
        );
        assert_eq!(
            Event::from_wire(process_event::Event::Start(process_event::StartEvent {
                pid: 7
            })),
            Some(Event::Started { pid: 7 })
        );
    }
}
