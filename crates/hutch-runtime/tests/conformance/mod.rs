//! The runtime conformance suite: plain functions taking `&dyn OciRuntime` (STYLE.md 2), run by
//! `tests/system.rs` against every backend. Each negative security check has its positive twin
//! in the same function: the same attack with the protection off must succeed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hutch_cgroup::{CgroupFs, CgroupParent};
use hutch_runtime::bundle::{capabilities_of, capability_mask, mount_policy_of, write_bundle};
use hutch_runtime::posture::{Expected, FdPolicy, Mismatch, Posture};
use hutch_runtime::{
    ContainerIo, ContainerSpec, ContainerStatus, CpuLimit, Isolation, OciRuntime, RuntimeError,
    Signal, TmpfsMount, ValidSpec,
};
use oci_spec::runtime::Capability;

/// The cgroup parent all conformance containers live under.
pub const CGROUP_PARENT: &str = "hutch-test";

/// A rootfs and scratch space for one suite run.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub cgroups: CgroupParent,
    prefix: String,
    counter: AtomicU32,
}

impl Lab {
    /// Builds a busybox rootfs (Debian's static `/bin/busybox`, one symlink per applet) plus
    /// the seccomp probe and the shared libraries it needs.
    pub fn new(prefix: &str) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("hutch-rt-")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "mnt", "etc", "root"] {
            fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox");
        let list = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                symlink("busybox", rootfs.join("bin").join(applet)).expect("applet symlink");
            }
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        let probe = Path::new(env!("CARGO_BIN_EXE_hutch-seccomp-probe"));
        fs::copy(probe, rootfs.join("bin/probe")).expect("copy probe");
        copy_shared_libs(probe, &rootfs);
        let cgroups = CgroupFs::system()
            .expect("open /sys/fs/cgroup")
            .parent(CGROUP_PARENT)
            .expect("cgroup parent");
        Lab {
            dir,
            rootfs,
            cgroups,
            prefix: format!("{prefix}{}x", std::process::id()),
            counter: AtomicU32::new(0),
        }
    }

    /// A fresh container id.
    pub fn id(&self) -> String {
        format!(
            "{}{}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The default sandbox spec for `args`: read-only rootfs, tmpfs `/tmp`, 64 MiB, 64 pids.
    pub fn spec(&self, id: &str, args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            rootfs: self.rootfs.clone(),
            readonly_rootfs: true,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            hostname: "sandbox".into(),
            memory_limit_bytes: 64 << 20,
            pids_limit: 64,
            cpu: CpuLimit::Quota {
                quota_us: 100_000,
                period_us: 100_000,
            },
            cgroups_path: format!("/{CGROUP_PARENT}/{id}"),
            bind_mounts: vec![],
            tmpfs_mounts: vec![TmpfsMount {
                destination: "/tmp".into(),
                size_bytes: 16 << 20,
            }],
            network_namespace: None,
            nofile: 1024,
            isolation: Isolation::default(),
            user_namespace: None,
        }
    }

    fn bundle(&self, id: &str, spec: ContainerSpec) -> (PathBuf, ValidSpec) {
        let valid = spec.validate().expect("valid spec");
        let dir = write_bundle(&self.dir.path().join("bundles").join(id), &valid).expect("bundle");
        (dir, valid)
    }

    /// Runs `spec` to completion; returns its exit code and combined output. Its cgroup is
    /// removed afterwards.
    pub fn run(&self, rt: &dyn OciRuntime, id: &str, spec: ContainerSpec) -> (i32, String) {
        let (bundle, _) = self.bundle(id, spec);
        let log = self.dir.path().join(format!("{id}.log"));
        let code = rt
            .run_to_exit(
                id,
                &bundle,
                &ContainerIo::LogFile(log.clone()),
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("{} run {id}: {e}", rt.kind()));
        let out = fs::read_to_string(&log).unwrap_or_default();
        self.cgroups
            .sandbox(id)
            .expect("cgroup")
            .remove()
            .expect("remove cgroup");
        (code, out)
    }

    /// Starts `spec` detached (stdio to a log file).
    pub fn start(&self, rt: &dyn OciRuntime, id: &str, spec: ContainerSpec) -> ValidSpec {
        let (bundle, valid) = self.bundle(id, spec);
        let log = self.dir.path().join(format!("{id}.log"));
        rt.run_detached(id, &bundle, &ContainerIo::LogFile(log))
            .unwrap_or_else(|e| panic!("{} run_detached {id}: {e}", rt.kind()));
        valid
    }

    pub fn log(&self, id: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Waits for a detached container to stop by itself, deletes it and removes its cgroup.
    pub fn reap(&self, rt: &dyn OciRuntime, id: &str) {
        wait_until(|| matches!(rt.state(id), Ok(s) if s.status == ContainerStatus::Stopped));
        rt.delete(id, true).expect("delete");
        self.cgroups
            .sandbox(id)
            .expect("cg")
            .remove()
            .expect("rm cg");
    }

    /// Kills, deletes and removes the cgroup of a detached container; asserts nothing is left.
    pub fn stop(&self, rt: &dyn OciRuntime, id: &str) {
        rt.kill(id, Signal::KILL, true).expect("kill");
        wait_until(|| matches!(rt.state(id), Ok(s) if s.status == ContainerStatus::Stopped));
        rt.delete(id, false).expect("delete");
        assert!(
            matches!(rt.state(id), Err(RuntimeError::NotFound { .. })),
            "state after delete must be NotFound"
        );
        assert!(!rt.state_root().join(id).exists(), "runtime state dir left");
        let cg = self.cgroups.sandbox(id).expect("cgroup");
        cg.remove().expect("remove cgroup");
        assert!(!cg.exists(), "cgroup dirs left: {:?}", cg.dirs());
    }
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "condition not reached in 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Copies the shared libraries `ldd` lists for `binary` into the same paths under `rootfs`.
fn copy_shared_libs(binary: &Path, rootfs: &Path) {
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = path {
            let dest = rootfs.join(lib.strip_prefix("/").expect("absolute"));
            fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir lib dir");
            fs::copy(&lib, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
        }
    }
}

fn weak(seccomp: bool, caps: &[Capability], paths: bool) -> Isolation {
    Isolation {
        seccomp,
        extra_capabilities: caps.to_vec(),
        masked_and_readonly_paths: paths,
        no_new_privileges: seccomp,
    }
}

/// A check of the suite.
pub type Check = fn(&dyn OciRuntime, &Lab);

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    (
        "lifecycle_state_list_kill_delete",
        lifecycle_state_list_kill_delete,
    ),
    ("posture_from_outside", posture_from_outside),
    ("seccomp_errnos", seccomp_errnos),
    ("user_namespace_refused", user_namespace_refused),
    ("mount_refused", mount_refused),
    ("proc_sys_read_only", proc_sys_read_only),
    ("host_facts_masked", host_facts_masked),
    ("memory_limit_oom_kills", memory_limit_oom_kills),
    ("pids_limit_stops_fork_bomb", pids_limit_stops_fork_bomb),
    (
        "preserved_fds_reach_the_process",
        preserved_fds_reach_the_process,
    ),
    (
        "piped_stdio_holds_no_host_file",
        piped_stdio_holds_no_host_file,
    ),
];

/// Runs every check against `rt`, each isolated from the others' panics; panics listing the
/// failed checks.
pub fn run_all(rt: &dyn OciRuntime) {
    let lab = Lab::new(&format!("{}", rt.kind()));
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(rt, &lab)));
        eprintln!(
            "{} {name}: {} in {:?}",
            rt.kind(),
            if result.is_ok() { "ok" } else { "FAILED" },
            start.elapsed()
        );
        if result.is_err() {
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "{}: failed checks: {failed:?}",
        rt.kind()
    );
}

pub fn lifecycle_state_list_kill_delete(rt: &dyn OciRuntime, lab: &Lab) {
    let id = lab.id();
    lab.start(rt, &id, lab.spec(&id, &["sleep", "30"]));
    let info = rt.state(&id).expect("state");
    assert_eq!(info.status, ContainerStatus::Running);
    let pid = info.pid.expect("running container has a pid");
    assert_eq!(rt.pid(&id).expect("pid"), Some(pid));
    assert!(
        rt.list()
            .expect("list")
            .iter()
            .any(|c| c.id == id && c.pid == Some(pid))
    );
    let cg = lab.cgroups.sandbox(&id).expect("cgroup");
    assert!(
        cg.procs().expect("procs").contains(&pid),
        "init not in {}",
        cg.oci_path()
    );
    assert_eq!(cg.memory_limit().expect("memory limit"), Some(64 << 20));
    assert_eq!(cg.pids_max().expect("pids max"), Some(64));
    lab.stop(rt, &id);
    assert!(!rt.list().expect("list").iter().any(|c| c.id == id));
    assert!(matches!(
        rt.delete(&id, false),
        Err(RuntimeError::NotFound { .. })
    ));
    rt.delete(&id, true)
        .expect("forced delete of a missing container is idempotent");
}

/// `start` returns once the runtime released the container's init, which may not have
/// exec'd the target yet (it still holds the runtime's fds and has no filter). Posture is
/// checked after the sandbox's program runs, as the agent does after the guest answers.
fn wait_for_exec(pid: i32, comm: &str) {
    wait_until(|| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm));
}

fn expected_for(spec: &ValidSpec, seccomp_mode: u8) -> Expected {
    Expected {
        capabilities: capability_mask(&capabilities_of(spec)),
        no_new_privs: true,
        seccomp_mode,
        fds: FdPolicy {
            max_fds: 3,
            allowed_targets: vec![],
            sandbox_files: false,
        },
        mounts: mount_policy_of(spec),
        user_namespace: None,
    }
}

pub fn posture_from_outside(rt: &dyn OciRuntime, lab: &Lab) {
    let posture = Posture::system();
    // Positive: the default posture is what the bundle asked for.
    let id = lab.id();
    let valid = lab.start(rt, &id, lab.spec(&id, &["sleep", "30"]));
    let pid = rt.pid(&id).expect("pid").expect("running");
    wait_for_exec(pid, "sleep");
    let log = lab
        .dir
        .path()
        .join(format!("{id}.log"))
        .display()
        .to_string();
    let mut expected = expected_for(&valid, 2);
    expected.fds.allowed_targets = vec!["/dev/null".into(), log.clone()];
    let report = posture.check(pid, &expected).expect("posture");
    lab.stop(rt, &id);
    assert!(report.is_ok(), "default posture: {:?}", report.mismatches);

    // Negative twin: seccomp off, SYS_ADMIN added, no_new_privs off, masked and read-only
    // paths off — each is reported.
    let id = lab.id();
    let mut spec = lab.spec(&id, &["sleep", "30"]);
    spec.isolation = weak(false, &[Capability::SysAdmin], false);
    lab.start(rt, &id, spec);
    let pid = rt.pid(&id).expect("pid").expect("running");
    wait_for_exec(pid, "sleep");
    // Compared with the *default* expectation, as the agent does.
    let report = posture.check(pid, &expected).expect("posture");
    lab.stop(rt, &id);
    let m = &report.mismatches;
    assert!(
        m.contains(&Mismatch::SeccompMode {
            expected: 2,
            actual: 0
        }),
        "{m:?}"
    );
    assert!(m.contains(&Mismatch::NoNewPrivs { actual: false }), "{m:?}");
    assert!(
        m.contains(&Mismatch::NotMasked {
            path: "/proc/cmdline".into()
        }),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|x| matches!(x, Mismatch::WritableMount { path, .. }
            if path == "/sys/fs/cgroup")),
        "{m:?}"
    );
    assert!(
        m.iter().any(
            |x| matches!(x, Mismatch::Capabilities { set: "effective", actual, .. }
            if actual & (1 << 21) != 0)
        ),
        "{m:?}"
    );
}

fn probe(rt: &dyn OciRuntime, lab: &Lab, isolation: Isolation) -> HashMap<String, i32> {
    let id = lab.id();
    let mut spec = lab.spec(&id, &["/bin/probe", "all"]);
    spec.isolation = isolation;
    let (code, out) = lab.run(rt, &id, spec);
    assert_eq!(code, 0, "probe failed: {out}");
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

pub fn seccomp_errnos(rt: &dyn OciRuntime, lab: &Lab) {
    use libc::{EAFNOSUPPORT, ENOSYS, EPERM, EPROTONOSUPPORT};
    let on = probe(rt, lab, Isolation::default());
    let expected: &[(&str, i32)] = &[
        ("mount", EPERM),
        ("umount2", EPERM),
        ("unshare-user", EPERM),
        ("unshare-net", EPERM),
        ("unshare-files", 0),
        ("clone-newuser", EPERM),
        ("clone-plain", 0),
        ("clone3", ENOSYS),
        ("setns", EPERM),
        ("ptrace", EPERM),
        ("bpf", EPERM),
        ("io_uring_setup", EPERM),
        ("keyctl", EPERM),
        ("add_key", EPERM),
        ("userfaultfd", EPERM),
        ("perf_event_open", EPERM),
        ("process_vm_readv", EPERM),
        ("open_by_handle_at", EPERM),
        ("socket-unix", 0),
        ("socket-inet", 0),
        ("socket-inet6", 0),
        ("socket-netlink-route", 0),
        ("socket-netlink-audit", EPROTONOSUPPORT),
        ("socket-alg", EAFNOSUPPORT),
        ("socket-packet", EAFNOSUPPORT),
        ("socket-vsock", EAFNOSUPPORT),
        ("mknod-char", EPERM),
        ("mknod-fifo", 0),
        ("getpid", 0),
    ];
    let mut wrong = Vec::new();
    for (name, want) in expected {
        if on.get(*name) != Some(want) {
            wrong.push(format!("{name}: want {want}, got {:?}", on.get(*name)));
        }
    }
    // x32 system call numbers fail the filter's architecture check: the process is killed
    // with SIGSYS before the call reaches the kernel.
    if on.get("x32-getpid") != Some(&-libc::SIGSYS) {
        wrong.push(format!(
            "x32-getpid: want SIGSYS kill, got {:?}",
            on.get("x32-getpid")
        ));
    }
    assert!(wrong.is_empty(), "under the profile: {wrong:#?}");

    // Positive twin: without the profile (and with the capabilities these calls need) the
    // same calls get past seccomp: they succeed or fail with the kernel's own errno.
    let off = probe(
        rt,
        lab,
        weak(
            false,
            &[Capability::SysAdmin, Capability::Mknod, Capability::NetRaw],
            true,
        ),
    );
    let mut still_refused = Vec::new();
    for name in [
        "mount",
        "unshare-user",
        "unshare-net",
        "clone-newuser",
        "ptrace",
        "keyctl",
        "add_key",
        "socket-packet",
        "socket-netlink-audit",
        "mknod-char",
    ] {
        if off.get(name) != Some(&0) {
            still_refused.push(format!("{name}: {:?}", off.get(name)));
        }
    }
    if off.get("clone3") == Some(&ENOSYS) {
        still_refused.push("clone3 still ENOSYS".into());
    }
    assert!(
        still_refused.is_empty(),
        "without the profile: {still_refused:#?}"
    );
}

pub fn user_namespace_refused(rt: &dyn OciRuntime, lab: &Lab) {
    let id = lab.id();
    let (code, out) = lab.run(rt, &id, lab.spec(&id, &["unshare", "-U", "true"]));
    assert_ne!(code, 0, "unshare -U succeeded under the profile: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    // Positive twin: the same command without seccomp creates the user namespace.
    let id = lab.id();
    let mut spec = lab.spec(&id, &["unshare", "-U", "true"]);
    spec.isolation = weak(false, &[], true);
    let (code, out) = lab.run(rt, &id, spec);
    assert_eq!(code, 0, "unshare -U without seccomp: {out}");
}

pub fn mount_refused(rt: &dyn OciRuntime, lab: &Lab) {
    let cmd = ["mount", "-t", "tmpfs", "none", "/mnt"];
    let id = lab.id();
    let (code, out) = lab.run(rt, &id, lab.spec(&id, &cmd));
    assert_ne!(code, 0, "mount succeeded: {out}");
    assert!(
        out.contains("Operation not permitted") || out.contains("denied"),
        "{out}"
    );
    // Positive twin: with CAP_SYS_ADMIN and no seccomp the mount works.
    let id = lab.id();
    let mut spec = lab.spec(&id, &cmd);
    spec.isolation = weak(false, &[Capability::SysAdmin], true);
    let (code, out) = lab.run(rt, &id, spec);
    assert_eq!(code, 0, "mount with SYS_ADMIN, no seccomp: {out}");
}

pub fn proc_sys_read_only(rt: &dyn OciRuntime, lab: &Lab) {
    let cmd = [
        "sh",
        "-c",
        "echo pwned > /proc/sys/kernel/hostname && hostname",
    ];
    let id = lab.id();
    let (code, out) = lab.run(rt, &id, lab.spec(&id, &cmd));
    assert_ne!(code, 0, "write to /proc/sys succeeded: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    // Positive twin: without the read-only paths the write lands (in the sandbox's own UTS
    // namespace).
    let id = lab.id();
    let mut spec = lab.spec(&id, &cmd);
    spec.isolation = weak(true, &[], false);
    let (code, out) = lab.run(rt, &id, spec);
    assert_eq!(
        (code, out.trim()),
        (0, "pwned"),
        "without read-only /proc/sys"
    );
}

/// The host's boot line and block devices are hidden and `/sys/fs/cgroup` (the runtimes' v1
/// tmpfs and every controller under it) is read-only. The twin, with masked and read-only
/// paths off: the host's `/proc/cmdline` and block devices show, and the same writes land.
pub fn host_facts_masked(rt: &dyn OciRuntime, lab: &Lab) {
    let host_cmdline = fs::read_to_string("/proc/cmdline").expect("host /proc/cmdline");
    let host_block: Vec<String> = fs::read_dir("/sys/block")
        .expect("host /sys/block")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !host_cmdline.trim().is_empty() && !host_block.is_empty(),
        "the host has a boot line and block devices to hide"
    );
    let look = [
        "sh",
        "-c",
        "echo cmdline=$(cat /proc/cmdline); \
         echo block=$(ls /sys/block)$(ls /sys/devices/virtual/block); \
         echo partitions=$(cat /proc/partitions); \
         grep ' /sys/fs/cgroup' /proc/self/mountinfo | cut -d' ' -f5,6 | sed 's/^/mount /'; \
         touch /sys/fs/cgroup/x && echo wrote-tmpfs; \
         for f in /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max; do \
           test -e $f && echo 5 > $f && echo wrote-$f; done; true",
    ];
    let id = lab.id();
    let (code, out) = lab.run(rt, &id, lab.spec(&id, &look));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"cmdline="), "{out}");
    assert!(lines.contains(&"block="), "{out}");
    assert!(lines.contains(&"partitions="), "{out}");
    assert!(
        !out.contains("wrote"),
        "a write under /sys/fs/cgroup landed: {out}"
    );
    // The last mount at a path is the one in use (runc's read-only bind covers its tmpfs).
    let mut options = HashMap::new();
    for l in out.lines().filter_map(|l| l.strip_prefix("mount ")) {
        let (at, opts) = l.split_once(' ').expect("mount point and options");
        options.insert(at, opts);
    }
    assert!(options.len() > 1, "no cgroup mounts: {out}");
    for (at, opts) in &options {
        assert!(opts.starts_with("ro,"), "{at} is mounted {opts}: {out}");
    }
    assert!(out.contains("Read-only file system"), "{out}");

    let id = lab.id();
    let mut spec = lab.spec(&id, &look);
    spec.isolation = weak(true, &[], false);
    let (code, out) = lab.run(rt, &id, spec);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("cmdline={}", host_cmdline.trim())),
        "twin: the host's boot line does not show: {out}"
    );
    assert!(
        host_block.iter().any(|b| out.contains(b.as_str())),
        "twin: no host block device {host_block:?} shows: {out}"
    );
    assert!(
        out.contains("wrote-tmpfs"),
        "twin: the write to /sys/fs/cgroup did not land: {out}"
    );
}

pub fn memory_limit_oom_kills(rt: &dyn OciRuntime, lab: &Lab) {
    // dd's 64 MiB buffer is filled from /dev/zero: with a 32 MiB limit the kernel kills it.
    let hog = [
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=64M count=1; echo dd-exit=$?; sleep 30",
    ];
    for (limit, expect_oom) in [(32u64 << 20, true), (256 << 20, false)] {
        let id = lab.id();
        let mut spec = lab.spec(&id, &hog);
        spec.memory_limit_bytes = limit;
        lab.start(rt, &id, spec);
        let cg = lab.cgroups.sandbox(&id).expect("cgroup");
        wait_until(|| lab.log(&id).contains("dd-exit="));
        let kills = cg.oom_kills().expect("oom kills");
        let log = lab.log(&id);
        lab.stop(rt, &id);
        if expect_oom {
            assert!(kills >= 1, "no OOM kill at {limit}: {log}");
            assert!(log.contains("dd-exit=137"), "{log}");
        } else {
            // Positive twin: the same hog under a larger limit runs to completion.
            assert_eq!(kills, 0, "{log}");
            assert!(log.contains("dd-exit=0"), "{log}");
        }
    }
}

pub fn pids_limit_stops_fork_bomb(rt: &dyn OciRuntime, lab: &Lab) {
    let bomb = [
        "sh",
        "-c",
        "i=0; while [ $i -lt 40 ]; do sleep 1 & i=$((i+1)); done; wait; echo forked-all",
    ];
    for (limit, expect_refused) in [(16i64, true), (128, false)] {
        let id = lab.id();
        let mut spec = lab.spec(&id, &bomb);
        spec.pids_limit = limit;
        let (_, out) = lab.run(rt, &id, spec);
        if expect_refused {
            assert!(out.contains("can't fork"), "pids limit {limit}: {out}");
        } else {
            // Positive twin: with room for them all, every fork succeeds.
            assert!(
                !out.contains("can't fork") && out.contains("forked-all"),
                "{out}"
            );
        }
    }
}

/// A descriptor passed with `create_with_fds` is fd 3 of the container's process; without it
/// (the positive twin) fd 3 is not open there.
pub fn preserved_fds_reach_the_process(rt: &dyn OciRuntime, lab: &Lab) {
    use std::os::fd::AsFd;
    let (read_end, write_end) = rustix::pipe::pipe().expect("pipe");
    let id = lab.id();
    let (bundle, _) = lab.bundle(
        &id,
        lab.spec(&id, &["sh", "-c", "echo through-fd-3 >&3 && echo wrote"]),
    );
    let log = lab.dir.path().join(format!("{id}.log"));
    rt.run_detached_with_fds(
        &id,
        &bundle,
        &ContainerIo::LogFile(log),
        &[write_end.as_fd()],
    )
    .unwrap_or_else(|e| panic!("{} run_detached_with_fds: {e}", rt.kind()));
    drop(write_end);
    assert_eq!(read_to_end(read_end), "through-fd-3\n");
    lab.reap(rt, &id);
    assert!(lab.log(&id).contains("wrote"), "{}", lab.log(&id));

    let id = lab.id();
    let (code, out) = lab.run(rt, &id, lab.spec(&id, &["sh", "-c", "echo x >&3"]));
    assert_ne!(code, 0, "fd 3 open without preserving it: {out}");
}

/// With [`ContainerIo::Pipe`] the container's init holds pipes for stdio and no host file:
/// its output arrives on the pipe, its input is at its end, and the check of every sandbox
/// process finds nothing. The twin: with a host log file ([`ContainerIo::LogFile`]) the same
/// check reports its stdio as host files, and root inside reopens the file through
/// `/proc/1/fd/1` and grows it (the hole of a dumpable init holding a host file).
pub fn piped_stdio_holds_no_host_file(rt: &dyn OciRuntime, lab: &Lab) {
    use std::sync::Arc;
    let posture = Posture::system();
    let pipe = || {
        let (read_end, write_end) = rustix::pipe::pipe().expect("pipe");
        (read_end, ContainerIo::Pipe(Arc::new(write_end)))
    };

    // Output through the pipe, input at its end at once.
    let id = lab.id();
    let (bundle, _) = lab.bundle(
        &id,
        lab.spec(
            &id,
            &["sh", "-c", "echo out; echo err >&2; read x; echo read=$?"],
        ),
    );
    let (read_end, io) = pipe();
    rt.run_detached(&id, &bundle, &io)
        .unwrap_or_else(|e| panic!("{} run_detached: {e}", rt.kind()));
    drop(io);
    assert_eq!(read_to_end(read_end), "out\nerr\nread=1\n");
    lab.reap(rt, &id);

    // No host file: neither for a strict policy (pipes only) nor as a sandbox process.
    let id = lab.id();
    let (bundle, _) = lab.bundle(&id, lab.spec(&id, &["sleep", "30"]));
    let (read_end, io) = pipe();
    rt.run_detached(&id, &bundle, &io)
        .unwrap_or_else(|e| panic!("{} run_detached: {e}", rt.kind()));
    drop(io);
    let pid = rt.pid(&id).expect("pid").expect("running");
    wait_for_exec(pid, "sleep");
    let strict = FdPolicy {
        max_fds: 3,
        allowed_targets: vec!["pipe:".into()],
        sandbox_files: false,
    };
    let found = posture.check_fds(pid, &strict).expect("check");
    let as_process = posture
        .check_fds(pid, &FdPolicy::sandbox_process())
        .expect("check");
    lab.stop(rt, &id);
    drop(read_end);
    assert!(found.is_empty(), "piped init: {found:?}");
    assert!(as_process.is_empty(), "piped init: {as_process:?}");

    // The twin: a host log file as stdio is seen as a host file, and is reachable.
    let id = lab.id();
    lab.start(rt, &id, lab.spec(&id, &["sleep", "30"]));
    let pid = rt.pid(&id).expect("pid").expect("running");
    wait_for_exec(pid, "sleep");
    let found = posture
        .check_fds(pid, &FdPolicy::sandbox_process())
        .expect("check");
    let reopened = rt
        .exec(&id, &["sh", "-c", "echo grown-from-inside >> /proc/1/fd/1"])
        .expect("exec");
    lab.stop(rt, &id);
    let host_fds: Vec<u32> = found
        .iter()
        .filter_map(|m| match m {
            Mismatch::HostFile { fd, .. } => Some(*fd),
            _ => None,
        })
        .collect();
    // stdin is /dev/null, which both runtimes leave as the sandbox's own: only the log shows.
    assert_eq!(host_fds, vec![1, 2], "log-file init: {found:?}");
    assert_eq!(
        reopened, 0,
        "the twin's attack failed, so it is mis-written"
    );
    assert!(
        lab.log(&id).contains("grown-from-inside"),
        "{}",
        lab.log(&id)
    );
}

/// Everything written into a pipe until its last writer closes it.
fn read_to_end(read_end: std::os::fd::OwnedFd) -> String {
    use std::io::Read;
    let mut got = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut got)
        .expect("read pipe");
    got
}
