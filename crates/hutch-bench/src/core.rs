//! The core section of `make bench`: sandboxes through the whole product
//! (`hutch serve`, its REST API, the host agent, the guest) beside the OCI
//! runtime doing the bare minimum on the same rootfs with the same bundle
//! settings (seccomp allowlist, namespaces, cgroup limits).
//!
//! 1. Start `hutch serve` on a fresh data dir (built-in templates come from
//!    the cache outside it) and wait for its URL.
//! 2. create → first command output (busybox) against `crun run` of `echo`.
//! 3. exec round trip (`true`, `wait: true`) against `crun exec` into a
//!    running container.
//! 4. 50 creates at once: wall time and p99, against 50 `crun run` at once.
//! 5. 200 idle sandboxes: host memory used beyond the sandboxes' own cgroups.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hutch_cgroup::CgroupFs;
use hutch_core::Runtime;
use hutch_runtime::{
    ContainerIo,
    spec::{ContainerSpec, CpuLimit, Isolation},
};
use serde_json::{Value, json};

use crate::{Samples, ms};

/// The cgroup parent of the benchmark's server (its own, see `--cgroup-parent`).
const SERVE_PARENT: &str = "hutch-bench-serve";
/// The cgroup parent of the second server, without user namespaces.
const SHARED_NS_PARENT: &str = "hutch-bench-serve-shared-userns";

struct Server {
    child: Child,
    url: String,
    key: String,
    data: PathBuf,
    hutch: PathBuf,
    guest: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(hutch: &Path, guest: &Path, data: &Path) -> anyhow::Result<Server> {
    start_server_with(hutch, guest, data, SERVE_PARENT, &[])
}

/// `hutch serve` under cgroup parent `parent`, with `extra` arguments.
fn start_server_with(
    hutch: &Path,
    guest: &Path,
    data: &Path,
    parent: &str,
    extra: &[&str],
) -> anyhow::Result<Server> {
    let key =
        format!("hk_bench{}", std::process::id()).to_lowercase() + "0123456789abcdefghijklmnop";
    let mut child = Command::new(hutch)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--guest-bin")
        .arg(guest)
        .args(["--cgroup-parent", parent])
        .args(extra)
        .env("HUTCH_ADMIN_KEY", &key)
        .env(
            "HUTCH_LOG",
            std::env::var("HUTCH_BENCH_SERVE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(
            std::env::temp_dir().join("hutch-bench-serve.log"),
        )?)
        .spawn()
        .with_context(|| format!("starting {}", hutch.display()))?;
    let out = child.stdout.take().context("stdout")?;
    let mut url = None;
    for line in BufReader::new(out).lines() {
        let line = line?;
        if let Some(u) = line.strip_prefix("Hutch is serving at ") {
            url = Some(u.trim().to_owned());
            break;
        }
    }
    let url = url.context("hutch serve ended before printing its URL")?;
    Ok(Server {
        child,
        url,
        key,
        data: data.to_owned(),
        hutch: hutch.to_owned(),
        guest: guest.to_owned(),
    })
}

struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
    /// Sandboxes created and not yet deleted: removed on every exit path,
    /// so a failed run leaves nothing on the host.
    live: std::sync::Mutex<Vec<String>>,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {v}");
        }
        Ok(v)
    }

    async fn delete(&self, id: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .delete(format!("{}/v1/sandboxes/{id}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "DELETE {id}: {}", r.status());
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|l| l != id);
        Ok(())
    }

    async fn delete_all(&self) {
        let ids = self.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for id in ids {
            if let Err(e) = self.delete(&id).await {
                eprintln!("bench: cleaning up {id}: {e:#}");
            }
        }
    }

    async fn create(&self) -> anyhow::Result<String> {
        let v = self
            .post(
                "/v1/sandboxes",
                json!({"template": "busybox", "memory_mb": 64, "disk_mb": 64}),
            )
            .await?;
        let id = v
            .get("id")
            .and_then(|i| i.as_str())
            .map(str::to_owned)
            .context("no id")?;
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.clone());
        Ok(id)
    }

    async fn exec(&self, id: &str, cmd: &[&str]) -> anyhow::Result<Value> {
        self.post(
            &format!("/v1/sandboxes/{id}/exec"),
            json!({"cmd": cmd, "wait": true}),
        )
        .await
    }
}

/// The busybox layer as the agent unpacked it (the sandboxes' lower dir).
fn busybox_layer(data: &Path) -> anyhow::Result<PathBuf> {
    for e in std::fs::read_dir(data.join("agent/layers"))? {
        let p = e?.path();
        if p.join("bin/busybox").exists() {
            return Ok(p);
        }
    }
    bail!("no busybox layer under {}", data.display())
}

/// A bundle for `crun` with Hutch's isolation settings, on `rootfs`.
fn bare_bundle(dir: &Path, rootfs: &Path, id: &str, args: &[&str]) -> anyhow::Result<PathBuf> {
    let spec = ContainerSpec {
        rootfs: rootfs.to_owned(),
        readonly_rootfs: true,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/bin:/usr/bin".into())],
        cwd: "/".into(),
        hostname: id.into(),
        memory_limit_bytes: 64 << 20,
        pids_limit: 256,
        cpu: CpuLimit::Unlimited,
        cgroups_path: format!("/hutch-bench/{id}"),
        bind_mounts: Vec::new(),
        tmpfs_mounts: Vec::new(),
        network_namespace: None,
        nofile: 1024,
        isolation: Isolation::default(),
        user_namespace: None,
    }
    .validate()?;
    Ok(hutch_runtime::bundle::write_bundle(&dir.join(id), &spec)?)
}

/// Kernel memory that grows with each sandbox (mounts, loop devices,
/// namespaces, page tables, kernel stacks: `Slab`, `PageTables`,
/// `KernelStack` of /proc/meminfo), in KiB.
fn kernel_kib() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("{name} in /proc/meminfo"))
    };
    Ok(field("Slab:")? + field("PageTables:")? + field("KernelStack:")?)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    crate::vm_rss_kib(pid)
}

/// A sandbox's own memory from its cgroup, page cache excluded (v1
/// `memory.stat`: usage minus `total_cache`), in bytes.
fn sandbox_own_bytes(parent: &str, id: &str) -> anyhow::Result<u64> {
    let dir = Path::new("/sys/fs/cgroup/memory").join(parent).join(id);
    let usage: u64 = std::fs::read_to_string(dir.join("memory.usage_in_bytes"))?
        .trim()
        .parse()?;
    let stat = std::fs::read_to_string(dir.join("memory.stat"))?;
    let cache: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("total_cache "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(usage.saturating_sub(cache))
}

/// Starts a server, measures every figure (or, with `only`, one of them: a
/// quick comparison while working on its path; `make bench` measures all),
/// and removes what it created.
pub async fn section(
    hutch: &Path,
    guest: &Path,
    iterations: usize,
    only: Option<crate::Only>,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir_in("/var/tmp").or_else(|_| tempfile::tempdir())?;
    // Sandboxes' runtimes pass through the data dir's parents as unprivileged uids.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )?;
    let server = start_server(hutch, guest, &tmp.path().join("data"))?;
    let api = Arc::new(Api {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        key: server.key.clone(),
        live: std::sync::Mutex::new(Vec::new()),
    });
    let result = match only {
        None => measure(&api, &server, tmp.path(), iterations).await,
        Some(which) => one_figure(&api, &server, tmp.path(), iterations, which).await,
    };
    api.delete_all().await;
    drop(server);
    result
}

async fn one_figure(
    api: &Api,
    server: &Server,
    tmp: &Path,
    iterations: usize,
    which: crate::Only,
) -> anyhow::Result<()> {
    let cg = CgroupFs::system()?;
    let crun = hutch_runtime::open(Runtime::Crun, tmp.join("crun"), &cg)?;
    let layer = busybox_layer(&server.data)?;
    let bundles = tmp.join("bundles");
    println!("| figure | Hutch | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    match which {
        crate::Only::Exec => {
            let (exec, crun_exec) =
                exec_figure(api, crun.as_ref(), &bundles, &layer, iterations).await?;
            exec_row(iterations, &exec, &crun_exec);
        }
        crate::Only::Create => {
            let (create, bare) =
                create_figure(api, crun.as_ref(), &bundles, &layer, iterations).await?;
            create_row(iterations, &create, &bare);
        }
    }
    Ok(())
}

/// One table row: a figure beside its baseline, p50 (p90) each, and the
/// ratio of the p50s (`figure` names the percentiles and the runs).
fn ratio_row(figure: &str, hutch: &Samples, baseline: &str, base: &Samples, target: &str) {
    println!(
        "| {figure} | {} ({}) | {baseline}: {} ({}) | {:.2}× | {target} |",
        ms(hutch.pct(0.5)),
        ms(hutch.pct(0.9)),
        ms(base.pct(0.5)),
        ms(base.pct(0.9)),
        hutch.pct(0.5).as_secs_f64() / base.pct(0.5).as_secs_f64()
    );
}

/// Create → first output through the API against `crun run` of the same rootfs.
async fn create_figure(
    api: &Api,
    crun: &dyn hutch_runtime::OciRuntime,
    bundles: &Path,
    layer: &Path,
    n: usize,
) -> anyhow::Result<(Samples, Samples)> {
    // Warm up both paths once.
    let id = api.create().await?;
    api.exec(&id, &["echo", "hi"]).await?;
    api.delete(&id).await?;
    let b = bare_bundle(bundles, layer, "warm", &["/bin/echo", "hi"])?;
    crun.run_to_exit("warm", &b, &ContainerIo::Null, Duration::from_secs(30))?;

    let mut create = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let id = api.create().await?;
        let v = api.exec(&id, &["echo", "hi"]).await?;
        create.push(t.elapsed());
        anyhow::ensure!(
            v.get("stdout").and_then(|s| s.as_str()) == Some("hi\n"),
            "unexpected output {v}"
        );
        api.delete(&id).await?;
    }
    let mut bare = Vec::new();
    for i in 0..n {
        let id = format!("bare{i}");
        let b = bare_bundle(bundles, layer, &id, &["/bin/echo", "hi"])?;
        let t = Instant::now();
        crun.run_to_exit(&id, &b, &ContainerIo::Null, Duration::from_secs(30))?;
        bare.push(t.elapsed());
    }
    Ok((Samples::new(create), Samples::new(bare)))
}

/// One create → first output → delete on `api`; the time to the output.
async fn create_once(api: &Api) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let id = api.create().await?;
    let v = api.exec(&id, &["echo", "hi"]).await?;
    let d = t.elapsed();
    anyhow::ensure!(
        v.get("stdout").and_then(|s| s.as_str()) == Some("hi\n"),
        "unexpected output {v}"
    );
    api.delete(&id).await?;
    Ok(d)
}

/// Create → first output on two servers, alternating so both see the same machine state.
async fn create_pair(a: &Api, b: &Api, n: usize) -> anyhow::Result<(Samples, Samples)> {
    create_once(b).await?;
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for _ in 0..n {
        sa.push(create_once(a).await?);
        sb.push(create_once(b).await?);
    }
    Ok((Samples::new(sa), Samples::new(sb)))
}

/// The noise a neighbour makes: a CPU spinner per core (its CPU limit holds them to one), a
/// loop writing and syncing 32 MiB files, and a fork bomb held by its pids limit. All in the
/// background, detached from the exec's output.
const NOISE: &str = "for i in 1 2; do (while :; do :; done) >/dev/null 2>&1 & done; \
(while :; do dd if=/dev/zero of=/tmp/hog bs=1M count=32 conv=fsync; rm -f /tmp/hog; done) >/dev/null 2>&1 & \
(b() { b | b & }; b) >/dev/null 2>&1 & \
sleep 1";

/// Exec round trips (`true`) in a quiet sandbox: alone, then while a neighbour makes [`NOISE`].
async fn neighbour_figure(api: &Api, iterations: usize) -> anyhow::Result<(Samples, Samples)> {
    let quiet = api.create().await?;
    let noisy = api.create().await?;
    let round_trips = |n: usize| {
        let quiet = quiet.clone();
        async move {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                api.exec(&quiet, &["true"]).await?;
                v.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(Samples::new(v))
        }
    };
    round_trips(10).await?;
    let alone = round_trips(iterations).await?;
    api.exec(&noisy, &["sh", "-c", NOISE]).await?;
    let noisy_run = round_trips(iterations).await;
    // Deleting the neighbour ends its noise.
    api.delete(&noisy).await?;
    api.delete(&quiet).await?;
    Ok((noisy_run?, alone))
}

fn create_row(n: usize, create: &Samples, bare: &Samples) {
    ratio_row(
        &format!("create → first command output, p50 (p90), {n} runs"),
        create,
        "`crun run` of `echo hi`",
        bare,
        "≤ 1.5×",
    );
}

/// Exec round trips through the API against `crun exec` in a bare container.
async fn exec_figure(
    api: &Api,
    crun: &dyn hutch_runtime::OciRuntime,
    bundles: &Path,
    layer: &Path,
    iterations: usize,
) -> anyhow::Result<(Samples, Samples)> {
    let id = api.create().await?;
    for _ in 0..10 {
        api.exec(&id, &["true"]).await?;
    }
    let mut exec = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        api.exec(&id, &["true"]).await?;
        exec.push(t.elapsed());
    }
    api.delete(&id).await?;
    let b = bare_bundle(bundles, layer, "execbase", &["/bin/sleep", "3600"])?;
    crun.run_detached("execbase", &b, &ContainerIo::Null)?;
    let mut crun_exec = Vec::new();
    for _ in 0..iterations.min(100) {
        let t = Instant::now();
        let code = crun.exec("execbase", &["/bin/true"])?;
        crun_exec.push(t.elapsed());
        anyhow::ensure!(code == 0, "crun exec true exited {code}");
    }
    crun.delete("execbase", true)?;
    Ok((Samples::new(exec), Samples::new(crun_exec)))
}

fn exec_row(n: usize, exec: &Samples, crun_exec: &Samples) {
    ratio_row(
        &format!("exec round trip (`true`, `wait: true`), p50 (p90), {n} runs"),
        exec,
        "`crun exec … true`",
        crun_exec,
        "≤ 0.2× and ≤ 3 ms",
    );
}

async fn measure(
    api: &Arc<Api>,
    server: &Server,
    tmp: &Path,
    iterations: usize,
) -> anyhow::Result<()> {
    let cg = CgroupFs::system()?;
    let crun = hutch_runtime::open(Runtime::Crun, tmp.join("crun"), &cg)?;
    let bundles = tmp.join("bundles");
    let layer = busybox_layer(&server.data)?;
    let n = iterations.clamp(5, 50);

    // 2. create → first output.
    let (create, bare) = create_figure(api, crun.as_ref(), &bundles, &layer, n).await?;

    // 2b. The same with a server whose sandboxes share the host's user namespace: what the
    // per-sandbox mapping (namespace, idmapped layers) costs.
    let shared = start_server_with(
        &server.hutch,
        &server.guest,
        &tmp.join("data-shared-userns"),
        SHARED_NS_PARENT,
        &["--user-namespaces", "false"],
    )?;
    let shared_api = Api {
        http: reqwest::Client::new(),
        url: shared.url.clone(),
        key: shared.key.clone(),
        live: std::sync::Mutex::new(Vec::new()),
    };
    let mapped = create_pair(api, &shared_api, n).await;
    shared_api.delete_all().await;
    drop(shared);
    let (mapped, unmapped) = mapped?;

    // 3. exec round trip.
    let (exec, crun_exec) = exec_figure(api, crun.as_ref(), &bundles, &layer, iterations).await?;

    // 3b. A noisy neighbour.
    let (noisy, alone) = neighbour_figure(api, iterations.clamp(50, 500)).await?;

    // 4. 50 creates at once.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let id = api.create().await?;
            Ok::<_, anyhow::Error>((id, t.elapsed()))
        }));
    }
    let mut ids = Vec::new();
    let mut lat = Vec::new();
    for task in tasks {
        let (id, d) = task.await??;
        ids.push(id);
        lat.push(d);
    }
    let wall = t.elapsed();
    let lat = Samples::new(lat);
    for id in &ids {
        api.delete(id).await?;
    }
    let t = Instant::now();
    let mut bare_tasks = Vec::new();
    for i in 0..50 {
        let id = format!("par{i}");
        let b = bare_bundle(&bundles, &layer, &id, &["/bin/echo", "hi"])?;
        let rt = hutch_runtime::open(Runtime::Crun, tmp.join("crun"), &cg)?;
        bare_tasks.push(std::thread::spawn(move || {
            rt.run_to_exit(&id, &b, &ContainerIo::Null, Duration::from_secs(60))
        }));
    }
    for h in bare_tasks {
        h.join()
            .map_err(|_| anyhow::anyhow!("crun thread panicked"))??;
    }
    let bare_wall = t.elapsed();

    // 5. 200 idle sandboxes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kernel_before = kernel_kib()?;
    let server_before = rss_kib(server.child.id())?;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(api.create().await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kernel_after = kernel_kib()?;
    let server_after = rss_kib(server.child.id())?;
    let mut own: u64 = 0;
    for id in &idle {
        own += sandbox_own_bytes(SERVE_PARENT, id)?;
    }
    let mib = |kib: u64| kib as f64 / 200.0 / 1024.0;
    let per_kernel = mib(kernel_after.saturating_sub(kernel_before));
    let per_server = mib(server_after.saturating_sub(server_before));
    let per_own = mib(own / 1024);
    for id in &idle {
        api.delete(id).await?;
    }
    let _ = cg.parent("hutch-bench").map(|p| {
        for id in p.list().unwrap_or_default() {
            let _ = p.sandbox(&id).and_then(|c| c.remove());
        }
    });

    println!("## Sandboxes (`hutch serve`, crun, busybox template)\n");
    println!(
        "Through the REST API of a release `hutch serve` on loopback; the baseline is `crun` (with Hutch's"
    );
    println!(
        "in-process cgroup workaround) running a bundle with the same isolation settings on the same"
    );
    println!(
        "read-only rootfs, without Hutch's overlay, disk image, guest or API. `hutch serve` turns on"
    );
    println!(
        "the host-wide cgroup2 option `favordynmods` at start, so the baseline runs with it too.\n"
    );
    println!("| figure | Hutch | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    create_row(n, &create, &bare);
    ratio_row(
        &format!(
            "create → first output with the per-sandbox user namespace, p50 (p90), {n} runs, interleaved"
        ),
        &mapped,
        "the same server build with `--user-namespaces false`",
        &unmapped,
        "—",
    );
    exec_row(iterations, &exec, &crun_exec);
    println!(
        "| exec round trip in a quiet sandbox while a neighbour runs a fork bomb, CPU spinners and an I/O hog, p50 / p99, {} runs | {} / {} | the same sandbox, neighbour idle: {} / {} | {:.2}× / {:.2}× | — |",
        noisy.0.len(),
        ms(noisy.pct(0.5)),
        ms(noisy.pct(0.99)),
        ms(alone.pct(0.5)),
        ms(alone.pct(0.99)),
        noisy.pct(0.5).as_secs_f64() / alone.pct(0.5).as_secs_f64(),
        noisy.pct(0.99).as_secs_f64() / alone.pct(0.99).as_secs_f64()
    );
    println!(
        "| 50 creates at once: wall (p50 / p99 of each) | {} ({} / {}) | 50 `crun run` at once: {} | {:.2}× | — |",
        ms(wall),
        ms(lat.pct(0.5)),
        ms(lat.pct(0.99)),
        ms(bare_wall),
        wall.as_secs_f64() / bare_wall.as_secs_f64()
    );
    println!(
        "| host memory per idle sandbox, 200 running | {:.2} MiB beyond the sandbox's own processes (kernel: {per_kernel:.2} MiB, `hutch serve`: {per_server:.2} MiB); the sandbox's own cgroup, page cache excluded: {per_own:.2} MiB | — | — | ≤ 3 MiB |",
        per_kernel + per_server
    );
    println!();
    Ok(())
}
