//! Cheap cgroup migrations: the cgroup2 mount option `favordynmods`.
//!
//! Moving a task into a cgroup (every sandbox start: the runtime writes its init's pid to
//! `cgroup.procs`) takes the kernel's global `cgroup_threadgroup_rwsem` for writing. That lock is
//! a per-CPU rwsem: a writer first waits for an RCU grace period, unless another writer ran a
//! moment ago. On a host that starts a sandbox now and then, every start pays a whole grace
//! period: measured here 10–20 ms of a 25–35 ms `crun run --detach` (2-core VM, cgroup v1 with a
//! hybrid cgroup2 mount), against 11 ms with the option on.
//!
//! The kernel's answer is `favordynmods` ("reduce the latencies of dynamic cgroup modifications
//! such as task migrations ... at the cost of making hot path operations such as forks and exits
//! more expensive"): the lock stays in its slow-reader mode for good. It belongs to the cgroup2
//! superblock, which every cgroup2 mount shares (the hybrid `unified` mount of a v1 host too),
//! and it switches the one global lock, so one reconfiguration covers v1 and v2 hierarchies.
//!
//! [`favor_dynamic_modifications`] reconfigures that superblock through the mount API (`fspick`,
//! `fsconfig`): unlike a `mount -o remount`, it cannot touch the per-mount flags (`nosuid`,
//! `nodev`, `noexec`). A reconfiguration resets the cgroup2 options it is not given, so the ones
//! in effect (`nsdelegate`, `memory_recursiveprot`, ...) are passed again.

use std::path::{Path, PathBuf};

use crate::{CgroupError, Result};

/// The option this module turns on.
pub const FAVORDYNMODS: &str = "favordynmods";

/// A cgroup2 mount as `/proc/self/mountinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub target: PathBuf,
    /// The superblock's options (`rw`, `nsdelegate`, ...).
    pub super_options: Vec<String>,
}

/// The cgroup2 mounts listed in a `mountinfo` text, in order.
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<Cgroup2Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // `<id> <parent> <dev> <root> <target> <opts> [<optional>...] - <fstype> <source> <super>`
            let (head, tail) = line.split_once(" - ")?;
            let mut tail = tail.split(' ');
            if tail.next()? != "cgroup2" {
                return None;
            }
            let _source = tail.next()?;
            let super_options = tail
                .next()
                .unwrap_or_default()
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
            Some(Cgroup2Mount {
                target: unescape(head.split(' ').nth(4)?),
                super_options,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`). hutch-rootfs
/// has its own copy of these few lines: neither crate depends on the other, and a shared crate
/// (or `procfs`) for one function would weigh more than the copy.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// The cgroup2 options to set when reconfiguring a superblock that has `current`: every flag in
/// effect (not `rw`/`ro`, which are the superblock's read-only state, not a cgroup option) and
/// `favordynmods`.
pub fn reconfigure_flags(current: &[String]) -> Vec<String> {
    let mut flags: Vec<String> = current
        .iter()
        .filter(|o| !matches!(o.as_str(), "rw" | "ro" | FAVORDYNMODS))
        .cloned()
        .collect();
    flags.push(FAVORDYNMODS.to_owned());
    flags
}

/// What [`favor_dynamic_modifications`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dynmods {
    /// The option was on already (seen on this mount).
    AlreadyOn(PathBuf),
    /// This call turned it on through this mount.
    TurnedOn(PathBuf),
    /// No cgroup2 mount in this mount namespace: nothing to reconfigure.
    NoCgroup2,
}

/// Turns `favordynmods` on for the host's cgroup2 superblock (see the module docs), reading the
/// mounts from `mountinfo` (normally `/proc/self/mountinfo`). Needs `CAP_SYS_ADMIN` in the
/// initial user namespace; the change lasts until the next boot.
pub fn favor_dynamic_modifications(mountinfo: &Path) -> Result<Dynmods> {
    let text = std::fs::read_to_string(mountinfo).map_err(|source| CgroupError::Io {
        op: "read",
        path: mountinfo.to_owned(),
        source,
    })?;
    let Some(mount) = cgroup2_mounts(&text).into_iter().next() else {
        return Ok(Dynmods::NoCgroup2);
    };
    if mount.super_options.iter().any(|o| o == FAVORDYNMODS) {
        return Ok(Dynmods::AlreadyOn(mount.target));
    }
    let io_err = |op: &'static str, target: &Path| {
        let path = target.to_owned();
        move |e: rustix::io::Errno| CgroupError::Io {
            op,
            path,
            source: e.into(),
        }
    };
    let fs = rustix::mount::fspick(
        rustix::fs::CWD,
        &mount.target,
        rustix::mount::FsPickFlags::FSPICK_CLOEXEC
            | rustix::mount::FsPickFlags::FSPICK_NO_AUTOMOUNT,
    )
    .map_err(io_err("pick the cgroup2 superblock at", &mount.target))?;
    for flag in reconfigure_flags(&mount.super_options) {
        rustix::mount::fsconfig_set_flag(&fs, flag.as_str())
            .map_err(io_err("set a cgroup2 option at", &mount.target))?;
    }
    rustix::mount::fsconfig_reconfigure(&fs).map_err(io_err(
        "reconfigure the cgroup2 superblock at",
        &mount.target,
    ))?;
    Ok(Dynmods::TurnedOn(mount.target))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 25 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
50 25 0:38 / /var/lib/odd\\040dir rw,relatime - cgroup2 none rw,nsdelegate,favordynmods
";

    #[test]
    fn finds_cgroup2_mounts_and_their_super_options() {
        let mounts = cgroup2_mounts(HYBRID);
        assert_eq!(
            mounts,
            vec![
                Cgroup2Mount {
                    target: "/sys/fs/cgroup/unified".into(),
                    super_options: vec![
                        "rw".into(),
                        "nsdelegate".into(),
                        "memory_recursiveprot".into()
                    ],
                },
                Cgroup2Mount {
                    target: "/var/lib/odd dir".into(),
                    super_options: vec!["rw".into(), "nsdelegate".into(), FAVORDYNMODS.into()],
                },
            ]
        );
        assert!(cgroup2_mounts("36 31 0:32 / /x rw - cgroup cgroup rw,memory\n").is_empty());
        assert!(cgroup2_mounts("garbage\n\n").is_empty());
    }

    #[test]
    fn a_reconfiguration_keeps_the_options_in_effect() {
        let current: Vec<String> = ["rw", "nsdelegate", "memory_recursiveprot"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            reconfigure_flags(&current),
            ["nsdelegate", "memory_recursiveprot", FAVORDYNMODS].map(String::from)
        );
        assert_eq!(
            reconfigure_flags(&["ro".into(), FAVORDYNMODS.into()]),
            [FAVORDYNMODS].map(String::from)
        );
    }
}
