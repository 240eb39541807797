//! The sandbox lifecycle (DESIGN §9): create, get, list, delete, timeout, the expiry sweeper
//! and recovery at start.
//!
//! Create ([`Sandboxes::create`]):
//! 1. authorise, validate the request into a `SandboxSpec`, resolve the template (the
//!    workspace's own, else the built-in one; it must be `ready`) and the runtime;
//! 2. under the admission lock: check the workspace quota (429) and the host capacity (503),
//!    then insert the row in `creating` — so two creates cannot both take the last slot;
//! 3. take the sandbox's lock and hand the launch to a spawned task: the caller awaits it, but
//!    if the caller goes away (client disconnect) the task still finishes: `running`, or
//!    `failed` with a reason and nothing left on the host;
//! 4. the task: `launch` (makes the template's layers present, returns once the guest
//!    answers), then CAS `creating → running`. On any failure: `destroy`, then CAS `creating → failed`.
//!
//! Delete ([`Sandboxes::delete`], also used by the sweeper and workspace deletion):
//! detached the same way, under the sandbox's lock: CAS to `stopping`, `destroy` on the host,
//! CAS to `stopped`, remove the row. Every step is idempotent; a failed teardown leaves the
//! sandbox `failed` so a later delete retries it.
//!
//! Recovery ([`Control::recover`]) at start: every row that is not stopped or failed is
//! reconciled with the host — `running` ones the host still runs are kept (re-attached: the
//! guest client comes from the agent, and the processes of the previous server's exec and
//! terminal sessions, whose clients are gone, are killed), dead or missing ones become `failed` with a reason,
//! half-done `creating` ones are torn down and failed, half-done `stopping` ones are finished.
//! Then whatever the host holds that no live row claims is destroyed.

use std::collections::BTreeMap;

use hutch_api_types::{SandboxList, SandboxView, TimeoutRequest};
use hutch_core::request::limits::{TIMEOUT_S_MAX, TIMEOUT_S_MIN};
use hutch_core::request::{valid_metadata_key, valid_metadata_value};
use hutch_core::{Action, Error, Role, SandboxId, SandboxState, Scope, Timestamp, authorize};
use hutch_host::AgentError;
use hutch_store::{PageRequest, SandboxFilter, SandboxRecord, Transition};

use crate::admin::Bootstrap;
use crate::views;

mod create;
mod delete;
mod recovery;
mod sweeper;
use crate::{Caller, Control, ControlError, Result};

/// What [`Control::recover`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Running sandboxes the host still runs.
    pub reattached: Vec<SandboxId>,
    /// Sandboxes marked `failed` (dead, missing, or caught half-created).
    pub failed: Vec<SandboxId>,
    /// Half-deleted sandboxes whose deletion was finished.
    pub removed: Vec<SandboxId>,
    /// Host state no live row claims, destroyed.
    pub leftovers: Vec<SandboxId>,
    /// Processes of exec and terminal sessions of the previous server, killed.
    pub ended_sessions: usize,
}

/// What [`Control::start`] did.
#[derive(Debug)]
pub struct Startup {
    pub bootstrap: Bootstrap,
    pub recovery: RecoveryReport,
    /// The sweeper; it stops when the shutdown token is cancelled.
    pub sweeper: tokio::task::JoinHandle<()>,
}

/// Filters and page of `GET /v1/sandboxes`, as parsed from the query string.
#[derive(Debug, Clone, Default)]
pub struct ListSandboxes {
    pub state: Option<String>,
    /// `key=value` pairs, all of which must match.
    pub metadata: Vec<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The `failure_reason` a client sees for a failed launch (the agent's own message, which
/// may name host paths, goes to the log).
fn launch_failure_reason(e: &AgentError) -> &'static str {
    match e {
        AgentError::Template { .. } => "the template is not available on the host",
        AgentError::RuntimeUnavailable(_) => "the runtime is not available on the host",
        AgentError::Capacity(_) => "the host had no room for the sandbox",
        AgentError::Posture { .. } => "the sandbox failed its security posture check",
        AgentError::GuestNotReady { .. } => "the sandbox's guest did not become ready",
        AgentError::NotFound(_) | AgentError::Host { .. } | AgentError::HostWide { .. } => {
            "the host could not start the sandbox"
        }
    }
}

fn not_found() -> ControlError {
    Error::NotFound { kind: "sandbox" }.into()
}

/// The sandbox lifecycle, borrowed from a [`Control`]: `control.sandboxes()`.
pub struct Sandboxes<'a> {
    pub(crate) control: &'a Control,
}

impl Control {
    /// The sandbox `id` if the caller may perform `action` on it; another workspace's sandbox
    /// is `not_found`, exactly like a missing one (R11). The operator sees every workspace.
    pub(crate) async fn lookup(
        &self,
        caller: &Caller,
        action: Action,
        id: &str,
    ) -> Result<SandboxRecord> {
        let own = &caller.principal.workspace_id;
        authorize(&caller.principal, action, Scope::Workspace(own))?;
        let id = SandboxId::parse(id).map_err(|_| not_found())?;
        let operator = caller.principal.role == Role::Operator;
        // Commands and files on a running sandbox use the row cache (`Inner::rows`).
        let cached = if action == Action::SandboxUse {
            Some(self.inner.rows.get(&id))
        } else {
            None
        };
        let record = match cached {
            Some(Ok(row)) => {
                if !operator && row.workspace_id != *own {
                    return Err(not_found());
                }
                row
            }
            _ => {
                let found = if operator {
                    self.store().get_sandbox_unscoped(&id).await?
                } else {
                    self.store().get_sandbox(own, &id).await?
                };
                let record = found.ok_or_else(not_found)?;
                if let Some(Err(generation)) = cached
                    && record.state == SandboxState::Running
                {
                    self.inner
                        .rows
                        .put(record.id.clone(), record.clone(), generation);
                }
                record
            }
        };
        authorize(
            &caller.principal,
            action,
            Scope::Workspace(&record.workspace_id),
        )?;
        Ok(record)
    }

    async fn transition(
        &self,
        from: &SandboxRecord,
        to: SandboxState,
        reason: Option<&str>,
    ) -> Result<SandboxRecord> {
        let moved = self
            .store()
            .transition_sandbox(
                &from.id,
                Transition {
                    expected: from.generation,
                    to,
                    reason: reason.map(str::to_owned),
                    now: Timestamp::now(),
                },
            )
            .await;
        self.inner.rows.forget(&from.id);
        Ok(moved?)
    }

    // --- sweeper ---------------------------------------------------------------------------

    /// Prometheus text, with sandboxes counted by state now. Operator only.
    pub async fn metrics_text(&self, caller: &Caller) -> Result<String> {
        if caller.principal.role != Role::Operator {
            return Err(Error::Forbidden {
                action: "metrics.read",
            }
            .into());
        }
        let active = self.store().active_sandboxes().await?;
        for state in SandboxState::ALL {
            if state.is_terminal() {
                continue;
            }
            let n = active.iter().filter(|r| r.state == state).count();
            self.metrics()
                .set_sandboxes(state.as_str(), i64::try_from(n).unwrap_or(i64::MAX));
        }
        Ok(self.metrics().encode())
    }
}

impl Sandboxes<'_> {
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<SandboxView> {
        let r = self.control.lookup(caller, Action::SandboxRead, id).await?;
        Ok(views::sandbox(&r))
    }

    pub async fn list(&self, caller: &Caller, q: ListSandboxes) -> Result<SandboxList> {
        let ws = &caller.principal.workspace_id;
        authorize(&caller.principal, Action::SandboxRead, Scope::Workspace(ws))?;
        let state = q
            .state
            .as_deref()
            .map(|s| {
                s.parse::<SandboxState>()
                    .map_err(|_| Error::InvalidInput(format!("state: unknown state {s:?}")))
            })
            .transpose()?;
        let mut metadata = BTreeMap::new();
        for pair in &q.metadata {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| Error::InvalidInput("metadata: expected key=value".to_owned()))?;
            if !valid_metadata_key(k) || !valid_metadata_value(v) {
                return Err(
                    Error::InvalidInput("metadata: malformed key or value".to_owned()).into(),
                );
            }
            metadata.insert(k.to_owned(), v.to_owned());
        }
        let limit = q.limit.unwrap_or(0);
        if limit > hutch_store::MAX_PAGE {
            return Err(
                Error::InvalidInput(format!("limit: at most {}", hutch_store::MAX_PAGE)).into(),
            );
        }
        let page = self
            .control
            .store()
            .list_sandboxes(
                ws,
                &SandboxFilter { state, metadata },
                &PageRequest {
                    limit,
                    cursor: q.cursor,
                },
            )
            .await?;
        Ok(SandboxList {
            sandboxes: page.items.iter().map(views::sandbox).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Sets a sandbox's remaining life.
    pub async fn set_timeout(
        &self,
        caller: &Caller,
        id: &str,
        req: TimeoutRequest,
    ) -> Result<SandboxView> {
        let ws = caller.principal.workspace_id.clone();
        let result = async {
            let record = self
                .control
                .lookup(caller, Action::SandboxLifecycle, id)
                .await?;
            if !(TIMEOUT_S_MIN..=TIMEOUT_S_MAX).contains(&req.timeout_s) {
                return Err(Error::InvalidInput(format!(
                    "timeout_s: must be {TIMEOUT_S_MIN} to {TIMEOUT_S_MAX}"
                ))
                .into());
            }
            let lock = self.control.inner.locks.of(&record.id);
            let _guard = lock.lock().await;
            let now = Timestamp::now();
            let set = self
                .control
                .store()
                .set_sandbox_expiry(
                    &record.workspace_id,
                    &record.id,
                    Some(now.plus_secs(req.timeout_s)),
                    now,
                )
                .await;
            self.control.inner.rows.forget(&record.id);
            set?.ok_or_else(|| Error::Conflict(format!("the sandbox is {}", record.state)).into())
        }
        .await;
        let record = self
            .control
            .audited(
                caller,
                Some(&ws),
                Action::SandboxLifecycle,
                Some(id.to_owned()),
                result,
            )
            .await?;
        Ok(views::sandbox(&record))
    }
}
