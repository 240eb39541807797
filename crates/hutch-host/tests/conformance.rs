//! The host conformance suite against the process-backed test agent (integration tier: no
//! root, the guest built from this workspace and run as a plain process). `hutch-agent`'s
//! system tests run the same suite against `LocalAgent`.

use hutch_core::request::Resources;
use hutch_host::TemplateLayers;
use hutch_host::testing::{ProcessAgent, guest_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_agent_conforms() {
    let guest = guest_binary().unwrap_or_else(|e| panic!("prerequisite: the guest binary: {e}"));
    let root = tempfile::tempdir().expect("tempdir");
    let agent = ProcessAgent::new(guest, root.path().to_path_buf());
    let template = TemplateLayers {
        name: "fixture".into(),
        layers: vec![],
        default_user: "root".into(),
        default_workdir: None,
    };
    let resources = Resources {
        cpu_millis: 1000,
        memory_mb: 128,
        disk_mb: 64,
        pids: 64,
    };
    hutch_host::conformance::run(&agent, &template, resources).await;
    agent.kill_all();
}
