//! OCI bundle generation: a [`ValidSpec`] becomes `config.json` with the isolation defaults of
//! DESIGN §3.
//!
//! **Owns**: the container's namespaces, capabilities, mounts, masked/read-only paths, device
//! allowlist, rlimits and cgroup resources. **Must not**: create or mount the rootfs, or start
//! anything; the runtime reads the bundle, nothing else does.
//!
//! # Capabilities kept (bounding = effective = permitted; inheritable and ambient empty)
//!
//! | capability | why a sandbox needs it |
//! |---|---|
//! | `CHOWN` | package managers and archive tools set file owners inside the sandbox's tree |
//! | `DAC_OVERRIDE` | root in the sandbox reads and writes files of other sandbox users (dpkg, pip as root) |
//! | `FOWNER` | `chmod`/`utime` on files owned by another sandbox user (tar, dpkg) |
//! | `FSETID` | keeps setuid/setgid bits when root rewrites a file (dpkg); `no_new_privs` makes them inert |
//! | `KILL` | root signals processes of other users, confined to the sandbox's pid namespace |
//! | `SETUID`, `SETGID` | running a command as the template's `USER`, `su`/`runuser` in build steps |
//! | `SETPCAP` | lets a process drop capabilities from its own bounding set before exec |
//! | `NET_BIND_SERVICE` | servers on ports below 1024 in the sandbox's own network namespace |
//!
//! Dropped on purpose beyond the DESIGN's list (NET_RAW, SYS_ADMIN, SYS_PTRACE, MKNOD,
//! DAC_READ_SEARCH): `AUDIT_WRITE` (the audit log is the host's, not namespaced), `SYS_CHROOT`
//! (chroot is also refused by seccomp), `SETFCAP` (file capabilities are inert under
//! `no_new_privs`), and everything else.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, Linux, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, Mount, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec, User,
};

use crate::posture::MountPolicy;
use crate::seccomp;
use crate::spec::{CpuLimit, ValidSpec};

/// The capabilities every sandbox process holds (see the module table).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
];

/// Paths hidden from the sandbox (a bind of `/dev/null` over a file, an empty read-only tmpfs
/// over a directory; a path the kernel does not have is skipped). The first group is Docker's
/// default set; the rest name host devices, host files or other sandboxes, and nothing a
/// sandbox runs needs them (`docs/decisions.md`, Isolation, gives the reason for each).
pub const MASKED_PATHS: &[&str] = &[
    // Docker's defaults.
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    // The host's boot line and kernel build.
    "/proc/cmdline",
    "/proc/config.gz",
    // Host block devices: every sandbox's loop device, named by its image's host path.
    "/proc/diskstats",
    "/proc/partitions",
    "/proc/swaps",
    "/sys/block",
    "/sys/class/block",
    "/sys/dev/block",
    "/sys/devices/virtual/block",
    // Every host user's key quota (keyctl is refused by seccomp anyway).
    "/proc/key-users",
    // The state of every physical page of the host (root inside reads them: no user namespace).
    "/proc/kpagecgroup",
    "/proc/kpagecount",
    "/proc/kpageflags",
];

/// Paths the sandbox sees read-only: Docker's set, plus `/sys/fs/cgroup`, which runc mounts on
/// cgroup v1 as a writable tmpfs holding the (read-only) controller mounts (see
/// `standard_mounts`).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/sys/fs/cgroup",
];

/// What the masked and read-only paths of a bundle look like from outside, for the posture
/// check (R17): paths every kernel has, and `/sys` with everything under it (the cgroup
/// mounts included) read-only. Empty when the spec turns those paths off.
pub fn mount_policy_of(spec: &ValidSpec) -> MountPolicy {
    if !spec.get().isolation.masked_and_readonly_paths {
        return MountPolicy::default();
    }
    MountPolicy {
        read_only: ["/proc/sys", "/sys"].map(String::from).to_vec(),
        masked: ["/proc/cmdline"].map(String::from).to_vec(),
    }
}

/// The character devices a sandbox may use: (major, minor) of null, zero, full, random,
/// urandom, tty, ptmx, and the devpts range. The runtime creates the nodes itself.
const ALLOWED_CHAR_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// Where a failure happened while writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serialise config.json for {path}")]
    Serialise {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Linux capability numbers (`include/uapi/linux/capability.h`), for comparing with
/// `/proc/<pid>/status` masks.
pub fn capability_number(cap: Capability) -> u32 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// The capabilities a sandbox built from `spec` holds.
pub fn capabilities_of(spec: &ValidSpec) -> HashSet<Capability> {
    DEFAULT_CAPABILITIES
        .iter()
        .chain(&spec.get().isolation.extra_capabilities)
        .copied()
        .collect()
}

/// The same set as a `/proc/<pid>/status` style bit mask.
pub fn capability_mask(caps: &HashSet<Capability>) -> u64 {
    caps.iter()
        .fold(0, |m, c| m | (1u64 << capability_number(*c)))
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_owned()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| (*o).to_owned()).collect()));
    m
}

/// The kernel's and the runtime's file systems; `locked` adds the recursive read-only
/// `/sys/fs/cgroup` (part of the masked and read-only paths).
fn standard_mounts(locked: bool) -> Vec<Mount> {
    let cgroup_options: &[&str] = if locked {
        &["nosuid", "noexec", "nodev", "relatime", "ro", "rro"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        // On cgroup v1 the runtimes mount a tmpfs here holding one mount per controller, and
        // `ro` alone leaves that tmpfs writable. `rro` (recursive read-only) makes crun mount
        // all of it read-only; runc ignores `rro` for v1, and `/sys/fs/cgroup` in
        // `READONLY_PATHS` covers it. (That entry alone would not do for crun 1.8: its
        // recursive bind for read-only paths makes the controller mounts under it writable.)
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_options),
    ]
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path.map(Path::to_path_buf));
    ns
}

fn resources(spec: &ValidSpec) -> LinuxResources {
    let s = spec.get();
    let mut memory = LinuxMemory::default();
    let limit = i64::try_from(s.memory_limit_bytes).unwrap_or(i64::MAX);
    memory.set_limit(Some(limit));
    // memory+swap == memory: no swap.
    memory.set_swap(Some(limit));

    let mut pids = LinuxPids::default();
    pids.set_limit(s.pids_limit);

    let mut cpu = LinuxCpu::default();
    match s.cpu {
        CpuLimit::Unlimited => {}
        CpuLimit::Quota {
            quota_us,
            period_us,
        } => {
            cpu.set_quota(Some(quota_us));
            cpu.set_period(Some(period_us));
        }
        CpuLimit::Shares(shares) => {
            cpu.set_shares(Some(shares));
        }
    }

    let mut devices = vec![{
        let mut deny_all = LinuxDeviceCgroup::default();
        deny_all.set_allow(false);
        deny_all.set_access(Some("rwm".to_owned()));
        deny_all
    }];
    for &(major, minor) in ALLOWED_CHAR_DEVICES {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(LinuxDeviceType::C));
        d.set_major(Some(major));
        d.set_minor(minor);
        d.set_access(Some("rwm".to_owned()));
        devices.push(d);
    }

    let mut r = LinuxResources::default();
    r.set_memory(Some(memory));
    r.set_pids(Some(pids));
    r.set_cpu(Some(cpu));
    r.set_devices(Some(devices));
    r
}

/// The OCI runtime spec for a sandbox.
pub fn build_spec(spec: &ValidSpec) -> Spec {
    let s = spec.get();
    let caps = capabilities_of(spec);

    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(Some(HashSet::new()));
    capabilities.set_ambient(Some(HashSet::new()));

    // Every field is set: building cannot fail.
    let nofile: PosixRlimit = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(s.nofile)
        .hard(s.nofile)
        .build()
        .expect("PosixRlimit fields all set");

    let mut user = User::default();
    user.set_uid(0);
    user.set_gid(0);

    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_user(user);
    process.set_args(Some(s.args.clone()));
    process.set_env(Some(
        s.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    ));
    process.set_cwd(PathBuf::from(&s.cwd));
    process.set_capabilities(Some(capabilities));
    // In a user namespace another uid owns, runc 1.1 cannot set a limit on the container's
    // process (its `prlimit` is refused, EPERM, measured): the limit is set on the runtime's
    // own process instead, which the container inherits (see `NOFILE_ANNOTATION`).
    // (`Process::default()` carries a file limit of its own: always set, to one or none.)
    process.set_rlimits(s.user_namespace.is_none().then(|| vec![nofile]));
    process.set_no_new_privileges(Some(s.isolation.no_new_privileges));

    let mut root = Root::default();
    root.set_path(s.rootfs.clone());
    root.set_readonly(Some(s.readonly_rootfs));

    let mut mounts = standard_mounts(s.isolation.masked_and_readonly_paths);
    for b in &s.bind_mounts {
        let mut options = vec!["rbind", "nosuid", "nodev"];
        options.push(if b.readonly { "ro" } else { "rw" });
        let mut m = mount(&b.destination, "bind", "", &options);
        m.set_source(Some(b.source.clone()));
        mounts.push(m);
    }
    for t in &s.tmpfs_mounts {
        let size = format!("size={}", t.size_bytes);
        mounts.push(mount(
            &t.destination,
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &size],
        ));
    }

    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|t| namespace(t, None))
    .collect();
    namespaces.push(namespace(
        LinuxNamespaceType::Network,
        s.network_namespace.as_deref(),
    ));

    let mut linux = Linux::default();
    if let Some(u) = &s.user_namespace {
        namespaces.push(namespace(LinuxNamespaceType::User, Some(&u.path)));
        linux.set_uid_mappings(Some(vec![id_mapping(u.host_uid, u.size)]));
        linux.set_gid_mappings(Some(vec![id_mapping(u.host_gid, u.size)]));
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources(spec)));
    linux.set_cgroups_path(Some(PathBuf::from(&s.cgroups_path)));
    linux.set_devices(None);
    linux.set_rootfs_propagation(Some("private".to_owned()));
    if s.isolation.masked_and_readonly_paths {
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|p| (*p).to_owned()).collect()));
        linux.set_readonly_paths(Some(
            READONLY_PATHS.iter().map(|p| (*p).to_owned()).collect(),
        ));
    } else {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    linux.set_seccomp(s.isolation.seccomp.then(seccomp::profile));

    let mut oci = Spec::default();
    oci.set_version("1.0.2".to_owned());
    oci.set_root(Some(root));
    oci.set_mounts(Some(mounts));
    oci.set_process(Some(process));
    oci.set_hostname(Some(s.hostname.clone()));
    oci.set_linux(Some(linux));
    oci.set_annotations(s.user_namespace.as_ref().map(|_| {
        [(NOFILE_ANNOTATION.to_owned(), s.nofile.to_string())]
            .into_iter()
            .collect()
    }));
    oci
}

/// With a user namespace, the container's RLIMIT_NOFILE: the runtime CLI wrapper sets it on
/// the runtime's process before it starts, and the container inherits it.
pub const NOFILE_ANNOTATION: &str = "io.hutch.rlimit-nofile";

fn id_mapping(host: u32, size: u32) -> oci_spec::runtime::LinuxIdMapping {
    // Every field is set: building cannot fail.
    oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host)
        .size(size)
        .build()
        .expect("LinuxIdMapping fields all set")
}

/// Writes `<dir>/config.json` for `spec`, creating `dir` with mode 0700 if needed, and returns
/// the bundle directory. The file is created 0600 and replaced atomically.
pub fn write_bundle(dir: &Path, spec: &ValidSpec) -> Result<PathBuf, BundleError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { op, path, source }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create bundle dir", dir))?;
    let json =
        serde_json::to_vec_pretty(&build_spec(spec)).map_err(|source| BundleError::Serialise {
            path: dir.to_path_buf(),
            source,
        })?;
    let tmp = dir.join(".config.json.tmp");
    let final_path = dir.join("config.json");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(&json).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, &final_path).map_err(io("rename into place", &final_path))?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BindMount, ContainerSpec, Isolation};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            rootfs: "/var/lib/hutch/sb1/rootfs".into(),
            readonly_rootfs: true,
            args: vec![
                "/hutch/guest".into(),
                "--socket".into(),
                "/run/hutch/s".into(),
            ],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            hostname: "sb1".into(),
            memory_limit_bytes: 128 << 20,
            pids_limit: 64,
            cpu: CpuLimit::Quota {
                quota_us: 50_000,
                period_us: 100_000,
            },
            cgroups_path: "/hutch/sb1".into(),
            bind_mounts: vec![BindMount {
                source: "/usr/lib/hutch/hutch-guest".into(),
                destination: "/hutch/guest".into(),
                readonly: true,
            }],
            tmpfs_mounts: vec![],
            network_namespace: None,
            nofile: 1024,
            isolation: Isolation::default(),
            user_namespace: None,
        }
    }

    fn json(spec: ContainerSpec) -> serde_json::Value {
        serde_json::to_value(build_spec(&spec.validate().expect("valid"))).expect("json")
    }

    #[test]
    fn capabilities_are_minimal_and_exclude_dangerous_ones() {
        let v = json(spec());
        let caps = &v["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            let mut got: Vec<String> = caps[set]
                .as_array()
                .expect(set)
                .iter()
                .map(|c| c.as_str().expect("str").to_owned())
                .collect();
            got.sort();
            assert_eq!(
                got,
                vec![
                    "CAP_CHOWN",
                    "CAP_DAC_OVERRIDE",
                    "CAP_FOWNER",
                    "CAP_FSETID",
                    "CAP_KILL",
                    "CAP_NET_BIND_SERVICE",
                    "CAP_SETGID",
                    "CAP_SETPCAP",
                    "CAP_SETUID",
                ],
                "{set}"
            );
        }
        assert_eq!(caps["ambient"], serde_json::json!([]));
        assert_eq!(caps["inheritable"], serde_json::json!([]));
        assert_eq!(v["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn namespaces_limits_and_cgroup_path() {
        let v = json(spec());
        let mut ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .expect("ns")
            .iter()
            .map(|n| n["type"].as_str().expect("type"))
            .collect();
        ns.sort();
        assert_eq!(ns, vec!["cgroup", "ipc", "mount", "network", "pid", "uts"]);
        let r = &v["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 128 << 20);
        assert_eq!(r["memory"]["swap"], 128 << 20);
        assert_eq!(r["pids"]["limit"], 64);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["devices"][0]["allow"], false);
        assert_eq!(v["linux"]["cgroupsPath"], "/hutch/sb1");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["hostname"], "sb1");
        assert_eq!(v["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert!(v["linux"]["seccomp"].is_object());
    }

    #[test]
    fn proc_and_sys_are_masked_and_readonly() {
        let v = json(spec());
        let masked = v["linux"]["maskedPaths"].as_array().expect("masked");
        for p in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/sys/firmware",
            "/proc/cmdline",
            "/sys/block",
            "/sys/devices/virtual/block",
        ] {
            assert!(masked.iter().any(|m| m == p), "{p}");
        }
        let ro = v["linux"]["readonlyPaths"].as_array().expect("ro");
        for p in [
            "/proc/sys",
            "/proc/sysrq-trigger",
            "/proc/irq",
            "/proc/bus",
            "/proc/fs",
            "/sys/fs/cgroup",
        ] {
            assert!(ro.iter().any(|m| m == p), "{p}");
        }
        let mounts = v["mounts"].as_array().expect("mounts");
        let sys = mounts
            .iter()
            .find(|m| m["destination"] == "/sys")
            .expect("sys");
        assert!(
            sys["options"]
                .as_array()
                .expect("o")
                .iter()
                .any(|o| o == "ro")
        );
        let cgroup = mounts
            .iter()
            .find(|m| m["destination"] == "/sys/fs/cgroup")
            .expect("cgroup");
        for o in ["ro", "rro"] {
            assert!(
                cgroup["options"]
                    .as_array()
                    .expect("o")
                    .iter()
                    .any(|x| x == o),
                "{o}"
            );
        }
        let guest = mounts
            .iter()
            .find(|m| m["destination"] == "/hutch/guest")
            .expect("guest bind");
        assert_eq!(guest["source"], "/usr/lib/hutch/hutch-guest");
        assert!(
            guest["options"]
                .as_array()
                .expect("o")
                .iter()
                .any(|o| o == "ro")
        );
    }

    #[test]
    fn weakened_isolation_shows_in_the_spec() {
        let mut s = spec();
        s.isolation = Isolation {
            seccomp: false,
            extra_capabilities: vec![Capability::SysAdmin],
            masked_and_readonly_paths: false,
            no_new_privileges: false,
        };
        let v = json(s);
        assert!(v["linux"].get("seccomp").is_none());
        assert!(v["linux"].get("readonlyPaths").is_none());
        assert_eq!(v["process"]["noNewPrivileges"], false);
        let bounding = v["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("b");
        assert!(bounding.iter().any(|c| c == "CAP_SYS_ADMIN"));
    }

    #[test]
    fn capability_mask_matches_kernel_numbers() {
        let caps: HashSet<_> = DEFAULT_CAPABILITIES.iter().copied().collect();
        // CHOWN..SETPCAP are bits 0,1,3..8; NET_BIND_SERVICE is bit 10.
        assert_eq!(capability_mask(&caps), 0b101_1111_1011);
    }

    #[test]
    fn write_bundle_is_private_and_parseable() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::TempDir::new().expect("tmp");
        let dir = tmp.path().join("bundle");
        write_bundle(&dir, &spec().validate().expect("valid")).expect("write");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("config.json")), 0o600);
        let back = Spec::load(dir.join("config.json")).expect("load");
        assert_eq!(back.hostname().as_deref(), Some("sb1"));
    }
}
