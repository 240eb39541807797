//! The expiry sweeper: every interval, the sandboxes whose `expires_at` passed are deleted
//! (an indexed query, a bounded batch at a time).

use hutch_core::Timestamp;
use hutch_store::{AuditOutcome, NewAuditEntry};
use tokio_util::sync::CancellationToken;

use crate::{Control, Result};

impl Control {
    /// Removes expired sandboxes every `sweep_interval` until `shutdown` is cancelled.
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.config.sweep_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = this.sweep_once().await {
                            tracing::error!(error = %e, "sweeping expired sandboxes");
                        }
                    }
                }
            }
        })
    }

    /// One pass of the sweeper; returns how many sandboxes it removed.
    pub async fn sweep_once(&self) -> Result<usize> {
        let expired = self
            .store()
            .expired_sandboxes(Timestamp::now(), 100)
            .await?;
        let mut removed = 0;
        for record in expired {
            let outcome = match self.remove_sandbox(&record.id).await {
                Ok(()) => {
                    removed += 1;
                    AuditOutcome::Ok
                }
                Err(e) => {
                    tracing::error!(sandbox = %record.id, error = %e, "removing an expired sandbox");
                    AuditOutcome::Failed
                }
            };
            let entry = NewAuditEntry {
                at: Timestamp::now(),
                workspace_id: Some(record.workspace_id.clone()),
                key_id: None,
                request_id: None,
                action: "sandbox.expire".to_owned(),
                object: Some(record.id.to_string()),
                outcome,
            };
            if let Err(e) = self.store().append_audit(entry).await {
                tracing::error!(error = %crate::error::chain(&e), "appending to the audit log failed");
            }
        }
        Ok(removed)
    }

    // --- recovery --------------------------------------------------------------------------
}
