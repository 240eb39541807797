//! `hutch exec ID -- CMD...`: runs a command, streams its output as it
//! comes (NDJSON events from the API), and exits with the command's exit
//! code (128 + signal when a signal ended it, as shells do).

use std::io::{Read, Write};

use base64::Engine as _;
use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

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
    let mut body = json!({ "cmd": a.cmd });
    let obj = body
        .as_object_mut()
        .ok_or_else(|| CliError::Usage("internal".into()))?;
    if !a.env.is_empty() {
        obj.insert("env".into(), json!(parse_pairs(&a.env, "--env")?));
    }
    if let Some(c) = a.cwd {
        obj.insert("cwd".into(), json!(c));
    }
    if let Some(u) = a.user {
        obj.insert("user".into(), json!(u));
    }
    if let Some(t) = a.timeout {
        obj.insert("timeout_s".into(), json!(t));
    }
    if a.stdin {
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
        obj.insert("stdin".into(), json!(input));
    }
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
            let ev: Value = serde_json::from_slice(&line)
                .map_err(|e| CliError::Protocol(format!("bad event line: {e}")))?;
            if g.json {
                println!("{}", String::from_utf8_lossy(&line).trim_end());
            }
            match ev.get("type").and_then(|t| t.as_str()) {
                Some(kind @ ("stdout" | "stderr")) if !g.json => {
                    let data = event_bytes(&ev)?;
                    let r = if kind == "stdout" {
                        let mut o = stdout.lock();
                        o.write_all(&data).and_then(|_| o.flush())
                    } else {
                        let mut e = stderr.lock();
                        e.write_all(&data).and_then(|_| e.flush())
                    };
                    r.map_err(|e| CliError::io("writing output", e))?;
                }
                Some("exit") => {
                    let signal = ev.get("signal").and_then(|s| s.as_i64());
                    let exit = ev.get("exit_code").and_then(|c| c.as_i64()).unwrap_or(1);
                    if !g.json && ev.get("oom").and_then(|o| o.as_bool()) == Some(true) {
                        eprintln!("hutch: the command was killed: out of memory");
                    }
                    if !g.json && ev.get("timed_out").and_then(|o| o.as_bool()) == Some(true) {
                        eprintln!("hutch: the command timed out");
                    }
                    code = Some(match signal {
                        Some(s) if s > 0 => 128 + s as i32,
                        _ => exit as i32,
                    });
                }
                Some("error") => {
                    let msg = ev
                        .get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("exec failed");
                    return Err(CliError::Protocol(msg.to_owned()));
                }
                _ => {}
            }
        }
    }
    code.ok_or_else(|| CliError::Protocol("the output stream ended without an exit event".into()))
}

/// The bytes of a stdout/stderr event: `data` (text) or `data_b64`.
fn event_bytes(ev: &Value) -> Result<Vec<u8>, CliError> {
    if let Some(s) = ev.get("data").and_then(|d| d.as_str()) {
        return Ok(s.as_bytes().to_vec());
    }
    if let Some(s) = ev.get("data_b64").and_then(|d| d.as_str()) {
        return base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| CliError::Protocol(format!("bad data_b64: {e}")));
    }
    Ok(Vec::new())
}
