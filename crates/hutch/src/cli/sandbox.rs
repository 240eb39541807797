//! `hutch sandbox create|ls|get|rm|timeout`.

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Api, CliError, Global, SandboxCmd, client::q, parse_pairs, table, value_text};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Template `name[:tag]`.
    #[arg(long, short, default_value = "debian:12")]
    pub template: String,
    #[arg(long)]
    pub cpu: Option<f64>,
    #[arg(long)]
    pub memory_mb: Option<u64>,
    #[arg(long)]
    pub disk_mb: Option<u64>,
    #[arg(long)]
    pub pids: Option<u64>,
    /// OCI runtime: crun, runc.
    #[arg(long)]
    pub runtime: Option<String>,
    /// Life in seconds before the sandbox is removed.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// `KEY=VALUE` environment variable for every process (repeatable).
    #[arg(long = "env", short)]
    pub env: Vec<String>,
    /// `KEY=VALUE` metadata (repeatable).
    #[arg(long = "metadata", short)]
    pub metadata: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sandboxes in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// Only sandboxes with this `KEY=VALUE` metadata (repeatable).
    #[arg(long = "metadata", short)]
    pub metadata: Vec<String>,
    /// Page size; all pages are fetched.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

fn print_sandbox(g: &Global, v: &Value) {
    if g.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let s = |k: &str| v.get(k).map(value_text).unwrap_or_default();
    table(
        &[
            "ID",
            "STATE",
            "TEMPLATE",
            "CPU",
            "MEMORY_MB",
            "DISK_MB",
            "EXPIRES_AT",
        ],
        &[vec![
            s("id"),
            s("state"),
            s("template"),
            s("cpu"),
            s("memory_mb"),
            s("disk_mb"),
            s("expires_at"),
        ]],
    );
}

pub async fn run(api: &Api, g: &Global, cmd: SandboxCmd) -> Result<i32, CliError> {
    match cmd {
        SandboxCmd::Create(a) => {
            let mut body = json!({ "template": a.template });
            let obj = body
                .as_object_mut()
                .ok_or_else(|| CliError::Usage("internal".into()))?;
            if let Some(v) = a.cpu {
                obj.insert("cpu".into(), json!(v));
            }
            for (k, v) in [
                ("memory_mb", a.memory_mb),
                ("disk_mb", a.disk_mb),
                ("pids", a.pids),
                ("timeout_s", a.timeout),
            ] {
                if let Some(v) = v {
                    obj.insert(k.into(), json!(v));
                }
            }
            if let Some(r) = a.runtime {
                obj.insert("runtime".into(), json!(r));
            }
            if !a.env.is_empty() {
                obj.insert("env".into(), json!(parse_pairs(&a.env, "--env")?));
            }
            if !a.metadata.is_empty() {
                obj.insert(
                    "metadata".into(),
                    json!(parse_pairs(&a.metadata, "--metadata")?),
                );
            }
            let v: Value = api
                .json(api.request(Method::POST, "/v1/sandboxes").json(&body))
                .await?;
            if g.json {
                print_sandbox(g, &v);
            } else {
                println!("{}", v.get("id").map(value_text).unwrap_or_default());
            }
            Ok(0)
        }
        SandboxCmd::Ls(a) => {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/v1/sandboxes?limit={}", a.limit);
                if let Some(s) = &a.state {
                    path.push_str(&format!("&state={}", q(s)));
                }
                for m in &a.metadata {
                    if !m.contains('=') {
                        return Err(CliError::Usage(format!(
                            "--metadata {m:?} is not KEY=VALUE"
                        )));
                    }
                    path.push_str(&format!("&metadata={}", q(m)));
                }
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", q(c)));
                }
                let page: Value = api.json(api.request(Method::GET, &path)).await?;
                all.extend(
                    page.get("sandboxes")
                        .and_then(|s| s.as_array())
                        .cloned()
                        .unwrap_or_default(),
                );
                cursor = page
                    .get("next_cursor")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned);
                if cursor.is_none() {
                    break;
                }
            }
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "sandboxes": all })).unwrap_or_default()
                );
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|v| {
                    let s = |k: &str| v.get(k).map(value_text).unwrap_or_default();
                    vec![s("id"), s("state"), s("template"), s("created_at")]
                })
                .collect();
            table(&["ID", "STATE", "TEMPLATE", "CREATED_AT"], &rows);
            Ok(0)
        }
        SandboxCmd::Get { id } => {
            let v: Value = api
                .json(api.request(Method::GET, &format!("/v1/sandboxes/{}", q(&id))))
                .await?;
            print_sandbox(g, &v);
            Ok(0)
        }
        SandboxCmd::Rm { ids } => {
            let mut failed = 0;
            for id in ids {
                match api
                    .send(api.request(Method::DELETE, &format!("/v1/sandboxes/{}", q(&id))))
                    .await
                {
                    Ok(_) => {
                        if !g.json {
                            println!("{id}");
                        }
                    }
                    Err(e) => {
                        eprintln!("hutch: removing {id}: {e}");
                        failed += 1;
                    }
                }
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
        SandboxCmd::Timeout { id, seconds } => {
            let v: Value = api
                .json(
                    api.request(Method::POST, &format!("/v1/sandboxes/{}/timeout", q(&id)))
                        .json(&json!({ "timeout_s": seconds })),
                )
                .await?;
            print_sandbox(g, &v);
            Ok(0)
        }
    }
}
