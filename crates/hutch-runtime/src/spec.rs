//! The input of a bundle: what one sandbox's container must look like, parsed then validated.
//!
//! **Owns**: [`ContainerSpec`] (plain data the agent fills in) and [`ContainerSpec::validate`], a pure
//! function that turns it into a [`ValidSpec`], the only type [`crate::bundle`] accepts.
//! **Must not**: touch the filesystem or decide isolation defaults (those live in `bundle` and
//! `seccomp`; [`Isolation`] can only weaken them, and only tests do that).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Capability;

/// How CPU is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuLimit {
    /// No CPU limit.
    Unlimited,
    /// CFS bandwidth: `quota_us` of CPU time per `period_us` (e.g. 100_000/100_000 = 1 CPU).
    Quota { quota_us: i64, period_us: u64 },
    /// Relative weight (v1 `cpu.shares`, 2..=262144; runtimes convert it for v2).
    Shares(u64),
}

/// A bind mount of a host path into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// A tmpfs mounted in the sandbox (e.g. `/tmp` over a read-only rootfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    pub destination: String,
    pub size_bytes: u64,
}

/// Isolation switches. [`Isolation::default`] is the product's posture (DESIGN §3); anything else
/// is weaker and exists so security tests can show an attack works with a protection off
/// (the positive twin of each negative test). Production code never builds a non-default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// Apply the seccomp allowlist of [`crate::seccomp`].
    pub seccomp: bool,
    /// Capabilities added to the minimal set (bounding, effective, permitted).
    pub extra_capabilities: Vec<Capability>,
    /// Apply masked and read-only `/proc`, `/sys` paths.
    pub masked_and_readonly_paths: bool,
    /// Set `no_new_privileges`.
    pub no_new_privileges: bool,
}

impl Default for Isolation {
    fn default() -> Self {
        Self {
            seccomp: true,
            extra_capabilities: Vec::new(),
            masked_and_readonly_paths: true,
            no_new_privileges: true,
        }
    }
}

/// What one sandbox's container must look like, as the agent fills it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The root filesystem directory (absolute; usually an overlay mount point).
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    /// argv of the sandbox's PID 1 (hutch-guest in production).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub hostname: String,
    /// Memory limit; swap is limited to the same value, i.e. no swap.
    pub memory_limit_bytes: u64,
    pub pids_limit: i64,
    pub cpu: CpuLimit,
    /// `linux.cgroupsPath`, e.g. `/hutch/<sandbox-id>` (see `hutch_cgroup::Cgroup::oci_path`).
    pub cgroups_path: String,
    pub bind_mounts: Vec<BindMount>,
    pub tmpfs_mounts: Vec<TmpfsMount>,
    /// A network namespace prepared outside (from the pool); `None` creates an empty one that
    /// holds only loopback.
    pub network_namespace: Option<PathBuf>,
    /// RLIMIT_NOFILE, soft and hard.
    pub nofile: u64,
    pub isolation: Isolation,
    /// A user namespace made outside, owned by the sandbox's own host uid, which the
    /// container joins: root inside is that unprivileged uid outside. `None`: the container
    /// shares the host's user namespace (root inside is root outside).
    pub user_namespace: Option<UserNamespace>,
}

/// A user namespace for [`ContainerSpec::user_namespace`] and its mapping: ids
/// `0..size` inside are `host_uid..host_uid+size` (and the same for gids) outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespace {
    /// A path the runtime can open to join it (e.g. `/proc/<pid>/fd/<n>`).
    pub path: PathBuf,
    pub host_uid: u32,
    pub host_gid: u32,
    pub size: u32,
}

/// A [`ContainerSpec`] that passed [`ContainerSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSpec(ContainerSpec);

impl ValidSpec {
    pub fn get(&self) -> &ContainerSpec {
        &self.0
    }
}

/// Why a [`ContainerSpec`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Smallest memory limit accepted: below this the runtime itself cannot start the container.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// Sandbox paths nothing may be mounted over or under (the kernel's and the runtime's own).
const RESERVED_DESTINATIONS: &[&str] = &["/", "/proc", "/sys", "/dev"];

impl ContainerSpec {
    /// Checks every field; the result is the only input [`crate::bundle`] takes.
    pub fn validate(self) -> Result<ValidSpec, SpecError> {
        if !self.rootfs.is_absolute() || has_dotdot(&self.rootfs) {
            return Err(invalid("rootfs", "must be absolute without `..`"));
        }
        if self.args.is_empty() || self.args[0].is_empty() {
            return Err(invalid("args", "must name a program"));
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return Err(invalid("args", "NUL in argument"));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(invalid("env", format!("bad variable name {k:?}")));
            }
        }
        check_sandbox_path("cwd", &self.cwd)?;
        let host_ok = !self.hostname.is_empty()
            && self.hostname.len() <= 63
            && self
                .hostname
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.hostname.starts_with('-');
        if !host_ok {
            return Err(invalid(
                "hostname",
                "1..=63 of [a-z0-9-], not starting with `-`",
            ));
        }
        if self.memory_limit_bytes < MIN_MEMORY_BYTES {
            return Err(invalid(
                "memory_limit_bytes",
                format!("below {MIN_MEMORY_BYTES}"),
            ));
        }
        if self.pids_limit < 1 {
            return Err(invalid("pids_limit", "must be at least 1"));
        }
        match self.cpu {
            CpuLimit::Unlimited => {}
            CpuLimit::Quota {
                quota_us,
                period_us,
            } => {
                if !(1_000..=1_000_000).contains(&period_us) || quota_us < 1_000 {
                    return Err(invalid(
                        "cpu",
                        "period 1000..=1000000 µs, quota at least 1000 µs",
                    ));
                }
            }
            CpuLimit::Shares(s) => {
                if !(2..=262_144).contains(&s) {
                    return Err(invalid("cpu", "shares 2..=262144"));
                }
            }
        }
        check_sandbox_path("cgroups_path", &self.cgroups_path)?;
        if self.cgroups_path == "/" {
            return Err(invalid("cgroups_path", "must not be the root cgroup"));
        }
        for m in &self.bind_mounts {
            if !m.source.is_absolute() || has_dotdot(&m.source) {
                return Err(invalid(
                    "bind_mounts",
                    "source must be absolute without `..`",
                ));
            }
            check_destination(&m.destination)?;
        }
        for t in &self.tmpfs_mounts {
            check_destination(&t.destination)?;
            if t.size_bytes == 0 {
                return Err(invalid("tmpfs_mounts", "size must be positive"));
            }
        }
        if self
            .network_namespace
            .as_ref()
            .is_some_and(|ns| !ns.is_absolute())
        {
            return Err(invalid("network_namespace", "must be an absolute path"));
        }
        if self.nofile == 0 {
            return Err(invalid("nofile", "must be positive"));
        }
        if let Some(u) = &self.user_namespace {
            if !u.path.is_absolute() {
                return Err(invalid("user_namespace", "the path must be absolute"));
            }
            if u.host_uid == 0 || u.host_gid == 0 || u.size == 0 {
                return Err(invalid(
                    "user_namespace",
                    "must map to non-root host ids, at least one",
                ));
            }
            if u.host_uid.checked_add(u.size).is_none() || u.host_gid.checked_add(u.size).is_none()
            {
                return Err(invalid(
                    "user_namespace",
                    "the mapping overflows the id space",
                ));
            }
        }
        Ok(ValidSpec(self))
    }
}

fn has_dotdot(p: &Path) -> bool {
    p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
}

fn check_sandbox_path(field: &'static str, p: &str) -> Result<(), SpecError> {
    if !p.starts_with('/') || p.contains('\0') || p.split('/').any(|c| c == "..") {
        return Err(invalid(
            field,
            format!("{p:?} must be absolute without `..`"),
        ));
    }
    Ok(())
}

fn check_destination(dest: &str) -> Result<(), SpecError> {
    check_sandbox_path("mount destination", dest)?;
    let norm = dest.trim_end_matches('/');
    let norm = if norm.is_empty() { "/" } else { norm };
    for reserved in RESERVED_DESTINATIONS {
        let under = *reserved != "/" && norm.starts_with(&format!("{reserved}/"));
        if norm == *reserved || under {
            return Err(invalid(
                "mount destination",
                format!("{dest:?} is over or under {reserved}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> ContainerSpec {
        ContainerSpec {
            rootfs: "/var/lib/hutch/sb1/rootfs".into(),
            readonly_rootfs: false,
            args: vec!["/hutch/guest".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
            hostname: "sb1".into(),
            memory_limit_bytes: 256 << 20,
            pids_limit: 256,
            cpu: CpuLimit::Quota {
                quota_us: 100_000,
                period_us: 100_000,
            },
            cgroups_path: "/hutch/sb1".into(),
            bind_mounts: vec![],
            tmpfs_mounts: vec![],
            network_namespace: None,
            nofile: 4096,
            isolation: Isolation::default(),
            user_namespace: None,
        }
    }

    #[test]
    fn sample_is_valid() {
        sample().validate().expect("valid");
    }

    #[test]
    fn table_of_refusals() {
        type Edit = fn(&mut ContainerSpec);
        let cases: &[(&str, Edit)] = &[
            ("rootfs", |s| s.rootfs = "rel/rootfs".into()),
            ("rootfs", |s| s.rootfs = "/a/../b".into()),
            ("args", |s| s.args.clear()),
            ("env", |s| s.env.push(("A=B".into(), "x".into()))),
            ("cwd", |s| s.cwd = "tmp".into()),
            ("cwd", |s| s.cwd = "/a/../..".into()),
            ("hostname", |s| s.hostname = "Has_Caps".into()),
            ("hostname", |s| s.hostname = String::new()),
            ("memory_limit_bytes", |s| s.memory_limit_bytes = 1024),
            ("pids_limit", |s| s.pids_limit = 0),
            ("cpu", |s| s.cpu = CpuLimit::Shares(1)),
            ("cpu", |s| {
                s.cpu = CpuLimit::Quota {
                    quota_us: 10,
                    period_us: 100_000,
                }
            }),
            ("cgroups_path", |s| s.cgroups_path = "/".into()),
            ("cgroups_path", |s| s.cgroups_path = "hutch/x".into()),
            ("mount destination", |s| {
                s.bind_mounts.push(BindMount {
                    source: "/srv/x".into(),
                    destination: "/proc/sys".into(),
                    readonly: true,
                })
            }),
            ("mount destination", |s| {
                s.bind_mounts.push(BindMount {
                    source: "/srv/x".into(),
                    destination: "/".into(),
                    readonly: true,
                })
            }),
            ("mount destination", |s| {
                s.tmpfs_mounts.push(TmpfsMount {
                    destination: "/dev/".into(),
                    size_bytes: 1,
                })
            }),
            ("bind_mounts", |s| {
                s.bind_mounts.push(BindMount {
                    source: "relative".into(),
                    destination: "/x".into(),
                    readonly: true,
                })
            }),
            ("nofile", |s| s.nofile = 0),
        ];
        for (field, edit) in cases {
            let mut spec = sample();
            edit(&mut spec);
            match spec.validate() {
                Err(SpecError::Invalid { field: f, .. }) => assert_eq!(f, *field),
                Ok(_) => panic!("{field}: accepted"),
            }
        }
    }

    #[test]
    fn mounts_outside_reserved_paths_are_fine() {
        let mut spec = sample();
        spec.bind_mounts.push(BindMount {
            source: "/var/lib/hutch/sb1/sock".into(),
            destination: "/run/hutch".into(),
            readonly: false,
        });
        spec.tmpfs_mounts.push(TmpfsMount {
            destination: "/tmp".into(),
            size_bytes: 64 << 20,
        });
        // `/devices` only shares a prefix with `/dev`.
        spec.tmpfs_mounts.push(TmpfsMount {
            destination: "/devices".into(),
            size_bytes: 1,
        });
        spec.validate().expect("valid");
    }
}
