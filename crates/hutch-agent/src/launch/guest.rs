//! Step 7, guest: poll `/health` over the socket until it answers or the deadline passes.
//! The socket listens before the guest runs, so a request waits in its backlog until the
//! guest serves; a failed request means the guest is gone or refused us, and if its container
//! is no longer running the launch fails at once, with the tail of the guest's log.
//!
//! Undo: forget the guest client (its pooled connections close).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hutch_core::SandboxId;
use hutch_core::error::error_chain;
use hutch_guest_client::{Endpoint, GuestClient};
use hutch_host::AgentError;
use hutch_runtime::ContainerStatus;

use super::{Cx, Step, blocking};
use crate::machine::Machine;

/// How long a failed launch waits for the guest's last words to reach its log.
const LOG_SETTLE: Duration = Duration::from_millis(200);

pub(crate) struct Guest;

#[async_trait]
impl Step for Guest {
    fn name(&self) -> &'static str {
        "guest"
    }

    async fn apply(&self, machine: &Arc<Machine>, cx: &mut Cx) -> Result<(), AgentError> {
        let id = cx.id().clone();
        let rt = machine
            .runtime(cx.launch.runtime)
            .ok_or_else(|| AgentError::RuntimeUnavailable(cx.launch.runtime.to_string()))?;
        let client = GuestClient::new(Endpoint::Unix(cx.state.socket()))
            .with_token(cx.launch.guest_token.clone());
        let deadline = tokio::time::Instant::now() + machine.config.guest_ready_timeout;
        let mut pause = Duration::from_millis(1);
        let failure = loop {
            let failure = match tokio::time::timeout_at(deadline, client.health()).await {
                Ok(Ok(())) => {
                    // Its connection from the health check stays pooled for the first call.
                    cx.client = Some(client);
                    return Ok(());
                }
                Ok(Err(e)) => error_chain(&e),
                Err(_) => break "no answer to /health before the deadline".to_owned(),
            };
            let rt = rt.clone();
            let cid = id.to_string();
            let status =
                blocking(&id, move || Ok(rt.state(&cid).map(|info| info.status).ok())).await?;
            if status != Some(ContainerStatus::Running) {
                break format!("{failure}; container {status:?}");
            }
            if tokio::time::Instant::now() + pause >= deadline {
                break failure;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        // A guest that died has closed its output pipe: its last words are in the log once
        // the draining task ends.
        if let Some(task) = cx.log_task.as_mut() {
            let _ = tokio::time::timeout(LOG_SETTLE, task).await;
        }
        Err(AgentError::GuestNotReady {
            id: id.clone(),
            reason: format!("{failure}; guest log: {}", cx.state.log_tail(512)),
        })
    }

    async fn undo(&self, machine: &Arc<Machine>, id: &SandboxId) -> Result<(), AgentError> {
        machine.set_client(id, None);
        Ok(())
    }
}
