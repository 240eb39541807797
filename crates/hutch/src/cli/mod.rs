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
            let v: serde_json::Value = api
                .json(api.request(reqwest::Method::GET, "/v1/templates"))
                .await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            let items = v
                .get("templates")
                .and_then(|t| t.as_array())
                .cloned()
                .unwrap_or_default();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|t| {
                    let s = |k: &str| t.get(k).map(value_text).unwrap_or_default();
                    vec![
                        format!("{}:{}", s("name"), s("tag")),
                        s("state"),
                        s("owner"),
                        s("id"),
                    ]
                })
                .collect();
            table(&["TEMPLATE", "STATE", "OWNER", "ID"], &rows);
            Ok(0)
        }
    }
}

/// A JSON value as plain text (strings without quotes).
pub fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}
