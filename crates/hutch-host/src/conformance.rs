//! The conformance suite of [`HostAgent`]: one plain async function that every implementation
//! passes (STYLE.md 2). The integration tier runs it against [`crate::testing::ProcessAgent`],
//! the system tier against `hutch-agent`'s `LocalAgent`; a remote agent will run it too.
//!
//! What it checks, in order, each step on sandboxes of its own (fresh ids):
//!
//! 1. `runtimes` is not empty, `capacity` has room for something; `ensure_template` of the
//!    given template succeeds, twice.
//! 2. An id the host never saw: `inspect` says `Missing`, `guest` is `NotFound`, `destroy`
//!    succeeds and changes nothing.
//! 3. `launch` returns the sandbox's id and runtime; then `inspect` says `Running`, `held`
//!    lists it, and `guest` gives a client whose `/health` answers.
//! 4. A second `launch` of the same id fails and leaves the first sandbox running.
//! 5. A `launch` with a runtime the host does not offer (if there is one) fails with
//!    `RuntimeUnavailable` and leaves nothing held.
//! 6. `destroy` removes it: `inspect` says `Missing`, `held` no longer lists it, `guest` is
//!    `NotFound`; a second `destroy` succeeds.
//!
//! Each step returns its violation as a message instead of panicking, so the suite destroys
//! what it launched before it panics naming the step: it leaves nothing behind either way.

use std::collections::BTreeMap;

use hutch_core::request::{Resources, Runtime};
use hutch_core::{SandboxId, WorkspaceId};

use crate::{AgentError, HostAgent, HostSandboxState, Launch, TemplateLayers};

/// Runs the suite against `agent`, launching sandboxes of `template` (which the agent must be
/// able to make present) with `resources`. Panics on the first violation.
pub async fn run(agent: &dyn HostAgent, template: &TemplateLayers, resources: Resources) {
    let mut launched = Vec::new();
    let outcome = steps(agent, template, resources, &mut launched).await;
    for id in launched {
        let _ = agent.destroy(&id).await;
    }
    if let Err(message) = outcome {
        panic!("host conformance: {message}");
    }
}

/// The steps, returning the first violation as a message.
async fn steps(
    agent: &dyn HostAgent,
    template: &TemplateLayers,
    resources: Resources,
    launched: &mut Vec<SandboxId>,
) -> Result<(), String> {
    // 1.
    let runtimes = agent.runtimes();
    let Some(&runtime) = runtimes.first() else {
        return Err("step 1: runtimes() is empty".into());
    };
    let room = agent.capacity();
    if room.max_sandboxes == 0 || room.cpu_millis == 0 || room.memory_mb == 0 || room.disk_mb == 0 {
        return Err(format!("step 1: capacity() has no room: {room:?}"));
    }
    for _ in 0..2 {
        agent
            .ensure_template(template)
            .await
            .map_err(|e| format!("step 1: ensure_template({}): {e}", template.name))?;
    }

    // 2.
    let stranger = SandboxId::generate();
    expect_state(agent, &stranger, HostSandboxState::Missing, "step 2").await?;
    match agent.guest(&stranger) {
        Err(AgentError::NotFound(id)) if id == stranger => {}
        Err(e) => return Err(format!("step 2: guest of an unknown id: {e}")),
        Ok(_) => return Err("step 2: guest of an unknown id gave a client".into()),
    }
    agent
        .destroy(&stranger)
        .await
        .map_err(|e| format!("step 2: destroy of an unknown id: {e}"))?;
    expect_state(agent, &stranger, HostSandboxState::Missing, "step 2").await?;

    // 3.
    let launch = launch_of(template, resources, runtime);
    let id = launch.id.clone();
    launched.push(id.clone());
    let done = agent
        .launch(launch.clone())
        .await
        .map_err(|e| format!("step 3: launch on {runtime}: {e}"))?;
    if done.id != id || done.runtime != runtime {
        return Err(format!(
            "step 3: launch of {id} on {runtime} answered {done:?}"
        ));
    }
    expect_running(agent, &id, "step 3").await?;

    // 4.
    match agent.launch(launch).await {
        Ok(again) => {
            return Err(format!(
                "step 4: a second launch of {id} succeeded: {again:?}"
            ));
        }
        Err(_) => expect_running(agent, &id, "step 4 (after the refused second launch)").await?,
    }

    // 5.
    if let Some(missing) = [Runtime::Crun, Runtime::Runc, Runtime::Runsc]
        .into_iter()
        .find(|r| !runtimes.contains(r))
    {
        let refused = launch_of(template, resources, missing);
        let refused_id = refused.id.clone();
        launched.push(refused_id.clone());
        match agent.launch(refused).await {
            Err(AgentError::RuntimeUnavailable(_)) => {}
            Err(e) => return Err(format!("step 5: launch on {missing}: {e}")),
            Ok(l) => return Err(format!("step 5: launch on {missing} succeeded: {l:?}")),
        }
        expect_state(agent, &refused_id, HostSandboxState::Missing, "step 5").await?;
    }

    // 6.
    for attempt in ["first", "second"] {
        agent
            .destroy(&id)
            .await
            .map_err(|e| format!("step 6: {attempt} destroy: {e}"))?;
        expect_state(agent, &id, HostSandboxState::Missing, "step 6").await?;
    }
    if let Ok(_client) = agent.guest(&id) {
        return Err("step 6: guest of a destroyed sandbox gave a client".into());
    }
    Ok(())
}

fn launch_of(template: &TemplateLayers, resources: Resources, runtime: Runtime) -> Launch {
    Launch {
        id: SandboxId::generate(),
        workspace: WorkspaceId::generate(),
        template: template.clone(),
        resources,
        runtime,
        env: BTreeMap::from([("FROM_CONFORMANCE".to_owned(), "yes".to_owned())]),
        guest_token: format!("tok{}", SandboxId::generate()),
    }
}

/// `inspect` says `want`, and `held` lists the id exactly when it is not `Missing`.
async fn expect_state(
    agent: &dyn HostAgent,
    id: &SandboxId,
    want: HostSandboxState,
    step: &str,
) -> Result<(), String> {
    let got = agent
        .inspect(id)
        .await
        .map_err(|e| format!("{step}: inspect {id}: {e}"))?;
    if got != want {
        return Err(format!(
            "{step}: inspect {id} is {got:?}, expected {want:?}"
        ));
    }
    let held = agent
        .held()
        .await
        .map_err(|e| format!("{step}: held: {e}"))?;
    let listed = held.contains(id);
    if listed != (want != HostSandboxState::Missing) {
        return Err(format!(
            "{step}: held() lists {id}: {listed}, state {got:?}"
        ));
    }
    Ok(())
}

/// Running, held, and its guest answers.
async fn expect_running(agent: &dyn HostAgent, id: &SandboxId, step: &str) -> Result<(), String> {
    expect_state(agent, id, HostSandboxState::Running, step).await?;
    let client = agent
        .guest(id)
        .map_err(|e| format!("{step}: guest of {id}: {e}"))?;
    client
        .health()
        .await
        .map_err(|e| format!("{step}: the guest of {id} does not answer /health: {e}"))
}
