//! Configuration of the guest from flags and environment variables.
//!
//! Every flag has a `HUTCH_GUEST_*` environment twin so the agent can
//! configure the guest through the OCI process env alone.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

/// hutch-guest: the daemon inside every Hutch sandbox, wire-compatible with
/// E2B's envd.
#[derive(Debug, Clone, Parser)]
#[command(name = "hutch-guest", version)]
pub struct Args {
    /// TCP address to serve on; `none` disables TCP.
    #[arg(long, env = "HUTCH_GUEST_LISTEN", default_value = "0.0.0.0:49983")]
    pub listen: String,
    /// Unix socket path to serve the same API on (created 0600; replaced if stale).
    #[arg(long, env = "HUTCH_GUEST_LISTEN_UNIX")]
    pub listen_unix: Option<PathBuf>,
    /// An inherited, already listening socket (Unix or TCP) to serve on as
    /// well. The agent binds the sandbox's socket in a host directory the
    /// sandbox never sees and passes it in, so no path the sandbox can write
    /// is ever connected to from the host (R1).
    #[arg(long, env = "HUTCH_GUEST_LISTEN_FD")]
    pub listen_fd: Option<i32>,
    /// User that processes and file operations run as unless a request names one.
    #[arg(long = "user", env = "HUTCH_GUEST_USER", default_value = "root")]
    pub default_user: String,
    /// Working directory of processes that name none (default: the user's home).
    #[arg(long = "workdir", env = "HUTCH_GUEST_WORKDIR")]
    pub default_workdir: Option<PathBuf>,
    /// `KEY=VALUE` set for every process (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub envs: Vec<String>,
    /// File of `KEY=VALUE` lines set for every process.
    #[arg(long, env = "HUTCH_GUEST_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Access token every route but /health requires in `X-Access-Token`.
    #[arg(long, env = "HUTCH_GUEST_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,
    /// File holding the access token (read once at start, then it may be removed).
    #[arg(long, env = "HUTCH_GUEST_ACCESS_TOKEN_FILE")]
    pub access_token_file: Option<PathBuf>,
    /// Largest Connect message accepted, in bytes.
    #[arg(long, env = "HUTCH_GUEST_MAX_MESSAGE_BYTES", default_value_t = 4 << 20)]
    pub max_message_bytes: usize,
    /// Output of one process held in memory at most, in bytes, whatever it prints (R16).
    #[arg(long, env = "HUTCH_GUEST_MAX_OUTPUT_BUFFER", default_value_t = 1 << 20)]
    pub max_output_buffer: usize,
    /// Largest upload through POST /files, in bytes (0: only the disk limits it).
    #[arg(long, env = "HUTCH_GUEST_MAX_UPLOAD_BYTES", default_value_t = 0)]
    pub max_upload_bytes: u64,
    /// Longest path accepted in any request, in bytes.
    #[arg(long, env = "HUTCH_GUEST_MAX_PATH_LEN", default_value_t = 4096)]
    pub max_path_len: usize,
    /// Keepalive interval of streams whose client asks for none, in seconds.
    #[arg(long, env = "HUTCH_GUEST_KEEPALIVE_SECS", default_value_t = 90)]
    pub keepalive_secs: u64,
    /// Where `etc/passwd` and `etc/group` are read from.
    #[arg(long, env = "HUTCH_GUEST_ETC_ROOT", default_value = "/", hide = true)]
    pub etc_root: PathBuf,
    /// The sandbox's cgroup as it sees it (for OOM detection and metrics).
    #[arg(
        long,
        env = "HUTCH_GUEST_CGROUP_ROOT",
        default_value = "/sys/fs/cgroup",
        hide = true
    )]
    pub cgroup_root: PathBuf,
    /// Where /proc is mounted (for metrics).
    #[arg(
        long,
        env = "HUTCH_GUEST_PROC_ROOT",
        default_value = "/proc",
        hide = true
    )]
    pub proc_root: PathBuf,
    /// Seconds to wait for children after SIGTERM before exiting.
    #[arg(long, env = "HUTCH_GUEST_STOP_GRACE_SECS", default_value_t = 5)]
    pub stop_grace_secs: u64,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Option<SocketAddr>,
    pub listen_unix: Option<PathBuf>,
    pub listen_fd: Option<i32>,
    pub default_user: String,
    pub default_workdir: Option<PathBuf>,
    pub envs: BTreeMap<String, String>,
    pub access_token: Option<String>,
    pub max_message_bytes: usize,
    pub max_output_buffer: usize,
    pub max_upload_bytes: Option<u64>,
    pub max_path_len: usize,
    pub keepalive_default: Duration,
    pub etc_root: PathBuf,
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
    pub stop_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--listen {0:?} is not an address (or `none`)")]
    Listen(String),
    #[error("environment variable {0:?} is not KEY=VALUE with a valid name")]
    Env(String),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--listen-fd must be 3 or more")]
    ListenFd,
    #[error("the access token is empty")]
    EmptyToken,
    #[error("--max-message-bytes must be between 1 KiB and 64 MiB")]
    MessageLimit,
    #[error("--max-output-buffer must be between 4 KiB and 64 MiB")]
    OutputLimit,
}

fn parse_env(line: &str) -> Result<(String, String), ConfigError> {
    let (k, v) = line
        .split_once('=')
        .ok_or_else(|| ConfigError::Env(line.to_owned()))?;
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !v.contains('\0');
    if !valid {
        return Err(ConfigError::Env(line.to_owned()));
    }
    Ok((k.to_owned(), v.to_owned()))
}

impl Config {
    pub fn from_args(a: Args) -> Result<Config, ConfigError> {
        let listen = if a.listen.eq_ignore_ascii_case("none") {
            None
        } else {
            Some(
                a.listen
                    .parse()
                    .map_err(|_| ConfigError::Listen(a.listen.clone()))?,
            )
        };
        let mut envs = BTreeMap::new();
        if let Some(path) = &a.env_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let (k, v) = parse_env(line)?;
                envs.insert(k, v);
            }
        }
        for e in &a.envs {
            let (k, v) = parse_env(e)?;
            envs.insert(k, v);
        }
        let access_token = match (&a.access_token, &a.access_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if a.listen_fd.is_some_and(|fd| fd < 3) {
            return Err(ConfigError::ListenFd);
        }
        if access_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        if !(1 << 10..=64 << 20).contains(&a.max_message_bytes) {
            return Err(ConfigError::MessageLimit);
        }
        if !(4 << 10..=64 << 20).contains(&a.max_output_buffer) {
            return Err(ConfigError::OutputLimit);
        }
        Ok(Config {
            listen,
            listen_unix: a.listen_unix,
            listen_fd: a.listen_fd,
            default_user: a.default_user,
            default_workdir: a.default_workdir,
            envs,
            access_token,
            max_message_bytes: a.max_message_bytes,
            max_output_buffer: a.max_output_buffer,
            max_upload_bytes: (a.max_upload_bytes > 0).then_some(a.max_upload_bytes),
            max_path_len: a.max_path_len,
            keepalive_default: Duration::from_secs(a.keepalive_secs.clamp(1, 3600)),
            etc_root: a.etc_root,
            cgroup_root: a.cgroup_root,
            proc_root: a.proc_root,
            stop_grace: Duration::from_secs(a.stop_grace_secs),
        })
    }

    /// A configuration for tests: loopback only, no token.
    pub fn for_tests() -> Config {
        Config::from_args(Args::parse_from(["hutch-guest", "--listen", "127.0.0.1:0"]))
            .unwrap_or_else(|e| panic!("test config: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(parse_env("_X1=").unwrap(), ("_X1".into(), "".into()));
        for bad in ["=x", "1A=x", "A-B=x", "noequals", "A=\0"] {
            assert!(parse_env(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_none_and_limits() {
        let c = Config::from_args(Args::parse_from([
            "g",
            "--listen",
            "none",
            "--listen-unix",
            "/tmp/x.sock",
        ]))
        .unwrap();
        assert!(c.listen.is_none());
        assert!(Config::from_args(Args::parse_from(["g", "--listen", "nope"])).is_err());
        assert!(Config::from_args(Args::parse_from(["g", "--max-message-bytes", "10"])).is_err());
        assert!(Config::from_args(Args::parse_from(["g", "--access-token", ""])).is_err());
    }
}
