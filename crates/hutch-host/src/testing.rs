//! `ProcessAgent`: a **test double** of the host agent for the integration tier.
//!
//! It runs the real `hutch-guest` binary for each sandbox as a plain host process — no
//! namespaces, no cgroups, no root filesystem, **no isolation at all** — serving its API on a
//! Unix socket in a per-sandbox temp directory, with a fixture `etc/` (`--etc-root`) naming the
//! current user `root`. The control plane and the API are thereby tested end to end, guest
//! protocol included, without root. The real agent (runtime, rootfs, cgroups) lives in
//! `hutch-agent` and is not this.
//!
//! Layout under the root directory, one directory per sandbox (its id):
//! `guest.sock`, `token` (0600), `pid`, `guest.log`, `etc/{passwd,group}`, `home/` (the
//! user's home and the default working directory), `cgroup/memory.events`.
//!
//! Children are kept in a process-wide table so that a second `ProcessAgent` over the same
//! root (a "restarted server" in a test) still reaps them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::{AgentError, HostAgent, HostSandboxState, Launch, Launched, TemplateLayers};
use async_trait::async_trait;
use hutch_core::error::error_chain;
use hutch_core::{Capacity, Runtime, SandboxId};
use hutch_guest_client::{Endpoint, GuestClient};

fn children() -> &'static Mutex<HashMap<u32, Child>> {
    static CHILDREN: OnceLock<Mutex<HashMap<u32, Child>>> = OnceLock::new();
    CHILDREN.get_or_init(Default::default)
}

/// Builds `hutch-guest` (debug profile, the shared target directory) once per process and
/// returns its path. Fails with cargo's output when the build fails.
pub fn guest_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .args(["build", "-q", "-p", "hutch-guest", "--bin", "hutch-guest"])
            .current_dir(&workspace)
            .output()
            .map_err(|e| format!("running cargo to build hutch-guest: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`cargo build -p hutch-guest` failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let bin = target.join("debug/hutch-guest");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "hutch-guest was built but {} is missing",
                bin.display()
            ))
        }
    })
    .clone()
}

/// The test double (module docs).
pub struct ProcessAgent {
    guest_bin: PathBuf,
    root: PathBuf,
    launch_delay: Duration,
    capacity: Capacity,
}

fn host_err(
    op: &'static str,
    id: &SandboxId,
    e: impl std::error::Error + Send + Sync + 'static,
) -> AgentError {
    AgentError::Host {
        op,
        id: id.clone(),
        source: Box::new(e),
    }
}

impl ProcessAgent {
    /// Sandboxes live under `root` (created if missing).
    pub fn new(guest_bin: PathBuf, root: PathBuf) -> Self {
        ProcessAgent {
            guest_bin,
            root,
            launch_delay: Duration::ZERO,
            capacity: Capacity {
                max_sandboxes: 1000,
                cpu_millis: 1_000_000,
                memory_mb: 1 << 20,
                disk_mb: 1 << 24,
            },
        }
    }

    /// Reports `capacity` as what this host can hold (to test admission).
    pub fn with_capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Makes every launch take at least `d` (to test clients that give up mid-create).
    pub fn with_launch_delay(mut self, d: Duration) -> Self {
        self.launch_delay = d;
        self
    }

    pub fn dir_of(&self, id: &SandboxId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// The sandbox user's home: where relative file paths land.
    pub fn home_of(&self, id: &SandboxId) -> PathBuf {
        self.dir_of(id).join("home")
    }

    /// The host pid of the sandbox's guest.
    pub fn pid_of(&self, id: &SandboxId) -> Option<u32> {
        std::fs::read_to_string(self.dir_of(id).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the guest of every sandbox under this agent's root (a test's end: guests are
    /// host processes here and would outlive the test otherwise).
    pub fn kill_all(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            if let Some(pid) = std::fs::read_to_string(e.path().join("pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                kill_pid(pid);
            }
        }
    }

    /// Kills a sandbox's guest the way a crash would (its directory stays).
    pub fn kill_guest(&self, id: &SandboxId) {
        if let Some(pid) = self.pid_of(id) {
            kill_pid(pid);
        }
    }

    /// Whether the guest process `pid` still runs (not a zombie).
    pub fn is_alive(pid: u32) -> bool {
        {
            let mut table = children().lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(child) = table.get_mut(&pid) {
                return matches!(child.try_wait(), Ok(None));
            }
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        !stat.is_empty()
            && state != Some(Some('Z'))
            && String::from_utf8_lossy(&cmdline).contains("hutch-guest")
    }

    fn write_fixture(&self, dir: &Path, token: &str) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)?;
        for sub in ["etc", "home", "cgroup"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let home = dir.join("home");
        std::fs::write(
            dir.join("etc/passwd"),
            format!("root:x:{uid}:{gid}:root:{}:/bin/sh\n", home.display()),
        )?;
        std::fs::write(dir.join("etc/group"), format!("root:x:{gid}:\n"))?;
        std::fs::write(dir.join("cgroup/memory.events"), "oom 0\noom_kill 0\n")?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("token"))?;
        std::io::Write::write_all(&mut f, token.as_bytes())
    }

    fn spawn_guest(&self, launch: &Launch, dir: &Path) -> std::io::Result<u32> {
        let log = std::fs::File::create(dir.join("guest.log"))?;
        let mut cmd = Command::new(&self.guest_bin);
        cmd.arg("--listen")
            .arg("none")
            .arg("--listen-unix")
            .arg(dir.join("guest.sock"))
            .arg("--etc-root")
            .arg(dir)
            .arg("--cgroup-root")
            .arg(dir.join("cgroup"))
            .arg("--access-token-file")
            .arg(dir.join("token"))
            .arg("--workdir")
            .arg(dir.join("home"));
        for (k, v) in launch.environment() {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.env_remove("HUTCH_GUEST_ACCESS_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn()?;
        let pid = child.id();
        children()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pid, child);
        std::fs::write(dir.join("pid"), pid.to_string())?;
        Ok(pid)
    }

    async fn wait_ready(&self, id: &SandboxId) -> Result<(), AgentError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let client = self.guest(id)?;
            match client.health().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(AgentError::GuestNotReady {
                        id: id.clone(),
                        reason: error_chain(&e),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

/// SIGKILL and reap (when the child is ours); a pid that is no longer a guest is left alone.
fn kill_pid(pid: u32) {
    let ours = children()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&pid);
    match ours {
        Some(mut child) => {
            let _ = child.kill();
            let _ = child.wait();
        }
        None => {
            if ProcessAgent::is_alive(pid)
                && let Some(p) = i32::try_from(pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

#[async_trait]
impl HostAgent for ProcessAgent {
    async fn ensure_template(&self, _template: &TemplateLayers) -> Result<(), AgentError> {
        Ok(())
    }

    async fn launch(&self, launch: Launch) -> Result<Launched, AgentError> {
        let id = launch.id.clone();
        let dir = self.dir_of(&id);
        if !self.runtimes().contains(&launch.runtime) {
            return Err(AgentError::RuntimeUnavailable(launch.runtime.to_string()));
        }
        // Another launch's sandbox: refuse and leave it alone (the contract of `launch`).
        if dir.exists() {
            return Err(host_err(
                "claiming the sandbox directory",
                &id,
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            ));
        }
        tokio::time::sleep(self.launch_delay).await;
        let started = self
            .write_fixture(&dir, &launch.guest_token)
            .and_then(|()| self.spawn_guest(&launch, &dir));
        let result = match started {
            Ok(pid) => self.wait_ready(&id).await.map(|()| pid),
            Err(e) => Err(host_err("starting the guest", &id, e)),
        };
        match result {
            Ok(pid) => Ok(Launched {
                id,
                runtime: launch.runtime,
                init_pid: pid,
            }),
            Err(e) => {
                let _ = self.destroy(&id).await;
                Err(e)
            }
        }
    }

    fn guest(&self, id: &SandboxId) -> Result<GuestClient, AgentError> {
        let dir = self.dir_of(id);
        let token = std::fs::read_to_string(dir.join("token"))
            .map_err(|_| AgentError::NotFound(id.clone()))?;
        Ok(GuestClient::new(Endpoint::Unix(dir.join("guest.sock"))).with_token(token))
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), AgentError> {
        let dir = self.dir_of(id);
        if let Some(pid) = self.pid_of(id) {
            tokio::task::spawn_blocking(move || kill_pid(pid))
                .await
                .map_err(|e| host_err("killing the guest", id, e))?;
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(host_err("removing the sandbox directory", id, e)),
        }
    }

    async fn inspect(&self, id: &SandboxId) -> Result<HostSandboxState, AgentError> {
        if !self.dir_of(id).is_dir() {
            return Ok(HostSandboxState::Missing);
        }
        Ok(match self.pid_of(id) {
            Some(pid) if Self::is_alive(pid) => HostSandboxState::Running,
            Some(pid) => HostSandboxState::Dead {
                reason: format!("guest process {pid} is gone"),
            },
            None => HostSandboxState::Dead {
                reason: "no guest process was recorded".to_owned(),
            },
        })
    }

    async fn held(&self) -> Result<Vec<SandboxId>, AgentError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(AgentError::HostWide {
                    op: "listing sandboxes",
                    source: Box::new(e),
                });
            }
        };
        for entry in entries.flatten() {
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| SandboxId::parse(n).ok())
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn runtimes(&self) -> Vec<Runtime> {
        vec![Runtime::Crun, Runtime::Runc]
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }
}
