//! The integration harness: a real API on 127.0.0.1:0 over a real `Control`, SQLite in a temp
//! dir, and `ProcessAgent` (the real `hutch-guest` per sandbox as a plain host process; no
//! isolation, no root needed). Every test builds its own server.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hutch_control::{Control, ControlConfig};
use hutch_core::template::TemplateRef;
use hutch_core::{Digest, TemplateId, TemplateState, Timestamp};
use hutch_host::testing::{ProcessAgent, guest_binary};
use hutch_store::prelude::*;
use hutch_store::{NewTemplate, SqliteStore, TemplateOwner, TemplateTransition};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The operator key every test server starts with (`HUTCH_ADMIN_KEY`).
pub const OPERATOR_KEY: &str = "hk_operatortestkey0123456789abcdefghjk";

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub control: Control,
    pub agent: Arc<ProcessAgent>,
    pub store: Arc<SqliteStore>,
    pub shutdown: CancellationToken,
    pub recovery: hutch_control::sandboxes::RecoveryReport,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Makes the built-in `busybox` template exist and be ready (the template builder's job in
/// `hutch serve`; here a row is enough, since `ProcessAgent` needs no layers).
async fn seed_templates(store: &SqliteStore) {
    let reference = TemplateRef::parse("busybox").expect("template name");
    if store
        .find_platform_template(&reference)
        .await
        .expect("find template")
        .is_some()
    {
        return;
    }
    let t = store
        .insert_template(NewTemplate {
            id: TemplateId::generate(),
            owner: TemplateOwner::Platform,
            reference,
            created_by: None,
            now: Timestamp::now(),
        })
        .await
        .expect("insert template");
    for (from, to, digest) in [
        (TemplateState::Pending, TemplateState::Building, None),
        (
            TemplateState::Building,
            TemplateState::Ready,
            Some(Digest::of(b"busybox layers")),
        ),
    ] {
        store
            .transition_template(
                &t.id,
                TemplateTransition {
                    from,
                    to,
                    digest,
                    reason: None,
                    now: Timestamp::now(),
                },
            )
            .await
            .expect("template transition");
    }
}

/// A test that ends without [`Server::stop`] (a failed assertion) still kills the guests it
/// left running; [`Server::stop_leaving_sandboxes`] leaves them for the next server.
impl Drop for Server {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.agent.kill_all();
        }
    }
}

impl Server {
    /// A server over `root` (its database and sandboxes live there), configured by `tweak`.
    pub async fn start_at(
        root: &Path,
        tweak: impl FnOnce(&mut ControlConfig),
        agent_tweak: impl FnOnce(ProcessAgent) -> ProcessAgent,
    ) -> Server {
        Server::start_serving(root, tweak, agent_tweak, hutch_api::ServeConfig::default()).await
    }

    /// [`Server::start_at`] with the connection bounds of `serve`.
    pub async fn start_serving(
        root: &Path,
        tweak: impl FnOnce(&mut ControlConfig),
        agent_tweak: impl FnOnce(ProcessAgent) -> ProcessAgent,
        serve: hutch_api::ServeConfig,
    ) -> Server {
        let bin = guest_binary().unwrap_or_else(|e| panic!("the guest binary is needed: {e}"));
        let store = Arc::new(
            SqliteStore::open(&root.join("hutch.db"))
                .await
                .expect("open SQLite"),
        );
        seed_templates(&store).await;
        let agent = Arc::new(agent_tweak(ProcessAgent::new(bin, root.join("sandboxes"))));
        let mut config = ControlConfig {
            admin_key: Some(OPERATOR_KEY.to_owned()),
            sweep_interval: Duration::from_millis(200),
            ..ControlConfig::default()
        };
        tweak(&mut config);
        let control = Control::new(store.clone(), agent.clone(), config);
        let shutdown = CancellationToken::new();
        let startup = control
            .start(shutdown.clone())
            .await
            .expect("control plane start");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = shutdown.clone();
        let server = tokio::spawn(hutch_api::serve(
            listener,
            hutch_api::router(control.clone()),
            serve,
            async move { stop.cancelled().await },
        ));
        let s = Server {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            control,
            agent,
            store,
            shutdown,
            recovery: startup.recovery,
            server: Some(server),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = s.http.get(format!("{}/healthz", s.base)).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "the API did not answer in 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s
    }

    pub async fn start(root: &Path) -> Server {
        Server::start_at(root, |_| {}, |a| a).await
    }

    /// Stops serving and the sweeper, and kills the guests left running (a test's end).
    pub async fn stop(self) {
        let agent = self.agent.clone();
        self.stop_leaving_sandboxes().await;
        agent.kill_all();
    }

    /// Stops serving and the sweeper; sandboxes keep running, as after a crash, for a server
    /// started next over the same root.
    pub async fn stop_leaving_sandboxes(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    pub fn req(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
    }

    /// Sends and returns (status, JSON body or Null).
    pub async fn call(&self, rb: RequestBuilder) -> (u16, Value) {
        let resp = rb.send().await.expect("request sent");
        json_of(resp).await
    }

    pub async fn create(&self, key: &str, body: Value) -> Value {
        let (status, v) = self
            .call(self.req(key, Method::POST, "/v1/sandboxes").json(&body))
            .await;
        assert_eq!(status, 201, "create: {v}");
        assert_eq!(v["state"], "running", "{v}");
        v
    }

    pub async fn exec_wait(&self, key: &str, id: &str, body: Value) -> Value {
        let mut body = body;
        body["wait"] = json!(true);
        let (status, v) = self
            .call(
                self.req(key, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                    .json(&body),
            )
            .await;
        assert_eq!(status, 200, "exec: {v}");
        v
    }

    /// A new workspace with an admin key and a member key: (workspace id, admin, member).
    pub async fn workspace(&self, name: &str) -> (String, String, String) {
        let (s, ws) = self
            .call(
                self.req(OPERATOR_KEY, Method::POST, "/v1/workspaces")
                    .json(&json!({"name": name})),
            )
            .await;
        assert_eq!(s, 201, "{ws}");
        let ws_id = ws["id"].as_str().expect("id").to_owned();
        let (s, admin) = self
            .call(
                self.req(OPERATOR_KEY, Method::POST, "/v1/keys")
                    .json(&json!({"name": "admin", "role": "admin", "workspace_id": ws_id})),
            )
            .await;
        assert_eq!(s, 201, "{admin}");
        let admin = admin["secret"].as_str().expect("secret").to_owned();
        let (s, member) = self
            .call(
                self.req(&admin, Method::POST, "/v1/keys")
                    .json(&json!({"name": "member", "role": "member"})),
            )
            .await;
        assert_eq!(s, 201, "{member}");
        let member = member["secret"].as_str().expect("secret").to_owned();
        (ws_id, admin, member)
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.agent
            .dir_of(&hutch_core::SandboxId::parse(id).expect("sandbox id"))
    }
}

pub async fn json_of(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// Polls `check` until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
