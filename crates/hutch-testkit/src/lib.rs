//! Prerequisites of the system test tier (root, programs, the static guest binary), checked
//! the same way in every crate's system tests: a missing one fails the test with a message
//! that names it and how to get it, never a silent skip (DESIGN.md §13).
//!
//! Owns nothing else; must not start anything or change the host. A dev-dependency only.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// Fails unless the test runs as root; `needs` says what for ("mounts and loop devices").
#[track_caller]
pub fn require_root(needs: &str) {
    assert!(
        rustix::process::geteuid().is_root(),
        "prerequisite missing: root, for {needs} (run as root; CI does)"
    );
}

/// Fails unless `path` exists; `install` says how to get it ("apt-get install crun; make
/// setup").
#[track_caller]
pub fn require_file(path: &str, install: &str) {
    assert!(
        Path::new(path).exists(),
        "prerequisite missing: {path} ({install})"
    );
}

/// The static guest binary the system tier puts into sandboxes: `HUTCH_GUEST_STATIC_BIN`
/// (set by `make test`), else where `make guest` writes it. Fails if it is not there.
#[track_caller]
pub fn static_guest_bin() -> PathBuf {
    let path = std::env::var_os("HUTCH_GUEST_STATIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/guest/hutch-guest")
        });
    assert!(
        path.is_file(),
        "prerequisite missing: the static guest binary {} (run `make guest`, or set \
         HUTCH_GUEST_STATIC_BIN)",
        path.display()
    );
    path
}

/// A temporary directory under `parent` that others may pass through (mode 0711), for an
/// agent's data dir: with user namespaces, a sandbox's runtime reaches the sandbox's root
/// filesystem as the sandbox's unprivileged host uid (a plain temporary directory is 0700).
pub fn passable_tempdir(parent: &str, prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("a temporary directory in {parent}: {e}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .unwrap_or_else(|e| panic!("chmod 0711 {}: {e}", dir.path().display()));
    dir
}
