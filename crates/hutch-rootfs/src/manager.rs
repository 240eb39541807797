//! Prepare, tear down and clean up per-sandbox root filesystems (see the
//! crate docs for the layout and the steps).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ops::{HostOps, OpError, OverlaySpec};

/// Smallest and largest accepted `disk_mb`.
const MIN_DISK_MB: u64 = 8;
const MAX_DISK_MB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("invalid sandbox id {0:?} (lowercase letters and digits only)")]
    InvalidId(String),
    #[error("disk_mb {0} outside {MIN_DISK_MB}..={MAX_DISK_MB}")]
    InvalidDiskSize(u64),
    #[error("lower layer {0} is not an absolute directory")]
    InvalidLower(PathBuf),
    #[error("rootfs state {0} already exists")]
    Exists(PathBuf),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Host(#[from] OpError),
    #[error("{path} still has mounts after unmounting ({left:?}); not removing it")]
    StillMounted { path: PathBuf, left: Vec<PathBuf> },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { op, path, source }
}

/// What a sandbox's root filesystem is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareSpec {
    /// Read-only template layer directories, top-most first.
    pub lower: Vec<PathBuf>,
    /// Size bound of everything the sandbox writes; `None` puts the upper dir
    /// on the host filesystem, unbounded (tests, trusted builds).
    pub disk_mb: Option<u64>,
    /// The sandbox's user namespace: the layers are mounted seen through it, and the upper
    /// and work dirs (and with them the root directory) belong to its root.
    pub idmap: Option<crate::ops::Idmap>,
}

/// The mode of the manager's root (R8): owned by root, which alone lists and writes it; others
/// may pass through to a sandbox's state dir, which lets only its own sandbox further (see
/// [`SANDBOX_DIR_MODE`]).
pub const STATE_DIR_MODE: u32 = 0o711;

/// The mode of a sandbox's state dir (R8): root's alone (0700), or, with a user namespace,
/// also passable by the group of the sandbox's root (0710, group = its host gid), so the
/// sandbox's runtime, which is that gid once it has joined the namespace, reaches the root
/// filesystem; other host users cannot.
pub const SANDBOX_DIR_MODE: u32 = 0o700;
/// [`SANDBOX_DIR_MODE`] with a user namespace.
pub const SANDBOX_DIR_MODE_MAPPED: u32 = 0o710;

/// A prepared root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The overlay mount point: the OCI bundle's `root.path`.
    pub rootfs: PathBuf,
    pub state_dir: PathBuf,
    /// The loop device holding the upper dir, if `disk_mb` was given.
    pub loop_device: Option<PathBuf>,
}

/// Sandbox ids as DESIGN.md §1 defines them: lowercase letters and digits.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Owns `<root>/<id>` for every sandbox on this host.
pub struct RootfsManager<O: HostOps> {
    root: PathBuf,
    ops: O,
}

impl<O: HostOps> RootfsManager<O> {
    /// Creates `root` (0700) if needed. Blocking.
    pub fn new(root: impl Into<PathBuf>, ops: O) -> Result<Self, RootfsError> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(STATE_DIR_MODE)
            .create(&root)
            .map_err(io_err("create rootfs root", &root))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(STATE_DIR_MODE))
            .map_err(io_err("chmod rootfs root", &root))?;
        let manager = RootfsManager { root, ops };
        manager.remove_stale_pool_files();
        Ok(manager)
    }

    /// Removes the half-formatted images (`.pool/<mb>/<pid>-<n>.tmp`) that a filler killed
    /// mid-format left behind: those of any process but this one, whose fillers may be at work.
    fn remove_stale_pool_files(&self) {
        let own = format!("{}-", std::process::id());
        let Ok(sizes) = fs::read_dir(self.root.join(".pool")) else {
            return;
        };
        for size in sizes.flatten() {
            let Ok(files) = fs::read_dir(size.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let stale = path.extension().is_some_and(|x| x == "tmp")
                    && !f.file_name().to_string_lossy().starts_with(&own);
                if stale {
                    match fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::info!(image = %path.display(), "removed a half-formatted pool image")
                        }
                        Err(e) => {
                            tracing::warn!(image = %path.display(), error = %e, "cannot remove a half-formatted pool image")
                        }
                    }
                }
            }
        }
    }

    pub fn ops(&self) -> &O {
        &self.ops
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<id>`, after validating the id.
    pub fn state_dir(&self, id: &str) -> Result<PathBuf, RootfsError> {
        if !valid_id(id) {
            return Err(RootfsError::InvalidId(id.to_string()));
        }
        Ok(self.root.join(id))
    }

    /// Prepares the root filesystem of sandbox `id`; on failure nothing is
    /// left behind. Blocking.
    pub fn prepare(&self, id: &str, spec: &PrepareSpec) -> Result<Prepared, RootfsError> {
        let state = self.state_dir(id)?;
        if let Some(mb) = spec.disk_mb
            && !(MIN_DISK_MB..=MAX_DISK_MB).contains(&mb)
        {
            return Err(RootfsError::InvalidDiskSize(mb));
        }
        for l in &spec.lower {
            if !l.is_absolute() || !l.is_dir() {
                return Err(RootfsError::InvalidLower(l.clone()));
            }
        }
        match fs::DirBuilder::new().mode(SANDBOX_DIR_MODE).create(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RootfsError::Exists(state));
            }
            Err(e) => return Err(io_err("create state dir", &state)(e)),
        }
        match self.prepare_in(&state, spec) {
            Ok(p) => Ok(p),
            Err(e) => {
                if let Err(undo) = self.teardown(id) {
                    tracing::error!(sandbox = id, error = %undo, "undoing a failed rootfs prepare");
                }
                Err(e)
            }
        }
    }

    fn prepare_in(&self, state: &Path, spec: &PrepareSpec) -> Result<Prepared, RootfsError> {
        // R8: the state dir's mode whatever the umask did.
        if let Some(map) = &spec.idmap {
            self.ops.set_owner(state, 0, map.gid)?;
            self.ops.set_mode(state, SANDBOX_DIR_MODE_MAPPED)?;
        } else {
            self.ops.set_mode(state, SANDBOX_DIR_MODE)?;
        }
        let mut loop_device = None;
        let scratch = if let Some(mb) = spec.disk_mb {
            let image = state.join("disk.img");
            if !self.take_pooled(mb, &image) {
                self.format_image(&image, mb)?;
            }
            // The sandbox's disk is its own: images pooled by older versions were 0644.
            fs::set_permissions(&image, fs::Permissions::from_mode(0o600))
                .map_err(io_err("chmod 0600", &image))?;
            let mnt = state.join("disk");
            mkdir(&mnt, 0o700)?;
            // The guard keeps the (autoclear) device bound until the mount
            // holds it; dropping it afterwards leaves the mount as the owner.
            let attached = self.ops.loop_attach(&image)?;
            self.ops.mount_ext4(&attached.device, &mnt)?;
            drop(attached.guard);
            loop_device = Some(attached.device);
            mnt
        } else {
            state.to_path_buf()
        };
        let upper = scratch.join("upper");
        let work = scratch.join("work");
        mkdir(&upper, 0o755)?;
        mkdir(&work, 0o700)?;
        if let Some(map) = &spec.idmap {
            self.ops.set_owner(&upper, map.uid, map.gid)?;
            self.ops.set_owner(&work, map.uid, map.gid)?;
        }
        let rootfs = state.join("rootfs");
        mkdir(&rootfs, 0o755)?;
        self.ops.mount_overlay(&OverlaySpec {
            lower: spec.lower.clone(),
            upper,
            work,
            target: rootfs.clone(),
            idmap: spec.idmap.clone(),
        })?;
        Ok(Prepared {
            rootfs,
            state_dir: state.to_path_buf(),
            loop_device,
        })
    }

    /// Creates a sparse image of `mb` MiB at `image` and formats it. Blocking.
    fn format_image(&self, image: &Path, mb: u64) -> Result<(), RootfsError> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(image)
            .map_err(io_err("create disk image", image))?;
        file.set_len(mb << 20)
            .map_err(io_err("size disk image", image))?;
        drop(file);
        self.ops.mkfs_ext4(image)?;
        Ok(())
    }

    /// `<root>/.pool/<mb>`: freshly formatted images of one size wait here
    /// (the name is no valid id, so `list` never takes it for a sandbox).
    fn pool_dir(&self, mb: u64) -> PathBuf {
        self.root.join(".pool").join(mb.to_string())
    }

    /// Moves a pooled image of `mb` MiB to `dest`, if the pool has one. A
    /// rename is atomic, so two prepares never get the same image; every
    /// image is used once, so no sandbox sees another's data.
    fn take_pooled(&self, mb: u64, dest: &Path) -> bool {
        let Ok(entries) = fs::read_dir(self.pool_dir(mb)) else {
            return false;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "img")
                && fs::rename(e.path(), dest).is_ok()
            {
                return true;
            }
        }
        false
    }

    /// Formats images of `mb` MiB into the pool until it holds `depth`, so
    /// that `prepare` need not run `mkfs` (the largest part of its cost).
    /// Returns how many were added. Blocking; one filler at a time per
    /// manager is the caller's business (names would not clash, counts would).
    pub fn fill_pool(&self, mb: u64, depth: usize) -> Result<usize, RootfsError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        if !(MIN_DISK_MB..=MAX_DISK_MB).contains(&mb) {
            return Err(RootfsError::InvalidDiskSize(mb));
        }
        let dir = self.pool_dir(mb);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create pool dir", &dir))?;
        let have = fs::read_dir(&dir)
            .map_err(io_err("read", &dir))?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
            .count();
        let mut added = 0;
        for _ in have..depth {
            let name = format!(
                "{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let tmp = dir.join(format!("{name}.tmp"));
            if let Err(e) = self.format_image(&tmp, mb) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            let done = dir.join(format!("{name}.img"));
            fs::rename(&tmp, &done).map_err(io_err("add to pool", &done))?;
            added += 1;
        }
        Ok(added)
    }

    /// Undoes whatever exists of sandbox `id`'s root filesystem: mounts, loop
    /// devices, files. Idempotent; works from any partial state. Blocking.
    pub fn teardown(&self, id: &str) -> Result<(), RootfsError> {
        let state = self.state_dir(id)?;
        for m in self.ops.mounts_under(&state)? {
            if let Err(e) = self.ops.unmount(&m, false) {
                tracing::warn!(mount = %m.display(), error = %e, "busy; detaching lazily");
                self.ops.unmount(&m, true)?;
            }
        }
        for dev in self.ops.loops_backed_under(&state)? {
            self.ops.loop_detach(&dev)?;
        }
        let left = self.ops.mounts_under(&state)?;
        if !left.is_empty() {
            return Err(RootfsError::StillMounted { path: state, left });
        }
        match fs::remove_dir_all(&state) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove state dir", &state)(e)),
        }
    }

    /// Ids that have a state dir.
    pub fn list(&self) -> Result<Vec<String>, RootfsError> {
        let mut ids = Vec::new();
        for e in fs::read_dir(&self.root).map_err(io_err("read", &self.root))? {
            let e = e.map_err(io_err("read", &self.root))?;
            if let Some(name) = e.file_name().to_str()
                && valid_id(name)
            {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Tears down every sandbox state under the root whose id is not in
    /// `keep`, plus loop devices backed by images whose state dir is gone.
    /// Returns the ids removed. Blocking.
    pub fn cleanup_leftovers(&self, keep: &[&str]) -> Result<Vec<String>, RootfsError> {
        let mut removed = Vec::new();
        for id in self.list()? {
            if keep.contains(&id.as_str()) {
                continue;
            }
            tracing::info!(sandbox = %id, "removing leftover rootfs");
            self.teardown(&id)?;
            removed.push(id);
        }
        for dev in self.ops.loops_backed_under(&self.root)? {
            let keep_dev = keep.iter().any(|k| {
                self.ops
                    .loops_backed_under(&self.root.join(k))
                    .is_ok_and(|v| v.contains(&dev))
            });
            if !keep_dev {
                self.ops.loop_detach(&dev)?;
            }
        }
        Ok(removed)
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_err("create", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ops::{Call, RecordingHostOps};

    fn manager() -> (tempfile::TempDir, RootfsManager<RecordingHostOps>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("layer");
        fs::create_dir(&lower).unwrap();
        let m = RootfsManager::new(dir.path().join("rootfs"), RecordingHostOps::new()).unwrap();
        (dir, m, lower)
    }

    #[test]
    fn pooled_images_spare_mkfs_and_are_used_once() {
        let (_d, m, lower) = manager();
        assert_eq!(m.fill_pool(32, 2).unwrap(), 2);
        assert_eq!(m.fill_pool(32, 2).unwrap(), 0, "a full pool is left alone");
        let mkfs = |m: &RootfsManager<RecordingHostOps>| {
            m.ops()
                .calls()
                .iter()
                .filter(|c| matches!(c, Call::MkfsExt4(_)))
                .count()
        };
        assert_eq!(mkfs(&m), 2);
        let spec = PrepareSpec {
            idmap: None,
            lower: vec![lower.clone()],
            disk_mb: Some(32),
        };
        for id in ["sb1", "sb2"] {
            m.prepare(id, &spec).unwrap();
            assert!(m.root().join(id).join("disk.img").exists());
        }
        assert_eq!(mkfs(&m), 2, "both prepares took a pooled image");
        assert!(m.list().unwrap() == vec!["sb1".to_string(), "sb2".to_string()]);
        // The pool is empty now: the next prepare formats its own (the twin).
        m.prepare("sb3", &spec).unwrap();
        assert_eq!(mkfs(&m), 3);
        // Another size is a pool of its own.
        assert!(!m.take_pooled(64, &m.root().join("x.img")));
        assert!(matches!(
            m.fill_pool(1, 1),
            Err(RootfsError::InvalidDiskSize(1))
        ));
    }

    #[test]
    fn start_removes_half_formatted_pool_images_of_other_processes() {
        let (_tmp, m, _) = manager();
        m.fill_pool(64, 1).unwrap();
        let dir = m.root().join(".pool/64");
        let dead = dir.join("4194305-0.tmp");
        let ours = dir.join(format!("{}-99.tmp", std::process::id()));
        std::fs::write(&dead, b"half").unwrap();
        std::fs::write(&ours, b"in progress").unwrap();
        let again = RootfsManager::new(m.root(), RecordingHostOps::new()).unwrap();
        assert!(!dead.exists(), "a dead filler's image survived the start");
        assert!(ours.exists(), "a live filler's image was removed");
        assert_eq!(
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
                .count(),
            1,
            "finished images are kept"
        );
        drop(again);
    }

    #[test]
    fn prepare_with_disk_calls_in_order() {
        let (_d, m, lower) = manager();
        let p = m
            .prepare(
                "sb1",
                &PrepareSpec {
                    idmap: None,
                    lower: vec![lower.clone()],
                    disk_mb: Some(32),
                },
            )
            .unwrap();
        let s = m.root().join("sb1");
        assert_eq!(p.rootfs, s.join("rootfs"));
        assert_eq!(
            m.ops().calls(),
            vec![
                Call::SetMode(s.clone(), SANDBOX_DIR_MODE),
                Call::MkfsExt4(s.join("disk.img")),
                Call::LoopAttach(s.join("disk.img")),
                Call::MountExt4 {
                    device: "/dev/loop0".into(),
                    target: s.join("disk")
                },
                Call::MountOverlay(OverlaySpec {
                    idmap: None,
                    lower: vec![lower],
                    upper: s.join("disk/upper"),
                    work: s.join("disk/work"),
                    target: s.join("rootfs"),
                }),
            ]
        );
        assert_eq!(fs::metadata(s.join("disk.img")).unwrap().len(), 32 << 20);
        let mode = fs::metadata(&s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SANDBOX_DIR_MODE);
    }

    #[test]
    fn teardown_reverses_and_is_idempotent() {
        let (_d, m, lower) = manager();
        m.prepare(
            "sb1",
            &PrepareSpec {
                idmap: None,
                lower: vec![lower],
                disk_mb: Some(32),
            },
        )
        .unwrap();
        m.ops().clear_calls();
        m.teardown("sb1").unwrap();
        let s = m.root().join("sb1");
        assert_eq!(
            m.ops().calls(),
            vec![
                Call::Unmount {
                    target: s.join("rootfs"),
                    detach: false
                },
                Call::Unmount {
                    target: s.join("disk"),
                    detach: false
                },
                Call::LoopDetach("/dev/loop0".into()),
            ]
        );
        assert!(!s.exists());
        assert!(m.ops().mounted().is_empty() && m.ops().bound_loops().is_empty());
        m.ops().clear_calls();
        m.teardown("sb1").unwrap();
        assert!(m.ops().calls().is_empty());
    }

    #[test]
    fn failed_prepare_leaves_nothing() {
        let (_d, m, lower) = manager();
        m.ops().fail_on("MountOverlay");
        let err = m.prepare(
            "sb1",
            &PrepareSpec {
                idmap: None,
                lower: vec![lower],
                disk_mb: Some(32),
            },
        );
        assert!(err.is_err());
        assert!(!m.root().join("sb1").exists());
        assert!(m.ops().mounted().is_empty());
        assert!(m.ops().bound_loops().is_empty());
    }

    #[test]
    fn busy_mount_is_detached_lazily() {
        let (_d, m, lower) = manager();
        m.prepare(
            "sb1",
            &PrepareSpec {
                idmap: None,
                lower: vec![lower],
                disk_mb: None,
            },
        )
        .unwrap();
        m.ops().clear_calls();
        m.ops().fail_on("Unmount");
        m.teardown("sb1").unwrap();
        let t = m.root().join("sb1/rootfs");
        assert_eq!(
            m.ops().calls(),
            vec![
                Call::Unmount {
                    target: t.clone(),
                    detach: false
                },
                Call::Unmount {
                    target: t,
                    detach: true
                },
            ]
        );
    }

    #[test]
    fn ids_are_validated_and_existing_state_refused() {
        let (_d, m, lower) = manager();
        let spec = PrepareSpec {
            idmap: None,
            lower: vec![lower],
            disk_mb: None,
        };
        for bad in ["", "../x", "SB1", "sb-1", "a/b"] {
            assert!(
                matches!(m.prepare(bad, &spec), Err(RootfsError::InvalidId(_))),
                "{bad}"
            );
        }
        m.prepare("sb1", &spec).unwrap();
        assert!(matches!(
            m.prepare("sb1", &spec),
            Err(RootfsError::Exists(_))
        ));
        let tiny = PrepareSpec {
            idmap: None,
            disk_mb: Some(1),
            ..spec.clone()
        };
        assert!(matches!(
            m.prepare("sb2", &tiny),
            Err(RootfsError::InvalidDiskSize(1))
        ));
        let rel = PrepareSpec {
            idmap: None,
            lower: vec!["rel".into()],
            disk_mb: None,
        };
        assert!(matches!(
            m.prepare("sb3", &rel),
            Err(RootfsError::InvalidLower(_))
        ));
    }

    #[test]
    fn cleanup_removes_all_but_kept() {
        let (_d, m, lower) = manager();
        for id in ["sb1", "sb2", "sb3"] {
            m.prepare(
                id,
                &PrepareSpec {
                    idmap: None,
                    lower: vec![lower.clone()],
                    disk_mb: Some(16),
                },
            )
            .unwrap();
        }
        let removed = m.cleanup_leftovers(&["sb2"]).unwrap();
        assert_eq!(removed, vec!["sb1".to_string(), "sb3".to_string()]);
        assert_eq!(m.list().unwrap(), vec!["sb2".to_string()]);
        assert_eq!(m.ops().mounted().len(), 2);
        assert_eq!(m.ops().bound_loops().len(), 1);
    }
}
