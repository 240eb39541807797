//! Checking a started sandbox's posture from outside (R17).
//!
//! **Owns**: reading `/proc/<pid>/status`, `/proc/<pid>/ns/*` and `/proc/<pid>/fd` of a sandbox's
//! process and comparing them with what its bundle asked for: capability sets, `NoNewPrivs`,
//! seccomp mode, namespaces distinct from the host's, and open file descriptors of an allowed
//! shape. **Must not**: signal, enter or change the process; it only reads. The proc root is a
//! constructor parameter so tests use fixture trees (STYLE.md 4).
//!
//! Check a process after it has exec'd the sandbox's program (e.g. once the guest answers):
//! between the runtime's `start` and that exec, the runtime's init still holds its own fds and
//! has not installed the seccomp filter.
//!
//! Steps of [`Posture::check`]:
//! 1. parse `status` (`CapInh/CapPrm/CapEff/CapBnd/CapAmb`, `NoNewPrivs`, `Seccomp`);
//! 2. compare each capability mask with the expected one (inheritable and ambient must be 0);
//! 3. read the `ns/<kind>` link of the sandbox and of the reference (host) process and report
//!    each kind that is shared;
//! 4. list `fd/` and report any descriptor beyond the allowed count or whose target is not of
//!    an allowed shape ([`Posture::check_fds`], which also serves every other process of a
//!    sandbox): a pipe, socket or anonymous inode, or a file of the sandbox's own tree. A file
//!    counts as the sandbox's own when the mount it was opened through (`fdinfo/<fd>`'s
//!    `mnt_id`) is one of the process's own mounts (`mountinfo`); a descriptor of a host file
//!    handed in from outside names a mount of the host's mount namespace, which the sandbox's
//!    does not list, whatever its path reads;
//! 5. read `mountinfo` and report each path of the [`MountPolicy`] that is not masked (no
//!    mount of its own) or at or under which a mount in use is writable: the runtime did
//!    what the bundle's masked and read-only paths asked (the last mount at a path is the
//!    one in use).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Namespaces a sandbox must not share with the host.
pub const ISOLATED_NAMESPACES: &[&str] = &["mnt", "pid", "ipc", "uts", "cgroup", "net"];

/// Errors reading the proc tree.
#[derive(Debug, thiserror::Error)]
pub enum PostureError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// What a sandbox's open descriptors may look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdPolicy {
    /// Highest number of open descriptors.
    pub max_fds: usize,
    /// Allowed link targets: exact paths or prefixes ending in `:` (`pipe:`, `socket:`,
    /// `anon_inode:`, `/memfd:`).
    pub allowed_targets: Vec<String>,
    /// Whether files opened through the process's own mounts (its sandbox's tree) are
    /// allowed. Files of any other mount, the host's, never are.
    pub sandbox_files: bool,
}

impl FdPolicy {
    /// The policy for every process of a running sandbox: any number of descriptors to
    /// pipes, sockets, anonymous inodes, memfds and files of the sandbox's own tree; none to
    /// a host file.
    pub fn sandbox_process() -> Self {
        Self {
            max_fds: usize::MAX,
            allowed_targets: ["pipe:", "socket:", "anon_inode:", "/memfd:"]
                .map(String::from)
                .to_vec(),
            sandbox_files: true,
        }
    }

    fn allows(&self, target: &str) -> bool {
        self.allowed_targets.iter().any(|a| {
            if a.ends_with(':') {
                target.starts_with(a.as_str())
            } else {
                target == a
            }
        })
    }
}

/// What the process's mount table must show (step 5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountPolicy {
    /// Paths at and under which every mount in use is read-only.
    pub read_only: Vec<String>,
    /// Paths that must be covered by a mount of their own (masked).
    pub masked: Vec<String>,
}

/// What the sandbox's process is expected to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The capability mask for bounding, permitted and effective (see
    /// `bundle::capability_mask`).
    pub capabilities: u64,
    pub no_new_privs: bool,
    /// 2 = seccomp filter mode.
    pub seccomp_mode: u8,
    pub fds: FdPolicy,
    pub mounts: MountPolicy,
    /// The process's uid and gid maps: `(host id, size)` of the sandbox's range, or `None`
    /// for the host's own user namespace (then `ISOLATED_NAMESPACES` does not include it).
    pub user_namespace: Option<(u32, u32)>,
}

/// One way the process differs from what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Capabilities {
        set: &'static str,
        expected: u64,
        actual: u64,
    },
    NoNewPrivs {
        actual: bool,
    },
    SeccompMode {
        expected: u8,
        actual: u8,
    },
    SharedNamespace {
        kind: &'static str,
        inode: String,
    },
    TooManyFds {
        max: usize,
        actual: usize,
    },
    /// A descriptor of a kind the policy does not allow.
    Fd {
        fd: u32,
        target: String,
    },
    /// A descriptor of a file outside the sandbox's own mounts: a host file.
    HostFile {
        fd: u32,
        target: String,
        mnt_id: u64,
    },
    /// A mount that should be read-only is writable.
    WritableMount {
        path: String,
        options: String,
    },
    /// The process's uid or gid map is not the sandbox's range (`file` is `uid_map` or
    /// `gid_map`; `actual` its first line).
    IdMap {
        file: &'static str,
        expected: String,
        actual: String,
    },
    /// A path that should be masked has no mount of its own.
    NotMasked {
        path: String,
    },
}

/// The outcome of one check: empty `mismatches` means the posture is as expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub pid: i32,
    pub mismatches: Vec<Mismatch>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Reads process posture under a proc root (normally `/proc`).
#[derive(Debug, Clone)]
pub struct Posture {
    proc_root: PathBuf,
    /// The process whose namespaces count as "the host's" (normally `self`).
    reference: String,
}

#[derive(Debug, Default)]
struct Status {
    cap_inh: u64,
    cap_prm: u64,
    cap_eff: u64,
    cap_bnd: u64,
    cap_amb: u64,
    no_new_privs: bool,
    seccomp: u8,
}

impl Posture {
    /// Posture of processes under `/proc`, compared with this process's namespaces.
    pub fn system() -> Self {
        Self::new("/proc", "self")
    }

    /// `reference` is the `/proc` entry (a pid or `self`) whose namespaces are the host's.
    pub fn new(proc_root: impl Into<PathBuf>, reference: impl Into<String>) -> Self {
        Self {
            proc_root: proc_root.into(),
            reference: reference.into(),
        }
    }

    /// Checks process `pid` against `expected`.
    pub fn check(&self, pid: i32, expected: &Expected) -> Result<Report, PostureError> {
        let dir = self.proc_root.join(pid.to_string());
        let status = parse_status(&dir.join("status"))?;
        let mut mismatches = Vec::new();

        for (set, actual, want) in [
            ("bounding", status.cap_bnd, expected.capabilities),
            ("permitted", status.cap_prm, expected.capabilities),
            ("effective", status.cap_eff, expected.capabilities),
            ("inheritable", status.cap_inh, 0),
            ("ambient", status.cap_amb, 0),
        ] {
            if actual != want {
                mismatches.push(Mismatch::Capabilities {
                    set,
                    expected: want,
                    actual,
                });
            }
        }
        if status.no_new_privs != expected.no_new_privs {
            mismatches.push(Mismatch::NoNewPrivs {
                actual: status.no_new_privs,
            });
        }
        if status.seccomp != expected.seccomp_mode {
            mismatches.push(Mismatch::SeccompMode {
                expected: expected.seccomp_mode,
                actual: status.seccomp,
            });
        }

        if let Some((host_id, size)) = expected.user_namespace {
            let want = format!("0 {host_id} {size}");
            for file in ["uid_map", "gid_map"] {
                let path = dir.join(file);
                let text = fs::read_to_string(&path).map_err(|source| PostureError::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                })?;
                let actual = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if actual != want {
                    mismatches.push(Mismatch::IdMap {
                        file,
                        expected: want.clone(),
                        actual,
                    });
                }
            }
        }

        let host = self.proc_root.join(&self.reference);
        let user: &[&'static str] = if expected.user_namespace.is_some() {
            &["user"]
        } else {
            &[]
        };
        for &kind in ISOLATED_NAMESPACES.iter().chain(user) {
            let mine = read_link(&dir.join("ns").join(kind))?;
            let theirs = read_link(&host.join("ns").join(kind))?;
            if mine == theirs {
                mismatches.push(Mismatch::SharedNamespace { kind, inode: mine });
            }
        }

        mismatches.extend(self.check_fds(pid, &expected.fds)?);
        mismatches.extend(check_mounts(&dir.join("mountinfo"), &expected.mounts)?);
        Ok(Report { pid, mismatches })
    }

    /// Checks the open descriptors of process `pid` against `policy` (step 4). A process
    /// that exits meanwhile has no descriptors left: its check is empty, not an error.
    pub fn check_fds(&self, pid: i32, policy: &FdPolicy) -> Result<Vec<Mismatch>, PostureError> {
        let dir = self.proc_root.join(pid.to_string());
        let fd_dir = dir.join("fd");
        let mut fds = Vec::new();
        let entries = fs::read_dir(&fd_dir).map_err(io("list fds", &fd_dir))?;
        for entry in entries {
            let entry = entry.map_err(io("list fds", &fd_dir))?;
            let name = entry.file_name();
            let Some(fd) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                return Err(PostureError::Parse {
                    path: entry.path(),
                    reason: "fd entry is not a number".into(),
                });
            };
            match fs::read_link(entry.path()) {
                Ok(target) => fds.push((fd, target.to_string_lossy().into_owned())),
                // Closed between listing and reading: not open any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("read fd link", &entry.path())(e)),
            }
        }
        fds.sort();
        let mut mismatches = Vec::new();
        if fds.len() > policy.max_fds {
            mismatches.push(Mismatch::TooManyFds {
                max: policy.max_fds,
                actual: fds.len(),
            });
        }
        // The process's own mounts, read once and only if some descriptor is a file.
        let mut own_mounts: Option<HashSet<u64>> = None;
        for (fd, target) in fds {
            if policy.allows(&target) {
                continue;
            }
            if !(policy.sandbox_files && target.starts_with('/')) {
                mismatches.push(Mismatch::Fd { fd, target });
                continue;
            }
            let Some(mnt_id) = fd_mount(&dir, fd)? else {
                continue; // closed meanwhile
            };
            let own = match &mut own_mounts {
                Some(set) => set,
                none => none.insert(mount_ids(&dir.join("mountinfo"))?),
            };
            if !own.contains(&mnt_id) {
                mismatches.push(Mismatch::HostFile { fd, target, mnt_id });
            }
        }
        Ok(mismatches)
    }
}

/// The `mnt_id` of descriptor `fd` of the process at `dir`, from its `fdinfo`; `None` if it
/// was closed meanwhile.
fn fd_mount(dir: &Path, fd: u32) -> Result<Option<u64>, PostureError> {
    let path = dir.join("fdinfo").join(fd.to_string());
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read fdinfo", &path)(e)),
    };
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .map(str::trim)
        .ok_or_else(|| PostureError::Parse {
            path: path.clone(),
            reason: "no mnt_id line".into(),
        })?;
    value.parse().map(Some).map_err(|e| PostureError::Parse {
        path,
        reason: format!("mnt_id {value:?}: {e}"),
    })
}

/// Step 5: the mounts in use (the last at each mount point) of a `mountinfo` file against
/// `policy`.
fn check_mounts(path: &Path, policy: &MountPolicy) -> Result<Vec<Mismatch>, PostureError> {
    if policy.read_only.is_empty() && policy.masked.is_empty() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(path).map_err(io("read mountinfo", path))?;
    let mut in_use: Vec<(&str, &str)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split(' ').skip(4);
        let (Some(at), Some(options)) = (fields.next(), fields.next()) else {
            return Err(PostureError::Parse {
                path: path.to_path_buf(),
                reason: format!("short line {line:?}"),
            });
        };
        in_use.retain(|(a, _)| *a != at);
        in_use.push((at, options));
    }
    let under =
        |at: &str, p: &str| at == p || at.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
    let mut mismatches = Vec::new();
    for p in &policy.masked {
        if !in_use.iter().any(|(at, _)| at == p) {
            mismatches.push(Mismatch::NotMasked { path: p.clone() });
        }
    }
    for p in &policy.read_only {
        for (at, options) in in_use.iter().filter(|(at, _)| under(at, p)) {
            if !options.split(',').any(|o| o == "ro") {
                mismatches.push(Mismatch::WritableMount {
                    path: (*at).to_owned(),
                    options: (*options).to_owned(),
                });
            }
        }
    }
    Ok(mismatches)
}

/// The mount ids (first field of each line) of a `mountinfo` file.
fn mount_ids(path: &Path) -> Result<HashSet<u64>, PostureError> {
    let text = fs::read_to_string(path).map_err(io("read mountinfo", path))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let first = l.split_whitespace().next().unwrap_or_default();
            first.parse().map_err(|e| PostureError::Parse {
                path: path.to_path_buf(),
                reason: format!("mount id {first:?}: {e}"),
            })
        })
        .collect()
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PostureError + 'a {
    move |source| PostureError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn read_link(path: &Path) -> Result<String, PostureError> {
    fs::read_link(path)
        .map(|t| t.to_string_lossy().into_owned())
        .map_err(io("read namespace link", path))
}

fn parse_status(path: &Path) -> Result<Status, PostureError> {
    let text = fs::read_to_string(path).map_err(io("read status", path))?;
    let field = |key: &str| -> Result<&str, PostureError> {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
            .ok_or_else(|| PostureError::Parse {
                path: path.to_path_buf(),
                reason: format!("no {key} line"),
            })
    };
    let hex = |key: &str| -> Result<u64, PostureError> {
        let v = field(key)?;
        u64::from_str_radix(v, 16).map_err(|e| PostureError::Parse {
            path: path.to_path_buf(),
            reason: format!("{key} {v:?}: {e}"),
        })
    };
    let num = |key: &str| -> Result<u8, PostureError> {
        let v = field(key)?;
        v.parse().map_err(|e| PostureError::Parse {
            path: path.to_path_buf(),
            reason: format!("{key} {v:?}: {e}"),
        })
    };
    Ok(Status {
        cap_inh: hex("CapInh")?,
        cap_prm: hex("CapPrm")?,
        cap_eff: hex("CapEff")?,
        cap_bnd: hex("CapBnd")?,
        cap_amb: hex("CapAmb")?,
        no_new_privs: num("NoNewPrivs")? == 1,
        seccomp: num("Seccomp")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    const CAPS: u64 = 0x5fb;

    fn status(cap_eff: u64, nnp: u8, seccomp: u8) -> String {
        format!(
            "Name:\tsleep\nState:\tS (sleeping)\nPid:\t42\nCapInh:\t0000000000000000\n\
             CapPrm:\t{CAPS:016x}\nCapEff:\t{cap_eff:016x}\nCapBnd:\t{CAPS:016x}\n\
             CapAmb:\t0000000000000000\nNoNewPrivs:\t{nnp}\nSeccomp:\t{seccomp}\n\
             Seccomp_filters:\t1\n"
        )
    }

    /// The sandbox process's own mounts in the fixtures; the host's `/` is mount 25.
    const SANDBOX_MOUNTINFO: &str = "\
301 300 0:61 / / rw,relatime - overlay overlay rw,lowerdir=l,upperdir=u,workdir=w
302 301 0:63 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
303 301 0:64 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
304 301 0:67 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
305 304 0:68 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
306 305 0:36 / /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
307 302 0:6 /null /proc/cmdline ro,relatime - devtmpfs devtmpfs rw,mode=755
308 305 0:68 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
309 308 0:36 / /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
";
    const HOST_ROOT_MOUNT: u64 = 25;

    /// A proc tree with a host process `1` and sandbox process `42`. A file target (`/...`)
    /// was opened through mount 301 (the sandbox's root) unless it starts with `/host/`
    /// (mount 25, the host's).
    fn fixture(status_text: &str, shared: &[&str], fds: &[(&str, &str)]) -> TempDir {
        let tmp = TempDir::new().expect("tmp");
        let host = tmp.path().join("1");
        let sb = tmp.path().join("42");
        for d in [&host, &sb] {
            fs::create_dir_all(d.join("ns")).expect("mkdir");
            fs::create_dir_all(d.join("fd")).expect("mkdir");
        }
        for (i, kind) in ISOLATED_NAMESPACES.iter().enumerate() {
            let host_ino = format!("{kind}:[40265318{i:02}]");
            let sb_ino = if shared.contains(kind) {
                host_ino.clone()
            } else {
                format!("{kind}:[40265330{i:02}]")
            };
            symlink(&host_ino, host.join("ns").join(kind)).expect("symlink");
            symlink(&sb_ino, sb.join("ns").join(kind)).expect("symlink");
        }
        fs::create_dir_all(sb.join("fdinfo")).expect("mkdir");
        for (fd, target) in fds {
            symlink(target, sb.join("fd").join(fd)).expect("symlink");
            let mnt_id = if target.starts_with("/host/") {
                HOST_ROOT_MOUNT
            } else {
                301
            };
            fs::write(
                sb.join("fdinfo").join(fd),
                format!("pos:\t0\nflags:\t02\nmnt_id:\t{mnt_id}\nino:\t7\n"),
            )
            .expect("write");
        }
        fs::write(sb.join("mountinfo"), SANDBOX_MOUNTINFO).expect("write");
        fs::write(sb.join("status"), status_text).expect("write");
        tmp
    }

    fn expected() -> Expected {
        Expected {
            capabilities: CAPS,
            no_new_privs: true,
            seccomp_mode: 2,
            fds: FdPolicy {
                max_fds: 3,
                allowed_targets: vec!["/dev/null".into(), "pipe:".into()],
                sandbox_files: false,
            },
            mounts: MountPolicy {
                read_only: vec!["/sys".into()],
                masked: vec!["/proc/cmdline".into()],
            },
            user_namespace: None,
        }
    }

    const STDIO: &[(&str, &str)] = &[("0", "/dev/null"), ("1", "/dev/null"), ("2", "pipe:[77]")];

    #[test]
    fn expected_posture_has_no_mismatch() {
        let tmp = fixture(&status(CAPS, 1, 2), &[], STDIO);
        let report = Posture::new(tmp.path(), "1")
            .check(42, &expected())
            .expect("check");
        assert!(report.is_ok(), "{report:?}");
    }

    #[test]
    fn extra_capability_no_nnp_and_no_seccomp_are_reported() {
        let with_sys_admin = CAPS | (1 << 21);
        let tmp = fixture(&status(with_sys_admin, 0, 0), &[], STDIO);
        let report = Posture::new(tmp.path(), "1")
            .check(42, &expected())
            .expect("check");
        assert_eq!(
            report.mismatches,
            vec![
                Mismatch::Capabilities {
                    set: "effective",
                    expected: CAPS,
                    actual: with_sys_admin
                },
                Mismatch::NoNewPrivs { actual: false },
                Mismatch::SeccompMode {
                    expected: 2,
                    actual: 0
                },
            ]
        );
    }

    #[test]
    fn shared_namespaces_are_reported() {
        let tmp = fixture(&status(CAPS, 1, 2), &["net", "pid"], STDIO);
        let report = Posture::new(tmp.path(), "1")
            .check(42, &expected())
            .expect("check");
        let kinds: Vec<_> = report
            .mismatches
            .iter()
            .map(|m| match m {
                Mismatch::SharedNamespace { kind, .. } => *kind,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(kinds, vec!["pid", "net"]);
    }

    #[test]
    fn leaked_host_fds_are_reported() {
        let fds = &[
            ("0", "/dev/null"),
            ("1", "/dev/null"),
            ("2", "/dev/null"),
            ("7", "/var/lib/hutch/secret-dir"),
        ];
        let tmp = fixture(&status(CAPS, 1, 2), &[], fds);
        let report = Posture::new(tmp.path(), "1")
            .check(42, &expected())
            .expect("check");
        assert_eq!(
            report.mismatches,
            vec![
                Mismatch::TooManyFds { max: 3, actual: 4 },
                Mismatch::Fd {
                    fd: 7,
                    target: "/var/lib/hutch/secret-dir".into()
                },
            ]
        );
    }

    /// A sandbox process may hold files of its own tree but not a host file, whatever the
    /// path reads (a host file's path can look like a sandbox's); the twin: the same host
    /// file passes a policy that does not ask (as the old exact-path allowance did).
    #[test]
    fn host_files_are_told_from_sandbox_files_by_their_mount() {
        let fds = &[
            ("0", "pipe:[70]"),
            ("1", "pipe:[71]"),
            ("2", "pipe:[71]"),
            ("3", "socket:[72]"),
            ("4", "/tmp/upload (deleted)"),
            ("5", "/memfd:jit (deleted)"),
            ("6", "/host/var/lib/hutch/agent/sandboxes/sb1/guest.log"),
        ];
        let tmp = fixture(&status(CAPS, 1, 2), &[], fds);
        let posture = Posture::new(tmp.path(), "1");
        let found = posture
            .check_fds(42, &FdPolicy::sandbox_process())
            .expect("check");
        assert_eq!(
            found,
            vec![Mismatch::HostFile {
                fd: 6,
                target: "/host/var/lib/hutch/agent/sandboxes/sb1/guest.log".into(),
                mnt_id: HOST_ROOT_MOUNT,
            }]
        );

        let mut trusting = FdPolicy::sandbox_process();
        trusting
            .allowed_targets
            .push("/host/var/lib/hutch/agent/sandboxes/sb1/guest.log".into());
        assert!(posture.check_fds(42, &trusting).expect("check").is_empty());

        // Without sandbox files allowed, a file of the sandbox's tree is a mismatch too.
        let strict = FdPolicy {
            sandbox_files: false,
            ..FdPolicy::sandbox_process()
        };
        let found = posture.check_fds(42, &strict).expect("check");
        assert_eq!(
            found
                .iter()
                .map(|m| match m {
                    Mismatch::Fd { fd, .. } => *fd,
                    other => panic!("unexpected {other:?}"),
                })
                .collect::<Vec<_>>(),
            vec![4, 6]
        );
    }

    /// A writable mount under a read-only path and a path without its mask are reported; the
    /// covered writable tmpfs of the fixture (mount 305) is not, being out of use.
    #[test]
    fn writable_and_unmasked_mounts_are_reported() {
        let tmp = fixture(&status(CAPS, 1, 2), &[], STDIO);
        let mut extra = SANDBOX_MOUNTINFO.to_owned();
        extra.push_str("310 309 0:36 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n");
        fs::write(tmp.path().join("42/mountinfo"), extra).expect("write");
        let mut want = expected();
        want.mounts.masked.push("/proc/kcore".into());
        let report = Posture::new(tmp.path(), "1")
            .check(42, &want)
            .expect("check");
        assert_eq!(
            report.mismatches,
            vec![
                Mismatch::NotMasked {
                    path: "/proc/kcore".into()
                },
                Mismatch::WritableMount {
                    path: "/sys/fs/cgroup/pids".into(),
                    options: "rw,nosuid".into()
                },
            ]
        );
    }

    #[test]
    fn missing_status_line_is_a_parse_error() {
        let tmp = fixture("Name:\tx\nCapInh:\t0\n", &[], STDIO);
        let err = Posture::new(tmp.path(), "1")
            .check(42, &expected())
            .expect_err("must fail");
        assert!(err.to_string().contains("42/status"), "{err}");
    }

    #[test]
    fn missing_process_is_an_io_error_naming_the_path() {
        let tmp = fixture(&status(CAPS, 1, 2), &[], STDIO);
        let err = Posture::new(tmp.path(), "1")
            .check(99, &expected())
            .expect_err("must fail");
        assert!(matches!(err, PostureError::Io { .. }));
        assert!(err.to_string().contains("99/status"), "{err}");
    }
}
