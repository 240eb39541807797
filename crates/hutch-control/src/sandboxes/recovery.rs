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
                        report.ended_sessions += self.end_orphaned_sessions(&id).await;
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
            ended_sessions = report.ended_sessions,
            failed = report.failed.len(),
            removed = report.removed.len(),
            leftovers = report.leftovers.len(),
            "recovery finished"
        );
        Ok(report)
    }

    /// Kills the processes of exec and terminal sessions an earlier server started in sandbox
    /// `id`: their clients went with that server, and a client that goes away ends its
    /// process. Processes started any other way (directly through the guest, as the E2B SDKs
    /// do, or in the background by a command) are left alone. Returns how many were killed;
    /// a guest that does not answer is logged and skipped (the sandbox stays usable).
    async fn end_orphaned_sessions(&self, id: &hutch_core::SandboxId) -> usize {
        let guest = match crate::exec::guest_of(self, id) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "cannot reach the guest to end orphaned sessions");
                return 0;
            }
        };
        let processes = match guest.list_processes().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %crate::error::chain(&e), "listing the guest's processes");
                return 0;
            }
        };
        let mut ended = 0;
        for p in processes {
            if p.tag
                .as_deref()
                .is_some_and(|t| self.is_orphaned_session(t))
            {
                tracing::info!(sandbox = %id, pid = p.pid, cmd = %p.cmd, "ending a session whose client is gone");
                crate::exec::kill(&guest, id, p.pid).await;
                ended += 1;
            }
        }
        ended
    }
}
