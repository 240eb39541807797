//! Unit tests against fixture cgroup trees (v1 hybrid as on the Hutch machines, and v2).

use super::*;
use std::fs;
use tempfile::TempDir;

const V1_HIERARCHIES: &[&str] = &[
    "blkio",
    "cpu,cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "memory",
    "pids",
    "systemd",
];

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("fixture path has a parent")).expect("mkdir");
    fs::write(path, text).expect("write fixture");
}

/// A v1 tree: one dir per hierarchy with `cgroup.procs`, a `cpu -> cpu,cpuacct` alias, and a
/// hybrid cgroup2 mount at `unified` holding `hugetlb`.
fn v1_fixture() -> TempDir {
    let tmp = TempDir::new().expect("tempdir");
    for h in V1_HIERARCHIES {
        write(&tmp.path().join(h).join("cgroup.procs"), "");
    }
    std::os::unix::fs::symlink("cpu,cpuacct", tmp.path().join("cpu")).expect("symlink");
    write(&tmp.path().join("unified/cgroup.controllers"), "hugetlb\n");
    tmp
}

fn v1_sandbox(tmp: &TempDir, id: &str) -> (CgroupFs, Cgroup) {
    let fs = CgroupFs::open(tmp.path()).expect("open");
    let cg = fs
        .parent("hutch")
        .expect("parent")
        .sandbox(id)
        .expect("sandbox");
    cg.create().expect("create");
    let base = |h: &str| tmp.path().join(h).join("hutch").join(id);
    write(&base("memory").join("memory.usage_in_bytes"), "4096\n");
    write(&base("memory").join("memory.limit_in_bytes"), "33554432\n");
    write(
        &base("memory").join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    write(&base("pids").join("pids.current"), "7\n");
    write(&base("pids").join("pids.max"), "max\n");
    write(&base("cpu,cpuacct").join("cpuacct.usage"), "1500000000\n");
    write(&base("freezer").join("freezer.state"), "THAWED\n");
    write(&base("freezer").join("cgroup.procs"), "");
    (fs, cg)
}

fn v2_fixture() -> TempDir {
    let tmp = TempDir::new().expect("tempdir");
    write(&tmp.path().join("cgroup.controllers"), "cpu memory pids\n");
    write(&tmp.path().join("cgroup.procs"), "1\n");
    tmp
}

fn v2_sandbox(tmp: &TempDir, id: &str) -> (CgroupFs, Cgroup) {
    let fs = CgroupFs::open(tmp.path()).expect("open");
    let cg = fs
        .parent("hutch")
        .expect("parent")
        .sandbox(id)
        .expect("sandbox");
    let dir = tmp.path().join("hutch").join(id);
    write(&dir.join("memory.current"), "8192\n");
    write(&dir.join("memory.max"), "max\n");
    write(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n",
    );
    write(&dir.join("pids.current"), "3\n");
    write(&dir.join("pids.max"), "64\n");
    write(
        &dir.join("cpu.stat"),
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
    );
    write(&dir.join("cgroup.freeze"), "0\n");
    write(&dir.join("cgroup.events"), "populated 1\nfrozen 0\n");
    write(&dir.join("cgroup.procs"), "");
    (fs, cg)
}

#[test]
fn detects_v1_hybrid_layout_and_skips_aliases() {
    let tmp = v1_fixture();
    let fs = CgroupFs::open(tmp.path()).expect("open");
    let Layout::V1 {
        hierarchies,
        unified,
    } = fs.layout()
    else {
        panic!("expected v1, got {:?}", fs.layout());
    };
    let dirs: Vec<&str> = hierarchies.iter().map(|h| h.dir.as_str()).collect();
    assert_eq!(dirs, V1_HIERARCHIES);
    assert_eq!(
        hierarchies[1].controllers,
        vec!["cpu".to_owned(), "cpuacct".to_owned()]
    );
    assert_eq!(unified.as_deref(), Some("unified"));
    assert_eq!(fs.hybrid_v2_controllers().expect("read"), vec!["hugetlb"]);
}

#[test]
fn hybrid_without_controllers_reports_none() {
    let tmp = v1_fixture();
    fs::write(tmp.path().join("unified/cgroup.controllers"), "").expect("write");
    let fs = CgroupFs::open(tmp.path()).expect("open");
    assert!(fs.hybrid_v2_controllers().expect("read").is_empty());
}

#[test]
fn detects_v2_layout() {
    let tmp = v2_fixture();
    let fs = CgroupFs::open(tmp.path()).expect("open");
    assert_eq!(fs.layout(), &Layout::V2);
    assert!(fs.hybrid_v2_controllers().expect("read").is_empty());
}

#[test]
fn empty_dir_is_not_a_cgroup_root() {
    let tmp = TempDir::new().expect("tempdir");
    let err = CgroupFs::open(tmp.path()).expect_err("must fail");
    assert!(matches!(err, CgroupError::NotACgroupRoot { .. }), "{err}");
}

#[test]
fn names_are_validated() {
    let tmp = v2_fixture();
    let fs = CgroupFs::open(tmp.path()).expect("open");
    for bad in ["", "../x", "a//b", "A", "a/./b", "x y"] {
        assert!(fs.parent(bad).is_err(), "parent {bad:?} accepted");
    }
    assert!(fs.parent("hutch/test-1").is_ok());
    let parent = fs.parent("hutch").expect("parent");
    for bad in ["", "sb-1", "SB1", "../x", "a/b", &"a".repeat(65)] {
        assert!(parent.sandbox(bad).is_err(), "id {bad:?} accepted");
    }
    assert_eq!(parent.sandbox("sb1").expect("ok").oci_path(), "/hutch/sb1");
}

#[test]
fn v1_dirs_cover_every_hierarchy_and_the_hybrid_mount() {
    let tmp = v1_fixture();
    let (_, cg) = v1_sandbox(&tmp, "sb1");
    let dirs = cg.dirs();
    assert_eq!(dirs.len(), V1_HIERARCHIES.len() + 1);
    for d in &dirs {
        assert!(d.ends_with("hutch/sb1"), "{}", d.display());
        assert!(d.is_dir());
    }
    assert!(dirs.contains(&tmp.path().join("unified/hutch/sb1")));
}

#[test]
fn v1_reads_accounting() {
    let tmp = v1_fixture();
    let (_, cg) = v1_sandbox(&tmp, "sb1");
    assert_eq!(cg.memory_usage().expect("usage"), 4096);
    assert_eq!(cg.memory_limit().expect("limit"), Some(32 << 20));
    assert_eq!(cg.oom_kills().expect("oom"), 3);
    assert_eq!(cg.pids_current().expect("pids"), 7);
    assert_eq!(cg.pids_max().expect("pids max"), None);
    assert_eq!(cg.cpu_usage().expect("cpu"), Duration::from_millis(1500));
}

#[test]
fn v1_unlimited_memory_is_none() {
    let tmp = v1_fixture();
    let (_, cg) = v1_sandbox(&tmp, "sb1");
    fs::write(
        tmp.path().join("memory/hutch/sb1/memory.limit_in_bytes"),
        "9223372036854771712\n",
    )
    .expect("write");
    assert_eq!(cg.memory_limit().expect("limit"), None);
}

#[test]
fn v1_old_kernel_without_oom_kill_line_counts_zero() {
    let tmp = v1_fixture();
    let (_, cg) = v1_sandbox(&tmp, "sb1");
    fs::write(
        tmp.path().join("memory/hutch/sb1/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\n",
    )
    .expect("write");
    assert_eq!(cg.oom_kills().expect("oom"), 0);
}

#[test]
fn v2_reads_accounting() {
    let tmp = v2_fixture();
    let (_, cg) = v2_sandbox(&tmp, "sb2");
    assert_eq!(cg.memory_usage().expect("usage"), 8192);
    assert_eq!(cg.memory_limit().expect("limit"), None);
    assert_eq!(cg.oom_kills().expect("oom"), 2);
    assert_eq!(cg.pids_current().expect("pids"), 3);
    assert_eq!(cg.pids_max().expect("pids max"), Some(64));
    assert_eq!(cg.cpu_usage().expect("cpu"), Duration::from_micros(2500));
}

#[test]
fn garbage_is_a_parse_error_naming_the_file() {
    let tmp = v2_fixture();
    let (_, cg) = v2_sandbox(&tmp, "sb2");
    fs::write(tmp.path().join("hutch/sb2/pids.current"), "lots\n").expect("write");
    let err = cg.pids_current().expect_err("must fail");
    assert!(err.to_string().contains("pids.current"), "{err}");
}

#[test]
fn missing_file_error_names_op_and_path() {
    let tmp = v1_fixture();
    let (_, cg) = v1_sandbox(&tmp, "sb1");
    fs::remove_file(tmp.path().join("pids/hutch/sb1/pids.current")).expect("rm");
    let err = cg.pids_current().expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.starts_with("read pids.current "), "{msg}");
    assert!(msg.contains("pids/hutch/sb1/pids.current"), "{msg}");
}

#[test]
fn v1_freeze_and_thaw_write_the_freezer() {
    let tmp = v1_fixture();
    let (_, cg) = v1_sandbox(&tmp, "sb1");
    let state = tmp.path().join("freezer/hutch/sb1/freezer.state");
    cg.freeze().expect("freeze");
    assert_eq!(fs::read_to_string(&state).expect("read"), "FROZEN");
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Frozen);
    cg.thaw().expect("thaw");
    assert_eq!(fs::read_to_string(&state).expect("read"), "THAWED");
}

#[test]
fn v2_freeze_waits_for_the_kernel_and_times_out() {
    let tmp = v2_fixture();
    let (_, cg) = v2_sandbox(&tmp, "sb2");
    // The fixture's cgroup.events never says `frozen 1`: the wait must give up, not hang.
    let err = cg.freeze().expect_err("events never report frozen");
    assert!(
        matches!(err, CgroupError::Timeout { op: "freeze", .. }),
        "{err}"
    );
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Freezing);
    // Once the kernel (here: the fixture) reports it, freeze succeeds.
    fs::write(
        tmp.path().join("hutch/sb2/cgroup.events"),
        "populated 1\nfrozen 1\n",
    )
    .expect("write");
    cg.freeze().expect("freeze");
    assert_eq!(
        fs::read_to_string(tmp.path().join("hutch/sb2/cgroup.freeze")).expect("read"),
        "1"
    );
}

#[test]
fn procs_are_parsed() {
    let tmp = v1_fixture();
    let (_, cg) = v1_sandbox(&tmp, "sb1");
    fs::write(
        tmp.path().join("freezer/hutch/sb1/cgroup.procs"),
        "12\n345\n",
    )
    .expect("write");
    assert_eq!(cg.procs().expect("procs"), vec![12, 345]);
}

#[test]
fn v2_kill_all_uses_cgroup_kill() {
    let tmp = v2_fixture();
    let (_, cg) = v2_sandbox(&tmp, "sb2");
    let kill = tmp.path().join("hutch/sb2/cgroup.kill");
    fs::write(&kill, "").expect("write");
    // A PID that must never be signalled: the cgroup.kill path takes no PIDs.
    fs::write(tmp.path().join("hutch/sb2/cgroup.procs"), "1\n").expect("write");
    cg.kill_all(Signal::KILL).expect("kill");
    assert_eq!(fs::read_to_string(&kill).expect("read"), "1");
}

#[test]
fn v1_kill_all_freezes_signals_and_thaws() {
    let tmp = v1_fixture();
    let (_, cg) = v1_sandbox(&tmp, "sb1");
    // A real child of this test, killed through the fixture's cgroup.procs.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    fs::write(
        tmp.path().join("freezer/hutch/sb1/cgroup.procs"),
        format!("{}\n", child.id()),
    )
    .expect("write");
    cg.kill_all(Signal::KILL).expect("kill");
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Thawed);
}

#[test]
fn kill_all_of_a_missing_cgroup_is_ok() {
    let tmp = v1_fixture();
    let fs = CgroupFs::open(tmp.path()).expect("open");
    let cg = fs.parent("hutch").expect("p").sandbox("gone").expect("s");
    cg.kill_all(Signal::KILL)
        .expect("no cgroup, nothing to kill");
}

#[test]
fn remove_is_bottom_up_and_tolerates_missing_dirs() {
    let tmp = v1_fixture();
    let fs_ = CgroupFs::open(tmp.path()).expect("open");
    let parent = fs_.parent("hutch").expect("parent");
    let cg = parent.sandbox("sb1").expect("sandbox");
    cg.create().expect("create");
    // A nested child in one hierarchy; another hierarchy already lacks the dir.
    fs::create_dir_all(tmp.path().join("memory/hutch/sb1/inner/deeper")).expect("mkdir");
    fs::remove_dir(tmp.path().join("pids/hutch/sb1")).expect("rmdir");
    // Fixture dirs are plain dirs: their files must go first (cgroupfs has none to remove).
    for d in cg.dirs() {
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    fs::remove_file(e.path()).expect("rm");
                }
            }
        }
    }
    assert!(cg.exists());
    cg.remove().expect("remove");
    assert!(!cg.exists());
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left", d.display());
    }
    cg.remove().expect("second remove is a no-op");
    assert!(parent.list().expect("list").is_empty());
}

#[test]
fn list_unions_hierarchies_and_ignores_non_ids() {
    let tmp = v1_fixture();
    let fs_ = CgroupFs::open(tmp.path()).expect("open");
    let parent = fs_.parent("hutch").expect("parent");
    fs::create_dir_all(tmp.path().join("memory/hutch/sbaaa")).expect("mkdir");
    fs::create_dir_all(tmp.path().join("pids/hutch/sbbbb")).expect("mkdir");
    fs::create_dir_all(tmp.path().join("pids/hutch/sbaaa")).expect("mkdir");
    fs::create_dir_all(tmp.path().join("pids/hutch/Not-An-Id")).expect("mkdir");
    write(&tmp.path().join("pids/hutch/pids.max"), "max\n");
    assert_eq!(parent.list().expect("list"), vec!["sbaaa", "sbbbb"]);
}

#[test]
fn list_of_missing_parent_is_empty() {
    let tmp = v2_fixture();
    let fs_ = CgroupFs::open(tmp.path()).expect("open");
    assert!(
        fs_.parent("hutch")
            .expect("p")
            .list()
            .expect("list")
            .is_empty()
    );
}

#[test]
fn v1_create_inherits_empty_cpusets_level_by_level() {
    let tmp = v1_fixture();
    write(&tmp.path().join("cpuset/cpuset.cpus"), "0-1\n");
    write(&tmp.path().join("cpuset/cpuset.mems"), "0\n");
    // The kernel creates these files empty in a new cpuset cgroup; the fixture does it by hand.
    for level in ["hutch", "hutch/sb1"] {
        write(
            &tmp.path().join("cpuset").join(level).join("cpuset.cpus"),
            "",
        );
        write(
            &tmp.path().join("cpuset").join(level).join("cpuset.mems"),
            "",
        );
    }
    let fs_ = CgroupFs::open(tmp.path()).expect("open");
    let cg = fs_.parent("hutch").expect("p").sandbox("sb1").expect("s");
    cg.create().expect("create");
    let read = |p: &str| fs::read_to_string(tmp.path().join(p)).expect("read");
    assert_eq!(read("cpuset/hutch/cpuset.cpus"), "0-1");
    assert_eq!(read("cpuset/hutch/sb1/cpuset.cpus"), "0-1");
    assert_eq!(read("cpuset/hutch/sb1/cpuset.mems"), "0");
}
