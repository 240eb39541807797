//! Per-sandbox root filesystems on the host.
//!
//! What this crate owns: everything under its root directory (a constructor
//! parameter, e.g. `<data>/rootfs`, mode 0700), one state directory per
//! sandbox `<root>/<sandbox id>` (0700, R8):
//!
//! ```text
//! <root>/<id>/            0700
//!   disk.img              sparse image of disk_mb (absent without a disk limit)
//!   disk/                 its ext4, loop-mounted: upper/ (0755) and work/ (0700)
//!   upper/, work/         (without a disk limit: on the host filesystem)
//!   rootfs/               the overlay: lowerdir = template layers, upperdir, workdir
//! ```
//!
//! [`RootfsManager::prepare`]:
//! 1. Validate the id (lowercase letters and digits) and the lower layers.
//! 2. Create the state dir 0700.
//! 3. With `disk_mb`: create the sparse image, `mkfs.ext4` it (no journal, no
//!    reserved blocks, `nodiscard`), attach a loop device (autoclear), mount
//!    it at `disk/`, create `upper/` and `work/` in it. The overlay upper dir
//!    is then bounded by the image: writing past it gives ENOSPC inside the
//!    sandbox and nothing outside changes. (The kernel here has no
//!    CONFIG_QUOTA, so XFS/ext4 project quotas are not an option.)
//! 4. Mount the overlay at `rootfs/`, every layer named `.` in its options
//!    (the sandbox reads them in `/proc/self/mountinfo`; see
//!    [`RealHostOps`]'s `mount_overlay`).
//! 5. On any failure, undo whatever was done (teardown).
//!
//! [`RootfsManager::teardown`] finds what exists — mounts under the state dir
//! (from mountinfo), loop devices backed by a file under it (from sysfs) —
//! unmounts last-first (lazily if busy), detaches loops, checks that nothing
//! is mounted any more, and only then removes the directory. It needs no
//! memory of `prepare`, so it is also the crash-recovery path, and it is
//! idempotent. [`RootfsManager::cleanup_leftovers`] tears down every state dir
//! whose id is not in a keep-list.
//!
//! What this crate must not do: unpack archives (that is `hutch-image`),
//! resolve paths inside a sandbox's tree, or run on the async runtime. All
//! privileged calls go through [`HostOps`] ([`RealHostOps`] on a host,
//! [`RecordingHostOps`] in unit tests). Everything here is blocking: callers
//! use `spawn_blocking`; the disk-image pool is refilled by a thread of its own ([`pool`]).

mod manager;
pub mod ops;
pub mod pool;
pub mod real;

pub use manager::{
    PrepareSpec, Prepared, RootfsError, RootfsManager, SANDBOX_DIR_MODE, SANDBOX_DIR_MODE_MAPPED,
    STATE_DIR_MODE, valid_id,
};
pub use ops::{Call, HostOps, Idmap, LoopAttachment, OpError, OverlaySpec, RecordingHostOps};
pub use pool::{POOL_DEPTH, PoolFiller};
pub use real::RealHostOps;
