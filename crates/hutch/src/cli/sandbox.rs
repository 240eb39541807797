//! `hutch sandbox create|ls|get|rm|timeout`.

use clap::Args;
use hutch_api_types::{CreateSandboxRequest, SandboxList, SandboxView, TimeoutRequest};
use reqwest::Method;

use super::{Api, CliError, Global, SandboxCmd, cell, client::q, parse_pairs, print_json, table};

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

fn print_sandbox(g: &Global, v: &SandboxView) {
    if g.json {
        print_json(v);
        return;
    }
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
            v.id.clone(),
            v.state.clone(),
            v.template.clone(),
            cell(&v.cpu),
            cell(&v.memory_mb),
            cell(&v.disk_mb),
            cell(&v.expires_at),
        ]],
    );
}

pub async fn run(api: &Api, g: &Global, cmd: SandboxCmd) -> Result<i32, CliError> {
    match cmd {
        SandboxCmd::Create(a) => {
            let body = CreateSandboxRequest {
                template: a.template,
                cpu: a.cpu,
                memory_mb: a.memory_mb,
                disk_mb: a.disk_mb,
                pids: a.pids,
                env: parse_pairs(&a.env, "--env")?,
                metadata: parse_pairs(&a.metadata, "--metadata")?,
                runtime: a.runtime,
                timeout_s: a.timeout,
            };
            let v: SandboxView = api
                .json(api.request(Method::POST, "/v1/sandboxes").json(&body))
                .await?;
            if g.json {
                print_sandbox(g, &v);
            } else {
                println!("{}", v.id);
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
                let page: SandboxList = api.json(api.request(Method::GET, &path)).await?;
                all.extend(page.sandboxes);
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
            if g.json {
                print_json(&serde_json::json!({ "sandboxes": all }));
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = all
                .into_iter()
                .map(|v| vec![v.id, v.state, v.template, v.created_at])
                .collect();
            table(&["ID", "STATE", "TEMPLATE", "CREATED_AT"], &rows);
            Ok(0)
        }
        SandboxCmd::Get { id } => {
            let v: SandboxView = api
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
            let v: SandboxView = api
                .json(
                    api.request(Method::POST, &format!("/v1/sandboxes/{}/timeout", q(&id)))
                        .json(&TimeoutRequest { timeout_s: seconds }),
                )
                .await?;
            print_sandbox(g, &v);
            Ok(0)
        }
    }
}
