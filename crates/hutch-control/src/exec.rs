//! Exec: Hutch's command API, translated onto the guest client's typed process calls.
//!
//! 1. Authorise (`sandbox.use`), check the sandbox is `running`, validate the request.
//! 2. Start the process in the guest as the request's user, with stdin enabled only when the
//!    request carries stdin.
//! 3. Read the guest's event stream one event at a time, only as fast as the consumer takes
//!    [`ExecEvent`]s: nothing is buffered beyond one guest message (itself bounded by the guest
//!    client), so a process printing gigabytes cannot grow the server's memory (R16); the
//!    back-pressure reaches the process's pipe through the guest.
//! 4. On the start event: send stdin in chunks, then close it.
//! 5. Output: `data` is text, split on UTF-8 boundaries (an incomplete character at the end of
//!    a chunk waits for the next chunk); from the first byte that is not valid UTF-8, the rest
//!    of that chunk goes as `data_b64` (standard base64) in its own event. A consumer
//!    concatenates the bytes of both forms in order.
//! 6. A timeout kills the process (SIGKILL) and the exit event says
//!    `timed_out: true`. If the consumer goes away before the exit event, the process is
//!    killed too.
//! 7. The exit event maps the guest's end event: `exit_code`, `signal` and `oom`, as the guest
//!    client reads them.
//!
//! With `wait: true`, [`ExecStream::collect`] gathers the events into an [`ExecResult`],
//! keeping at most `exec_output_cap` bytes of stdout and of stderr (`truncated` says so) while
//! still draining the rest.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hutch_api_types::{ExecEvent, ExecRequest, ExecResult};
use hutch_core::request::limits::TIMEOUT_S_MAX;
use hutch_core::{Action, Error, SandboxId, SandboxState};
use hutch_guest_client::GuestClient;
use hutch_guest_client::process::{Event, Events, Input, Signal, Spec};

use crate::{Caller, Control, ControlError, Result};

/// Bounds on an exec request.
pub mod limits {
    pub const MAX_ARGS: usize = 4096;
    pub const MAX_ARGS_BYTES: usize = 256 << 10;
    pub const MAX_ENV: usize = 256;
    pub const MAX_ENV_VALUE: usize = 32 << 10;
    pub const MAX_PATH: usize = 4096;
    pub const MAX_USER: usize = 32;
    pub const MAX_STDIN: usize = 16 << 20;
    /// Stdin goes to the guest in pieces of this size.
    pub const STDIN_CHUNK: usize = 1 << 20;
}

/// A validated exec request.
#[derive(Debug, Clone)]
struct ValidExec {
    spec: Spec,
    stdin: Option<String>,
    timeout: Option<Duration>,
}

fn invalid(field: &str, reason: &str) -> ControlError {
    Error::InvalidInput(format!("{field}: {reason}")).into()
}

/// Is `path` under `/proc` once `.` and `..` are taken away lexically?
fn under_proc(path: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.first() == Some(&"proc")
}

pub(crate) fn valid_user(user: &str) -> bool {
    let b = user.as_bytes();
    !b.is_empty()
        && b.len() <= limits::MAX_USER
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.')
        })
}

pub(crate) fn validate_cwd(cwd: &str) -> Result<()> {
    if cwd.is_empty() || cwd.len() > limits::MAX_PATH || cwd.contains('\0') {
        return Err(invalid("cwd", "must be 1 to 4096 bytes without NUL"));
    }
    if under_proc(cwd) {
        return Err(invalid("cwd", "may not be under /proc"));
    }
    Ok(())
}

/// Checks an exec request. Pure.
fn validate(req: ExecRequest) -> Result<ValidExec> {
    use limits::*;
    let Some((program, args)) = req.cmd.split_first() else {
        return Err(invalid("cmd", "must name a program"));
    };
    if program.is_empty() {
        return Err(invalid("cmd", "the program name is empty"));
    }
    let total: usize = req.cmd.iter().map(|a| a.len() + 1).sum();
    if req.cmd.len() > MAX_ARGS || total > MAX_ARGS_BYTES {
        return Err(invalid("cmd", "too many or too long arguments"));
    }
    if req.cmd.iter().any(|a| a.contains('\0')) {
        return Err(invalid("cmd", "an argument contains NUL"));
    }
    if req.env.len() > MAX_ENV {
        return Err(invalid("env", "at most 256 variables"));
    }
    for (k, v) in &req.env {
        let b = k.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !ok {
            return Err(invalid(
                "env",
                "names are letters, digits and `_`, not starting with a digit",
            ));
        }
        if v.len() > MAX_ENV_VALUE || v.contains('\0') {
            return Err(invalid("env", "values are at most 32 KiB without NUL"));
        }
    }
    if let Some(cwd) = &req.cwd {
        validate_cwd(cwd)?;
    }
    if let Some(user) = &req.user
        && !valid_user(user)
    {
        return Err(invalid("user", "must be a user name of the sandbox"));
    }
    if req.stdin.as_ref().is_some_and(|s| s.len() > MAX_STDIN) {
        return Err(invalid("stdin", "at most 16 MiB"));
    }
    let timeout = match req.timeout_s {
        None => None,
        Some(t) if (1..=TIMEOUT_S_MAX).contains(&t) => Some(Duration::from_secs(t)),
        Some(_) => return Err(invalid("timeout_s", "must be 1 to 2592000")),
    };
    Ok(ValidExec {
        spec: Spec {
            cmd: program.clone(),
            args: args.to_vec(),
            envs: req.env.into_iter().collect(),
            cwd: req.cwd,
            user: req.user,
            stdin: req.stdin.is_some(),
            pty: None,
            // Set at start: the session's tag.
            tag: None,
        },
        stdin: req.stdin,
        timeout,
    })
}

/// The guest client of a sandbox.
pub(crate) fn guest_of(control: &Control, id: &SandboxId) -> Result<GuestClient> {
    control
        .agent()
        .guest(id)
        .map_err(|e| ControlError::agent("reaching a sandbox's guest", e))
}

/// Sends SIGKILL to `pid`; failures are logged (the process may have ended already).
pub(crate) async fn kill(guest: &GuestClient, id: &SandboxId, pid: u32) {
    if let Err(e) = guest.send_signal(pid, Signal::Kill).await {
        tracing::debug!(sandbox = %id, pid, error = %crate::error::chain(&e), "killing a process");
    }
}

/// `data` in pieces of at most `size` bytes, without copying.
pub(crate) fn pieces(mut data: Bytes, size: usize) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || (!data.is_empty()).then(|| data.split_to(data.len().min(size))))
}

/// Splits output into text and non-UTF-8 pieces (step 5 of the module docs).
#[derive(Debug, Default)]
struct Utf8Splitter {
    /// An incomplete character from the end of the previous chunk (at most 3 bytes).
    carry: Vec<u8>,
}

impl Utf8Splitter {
    /// `(text, bytes)`: the chunk's valid UTF-8 prefix as text, and from the first invalid
    /// byte on, the rest as base64. Either may be absent.
    fn push(&mut self, chunk: &[u8]) -> (Option<String>, Option<String>) {
        let joined: std::borrow::Cow<'_, [u8]> = if self.carry.is_empty() {
            chunk.into()
        } else {
            let mut v = std::mem::take(&mut self.carry);
            v.extend_from_slice(chunk);
            v.into()
        };
        match std::str::from_utf8(&joined) {
            Ok(s) => (non_empty(s.to_owned()), None),
            Err(e) if e.error_len().is_none() && joined.len() - e.valid_up_to() <= 3 => {
                let (good, rest) = joined.split_at(e.valid_up_to());
                self.carry = rest.to_vec();
                // `good` is valid UTF-8 up to here by the error's own account.
                let text = String::from_utf8_lossy(good).into_owned();
                (non_empty(text), None)
            }
            Err(e) => {
                let (good, rest) = joined.split_at(e.valid_up_to());
                let text = String::from_utf8_lossy(good).into_owned();
                (
                    non_empty(text),
                    Some(base64::engine::general_purpose::STANDARD.encode(rest)),
                )
            }
        }
    }

    /// What is left at the end of the stream.
    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.carry);
        (!rest.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(rest))
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn stdout(data: Option<String>, data_b64: Option<String>) -> ExecEvent {
    ExecEvent::Stdout { data, data_b64 }
}

fn stderr(data: Option<String>, data_b64: Option<String>) -> ExecEvent {
    ExecEvent::Stderr { data, data_b64 }
}

/// Queues output split by a [`Utf8Splitter`]: the text, then the bytes, each in its own event
/// made by `event` (step 5 of the module docs).
fn queue_output(
    pending: &mut VecDeque<ExecEvent>,
    data: Option<String>,
    data_b64: Option<String>,
    event: fn(Option<String>, Option<String>) -> ExecEvent,
) {
    if data.is_some() {
        pending.push_back(event(data, None));
    }
    if data_b64.is_some() {
        pending.push_back(event(None, data_b64));
    }
}

/// A running exec's events. Dropping it before the exit event kills the process.
pub struct ExecStream {
    control: Control,
    id: SandboxId,
    guest: Arc<GuestClient>,
    events: Events,
    pid: Option<u32>,
    stdin: Option<String>,
    deadline: Option<tokio::time::Instant>,
    timed_out: bool,
    pending: VecDeque<ExecEvent>,
    out: Utf8Splitter,
    err: Utf8Splitter,
    finished: bool,
    started: Instant,
    output_cap: usize,
    /// Why the stream failed, for `collect`.
    failure: Option<Error>,
}

/// Commands run in a sandbox, borrowed from a [`Control`]: `control.commands()`.
pub struct Commands<'a> {
    pub(crate) control: &'a Control,
}

impl ExecStream {
    /// The next event; `None` after the last one.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.finished {
                return None;
            }
            let item = match self.deadline {
                Some(deadline) if !self.timed_out => {
                    match tokio::time::timeout_at(deadline, self.events.next()).await {
                        Ok(item) => item,
                        Err(_) => {
                            self.timed_out = true;
                            if let Some(pid) = self.pid {
                                kill(&self.guest, &self.id, pid).await;
                            }
                            continue;
                        }
                    }
                }
                _ => self.events.next().await,
            };
            match item {
                Ok(Some(event)) => self.on_event(event).await,
                Ok(None) => {
                    self.fail(Error::Unavailable(
                        "the process stream ended without an exit event".to_owned(),
                    ));
                }
                Err(e) => {
                    let kind = if self.pid.is_none() {
                        "program"
                    } else {
                        "process"
                    };
                    let e = ControlError::guest(&self.id, kind, e);
                    if let Some(detail) = e.detail() {
                        tracing::warn!(sandbox = %self.id, detail, "exec stream failed");
                    }
                    self.fail(e.public());
                }
            }
        }
    }

    fn fail(&mut self, public: Error) {
        self.finished = true;
        self.pending.push_back(ExecEvent::Error {
            code: public.code().as_str().to_owned(),
            message: public.to_string(),
        });
        self.failure = Some(public);
    }

    /// Reads until the start event, which stays queued; a failure before it is returned.
    async fn await_start(&mut self) -> Result<()> {
        while self.pid.is_none() && !self.finished {
            let item = self.events.next().await;
            match item {
                Ok(Some(event)) => self.on_event(event).await,
                Ok(None) => self.fail(Error::Unavailable(
                    "the process stream ended before the process started".to_owned(),
                )),
                Err(e) => return Err(ControlError::guest(&self.id, "program", e)),
            }
        }
        match self.failure.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Started { pid } => {
                self.pid = Some(pid);
                self.pending.push_back(ExecEvent::Start { pid });
                if let Some(input) = self.stdin.take() {
                    self.send_stdin(pid, Bytes::from(input)).await;
                }
                if self.timed_out {
                    kill(&self.guest, &self.id, pid).await;
                }
            }
            Event::Stdout(b) => {
                let (data, data_b64) = self.out.push(&b);
                queue_output(&mut self.pending, data, data_b64, stdout);
            }
            Event::Stderr(b) => {
                let (data, data_b64) = self.err.push(&b);
                queue_output(&mut self.pending, data, data_b64, stderr);
            }
            Event::Pty(_) => {}
            Event::End(end) => {
                queue_output(&mut self.pending, None, self.out.finish(), stdout);
                queue_output(&mut self.pending, None, self.err.finish(), stderr);
                self.pending.push_back(ExecEvent::Exit {
                    exit_code: end.exit_code,
                    signal: end.signal,
                    oom: end.oom,
                    timed_out: self.timed_out,
                });
                self.finished = true;
                self.control.metrics().observe_exec(self.started.elapsed());
                self.control.touch(&self.id);
            }
        }
    }

    /// Step 4 of the module docs. A failure is logged: the process sees its stdin close.
    async fn send_stdin(&self, pid: u32, input: Bytes) {
        for chunk in pieces(input, limits::STDIN_CHUNK) {
            if let Err(e) = self.guest.send_input(pid, Input::Stdin(chunk)).await {
                tracing::debug!(sandbox = %self.id, error = %crate::error::chain(&e), "sending stdin");
                break;
            }
        }
        if let Err(e) = self.guest.close_stdin(pid).await {
            tracing::debug!(sandbox = %self.id, error = %crate::error::chain(&e), "closing stdin");
        }
    }

    /// Gathers the whole run into an [`ExecResult`] (for `wait: true`).
    pub async fn collect(mut self) -> Result<ExecResult> {
        let cap = self.output_cap;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut truncated = false;
        let mut keep = |buf: &mut Vec<u8>, data: Option<String>, b64: Option<String>| {
            let bytes = match (data, b64) {
                (Some(d), _) => d.into_bytes(),
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap_or_default(),
                (None, None) => Vec::new(),
            };
            let room = cap.saturating_sub(buf.len());
            if bytes.len() > room {
                truncated = true;
            }
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        };
        while let Some(ev) = self.next().await {
            match ev {
                ExecEvent::Start { .. } => {}
                ExecEvent::Stdout { data, data_b64 } => keep(&mut stdout, data, data_b64),
                ExecEvent::Stderr { data, data_b64 } => keep(&mut stderr, data, data_b64),
                ExecEvent::Exit {
                    exit_code,
                    signal,
                    oom,
                    timed_out,
                } => {
                    return Ok(ExecResult {
                        exit_code,
                        signal,
                        stdout: String::from_utf8_lossy(&stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&stderr).into_owned(),
                        truncated,
                        oom,
                        timed_out,
                    });
                }
                ExecEvent::Error { message, .. } => {
                    return Err(self
                        .failure
                        .take()
                        .unwrap_or(Error::Unavailable(message))
                        .into());
                }
            }
        }
        Err(Error::Unavailable("the process stream ended without an exit event".to_owned()).into())
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        // Step 6: a consumer that leaves early must not leave the process running.
        if self.finished {
            return;
        }
        if let (Some(pid), Ok(handle)) = (self.pid, tokio::runtime::Handle::try_current()) {
            let guest = self.guest.clone();
            let id = self.id.clone();
            handle.spawn(async move { kill(&guest, &id, pid).await });
        }
    }
}

impl Commands<'_> {
    /// Steps 1–2 of the module docs; the returned stream does the rest.
    pub async fn run(&self, caller: &Caller, id: &str, req: ExecRequest) -> Result<ExecStream> {
        let result = async {
            let record = self.control.lookup(caller, Action::SandboxUse, id).await?;
            if record.state != SandboxState::Running {
                return Err(Error::Conflict(format!(
                    "the sandbox is {}, not running",
                    record.state
                ))
                .into());
            }
            let mut exec = validate(req)?;
            exec.spec.tag = Some(self.control.session_tag());
            let guest = guest_of(self.control, &record.id)?;
            let events = guest
                .start(exec.spec)
                .await
                .map_err(|e| ControlError::guest(&record.id, "program", e))?;
            self.control.touch(&record.id);
            let mut stream = ExecStream {
                control: self.control.clone(),
                id: record.id,
                guest: Arc::new(guest),
                events,
                pid: None,
                stdin: exec.stdin,
                deadline: exec.timeout.map(|t| tokio::time::Instant::now() + t),
                timed_out: false,
                pending: VecDeque::new(),
                out: Utf8Splitter::default(),
                err: Utf8Splitter::default(),
                finished: false,
                started: Instant::now(),
                output_cap: self.control.inner.config.exec_output_cap,
                failure: None,
            };
            // Wait for the start, so a program that cannot start is an error reply (400, 404)
            // rather than an event in a 200 stream.
            stream.await_start().await?;
            Ok(stream)
        }
        .await;
        self.control.audited_use(caller, id, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_split_on_character_boundaries() {
        let mut s = Utf8Splitter::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(b"ab"), (Some("ab".into()), None));
        assert_eq!(s.push(&[b'x', e[0]]), (Some("x".into()), None));
        assert_eq!(s.push(&[e[1], b'y']), (Some("éy".into()), None));
        assert_eq!(s.finish(), None);
        let (text, b64) = s.push(&[b'o', b'k', 0xff, b'a']);
        assert_eq!(text.as_deref(), Some("ok"));
        assert_eq!(b64.as_deref(), Some("/2E="));
        assert_eq!(s.push(&[e[0]]), (None, None));
        assert_eq!(s.finish().as_deref(), Some("ww=="));
    }

    #[test]
    fn input_goes_in_pieces() {
        let got: Vec<Bytes> = pieces(Bytes::from_static(b"abcde"), 2).collect();
        assert_eq!(got, [&b"ab"[..], b"cd", b"e"]);
        assert_eq!(pieces(Bytes::new(), 2).count(), 0);
    }

    #[test]
    fn validation_table() {
        let base = || ExecRequest {
            cmd: vec!["true".into()],
            ..Default::default()
        };
        let cases: Vec<(ExecRequest, Option<&str>)> = vec![
            (base(), None),
            (
                ExecRequest {
                    cmd: vec![],
                    ..base()
                },
                Some("cmd"),
            ),
            (
                ExecRequest {
                    cmd: vec!["".into()],
                    ..base()
                },
                Some("cmd"),
            ),
            (
                ExecRequest {
                    cmd: vec!["a\0".into()],
                    ..base()
                },
                Some("cmd"),
            ),
            (
                ExecRequest {
                    cwd: Some("/tmp".into()),
                    ..base()
                },
                None,
            ),
            (
                ExecRequest {
                    cwd: Some("/proc/self/fd/3".into()),
                    ..base()
                },
                Some("cwd"),
            ),
            (
                ExecRequest {
                    cwd: Some("/tmp/../proc/1/cwd".into()),
                    ..base()
                },
                Some("cwd"),
            ),
            (
                ExecRequest {
                    cwd: Some("//proc".into()),
                    ..base()
                },
                Some("cwd"),
            ),
            (
                ExecRequest {
                    cwd: Some("/procfs".into()),
                    ..base()
                },
                None,
            ),
            (
                ExecRequest {
                    user: Some("root".into()),
                    ..base()
                },
                None,
            ),
            (
                ExecRequest {
                    user: Some("Root".into()),
                    ..base()
                },
                Some("user"),
            ),
            (
                ExecRequest {
                    user: Some("a:b".into()),
                    ..base()
                },
                Some("user"),
            ),
            (
                ExecRequest {
                    timeout_s: Some(0),
                    ..base()
                },
                Some("timeout_s"),
            ),
            (
                ExecRequest {
                    env: [("1X".to_owned(), "v".to_owned())].into(),
                    ..base()
                },
                Some("env"),
            ),
            (
                ExecRequest {
                    stdin: Some("x".repeat(limits::MAX_STDIN + 1)),
                    ..base()
                },
                Some("stdin"),
            ),
        ];
        for (req, want) in cases {
            let shown = format!("{:?}", (&req.cmd, &req.cwd, &req.user, req.timeout_s));
            match (validate(req), want) {
                (Ok(_), None) => {}
                (Err(e), Some(field)) => {
                    let msg = e.public().to_string();
                    assert!(msg.starts_with(field), "{shown}: {msg}");
                }
                (got, want) => panic!("{shown}: got {:?}, want {want:?}", got.map(|_| ())),
            }
        }
    }
}
