//! The narrow interface to the privileged host operations (STYLE.md 3), its
//! real implementation and a recording fake.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A failed host operation, naming the operation and the path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}")]
pub struct OpError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl OpError {
    pub fn new(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        OpError {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// An overlay mount: `lower` is top-most first (overlayfs `lowerdir` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
    /// The user namespace the lower layers are seen through (idmapped mounts): with it,
    /// the layers' files, owned by host root, belong to the namespace's root, and nothing
    /// of them is copied.
    pub idmap: Option<Idmap>,
}

/// A sandbox's user namespace and the host ids its root maps to.
#[derive(Debug, Clone)]
pub struct Idmap {
    /// A descriptor of the namespace (`/proc/<pid>/ns/user`).
    pub userns: std::sync::Arc<OwnedFd>,
    pub uid: u32,
    pub gid: u32,
}

/// Two mappings are the same when they map to the same ids (the descriptor is a handle).
impl PartialEq for Idmap {
    fn eq(&self, other: &Self) -> bool {
        (self.uid, self.gid) == (other.uid, other.gid)
    }
}

impl Eq for Idmap {}

/// A loop device bound to an image. With the real implementation the device
/// is configured with autoclear: it stays bound while `guard` is open or a
/// mount uses it, and frees itself after the last of them goes (so a crash
/// between attach and mount leaks nothing).
#[derive(Debug)]
pub struct LoopAttachment {
    pub device: PathBuf,
    pub guard: Option<OwnedFd>,
}

/// Privileged calls of this crate. Every method is blocking.
pub trait HostOps: Send + Sync {
    /// mkfs.ext4 on an image file (not yet attached).
    fn mkfs_ext4(&self, image: &Path) -> Result<(), OpError>;
    /// Binds a free loop device to `image` (read-write, autoclear).
    fn loop_attach(&self, image: &Path) -> Result<LoopAttachment, OpError>;
    /// Unbinds `device`; already free is success.
    fn loop_detach(&self, device: &Path) -> Result<(), OpError>;
    /// Mounts the ext4 filesystem on `device` at `target` (nosuid, nodev, noatime).
    fn mount_ext4(&self, device: &Path, target: &Path) -> Result<(), OpError>;
    /// Mounts an overlay (nosuid, nodev, volatile; index, xino, redirect_dir,
    /// metacopy off) whose options, which the sandbox can read, name no host
    /// path where the kernel allows it (6.8 and later).
    fn mount_overlay(&self, spec: &OverlaySpec) -> Result<(), OpError>;
    /// Bind-mounts `source` read-only at `target`.
    fn bind_mount_ro(&self, source: &Path, target: &Path) -> Result<(), OpError>;
    /// Unmounts `target`; `detach` makes it lazy (MNT_DETACH). Not mounted is
    /// success.
    fn unmount(&self, target: &Path, detach: bool) -> Result<(), OpError>;
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), OpError>;
    fn set_owner(&self, path: &Path, uid: u32, gid: u32) -> Result<(), OpError>;
    /// Mount points at or under `dir`, in the order to unmount them (last
    /// mounted first).
    fn mounts_under(&self, dir: &Path) -> Result<Vec<PathBuf>, OpError>;
    /// Loop devices whose backing file is (or was, if deleted) under `dir`.
    fn loops_backed_under(&self, dir: &Path) -> Result<Vec<PathBuf>, OpError>;
}

/// Shared host operations (e.g. `Arc<dyn HostOps>` chosen at start, or a recording fake a
/// test keeps a handle to) are host operations too.
impl<T: HostOps + ?Sized> HostOps for std::sync::Arc<T> {
    fn mkfs_ext4(&self, image: &Path) -> Result<(), OpError> {
        (**self).mkfs_ext4(image)
    }
    fn loop_attach(&self, image: &Path) -> Result<LoopAttachment, OpError> {
        (**self).loop_attach(image)
    }
    fn loop_detach(&self, device: &Path) -> Result<(), OpError> {
        (**self).loop_detach(device)
    }
    fn mount_ext4(&self, device: &Path, target: &Path) -> Result<(), OpError> {
        (**self).mount_ext4(device, target)
    }
    fn mount_overlay(&self, spec: &OverlaySpec) -> Result<(), OpError> {
        (**self).mount_overlay(spec)
    }
    fn bind_mount_ro(&self, source: &Path, target: &Path) -> Result<(), OpError> {
        (**self).bind_mount_ro(source, target)
    }
    fn unmount(&self, target: &Path, detach: bool) -> Result<(), OpError> {
        (**self).unmount(target, detach)
    }
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), OpError> {
        (**self).set_mode(path, mode)
    }
    fn set_owner(&self, path: &Path, uid: u32, gid: u32) -> Result<(), OpError> {
        (**self).set_owner(path, uid, gid)
    }
    fn mounts_under(&self, dir: &Path) -> Result<Vec<PathBuf>, OpError> {
        (**self).mounts_under(dir)
    }
    fn loops_backed_under(&self, dir: &Path) -> Result<Vec<PathBuf>, OpError> {
        (**self).loops_backed_under(dir)
    }
}

/// One recorded call of [`RecordingHostOps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    MkfsExt4(PathBuf),
    LoopAttach(PathBuf),
    LoopDetach(PathBuf),
    MountExt4 { device: PathBuf, target: PathBuf },
    MountOverlay(OverlaySpec),
    BindMountRo { source: PathBuf, target: PathBuf },
    Unmount { target: PathBuf, detach: bool },
    SetMode(PathBuf, u32),
    SetOwner(PathBuf, u32, u32),
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<Call>,
    mounts: Vec<PathBuf>,
    /// (device, backing file)
    loops: Vec<(PathBuf, PathBuf)>,
    next_loop: u32,
    fail_on: Option<&'static str>,
}

/// A fake of [`HostOps`] that records every call and simulates the state
/// (mount table, bound loop devices) so teardown logic can be tested without
/// root. `fail_on(op)` makes the named operation fail once.
#[derive(Debug, Default)]
pub struct RecordingHostOps {
    state: Mutex<FakeState>,
}

impl RecordingHostOps {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// Forgets the recorded calls (state stays).
    pub fn clear_calls(&self) {
        self.with(|s| s.calls.clear());
    }

    /// Currently "mounted" targets.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.with(|s| s.mounts.clone())
    }

    /// Currently "bound" loop devices.
    pub fn bound_loops(&self) -> Vec<PathBuf> {
        self.with(|s| s.loops.iter().map(|(d, _)| d.clone()).collect())
    }

    /// Makes the next call of `op` (a [`Call`] variant name such as
    /// `"MountOverlay"`) fail with EIO.
    pub fn fail_on(&self, op: &'static str) {
        self.with(|s| s.fail_on = Some(op));
    }

    fn record(&self, call: Call, op: &'static str, path: &Path) -> Result<(), OpError> {
        self.with(|s| {
            s.calls.push(call);
            if s.fail_on == Some(op) {
                s.fail_on = None;
                return Err(OpError::new(
                    op,
                    path,
                    io::Error::from_raw_os_error(libc::EIO),
                ));
            }
            Ok(())
        })
    }
}

impl HostOps for RecordingHostOps {
    fn mkfs_ext4(&self, image: &Path) -> Result<(), OpError> {
        self.record(Call::MkfsExt4(image.into()), "MkfsExt4", image)
    }

    fn loop_attach(&self, image: &Path) -> Result<LoopAttachment, OpError> {
        self.record(Call::LoopAttach(image.into()), "LoopAttach", image)?;
        let device = self.with(|s| {
            let d = PathBuf::from(format!("/dev/loop{}", s.next_loop));
            s.next_loop += 1;
            s.loops.push((d.clone(), image.to_path_buf()));
            d
        });
        Ok(LoopAttachment {
            device,
            guard: None,
        })
    }

    fn loop_detach(&self, device: &Path) -> Result<(), OpError> {
        self.record(Call::LoopDetach(device.into()), "LoopDetach", device)?;
        self.with(|s| s.loops.retain(|(d, _)| d != device));
        Ok(())
    }

    fn mount_ext4(&self, device: &Path, target: &Path) -> Result<(), OpError> {
        let call = Call::MountExt4 {
            device: device.into(),
            target: target.into(),
        };
        self.record(call, "MountExt4", target)?;
        self.with(|s| s.mounts.push(target.into()));
        Ok(())
    }

    fn mount_overlay(&self, spec: &OverlaySpec) -> Result<(), OpError> {
        self.record(
            Call::MountOverlay(spec.clone()),
            "MountOverlay",
            &spec.target,
        )?;
        self.with(|s| s.mounts.push(spec.target.clone()));
        Ok(())
    }

    fn bind_mount_ro(&self, source: &Path, target: &Path) -> Result<(), OpError> {
        let call = Call::BindMountRo {
            source: source.into(),
            target: target.into(),
        };
        self.record(call, "BindMountRo", target)?;
        self.with(|s| s.mounts.push(target.into()));
        Ok(())
    }

    fn unmount(&self, target: &Path, detach: bool) -> Result<(), OpError> {
        let call = Call::Unmount {
            target: target.into(),
            detach,
        };
        self.record(call, "Unmount", target)?;
        self.with(|s| {
            if let Some(i) = s.mounts.iter().rposition(|m| m == target) {
                s.mounts.remove(i);
            }
            // Autoclear: a loop device whose filesystem was unmounted frees itself.
        });
        Ok(())
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), OpError> {
        self.record(Call::SetMode(path.into(), mode), "SetMode", path)
    }

    fn set_owner(&self, path: &Path, uid: u32, gid: u32) -> Result<(), OpError> {
        self.record(Call::SetOwner(path.into(), uid, gid), "SetOwner", path)
    }

    fn mounts_under(&self, dir: &Path) -> Result<Vec<PathBuf>, OpError> {
        Ok(self.with(|s| {
            s.mounts
                .iter()
                .rev()
                .filter(|m| m.starts_with(dir))
                .cloned()
                .collect()
        }))
    }

    fn loops_backed_under(&self, dir: &Path) -> Result<Vec<PathBuf>, OpError> {
        Ok(self.with(|s| {
            s.loops
                .iter()
                .filter(|(_, f)| f.starts_with(dir))
                .map(|(d, _)| d.clone())
                .collect()
        }))
    }
}
