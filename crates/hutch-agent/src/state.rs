//! One sandbox's host state directory, `<data>/sandboxes/<id>/` (0700, R8), which the sandbox
//! never sees as a whole:
//!
//! ```text
//! <data>/sandboxes/<id>/   0700
//!   meta.json              runtime and template (to re-attach after a restart)
//!   guest/                 0700; bound read-only at /.hutch/config inside
//!     token                0600, the guest's access token (also how a restarted agent
//!                          re-attaches)
//!     env                  0600, KEY=VALUE lines: the environment of every process
//!   guest.sock             the guest's listening socket, bound here by the agent
//!   guest.log              the guest's stdout and stderr, drained from a pipe by the agent
//!                          (rotated to guest.log.1 past 256 KiB; see guest_log)
//!   bundle/                config.json and the runtime's own log
//! ```
//!
//! Why the token and env files are where they are: the guest reads them once at start, through
//! a read-only bind of `guest/`. Nothing the sandbox can write is on that path (the bind
//! replaces whatever the template had at `/.hutch/config`, and the runtimes resolve mount
//! destinations inside the rootfs without following its symlinks out), so the sandbox cannot
//! swap them before the guest reads them. A process inside running as root can still *read*
//! the token (as it could read the guest's `/proc/1/environ`); the token keeps other network
//! clients off the guest's TCP port, not the sandbox's own processes, which can already run
//! anything the guest can.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hutch_core::Digest;
use hutch_core::request::Runtime;

/// The modes of host state dirs (R8), the same for the agent's dirs as for the root filesystem
/// manager's: dirs that hold per-sandbox dirs (the data dir, `sandboxes/`, `bin/`) are 0711, so
/// a sandbox's runtime, which is the sandbox's unprivileged host uid once it has joined the
/// sandbox's user namespace, passes through them; a sandbox's own dir is root's alone, or with
/// a user namespace also passable by that sandbox's group.
pub use hutch_rootfs::{SANDBOX_DIR_MODE, SANDBOX_DIR_MODE_MAPPED, STATE_DIR_MODE};

/// What the agent writes down about a sandbox to find it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub runtime: Runtime,
    pub template: String,
    /// The template's layers: in use while this directory exists (the layer cache does not
    /// evict them). Absent in state written before it was recorded.
    #[serde(default)]
    pub layers: Vec<Digest>,
}

/// Paths of one sandbox's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path, id: &str) -> Self {
        StateDir { dir: root.join(id) }
    }

    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    pub fn meta(&self) -> PathBuf {
        self.dir.join("meta.json")
    }
    pub fn guest_config(&self) -> PathBuf {
        self.dir.join("guest")
    }

    /// Gives the guest's config dir and its files to host uid/gid `host_id` (the sandbox's
    /// root, with a user namespace), keeping their modes, and lets that group through the
    /// state dir ([`SANDBOX_DIR_MODE_MAPPED`]).
    pub fn give_guest_config_to(&self, host_id: u32) -> io::Result<()> {
        // The state dir: the sandbox's group may pass through to `guest/`.
        std::os::unix::fs::chown(&self.dir, Some(0), Some(host_id))?;
        fs::set_permissions(
            &self.dir,
            fs::Permissions::from_mode(SANDBOX_DIR_MODE_MAPPED),
        )?;
        let dir = self.guest_config();
        std::os::unix::fs::chown(&dir, Some(host_id), Some(host_id))?;
        for e in fs::read_dir(&dir)? {
            std::os::unix::fs::chown(e?.path(), Some(host_id), Some(host_id))?;
        }
        Ok(())
    }
    pub fn token(&self) -> PathBuf {
        self.guest_config().join("token")
    }
    pub fn env(&self) -> PathBuf {
        self.guest_config().join("env")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("guest.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("guest.log")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// Creates the directory ([`SANDBOX_DIR_MODE`]) and its `guest/` subdirectory (0700); an
    /// existing directory is an error (`AlreadyExists`): two launches never share one.
    pub fn create(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .mode(SANDBOX_DIR_MODE)
            .create(&self.dir)?;
        // R8 whatever the umask did.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(SANDBOX_DIR_MODE))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(self.guest_config())?;
        fs::set_permissions(self.guest_config(), fs::Permissions::from_mode(0o700))
    }

    /// Writes meta, token and env files.
    pub fn write(
        &self,
        meta: &Meta,
        token: &str,
        env: &BTreeMap<String, String>,
    ) -> io::Result<()> {
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        write_private(&self.meta(), &json)?;
        write_private(&self.token(), token.as_bytes())?;
        write_private(&self.env(), env_file(env)?.as_bytes())
    }

    pub fn read_meta(&self) -> io::Result<Meta> {
        let raw = fs::read(self.meta())?;
        serde_json::from_slice(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn read_token(&self) -> io::Result<String> {
        Ok(fs::read_to_string(self.token())?.trim().to_owned())
    }

    /// The last `max` bytes of the guest's log, for error messages in the agent's log.
    pub fn log_tail(&self, max: usize) -> String {
        let Ok(raw) = fs::read(self.log()) else {
            return String::new();
        };
        let start = raw.len().saturating_sub(max);
        String::from_utf8_lossy(&raw[start..]).trim().to_owned()
    }

    /// Removes the directory; missing is fine.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

/// A new file, 0600, written in full.
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// `KEY=VALUE` lines as the guest's `--env-file` reads them. Names must be shell-like and
/// values single-line; anything else is refused rather than silently split.
pub fn env_file(env: &BTreeMap<String, String>) -> io::Result<String> {
    let mut out = String::new();
    for (k, v) in env {
        let name_ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok || v.contains(['\n', '\r', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("environment variable {k:?} cannot be passed to the guest"),
            ));
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_lines_and_refusals() {
        let mut env = BTreeMap::new();
        env.insert("A".to_owned(), "1 2=3".to_owned());
        env.insert("B_2".to_owned(), String::new());
        assert_eq!(env_file(&env).unwrap(), "A=1 2=3\nB_2=\n");
        for (k, v) in [("A-B", "x"), ("1A", "x"), ("", "x"), ("A", "x\ny")] {
            let mut bad = BTreeMap::new();
            bad.insert(k.to_owned(), v.to_owned());
            assert!(env_file(&bad).is_err(), "{k:?}={v:?}");
        }
    }

    #[test]
    fn state_dir_is_private_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path(), "sb1");
        s.create().unwrap();
        assert!(s.create().is_err(), "a second create must fail");
        let meta = Meta {
            runtime: Runtime::Runc,
            template: "busybox".into(),
            layers: vec![Digest::of(b"layer")],
        };
        s.write(&meta, "tok", &BTreeMap::new()).unwrap();
        assert_eq!(s.read_meta().unwrap(), meta);
        assert_eq!(s.read_token().unwrap(), "tok");
        for (p, mode) in [
            (s.dir.clone(), SANDBOX_DIR_MODE),
            (s.token(), 0o600),
            (s.env(), 0o600),
        ] {
            let m = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{}", p.display());
        }
        s.remove().unwrap();
        s.remove().unwrap();
        assert!(!s.exists());
    }
}
