//! System tier (root, loop devices, overlayfs): real root filesystems from the
//! busybox template. Fails (never skips) when a prerequisite is missing.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hutch_image::{BuildConfig, Builtin, TemplateCache, UnpackOptions, unpack};
use hutch_rootfs::{HostOps, PrepareSpec, RealHostOps, RootfsManager};

fn prerequisites() {
    hutch_testkit::require_root("mounts and loop devices");
    assert!(
        Path::new("/dev/loop-control").exists(),
        "prerequisite missing: /dev/loop-control (loop module)"
    );
    assert!(
        Command::new("mkfs.ext4")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "prerequisite missing: mkfs.ext4 (apt-get install e2fsprogs; make setup)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "prerequisite missing: /bin/busybox (busybox-static)"
    );
}

/// The busybox template unpacked into a layer directory.
fn busybox_layer(dir: &Path) -> PathBuf {
    let cache = TemplateCache::new(dir.join("cache"), BuildConfig::default());
    let t = cache.ensure(Builtin::Busybox, &mut |_| {}).unwrap();
    let layer = dir.join("layer");
    fs::create_dir(&layer).unwrap();
    unpack(
        fs::File::open(&t.archive).unwrap(),
        &layer,
        &UnpackOptions::default(),
    )
    .unwrap();
    layer
}

/// Writes 64 MiB into `/big` inside the root, as a sandbox process would.
fn write_64_mib(rootfs: &Path) -> std::process::Output {
    Command::new("chroot")
        .arg(rootfs)
        .args(["/bin/dd", "of=/big", "bs=1048576", "count=64"])
        .stdin(fs::File::open("/dev/zero").unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    RealHostOps::default().mounts_under(dir).unwrap()
}

fn loops_under(dir: &Path) -> Vec<PathBuf> {
    RealHostOps::default().loops_backed_under(dir).unwrap()
}

fn host_free(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).unwrap();
    s.f_bavail * s.f_frsize
}

#[test]
fn disk_mb_gives_enospc_inside_and_host_is_unaffected() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let layer = busybox_layer(tmp.path());
    let m = RootfsManager::new(tmp.path().join("rootfs"), RealHostOps::default()).unwrap();
    let _guard = Guard(m.root().to_path_buf());
    let spec = PrepareSpec {
        idmap: None,
        lower: vec![layer.clone()],
        disk_mb: Some(32),
    };
    let p = m.prepare("sbdisk", &spec).unwrap();
    assert!(p.loop_device.is_some());
    assert_eq!(mounts_under(&p.state_dir).len(), 2);
    let mode = fs::metadata(&p.state_dir).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        hutch_rootfs::SANDBOX_DIR_MODE
    );

    let free_before = host_free(tmp.path());
    let out = write_64_mib(&p.rootfs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "64 MiB fit in a 32 MiB disk");
    assert!(
        stderr.contains("No space left on device"),
        "stderr: {stderr}"
    );
    let written = fs::metadata(p.rootfs.join("big")).unwrap().len();
    assert!(
        written < 32 << 20,
        "wrote {written} bytes into a 32 MiB disk"
    );
    // Only the image grew, and by at most its size; the lower layer is untouched.
    let used = free_before.saturating_sub(host_free(tmp.path()));
    assert!(used <= 34 << 20, "host filesystem lost {used} bytes");
    assert!(!layer.join("big").exists());
    // The sandbox can still delete and write small files after hitting the limit.
    let ok = Command::new("chroot")
        .arg(&p.rootfs)
        .args(["/bin/sh", "-c", "rm /big && echo ok > /small && cat /small"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok\n");

    m.teardown("sbdisk").unwrap();
    assert!(
        mounts_under(m.root()).is_empty(),
        "mounts left: {:?}",
        mounts_under(m.root())
    );
    assert!(loops_under(m.root()).is_empty(), "loop devices left");
    assert!(!p.state_dir.exists());
    m.teardown("sbdisk").unwrap();
}

#[test]
fn without_disk_image_the_same_write_succeeds() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let layer = busybox_layer(tmp.path());
    let m = RootfsManager::new(tmp.path().join("rootfs"), RealHostOps::default()).unwrap();
    let _guard = Guard(m.root().to_path_buf());
    let p = m
        .prepare(
            "sbnodisk",
            &PrepareSpec {
                idmap: None,
                lower: vec![layer.clone()],
                disk_mb: None,
            },
        )
        .unwrap();
    assert!(p.loop_device.is_none());
    let out = write_64_mib(&p.rootfs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::metadata(p.rootfs.join("big")).unwrap().len(), 64 << 20);
    assert!(
        p.state_dir.join("upper/big").exists(),
        "write did not land in the upper dir"
    );
    assert!(!layer.join("big").exists());
    m.teardown("sbnodisk").unwrap();
    assert!(mounts_under(m.root()).is_empty());
    assert!(!p.state_dir.exists());
}

#[test]
fn crash_recovery_and_leftover_cleanup() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let layer = busybox_layer(tmp.path());
    let root = tmp.path().join("rootfs");
    let _guard = Guard(root.clone());
    {
        let m = RootfsManager::new(&root, RealHostOps::default()).unwrap();
        for id in ["sb1", "sb2", "sb3"] {
            m.prepare(
                id,
                &PrepareSpec {
                    idmap: None,
                    lower: vec![layer.clone()],
                    disk_mb: Some(16),
                },
            )
            .unwrap();
        }
    }
    // A "restarted agent": a new manager with no memory of the above.
    let m = RootfsManager::new(&root, RealHostOps::default()).unwrap();
    assert_eq!(m.list().unwrap(), ["sb1", "sb2", "sb3"]);
    let removed = m.cleanup_leftovers(&["sb2"]).unwrap();
    assert_eq!(removed, ["sb1", "sb3"]);
    assert_eq!(m.list().unwrap(), ["sb2"]);
    assert_eq!(mounts_under(&root).len(), 2, "sb2 must stay mounted");
    assert_eq!(loops_under(&root).len(), 1);
    let out = Command::new("chroot")
        .arg(root.join("sb2/rootfs"))
        .args(["/bin/busybox", "true"])
        .status();
    assert!(out.unwrap().success());

    // Partial state: only the ext4 mount exists (overlay never made it).
    let sb2 = root.join("sb2");
    RealHostOps::default()
        .unmount(&sb2.join("rootfs"), false)
        .unwrap();
    m.cleanup_leftovers(&[]).unwrap();
    assert!(mounts_under(&root).is_empty());
    assert!(loops_under(&root).is_empty());
    assert!(m.list().unwrap().is_empty());
}

/// The mountinfo line of the mount at `target` (the last one there).
fn mountinfo_of(target: &Path) -> String {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at = format!(" {} ", target.display());
    text.lines()
        .rfind(|l| l.contains(&at))
        .unwrap_or_else(|| panic!("{} not mounted", target.display()))
        .to_owned()
}

/// The overlay's options, which a sandbox reads in its mountinfo, name no
/// host path: no layer, upper or work dir, nothing of the data dir. Layers
/// stack as given (the top-most wins). The twin: the same layers mounted by
/// path (the fallback before kernel 6.8) show all of them.
#[test]
fn overlay_options_name_no_host_path() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_layer(tmp.path());
    let top = tmp.path().join("layer-top");
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::write(top.join("etc/hostname"), "top\n").unwrap();
    fs::write(base.join("etc/hostname"), "base\n").unwrap();
    let m = RootfsManager::new(tmp.path().join("rootfs"), RealHostOps::default()).unwrap();
    let _guard = Guard(m.root().to_path_buf());
    let p = m
        .prepare(
            "sbnames",
            &PrepareSpec {
                idmap: None,
                lower: vec![top.clone(), base.clone()],
                disk_mb: Some(16),
            },
        )
        .unwrap();
    assert_eq!(
        fs::read_to_string(p.rootfs.join("etc/hostname")).unwrap(),
        "top\n"
    );
    assert!(p.rootfs.join("bin/busybox").exists());
    let line = mountinfo_of(&p.rootfs);
    let options = line.split(" - ").nth(1).unwrap();
    assert!(
        options.contains("lowerdir+=.,lowerdir+=.,upperdir=.,workdir=."),
        "{line}"
    );
    let host = tmp.path().to_string_lossy().into_owned();
    assert!(!options.contains(&host), "{line}");
    assert!(!options.contains("sbnames"), "{line}");

    // The twin: mounted by path, the options hold every host path.
    let twin = tmp.path().join("twin");
    for d in ["upper", "work", "rootfs"] {
        fs::create_dir_all(twin.join(d)).unwrap();
    }
    let spec = hutch_rootfs::OverlaySpec {
        idmap: None,
        lower: vec![top.clone(), base.clone()],
        upper: twin.join("upper"),
        work: twin.join("work"),
        target: twin.join("rootfs"),
    };
    hutch_rootfs::real::mount_overlay_by_paths(&spec).unwrap();
    let line = mountinfo_of(&spec.target);
    RealHostOps::default().unmount(&spec.target, false).unwrap();
    for p in [&top, &base, &spec.upper, &spec.work] {
        assert!(line.contains(&*p.to_string_lossy()), "{p:?}: {line}");
    }
    m.teardown("sbnames").unwrap();
}

/// Tears down everything under a manager's root when a test ends, even by a
/// panic, so a failed assertion leaves no mount or loop device behind.
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(m) = RootfsManager::new(&self.0, RealHostOps::default()) {
            let _ = m.cleanup_leftovers(&[]);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn prepare_and_teardown_timings() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let layer = busybox_layer(tmp.path());
    let m = RootfsManager::new(tmp.path().join("rootfs"), RealHostOps::default()).unwrap();
    let _guard = Guard(m.root().to_path_buf());
    for disk_mb in [None, Some(1024)] {
        let (mut prep, mut down) = (Vec::new(), Vec::new());
        for i in 0..10 {
            let id = format!("t{i}");
            let t0 = Instant::now();
            m.prepare(
                &id,
                &PrepareSpec {
                    idmap: None,
                    lower: vec![layer.clone()],
                    disk_mb,
                },
            )
            .unwrap();
            prep.push(t0.elapsed());
            let t0 = Instant::now();
            m.teardown(&id).unwrap();
            down.push(t0.elapsed());
        }
        eprintln!(
            "rootfs disk_mb={disk_mb:?}: prepare median {:?} max {:?}; teardown median {:?} max {:?}",
            median(prep.clone()),
            prep.iter().max().unwrap(),
            median(down.clone()),
            down.iter().max().unwrap()
        );
    }
    assert!(mounts_under(m.root()).is_empty());
}
