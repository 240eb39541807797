//! `hutch exec ID -- CMD...`: runs a command, streams its output as it
//! comes (NDJSON events from the API), and exits with the command's exit
//! code (128 + signal when a signal ended it, as shells do).

use std::io::{Read, Write};

use base64::Engine as _;
use clap::Args;
use futures::StreamExt;
use hutch_api_types::{ExecEvent, ExecRequest};
use reqwest::Method;
use serde::de::IgnoredAny;

use super::{Api, CliError, Global, client::q, parse_pairs};

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub id: String,
    /// `KEY=VALUE` environment variable (repeatable).
    #[arg(long = "env", short)]
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(long)]
    pub cwd: Option<String>,
    /// User inside the sandbox.
    #[arg(long, short)]
    pub user: Option<String>,
    /// Seconds before the command is killed.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Send this process's standard input to the command.
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

/// Largest standard input `--stdin` sends.
const MAX_STDIN: u64 = 16 << 20;

pub async fn run(api: &Api, g: &Global, a: ExecArgs) -> Result<i32, CliError> {
    let env = parse_pairs(&a.env, "--env")?;
    let stdin = if a.stdin {
        let mut input = String::new();
        std::io::stdin()
            .take(MAX_STDIN + 1)
            .read_to_string(&mut input)
            .map_err(|e| CliError::io("reading standard input (it must be UTF-8 text)", e))?;
        if input.len() as u64 > MAX_STDIN {
            return Err(CliError::Usage(format!(
                "standard input is larger than {} MiB",
                MAX_STDIN >> 20
            )));
        }
        Some(input)
    } else {
        None
    };
    let body = ExecRequest {
        cmd: a.cmd,
        env,
        cwd: a.cwd,
        user: a.user,
        stdin,
        timeout_s: a.timeout,
        wait: false,
    };
    let resp = api
        .send(
            api.request(Method::POST, &format!("/v1/sandboxes/{}/exec", q(&a.id)))
                .json(&body),
        )
        .await?;
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut code: Option<i32> = None;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| CliError::Protocol(format!("the output stream broke: {e}")))?;
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let ev = parse_event(&line)?;
            if g.json {
                println!("{}", String::from_utf8_lossy(&line).trim_end());
            }
            match ev {
                Some(ExecEvent::Stdout { data, data_b64 }) if !g.json => {
                    write_output(&mut stdout.lock(), data, data_b64)?;
                }
                Some(ExecEvent::Stderr { data, data_b64 }) if !g.json => {
                    write_output(&mut stderr.lock(), data, data_b64)?;
                }
                Some(ExecEvent::Exit {
                    exit_code,
                    signal,
                    oom,
                    timed_out,
                }) => {
                    if !g.json && oom {
                        eprintln!("hutch: the command was killed: out of memory");
                    }
                    if !g.json && timed_out {
                        eprintln!("hutch: the command timed out");
                    }
                    code = Some(match signal {
                        Some(s) if s > 0 => 128 + s,
                        _ => exit_code,
                    });
                }
                Some(ExecEvent::Error { message, .. }) => {
                    return Err(CliError::Protocol(message));
                }
                _ => {}
            }
        }
    }
    code.ok_or_else(|| CliError::Protocol("the output stream ended without an exit event".into()))
}

/// One NDJSON line: an event, or `None` for a JSON line this CLI does not know (an event a
/// newer server added), which is skipped.
fn parse_event(line: &[u8]) -> Result<Option<ExecEvent>, CliError> {
    match serde_json::from_slice(line) {
        Ok(ev) => Ok(Some(ev)),
        Err(_) => serde_json::from_slice::<IgnoredAny>(line)
            .map(|_| None)
            .map_err(|e| CliError::Protocol(format!("bad event line: {e}"))),
    }
}

/// Writes the bytes of a stdout/stderr event, `data` (text) or `data_b64`, and flushes.
fn write_output(
    out: &mut impl Write,
    data: Option<String>,
    data_b64: Option<String>,
) -> Result<(), CliError> {
    let bytes = match (data, data_b64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| CliError::Protocol(format!("bad data_b64: {e}")))?,
        (None, None) => Vec::new(),
    };
    out.write_all(&bytes)
        .and_then(|_| out.flush())
        .map_err(|e| CliError::io("writing output", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        assert_eq!(
            parse_event(b"{\"type\":\"start\",\"pid\":7}\n").expect("an event"),
            Some(ExecEvent::Start { pid: 7 })
        );
        // A newer server's event is skipped; a line that is not JSON is an error.
        assert_eq!(
            parse_event(b"{\"type\":\"keepalive\"}\n").expect("skipped"),
            None
        );
        assert!(parse_event(b"{\"type\":\n").is_err());
    }

    #[test]
    fn output_is_text_or_base64() {
        let mut out = Vec::new();
        write_output(&mut out, Some("hi ".into()), None).expect("text");
        write_output(&mut out, None, Some("/w==".into())).expect("bytes");
        assert_eq!(out, b"hi \xff");
        assert!(write_output(&mut out, None, Some("!".into())).is_err());
    }
}
