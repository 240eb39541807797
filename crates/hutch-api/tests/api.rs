//! Integration tier: the API end to end over `ProcessAgent` (see tests/common). No root.

mod common;

use std::time::Duration;

use common::{OPERATOR_KEY, Server, eventually, json_of};
use futures::{SinkExt, StreamExt};
use hutch_core::SandboxId;
use hutch_host::testing::ProcessAgent;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

fn guest_pid(s: &Server, id: &str) -> u32 {
    s.agent
        .pid_of(&SandboxId::parse(id).expect("id"))
        .expect("a guest pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_exec_files_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let k = OPERATOR_KEY;
    let sb = s
        .create(k, json!({"template": "busybox", "memory_mb": 256, "metadata": {"team": "ml"}, "env": {"FROM_CREATE": "yes"}}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    for field in [
        "id",
        "state",
        "template",
        "cpu",
        "memory_mb",
        "disk_mb",
        "created_at",
        "expires_at",
    ] {
        assert!(!sb[field].is_null(), "field {field} missing: {sb}");
    }
    assert_eq!(sb["template"], "busybox:latest");
    assert_eq!(sb["memory_mb"], 256);

    // get and list (with filters, the shape the CLI reads).
    let (st, got) = s
        .call(s.req(k, Method::GET, &format!("/v1/sandboxes/{id}")))
        .await;
    assert_eq!((st, got["id"].as_str()), (200, Some(id.as_str())));
    let (st, list) = s
        .call(s.req(
            k,
            Method::GET,
            "/v1/sandboxes?state=running&metadata=team%3Dml&limit=10",
        ))
        .await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["sandboxes"][0]["id"].as_str(), Some(id.as_str()));
    assert!(list["next_cursor"].is_null());
    let (_, none) = s
        .call(s.req(k, Method::GET, "/v1/sandboxes?metadata=team%3Dother"))
        .await;
    assert_eq!(none["sandboxes"].as_array().map(Vec::len), Some(0));

    // exec with wait: output, exit code, env (sandbox's and request's), cwd, stdin.
    let r = s
        .exec_wait(
            k,
            &id,
            json!({"cmd": ["sh", "-c", "echo hi; echo err >&2; exit 3"]}),
        )
        .await;
    assert_eq!(
        (
            r["stdout"].as_str(),
            r["stderr"].as_str(),
            r["exit_code"].as_i64()
        ),
        (Some("hi\n"), Some("err\n"), Some(3))
    );
    assert_eq!(
        (
            r["oom"].as_bool(),
            r["timed_out"].as_bool(),
            r["truncated"].as_bool()
        ),
        (Some(false), Some(false), Some(false))
    );
    let r = s
        .exec_wait(k, &id, json!({"cmd": ["sh", "-c", "echo $FROM_CREATE $X $HUTCH_SANDBOX_ID; pwd; cat"], "env": {"X": "1"}, "cwd": "/tmp", "stdin": "from-stdin"}))
        .await;
    assert_eq!(
        r["stdout"].as_str(),
        Some(format!("yes 1 {id}\n/tmp\nfrom-stdin").as_str()),
        "{r}"
    );
    // A timeout kills the process and says so.
    let t0 = std::time::Instant::now();
    let r = s
        .exec_wait(k, &id, json!({"cmd": ["sleep", "30"], "timeout_s": 1}))
        .await;
    assert_eq!(
        (r["timed_out"].as_bool(), r["signal"].as_i64()),
        (Some(true), Some(9)),
        "{r}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    // The output cap: 3 MiB printed, 1 MiB kept, flagged.
    let r = s
        .exec_wait(
            k,
            &id,
            json!({"cmd": ["sh", "-c", "head -c 3145728 /dev/zero | tr '\\0' a"]}),
        )
        .await;
    assert_eq!(
        (r["stdout"].as_str().map(str::len), r["truncated"].as_bool()),
        (Some(1 << 20), Some(true))
    );

    // Streamed exec: NDJSON start, output, exit; non-UTF-8 bytes as data_b64.
    let resp = s
        .req(k, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"cmd": ["sh", "-c", "echo one; printf '\\377'; exit 7"]}))
        .send()
        .await
        .expect("exec");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.expect("body");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    assert_eq!(
        events.first().map(|e| e["type"].clone()),
        Some(json!("start")),
        "{text}"
    );
    assert!(events[0]["pid"].as_u64().is_some());
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e["type"] == "stdout") {
        match (e["data"].as_str(), e["data_b64"].as_str()) {
            (Some(d), None) => out.extend_from_slice(d.as_bytes()),
            (None, Some(b)) => out.extend(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b)
                    .expect("base64"),
            ),
            _ => panic!("an output event carries data or data_b64: {e}"),
        }
    }
    assert_eq!(out, b"one\n\xff", "{text}");
    assert!(events.iter().any(|e| e["data_b64"] == "/w=="), "{text}");
    assert_eq!(
        events
            .last()
            .map(|e| (e["type"].clone(), e["exit_code"].clone())),
        Some((json!("exit"), json!(7)))
    );

    // Files: upload, download, list, stat, mkdir, move, remove.
    let home = s.sandbox_dir(&id).join("home");
    let file = format!("{}/hello.txt", home.display());
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let resp = s
        .req(
            k,
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path={file}"),
        )
        .body(payload.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 204, "{:?}", resp.text().await);
    let resp = s
        .req(
            k,
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path={file}"),
        )
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.expect("bytes").as_ref(),
        payload.as_slice()
    );
    let (st, list) = s
        .call(s.req(
            k,
            Method::GET,
            &format!("/v1/sandboxes/{id}/files/list?path={}", home.display()),
        ))
        .await;
    assert_eq!(st, 200, "{list}");
    let entry = list["entries"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "hello.txt"))
        .cloned()
        .expect("listed");
    assert_eq!(
        (entry["type"].as_str(), entry["size"].as_i64()),
        (Some("file"), Some(300_000))
    );
    assert!(entry["mode"].as_u64().is_some() && entry["path"].as_str().is_some());
    let (st, stat) = s
        .call(s.req(
            k,
            Method::GET,
            &format!("/v1/sandboxes/{id}/files/stat?path=hello.txt"),
        ))
        .await;
    assert_eq!(
        (st, stat["size"].as_i64()),
        (200, Some(300_000)),
        "relative paths are the user's home: {stat}"
    );
    let sub = format!("{}/sub", home.display());
    let (st, made) = s
        .call(
            s.req(k, Method::POST, &format!("/v1/sandboxes/{id}/files/mkdir"))
                .json(&json!({"path": sub})),
        )
        .await;
    assert_eq!((st, made["type"].as_str()), (201, Some("dir")), "{made}");
    let moved = format!("{sub}/moved.txt");
    let (st, mv) = s
        .call(
            s.req(k, Method::POST, &format!("/v1/sandboxes/{id}/files/move"))
                .json(&json!({"source": file, "destination": moved})),
        )
        .await;
    assert_eq!(st, 200, "{mv}");
    let (st, _) = s
        .call(s.req(
            k,
            Method::GET,
            &format!("/v1/sandboxes/{id}/files/stat?path={file}"),
        ))
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .call(s.req(
            k,
            Method::DELETE,
            &format!("/v1/sandboxes/{id}/files?path={moved}"),
        ))
        .await;
    assert_eq!(st, 204);
    let (st, body) = s
        .call(s.req(
            k,
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path={moved}"),
        ))
        .await;
    assert_eq!((st, body["code"].as_str()), (404, Some("not_found")));

    // Templates.
    let (st, t) = s.call(s.req(k, Method::GET, "/v1/templates")).await;
    assert_eq!(st, 200);
    let tpl = &t["templates"][0];
    assert_eq!(
        (
            tpl["name"].as_str(),
            tpl["tag"].as_str(),
            tpl["state"].as_str(),
            tpl["owner"].as_str()
        ),
        (
            Some("busybox"),
            Some("latest"),
            Some("ready"),
            Some("platform")
        )
    );

    // Delete: 204, then gone everywhere (row, guest process, host directory).
    let pid = guest_pid(&s, &id);
    let (st, _) = s
        .call(s.req(k, Method::DELETE, &format!("/v1/sandboxes/{id}")))
        .await;
    assert_eq!(st, 204);
    let (st, _) = s
        .call(s.req(k, Method::GET, &format!("/v1/sandboxes/{id}")))
        .await;
    assert_eq!(st, 404);
    assert!(!ProcessAgent::is_alive(pid), "guest still running");
    assert!(!s.sandbox_dir(&id).exists(), "host directory left behind");
    let (st, _) = s
        .call(s.req(k, Method::DELETE, &format!("/v1/sandboxes/{id}")))
        .await;
    assert_eq!(st, 404, "a second delete finds nothing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let k = OPERATOR_KEY;
    let post = |body: Value| s.req(k, Method::POST, "/v1/sandboxes").json(&body);

    // Unknown field: 400 naming it (not axum's 422).
    let (st, e) = s
        .call(post(json!({"template": "busybox", "cpus": 2})))
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (400, Some("invalid_input")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap_or_default().contains("cpus"),
        "{e}"
    );
    // Wrong type, out of range, malformed template: 400.
    for body in [
        json!({"template": "busybox", "memory_mb": "x"}),
        json!({"template": "busybox", "memory_mb": 1}),
        json!({"template": "Bad"}),
    ] {
        let (st, e) = s.call(post(body.clone())).await;
        assert_eq!(st, 400, "{body}: {e}");
    }
    // Unknown template: 404.
    let (st, e) = s.call(post(json!({"template": "nosuch"}))).await;
    assert_eq!(
        (st, e["message"].as_str()),
        (404, Some("template not found"))
    );
    // Oversized body: 413 before parsing.
    let big = format!(
        "{{\"template\": \"busybox\", \"metadata\": {{\"k\": \"{}\"}}}}",
        "x".repeat(2 << 20)
    );
    let (st, e) = s
        .call(
            s.req(k, Method::POST, "/v1/sandboxes")
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (413, Some("payload_too_large")),
        "{e}"
    );
    // Missing, malformed and unknown keys: 401; X-API-Key works like Bearer.
    let (st, e) = s.call(s.http.get(format!("{}/v1/sandboxes", s.base))).await;
    assert_eq!((st, e["code"].as_str()), (401, Some("unauthenticated")));
    let (st, _) = s
        .call(
            s.http
                .get(format!("{}/v1/sandboxes", s.base))
                .bearer_auth("nope"),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .call(
            s.http
                .get(format!("{}/v1/sandboxes", s.base))
                .bearer_auth("hk_unknownkey0123456789abcdefghjkmn"),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .call(
            s.http
                .get(format!("{}/v1/sandboxes", s.base))
                .header("x-api-key", k),
        )
        .await;
    assert_eq!(st, 200);
    // Unknown query parameter: 400; unknown route: 404 JSON; bad ids are plain 404s.
    let (st, _) = s
        .call(s.req(k, Method::GET, "/v1/sandboxes?colour=red"))
        .await;
    assert_eq!(st, 400);
    let (st, e) = s.call(s.req(k, Method::GET, "/v1/nothing")).await;
    assert_eq!((st, e["code"].as_str()), (404, Some("not_found")));
    let (st, _) = s
        .call(s.req(k, Method::GET, "/v1/sandboxes/not-an-id"))
        .await;
    assert_eq!(st, 404);
    // Every reply carries a request id.
    let resp = s
        .req(k, Method::GET, "/v1/sandboxes")
        .send()
        .await
        .expect("send");
    assert!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("rq"))
    );

    // exec: cwd under /proc is refused (400), its positive twin runs; a stopped process's
    // state conflicts are 409; exec on a deleted sandbox is 404.
    let id = s.create(k, json!({"template": "busybox"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, e) = s
        .call(
            s.req(k, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"cmd": ["pwd"], "cwd": "/proc/self/fd/3", "wait": true})),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    assert!(
        e["message"].as_str().unwrap_or_default().starts_with("cwd"),
        "{e}"
    );
    let r = s
        .exec_wait(k, &id, json!({"cmd": ["pwd"], "cwd": "/"}))
        .await;
    assert_eq!(r["stdout"], "/\n");
    let (st, e) = s
        .call(
            s.req(k, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"cmd": ["true"], "shell": true})),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = s
        .call(
            s.req(k, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"cmd": ["/no/such/program"], "wait": true})),
        )
        .await;
    assert_eq!(st, 400, "starting a missing program: {e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no such file"),
        "{e}"
    );
    let (st, _) = s
        .call(
            s.req(k, Method::POST, &format!("/v1/sandboxes/{id}/timeout"))
                .json(&json!({"timeout_s": 0})),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .call(s.req(k, Method::DELETE, &format!("/v1/sandboxes/{id}")))
        .await;
    assert_eq!(st, 204);
    let (st, _) = s
        .call(
            s.req(k, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"cmd": ["true"]})),
        )
        .await;
    assert_eq!(st, 404);

    // Metrics: the operator reads them; counters moved.
    let (st, _) = s.call(s.http.get(format!("{}/metrics", s.base))).await;
    assert_eq!(st, 401);
    let resp = s
        .req(k, Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");
    for needle in [
        "hutch_sandbox_create_seconds",
        "hutch_exec_seconds",
        "hutch_api_errors_total{code=\"invalid_input\"}",
        "hutch_sandboxes",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_keys_workspaces_and_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let (ws, admin, member) = s.workspace("team-a").await;

    // A member may not create keys or workspaces, nor read the audit log or metrics...
    let (st, e) = s
        .call(
            s.req(&member, Method::POST, "/v1/keys")
                .json(&json!({"name": "x", "role": "member"})),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (403, Some("forbidden")), "{e}");
    let (st, _) = s
        .call(
            s.req(&member, Method::POST, "/v1/workspaces")
                .json(&json!({"name": "mine"})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s.call(s.req(&member, Method::GET, "/v1/audit")).await;
    assert_eq!(st, 403);
    let (st, _) = s.call(s.req(&member, Method::GET, "/metrics")).await;
    assert_eq!(st, 403);
    // ...its admin may create and revoke keys and read the audit log, but not create
    // workspaces or keys elsewhere; the operator may create workspaces.
    let (st, created) = s
        .call(
            s.req(&admin, Method::POST, "/v1/keys")
                .json(&json!({"name": "ci", "role": "member"})),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|k| k.starts_with("hk_"))
    );
    let (st, _) = s
        .call(
            s.req(&admin, Method::POST, "/v1/keys")
                .json(&json!({"name": "op", "role": "operator"})),
        )
        .await;
    assert_eq!(st, 400, "no key may be minted above admin");
    let (st, _) = s
        .call(
            s.req(&admin, Method::POST, "/v1/workspaces")
                .json(&json!({"name": "other"})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, other) = s
        .call(
            s.req(OPERATOR_KEY, Method::POST, "/v1/workspaces")
                .json(&json!({"name": "other"})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = s
        .call(
            s.req(&admin, Method::POST, "/v1/keys")
                .json(&json!({"name": "x", "role": "member", "workspace_id": other["id"]})),
        )
        .await;
    assert_eq!(st, 404, "another workspace is invisible");
    let (st, _) = s
        .call(
            s.req(OPERATOR_KEY, Method::POST, "/v1/workspaces")
                .json(&json!({"name": "other"})),
        )
        .await;
    assert_eq!(st, 409, "names are unique");
    let (st, keys) = s.call(s.req(&admin, Method::GET, "/v1/keys")).await;
    assert_eq!(st, 200);
    let listed = keys["keys"].as_array().expect("keys");
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .all(|k| k.get("secret").is_none() && k["prefix"].as_str().is_some())
    );
    let ci = created["id"].as_str().expect("id");
    let list_with_created = || {
        s.call(s.req(
            created["secret"].as_str().expect("secret"),
            Method::GET,
            "/v1/sandboxes",
        ))
    };
    // Used once first, so that the server has it among its recently accepted keys.
    assert_eq!(list_with_created().await.0, 200);
    let (st, _) = s
        .call(s.req(&admin, Method::DELETE, &format!("/v1/keys/{ci}")))
        .await;
    assert_eq!(st, 204);
    assert_eq!(
        list_with_created().await.0,
        401,
        "a revoked key no longer authenticates"
    );

    // A member creates a sandbox; the audit log records who did what, with outcomes.
    let sb = s.create(&member, json!({"template": "busybox"})).await;
    let id = sb["id"].as_str().expect("id");
    let (st, log) = s.call(s.req(&admin, Method::GET, "/v1/audit")).await;
    assert_eq!(st, 200, "{log}");
    let entries = log["entries"].as_array().expect("entries");
    let has = |action: &str, outcome: &str, object: Option<&str>| {
        entries.iter().any(|e| {
            e["action"] == action
                && e["outcome"] == outcome
                && object.is_none_or(|o| e["object"] == o)
                && e["workspace_id"] == ws.as_str()
                && e["at"].is_string()
                && e["key_id"].is_string()
        })
    };
    assert!(has("sandbox.create", "ok", Some(id)), "{log}");
    assert!(has("key.create", "ok", Some(ci)), "{log}");
    assert!(
        has("key.create", "denied", None),
        "the member's attempt is recorded: {log}"
    );
    assert!(has("key.revoke", "ok", Some(ci)), "{log}");
    assert!(entries.iter().all(|e| {
        e["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("rq"))
    }));

    // Deleting the workspace removes its sandboxes from the host and its keys.
    let pid = guest_pid(&s, id);
    let (st, _) = s
        .call(s.req(&admin, Method::DELETE, &format!("/v1/workspaces/{ws}")))
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .call(s.req(
            OPERATOR_KEY,
            Method::DELETE,
            &format!("/v1/workspaces/{ws}"),
        ))
        .await;
    assert_eq!(st, 204);
    assert!(!ProcessAgent::is_alive(pid));
    assert!(!s.sandbox_dir(id).exists());
    let (st, _) = s.call(s.req(&member, Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, 401);
    let (st, wss) = s
        .call(s.req(OPERATOR_KEY, Method::GET, "/v1/workspaces"))
        .await;
    assert_eq!(st, 200);
    assert!(
        wss["workspaces"]
            .as_array()
            .expect("list")
            .iter()
            .all(|w| w["id"] != ws.as_str())
    );
    s.stop().await;
}

/// Opens the PTY WebSocket; `Err(status)` when the server refuses the upgrade.
async fn open_pty(
    s: &Server,
    key: &str,
    id: &str,
    query: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    let url = format!(
        "{}/v1/sandboxes/{id}/pty?{query}",
        s.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().expect("ws request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_workspaces_sandbox_is_404_on_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let (_, admin_a, member_a) = s.workspace("team-a").await;
    let (_, admin_b, member_b) = s.workspace("team-b").await;
    let id = s.create(&member_a, json!({"template": "busybox"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let home = s.sandbox_dir(&id).join("home");
    let f = format!("{}/f.txt", home.display());
    std::fs::write(&f, "owned by a").expect("seed file");
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/sandboxes/{id}"), None),
        (
            Method::POST,
            format!("/v1/sandboxes/{id}/timeout"),
            Some(json!({"timeout_s": 600})),
        ),
        (
            Method::POST,
            format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": ["true"], "wait": true})),
        ),
        (
            Method::GET,
            format!("/v1/sandboxes/{id}/files?path={f}"),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/sandboxes/{id}/files?path={}/new.txt", home.display()),
            None,
        ),
        (
            Method::GET,
            format!("/v1/sandboxes/{id}/files/list?path={}", home.display()),
            None,
        ),
        (
            Method::GET,
            format!("/v1/sandboxes/{id}/files/stat?path={f}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/sandboxes/{id}/files/mkdir"),
            Some(json!({"path": format!("{}/d", home.display())})),
        ),
        (
            Method::POST,
            format!("/v1/sandboxes/{id}/files/move"),
            Some(json!({"source": f, "destination": format!("{}/g.txt", home.display())})),
        ),
        (
            Method::DELETE,
            format!("/v1/sandboxes/{id}/files?path={f}"),
            None,
        ),
        (Method::DELETE, format!("/v1/sandboxes/{id}"), None),
    ];
    for key in [&admin_b, &member_b] {
        for (m, path, body) in &routes {
            let mut rb = s.req(key, m.clone(), path);
            rb = match body {
                Some(b) => rb.json(b),
                None if *m == Method::PUT => rb.body("x"),
                None => rb,
            };
            let (st, e) = s.call(rb).await;
            assert_eq!(
                (st, e["message"].as_str()),
                (404, Some("sandbox not found")),
                "{m} {path}"
            );
        }
        assert_eq!(
            open_pty(&s, key, &id, "cols=80&rows=24").await.err(),
            Some(404),
            "pty"
        );
        let (_, list) = s.call(s.req(key, Method::GET, "/v1/sandboxes")).await;
        assert_eq!(list["sandboxes"].as_array().map(Vec::len), Some(0));
    }
    // Nothing of the owner's changed.
    assert_eq!(
        std::fs::read_to_string(&f).expect("file intact"),
        "owned by a"
    );
    assert!(!home.join("d").exists() && !home.join("new.txt").exists());

    // Positive twin: the owner gets the sandbox on every route (the delete last).
    for key in [&admin_a, &member_a] {
        for (m, path, body) in &routes[..routes.len() - 2] {
            let mut rb = s.req(key, m.clone(), path);
            rb = match body {
                Some(b) => rb.json(b),
                None if *m == Method::PUT => rb.body("x"),
                None => rb,
            };
            let (st, e) = s.call(rb).await;
            assert!((200..300).contains(&st), "{m} {path}: {st} {e}");
            // Put things back for the second key.
            let _ = std::fs::rename(home.join("g.txt"), &f);
            let _ = std::fs::remove_dir(home.join("d"));
        }
        let mut ws = open_pty(
            &s,
            key,
            &id,
            "cols=80&rows=24&cmd=sh&cmd=-c&cmd=read%20x%3B%20echo%20got%3A%24x%3B%20exit%203",
        )
        .await
        .expect("owner's pty");
        ws.send(Message::Text(
            r#"{"type":"resize","cols":100,"rows":30}"#.into(),
        ))
        .await
        .expect("resize");
        ws.send(Message::Binary(b"hello\r".to_vec().into()))
            .await
            .expect("input");
        let mut screen = Vec::new();
        let mut exit = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while exit.is_none() {
            match tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("pty answered in time")
            {
                Some(Ok(Message::Binary(b))) => screen.extend_from_slice(&b),
                Some(Ok(Message::Text(t))) => {
                    exit = Some(serde_json::from_str::<Value>(&t).expect("exit JSON"))
                }
                Some(Ok(_)) => {}
                other => panic!(
                    "pty ended without exit: {other:?}; screen {:?}",
                    String::from_utf8_lossy(&screen)
                ),
            }
        }
        let exit = exit.expect("exit");
        assert_eq!(
            (exit["type"].as_str(), exit["exit_code"].as_i64()),
            (Some("exit"), Some(3)),
            "{exit}"
        );
        assert!(
            String::from_utf8_lossy(&screen).contains("got:hello"),
            "{:?}",
            String::from_utf8_lossy(&screen)
        );
    }

    // The owner's calls left the running sandbox's row in the server's cache: another
    // workspace still gets a 404, not the cached row.
    for key in [&admin_b, &member_b] {
        let (st, _) = s
            .call(
                s.req(key, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                    .json(&json!({"cmd": ["true"], "wait": true})),
            )
            .await;
        assert_eq!(st, 404);
    }
    let (st, _) = s
        .call(s.req(&member_a, Method::DELETE, &format!("/v1/sandboxes/{id}")))
        .await;
    assert_eq!(st, 204);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_429_and_capacity_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_at(
        dir.path(),
        |_| {},
        |a| {
            a.with_capacity(hutch_core::Capacity {
                max_sandboxes: 3,
                cpu_millis: 1_000_000,
                memory_mb: 1 << 20,
                disk_mb: 1 << 24,
            })
        },
    )
    .await;
    let (ws, _, member) = s.workspace("small").await;
    let (st, q) = s
        .call(
            s.req(
                OPERATOR_KEY,
                Method::PUT,
                &format!("/v1/workspaces/{ws}/quota"),
            )
            .json(&json!({"max_running_sandboxes": 1})),
        )
        .await;
    assert_eq!(
        (st, q["quota"]["max_running_sandboxes"].as_u64()),
        (200, Some(1))
    );
    let (st, _) = s
        .call(
            s.req(&member, Method::PUT, &format!("/v1/workspaces/{ws}/quota"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(st, 403);
    s.create(&member, json!({"template": "busybox"})).await;
    let (st, e) = s
        .call(
            s.req(&member, Method::POST, "/v1/sandboxes")
                .json(&json!({"template": "busybox"})),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{e}"
    );
    // The host holds 3: two more in `default`, then it is full.
    s.create(OPERATOR_KEY, json!({"template": "busybox"})).await;
    s.create(OPERATOR_KEY, json!({"template": "busybox"})).await;
    let (st, e) = s
        .call(
            s.req(OPERATOR_KEY, Method::POST, "/v1/sandboxes")
                .json(&json!({"template": "busybox"})),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (503, Some("capacity_exhausted")),
        "{e}"
    );
    // No row was left by the refused creates.
    let (_, list) = s
        .call(s.req(OPERATOR_KEY, Method::GET, "/v1/sandboxes"))
        .await;
    assert_eq!(list["sandboxes"].as_array().map(Vec::len), Some(2));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_extension_and_the_sweeper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let k = OPERATOR_KEY;
    let short = s
        .create(k, json!({"template": "busybox", "timeout_s": 1}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let kept = s
        .create(k, json!({"template": "busybox", "timeout_s": 2}))
        .await;
    let kept_id = kept["id"].as_str().expect("id").to_owned();
    let (st, extended) = s
        .call(
            s.req(k, Method::POST, &format!("/v1/sandboxes/{kept_id}/timeout"))
                .json(&json!({"timeout_s": 600})),
        )
        .await;
    assert_eq!(st, 200, "{extended}");
    assert!(
        extended["expires_at"].as_str() > kept["expires_at"].as_str(),
        "{extended} vs {kept}"
    );
    let pid = guest_pid(&s, &short);
    eventually(10, "the sweeper to remove the expired sandbox", || async {
        s.call(s.req(k, Method::GET, &format!("/v1/sandboxes/{short}")))
            .await
            .0
            == 404
    })
    .await;
    assert!(!ProcessAgent::is_alive(pid));
    assert!(!s.sandbox_dir(&short).exists());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, v) = s
        .call(s.req(k, Method::GET, &format!("/v1/sandboxes/{kept_id}")))
        .await;
    assert_eq!(
        (st, v["state"].as_str()),
        (200, Some("running")),
        "the extended one outlives its first timeout"
    );
    let (_, log) = s.call(s.req(k, Method::GET, "/v1/audit")).await;
    assert!(
        log["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "sandbox.expire" && e["object"] == short.as_str())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_create_leaves_a_running_sandbox_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_at(
        dir.path(),
        |_| {},
        |a| a.with_launch_delay(Duration::from_millis(1500)),
    )
    .await;
    let k = OPERATOR_KEY;
    let send = s
        .req(k, Method::POST, "/v1/sandboxes")
        .json(&json!({"template": "busybox"}))
        .send();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), send)
            .await
            .is_err(),
        "create answered before the client gave up"
    );
    // The create finishes on its own: no row stays `creating`.
    eventually(15, "the detached create to finish", || async {
        let (_, list) = s.call(s.req(k, Method::GET, "/v1/sandboxes")).await;
        list["sandboxes"]
            .as_array()
            .is_some_and(|l| l.iter().all(|sb| sb["state"] != "creating"))
    })
    .await;
    let (_, list) = s.call(s.req(k, Method::GET, "/v1/sandboxes")).await;
    let rows = list["sandboxes"].as_array().expect("list").clone();
    let held = hutch_host::HostAgent::held(s.agent.as_ref())
        .await
        .expect("held");
    assert_eq!(rows.len(), held.len(), "rows {rows:?} vs host {held:?}");
    for sb in &rows {
        assert_eq!(sb["state"], "running", "{sb}");
        let id = sb["id"].as_str().expect("id");
        let r = s.exec_wait(k, id, json!({"cmd": ["echo", "usable"]})).await;
        assert_eq!(r["stdout"], "usable\n");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_live_fails_dead_and_destroys_leftovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let k = OPERATOR_KEY;
    let live = s.create(k, json!({"template": "busybox"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let dead = s.create(k, json!({"template": "busybox"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A leftover: host state no row knows about.
    let leftover = SandboxId::generate();
    let launched = hutch_host::HostAgent::launch(
        s.agent.as_ref(),
        hutch_host::Launch {
            id: leftover.clone(),
            workspace: hutch_core::WorkspaceId::generate(),
            template: hutch_host::TemplateLayers {
                name: "busybox:latest".into(),
                layers: vec![],
                default_user: "root".into(),
                default_workdir: None,
            },
            resources: hutch_core::request::Resources {
                cpu_millis: 1000,
                memory_mb: 256,
                disk_mb: 1024,
                pids: 64,
            },
            runtime: hutch_core::Runtime::Crun,
            env: Default::default(),
            guest_token: "leftover-token".into(),
        },
    )
    .await
    .expect("leftover launched");
    let live_pid = guest_pid(&s, &live);
    let dead_id = SandboxId::parse(&dead).expect("id");
    s.stop_leaving_sandboxes().await;
    // While the server is down, one sandbox dies.
    let agent_view = ProcessAgent::new(std::path::PathBuf::new(), dir.path().join("sandboxes"));
    agent_view.kill_guest(&dead_id);

    let s2 = Server::start(dir.path()).await;
    let live_sid = SandboxId::parse(&live).expect("id");
    assert_eq!(s2.recovery.reattached, vec![live_sid]);
    assert_eq!(s2.recovery.failed, vec![dead_id]);
    assert_eq!(s2.recovery.leftovers, vec![leftover.clone()]);
    // The live one is re-attached and usable, with the same guest.
    let (st, v) = s2
        .call(s2.req(k, Method::GET, &format!("/v1/sandboxes/{live}")))
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("running")));
    assert_eq!(guest_pid(&s2, &live), live_pid);
    let r = s2
        .exec_wait(k, &live, json!({"cmd": ["echo", "still here"]}))
        .await;
    assert_eq!(r["stdout"], "still here\n");
    // The dead one is failed with a reason, and its host state is gone.
    let (st, v) = s2
        .call(s2.req(k, Method::GET, &format!("/v1/sandboxes/{dead}")))
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("failed")));
    assert!(
        v["failure_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{v}"
    );
    assert!(!s2.sandbox_dir(&dead).exists());
    // The leftover is destroyed.
    assert!(!ProcessAgent::is_alive(launched.init_pid));
    assert!(!s2.agent.dir_of(&leftover).exists());
    // A failed sandbox can be deleted.
    let (st, _) = s2
        .call(s2.req(k, Method::DELETE, &format!("/v1/sandboxes/{dead}")))
        .await;
    assert_eq!(st, 204);
    let (st, _) = s2
        .call(s2.req(k, Method::DELETE, &format!("/v1/sandboxes/{live}")))
        .await;
    assert_eq!(st, 204);
    let (_, body) = json_of(
        s2.req(k, Method::GET, "/v1/sandboxes")
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(body["sandboxes"].as_array().map(Vec::len), Some(0));
    s2.stop().await;
}
