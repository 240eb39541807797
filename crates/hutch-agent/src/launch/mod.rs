//! A sandbox's launch as a sequence of steps, each with its undo.
//!
//! [`STEPS`], in order (each module says what its step does and undoes):
//!
//! 1. [`layers`]: pin the template's layers against eviction, fetch any the cache lacks.
//! 2. [`claim`]: check the runtime and the layers, take `sandboxes/<id>/` (0700; if it
//!    exists it belongs to another launch and nothing is touched), write `meta.json`, the
//!    guest's token and env.
//! 3. [`userns`]: take a range of unprivileged host uids, make the sandbox's user namespace
//!    owned by it (root inside is not root outside).
//! 4. [`rootfs`]: overlay over the layers (seen through the user namespace), upper dir on an
//!    ext4 image of `disk_mb`.
//! 5. [`cgroup`]: name the sandbox's cgroup `<parent>/<id>` (the runtime creates it).
//! 6. [`bundle`]: bind the guest's socket in the state dir, write the OCI bundle, note the
//!    posture the bundle asks for.
//! 7. [`runtime`]: `run --detach` with the socket as fd 3 and a drained pipe as stdio.
//! 8. [`guest`]: wait until the guest answers `/health`, up to a deadline.
//! 9. [`posture`]: check the guest's posture from outside and that no process holds a host
//!    file (R17).
//!
//! [`run`] applies them in order. A step that fails leaves nothing of its own behind (each
//! step's `apply` either completes or cleans up after itself), and [`run`] then undoes the
//! steps that completed, in reverse. An undo works from the host's state alone, with no
//! memory of the launch, is idempotent and succeeds when there is nothing to undo: so
//! [`unwind`] of every step is also how a sandbox is destroyed and how recovery at start
//! removes what a crash left. Every undo runs even if an earlier one failed; the first
//! failure is returned. Volumes, network namespaces and checkpoints will be steps beside
//! these.

pub(crate) mod bundle;
pub(crate) mod cgroup;
pub(crate) mod claim;
pub(crate) mod guest;
pub(crate) mod layers;
pub(crate) mod posture;
pub(crate) mod rootfs;
pub(crate) mod runtime;
pub(crate) mod userns;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_core::error::error_chain;
use hutch_guest_client::GuestClient;
use hutch_host::{AgentError, Launch};
use hutch_runtime::posture::Expected;

use crate::machine::Machine;
use crate::state::StateDir;

/// One step of a launch.
#[async_trait]
pub(crate) trait Step: Send + Sync {
    /// Its name in logs and timings.
    fn name(&self) -> &'static str;
    /// Does the step for `cx.launch`, recording what later steps need in `cx`. On failure it
    /// leaves nothing of its own behind.
    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError>;
    /// Undoes the step for sandbox `id` from whatever state the host holds: idempotent, no
    /// memory of the launch needed, success when there is nothing to undo.
    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError>;
}

/// The steps of every launch, in order.
pub(crate) const STEPS: &[&dyn Step] = &[
    &layers::Layers,
    &claim::Claim,
    &userns::Userns,
    &rootfs::Rootfs,
    &cgroup::Cgroup,
    &bundle::Bundle,
    &runtime::Runtime,
    &guest::Guest,
    &posture::Posture,
];

/// What a launch's steps hand on to the ones after them.
pub(crate) struct Cx {
    pub launch: Launch,
    pub state: StateDir,
    /// The sandbox's user namespace and host ids (userns step; `None` without).
    pub userns: Option<userns::SandboxUserns>,
    /// The overlay the sandbox gets as its root (rootfs step).
    pub rootfs: Option<PathBuf>,
    /// The cgroup path for the bundle (cgroup step).
    pub cgroup_path: Option<String>,
    /// The guest's listening socket, bound in the state dir (bundle step; the runtime step
    /// hands it to the guest and closes this copy).
    pub listener: Option<std::os::unix::net::UnixListener>,
    /// The written bundle (bundle step).
    pub bundle: Option<PathBuf>,
    /// The posture the bundle asks for (bundle step).
    pub expected: Option<Expected>,
    /// The task draining the guest's output into its log (runtime step).
    pub log_task: Option<tokio::task::JoinHandle<()>>,
    /// A client of the guest, its connection from the health check pooled (guest step).
    pub client: Option<GuestClient>,
    /// The guest's host pid (posture step).
    pub init_pid: Option<u32>,
    /// Microseconds each applied step took, for the launch's debug log.
    pub timings: Vec<(&'static str, u64)>,
}

impl Cx {
    pub fn new(launch: Launch, state: StateDir) -> Cx {
        Cx {
            launch,
            state,
            userns: None,
            rootfs: None,
            cgroup_path: None,
            listener: None,
            bundle: None,
            expected: None,
            log_task: None,
            client: None,
            init_pid: None,
            timings: Vec::new(),
        }
    }

    pub fn id(&self) -> &SandboxId {
        &self.launch.id
    }

    /// `what` of this launch, which an earlier step must have recorded: missing means the
    /// steps are out of order, a bug of this crate.
    pub fn need<'a, T>(
        &self,
        what: &'static str,
        value: &'a Option<T>,
    ) -> Result<&'a T, AgentError> {
        value.as_ref().ok_or_else(|| out_of_order(self.id(), what))
    }
}

fn out_of_order(id: &SandboxId, what: &'static str) -> AgentError {
    AgentError::Host {
        op: "launch: a step ran before the one it depends on",
        id: id.clone(),
        source: what.into(),
    }
}

/// Applies `steps` in order; on a failure undoes the ones that completed, in reverse, and
/// returns the failure.
pub(crate) async fn run(
    machine: &Arc<Machine>,
    steps: &[&dyn Step],
    cx: &mut Cx,
) -> Result<(), AgentError> {
    for (done, step) in steps.iter().enumerate() {
        let t = Instant::now();
        if let Err(e) = step.apply(machine, cx).await {
            tracing::warn!(
                sandbox = %cx.id(),
                step = step.name(),
                error = %error_chain(&e),
                "launch failed; undoing it"
            );
            if let Err(undo) = unwind(machine, &steps[..done], cx.id()).await {
                tracing::error!(sandbox = %cx.id(), error = %error_chain(&undo), "undoing a failed launch");
            }
            return Err(e);
        }
        cx.timings.push((step.name(), micros_since(t)));
    }
    Ok(())
}

/// Undoes `steps` for `id` in reverse order. Every undo runs; the first failure is returned.
pub(crate) async fn unwind(
    machine: &Arc<Machine>,
    steps: &[&dyn Step],
    id: &SandboxId,
) -> Result<(), AgentError> {
    let mut first = None;
    for step in steps.iter().rev() {
        if let Err(e) = step.undo(machine, id).await {
            tracing::warn!(sandbox = %id, step = step.name(), error = %error_chain(&e), "undo failed");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

pub(crate) fn micros_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// An error of a host operation on sandbox `id`.
pub(crate) fn host_err<E>(op: &'static str, id: &SandboxId) -> impl FnOnce(E) -> AgentError + use<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let id = id.clone();
    move |e| AgentError::Host {
        op,
        id,
        source: Box::new(e),
    }
}

/// Runs blocking work off the async workers (STYLE.md 8).
pub(crate) async fn blocking<T, F>(id: &SandboxId, f: F) -> Result<T, AgentError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, AgentError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(host_err("join a blocking task", id))?
}
