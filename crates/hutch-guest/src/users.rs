//! Users and groups as the sandbox knows them: read from its own
//! `/etc/passwd` and `/etc/group` (under a root given by the configuration),
//! never from the host's name service. Users added inside the sandbox after
//! start are found: [`UserCache`] keeps answers only while both files are
//! unchanged (same inode, size and modification time).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A resolved user: what a process needs to run as it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership), primary not repeated.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {0:?} not found in the sandbox's /etc/passwd")]
    NotFound(String),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Largest passwd/group file read; a hostile sandbox cannot make us read more.
const MAX_DB_BYTES: u64 = 4 << 20;

fn read_db(path: &Path) -> Result<String, UserError> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(source) => {
            return Err(UserError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut s = String::new();
    let mut bytes = Vec::new();
    f.take(MAX_DB_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|source| UserError::Read {
            path: path.to_owned(),
            source,
        })?;
    s.push_str(&String::from_utf8_lossy(&bytes));
    Ok(s)
}

/// Looks a user up by name, or by numeric uid given as a name.
pub fn lookup(etc_root: &Path, name: &str) -> Result<User, UserError> {
    let passwd = read_db(&etc_root.join("etc/passwd"))?;
    let found = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || (f[0] != name && f[2] != name) {
            return None;
        }
        Some(User {
            name: f[0].to_owned(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            groups: Vec::new(),
            home: PathBuf::from(if f[5].is_empty() { "/" } else { f[5] }),
            shell: if f[6].is_empty() {
                "/bin/sh".to_owned()
            } else {
                f[6].to_owned()
            },
        })
    });
    // A bare root filesystem (busybox) may have no passwd at all: root is
    // still root.
    let mut user = match found {
        Some(u) => u,
        None if name == "root" || name == "0" => User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: PathBuf::from("/root"),
            shell: "/bin/sh".into(),
        },
        None => return Err(UserError::NotFound(name.to_owned())),
    };
    let group = read_db(&etc_root.join("etc/group"))?;
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if gid != user.gid && f[3].split(',').any(|m| m == user.name) && !user.groups.contains(&gid)
        {
            user.groups.push(gid);
        }
    }
    Ok(user)
}

/// Identifies one version of a file: a rewrite changes the size or mtime, a
/// replacement the inode. `None`: the file is absent.
type Version = Option<(u64, u64, u64, i64, i64)>;

fn version(path: &Path) -> Version {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The versions of the sandbox's passwd and group files.
fn versions(etc_root: &Path) -> (Version, Version) {
    (
        version(&etc_root.join("etc/passwd")),
        version(&etc_root.join("etc/group")),
    )
}

/// Answers of [`lookup`] while `/etc/passwd` and `/etc/group` stay as they
/// were: every command and file call names a user, and a hit costs two
/// `stat`s instead of reading and parsing both files on a blocking thread.
#[derive(Debug, Default)]
pub struct UserCache {
    inner: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    versions: (Version, Version),
    users: HashMap<String, User>,
}

/// Most names kept; a flood of distinct names cannot grow memory.
const MAX_CACHED: usize = 64;

impl UserCache {
    /// The cached answer for `name` if the files have not changed. Two `stat`s:
    /// cheap enough to make on an async worker.
    pub fn get(&self, etc_root: &Path, name: &str) -> Option<User> {
        let now = versions(etc_root);
        let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (state.versions == now)
            .then(|| state.users.get(name).cloned())
            .flatten()
    }

    /// Looks `name` up and remembers the answer with the files' versions as
    /// they were before reading them (a change during the read is seen next
    /// time). Blocking.
    pub fn lookup(&self, etc_root: &Path, name: &str) -> Result<User, UserError> {
        let before = versions(etc_root);
        let user = lookup(etc_root, name)?;
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if state.versions != before || state.users.len() >= MAX_CACHED {
            state.versions = before;
            state.users.clear();
        }
        state.users.insert(name.to_owned(), user.clone());
        Ok(user)
    }
}

/// Name of a uid or gid for display (`EntryInfo.owner/group`), or the number.
pub fn name_of(etc_root: &Path, file: &str, id: u32) -> String {
    let db = read_db(&etc_root.join("etc").join(file)).unwrap_or_default();
    let ids = id.to_string();
    db.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _ = f.next();
            (f.next()? == ids).then(|| name.to_owned())
        })
        .unwrap_or(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\nbroken:x:zz:1::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nuser:x:1000:\nwheel:x:10:user,other\ndocker:x:999:user\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn lookups() {
        let d = fixture();
        let u = lookup(d.path(), "user").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone()),
            (1000, 1000, vec![10, 999])
        );
        assert_eq!(u.home, PathBuf::from("/home/user"));
        assert_eq!(lookup(d.path(), "1000").unwrap().name, "user");
        assert!(matches!(
            lookup(d.path(), "nobody"),
            Err(UserError::NotFound(_))
        ));
        assert!(matches!(
            lookup(d.path(), "broken"),
            Err(UserError::NotFound(_))
        ));
        assert_eq!(name_of(d.path(), "group", 10), "wheel");
        assert_eq!(name_of(d.path(), "passwd", 4242), "4242");
    }

    #[test]
    fn bare_rootfs_has_root() {
        let d = tempfile::tempdir().unwrap();
        let u = lookup(d.path(), "root").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert!(lookup(d.path(), "user").is_err());
    }

    #[test]
    fn the_cache_answers_only_while_the_files_are_unchanged() {
        let d = fixture();
        let cache = UserCache::default();
        assert_eq!(cache.get(d.path(), "user"), None, "nothing cached yet");
        let u = cache.lookup(d.path(), "user").unwrap();
        assert_eq!(cache.get(d.path(), "user"), Some(u));
        assert_eq!(cache.get(d.path(), "root"), None, "only what was looked up");
        // A new group membership (same size would still change the mtime).
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nuser:x:1000:\nwheel:x:10:user,other\ndocker:x:999:user\nnew:x:77:user\n",
        )
        .unwrap();
        assert_eq!(cache.get(d.path(), "user"), None, "a changed group file");
        assert_eq!(
            cache.lookup(d.path(), "user").unwrap().groups,
            vec![10, 999, 77]
        );
        // A replaced passwd (rename over it: a new inode).
        let tmp = d.path().join("etc/passwd.new");
        std::fs::write(&tmp, "user:x:2000:1000::/home/user:/bin/sh\n").unwrap();
        std::fs::rename(&tmp, d.path().join("etc/passwd")).unwrap();
        assert_eq!(cache.get(d.path(), "user"), None, "a replaced passwd");
        assert_eq!(cache.lookup(d.path(), "user").unwrap().uid, 2000);
    }
}
