//! `hutch shell ID`: an interactive terminal in a sandbox over the API's
//! PTY WebSocket. Local terminal in raw mode while connected (restored on
//! every exit path), window size changes sent as resize messages.
//!
//! Wire ([`PtyControl`]): binary frames carry terminal bytes both ways; text
//! frames carry JSON control messages: `{"type":"resize","cols","rows"}` from
//! the client, `{"type":"exit","exit_code","signal"}` from the server.

use clap::Args;
use futures::{SinkExt, StreamExt};
use hutch_api_types::{ErrorBody, PtyControl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

use super::{Api, CliError, Global, client::q};

#[derive(Debug, Args)]
pub struct ShellArgs {
    pub id: String,
    /// User inside the sandbox.
    #[arg(long, short)]
    pub user: Option<String>,
    /// Working directory inside the sandbox.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Command to run instead of the user's login shell.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

/// Puts a terminal in raw mode and restores it when dropped.
struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        raw.make_raw();
        if rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).is_err()
        {
            return RawMode { saved: None };
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

fn window_size() -> (u16, u16) {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(ws) if ws.ws_col > 0 && ws.ws_row > 0 => (ws.ws_col, ws.ws_row),
        _ => (80, 24),
    }
}

pub async fn run(api: &Api, _g: &Global, a: ShellArgs) -> Result<i32, CliError> {
    let (cols, rows) = window_size();
    let mut path = format!("/v1/sandboxes/{}/pty?cols={cols}&rows={rows}", q(&a.id));
    if let Some(u) = &a.user {
        path.push_str(&format!("&user={}", q(u)));
    }
    if let Some(c) = &a.cwd {
        path.push_str(&format!("&cwd={}", q(c)));
    }
    for c in &a.cmd {
        path.push_str(&format!("&cmd={}", q(c)));
    }
    let mut req = api
        .ws_url(&path)
        .into_client_request()
        .map_err(|e| CliError::Usage(format!("bad URL: {e}")))?;
    if let Some(k) = api.key() {
        let v = HeaderValue::from_str(&format!("Bearer {k}"))
            .map_err(|_| CliError::Usage("bad API key".into()))?;
        req.headers_mut().insert("authorization", v);
    }
    let (ws, _) = match tokio_tungstenite::connect_async(req).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            let ErrorBody { code, message } =
                serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
                    code: "error".to_owned(),
                    message: "cannot open the terminal".to_owned(),
                });
            return Err(CliError::Api {
                status: resp.status().as_u16(),
                code,
                message,
            });
        }
        Err(e) => return Err(CliError::Protocol(format!("opening the terminal: {e}"))),
    };
    let (mut tx, mut rx) = ws.split();
    let raw = RawMode::enter();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| CliError::io("watching the window size", e))?;
    let mut buf = vec![0u8; 16 << 10];
    let mut stdin_open = true;
    let code = loop {
        tokio::select! {
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if tx.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break 1;
                    }
                }
            },
            _ = winch.recv() => {
                let (cols, rows) = window_size();
                let msg = serde_json::to_string(&PtyControl::Resize { cols, rows }).unwrap_or_default();
                let _ = tx.send(Message::Text(msg.into())).await;
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if stdout.write_all(&b).await.is_err() || stdout.flush().await.is_err() {
                        break 1;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(PtyControl::Exit { exit_code, signal }) = serde_json::from_str(&t) {
                        break match signal {
                            Some(s) if s > 0 => 128 + s,
                            _ => exit_code,
                        };
                    }
                }
                Some(Ok(Message::Close(_))) | None => break 0,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    drop(raw);
                    return Err(CliError::Protocol(format!("the terminal connection broke: {e}")));
                }
            },
        }
    };
    drop(raw);
    let _ = tx.send(Message::Close(None)).await;
    Ok(code)
}
