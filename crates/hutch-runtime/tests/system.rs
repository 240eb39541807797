//! System tests: the conformance suite against crun and runc on this host. They need root and
//! the runtime binaries; a missing prerequisite fails with its name (never a silent skip).
//!
//! Run: `cargo test -p hutch-runtime --test system` (as root).

mod conformance;

use std::path::Path;
use std::time::{Duration, Instant};

use hutch_cgroup::CgroupFs;
use hutch_core::Runtime;
use hutch_runtime::{ContainerIo, Crun, Invocation, OciRuntime, Runc};

fn require_root() {
    hutch_testkit::require_root("hutch-runtime system tests (OCI runtimes)");
}

fn state_root(kind: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("hutch-{kind}-state-"))
        .tempdir()
        .expect("state dir")
}

fn crun(root: &Path) -> Crun {
    let cgroups = CgroupFs::system().expect("open /sys/fs/cgroup");
    Crun::new(None, root, &cgroups)
        .unwrap_or_else(|e| panic!("prerequisite missing: crun ({e}); apt-get install crun"))
}

fn runc(root: &Path) -> Runc {
    Runc::new(None, root)
        .unwrap_or_else(|e| panic!("prerequisite missing: runc ({e}); apt-get install runc"))
}

#[test]
fn crun_conformance() {
    require_root();
    let root = state_root("crun");
    conformance::run_all(&crun(root.path()));
}

#[test]
fn runc_conformance() {
    require_root();
    let root = state_root("runc");
    conformance::run_all(&runc(root.path()));
}

#[test]
fn default_runtime_for_this_host_is_crun() {
    assert_eq!(
        hutch_runtime::default_for_host(),
        Some(Runtime::Crun),
        "prerequisite missing: crun (apt-get install crun)"
    );
}

#[test]
fn crun_without_the_workaround_fails_on_a_hybrid_host() {
    require_root();
    let cgroups = CgroupFs::system().expect("open /sys/fs/cgroup");
    let root = state_root("crun-direct");
    let needed = crun(root.path()).invocation() != &Invocation::Direct;
    let lab = conformance::Lab::new("direct");
    let direct = Crun::with_invocation(None, root.path(), Invocation::Direct).expect("crun");
    let id = lab.id();
    let spec = lab.spec(&id, &["true"]).validate().expect("valid");
    let bundle =
        hutch_runtime::bundle::write_bundle(&lab.dir.path().join(&id), &spec).expect("bundle");
    let result = direct.run_to_exit(&id, &bundle, &ContainerIo::Null, Duration::from_secs(30));
    lab.cgroups
        .sandbox(&id)
        .expect("cg")
        .remove()
        .expect("remove cgroup");
    if needed {
        // Positive twin of the workaround: crun 1.8 refuses this layout without it.
        let err = result.expect_err("crun ran directly on a hybrid host");
        assert!(err.to_string().contains("hybrid"), "{err}");
    } else {
        assert_eq!(result.expect("crun run"), 0, "{:?}", cgroups.layout());
    }
}

/// Median latency of `run_to_exit` of `/bin/true`, printed for the report.
fn median_run(rt: &dyn OciRuntime, lab: &conformance::Lab, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let id = lab.id();
        let spec = lab.spec(&id, &["true"]);
        let valid = spec.validate().expect("valid");
        let bundle =
            hutch_runtime::bundle::write_bundle(&lab.dir.path().join("bench").join(&id), &valid)
                .expect("bundle");
        let start = Instant::now();
        let code = rt
            .run_to_exit(&id, &bundle, &ContainerIo::Null, Duration::from_secs(30))
            .expect("run");
        times.push(start.elapsed());
        assert_eq!(code, 0);
        lab.cgroups.sandbox(&id).expect("cg").remove().expect("rm");
    }
    times.sort();
    times[n / 2]
}

#[test]
#[ignore = "benchmark: cargo test -p hutch-runtime --test system -- --ignored --nocapture"]
fn measure_run_latency() {
    require_root();
    let lab = conformance::Lab::new("bench");
    let root = state_root("bench");
    let n = 30;
    let crun_rt = crun(&root.path().join("crun"));
    let runc_rt = runc(&root.path().join("runc"));
    // The shell wrapper of MACHINE-NOTES, for comparison with the in-process pre_exec one.
    let wrapper = lab.dir.path().join("crun-wrapper");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nexec unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec crun \"$@\"' crun \"$@\"\n",
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let shell_rt = Crun::with_invocation(
        Some(wrapper),
        root.path().join("crun-sh"),
        Invocation::Direct,
    )
    .expect("crun wrapper");
    eprintln!(
        "crun (pre_exec detach): {:?}",
        median_run(&crun_rt, &lab, n)
    );
    eprintln!(
        "crun (unshare+sh+umount wrapper): {:?}",
        median_run(&shell_rt, &lab, n)
    );
    eprintln!("runc: {:?}", median_run(&runc_rt, &lab, n));
}
