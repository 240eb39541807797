//! Validation of a `Start` request: a pure function from the request, the
//! resolved user and the configuration to a [`StartSpec`], the only thing
//! the spawner accepts (STYLE.md 6).
//!
//! 1. `cmd`, `args`, `envs`, `cwd` and `tag` are bounded in count and bytes
//!    and must hold no NUL (they become C strings); env names no `=`.
//! 2. The environment is a base (PATH, HOME, USER, LOGNAME, SHELL, and TERM
//!    for a PTY), then the configured envs, then the request's, later winning.
//! 3. The cwd: absent or empty means the configured workdir, else the user's
//!    home; `~` expands to the home; a relative path is taken from the home.
//!    Whether it exists is checked when spawning (that is IO).
//! 4. `stdin` absent means open, as envd does for clients older than 0.3.0;
//!    the SDKs send `false` for `commands.run` unless asked.
//! 5. `Connect-Timeout-Ms` of the Start call, when given, becomes a deadline
//!    after which the process group is killed (envd ties the process to the
//!    call's timeout, not to the connection).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use hutch_envd::process::{ProcessConfig, StartRequest};

use super::error::ProcessError;
use crate::{Config, users::User};

/// Most arguments a command may have.
pub const MAX_ARGS: usize = 4096;
/// Most environment variables a request may set.
pub const MAX_ENVS: usize = 1024;
/// Most bytes of cmd, arguments and environment together (Linux's own
/// limit for argv + envp is in this range).
pub const MAX_ARGV_ENV_BYTES: usize = 1 << 20;
/// Longest tag.
pub const MAX_TAG_BYTES: usize = 256;
/// Terminal size when a PTY is asked for without one.
pub const DEFAULT_PTY_SIZE: PtySize = PtySize { cols: 80, rows: 24 };
/// PATH of processes when the guest itself has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

/// A validated Start request.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub cmd: String,
    pub args: Vec<String>,
    /// The final environment, sorted by name.
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub user: User,
    pub pty: Option<PtySize>,
    pub tag: Option<String>,
    pub stdin: bool,
    /// The process config as the client gave it, for `List`.
    pub config: ProcessConfig,
    /// Kill the process this long after start (from `Connect-Timeout-Ms`).
    pub timeout: Option<Duration>,
}

fn no_nul(what: &str, s: &str) -> Result<(), ProcessError> {
    if s.contains('\0') {
        return Err(ProcessError::invalid(format!(
            "{what} must not contain NUL bytes"
        )));
    }
    Ok(())
}

/// Reads a PTY size; `None` means the default.
pub fn pty_size(size: Option<&hutch_envd::process::pty::Size>) -> Result<PtySize, ProcessError> {
    let Some(size) = size else {
        return Ok(DEFAULT_PTY_SIZE);
    };
    let cols = u16::try_from(size.cols).ok().filter(|c| *c > 0);
    let rows = u16::try_from(size.rows).ok().filter(|r| *r > 0);
    match (cols, rows) {
        (Some(cols), Some(rows)) => Ok(PtySize { cols, rows }),
        _ => Err(ProcessError::invalid(format!(
            "pty size {}x{} is out of range: cols and rows must be between 1 and 65535",
            size.cols, size.rows
        ))),
    }
}

/// Parses `Connect-Timeout-Ms` (at most 10 digits, as Connect says); 0 or
/// absent means no timeout.
pub fn parse_timeout(header: Option<&str>) -> Result<Option<Duration>, ProcessError> {
    let Some(v) = header.map(str::trim) else {
        return Ok(None);
    };
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProcessError::invalid(format!(
            "Connect-Timeout-Ms {v:?} is not a number of milliseconds"
        )));
    }
    let ms: u64 = v
        .parse()
        .map_err(|_| ProcessError::invalid("Connect-Timeout-Ms is out of range"))?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// Validates `req` for `user` (steps 1–4 of the module docs).
pub fn validate_start(
    req: StartRequest,
    user: User,
    config: &Config,
    guest_path: &str,
    timeout: Option<Duration>,
) -> Result<StartSpec, ProcessError> {
    let process = req
        .process
        .ok_or_else(|| ProcessError::invalid("process (cmd, args, envs, cwd) is required"))?;
    if process.cmd.is_empty() {
        return Err(ProcessError::invalid("cmd is required"));
    }
    if process.cmd.len() > config.max_path_len {
        return Err(ProcessError::invalid(format!(
            "cmd is longer than {} bytes",
            config.max_path_len
        )));
    }
    no_nul("cmd", &process.cmd)?;
    if process.args.len() > MAX_ARGS {
        return Err(ProcessError::invalid(format!(
            "too many args: {} (at most {MAX_ARGS})",
            process.args.len()
        )));
    }
    if process.envs.len() > MAX_ENVS {
        return Err(ProcessError::invalid(format!(
            "too many envs: {} (at most {MAX_ENVS})",
            process.envs.len()
        )));
    }
    let mut total = process.cmd.len();
    for (i, a) in process.args.iter().enumerate() {
        no_nul(&format!("args[{i}]"), a)?;
        total += a.len() + 1;
    }
    for (k, v) in &process.envs {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ProcessError::invalid(format!(
                "env name {k:?} is not valid: non-empty, without '=' or NUL"
            )));
        }
        no_nul(&format!("env {k}"), v)?;
        total += k.len() + v.len() + 2;
    }
    if total > MAX_ARGV_ENV_BYTES {
        return Err(ProcessError::invalid(format!(
            "cmd, args and envs take {total} bytes, more than the limit of {MAX_ARGV_ENV_BYTES}"
        )));
    }
    if let Some(tag) = &req.tag {
        if tag.len() > MAX_TAG_BYTES {
            return Err(ProcessError::invalid(format!(
                "tag is longer than {MAX_TAG_BYTES} bytes"
            )));
        }
        no_nul("tag", tag)?;
    }
    let pty = req
        .pty
        .as_ref()
        .map(|p| pty_size(p.size.as_ref()))
        .transpose()?;

    let cwd = resolve_cwd(process.cwd.as_deref(), &user, config)?;

    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), guest_path.to_owned());
    env.insert("HOME".to_owned(), user.home.to_string_lossy().into_owned());
    env.insert("USER".to_owned(), user.name.clone());
    env.insert("LOGNAME".to_owned(), user.name.clone());
    env.insert("SHELL".to_owned(), user.shell.clone());
    if pty.is_some() {
        env.insert("TERM".to_owned(), "xterm-256color".to_owned());
    }
    env.extend(config.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(process.envs.iter().map(|(k, v)| (k.clone(), v.clone())));

    Ok(StartSpec {
        cmd: process.cmd.clone(),
        args: process.args.clone(),
        env,
        cwd,
        user,
        pty,
        tag: req.tag,
        stdin: req.stdin.unwrap_or(true),
        config: process,
        timeout,
    })
}

/// Step 3 of the module docs.
fn resolve_cwd(cwd: Option<&str>, user: &User, config: &Config) -> Result<PathBuf, ProcessError> {
    let cwd = cwd.unwrap_or_default();
    if cwd.len() > config.max_path_len {
        return Err(ProcessError::invalid(format!(
            "cwd is longer than {} bytes",
            config.max_path_len
        )));
    }
    no_nul("cwd", cwd)?;
    if cwd.is_empty() {
        return Ok(config
            .default_workdir
            .clone()
            .unwrap_or_else(|| user.home.clone()));
    }
    if cwd == "~" {
        return Ok(user.home.clone());
    }
    if let Some(rest) = cwd.strip_prefix("~/") {
        return Ok(user.home.join(rest));
    }
    if cwd.starts_with('/') {
        return Ok(PathBuf::from(cwd));
    }
    Ok(user.home.join(cwd))
}

#[cfg(test)]
mod tests {
    use hutch_envd::process::{Pty, pty::Size};

    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![10],
            home: "/home/user".into(),
            shell: "/bin/bash".into(),
        }
    }

    fn req(cmd: &str, args: &[&str], envs: &[(&str, &str)], cwd: Option<&str>) -> StartRequest {
        StartRequest {
            process: Some(ProcessConfig {
                cmd: cmd.into(),
                args: args.iter().map(|a| a.to_string()).collect(),
                envs: envs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                cwd: cwd.map(Into::into),
            }),
            ..Default::default()
        }
    }

    fn check(r: StartRequest) -> Result<StartSpec, ProcessError> {
        let mut c = Config::for_tests();
        c.envs.insert("FROM_CONFIG".into(), "1".into());
        c.envs.insert("SHARED".into(), "config".into());
        validate_start(r, user(), &c, "/bin", None)
    }

    #[test]
    fn rejects_bad_requests() {
        let long = "a".repeat(MAX_ARGV_ENV_BYTES);
        let many: Vec<&str> = vec!["x"; MAX_ARGS + 1];
        let cases: Vec<(&str, StartRequest, &str)> = vec![
            ("no process", StartRequest::default(), "process"),
            ("empty cmd", req("", &[], &[], None), "cmd is required"),
            ("nul in cmd", req("a\0b", &[], &[], None), "NUL"),
            (
                "nul in arg",
                req("sh", &["ok", "b\0"], &[], None),
                "args[1]",
            ),
            (
                "too many args",
                req("sh", &many, &[], None),
                "too many args",
            ),
            ("huge args", req("sh", &[&long], &[], None), "bytes"),
            (
                "env with =",
                req("sh", &[], &[("A=B", "x")], None),
                "env name",
            ),
            (
                "empty env name",
                req("sh", &[], &[("", "x")], None),
                "env name",
            ),
            (
                "nul in env value",
                req("sh", &[], &[("A", "\0")], None),
                "NUL",
            ),
            ("nul in cwd", req("sh", &[], &[], Some("/tmp\0")), "cwd"),
        ];
        for (name, r, want) in cases {
            match check(r) {
                Err(e @ ProcessError::Invalid(_)) => {
                    assert!(e.to_string().contains(want), "{name}: {e}")
                }
                other => panic!("{name}: expected invalid_argument, got {other:?}"),
            }
        }
        let mut r = req("sh", &[], &[], None);
        r.tag = Some("t".repeat(MAX_TAG_BYTES + 1));
        assert!(matches!(check(r), Err(ProcessError::Invalid(_))));
        let mut r = req("sh", &[], &[], None);
        r.pty = Some(Pty {
            size: Some(Size {
                cols: 70000,
                rows: 24,
            }),
        });
        assert!(matches!(check(r), Err(ProcessError::Invalid(_))));
    }

    #[test]
    fn env_layers_and_defaults() {
        let s = check(req(
            "sh",
            &[],
            &[("SHARED", "request"), ("HOME", "/elsewhere")],
            None,
        ))
        .expect("test setup");
        assert_eq!(s.env["PATH"], "/bin");
        assert_eq!(s.env["USER"], "user");
        assert_eq!(s.env["LOGNAME"], "user");
        assert_eq!(s.env["SHELL"], "/bin/bash");
        assert_eq!(s.env["FROM_CONFIG"], "1");
        assert_eq!(s.env["SHARED"], "request");
        assert_eq!(s.env["HOME"], "/elsewhere");
        assert!(!s.env.contains_key("TERM"));
        assert!(s.stdin, "absent stdin means open, as envd");
        assert!(s.pty.is_none());

        let mut r = req("bash", &[], &[], None);
        r.pty = Some(Pty { size: None });
        r.stdin = Some(false);
        let s = check(r).expect("test setup");
        assert_eq!(s.env["TERM"], "xterm-256color");
        assert_eq!(s.pty, Some(DEFAULT_PTY_SIZE));
        assert!(!s.stdin);
    }

    #[test]
    fn cwd_resolution() {
        let cases = [
            (None, "/home/user"),
            (Some(""), "/home/user"),
            (Some("~"), "/home/user"),
            (Some("~/src"), "/home/user/src"),
            (Some("src"), "/home/user/src"),
            (Some("/tmp"), "/tmp"),
        ];
        for (cwd, want) in cases {
            assert_eq!(
                check(req("sh", &[], &[], cwd)).expect("test setup").cwd,
                PathBuf::from(want),
                "{cwd:?}"
            );
        }
        let mut c = Config::for_tests();
        c.default_workdir = Some("/work".into());
        let s = validate_start(req("sh", &[], &[], None), user(), &c, "/bin", None)
            .expect("test setup");
        assert_eq!(s.cwd, PathBuf::from("/work"));
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout(None).expect("test setup"), None);
        assert_eq!(parse_timeout(Some("0")).expect("test setup"), None);
        assert_eq!(
            parse_timeout(Some("60000")).expect("test setup"),
            Some(Duration::from_secs(60))
        );
        for bad in ["", "-1", "1.5", "12345678901", "abc"] {
            assert!(parse_timeout(Some(bad)).is_err(), "{bad}");
        }
    }
}
