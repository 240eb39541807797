//! OCI runtimes (crun, runc; runsc later) behind one trait, driven through their command lines
//! from bundles generated with `oci-spec`.
//!
//! **Owns**:
//! - [`spec`]: the validated input describing one sandbox's container;
//! - [`bundle`]: `config.json` with the isolation defaults of DESIGN §3 (namespaces, minimal
//!   capabilities, `no_new_privs`, masked/read-only paths, devices, rlimits, cgroup limits);
//! - [`seccomp`]: the allowlist profile and the errno of each refusal;
//! - [`runtime`] and [`cli`]: the [`OciRuntime`] trait and its crun and runc backends, each with
//!   its state under a `--root` given by the caller;
//! - [`posture`]: checking a started sandbox from outside (R17).
//!
//! **Must not**: embed a runtime library or fork without exec inside the caller's process
//! (every runtime call is a child process; the methods block, so async callers use
//! `spawn_blocking`), prepare root filesystems, volumes or networks (other crates do), or
//! weaken isolation outside tests ([`spec::Isolation`]).

pub mod bundle;
pub mod cli;
pub mod posture;
pub mod runtime;
pub mod seccomp;
pub mod spec;

pub use cli::{Crun, Invocation, Runc, default_for_host, open};
pub use runtime::{
    CheckpointOptions, ContainerInfo, ContainerIo, ContainerStatus, MAX_PRESERVED_FDS, OciRuntime,
    RuntimeError, Signal,
};
pub use spec::{
    BindMount, ContainerSpec, CpuLimit, Isolation, SpecError, TmpfsMount, UserNamespace, ValidSpec,
};
