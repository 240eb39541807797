//! Start and recovery: bootstrap, then the store reconciled with what the host holds (see
//! the module docs of [`super`]), then the sweeper.

use std::collections::HashSet;

use hutch_core::SandboxState;
use hutch_host::HostSandboxState;
use tokio_util::sync::CancellationToken;

use super::{RecoveryReport, Startup};
use crate::{Control, ControlError, Result};

impl Control {
    /// Bootstrap, recovery, then the sweeper (until `shutdown`).
    pub async fn start(&self, shutdown: CancellationToken) -> Result<Startup> {
        let bootstrap = self.bootstrap().await?;
        let recovery = self.recover().await?;
        let sweeper = self.spawn_sweeper(shutdown);
        Ok(Startup {
            bootstrap,
            recovery,
            sweeper,
        })
    }

    /// Reconciles the store with the host after a start (module docs, "Recovery").
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let active = self.store().active_sandboxes().await?;
        let mut claimed = HashSet::new();
        for record in active {
            let id = record.id.clone();
            // Every row's host state is dealt with here; only the rest is a leftover.
            claimed.insert(id.clone());
            match record.state {
                SandboxState::Creating => {
                    self.destroy_logged(&id).await;
                    self.transition(
                        &record,
                        SandboxState::Failed,
                        Some("the server stopped while the sandbox was being created"),
                    )
                    .await?;
                    report.failed.push(id);
                }
                SandboxState::Stopping => {
                    self.remove_sandbox(&id).await?;
                    report.removed.push(id);
                }
                SandboxState::Running => match self.agent().inspect(&id).await {
                    Ok(HostSandboxState::Running) => {
                        report.reattached.push(id);
                    }
                    Ok(HostSandboxState::Dead { reason }) => {
                        tracing::warn!(sandbox = %id, reason, "sandbox died while the server was down");
                        self.destroy_logged(&id).await;
                        self.transition(
                            &record,
                            SandboxState::Failed,
                            Some("its processes stopped while the server was down"),
                        )
                        .await?;
                        report.failed.push(id);
                    }
                    Ok(HostSandboxState::Missing) => {
                        self.transition(
                            &record,
                            SandboxState::Failed,
                            Some("the host no longer holds it"),
                        )
                        .await?;
                        report.failed.push(id);
                    }
                    Err(e) => {
                        // Unknown: keep the row and its host state for the next start.
                        tracing::error!(sandbox = %id, error = %crate::error::chain(&e), "inspecting a sandbox");
                    }
                },
                // Sleeping, asleep, waking: owned by the sleep/wake work; keep them.
                _ => {}
            }
        }
        let held = self
            .agent()
            .held()
            .await
            .map_err(|e| ControlError::agent("listing what the host holds", e))?;
        for id in held {
            if !claimed.contains(&id) && self.destroy_logged(&id).await {
                report.leftovers.push(id);
            }
        }
        tracing::info!(
            reattached = report.reattached.len(),
            failed = report.failed.len(),
            removed = report.removed.len(),
            leftovers = report.leftovers.len(),
            "recovery finished"
        );
        Ok(report)
    }
}
