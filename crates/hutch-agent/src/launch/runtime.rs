//! Step 6, runtime: `run --detach --preserve-fds 1` of the bundle. The listening socket
//! becomes the guest's fd 3 (`--listen-fd 3`, which the guest marks close-on-exec); the guest
//! also listens on `0.0.0.0:49983` in the sandbox's own network namespace for the proxy. Its
//! stdout and stderr are a pipe the agent drains into `guest.log` (see [`crate::guest_log`]),
//! its stdin a pipe at its end: the guest holds no host file. The agent then closes its copies
//! of the socket and of the pipe's write end.
//!
//! Undo: `delete --force` the container (which kills it first) in the runtime `meta.json`
//! names and in every runtime that holds a container of this id.

use std::os::fd::AsFd;
use std::sync::Arc;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_host::AgentError;
use hutch_runtime::{ContainerIo, OciRuntime, RuntimeError, Signal};

use super::{Cx, Step, blocking, host_err};
use crate::guest_log;
use crate::machine::Machine;

pub(crate) struct Runtime;

#[async_trait]
impl Step for Runtime {
    fn name(&self) -> &'static str {
        "runtime"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        let id = cx.id().clone();
        let rt = machine
            .runtime(cx.launch.runtime)
            .ok_or_else(|| AgentError::RuntimeUnavailable(cx.launch.runtime.to_string()))?;
        let bundle = cx.need("the bundle", &cx.bundle)?.clone();
        let listener = cx.listener.take().ok_or_else(|| {
            host_err("start the runtime", &id)(std::io::Error::other("no guest socket"))
        })?;
        let (read_end, write_end) =
            guest_log::pipe().map_err(host_err("create the guest's output pipe", &id))?;
        // Drained from before the runtime runs, so what the runtime itself prints on a
        // failure is kept too. (A spawn_blocking thread is inside the runtime's context.)
        let log_task = guest_log::drain(read_end, cx.state.log(), guest_log::ROTATE_AT)
            .map_err(host_err("collect the guest's output", &id))?;
        cx.log_task = Some(log_task);
        let started = {
            let rt = rt.clone();
            let id = id.clone();
            blocking(&id.clone(), move || {
                let io = ContainerIo::Pipe(Arc::new(write_end));
                let r = rt
                    .run_detached_with_fds(id.as_str(), &bundle, &io, &[listener.as_fd()])
                    .map_err(host_err("start the runtime", &id));
                // Now the guest's alone (or nobody's).
                drop(io);
                drop(listener);
                r
            })
            .await
        };
        if let Err(e) = started {
            // A runtime that failed halfway may have left a container: leave nothing.
            let _ = self.undo(machine, &id).await;
            return Err(e);
        }
        Ok(())
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        let m = machine.clone();
        let id2 = id.clone();
        blocking(id, move || {
            let named = m.state(&id2).read_meta().ok().map(|meta| meta.runtime);
            let mut first = None;
            for (kind, rt) in &m.runtimes {
                let holds = rt.state_root().join(id2.as_str()).exists();
                if (Some(*kind) == named || holds)
                    && let Err(e) = delete_container(rt.as_ref(), &id2)
                {
                    first.get_or_insert(e);
                }
            }
            first.map_or(Ok(()), Err)
        })
        .await
    }
}

/// `delete --force` (which kills a running container first); a missing one is done.
fn delete_container(rt: &dyn OciRuntime, id: &SandboxId) -> Result<(), AgentError> {
    match rt.delete(id.as_str(), true) {
        Ok(()) | Err(RuntimeError::NotFound { .. }) => Ok(()),
        Err(e) => {
            // A container stuck mid-creation can refuse a forced delete: kill, then retry.
            let _ = rt.kill(id.as_str(), Signal::KILL, true);
            match rt.delete(id.as_str(), true) {
                Ok(()) | Err(RuntimeError::NotFound { .. }) => Ok(()),
                Err(_) => Err(host_err("delete the container", id)(e)),
            }
        }
    }
}
