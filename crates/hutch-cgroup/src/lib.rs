//! cgroup v1 and v2 behind one interface.
//!
//! **Owns**: finding out how a cgroup mount is laid out (v1 per-controller hierarchies, possibly
//! with a hybrid cgroup2 mount beside them, or one unified v2 tree), naming the per-sandbox cgroup
//! (`<parent>/<sandbox-id>`, the value that goes into the OCI `linux.cgroupsPath`), reading its
//! accounting (memory, OOM kills, pids, CPU), freezing and thawing it, signalling every process in
//! it, removing its directories in every hierarchy, and listing leftover sandbox cgroups.
//!
//! It also turns on the cgroup2 option that makes moving tasks between cgroups cheap
//! ([`dynmods`]), which the host agent asks for at start.
//!
//! **Must not**: decide limits (the OCI runtime writes them from the bundle), start processes, or
//! signal a process by a PID it read earlier without freezing the cgroup first (R13: a PID read
//! from `cgroup.procs` of a frozen cgroup cannot be recycled under us, except by an outside
//! `SIGKILL`).
//!
//! The root (normally `/sys/fs/cgroup`) is a constructor parameter so unit tests run against
//! fixture trees in a temp dir (STYLE.md 4). v1 hierarchies are recognised by directory name
//! (`memory`, `cpu,cpuacct`, ...); symlinked aliases (`cpu -> cpu,cpuacct`) are skipped so each
//! hierarchy is visited once.
#![forbid(unsafe_code)]

pub mod dynmods;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// The system's cgroup mount point.
pub const SYSTEM_ROOT: &str = "/sys/fs/cgroup";

/// How long `freeze`/`thaw` wait for the kernel to report the new state, and `remove` retries a
/// cgroup whose last tasks are still exiting.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// v1 reports "no limit" as a page-rounded `i64::MAX`; anything at or above this is unlimited.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

/// Errors of this crate, each naming the operation and the path it touched.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{root}: not a cgroup mount (no cgroup.controllers and no v1 hierarchy)")]
    NotACgroupRoot { root: PathBuf },
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("{op}: no {controller} hierarchy under {root}")]
    MissingController {
        op: &'static str,
        controller: &'static str,
        root: PathBuf,
    },
    #[error("{op} {path}: state not reached after {waited:?}")]
    Timeout {
        op: &'static str,
        path: PathBuf,
        waited: Duration,
    },
    #[error("signal pid {pid} of {path}")]
    Signal {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One mounted v1 hierarchy: its directory (relative to the root) and the controllers it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub dir: String,
    pub controllers: Vec<String>,
}

impl V1Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// How the cgroup mount under the root is organised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: one hierarchy per controller (or group of controllers); `unified` names the
    /// directory of a hybrid cgroup2 mount beside them, if any.
    V1 {
        hierarchies: Vec<V1Hierarchy>,
        unified: Option<String>,
    },
    /// cgroup v2: one unified tree at the root.
    V2,
}

/// A cgroup mount (v1 or v2) rooted at a directory given by the caller.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    root: PathBuf,
    layout: Layout,
}

impl CgroupFs {
    /// Opens the system mount at `/sys/fs/cgroup`.
    pub fn system() -> Result<Self> {
        Self::open(SYSTEM_ROOT)
    }

    /// Opens the cgroup mount at `root` and detects its layout.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let layout = detect_layout(&root)?;
        Ok(Self { root, layout })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Controllers enabled in a hybrid cgroup2 mount beside v1 hierarchies (empty when there is
    /// none or it holds no controller). crun 1.8 refuses to run when this is non-empty.
    pub fn hybrid_v2_controllers(&self) -> Result<Vec<String>> {
        match &self.layout {
            Layout::V1 {
                unified: Some(dir), ..
            } => {
                let path = self.root.join(dir).join("cgroup.controllers");
                let text = read(&path, "read hybrid controllers")?;
                Ok(text.split_whitespace().map(str::to_owned).collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The parent cgroup under which sandboxes live, e.g. `hutch`. Nested parents (`a/b`) are
    /// allowed; each component is `[a-z0-9_.-]`, not `.`/`..`.
    pub fn parent(&self, name: &str) -> Result<CgroupParent> {
        validate_parent(name)?;
        Ok(CgroupParent {
            fs: self.clone(),
            name: name.to_owned(),
        })
    }

    /// Every directory in which a cgroup at `rel` exists or would exist: one per v1 hierarchy
    /// (plus the hybrid cgroup2 mount, where runtimes also place containers), or one for v2.
    fn dirs_for(&self, rel: &str) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2 => vec![self.root.join(rel)],
            Layout::V1 {
                hierarchies,
                unified,
            } => hierarchies
                .iter()
                .map(|h| h.dir.as_str())
                .chain(unified.as_deref())
                .map(|d| self.root.join(d).join(rel))
                .collect(),
        }
    }

    fn controller_dir(
        &self,
        controller: &'static str,
        rel: &str,
        op: &'static str,
    ) -> Result<PathBuf> {
        match &self.layout {
            Layout::V1 { hierarchies, .. } => hierarchies
                .iter()
                .find(|h| h.has(controller))
                .map(|h| self.root.join(&h.dir).join(rel))
                .ok_or_else(|| CgroupError::MissingController {
                    op,
                    controller,
                    root: self.root.clone(),
                }),
            Layout::V2 => Ok(self.root.join(rel)),
        }
    }
}

fn detect_layout(root: &Path) -> Result<Layout> {
    if root.join("cgroup.controllers").is_file() {
        return Ok(Layout::V2);
    }
    let entries = fs::read_dir(root).map_err(io_err("list cgroup root", root))?;
    let mut hierarchies = Vec::new();
    let mut unified = None;
    for entry in entries {
        let entry = entry.map_err(io_err("list cgroup root", root))?;
        let file_type = entry.file_type().map_err(io_err("stat", &entry.path()))?;
        // Aliases such as `cpu -> cpu,cpuacct` are symlinks: the real directory is listed too.
        if !file_type.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        if path.join("cgroup.controllers").is_file() {
            unified = Some(name);
        } else if path.join("cgroup.procs").is_file() {
            let controllers = name.split(',').map(str::to_owned).collect();
            hierarchies.push(V1Hierarchy {
                dir: name,
                controllers,
            });
        }
    }
    if hierarchies.is_empty() {
        return Err(CgroupError::NotACgroupRoot {
            root: root.to_path_buf(),
        });
    }
    hierarchies.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(Layout::V1 {
        hierarchies,
        unified,
    })
}

fn validate_parent(name: &str) -> Result<()> {
    let bad = |reason| CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 128 {
        return Err(bad("length must be 1..=128"));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad("empty, `.` or `..` component"));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        {
            return Err(bad("components are [a-z0-9_.-]"));
        }
    }
    Ok(())
}

fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 {
        return Err(CgroupError::InvalidName {
            name: id.to_owned(),
            reason: "length must be 1..=64",
        });
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(CgroupError::InvalidName {
            name: id.to_owned(),
            reason: "sandbox ids are [a-z0-9]",
        });
    }
    Ok(())
}

/// The cgroup under which all sandboxes of this host live (`hutch` by default).
#[derive(Debug, Clone)]
pub struct CgroupParent {
    fs: CgroupFs,
    name: String,
}

impl CgroupParent {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cgroup of one sandbox. `id` is `[a-z0-9]{1,64}` (Hutch IDs carry no `-`).
    pub fn sandbox(&self, id: &str) -> Result<Cgroup> {
        validate_id(id)?;
        Ok(Cgroup {
            fs: self.fs.clone(),
            rel: format!("{}/{}", self.name, id),
        })
    }

    /// Names of the sandbox cgroups that exist under this parent in any hierarchy (for leftover
    /// cleanup at start). Children whose names are not sandbox ids are ignored.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut found = BTreeSet::new();
        for dir in self.fs.dirs_for(&self.name) {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list sandbox cgroups", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("list sandbox cgroups", &dir))?;
                let is_dir = entry
                    .file_type()
                    .map_err(io_err("stat", &entry.path()))?
                    .is_dir();
                if let (true, Some(name)) = (is_dir, entry.file_name().to_str())
                    && validate_id(name).is_ok()
                {
                    found.insert(name.to_owned());
                }
            }
        }
        Ok(found.into_iter().collect())
    }
}

/// Whether a cgroup is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeState {
    Thawed,
    Freezing,
    Frozen,
}

/// One sandbox's cgroup (`<parent>/<id>`) in every hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    fs: CgroupFs,
    rel: String,
}

impl Cgroup {
    /// The value for the OCI `linux.cgroupsPath` (absolute, from the hierarchy root).
    pub fn oci_path(&self) -> String {
        format!("/{}", self.rel)
    }

    /// Its directories, one per hierarchy (v1) or one (v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.fs.dirs_for(&self.rel)
    }

    /// Whether the cgroup exists in at least one hierarchy.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    /// Creates the directories (the runtime normally does this from `cgroupsPath`).
    ///
    /// A new v1 cpuset cgroup starts with empty `cpuset.cpus`/`cpuset.mems` and refuses tasks
    /// until they are set, so each new level copies them from its parent (as runtimes do).
    pub fn create(&self) -> Result<()> {
        for dir in self.dirs() {
            fs::create_dir_all(&dir).map_err(io_err("create cgroup", &dir))?;
        }
        if let Layout::V1 { hierarchies, .. } = &self.fs.layout
            && let Some(h) = hierarchies.iter().find(|h| h.has("cpuset"))
        {
            let mut dir = self.fs.root.join(&h.dir);
            for part in self.rel.split('/') {
                let parent = dir.clone();
                dir.push(part);
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    inherit_if_empty(&parent.join(file), &dir.join(file))?;
                }
            }
        }
        Ok(())
    }

    /// Memory charged to the cgroup, in bytes.
    pub fn memory_usage(&self) -> Result<u64> {
        let (file, op) = match self.fs.layout {
            Layout::V1 { .. } => ("memory.usage_in_bytes", "read memory usage"),
            Layout::V2 => ("memory.current", "read memory usage"),
        };
        let path = self.fs.controller_dir("memory", &self.rel, op)?.join(file);
        parse_u64(&path, read(&path, op)?.trim())
    }

    /// Memory limit in bytes; `None` means unlimited.
    pub fn memory_limit(&self) -> Result<Option<u64>> {
        let op = "read memory limit";
        let dir = self.fs.controller_dir("memory", &self.rel, op)?;
        match self.fs.layout {
            Layout::V1 { .. } => {
                let path = dir.join("memory.limit_in_bytes");
                let v = parse_u64(&path, read(&path, op)?.trim())?;
                Ok((v < V1_UNLIMITED_FLOOR).then_some(v))
            }
            Layout::V2 => {
                let path = dir.join("memory.max");
                parse_max(&path, &read(&path, op)?)
            }
        }
    }

    /// How many processes the kernel's OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> Result<u64> {
        let op = "read oom kills";
        let dir = self.fs.controller_dir("memory", &self.rel, op)?;
        let path = match self.fs.layout {
            Layout::V1 { .. } => dir.join("memory.oom_control"),
            Layout::V2 => dir.join("memory.events"),
        };
        let text = read(&path, op)?;
        // Kernels before 4.13 have no `oom_kill` line in v1 `memory.oom_control`: none counted.
        match keyed_value(&text, "oom_kill") {
            Some(v) => parse_u64(&path, v),
            None if matches!(self.fs.layout, Layout::V1 { .. }) => Ok(0),
            None => Err(CgroupError::Parse {
                path,
                reason: "no oom_kill line".into(),
            }),
        }
    }

    /// Number of tasks in the cgroup as counted by the pids controller.
    pub fn pids_current(&self) -> Result<u64> {
        let op = "read pids.current";
        let path = self
            .fs
            .controller_dir("pids", &self.rel, op)?
            .join("pids.current");
        parse_u64(&path, read(&path, op)?.trim())
    }

    /// The pids limit; `None` means unlimited.
    pub fn pids_max(&self) -> Result<Option<u64>> {
        let op = "read pids.max";
        let path = self
            .fs
            .controller_dir("pids", &self.rel, op)?
            .join("pids.max");
        parse_max(&path, &read(&path, op)?)
    }

    /// CPU time consumed by the cgroup's tasks.
    pub fn cpu_usage(&self) -> Result<Duration> {
        let op = "read cpu usage";
        match self.fs.layout {
            Layout::V1 { .. } => {
                let path = self
                    .fs
                    .controller_dir("cpuacct", &self.rel, op)?
                    .join("cpuacct.usage");
                Ok(Duration::from_nanos(parse_u64(
                    &path,
                    read(&path, op)?.trim(),
                )?))
            }
            Layout::V2 => {
                let path = self.fs.root.join(&self.rel).join("cpu.stat");
                let text = read(&path, op)?;
                let usec = keyed_value(&text, "usage_usec").ok_or_else(|| CgroupError::Parse {
                    path: path.clone(),
                    reason: "no usage_usec line".into(),
                })?;
                Ok(Duration::from_micros(parse_u64(&path, usec)?))
            }
        }
    }

    /// The freezer state.
    pub fn freeze_state(&self) -> Result<FreezeState> {
        let op = "read freezer state";
        match self.fs.layout {
            Layout::V1 { .. } => {
                let path = self
                    .fs
                    .controller_dir("freezer", &self.rel, op)?
                    .join("freezer.state");
                match read(&path, op)?.trim() {
                    "THAWED" => Ok(FreezeState::Thawed),
                    "FREEZING" => Ok(FreezeState::Freezing),
                    "FROZEN" => Ok(FreezeState::Frozen),
                    other => Err(CgroupError::Parse {
                        path,
                        reason: format!("unknown freezer state {other:?}"),
                    }),
                }
            }
            Layout::V2 => {
                let dir = self.fs.root.join(&self.rel);
                let events = dir.join("cgroup.events");
                let frozen = keyed_value(&read(&events, op)?, "frozen") == Some("1");
                let freeze = dir.join("cgroup.freeze");
                let asked = read(&freeze, op)?.trim() == "1";
                Ok(match (asked, frozen) {
                    (_, true) => FreezeState::Frozen,
                    (true, false) => FreezeState::Freezing,
                    (false, false) => FreezeState::Thawed,
                })
            }
        }
    }

    /// Freezes every task in the cgroup and waits until the kernel reports it frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaws the cgroup and waits until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let op = if frozen { "freeze" } else { "thaw" };
        let (path, value) = match self.fs.layout {
            Layout::V1 { .. } => (
                self.fs
                    .controller_dir("freezer", &self.rel, op)?
                    .join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
            Layout::V2 => (
                self.fs.root.join(&self.rel).join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            ),
        };
        let want = if frozen {
            FreezeState::Frozen
        } else {
            FreezeState::Thawed
        };
        let start = Instant::now();
        loop {
            // v1 may stay FREEZING while a task is busy in the kernel; writing again retries.
            fs::write(&path, value).map_err(io_err(op, &path))?;
            if self.freeze_state()? == want {
                return Ok(());
            }
            if start.elapsed() > SETTLE_TIMEOUT {
                return Err(CgroupError::Timeout {
                    op,
                    path,
                    waited: start.elapsed(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn procs_path(&self) -> PathBuf {
        match &self.fs.layout {
            Layout::V2 => self.fs.root.join(&self.rel).join("cgroup.procs"),
            Layout::V1 { hierarchies, .. } => {
                // Every hierarchy holds the same processes; prefer the one we freeze with.
                let h = hierarchies
                    .iter()
                    .find(|h| h.has("freezer"))
                    .or_else(|| hierarchies.iter().find(|h| h.has("pids")))
                    .unwrap_or(&hierarchies[0]);
                self.fs
                    .root
                    .join(&h.dir)
                    .join(&self.rel)
                    .join("cgroup.procs")
            }
        }
    }

    /// The thread-group ids in the cgroup (not its descendants).
    pub fn procs(&self) -> Result<Vec<i32>> {
        let path = self.procs_path();
        let text = read(&path, "read cgroup.procs")?;
        text.split_whitespace()
            .map(|s| {
                s.parse::<i32>().map_err(|e| CgroupError::Parse {
                    path: path.clone(),
                    reason: format!("pid {s:?}: {e}"),
                })
            })
            .collect()
    }

    /// Sends `signal` to every process in the cgroup.
    ///
    /// v2 with `cgroup.kill` and `SIGKILL`: one write, no PIDs involved. Otherwise the cgroup is
    /// frozen first so the PIDs read from `cgroup.procs` stay those of its tasks while they are
    /// signalled, then thawed (a killed frozen task dies once thawed). Without a freezer (a v1
    /// host with no freezer hierarchy) this falls back to signalling the listed PIDs directly.
    /// A cgroup that is already gone counts as done.
    pub fn kill_all(&self, signal: Signal) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        if self.fs.layout == Layout::V2 && signal == Signal::KILL {
            let kill = self.fs.root.join(&self.rel).join("cgroup.kill");
            if kill.is_file() {
                return fs::write(&kill, "1").map_err(io_err("write cgroup.kill", &kill));
            }
        }
        let can_freeze = self.freeze_state().is_ok();
        if can_freeze {
            self.freeze()?;
        }
        let signalled = self.signal_listed(signal);
        let thawed = if can_freeze { self.thaw() } else { Ok(()) };
        signalled.and(thawed)
    }

    fn signal_listed(&self, signal: Signal) -> Result<()> {
        for pid in self.procs()? {
            let Some(target) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            match rustix::process::kill_process(target, signal) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => {
                    return Err(CgroupError::Signal {
                        pid,
                        path: self.procs_path(),
                        source: e.into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes the cgroup (and any child cgroups) from every hierarchy. Directories already gone
    /// are fine. A cgroup whose tasks are still exiting is retried for a short while.
    pub fn remove(&self) -> Result<()> {
        for dir in self.dirs() {
            remove_tree(&dir)?;
        }
        Ok(())
    }
}

/// Removes a cgroup directory bottom-up with `rmdir` (cgroupfs refuses `unlink` of its files).
fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list cgroup", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list cgroup", dir))?;
        if entry
            .file_type()
            .map_err(io_err("stat", &entry.path()))?
            .is_dir()
        {
            remove_tree(&entry.path())?;
        }
    }
    let start = Instant::now();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Tasks killed a moment ago may still be leaving.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                if start.elapsed() > SETTLE_TIMEOUT {
                    return Err(io_err("remove cgroup", dir)(e));
                }
                thread::sleep(POLL_INTERVAL);
            }
            Err(e) => return Err(io_err("remove cgroup", dir)(e)),
        }
    }
}

/// Copies a v1 cpuset file from the parent cgroup when the child's is empty. Files absent on
/// either side (fixture trees, kernels without the file) are left alone.
fn inherit_if_empty(parent_file: &Path, child_file: &Path) -> Result<()> {
    let Ok(current) = fs::read_to_string(child_file) else {
        return Ok(());
    };
    if !current.trim().is_empty() {
        return Ok(());
    }
    let Ok(inherited) = fs::read_to_string(parent_file) else {
        return Ok(());
    };
    fs::write(child_file, inherited.trim()).map_err(io_err("initialise cpuset", child_file))
}

fn read(path: &Path, op: &'static str) -> Result<String> {
    fs::read_to_string(path).map_err(io_err(op, path))
}

fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    s.parse::<u64>().map_err(|e| CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("{s:?}: {e}"),
    })
}

/// Parses a `max`-or-number file (`pids.max`, `memory.max`).
fn parse_max(path: &Path, text: &str) -> Result<Option<u64>> {
    match text.trim() {
        "max" => Ok(None),
        v => parse_u64(path, v).map(Some),
    }
}

/// The value of a `key value` line in a flat-keyed file (`memory.events`, `cpu.stat`, ...).
fn keyed_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key)).then(|| parts.next()).flatten()
    })
}

#[cfg(test)]
mod tests;
