//! System tests of [`LocalAgent`] on this host: real runtimes (crun and runc), cgroups, loop
//! devices, overlays and the static guest. They need root, the static guest binary
//! (`HUTCH_GUEST_STATIC_BIN`, set by `make test`; else the `make guest` output path), crun and
//! runc; a missing prerequisite fails naming it, never skips.
//!
//! Every hostile case has its positive twin: the same attack on a sandbox with the protection
//! off (or the limit raised) succeeds, so a test cannot pass because the attack was
//! mis-written.
//!
//! Run: `cargo test -p hutch-agent --test system` (as root). The launch latency measurement is
//! `-- --ignored --nocapture measure_launch_to_first_output`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hutch_agent::{AgentConfig, LocalAgent};
use hutch_core::request::{Resources, Runtime};
use hutch_core::{SandboxId, WorkspaceId};
use hutch_guest_client::GuestClient;
use hutch_guest_client::process::{Event, Spec};
use hutch_host::{HostAgent, HostSandboxState, Launch, TemplateLayers};
use hutch_image::Builtin;
use hutch_runtime::Isolation;
use oci_spec::runtime::Capability;

/// The cgroup parent of these tests (kept apart from a running server's `hutch`).
const CGROUP_PARENT: &str = "hutch-agent-test";

fn require_root() {
    hutch_testkit::require_root("hutch-agent system tests (sandboxes)");
}

fn guest_bin() -> PathBuf {
    hutch_testkit::static_guest_bin()
}

/// One agent on a fresh data dir, with the busybox template cached. Dropping it (also when
/// a test panics) destroys every sandbox it launched, through a fresh agent on the same data
/// dir, so a failed test leaves no mounts, loop devices or cgroups behind.
struct Host {
    dir: tempfile::TempDir,
    agent: LocalAgent,
    busybox: TemplateLayers,
    config: AgentConfig,
    launched: std::sync::Mutex<Vec<SandboxId>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.launched.lock().unwrap_or_else(|p| p.into_inner()));
        let config = self.config.clone();
        // A thread of its own: this may run inside the test's tokio runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let agent = LocalAgent::new(config).expect("agent");
                for id in ids {
                    if let Err(e) = agent.destroy(&id).await {
                        eprintln!("cleanup of {id}: {e}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn config(dir: &Path, isolation: Isolation) -> AgentConfig {
    let blobs = hutch_blob::ObjectBlobStore::local(&dir.join("blobs")).expect("blob store");
    let mut c = AgentConfig::new(dir.join("data"), guest_bin(), Arc::new(blobs));
    c.cgroup_parent = CGROUP_PARENT.into();
    c.template_cache_dir = dir.join("template-cache");
    // A weakened host is a positive twin: every protection is off, the user namespace too.
    if isolation != Isolation::default() {
        c.user_namespaces = None;
    }
    c.isolation = isolation;
    c
}

async fn host_with(isolation: Isolation) -> Host {
    require_root();
    let dir = hutch_testkit::passable_tempdir("/tmp", "hutch-agent-");
    let cfg = config(dir.path(), isolation);
    let agent = LocalAgent::new(cfg.clone()).expect("agent");
    let runtimes = agent.runtimes();
    assert!(
        runtimes.contains(&Runtime::Crun) && runtimes.contains(&Runtime::Runc),
        "prerequisite missing: crun and runc (apt-get install crun runc); usable: {runtimes:?}"
    );
    let busybox = agent
        .ensure_builtin(Builtin::Busybox, Arc::new(|line: &str| eprintln!("{line}")))
        .await
        .expect("busybox template (prerequisite: busybox-static)");
    Host {
        dir,
        agent,
        busybox,
        config: cfg,
        launched: std::sync::Mutex::new(Vec::new()),
    }
}

async fn host() -> Host {
    host_with(Isolation::default()).await
}

fn resources() -> Resources {
    Resources {
        cpu_millis: 1000,
        memory_mb: 128,
        disk_mb: 64,
        pids: 128,
    }
}

fn launch_of(h: &Host, runtime: Runtime, resources: Resources) -> Launch {
    let mut env = BTreeMap::new();
    env.insert("FROM_REQUEST".to_owned(), "yes".to_owned());
    Launch {
        id: SandboxId::generate(),
        workspace: WorkspaceId::generate(),
        template: h.busybox.clone(),
        resources,
        runtime,
        env,
        guest_token: format!("tok{}", SandboxId::generate()),
    }
}

async fn start(h: &Host, runtime: Runtime, resources: Resources) -> SandboxId {
    let l = launch_of(h, runtime, resources);
    let id = l.id.clone();
    h.launched.lock().expect("lock").push(id.clone());
    let launched = h
        .agent
        .launch(l)
        .await
        .unwrap_or_else(|e| panic!("{runtime} launch: {e:?}"));
    assert_eq!(launched.id, id);
    id
}

/// What a command run through the guest did.
#[derive(Debug, Default)]
struct Ran {
    exit_code: i32,
    stdout: String,
    stderr: String,
    status: String,
    error: Option<String>,
    oom: bool,
}

/// Runs `sh -c script` through the guest to its end.
async fn sh(client: &GuestClient, script: &str) -> Ran {
    let spec = Spec {
        cmd: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    };
    let run = async {
        let mut events = client.start(spec).await.expect("Start");
        let mut ran = Ran::default();
        while let Some(event) = events.next().await.expect("stream") {
            match event {
                Event::Stdout(b) => ran.stdout.push_str(&String::from_utf8_lossy(&b)),
                Event::Stderr(b) => ran.stderr.push_str(&String::from_utf8_lossy(&b)),
                Event::End(end) => {
                    ran.exit_code = end.exit_code;
                    ran.status = end.status;
                    ran.error = end.error;
                    ran.oom = end.oom;
                }
                _ => {}
            }
        }
        ran
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("`{script}` did not end in 60 s"))
}

async fn sh_in(h: &Host, id: &SandboxId, script: &str) -> Ran {
    let client = h.agent.guest(id).expect("guest client");
    sh(&client, script).await
}

/// Asserts the host holds nothing of `id`: no mounts, loop devices, cgroup dirs, runtime
/// state, rootfs or state dir.
fn assert_nothing_left(h: &Host, id: &SandboxId) {
    let data = h.dir.path().join("data");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(id.as_str()),
        "mounts of {id} left:\n{}",
        mountinfo
            .lines()
            .filter(|l| l.contains(id.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for entry in std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .flatten()
    {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing) {
            assert!(
                !file.contains(id.as_str()),
                "loop device {} still backs {file}",
                entry.path().display()
            );
        }
    }
    for dir in h.agent.cgroup_dirs(id) {
        assert!(!dir.exists(), "cgroup dir left: {}", dir.display());
    }
    for r in [Runtime::Crun, Runtime::Runc] {
        let root = h.agent.runtime_state_root(r).expect("runtime");
        assert!(!root.join(id.as_str()).exists(), "{r} state of {id} left");
    }
    assert!(
        !data.join("rootfs").join(id.as_str()).exists(),
        "rootfs left"
    );
    assert!(!h.agent.state_dir(id).exists(), "state dir left");
    // Its range of host uids is free again.
    if let Ok(records) = std::fs::read_dir(data.join("uids")) {
        for r in records.flatten() {
            let holder = std::fs::read_to_string(r.path()).unwrap_or_default();
            assert_ne!(
                holder.trim(),
                id.as_str(),
                "uid range {:?} still held",
                r.file_name()
            );
        }
    }
}

async fn lifecycle(runtime: Runtime) {
    let h = host().await;
    let id = start(&h, runtime, resources()).await;
    assert_eq!(
        h.agent.inspect(&id).await.expect("inspect"),
        HostSandboxState::Running
    );
    assert!(h.agent.held().await.expect("held").contains(&id));

    let ran = sh_in(
        &h,
        &id,
        "echo $HUTCH_SANDBOX_ID $HUTCH_TEMPLATE $E2B_SANDBOX $E2B_SANDBOX_ID $FROM_REQUEST; hostname",
    )
    .await;
    assert_eq!(ran.exit_code, 0, "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!("{id} busybox true {id} yes\n{id}\n"),
        "{ran:?}"
    );
    // The guest binary and its config are read-only inside.
    let ran = sh_in(
        &h,
        &id,
        "echo x > /.hutch/guest; echo x > /.hutch/config/token",
    )
    .await;
    assert!(
        ran.stderr.matches("Read-only file system").count() == 2,
        "{ran:?}"
    );

    h.agent.destroy(&id).await.expect("destroy");
    assert_nothing_left(&h, &id);
    h.agent.destroy(&id).await.expect("destroy is idempotent");
    assert_eq!(
        h.agent.inspect(&id).await.expect("inspect"),
        HostSandboxState::Missing
    );
    assert!(h.agent.guest(&id).is_err(), "guest of a destroyed sandbox");
}

/// Another host sharing the blob store: its layer cache starts empty, holds at most `cap_mb`.
fn second_host(h: &Host, cap_mb: u64) -> LocalAgent {
    let mut c = config(h.dir.path(), Isolation::default());
    c.data_dir = h.dir.path().join("data2");
    c.layer_cache_max_mb = cap_mb;
    LocalAgent::new(c).expect("second agent")
}

fn litter(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("layer dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dl-") || n.starts_with(".tmp-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_come_from_the_blob_store_and_leave_when_unused() {
    let h = host().await;
    let digest = h.busybox.layers[0];
    // A cap of 0: every layer no sandbox uses goes at the next eviction.
    let other = second_host(&h, 0);
    let layer_dir = other.layer_dir(&digest);
    assert!(!layer_dir.exists());
    // A launch fetches what its template lacks and pins it from before the fetch: evictions
    // running all the while (as for other templates' launches) never take it before the claim.
    let l = launch_of(&h, Runtime::Crun, resources());
    h.launched.lock().expect("lock").push(l.id.clone());
    let done = std::sync::atomic::AtomicBool::new(false);
    let (launched, evictions) = tokio::join!(
        async {
            let r = other.launch(l.clone()).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        },
        async {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                other.evict_layers().await;
                n += 1;
            }
            n
        }
    );
    launched.expect("launch on a layer it fetched");
    assert!(evictions > 0, "no eviction ran during the launch");
    assert!(layer_dir.join("bin/busybox").is_file());
    let ran = sh(&other.guest(&l.id).expect("guest"), "echo fetched").await;
    assert_eq!(ran.stdout, "fetched\n", "{ran:?}");

    // In use: over the cap, but it stays.
    other.evict_layers().await;
    assert!(layer_dir.is_dir(), "a layer in use was evicted");
    other.destroy(&l.id).await.expect("destroy");
    // Unused now: it goes, and the next launch fetches it again.
    other.evict_layers().await;
    assert!(!layer_dir.exists(), "an unused layer over the cap stayed");
    other
        .ensure_template(&h.busybox)
        .await
        .expect("fetched again");
    assert!(layer_dir.is_dir());

    // Twin of the eviction: under a cap it fits, an unused layer stays.
    let roomy = second_host(&h, 1024);
    roomy.evict_layers().await;
    assert!(layer_dir.is_dir(), "a layer under the cap was evicted");
    drop(roomy);

    // A blob that no longer matches its digest is refused and leaves nothing behind.
    other.evict_layers().await;
    assert!(!layer_dir.exists());
    let blob = h.dir.path().join("blobs/sha256").join(digest.hex());
    let mut bytes = std::fs::read(&blob).expect("blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).expect("corrupt the blob");
    let err = other
        .ensure_template(&h.busybox)
        .await
        .expect_err("a corrupt blob");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(!layer_dir.exists());
    assert_eq!(
        litter(layer_dir.parent().expect("cache")),
        Vec::<String>::new()
    );
}

/// The options of the host's first cgroup2 superblock.
fn cgroup2_options() -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    hutch_cgroup::dynmods::cgroup2_mounts(&mountinfo)
        .into_iter()
        .next()
        .expect("prerequisite: a cgroup2 mount (the hybrid `unified` one on these hosts)")
        .super_options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_turns_on_favordynmods_unless_told_not_to() {
    require_root();
    let dir = hutch_testkit::passable_tempdir("/tmp", "hutch-agent-");
    let on = || cgroup2_options().iter().any(|o| o == "favordynmods");
    // Off, as on a fresh host (util-linux: a remount with exactly the options given).
    let target = hutch_cgroup::dynmods::cgroup2_mounts(
        &std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
    )[0]
    .target
    .clone();
    let status = std::process::Command::new("mount")
        .args(["--options-mode=ignore", "-o", "remount"])
        .arg(&target)
        .status()
        .expect("mount");
    assert!(status.success());
    assert!(!on(), "the option could not be turned off for the test");
    let mut c = config(dir.path(), Isolation::default());
    c.favor_cgroup_dynmods = false;
    drop(LocalAgent::new(c.clone()).expect("agent"));
    assert!(!on(), "the agent changed the host although told not to");
    c.favor_cgroup_dynmods = true;
    drop(LocalAgent::new(c).expect("agent"));
    assert!(
        on(),
        "the agent did not turn favordynmods on: {:?}",
        cgroup2_options()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crun_launch_exec_destroy_leaves_nothing() {
    lifecycle(Runtime::Crun).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_launch_exec_destroy_leaves_nothing() {
    lifecycle(Runtime::Runc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_runtime_is_crun_then_runc() {
    let h = host().await;
    assert_eq!(h.agent.runtimes(), vec![Runtime::Crun, Runtime::Runc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_launch_leaves_nothing() {
    require_root();
    let h = host().await;
    // A guest that exits at once (busybox, static, run as `guest`: "applet not found"): the
    // launch fails without waiting for the deadline and is undone.
    let mut c = h.config.clone();
    c.guest_bin = "/bin/busybox".into();
    let broken = LocalAgent::new(c).expect("agent");
    let l = launch_of(&h, Runtime::Crun, resources());
    let id = l.id.clone();
    h.launched.lock().expect("lock").push(id.clone());
    let started = Instant::now();
    let err = broken.launch(l).await.expect_err("launch must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead guest must fail the launch at once, took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, hutch_host::AgentError::GuestNotReady { .. }),
        "{err:?}"
    );
    assert_nothing_left(&h, &id);

    // A runtime not usable here (runsc): refused before anything is made.
    let l = launch_of(&h, Runtime::Runsc, resources());
    let id = l.id.clone();
    let err = h.agent.launch(l).await.expect_err("launch must fail");
    assert!(
        matches!(err, hutch_host::AgentError::RuntimeUnavailable(_)),
        "{err:?}"
    );
    assert_nothing_left(&h, &id);

    // A template whose layer is not cached: refused before anything is made.
    let mut l = launch_of(&h, Runtime::Crun, resources());
    l.template.layers = vec![hutch_core::Digest::of(b"not a layer")];
    let id = l.id.clone();
    let err = h.agent.launch(l).await.expect_err("launch must fail");
    assert!(
        matches!(err, hutch_host::AgentError::Template { .. }),
        "{err:?}"
    );
    assert_nothing_left(&h, &id);
}

/// `unshare -U`, `mount`, `mknod` of a device and writing `/proc/sys` from a process started
/// through the guest are refused, on both runtimes; the twin sandbox without seccomp, with
/// CAP_SYS_ADMIN + CAP_MKNOD and without read-only `/proc` paths lets all of them through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_syscalls_refused_through_the_guest() {
    let h = host().await;
    let weak = host_with(Isolation {
        seccomp: false,
        extra_capabilities: vec![Capability::SysAdmin, Capability::Mknod],
        masked_and_readonly_paths: false,
        no_new_privileges: false,
    })
    .await;
    // busybox prints strerror(errno): EPERM is "Operation not permitted"; its mount applet
    // words EPERM (and EACCES) as "permission denied (are you root?)".
    let cases: &[(&str, &str)] = &[
        ("unshare -U true", "Operation not permitted"),
        (
            "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m",
            "permission denied",
        ),
        ("mknod /tmp/null c 1 3", "Operation not permitted"),
        (
            "echo other > /proc/sys/kernel/hostname",
            "Read-only file system",
        ),
    ];
    for runtime in [Runtime::Crun, Runtime::Runc] {
        let id = start(&h, runtime, resources()).await;
        let twin = start(&weak, runtime, resources()).await;
        for (script, refusal) in cases {
            let ran = sh_in(&h, &id, script).await;
            assert_ne!(ran.exit_code, 0, "{runtime} `{script}` succeeded: {ran:?}");
            assert!(
                ran.stderr.contains(refusal),
                "{runtime} `{script}`: expected {refusal:?}: {ran:?}"
            );
            let ran = sh_in(&weak, &twin, script).await;
            assert_eq!(
                ran.exit_code, 0,
                "{runtime} twin `{script}` failed, so the attack is mis-written: {ran:?}"
            );
        }
        h.agent.destroy(&id).await.expect("destroy");
        weak.agent.destroy(&twin).await.expect("destroy");
        assert_nothing_left(&h, &id);
        assert_nothing_left(&weak, &twin);
    }
}

/// `LocalAgent` passes the host conformance suite (the test agent passes it in the
/// integration tier).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_agent_conforms() {
    let h = host().await;
    hutch_host::conformance::run(&h.agent, &h.busybox, resources()).await;
}

/// A fork bomb is stopped at the pids limit and a neighbour stays responsive; the twin: the
/// same number of processes that fails at the limit starts fine in a sandbox with room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_stops_at_the_pids_limit() {
    let h = host().await;
    let small = Resources {
        pids: 32,
        ..resources()
    };
    let bombed = start(&h, Runtime::Crun, small).await;
    let neighbour = start(&h, Runtime::Crun, resources()).await;
    let roomy = start(&h, Runtime::Runc, resources()).await;

    let forty = "i=0; while [ $i -lt 40 ]; do sleep 300 & i=$((i+1)); done; echo started";
    let ran = sh_in(&h, &roomy, forty).await;
    assert_eq!(
        ran.stdout, "started\n",
        "twin: 40 processes in 128 pids: {ran:?}"
    );
    let ran = sh_in(&h, &bombed, forty).await;
    assert!(
        ran.stderr.contains("can't fork"),
        "40 processes in 32 pids must fail: {ran:?}"
    );

    let client = h.agent.guest(&bombed).expect("guest");
    let bomb = tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            sh(&client, "f(){ f | f & }; f; sleep 30"),
        )
        .await;
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let ran = sh_in(&h, &neighbour, "echo alive").await;
    assert_eq!(ran.stdout, "alive\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "neighbour took {:?} during the bomb",
        started.elapsed()
    );
    let pids = hutch_cgroup::CgroupFs::system()
        .expect("cgroups")
        .parent(CGROUP_PARENT)
        .expect("parent")
        .sandbox(bombed.as_str())
        .expect("cgroup")
        .pids_current()
        .expect("pids.current");
    assert!(pids <= 32, "{pids} processes under a limit of 32");

    for id in [&bombed, &neighbour, &roomy] {
        h.agent.destroy(id).await.expect("destroy");
        assert_nothing_left(&h, id);
    }
    bomb.abort();
}

/// Memory beyond the limit ends in an OOM kill the guest reports in the end event; the twin
/// (a buffer below the limit) exits 0. Both runtimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_past_the_limit_is_an_oom_kill() {
    let h = host().await;
    for runtime in [Runtime::Crun, Runtime::Runc] {
        let id = start(
            &h,
            runtime,
            Resources {
                memory_mb: 64,
                ..resources()
            },
        )
        .await;
        let ran = sh_in(&h, &id, "dd if=/dev/zero of=/dev/null bs=16M count=1").await;
        assert_eq!(
            ran.exit_code, 0,
            "{runtime} twin: 16 MiB in 64 MiB: {ran:?}"
        );
        assert_eq!((ran.error, ran.oom), (None, false));
        let ran = sh_in(&h, &id, "exec dd if=/dev/zero of=/dev/null bs=100M count=1").await;
        assert!(ran.oom, "{runtime}: {ran:?}");
        assert_eq!(ran.status, "signal: killed", "{runtime}: {ran:?}");
        // The sandbox survives its process's OOM kill.
        let ran = sh_in(&h, &id, "echo still").await;
        assert_eq!(ran.stdout, "still\n");
        h.agent.destroy(&id).await.expect("destroy");
        assert_nothing_left(&h, &id);
    }
}

/// Writing past `disk_mb` is ENOSPC inside; the twin (a write below it) succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_past_disk_mb_is_enospc() {
    let h = host().await;
    let id = start(
        &h,
        Runtime::Crun,
        Resources {
            disk_mb: 32,
            ..resources()
        },
    )
    .await;
    let ran = sh_in(
        &h,
        &id,
        "dd if=/dev/zero of=/tmp/small bs=1M count=8 && rm /tmp/small",
    )
    .await;
    assert_eq!(ran.exit_code, 0, "twin: 8 MiB in 32 MiB: {ran:?}");
    let ran = sh_in(&h, &id, "dd if=/dev/zero of=/root/fill bs=1M count=64").await;
    assert_ne!(ran.exit_code, 0, "{ran:?}");
    assert!(ran.stderr.contains("No space left on device"), "{ran:?}");
    // Nothing outside grew: the sparse image is bounded by its size.
    let img = h
        .dir
        .path()
        .join("data/rootfs")
        .join(id.as_str())
        .join("disk.img");
    let len = std::fs::metadata(&img).expect("disk image").len();
    assert_eq!(len, 32 << 20);
    h.agent.destroy(&id).await.expect("destroy");
    assert_nothing_left(&h, &id);
}

/// The guest's socket exists only in the host state dir (0700): the sandbox's tree has no
/// socket at all and not the host path; the twin: the host reaches the guest through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_socket_is_only_in_the_host_state_dir() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let h = host().await;
    let id = start(&h, Runtime::Crun, resources()).await;
    let state = h.agent.state_dir(&id);
    let mode = std::fs::metadata(&state)
        .expect("state")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, hutch_agent::state::SANDBOX_DIR_MODE_MAPPED);
    let sock = state.join("guest.sock");
    assert!(
        std::fs::metadata(&sock)
            .expect("socket")
            .file_type()
            .is_socket()
    );
    h.agent
        .guest(&id)
        .expect("guest")
        .health()
        .await
        .expect("twin: reachable from the host");

    let script = format!(
        "find / -xdev -type s; find /.hutch -type s; ls -A /.hutch/config; test -e {} && echo visible; true",
        sock.display()
    );
    let ran = sh_in(&h, &id, &script).await;
    assert_eq!(ran.stdout, "env\ntoken\n", "{ran:?}");
    h.agent.destroy(&id).await.expect("destroy");
    assert_nothing_left(&h, &id);
}

/// Root inside cannot reach a host file through the guest (issue: `fallocate -l 3G
/// /proc/1/fd/1` grew the host's guest log past `disk_mb`): the guest is non-dumpable, so
/// `/proc/1/fd` is closed to sandbox processes; its stdout is a pipe, so the files API refuses
/// it as not a regular file; the host's log stays bounded; and no process of the sandbox, with
/// commands running, holds a host file. The twin: in the same sandbox, root reopens and grows
/// a *dumpable* process's stdout through `/proc/<pid>/fd/1`, so the attack is not mis-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_holds_no_host_file() {
    use futures::StreamExt;
    let h = host().await;
    for runtime in [Runtime::Crun, Runtime::Runc] {
        let id = start(&h, runtime, resources()).await;
        for attack in [
            "fallocate -l 512M /proc/1/fd/1",
            "dd if=/dev/zero of=/proc/1/fd/1 bs=1M count=16",
            "dd if=/dev/zero of=/proc/1/fd/2 bs=1M count=16",
            "cat /proc/1/environ",
        ] {
            let ran = sh_in(&h, &id, attack).await;
            assert_ne!(ran.exit_code, 0, "{runtime} `{attack}` succeeded: {ran:?}");
            assert!(
                ran.stderr.contains("Permission denied"),
                "{runtime} `{attack}`: {ran:?}"
            );
        }
        // busybox's readlink says nothing when it fails: the host path must not show.
        let ran = sh_in(&h, &id, "readlink /proc/1/fd/1 /proc/1/fd/2; echo rc=$?").await;
        assert_eq!(ran.stdout, "rc=1\n", "{runtime}: {ran:?}");
        // The twin, in the same sandbox, with a sandbox process holding a sandbox file.
        let ran = sh_in(
            &h,
            &id,
            "sleep 60 > /tmp/out 2>/dev/null & p=$!; \
             until [ \"$(readlink /proc/$p/fd/1)\" = /tmp/out ]; do :; done; \
             dd if=/dev/zero of=/proc/$p/fd/1 bs=1k count=64 2>/dev/null && wc -c < /tmp/out; \
             kill $p",
        )
        .await;
        assert_eq!(
            (ran.stdout.trim(), ran.exit_code),
            ("65536", 0),
            "{runtime} twin: reopening a dumpable process's fd failed: {}",
            ran.stderr
        );
        // The guest's own view of its fds (the files API runs as the guest): a pipe, refused.
        let client = h.agent.guest(&id).expect("guest");
        for path in ["/proc/1/fd/1", "/proc/self/fd/2"] {
            match client.download(path, Some("root")).await {
                // Not a regular file; or, in the sandbox's user namespace, not even the
                // guest's to open (the non-dumpable guest's fds belong to host root).
                Err(hutch_guest_client::ClientError::Refused(e)) => {
                    assert!(
                        matches!(
                            e.kind,
                            hutch_guest_client::ErrorKind::InvalidArgument
                                | hutch_guest_client::ErrorKind::PermissionDenied
                        ),
                        "{runtime} {path}: {e}"
                    );
                    assert!(
                        e.message.contains("not a regular file")
                            || e.message.contains("permission denied"),
                        "{e}"
                    );
                }
                Err(other) => panic!("{runtime} download {path}: {other:?}"),
                Ok(body) => {
                    let got: Vec<_> = body.take(1).collect().await;
                    panic!("{runtime} download {path} was served: {got:?}");
                }
            }
        }
        let upload = client
            .upload(
                "/proc/1/fd/1",
                Some("root"),
                futures::stream::iter([Ok(bytes::Bytes::from(vec![0u8; 1 << 20]))]),
            )
            .await;
        assert!(upload.is_err(), "{runtime} upload to /proc/1/fd/1 accepted");

        // With a command running, no process of the sandbox holds a host file.
        let client2 = client.clone();
        let long = tokio::spawn(async move { sh(&client2, "sleep 5 </dev/null").await });
        let deadline = Instant::now() + Duration::from_secs(10);
        let procs = loop {
            let procs = hutch_cgroup::CgroupFs::system()
                .expect("cgroups")
                .parent(CGROUP_PARENT)
                .expect("parent")
                .sandbox(id.as_str())
                .expect("cgroup")
                .procs()
                .expect("procs");
            if procs_len_with_sleep(&procs) || Instant::now() > deadline {
                break procs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            procs.len() >= 2,
            "{runtime}: the command did not start: {procs:?}"
        );
        let found = h.agent.host_files(&id).await.expect("host files");
        assert!(found.is_empty(), "{runtime}: host files held: {found:?}");
        long.abort();

        let state = h.agent.state_dir(&id);
        let logs: u64 = ["guest.log", "guest.log.1"]
            .iter()
            .filter_map(|f| std::fs::metadata(state.join(f)).ok())
            .map(|m| m.len())
            .sum();
        assert!(
            logs <= 2 * hutch_agent::guest_log::ROTATE_AT,
            "{runtime}: guest logs hold {logs} bytes"
        );
        h.agent.destroy(&id).await.expect("destroy");
        assert_nothing_left(&h, &id);
    }
}

/// Whether `procs` (a sandbox cgroup's pids) includes a `sleep`.
fn procs_len_with_sleep(procs: &[i32]) -> bool {
    procs.iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    })
}

/// After the agent is gone (as after SIGKILL): a new agent on the same data dir re-attaches
/// a running sandbox, reports one whose processes were killed as dead, and removes leftovers
/// of an id the caller does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reattaches_and_cleans_up() {
    let h = host().await;
    let running = start(&h, Runtime::Crun, resources()).await;
    let killed = start(&h, Runtime::Runc, resources()).await;
    let unknown = start(&h, Runtime::Crun, resources()).await;
    // As after SIGKILL: the agent goes without destroying anything, and a new one starts on
    // the same data dir.
    let mut h = h;
    h.agent = LocalAgent::new(h.config.clone()).expect("a new agent on the same data dir");
    assert_eq!(
        h.agent.inspect(&running).await.expect("inspect"),
        HostSandboxState::Running
    );
    let ran = sh_in(&h, &running, "echo again").await;
    assert_eq!(ran.stdout, "again\n", "{ran:?}");

    hutch_cgroup::CgroupFs::system()
        .expect("cgroups")
        .parent(CGROUP_PARENT)
        .expect("parent")
        .sandbox(killed.as_str())
        .expect("cgroup")
        .kill_all(hutch_cgroup::Signal::KILL)
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match h.agent.inspect(&killed).await.expect("inspect") {
            HostSandboxState::Dead { reason } => {
                assert!(reason.contains("exited"), "{reason}");
                break;
            }
            other => assert!(Instant::now() < deadline, "still {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.agent.destroy(&killed).await.expect("destroy");
    assert_nothing_left(&h, &killed);

    let held = h.agent.held().await.expect("held");
    assert!(
        held.contains(&unknown) && held.contains(&running),
        "{held:?}"
    );
    // `cleanup_leftovers` would do this for every held id the control plane does not know;
    // here other tests' sandboxes share the cgroup parent, so destroy the one id directly.
    h.agent.destroy(&unknown).await.expect("destroy a leftover");
    assert_nothing_left(&h, &unknown);
    assert_eq!(
        h.agent.inspect(&unknown).await.expect("inspect"),
        HostSandboxState::Missing
    );

    h.agent.destroy(&running).await.expect("destroy");
    assert_nothing_left(&h, &running);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Launch → first output of a command (busybox), p50 of 10, for crun and runc, against a
/// bare `crun run` of `echo` on the same unpacked layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test -p hutch-agent --test system -- --ignored --nocapture"]
async fn measure_launch_to_first_output() {
    let h = host().await;
    let n = 10;
    for runtime in [Runtime::Crun, Runtime::Runc] {
        let mut times = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let id = start(&h, runtime, resources()).await;
            let ran = sh_in(&h, &id, "echo hi").await;
            times.push(t.elapsed());
            assert_eq!(ran.stdout, "hi\n");
            h.agent.destroy(&id).await.expect("destroy");
        }
        eprintln!("launch → first output, {runtime}: p50 {:?}", median(times));
    }

    let cgroups = hutch_cgroup::CgroupFs::system().expect("cgroups");
    let parent = cgroups.parent(CGROUP_PARENT).expect("parent");
    let crun =
        hutch_runtime::open(Runtime::Crun, h.dir.path().join("bare-crun"), &cgroups).expect("crun");
    let rootfs = h.agent.layer_dir(&h.busybox.layers[0]);
    let mut times = Vec::new();
    for _ in 0..n {
        let id = SandboxId::generate();
        let spec = hutch_runtime::ContainerSpec {
            rootfs: rootfs.clone(),
            readonly_rootfs: true,
            args: vec!["/bin/echo".into(), "hi".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            hostname: id.to_string(),
            memory_limit_bytes: 128 << 20,
            pids_limit: 128,
            cpu: hutch_runtime::CpuLimit::Quota {
                quota_us: 100_000,
                period_us: 100_000,
            },
            cgroups_path: format!("/{CGROUP_PARENT}/{id}"),
            bind_mounts: vec![],
            tmpfs_mounts: vec![],
            network_namespace: None,
            nofile: 1024,
            isolation: Isolation::default(),
            user_namespace: None,
        }
        .validate()
        .expect("spec");
        let bundle = hutch_runtime::bundle::write_bundle(
            &h.dir.path().join("bare").join(id.as_str()),
            &spec,
        )
        .expect("bundle");
        let log = h.dir.path().join(format!("bare-{id}.log"));
        let t = Instant::now();
        let code = crun
            .run_to_exit(
                id.as_str(),
                &bundle,
                &hutch_runtime::ContainerIo::LogFile(log.clone()),
                Duration::from_secs(30),
            )
            .expect("crun run");
        times.push(t.elapsed());
        assert_eq!(code, 0);
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "hi\n");
        parent
            .sandbox(id.as_str())
            .expect("cg")
            .remove()
            .expect("rm cgroup");
    }
    eprintln!(
        "bare crun run of echo, same rootfs: p50 {:?}",
        median(times)
    );
}

/// `ensure_builtin_templates` builds (the first time, about a minute with mmdebstrap; cached in
/// the default template cache outside the repository afterwards) and unpacks both built-in
/// templates, and a `debian:12` sandbox runs python3 on both runtimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_templates_launch() {
    require_root();
    let dir = hutch_testkit::passable_tempdir("/tmp", "hutch-agent-");
    let mut c = config(dir.path(), Isolation::default());
    c.template_cache_dir = hutch_image::template::DEFAULT_CACHE_DIR.into();
    let agent = LocalAgent::new(c.clone()).expect("agent");
    let lines = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = lines.clone();
    let templates = agent
        .ensure_builtin_templates(Arc::new(move |line: &str| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            eprintln!("{line}");
        }))
        .await
        .expect("built-in templates (prerequisites: busybox-static, mmdebstrap, apt sources)");
    assert!(
        lines.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no progress shown"
    );
    let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["busybox", "debian:12"]);
    for t in &templates {
        assert_eq!(t.default_user, "root");
        agent.ensure_template(t).await.expect("layers cached");
    }
    let h = Host {
        dir,
        agent,
        busybox: templates[1].clone(),
        config: c,
        launched: std::sync::Mutex::new(Vec::new()),
    };
    for runtime in [Runtime::Crun, Runtime::Runc] {
        let id = start(&h, runtime, resources()).await;
        let ran = sh_in(
            &h,
            &id,
            "python3 -c 'print(6 * 7)' && id -un && id -un user",
        )
        .await;
        assert_eq!(ran.stdout, "42\nroot\nuser\n", "{runtime}: {ran:?}");
        h.agent.destroy(&id).await.expect("destroy");
        assert_nothing_left(&h, &id);
    }
}

/// Sections of a look-around script's output, split at lines `--`.
fn sections(out: &str) -> Vec<String> {
    out.split("--\n").map(str::to_owned).collect()
}

/// What root inside learns of the host by looking around (issue 9, item 8), on both runtimes:
/// `/proc/cmdline`, `/proc/partitions`, `/proc/kpageflags` and the host's block devices are
/// hidden;
/// `/proc/self/mountinfo` names no layer digest and no host dir of the overlay (the data dir
/// shows only as the root of the guest config's bind, which `docs/decisions.md` lists); and
/// nothing can be written or mounted under `/sys/fs/cgroup`. The twin: a sandbox with masked
/// and read-only paths off shows the host's boot line and block devices and takes the write.
/// (The twin of the overlay's options, mounted by path, is in the hutch-rootfs system tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_facts_stay_outside() {
    let h = host().await;
    let weak = host_with(Isolation {
        masked_and_readonly_paths: false,
        ..Isolation::default()
    })
    .await;
    let host_cmdline = std::fs::read_to_string("/proc/cmdline").expect("host cmdline");
    let host_block: Vec<String> = std::fs::read_dir("/sys/block")
        .expect("host /sys/block")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!host_cmdline.trim().is_empty() && !host_block.is_empty());
    let look = "cat /proc/cmdline; echo --; \
                ls /sys/block /sys/class/block /sys/dev/block /sys/devices/virtual/block \
                  | grep -v ':$'; echo --; \
                cat /proc/partitions /proc/diskstats; head -c 8 /proc/kpageflags; echo --; \
                cat /proc/self/mountinfo; echo --; \
                touch /sys/fs/cgroup/x && echo wrote; \
                mkdir /sys/fs/cgroup/y && echo wrote; \
                echo 4096 > /sys/fs/cgroup/pids/pids.max && echo wrote; \
                mount -t tmpfs none /sys/fs/cgroup && echo mounted; true";
    let data = h.dir.path().to_string_lossy().into_owned();
    let digests: Vec<String> = h.busybox.layers.iter().map(|d| d.hex()).collect();
    for runtime in [Runtime::Crun, Runtime::Runc] {
        let id = start(&h, runtime, resources()).await;
        let ran = sh_in(&h, &id, look).await;
        let s = sections(&ran.stdout);
        assert_eq!(s.len(), 5, "{runtime}: {ran:?}");
        assert_eq!(s[0].trim(), "", "{runtime}: /proc/cmdline shows");
        assert_eq!(s[1].trim(), "", "{runtime}: block devices show");
        assert_eq!(s[2].trim(), "", "{runtime}: partitions show");
        let mountinfo = &s[3];
        assert!(
            mountinfo.contains(" / / ") && mountinfo.contains("lowerdir+=."),
            "{runtime}: not the sandbox's mountinfo: {mountinfo}"
        );
        for digest in &digests {
            assert!(
                !mountinfo.contains(digest.as_str()),
                "{runtime}: {mountinfo}"
            );
        }
        // Only the guest's two binds name their sources (see docs/decisions.md).
        for line in mountinfo.lines().filter(|l| l.contains(&data)) {
            assert!(
                line.contains(" /.hutch/config ") || line.contains(" /.hutch/guest "),
                "{runtime}: the data dir shows: {line}"
            );
        }
        assert!(!s[4].contains("wrote"), "{runtime}: {ran:?}");
        assert!(!s[4].contains("mounted"), "{runtime}: {ran:?}");
        assert_eq!(
            ran.stderr.matches("Read-only file system").count(),
            3,
            "{runtime}: {ran:?}"
        );
        assert!(
            ran.stderr.contains("permission denied"),
            "{runtime}: {ran:?}"
        );

        let twin = start(&weak, runtime, resources()).await;
        let ran = sh_in(&weak, &twin, look).await;
        let s = sections(&ran.stdout);
        assert_eq!(s.len(), 5, "{runtime} twin: {ran:?}");
        assert_eq!(s[0].trim(), host_cmdline.trim(), "{runtime} twin");
        for b in &host_block {
            assert!(
                s[1].lines().any(|l| l == b),
                "{runtime} twin: {b} does not show: {ran:?}"
            );
        }
        assert!(s[4].contains("wrote"), "{runtime} twin: {ran:?}");
        h.agent.destroy(&id).await.expect("destroy");
        weak.agent.destroy(&twin).await.expect("destroy");
        assert_nothing_left(&h, &id);
        assert_nothing_left(&weak, &twin);
    }
}

/// A host with the built-in `debian:12` template (python3 inside) as its template, with or
/// without a user namespace per sandbox.
async fn debian_host(user_namespaces: bool) -> Host {
    require_root();
    let dir = hutch_testkit::passable_tempdir("/tmp", "hutch-agent-");
    let mut c = config(dir.path(), Isolation::default());
    c.template_cache_dir = hutch_image::template::DEFAULT_CACHE_DIR.into();
    if !user_namespaces {
        c.user_namespaces = None;
    }
    let agent = LocalAgent::new(c.clone()).expect("agent");
    let templates = agent
        .ensure_builtin_templates(Arc::new(|line: &str| eprintln!("{line}")))
        .await
        .expect("built-in templates (prerequisites: busybox-static, mmdebstrap, apt sources)");
    let debian = templates
        .into_iter()
        .find(|t| t.name == "debian:12")
        .expect("debian:12");
    agent.ensure_template(&debian).await.expect("layers cached");
    Host {
        dir,
        agent,
        busybox: debian,
        config: c,
        launched: std::sync::Mutex::new(Vec::new()),
    }
}

/// Opens inotify instances in the background until the kernel refuses one (at most 1000),
/// writes how many to `/tmp/held` and holds them.
const INOTIFY_HOG: &str = r#"python3 -c '
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < 1000 and libc.inotify_init1(0) >= 0:
    n += 1
open("/tmp/held.tmp", "w").write(str(n))
__import__("os").rename("/tmp/held.tmp", "/tmp/held")
time.sleep(120)
' >/dev/null 2>&1 &"#;

/// Starts [`INOTIFY_HOG`] in `id` and returns how many instances it holds.
async fn hog_inotify(h: &Host, id: &SandboxId) -> u32 {
    let ran = sh_in(h, id, INOTIFY_HOG).await;
    assert_eq!(ran.exit_code, 0, "starting the hog: {ran:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ran = sh_in(h, id, "cat /tmp/held 2>/dev/null").await;
        if let Ok(n) = ran.stdout.trim().parse() {
            return n;
        }
        assert!(Instant::now() < deadline, "the hog did not report: {ran:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether this process (host root) can get an inotify instance now.
fn host_can_inotify() -> Result<(), std::io::Error> {
    #[allow(unsafe_code)]
    // SAFETY: inotify_init1 takes flags and returns a new descriptor (closed at once) or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: closes the descriptor just opened, which nothing else uses.
    unsafe {
        libc::close(fd)
    };
    Ok(())
}

/// The host path of `path` as the sandbox wrote it (its upper dir on the disk image).
fn written(h: &Host, id: &SandboxId, path: &str) -> PathBuf {
    h.dir
        .path()
        .join("data/rootfs")
        .join(id.as_str())
        .join("disk/upper")
        .join(path.trim_start_matches('/'))
}

/// Runs `binary -u` (a copy of `id` the sandbox made setuid) on the host as `nobody`, from
/// a directory that honours setuid, and returns the effective uid it printed.
fn setuid_gives(binary: &Path) -> u32 {
    let dir = hutch_testkit::passable_tempdir("/var/tmp", "hutch-suid-");
    let copy = dir.path().join("id");
    let status = std::process::Command::new("cp")
        .arg("-p")
        .arg(binary)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -p {}", binary.display());
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .arg("-u")
        .output()
        .expect("setpriv (util-linux)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a uid")
}

/// Root inside is not root outside (DESIGN §3; issue: tenants shared host root's per-user
/// limits). Each sandbox runs in a user namespace of its own, owned by and mapped onto its
/// own range of unprivileged host uids:
/// 1. a sandbox holding every inotify instance it can get leaves the host and a neighbour
///    theirs (the per-user limit is per sandbox);
/// 2. a file root makes inside is owned by the sandbox's host uid outside, and a setuid-root
///    binary made inside gives that uid, not root, when run on the host;
/// 3. the posture check saw the mapping (launch would have failed otherwise);
/// 4. another host user cannot reach the sandbox's files through the host state dirs.
///
/// The positive twin, a host without user namespaces: the same hog leaves host root without
/// an inotify instance, and the setuid binary gives root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_inside_is_not_root_outside() {
    let h = debian_host(true).await;
    let hog = start(&h, Runtime::Crun, resources()).await;
    let neighbour = start(&h, Runtime::Runc, resources()).await;
    let held = hog_inotify(&h, &hog).await;
    assert!(held >= 100, "the hog got only {held} instances");
    host_can_inotify().expect("host root lost its inotify instances to a sandbox");
    let ran = sh_in(
        &h,
        &neighbour,
        "python3 -c 'import ctypes; print(ctypes.CDLL(None).inotify_init1(0) >= 0)'",
    )
    .await;
    assert_eq!(ran.stdout.trim(), "True", "the neighbour: {ran:?}");

    let base = hutch_agent::UidRanges::default().base;
    for (id, runtime) in [(&hog, Runtime::Crun), (&neighbour, Runtime::Runc)] {
        let ran = sh_in(
            &h,
            id,
            "id -u && touch /root-made && cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id",
        )
        .await;
        assert_eq!(ran.stdout.trim(), "0", "{runtime}: root inside: {ran:?}");
        let made = std::fs::metadata(written(&h, id, "/root-made")).expect("the file on the host");
        let owner = std::os::unix::fs::MetadataExt::uid(&made);
        assert!(
            owner >= base && owner.is_multiple_of(hutch_agent::userns::RANGE),
            "{runtime}: root's file is owned by {owner} on the host"
        );
        let suid = written(&h, id, "/usr/local/bin/suid-id");
        assert_eq!(setuid_gives(&suid), owner, "{runtime}: the setuid binary");
        // The state dirs let the sandbox's own ids through (its runtime must reach the
        // rootfs), and no other host user: `nobody` cannot read what the sandbox wrote.
        let read_as = |uid: u32| {
            std::process::Command::new("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg("cat")
                .arg(written(&h, id, "/root-made"))
                .output()
                .expect("setpriv")
                .status
                .success()
        };
        assert!(
            read_as(owner),
            "{runtime}: the sandbox's own uid cannot reach its files"
        );
        assert!(
            !read_as(65534),
            "{runtime}: another host user read the sandbox's files"
        );
    }

    // The twin: no user namespace.
    let twin = debian_host(false).await;
    let t = start(&twin, Runtime::Crun, resources()).await;
    let held = hog_inotify(&twin, &t).await;
    let starved = host_can_inotify();
    // Free host root's instances before asserting anything.
    twin.agent.destroy(&t).await.expect("destroy the twin");
    assert!(
        starved.is_err(),
        "without user namespaces the hog ({held} instances) should leave host root none"
    );
    let t = start(&twin, Runtime::Crun, resources()).await;
    let ran = sh_in(
        &twin,
        &t,
        "touch /root-made && cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id",
    )
    .await;
    assert_eq!(ran.exit_code, 0, "{ran:?}");
    let made = std::fs::metadata(written(&twin, &t, "/root-made")).expect("the twin's file");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), 0);
    assert_eq!(
        setuid_gives(&written(&twin, &t, "/usr/local/bin/suid-id")),
        0,
        "the twin's setuid binary gives root"
    );
}
