//! Create (module docs of [`super`], steps 1–4): admission, the row, the launch in a task
//! of its own, and the row's move to `running` or `failed`.

use std::time::Instant;

use hutch_api_types::{CreateSandboxRequest, SandboxView};
use hutch_core::key::ApiKeySecret;
use hutch_core::{
    Action, Error, SandboxId, SandboxSpec, SandboxState, Scope, TemplateState, Timestamp,
    authorize, check_capacity, check_quota,
};
use hutch_host::Launch;
use hutch_store::{NewSandbox, SandboxRecord, Transition};

use super::{Sandboxes, launch_failure_reason};
use crate::views;
use crate::{Caller, Control, ControlError, Result};

impl Control {
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
    pub(super) async fn destroy_logged(&self, id: &SandboxId) -> bool {
        match self.agent().destroy(id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(sandbox = %id, error = %crate::error::chain(&e), "destroying a sandbox");
                false
            }
        }
    }
}

impl Sandboxes<'_> {
    /// Steps 1–4 of "Create" in the module docs.
    pub async fn create(&self, caller: &Caller, req: CreateSandboxRequest) -> Result<SandboxView> {
        let ws = caller.principal.workspace_id.clone();
        let started = Instant::now();
        let result = self.control.create_inner(caller, req).await;
        let object = match &result {
            Ok(r) => Some(r.id.to_string()),
            Err((Some(id), _)) => Some(id.to_string()),
            Err((None, _)) => None,
        };
        let result = result.map_err(|(_, e)| e);
        let record = self
            .control
            .audited(caller, Some(&ws), Action::SandboxCreate, object, result)
            .await?;
        self.control.metrics().observe_create(started.elapsed());
        Ok(views::sandbox(&record))
    }
}
