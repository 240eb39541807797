//! Delete: detached under the sandbox's lock, `stopping`, the host's unwinding, `stopped`,
//! the row removed. Also how the sweeper and workspace deletion remove sandboxes.

use hutch_core::{Action, Error, SandboxId, SandboxState};

use super::Sandboxes;
use crate::{Caller, Control, ControlError, Result};

impl Control {
    /// "Delete" of the module docs, without authorisation (callers have done it).
    pub(crate) async fn remove_sandbox(&self, id: &SandboxId) -> Result<()> {
        let lock = self.inner.locks.of(id);
        let guard = lock.lock().await;
        let Some(mut record) = self.store().get_sandbox_unscoped(id).await? else {
            return Ok(());
        };
        if record.state != SandboxState::Stopped {
            if record.state != SandboxState::Stopping {
                if !record.state.can_become(SandboxState::Stopping) {
                    return Err(Error::Conflict(format!(
                        "the sandbox is {}; delete it once that finishes",
                        record.state
                    ))
                    .into());
                }
                record = self
                    .transition(&record, SandboxState::Stopping, None)
                    .await?;
            }
            if let Err(e) = self.agent().destroy(id).await {
                tracing::error!(sandbox = %id, error = %crate::error::chain(&e), "tearing a sandbox down");
                self.transition(
                    &record,
                    SandboxState::Failed,
                    Some("tearing it down failed; delete it again to retry"),
                )
                .await?;
                return Err(ControlError::agent("destroying a sandbox", e));
            }
            record = self
                .transition(&record, SandboxState::Stopped, None)
                .await?;
        }
        let deleted = self.store().delete_sandbox(&record.workspace_id, id).await;
        self.inner.rows.forget(id);
        deleted?;
        drop(guard);
        Ok(())
    }
}

impl Sandboxes<'_> {
    /// Deletes a sandbox: every trace on the host, then its row. Detached from the caller.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let ws = caller.principal.workspace_id.clone();
        let result = async {
            let record = self
                .control
                .lookup(caller, Action::SandboxDelete, id)
                .await?;
            let this = self.control.clone();
            tokio::spawn(async move { this.remove_sandbox(&record.id).await }).await?
        }
        .await;
        self.control
            .audited(
                caller,
                Some(&ws),
                Action::SandboxDelete,
                Some(id.to_owned()),
                result,
            )
            .await
    }
}
