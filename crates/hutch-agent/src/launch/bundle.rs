//! Step 5, bundle: bind and listen on `guest.sock` in the state dir (in this process: the
//! socket listens before the guest runs, so the first request simply waits in its backlog),
//! then write the OCI bundle: the guest binary bound read-only at [`GUEST_PATH`], `guest/`
//! bound read-only at [`GUEST_CONFIG_DIR`], the cgroup with memory (no swap), pids and CPU
//! limits, hostname = id, the isolation defaults of DESIGN §3. Records the posture the bundle
//! asks for, which the posture step checks.
//!
//! Undo: remove the socket and the bundle (both in the state dir the claim's undo removes
//! anyway; removed here so each step undoes exactly what it made).

use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_host::AgentError;
use hutch_runtime::bundle::{capabilities_of, capability_mask, mount_policy_of, write_bundle};
use hutch_runtime::posture::{Expected, FdPolicy};
use hutch_runtime::{BindMount, ContainerSpec, CpuLimit};

use super::{Cx, Step, blocking, host_err};
use crate::machine::Machine;

/// Where the guest binary appears inside every sandbox (read-only).
pub const GUEST_PATH: &str = "/.hutch/guest";
/// Where the guest's token and env files appear inside every sandbox (read-only).
pub const GUEST_CONFIG_DIR: &str = "/.hutch/config";
/// The guest's TCP address inside the sandbox's own network namespace (envd's port).
pub const GUEST_LISTEN: &str = "0.0.0.0:49983";

const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// RLIMIT_NOFILE of sandbox processes (below this host's hard limit of 20000).
const NOFILE: u64 = 16384;
/// CFS period of the CPU limit.
const CPU_PERIOD_US: u64 = 100_000;
/// Most descriptors the guest may hold when its posture is checked.
const MAX_GUEST_FDS: usize = 64;

pub(crate) struct Bundle;

#[async_trait]
impl Step for Bundle {
    fn name(&self) -> &'static str {
        "bundle"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        let id = cx.id().clone();
        let rootfs = cx.need("the root filesystem", &cx.rootfs)?.clone();
        let cgroups_path = cx.need("the cgroup path", &cx.cgroup_path)?.clone();
        let m = machine.clone();
        let launch = cx.launch.clone();
        let state = cx.state.clone();
        // The runtime joins the namespace through this process's descriptor of it.
        let user_namespace = cx.userns.as_ref().map(|u| hutch_runtime::UserNamespace {
            path: format!("/proc/{}/fd/{}", std::process::id(), u.fd.as_raw_fd()).into(),
            host_uid: u.host_id,
            host_gid: u.host_id,
            size: u.size,
        });
        let (listener, bundle, expected) = blocking(&id.clone(), move || {
            let listener = UnixListener::bind(state.socket())
                .map_err(host_err("bind the guest socket", &id))?;
            let mut args = vec![
                GUEST_PATH.to_owned(),
                "--listen".into(),
                GUEST_LISTEN.into(),
                "--listen-fd".into(),
                "3".into(),
                "--user".into(),
                launch.template.default_user.clone(),
                "--env-file".into(),
                format!("{GUEST_CONFIG_DIR}/env"),
                "--access-token-file".into(),
                format!("{GUEST_CONFIG_DIR}/token"),
            ];
            if let Some(w) = &launch.template.default_workdir {
                args.extend(["--workdir".to_owned(), w.clone()]);
            }
            let r = &launch.resources;
            let spec = ContainerSpec {
                rootfs,
                readonly_rootfs: false,
                args,
                env: vec![("PATH".into(), PATH_ENV.into())],
                cwd: "/".into(),
                hostname: id.to_string(),
                memory_limit_bytes: u64::from(r.memory_mb) << 20,
                pids_limit: i64::from(r.pids),
                cpu: if r.cpu_millis == 0 {
                    CpuLimit::Unlimited
                } else {
                    CpuLimit::Quota {
                        quota_us: i64::from(r.cpu_millis) * (CPU_PERIOD_US as i64) / 1000,
                        period_us: CPU_PERIOD_US,
                    }
                },
                cgroups_path,
                bind_mounts: vec![
                    BindMount {
                        source: m.config.guest_bin.clone(),
                        destination: GUEST_PATH.into(),
                        readonly: true,
                    },
                    BindMount {
                        source: state.guest_config(),
                        destination: GUEST_CONFIG_DIR.into(),
                        readonly: true,
                    },
                ],
                tmpfs_mounts: vec![],
                network_namespace: None,
                nofile: NOFILE,
                isolation: m.config.isolation.clone(),
                user_namespace,
            };
            let written = spec
                .validate()
                .map_err(host_err("validate the sandbox spec", &id))
                .and_then(|valid| {
                    let bundle = write_bundle(&state.bundle(), &valid)
                        .map_err(host_err("write the bundle", &id))?;
                    Ok((valid, bundle))
                });
            let (valid, bundle) = match written {
                Ok(w) => w,
                Err(e) => {
                    drop(listener);
                    let _ = remove_made(&state);
                    return Err(e);
                }
            };
            let expected = Expected {
                capabilities: capability_mask(&capabilities_of(&valid)),
                no_new_privs: m.config.isolation.no_new_privileges,
                seccomp_mode: if m.config.isolation.seccomp { 2 } else { 0 },
                fds: FdPolicy {
                    max_fds: MAX_GUEST_FDS,
                    allowed_targets: vec!["socket:".into(), "anon_inode:".into(), "pipe:".into()],
                    sandbox_files: true,
                },
                mounts: mount_policy_of(&valid),
                user_namespace: valid
                    .get()
                    .user_namespace
                    .as_ref()
                    .map(|u| (u.host_uid, u.size)),
            };
            Ok((listener, bundle, expected))
        })
        .await?;
        cx.listener = Some(listener);
        cx.bundle = Some(bundle);
        cx.expected = Some(expected);
        Ok(())
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        let state = machine.state(id);
        let id2 = id.clone();
        blocking(id, move || {
            remove_made(&state).map_err(host_err("remove the bundle and the guest socket", &id2))
        })
        .await
    }
}

/// Removes the socket and the bundle dir; missing is fine.
fn remove_made(state: &crate::state::StateDir) -> std::io::Result<()> {
    let missing_ok = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    let socket = missing_ok(std::fs::remove_file(state.socket()));
    let bundle = missing_ok(std::fs::remove_dir_all(state.bundle()));
    socket.and(bundle)
}
