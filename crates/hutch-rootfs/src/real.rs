//! The real [`HostOps`]: mount(2) through rustix (not the `mount` CLI, which
//! costs ~7 ms), loop devices through `/dev/loop-control` ioctls, mkfs.ext4
//! through its CLI (a few ms). Kernel files (`/proc`, `/sys`, `/dev`) are
//! constructor parameters so the parsers can be tested on fixtures.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::ops::{HostOps, LoopAttachment, OpError, OverlaySpec};

/// The real host operations. Needs root.
#[derive(Debug, Clone)]
pub struct RealHostOps {
    proc_root: PathBuf,
    sys_root: PathBuf,
    dev_root: PathBuf,
    mkfs: PathBuf,
}

impl Default for RealHostOps {
    fn default() -> Self {
        RealHostOps::new("/proc", "/sys", "/dev", "mkfs.ext4")
    }
}

// <linux/loop.h>
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Maximum length of the overlay option string mount(2) accepts (one page).
const MAX_MOUNT_DATA: usize = 4095;

impl RealHostOps {
    pub fn new(
        proc_root: impl Into<PathBuf>,
        sys_root: impl Into<PathBuf>,
        dev_root: impl Into<PathBuf>,
        mkfs: impl Into<PathBuf>,
    ) -> Self {
        RealHostOps {
            proc_root: proc_root.into(),
            sys_root: sys_root.into(),
            dev_root: dev_root.into(),
            mkfs: mkfs.into(),
        }
    }

    fn try_attach(&self, ctl: &OwnedFd, backing: &OwnedFd) -> io::Result<LoopAttachment> {
        #[allow(unsafe_code)]
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device
        // number or -1; `ctl` is an open /dev/loop-control descriptor.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let device = self.dev_root.join(format!("loop{n}"));
        let dev = rustix::fs::open(&device, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        let config = LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; LO_NAME_SIZE],
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; LO_KEY_SIZE],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        #[allow(unsafe_code)]
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` (layout mirrored
        // by `LoopConfig`, repr(C)) through the pointer, which is valid for
        // the duration of the call; `dev` is an open loop device descriptor.
        let rc = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LoopAttachment {
            device,
            guard: Some(dev),
        })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for space, etc.).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// Mount points listed in a mountinfo text that are at or under `dir`, last
/// mounted first.
pub fn parse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.reverse();
    found
}

fn errno(e: rustix::io::Errno) -> io::Error {
    e.into()
}

impl HostOps for RealHostOps {
    fn mkfs_ext4(&self, image: &Path) -> Result<(), OpError> {
        // No journal (the upper dir is scratch: a crash discards the sandbox),
        // no reserved blocks (disk_mb is what the sandbox gets), no discard
        // (keeps the image sparse and mkfs fast), lazy inode tables.
        let out = Command::new(&self.mkfs)
            .args([
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-m",
                "0",
                "-E",
                "nodiscard,lazy_itable_init=1,root_owner=0:0",
            ])
            .arg(image)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| OpError::new("run mkfs.ext4 on", image, e))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(OpError::new(
                "mkfs.ext4",
                image,
                io::Error::other(format!("{}: {msg}", out.status)),
            ));
        }
        Ok(())
    }

    fn loop_attach(&self, image: &Path) -> Result<LoopAttachment, OpError> {
        let ctl = rustix::fs::open(
            self.dev_root.join("loop-control"),
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| OpError::new("open loop-control for", image, errno(e)))?;
        let backing = rustix::fs::open(
            image,
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| OpError::new("open loop image", image, errno(e)))?;
        // Another process may take the free device between GET_FREE and
        // CONFIGURE (EBUSY): ask again.
        let mut last = io::Error::other("no attempt");
        for _ in 0..16 {
            match self.try_attach(&ctl, &backing) {
                Ok(a) => return Ok(a),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
                Err(e) => return Err(OpError::new("attach loop device to", image, e)),
            }
        }
        Err(OpError::new("attach loop device to", image, last))
    }

    fn loop_detach(&self, device: &Path) -> Result<(), OpError> {
        let dev = match rustix::fs::open(device, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NXIO) => return Ok(()),
            Err(e) => return Err(OpError::new("open loop device", device, errno(e))),
        };
        #[allow(unsafe_code)]
        // SAFETY: LOOP_CLR_FD takes no argument; `dev` is an open loop device.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // ENXIO: not bound (already cleared, e.g. by autoclear).
            if e.raw_os_error() != Some(libc::ENXIO) {
                return Err(OpError::new("detach loop device", device, e));
            }
        }
        Ok(())
    }

    fn mount_ext4(&self, device: &Path, target: &Path) -> Result<(), OpError> {
        rustix::mount::mount(
            device,
            target,
            "ext4",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOATIME,
            None,
        )
        .map_err(|e| OpError::new("mount ext4 at", target, errno(e)))
    }

    /// `volatile`: the upper dir is scratch that a crash discards (teardown,
    /// never remount), so skipping its syncs is safe; it cuts the unmount
    /// from ~25 ms to ~1 ms on this machine.
    ///
    /// The overlay's options are what `/proc/self/mountinfo` shows inside the
    /// sandbox, so they must not name host paths (the data dir, layer
    /// digests): [`mount_overlay_unnamed`] names every layer `.`. Kernels
    /// before 6.8 know no `lowerdir+`; there the overlay is mounted with
    /// absolute paths as before (`docs/decisions.md`, Isolation).
    fn mount_overlay(&self, spec: &OverlaySpec) -> Result<(), OpError> {
        if spec.lower.is_empty() {
            return Err(OpError::new(
                "overlay without lower layers at",
                &spec.target,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let all = spec.lower.iter().chain([&spec.upper, &spec.work]);
        for p in all {
            if !p.is_absolute() {
                return Err(OpError::new(
                    "overlay layer path (relative)",
                    p,
                    io::Error::from_raw_os_error(libc::EINVAL),
                ));
            }
        }
        match mount_overlay_unnamed(spec) {
            Err(Unnamed::Unsupported) if spec.idmap.is_some() => Err(OpError::new(
                "mount overlay over idmapped layers (needs Linux 6.8 or later: the new mount API with lowerdir+) at",
                &spec.target,
                io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            )),
            Err(Unnamed::Unsupported) => mount_overlay_by_paths(spec),
            Err(Unnamed::Failed(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    fn bind_mount_ro(&self, source: &Path, target: &Path) -> Result<(), OpError> {
        rustix::mount::mount_bind(source, target)
            .map_err(|e| OpError::new("bind mount at", target, errno(e)))?;
        // Read-only needs a remount of the bind mount; until it succeeds the
        // mount is writable, so undo it on failure.
        if let Err(e) = rustix::mount::mount_remount(
            target,
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
            "",
        ) {
            let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
            return Err(OpError::new("remount read-only", target, errno(e)));
        }
        // Keep mounts made inside from propagating back to the source.
        rustix::mount::mount_change(target, MountPropagationFlags::PRIVATE)
            .map_err(|e| OpError::new("make mount private", target, errno(e)))
    }

    fn unmount(&self, target: &Path, detach: bool) -> Result<(), OpError> {
        let flags = if detach {
            UnmountFlags::DETACH | UnmountFlags::NOFOLLOW
        } else {
            UnmountFlags::NOFOLLOW
        };
        match rustix::mount::unmount(target, flags) {
            // EINVAL: not a mount point; ENOENT: gone.
            Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(OpError::new("unmount", target, errno(e))),
        }
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), OpError> {
        rustix::fs::chmodat(
            rustix::fs::CWD,
            path,
            Mode::from_raw_mode(mode),
            rustix::fs::AtFlags::empty(),
        )
        .map_err(|e| OpError::new("chmod", path, errno(e)))
    }

    fn set_owner(&self, path: &Path, uid: u32, gid: u32) -> Result<(), OpError> {
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| OpError::new("chown", path, errno(e)))
    }

    fn mounts_under(&self, dir: &Path) -> Result<Vec<PathBuf>, OpError> {
        let path = self.proc_root.join("self/mountinfo");
        let text = fs::read_to_string(&path).map_err(|e| OpError::new("read", &path, e))?;
        Ok(parse_mounts_under(&text, dir))
    }

    fn loops_backed_under(&self, dir: &Path) -> Result<Vec<PathBuf>, OpError> {
        let block = self.sys_root.join("block");
        let entries = fs::read_dir(&block).map_err(|e| OpError::new("read", &block, e))?;
        let mut found = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.as_bytes().starts_with(b"loop") {
                continue;
            }
            // Present only while the device is bound.
            let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
                continue;
            };
            let backing = backing.trim_end_matches('\n');
            let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
            if Path::new(backing).starts_with(dir) {
                found.push(self.dev_root.join(&name));
            }
        }
        found.sort();
        Ok(found)
    }
}

/// Why [`mount_overlay_unnamed`] did not mount.
enum Unnamed {
    /// The kernel has no new mount API or no `lowerdir+` (before 6.8).
    Unsupported,
    Failed(OpError),
}

/// Overlay options for the new mount API after the layers: the same as the
/// legacy mount's.
const OVERLAY_OPTIONS: &[(&str, &str)] = &[
    ("index", "off"),
    ("xino", "off"),
    ("redirect_dir", "off"),
    ("metacopy", "off"),
];

/// Mounts the overlay through `fsopen`/`fsconfig`/`fsmount`/`move_mount`,
/// naming every layer `.` relative to a working directory set to it, so the
/// superblock options read `lowerdir+=.,...,upperdir=.,workdir=.`. The
/// kernel resolves each name when `fsconfig` is called, so the working
/// directory only has to be right for that call.
///
/// 1. On a thread of its own, unshare the filesystem context (`CLONE_FS`):
///    its working directory changes, the process's does not.
/// 2. `fsopen("overlay")`; source `overlay`.
/// 3. For each lower layer, top-most first: open it (`O_PATH`, no symlink
///    followed), `fchdir` to it, `lowerdir+` = `.`. The first refusal with
///    EINVAL means the kernel has no `lowerdir+`: [`Unnamed::Unsupported`].
/// 4. The same for `upperdir` and `workdir`; then the options and
///    `volatile`; create the superblock.
/// 5. `fsmount` it nosuid, nodev; `move_mount` it onto the target (an
///    absolute path: the changed working directory does not matter).
fn mount_overlay_unnamed(spec: &OverlaySpec) -> Result<(), Unnamed> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                #[allow(unsafe_code)]
                // SAFETY: CLONE_FS gives this thread its own root, working
                // directory and umask; it shares no descriptors or memory
                // differently, and the thread ends after this function.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                    .map_err(|e| {
                        Unnamed::Failed(OpError::new(
                            "unshare the working directory to mount overlay at",
                            &spec.target,
                            errno(e),
                        ))
                    })?;
                mount_overlay_here(spec)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Unnamed::Failed(OpError::new(
                    "mount overlay (thread panicked) at",
                    &spec.target,
                    io::Error::other("panic"),
                )))
            })
    })
}

/// Steps 2–5 of [`mount_overlay_unnamed`], on a thread with its own working
/// directory.
fn mount_overlay_here(spec: &OverlaySpec) -> Result<(), Unnamed> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let failed = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: rustix::io::Errno| Unnamed::Failed(OpError::new(op, &path, errno(e)))
    };
    let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOSYS) => return Err(Unnamed::Unsupported),
        Err(e) => return Err(failed("fsopen overlay for", &spec.target)(e)),
    };
    fsconfig_set_string(&fs, "source", "overlay")
        .map_err(failed("set the overlay source for", &spec.target))?;
    let layers = spec
        .lower
        .iter()
        .map(|p| ("lowerdir+", p))
        .chain([("upperdir", &spec.upper), ("workdir", &spec.work)]);
    // The idmapped copies of the layers: each is a mount namespace of its own that closing
    // its descriptor dissolves, and the overlay takes its private clones of the layers only
    // when the superblock is created. Open until then.
    let mut trees = Vec::new();
    for (i, (key, dir)) in layers.enumerate() {
        let fd = match (&spec.idmap, key) {
            // A lower layer seen through the sandbox's user namespace: a detached copy of
            // its mount, idmapped; the overlay takes it by the working directory like any
            // other, and nothing is attached anywhere.
            (Some(map), "lowerdir+") => idmapped_tree(dir, map).map_err(Unnamed::Failed)?,
            _ => rustix::fs::open(
                dir.as_path(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(failed("open overlay layer", dir))?,
        };
        rustix::process::fchdir(&fd).map_err(failed("change into overlay layer", dir))?;
        match fsconfig_set_string(&fs, key, ".") {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) if i == 0 => return Err(Unnamed::Unsupported),
            Err(e) => return Err(failed("add overlay layer", dir)(e)),
        }
        trees.push(fd);
    }
    for (key, value) in OVERLAY_OPTIONS {
        fsconfig_set_string(&fs, *key, *value)
            .map_err(failed("set an overlay option for", &spec.target))?;
    }
    fsconfig_set_flag(&fs, "volatile").map_err(failed("set volatile for", &spec.target))?;
    fsconfig_create(&fs).map_err(failed("create the overlay for", &spec.target))?;
    drop(trees);
    let mnt = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(failed("fsmount overlay for", &spec.target))?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        spec.target.as_path(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(failed("mount overlay at", &spec.target))
}

/// A detached copy of the mount at `dir` (`open_tree(OPEN_TREE_CLONE)`) whose files are
/// seen through `map`'s user namespace (`mount_setattr(MOUNT_ATTR_IDMAP)`): host uid 0 reads
/// as the namespace's root, and so on.
fn idmapped_tree(dir: &Path, map: &crate::ops::Idmap) -> Result<OwnedFd, OpError> {
    use rustix::mount::{OpenTreeFlags, open_tree};
    let tree = open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| OpError::new("clone the mount of layer", dir, errno(e)))?;
    // <linux/mount.h>; rustix has no mount_setattr.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(map.userns.as_raw_fd()).unwrap_or(u64::MAX),
    };
    #[allow(unsafe_code)]
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a live, properly laid
    // out struct and an empty path string; it changes only the detached mount `tree` names.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(OpError::new(
            "idmap the mount of layer",
            dir,
            io::Error::last_os_error(),
        ));
    }
    Ok(tree)
}

/// The overlay through mount(2) with absolute layer paths in its options:
/// the fallback on kernels before 6.8 (and the twin of the test that shows
/// the unnamed mount hides them). Paths with `:`, `,`, `\` or control characters
/// would be misparsed, so they are refused.
pub fn mount_overlay_by_paths(spec: &OverlaySpec) -> Result<(), OpError> {
    let bad = |p: &Path| {
        p.as_os_str()
            .as_bytes()
            .iter()
            .any(|&b| b == b':' || b == b',' || b == b'\\' || b < 0x20)
    };
    let all = spec.lower.iter().chain([&spec.upper, &spec.work]);
    for p in all {
        if bad(p) {
            return Err(OpError::new(
                "overlay layer path (contains : , \\ or control characters)",
                p,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
    }
    let lower: Vec<String> = spec
        .lower
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={},index=off,xino=off,redirect_dir=off,metacopy=off,volatile",
        lower.join(":"),
        spec.upper.to_string_lossy(),
        spec.work.to_string_lossy()
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(OpError::new(
            "overlay options longer than a page (too many layers) at",
            &spec.target,
            io::Error::from_raw_os_error(libc::E2BIG),
        ));
    }
    let data = std::ffi::CString::new(data).map_err(|_| {
        OpError::new(
            "overlay options with NUL at",
            &spec.target,
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    rustix::mount::mount(
        "overlay",
        &spec.target,
        "overlay",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|e| OpError::new("mount overlay at", &spec.target, errno(e)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing_finds_nested_mounts_last_first() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw
90 22 7:0 / /var/lib/hutch/rootfs/sb1/disk rw - ext4 /dev/loop0 rw
91 22 0:50 / /var/lib/hutch/rootfs/sb1/rootfs rw - overlay overlay rw
92 22 0:51 / /var/lib/hutch/rootfs/sb10/rootfs rw - overlay overlay rw
93 22 0:52 / /var/lib/hutch/rootfs/sb1/with\\040space rw - tmpfs tmpfs rw
";
        let got = parse_mounts_under(text, Path::new("/var/lib/hutch/rootfs/sb1"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/lib/hutch/rootfs/sb1/with space"),
                PathBuf::from("/var/lib/hutch/rootfs/sb1/rootfs"),
                PathBuf::from("/var/lib/hutch/rootfs/sb1/disk"),
            ]
        );
    }

    #[test]
    fn loops_are_found_by_backing_file_in_a_sysfs_fixture() {
        let sys = tempfile::tempdir().unwrap();
        for (n, backing) in [
            ("loop0", Some("/data/rootfs/sb1/disk.img\n")),
            ("loop1", Some("/data/rootfs/sb2/disk.img (deleted)\n")),
            ("loop2", None),
        ] {
            let d = sys.path().join("block").join(n).join("loop");
            fs::create_dir_all(&d).unwrap();
            if let Some(b) = backing {
                fs::write(d.join("backing_file"), b).unwrap();
            }
        }
        let ops = RealHostOps::new("/proc", sys.path(), "/dev", "mkfs.ext4");
        let all = ops.loops_backed_under(Path::new("/data/rootfs")).unwrap();
        assert_eq!(
            all,
            vec![PathBuf::from("/dev/loop0"), PathBuf::from("/dev/loop1")]
        );
        let one = ops
            .loops_backed_under(Path::new("/data/rootfs/sb2"))
            .unwrap();
        assert_eq!(one, vec![PathBuf::from("/dev/loop1")]);
    }
}
