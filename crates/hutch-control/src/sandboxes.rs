//! The sandbox lifecycle (DESIGN §9): create, get, list, delete, timeout, the expiry sweeper
//! and recovery at start.
//!
//! Create ([`Control::create_sandbox`]):
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
//! Delete ([`Control::delete_sandbox`], also used by the sweeper and workspace deletion):
//! detached the same way, under the sandbox's lock: CAS to `stopping`, `destroy` on the host,
//! CAS to `stopped`, remove the row. Every step is idempotent; a failed teardown leaves the
//! sandbox `failed` so a later delete retries it.
//!
//! Recovery ([`Control::recover`]) at start: every row that is not stopped or failed is
//! reconciled with the host — `running` ones the host still runs are kept (re-attached: the
//! guest client comes from the agent), dead or missing ones become `failed` with a reason,
//! half-done `creating` ones are torn down and failed, half-done `stopping` ones are finished.
//! Then whatever the host holds that no live row claims is destroyed.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use hutch_api_types::{CreateSandboxRequest, SandboxList, SandboxView, TimeoutRequest};
use hutch_core::key::ApiKeySecret;
use hutch_core::request::limits::{TIMEOUT_S_MAX, TIMEOUT_S_MIN};
use hutch_core::request::{valid_metadata_key, valid_metadata_value};
use hutch_core::{
    Action, Error, Role, SandboxId, SandboxSpec, SandboxState, Scope, TemplateState, Timestamp,
    authorize, check_capacity, check_quota,
};
use hutch_host::{AgentError, HostSandboxState, Launch};
use hutch_store::{
    AuditOutcome, NewAuditEntry, NewSandbox, PageRequest, SandboxFilter, SandboxRecord, Transition,
};
use tokio_util::sync::CancellationToken;

use crate::admin::Bootstrap;
use crate::views;
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

    /// Steps 1–4 of "Create" in the module docs.
    pub async fn create_sandbox(
        &self,
        caller: &Caller,
        req: CreateSandboxRequest,
    ) -> Result<SandboxView> {
        let ws = caller.principal.workspace_id.clone();
        let started = Instant::now();
        let result = self.create_inner(caller, req).await;
        let object = match &result {
            Ok(r) => Some(r.id.to_string()),
            Err((Some(id), _)) => Some(id.to_string()),
            Err((None, _)) => None,
        };
        let result = result.map_err(|(_, e)| e);
        let record = self
            .audited(caller, Some(&ws), Action::SandboxCreate, object, result)
            .await?;
        self.metrics().observe_create(started.elapsed());
        Ok(views::sandbox(&record))
    }

    async fn create_inner(
        &self,
        caller: &Caller,
        req: CreateSandboxRequest,
    ) -> std::result::Result<SandboxRecord, (Option<SandboxId>, ControlError)> {
        let ws = caller.principal.workspace_id.clone();
        let prepared = async {
            authorize(
                &caller.principal,
                Action::SandboxCreate,
                Scope::Workspace(&ws),
            )?;
            let spec = SandboxSpec::try_from(req).map_err(Error::from)?;
            let template = self
                .store()
                .find_template(&ws, &spec.template)
                .await?
                .ok_or(Error::NotFound { kind: "template" })?;
            if template.state != TemplateState::Ready {
                return Err(Error::Conflict(format!(
                    "template {} is {}, not ready",
                    spec.template, template.state
                ))
                .into());
            }
            let layers = self.inner.config.layers.layers(&template).await?;
            let runtimes = self.agent().runtimes();
            let runtime = match spec.runtime {
                Some(r) if runtimes.contains(&r) => r,
                Some(r) => {
                    return Err(Error::InvalidInput(format!(
                        "runtime: {r} is not available on this server"
                    ))
                    .into());
                }
                None => *runtimes.first().ok_or_else(|| {
                    Error::Unavailable("no runtime is available on this server".to_owned())
                })?,
            };
            Ok::<_, ControlError>((spec, template, layers, runtime))
        }
        .await;
        let (spec, template, layers, runtime) = prepared.map_err(|e| (None, e))?;

        let id = SandboxId::generate();
        let guard = self.inner.locks.of(&id).lock_owned().await;
        let record = async {
            let _admission = self.inner.admission.lock().await;
            let workspace = self
                .store()
                .get_workspace(&ws)
                .await?
                .ok_or(Error::NotFound { kind: "workspace" })?;
            let usage = self.store().workspace_usage(&ws).await?;
            check_quota(&workspace.quota, &usage, &spec.resources)?;
            let total = self.store().total_usage().await?;
            check_capacity(&self.agent().capacity(), &total, &spec.resources)?;
            let record = self
                .store()
                .insert_sandbox(NewSandbox {
                    id: id.clone(),
                    workspace_id: ws.clone(),
                    spec: spec.clone(),
                    template_id: Some(template.id.clone()),
                    created_by: Some(caller.principal.key_id.clone()),
                    now: Timestamp::now(),
                })
                .await?;
            Ok::<_, ControlError>(record)
        }
        .await
        .map_err(|e| (None, e))?;

        // Step 3: detached from the caller's future.
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _guard = guard;
            this.finish_create(record, layers, runtime).await
        });
        match task.await {
            Ok(r) => r.map_err(|e| (Some(id), e)),
            Err(e) => Err((Some(id), e.into())),
        }
    }

    /// Step 4 of "Create". Runs under the sandbox's lock.
    async fn finish_create(
        &self,
        record: SandboxRecord,
        layers: hutch_host::TemplateLayers,
        runtime: hutch_core::Runtime,
    ) -> Result<SandboxRecord> {
        let id = record.id.clone();
        let launch = Launch {
            id: id.clone(),
            workspace: record.workspace_id.clone(),
            template: layers,
            resources: record.spec.resources,
            runtime,
            env: record.spec.env.clone(),
            guest_token: ApiKeySecret::generate().expose().to_owned(),
        };
        // The launch makes the template's layers present itself (its first step).
        let launched = self.agent().launch(launch).await;
        match launched {
            Ok(_) => {
                let t = Transition {
                    expected: record.generation,
                    to: SandboxState::Running,
                    reason: None,
                    now: Timestamp::now(),
                };
                let moved = self.store().transition_sandbox(&id, t).await;
                self.inner.rows.forget(&id);
                match moved {
                    Ok(r) => Ok(r),
                    Err(e) => {
                        // The row went away or changed (its workspace was deleted): undo.
                        self.destroy_logged(&id).await;
                        Err(e.into())
                    }
                }
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %crate::error::chain(&e), "launch failed");
                let reason = launch_failure_reason(&e);
                self.destroy_logged(&id).await;
                let t = Transition {
                    expected: record.generation,
                    to: SandboxState::Failed,
                    reason: Some(reason.to_owned()),
                    now: Timestamp::now(),
                };
                let moved = self.store().transition_sandbox(&id, t).await;
                self.inner.rows.forget(&id);
                if let Err(te) = moved {
                    tracing::error!(sandbox = %id, error = %crate::error::chain(&te), "marking a failed launch");
                }
                Err(ControlError::agent("launching a sandbox", e))
            }
        }
    }

    /// `agent.destroy`, with a failure logged rather than returned (for undo paths).
    async fn destroy_logged(&self, id: &SandboxId) -> bool {
        match self.agent().destroy(id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(sandbox = %id, error = %crate::error::chain(&e), "destroying a sandbox");
                false
            }
        }
    }

    pub async fn get_sandbox(&self, caller: &Caller, id: &str) -> Result<SandboxView> {
        let r = self.lookup(caller, Action::SandboxRead, id).await?;
        Ok(views::sandbox(&r))
    }

    pub async fn list_sandboxes(&self, caller: &Caller, q: ListSandboxes) -> Result<SandboxList> {
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

    /// Deletes a sandbox: every trace on the host, then its row. Detached from the caller.
    pub async fn delete_sandbox(&self, caller: &Caller, id: &str) -> Result<()> {
        let ws = caller.principal.workspace_id.clone();
        let result = async {
            let record = self.lookup(caller, Action::SandboxDelete, id).await?;
            let this = self.clone();
            tokio::spawn(async move { this.remove_sandbox(&record.id).await }).await?
        }
        .await;
        self.audited(
            caller,
            Some(&ws),
            Action::SandboxDelete,
            Some(id.to_owned()),
            result,
        )
        .await
    }

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

    /// Sets a sandbox's remaining life.
    pub async fn set_timeout(
        &self,
        caller: &Caller,
        id: &str,
        req: TimeoutRequest,
    ) -> Result<SandboxView> {
        let ws = caller.principal.workspace_id.clone();
        let result = async {
            let record = self.lookup(caller, Action::SandboxLifecycle, id).await?;
            if !(TIMEOUT_S_MIN..=TIMEOUT_S_MAX).contains(&req.timeout_s) {
                return Err(Error::InvalidInput(format!(
                    "timeout_s: must be {TIMEOUT_S_MIN} to {TIMEOUT_S_MAX}"
                ))
                .into());
            }
            let lock = self.inner.locks.of(&record.id);
            let _guard = lock.lock().await;
            let now = Timestamp::now();
            let set = self
                .store()
                .set_sandbox_expiry(
                    &record.workspace_id,
                    &record.id,
                    Some(now.plus_secs(req.timeout_s)),
                    now,
                )
                .await;
            self.inner.rows.forget(&record.id);
            set?.ok_or_else(|| Error::Conflict(format!("the sandbox is {}", record.state)).into())
        }
        .await;
        let record = self
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

    // --- sweeper ---------------------------------------------------------------------------

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
