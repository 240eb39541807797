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
//!    an allowed shape.

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
    /// Allowed link targets: exact paths (`/dev/null`, a log file) or prefixes ending in `:`
    /// (`pipe:`, `socket:`, `anon_inode:`).
    pub allowed_targets: Vec<String>,
}

impl FdPolicy {
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
    Fd {
        fd: u32,
        target: String,
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

        let host = self.proc_root.join(&self.reference);
        for &kind in ISOLATED_NAMESPACES {
            let mine = read_link(&dir.join("ns").join(kind))?;
            let theirs = read_link(&host.join("ns").join(kind))?;
            if mine == theirs {
                mismatches.push(Mismatch::SharedNamespace { kind, inode: mine });
            }
        }

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
        if fds.len() > expected.fds.max_fds {
            mismatches.push(Mismatch::TooManyFds {
                max: expected.fds.max_fds,
                actual: fds.len(),
            });
        }
        for (fd, target) in fds {
            if !expected.fds.allows(&target) {
                mismatches.push(Mismatch::Fd { fd, target });
            }
        }
        Ok(Report { pid, mismatches })
    }
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

    /// A proc tree with a host process `1` and sandbox process `42`.
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
        for (fd, target) in fds {
            symlink(target, sb.join("fd").join(fd)).expect("symlink");
        }
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
            },
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
