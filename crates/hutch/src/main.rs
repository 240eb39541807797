//! The `hutch` binary: `hutch serve` runs the platform; every other command
//! is a client of its REST API.

mod cli;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::{Api, Global, SandboxCmd, TemplateCmd};

#[derive(Parser)]
#[command(
    name = "hutch",
    version,
    about = "Run untrusted code in isolated sandboxes"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the platform: REST API, control plane and the host agent.
    Serve(serve::ServeArgs),
    /// Manage sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Run a command in a sandbox; exits with its exit code.
    Exec(cli::exec::ExecArgs),
    /// Open an interactive terminal in a sandbox.
    Shell(cli::shell::ShellArgs),
    /// Copy a file into or out of a sandbox.
    Cp(cli::cp::CpArgs),
    /// Templates.
    #[command(subcommand)]
    Template(TemplateCmd),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    if let Cmd::Serve(serve_args) = args.cmd {
        return run_server(serve_args);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hutch: starting: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api = Api::new(&args.global.url, args.global.api_key.clone());
    let g = args.global.clone();
    let result = rt.block_on(async move {
        match args.cmd {
            Cmd::Sandbox(c) => cli::sandbox::run(&api, &g, c).await,
            Cmd::Exec(a) => cli::exec::run(&api, &g, a).await,
            Cmd::Shell(a) => cli::shell::run(&api, &g, a).await,
            Cmd::Cp(a) => cli::cp::run(&api, &g, a).await,
            Cmd::Template(c) => cli::template_cmd(&api, &g, c).await,
            Cmd::Serve(_) => Err(cli::CliError::Usage("serve runs on its own".into())),
        }
    });
    // A read of the terminal may still sit in tokio's blocking pool (stdin
    // cannot be cancelled); don't wait for it.
    rt.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("hutch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(args: serve::ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HUTCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hutch: starting: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hutch serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}
