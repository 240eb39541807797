//! Interactive terminals: a PTY process in the guest, driven by a transport (the API's
//! WebSocket) through [`PtyOutput`] and [`PtyInput`].
//!
//! 1. Authorise (`sandbox.use`), check the sandbox is `running`, validate the request.
//! 2. Start the process in the guest with `pty{size}` (`TERM=xterm-256color`); the default
//!    command is the user's login shell (bash if present, else sh).
//! 3. Wait for the start event (bounded), then hand back the two halves:
//!    - [`PtyOutput::next`] yields terminal bytes as the transport takes them, then one exit;
//!    - [`PtyInput`] sends keystrokes and resizes the terminal.
//! 4. A transport that ends before the exit calls [`PtyInput::kill`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hutch_core::{Action, Error, SandboxId, SandboxState};
use hutch_guest_client::GuestClient;
use hutch_guest_client::process::{Event, Events, Input, PtySize, Spec};

use crate::exec::{guest_of, kill, pieces, valid_user, validate_cwd};
use crate::{Caller, Control, ControlError, Result};

/// How long the guest may take to report the start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DIM: u16 = 1000;
/// Keystrokes go to the guest in pieces of at most this size.
const INPUT_CHUNK: usize = 64 << 10;

/// What a terminal is opened with.
#[derive(Debug, Clone, Default)]
pub struct PtyRequest {
    pub cols: u16,
    pub rows: u16,
    pub user: Option<String>,
    pub cwd: Option<String>,
    /// Empty: the login shell.
    pub cmd: Vec<String>,
}

/// Something the terminal process produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyEvent {
    Data(Bytes),
    Exit { exit_code: i32, signal: Option<i32> },
}

/// The output half.
pub struct PtyOutput {
    id: SandboxId,
    events: Events,
    done: bool,
}

/// The input half.
#[derive(Clone)]
pub struct PtyInput {
    id: SandboxId,
    guest: Arc<GuestClient>,
    pid: u32,
}

fn check_dims(cols: u16, rows: u16) -> Result<()> {
    if cols == 0 || rows == 0 || cols > MAX_DIM || rows > MAX_DIM {
        return Err(Error::InvalidInput(format!("cols and rows must be 1 to {MAX_DIM}")).into());
    }
    Ok(())
}

/// Interactive terminals in a sandbox, borrowed from a [`Control`]: `control.terminals()`.
pub struct Terminals<'a> {
    pub(crate) control: &'a Control,
}

impl Control {
    async fn open_pty_inner(
        &self,
        caller: &Caller,
        id: &str,
        req: PtyRequest,
    ) -> Result<(PtyOutput, PtyInput)> {
        let record = self.lookup(caller, Action::SandboxUse, id).await?;
        if record.state != SandboxState::Running {
            return Err(
                Error::Conflict(format!("the sandbox is {}, not running", record.state)).into(),
            );
        }
        check_dims(req.cols, req.rows)?;
        if let Some(cwd) = &req.cwd {
            validate_cwd(cwd)?;
        }
        if let Some(u) = &req.user
            && !valid_user(u)
        {
            return Err(
                Error::InvalidInput("user: must be a user name of the sandbox".to_owned()).into(),
            );
        }
        if req.cmd.len() > 4096 || req.cmd.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidInput("cmd: too many arguments or a NUL".to_owned()).into());
        }
        let (cmd, args) = match req.cmd.split_first() {
            Some((c, rest)) if !c.is_empty() => (c.clone(), rest.to_vec()),
            Some(_) => {
                return Err(
                    Error::InvalidInput("cmd: the program name is empty".to_owned()).into(),
                );
            }
            None => (
                "/bin/sh".to_owned(),
                vec![
                    "-c".to_owned(),
                    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"
                        .to_owned(),
                ],
            ),
        };
        let guest = guest_of(self, &record.id)?;
        let spec = Spec {
            cmd,
            args,
            envs: [("TERM".to_owned(), "xterm-256color".to_owned())].into(),
            cwd: req.cwd,
            user: req.user,
            stdin: true,
            pty: Some(PtySize {
                cols: req.cols,
                rows: req.rows,
            }),
            tag: Some(self.session_tag()),
        };
        let mut events = guest
            .start(spec)
            .await
            .map_err(|e| ControlError::guest(&record.id, "program", e))?;
        let pid = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                match events.next().await {
                    Ok(Some(Event::Started { pid })) => return Ok(pid),
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(Error::Unavailable(
                            "the terminal ended before it started".to_owned(),
                        )
                        .into());
                    }
                    Err(e) => return Err(ControlError::guest(&record.id, "program", e)),
                }
            }
        })
        .await
        .map_err(|_| Error::Unavailable("the terminal did not start in time".to_owned()))??;
        self.touch(&record.id);
        Ok((
            PtyOutput {
                id: record.id.clone(),
                events,
                done: false,
            },
            PtyInput {
                id: record.id,
                guest: Arc::new(guest),
                pid,
            },
        ))
    }
}

impl PtyOutput {
    /// The next bytes or the exit; `None` after the exit. An error ends the stream.
    pub async fn next(&mut self) -> Option<Result<PtyEvent>> {
        while !self.done {
            match self.events.next().await {
                Ok(Some(Event::Pty(b) | Event::Stdout(b) | Event::Stderr(b))) => {
                    return Some(Ok(PtyEvent::Data(b)));
                }
                Ok(Some(Event::End(end))) => {
                    self.done = true;
                    return Some(Ok(PtyEvent::Exit {
                        exit_code: end.exit_code,
                        signal: end.signal,
                    }));
                }
                Ok(Some(Event::Started { .. })) => {}
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(ControlError::guest(&self.id, "process", e)));
                }
            }
        }
        None
    }
}

impl PtyInput {
    /// Keystrokes (at most [`INPUT_CHUNK`] at a time).
    pub async fn send(&self, data: Bytes) -> Result<()> {
        for chunk in pieces(data, INPUT_CHUNK) {
            self.guest
                .send_input(self.pid, Input::Pty(chunk))
                .await
                .map_err(|e| ControlError::guest(&self.id, "process", e))?;
        }
        Ok(())
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        check_dims(cols, rows)?;
        self.guest
            .resize_pty(self.pid, PtySize { cols, rows })
            .await
            .map_err(|e| ControlError::guest(&self.id, "process", e))
    }

    /// Ends the terminal's process (the transport went away first).
    pub async fn kill(&self) {
        kill(&self.guest, &self.id, self.pid).await;
    }
}

impl Terminals<'_> {
    /// Steps 1–3 of the module docs.
    pub async fn open(
        &self,
        caller: &Caller,
        id: &str,
        req: PtyRequest,
    ) -> Result<(PtyOutput, PtyInput)> {
        let result = self.control.open_pty_inner(caller, id, req).await;
        self.control.audited_use(caller, id, result).await
    }
}
