//! System test against the real `/sys/fs/cgroup`: needs root. A missing prerequisite fails the
//! test with its name (it never skips silently).

use hutch_cgroup::{CgroupFs, FreezeState, Layout, Signal};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

fn require_root() {
    hutch_testkit::require_root("hutch-cgroup system tests (cgroup writes)");
}

#[test]
fn create_account_freeze_kill_and_remove_a_real_cgroup() {
    require_root();
    let cgfs = CgroupFs::system().expect("open /sys/fs/cgroup");
    let parent = cgfs.parent("hutch-test").expect("parent");
    let id = format!("cgsys{}", std::process::id());
    let cg = parent.sandbox(&id).expect("sandbox");
    cg.remove().expect("clear leftovers");
    cg.create().expect("create");
    assert!(cg.exists());
    assert!(parent.list().expect("list").contains(&id));

    // Put a child process into the cgroup in every hierarchy (the runtime does this normally).
    let mut child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    let _cleanup = Cleanup(cg.clone());
    for dir in cg.dirs() {
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("join {}: {e}", dir.display()));
    }
    if let Layout::V1 { .. } = cgfs.layout() {
        let memory = cg
            .dirs()
            .into_iter()
            .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
            .expect("memory hierarchy");
        fs::write(memory.join("memory.limit_in_bytes"), "67108864").expect("set limit");
        assert_eq!(cg.memory_limit().expect("limit"), Some(64 << 20));
    }
    assert_eq!(cg.procs().expect("procs"), vec![pid as i32]);
    assert_eq!(cg.pids_current().expect("pids"), 1);
    assert_eq!(cg.pids_max().expect("pids max"), None);
    // v1 does not move existing charges with a task, so usage may read 0 here.
    cg.memory_usage().expect("usage");
    assert_eq!(cg.oom_kills().expect("oom"), 0);
    cg.cpu_usage().expect("cpu");

    cg.freeze().expect("freeze");
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Frozen);
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let state = stat
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .next();
    // A frozen task sleeps in the refrigerator (`S` or `D`), it is not running.
    assert!(matches!(state, Some("S") | Some("D")), "{stat}");
    cg.thaw().expect("thaw");
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Thawed);

    // Removing a populated cgroup fails (the kernel refuses) ...
    assert!(
        cg.remove().is_err(),
        "rmdir of a populated cgroup must fail"
    );
    // ... and succeeds once its processes are killed.
    cg.kill_all(Signal::KILL).expect("kill all");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(9));
    cg.remove().expect("remove");
    assert!(!cg.exists());
    for dir in cg.dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(!parent.list().expect("list").contains(&id));
}

/// Kills and removes the test cgroup even when an assertion fails half-way.
struct Cleanup(hutch_cgroup::Cgroup);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kill_all(Signal::KILL);
        let _ = self.0.remove();
    }
}
