//! The launch steps against fakes, without root (DESIGN.md §13): a recording OCI runtime whose
//! "container" is a thread answering the guest's `/health` on the socket it was handed,
//! recording host operations for the root filesystem, and fixture trees for the cgroup
//! hierarchy and `/proc`. Every step is wrapped so the order of applies and undos is recorded;
//! a failure is injected before each step in turn.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hutch_core::request::{Resources, Runtime};
use hutch_core::{Digest, SandboxId, WorkspaceId};
use hutch_host::{AgentError, HostAgent, HostSandboxState, Launch, TemplateLayers};
use hutch_rootfs::ops::RecordingHostOps;
use hutch_runtime::bundle::{capabilities_of, capability_mask};
use hutch_runtime::posture::Posture as PostureReader;
use hutch_runtime::{
    ContainerInfo, ContainerIo, ContainerStatus, OciRuntime, RuntimeError, Signal,
};

use super::{Cx, STEPS, Step, run, unwind};
use crate::config::AgentConfig;
use crate::machine::{Machine, Parts};
use crate::{LocalAgent, state::StateDir};

/// The host pid the fake runtime reports for every container's init.
const FAKE_PID: i32 = 4242;

/// What happened, in order: step applies and undos, and the fake runtime's calls.
type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, line: String) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
}

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// An OCI runtime that records its calls. `run_detached_with_fds` "starts" a container: it
/// creates the cgroup directory the bundle names (as crun does) listing [`FAKE_PID`], and
/// serves `/health` on the passed socket from a thread; `delete` removes both.
#[derive(Debug)]
struct FakeRuntime {
    root: PathBuf,
    cgroup_root: PathBuf,
    log: Log,
    /// Running containers and their cgroup dirs.
    containers: Mutex<HashMap<String, PathBuf>>,
    /// How many deletes fail before they work again.
    failing_deletes: std::sync::atomic::AtomicU32,
}

impl FakeRuntime {
    fn running(&self) -> Vec<String> {
        let c = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        c.keys().cloned().collect()
    }
}

impl OciRuntime for FakeRuntime {
    fn kind(&self) -> Runtime {
        Runtime::Crun
    }

    fn state_root(&self) -> &Path {
        &self.root
    }

    fn create(&self, id: &str, _bundle: &Path, _io: &ContainerIo) -> Result<(), RuntimeError> {
        push(&self.log, format!("runtime create {id}"));
        Ok(())
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        push(&self.log, format!("runtime start {id}"));
        Ok(())
    }

    fn run_detached_with_fds(
        &self,
        id: &str,
        bundle: &Path,
        io: &ContainerIo,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), RuntimeError> {
        push(&self.log, "runtime run".into());
        assert!(
            matches!(io, ContainerIo::Pipe(_)),
            "stdio must be the drained pipe"
        );
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(bundle.join("config.json")).expect("config.json"),
        )
        .expect("bundle json");
        let cgroup = config["linux"]["cgroupsPath"]
            .as_str()
            .expect("cgroupsPath")
            .trim_start_matches('/')
            .to_owned();
        let dir = self.cgroup_root.join(cgroup);
        std::fs::create_dir_all(&dir).expect("fake cgroup");
        std::fs::write(dir.join("cgroup.procs"), format!("{FAKE_PID}\n")).expect("procs");
        std::fs::write(dir.join("cgroup.kill"), "").expect("kill file");
        let listener = fds[0].try_clone_to_owned().expect("dup the guest socket");
        std::thread::spawn(move || serve_health(listener));
        std::fs::create_dir_all(self.root.join(id)).expect("fake runtime state");
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), dir);
        Ok(())
    }

    fn run_to_exit(
        &self,
        _id: &str,
        _bundle: &Path,
        _io: &ContainerIo,
        _timeout: Duration,
    ) -> Result<i32, RuntimeError> {
        unreachable!("launches run detached")
    }

    fn state(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let running = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id);
        if !running {
            return Err(RuntimeError::NotFound {
                runtime: Runtime::Crun,
                op: "state",
                id: id.to_owned(),
            });
        }
        Ok(ContainerInfo {
            id: id.to_owned(),
            status: ContainerStatus::Running,
            pid: Some(FAKE_PID),
            bundle: PathBuf::new(),
        })
    }

    fn kill(&self, id: &str, _signal: Signal, _all: bool) -> Result<(), RuntimeError> {
        push(&self.log, format!("runtime kill {id}"));
        Ok(())
    }

    fn delete(&self, id: &str, _force: bool) -> Result<(), RuntimeError> {
        push(&self.log, "runtime delete".into());
        let failing = self
            .failing_deletes
            .load(std::sync::atomic::Ordering::Relaxed);
        if failing > 0 {
            self.failing_deletes
                .store(failing - 1, std::sync::atomic::Ordering::Relaxed);
            return Err(RuntimeError::Failed {
                runtime: Runtime::Crun,
                op: "delete",
                id: id.to_owned(),
                status: "exit status 1".into(),
                detail: "injected".into(),
            });
        }
        let gone = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match gone {
            Some(cgroup) => {
                let _ = std::fs::remove_dir_all(cgroup);
                let _ = std::fs::remove_dir_all(self.root.join(id));
                Ok(())
            }
            None => Err(RuntimeError::NotFound {
                runtime: Runtime::Crun,
                op: "delete",
                id: id.to_owned(),
            }),
        }
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        Ok(self
            .running()
            .into_iter()
            .map(|id| ContainerInfo {
                id,
                status: ContainerStatus::Running,
                pid: Some(FAKE_PID),
                bundle: PathBuf::new(),
            })
            .collect())
    }
}

/// Answers every HTTP request on every connection with `200 OK`, as a guest's `/health`
/// does, until the socket is closed.
fn serve_health(listener: OwnedFd) {
    let listener = UnixListener::from(listener);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { return };
        std::thread::spawn(move || {
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut writer = conn;
            loop {
                let mut line = String::new();
                // A request: lines up to the blank one (no body: GET /health).
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                if writer
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// A `/proc` fixture where [`FAKE_PID`] is a sandbox init with the posture the bundle asks
/// for (default isolation) and only pipes and sockets open.
fn proc_fixture(root: &Path, capabilities: u64) {
    use std::os::unix::fs::symlink;
    let me = root.join("self");
    let init = root.join(FAKE_PID.to_string());
    for (dir, base) in [(&me, 100), (&init, 200)] {
        std::fs::create_dir_all(dir.join("ns")).expect("ns");
        std::fs::create_dir_all(dir.join("fd")).expect("fd");
        for (i, kind) in hutch_runtime::posture::ISOLATED_NAMESPACES
            .iter()
            .enumerate()
        {
            symlink(format!("{kind}:[{}]", base + i), dir.join("ns").join(kind)).expect("ns link");
        }
    }
    for (fd, target) in [
        ("0", "pipe:[1]"),
        ("1", "pipe:[2]"),
        ("2", "pipe:[2]"),
        ("3", "socket:[3]"),
    ] {
        symlink(target, init.join("fd").join(fd)).expect("fd link");
    }
    std::fs::write(
        init.join("status"),
        format!(
            "Name:\thutch-guest\nNSpid:\t{FAKE_PID}\t1\nCapInh:\t0000000000000000\n\
             CapPrm:\t{capabilities:016x}\nCapEff:\t{capabilities:016x}\nCapBnd:\t{capabilities:016x}\n\
             CapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n"
        ),
    )
    .expect("status");
    // Masked and read-only as the default bundle asks.
    std::fs::write(
        init.join("mountinfo"),
        "301 300 0:61 / / rw - overlay overlay rw,lowerdir+=.,upperdir=.,workdir=.\n\
         302 301 0:63 / /proc rw - proc proc rw\n\
         303 302 0:6 /null /proc/cmdline ro - devtmpfs devtmpfs rw\n\
         304 302 0:63 /sys /proc/sys ro - proc proc rw\n\
         305 301 0:67 / /sys ro - sysfs sysfs ro\n\
         306 305 0:68 / /sys/fs/cgroup ro - tmpfs cgroup rw\n",
    )
    .expect("mountinfo");
}

/// The capability mask of a default sandbox bundle.
fn default_capabilities() -> u64 {
    let spec = hutch_runtime::ContainerSpec {
        rootfs: "/".into(),
        readonly_rootfs: false,
        args: vec!["/x".into()],
        env: vec![],
        cwd: "/".into(),
        hostname: "h".into(),
        memory_limit_bytes: 1 << 27,
        pids_limit: 16,
        cpu: hutch_runtime::CpuLimit::Unlimited,
        cgroups_path: "/p/x".into(),
        bind_mounts: vec![],
        tmpfs_mounts: vec![],
        network_namespace: None,
        nofile: 1024,
        isolation: hutch_runtime::Isolation::default(),
        user_namespace: None,
    }
    .validate()
    .expect("spec");
    capability_mask(&capabilities_of(&spec))
}

/// A host of fakes in a temp dir.
struct Fakes {
    dir: tempfile::TempDir,
    agent: LocalAgent,
    runtime: Arc<FakeRuntime>,
    ops: Arc<RecordingHostOps>,
    template: TemplateLayers,
    log: Log,
}

impl Fakes {
    fn new() -> Fakes {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path();
        let log: Log = Arc::default();
        let cgroup_root = path.join("cgroup");
        std::fs::create_dir_all(&cgroup_root).expect("cgroup root");
        std::fs::write(cgroup_root.join("cgroup.controllers"), "cpu memory pids\n").expect("v2");
        let proc_root = path.join("proc");
        proc_fixture(&proc_root, default_capabilities());
        let guest_bin = path.join("guest");
        std::fs::write(&guest_bin, "").expect("guest stand-in");
        let blobs = hutch_blob::ObjectBlobStore::local(&path.join("blobs")).expect("blobs");
        let mut config = AgentConfig::new(path.join("data"), guest_bin, Arc::new(blobs));
        config.cgroup_root = cgroup_root.clone();
        config.proc_root = proc_root.clone();
        config.guest_ready_timeout = Duration::from_secs(5);
        // Making a user namespace needs root: the userns step is a no-op here (it is tested
        // in the system tier).
        config.user_namespaces = None;
        let runtime = Arc::new(FakeRuntime {
            root: path.join("runtime"),
            cgroup_root: cgroup_root.clone(),
            log: log.clone(),
            containers: Mutex::default(),
            failing_deletes: Default::default(),
        });
        let ops = Arc::new(RecordingHostOps::new());
        let parts = Parts {
            runtimes: vec![(Runtime::Crun, runtime.clone() as Arc<dyn OciRuntime>)],
            rootfs_ops: ops.clone(),
            cgroups: hutch_cgroup::CgroupFs::open(&cgroup_root)
                .expect("fixture cgroups")
                .parent("hutch-test")
                .expect("parent"),
            posture: PostureReader::new(&proc_root, "self"),
        };
        let agent = LocalAgent::with_parts(config, parts).expect("agent of fakes");
        let layer = Digest::of(b"a layer");
        std::fs::create_dir_all(agent.layer_dir(&layer).join("bin")).expect("layer");
        Fakes {
            dir,
            agent,
            runtime,
            ops,
            template: TemplateLayers {
                name: "fixture".into(),
                layers: vec![layer],
                default_user: "root".into(),
                default_workdir: None,
            },
            log,
        }
    }

    fn launch(&self) -> Launch {
        Launch {
            id: SandboxId::generate(),
            workspace: WorkspaceId::generate(),
            template: self.template.clone(),
            resources: Resources {
                cpu_millis: 500,
                memory_mb: 128,
                disk_mb: 64,
                pids: 64,
            },
            runtime: Runtime::Crun,
            env: Default::default(),
            guest_token: "token".into(),
        }
    }

    fn machine(&self) -> &Arc<Machine> {
        self.agent.machine()
    }

    /// Asserts the host holds nothing of `id`.
    fn assert_nothing_left(&self, id: &SandboxId) {
        let data = self.dir.path().join("data");
        assert!(
            !data.join("sandboxes").join(id.as_str()).exists(),
            "state dir left"
        );
        assert!(
            !data.join("rootfs").join(id.as_str()).exists(),
            "rootfs left"
        );
        assert!(self.runtime.running().is_empty(), "container left");
        assert!(
            !self
                .dir
                .path()
                .join("cgroup/hutch-test")
                .join(id.as_str())
                .exists(),
            "cgroup left"
        );
        assert!(
            self.ops.mounted().is_empty(),
            "mounts left: {:?}",
            self.ops.mounted()
        );
        assert!(
            self.ops.bound_loops().is_empty(),
            "loops left: {:?}",
            self.ops.bound_loops()
        );
        assert!(
            !self
                .machine()
                .pinned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(id),
            "layers still pinned"
        );
    }
}

/// A step that records its applies and undos, and fails before applying when told to.
struct Recorded {
    inner: &'static dyn Step,
    log: Log,
    fail: bool,
}

#[async_trait]
impl Step for Recorded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        if self.fail {
            push(&self.log, format!("fail {}", self.name()));
            return Err(AgentError::Capacity(format!(
                "injected before {}",
                self.name()
            )));
        }
        push(&self.log, format!("apply {}", self.name()));
        self.inner.apply(machine, cx).await
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        push(&self.log, format!("undo {}", self.name()));
        self.inner.undo(machine, id).await
    }
}

fn recorded(log: &Log, fail_at: Option<usize>) -> Vec<Recorded> {
    STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| Recorded {
            inner: *s,
            log: log.clone(),
            fail: fail_at == Some(i),
        })
        .collect()
}

fn as_steps(r: &[Recorded]) -> Vec<&dyn Step> {
    r.iter().map(|s| s as &dyn Step).collect()
}

/// Only the step lines of the log.
fn step_lines(log: &Log) -> Vec<String> {
    lines(log)
        .into_iter()
        .filter(|l| !l.starts_with("runtime"))
        .collect()
}

/// The steps apply in their order, the sandbox runs on the fakes, and destroy undoes them all
/// in reverse, leaving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_apply_in_order_and_destroy_undoes_them_in_reverse() {
    let f = Fakes::new();
    let names: Vec<&str> = STEPS.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "layers", "claim", "userns", "rootfs", "cgroup", "bundle", "runtime", "guest",
            "posture"
        ]
    );
    let launch = f.launch();
    let id = launch.id.clone();
    let steps = recorded(&f.log, None);
    let mut cx = Cx::new(launch, f.machine().state(&id));
    run(f.machine(), &as_steps(&steps), &mut cx)
        .await
        .expect("launch on fakes");
    assert_eq!(cx.init_pid, Some(FAKE_PID as u32));
    assert!(cx.client.is_some());
    assert_eq!(
        lines(&f.log),
        names
            .iter()
            .flat_map(|n| {
                let mut v = vec![format!("apply {n}")];
                if *n == "runtime" {
                    v.push("runtime run".into());
                }
                v
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(
        f.agent.inspect(&id).await.expect("inspect"),
        HostSandboxState::Running
    );
    assert_eq!(
        f.ops.mounted().len(),
        2,
        "disk and overlay: {:?}",
        f.ops.mounted()
    );

    f.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    unwind(f.machine(), &as_steps(&steps), &id)
        .await
        .expect("destroy");
    let mut reversed: Vec<String> = names.iter().rev().map(|n| format!("undo {n}")).collect();
    let at = reversed
        .iter()
        .position(|l| l == "undo runtime")
        .expect("runtime")
        + 1;
    reversed.insert(at, "runtime delete".into());
    assert_eq!(lines(&f.log), reversed);
    f.assert_nothing_left(&id);
    assert_eq!(
        f.agent.inspect(&id).await.expect("inspect"),
        HostSandboxState::Missing
    );
}

/// A failure injected before each step in turn: the launch fails with it, exactly the steps
/// before it are undone, in reverse, and the host holds nothing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_step_unwinds_the_steps_before_it() {
    let f = Fakes::new();
    for k in 0..STEPS.len() {
        f.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let launch = f.launch();
        let id = launch.id.clone();
        let steps = recorded(&f.log, Some(k));
        let mut cx = Cx::new(launch, f.machine().state(&id));
        let err = run(f.machine(), &as_steps(&steps), &mut cx)
            .await
            .expect_err("the injected failure");
        assert!(err.to_string().contains("injected before"), "{err}");
        let names: Vec<&str> = STEPS.iter().map(|s| s.name()).collect();
        let mut want: Vec<String> = names[..k].iter().map(|n| format!("apply {n}")).collect();
        want.push(format!("fail {}", names[k]));
        want.extend(names[..k].iter().rev().map(|n| format!("undo {n}")));
        assert_eq!(
            step_lines(&f.log),
            want,
            "failure before step {k} ({})",
            names[k]
        );
        let runtime_calls: Vec<String> = lines(&f.log)
            .into_iter()
            .filter(|l| l.starts_with("runtime"))
            .collect();
        let ran = k > names.iter().position(|n| *n == "runtime").expect("runtime");
        assert_eq!(
            runtime_calls,
            if ran {
                vec!["runtime run".to_owned(), "runtime delete".to_owned()]
            } else {
                vec![]
            },
            "failure before step {k}"
        );
        f.assert_nothing_left(&id);
    }
}

/// A second launch of an id the host holds fails at the claim and leaves the first sandbox
/// running (the claim's failure undoes nothing of it); the twin: the first launch of that id
/// succeeded on the same fakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_id_is_left_alone_by_a_second_launch() {
    let f = Fakes::new();
    let launch = f.launch();
    let id = launch.id.clone();
    f.agent.launch(launch.clone()).await.expect("first launch");
    f.agent
        .launch(launch)
        .await
        .expect_err("second launch of one id");
    assert_eq!(
        f.agent.inspect(&id).await.expect("inspect"),
        HostSandboxState::Running
    );
    assert!(StateDir::new(&f.dir.path().join("data/sandboxes"), id.as_str()).exists());
    f.agent.destroy(&id).await.expect("destroy");
    f.assert_nothing_left(&id);
}

/// An undo that fails does not stop the others; the first failure is returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_undo_does_not_stop_the_unwinding() {
    let f = Fakes::new();
    let launch = f.launch();
    let id = launch.id.clone();
    f.agent.launch(launch).await.expect("launch");
    // The container's deletion fails (twice: the undo kills and retries once).
    f.runtime
        .failing_deletes
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let steps = recorded(&f.log, None);
    f.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let err = unwind(f.machine(), &as_steps(&steps), &id)
        .await
        .expect_err("the failed unmount");
    assert!(err.to_string().contains("delete the container"), "{err}");
    let undone: Vec<String> = step_lines(&f.log);
    assert_eq!(undone.len(), STEPS.len(), "every undo ran: {undone:?}");
    assert!(
        f.ops.mounted().is_empty(),
        "the rootfs undo ran after the failed one"
    );
    assert!(
        !f.dir
            .path()
            .join("data/sandboxes")
            .join(id.as_str())
            .exists()
    );
    // Idempotent: a second unwinding finishes the job.
    unwind(f.machine(), &as_steps(&steps), &id)
        .await
        .expect("second unwinding");
    f.assert_nothing_left(&id);
}
