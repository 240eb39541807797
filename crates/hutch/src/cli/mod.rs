//! The `hutch` command line: a thin client of the REST API. Every command
//! prints one-line errors and exits non-zero on failure; `--json` prints the
//! API's JSON for scripts.

pub mod client;
pub mod cp;
pub mod exec;
pub mod sandbox;
pub mod shell;

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use hutch_api_types::TemplateList;
use serde::Serialize;

pub use client::{Api, CliError};

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The Hutch API.
    #[arg(
        long,
        env = "HUTCH_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key (sent as `Authorization: Bearer`).
    #[arg(long, env = "HUTCH_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox and print its id once it can run commands.
    Create(sandbox::CreateArgs),
    /// List sandboxes.
    Ls(sandbox::ListArgs),
    /// Show one sandbox.
    Get { id: String },
    /// Delete sandboxes (every trace of them).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Set a sandbox's remaining life, in seconds from now.
    Timeout { id: String, seconds: u64 },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// List the templates this key can use.
    Ls,
}

/// `KEY=VALUE` pairs from repeated flags.
pub fn parse_pairs(pairs: &[String], what: &str) -> Result<BTreeMap<String, String>, CliError> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| CliError::Usage(format!("{what} {p:?} is not KEY=VALUE")))
        })
        .collect()
}

/// Prints rows as an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub async fn template_cmd(api: &Api, g: &Global, cmd: TemplateCmd) -> Result<i32, CliError> {
    match cmd {
        TemplateCmd::Ls => {
            let list: TemplateList = api
                .json(api.request(reqwest::Method::GET, "/v1/templates"))
                .await?;
            if g.json {
                print_json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .templates
                .iter()
                .map(|t| {
                    vec![
                        format!("{}:{}", t.name, t.tag),
                        t.state.clone(),
                        t.owner.clone(),
                        t.id.clone(),
                    ]
                })
                .collect();
            table(&["TEMPLATE", "STATE", "OWNER", "ID"], &rows);
            Ok(0)
        }
    }
}

/// Prints a reply for `--json`: pretty, with each object's keys in alphabetical order, as
/// the CLI has always printed the API's JSON (read back as a `serde_json::Value`, whose
/// objects sort their keys).
pub fn print_json<T: Serialize>(reply: &T) {
    println!("{}", json_text(reply));
}

fn json_text<T: Serialize>(reply: &T) -> String {
    serde_json::to_value(reply)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default()
}

/// A field as a table cell: strings without quotes, `null` as nothing, numbers as JSON
/// writes them (so a CPU count of 1 is `1.0`).
pub fn cell<T: Serialize>(field: &T) -> String {
    match serde_json::to_value(field).unwrap_or_default() {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_api_types::{SandboxView, TemplateList};

    /// A reply as the CLI printed it before it had types: read as a `serde_json::Value`.
    fn printed_as_value(sent: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(sent).expect("JSON");
        serde_json::to_string_pretty(&v).expect("print")
    }

    #[test]
    fn json_output_is_the_reply_with_its_keys_sorted() {
        let sandbox = r#"{"id":"sb0123456789abcdefghijklmn","state":"running","template":"busybox:latest","cpu":1.0,"memory_mb":512,"disk_mb":1024,"pids":256,"runtime":null,"metadata":{"team":"ml","a":"b"},"timeout_s":300,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:06Z","expires_at":"2026-01-02T03:09:05Z","failure_reason":null,"created_by":"ky0123456789abcdefghijklmn"}"#;
        let view: SandboxView = serde_json::from_str(sandbox).expect("a sandbox");
        assert_eq!(json_text(&view), printed_as_value(sandbox));
        let list = serde_json::json!({ "sandboxes": [view] });
        assert_eq!(
            json_text(&list),
            printed_as_value(&format!(r#"{{"sandboxes":[{sandbox}]}}"#))
        );

        let templates = r#"{"templates":[{"id":"tp0123456789abcdefghijklmn","name":"busybox","tag":"latest","state":"ready","owner":"platform","digest":"sha256:00","failure_reason":null,"created_at":"2026-01-02T03:04:05Z"}]}"#;
        let list: TemplateList = serde_json::from_str(templates).expect("templates");
        assert_eq!(json_text(&list), printed_as_value(templates));
    }

    #[test]
    fn cells_read_as_the_json_did() {
        assert_eq!(cell(&1.0_f64), "1.0");
        assert_eq!(cell(&0.25_f64), "0.25");
        assert_eq!(cell(&512_u32), "512");
        assert_eq!(cell(&Some("2026-01-02T03:04:05Z")), "2026-01-02T03:04:05Z");
        assert_eq!(cell(&None::<String>), "");
    }
}
