//! The store conformance suite and SQLite-specific checks, against a file in a temp dir and an
//! in-memory database.

use std::sync::Arc;

use hutch_core::{JobId, Timestamp};
use hutch_store::prelude::*;
use hutch_store::{JobKind, NewJob, SqliteStore, conformance};

async fn file_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("hutch.db"))
        .await
        .expect("open");
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_file() {
    let (_dir, store) = file_store().await;
    conformance::run(&store).await;
}

#[tokio::test]
async fn conformance_in_memory() {
    let store = SqliteStore::open_in_memory().await.expect("open");
    conformance::run(&store).await;
}

#[tokio::test]
async fn reopening_keeps_data_and_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hutch.db");
    let id = hutch_core::WorkspaceId::generate();
    {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .create_workspace(hutch_store::NewWorkspace {
                id: id.clone(),
                name: hutch_core::WorkspaceName::default_workspace(),
                quota: Default::default(),
                created_by: None,
                now: Timestamp::now(),
            })
            .await
            .expect("create");
        store.pool().close().await;
    }
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert!(store.get_workspace(&id).await.expect("get").is_some());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(fk, 1);
}

#[tokio::test]
async fn check_constraints_reject_unknown_states() {
    let store = SqliteStore::open_in_memory().await.expect("open");
    let now = 0i64;
    // The positive twin: a known state is accepted by the same statement.
    for (state, ok) in [("ready", true), ("bogus", false), ("READY", false)] {
        let res = sqlx::query(
            "INSERT INTO templates (id, workspace_id, owner, name, tag, state, created_at, \
             updated_at) VALUES (?, NULL, '_platform', 'x', ?, ?, ?, ?)",
        )
        .bind(hutch_core::TemplateId::generate().as_str())
        .bind(state.to_lowercase())
        .bind(state)
        .bind(now)
        .bind(now)
        .execute(store.pool())
        .await;
        assert_eq!(res.is_ok(), ok, "template state {state}: {res:?}");
    }
    let owner_mismatch = sqlx::query(
        "INSERT INTO templates (id, workspace_id, owner, name, tag, state, created_at, \
         updated_at) VALUES (?, NULL, 'someone', 'y', '1', 'ready', 0, 0)",
    )
    .bind(hutch_core::TemplateId::generate().as_str())
    .execute(store.pool())
    .await;
    assert!(owner_mismatch.is_err());
    // Sandboxes: a row with a known state can be moved to another known state, never to an
    // unknown one.
    let ws = hutch_core::WorkspaceId::generate();
    sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES (?, 'w', 0)")
        .bind(ws.as_str())
        .execute(store.pool())
        .await
        .expect("workspace");
    sqlx::query(
        "INSERT INTO sandboxes (id, workspace_id, template, state, generation, cpu_millis, \
         memory_mb, disk_mb, pids, env, metadata, timeout_s, created_at, updated_at) \
         VALUES (?, ?, 'busybox:latest', 'running', 0, 1000, 512, 1024, 256, '{}', '{}', 60, 0, 0)",
    )
    .bind(hutch_core::SandboxId::generate().as_str())
    .bind(ws.as_str())
    .execute(store.pool())
    .await
    .expect("sandbox");
    for (state, ok) in [("asleep", true), ("zombie", false)] {
        let res = sqlx::query("UPDATE sandboxes SET state = ?")
            .bind(state)
            .execute(store.pool())
            .await;
        assert_eq!(res.is_ok(), ok, "sandbox state {state}: {res:?}");
    }
}

/// Many workers leasing at once from a file database (separate connections, real locking):
/// every job is handed out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_leases_hand_out_each_job_once() {
    let (_dir, store) = file_store().await;
    let store = Arc::new(store);
    let now = Timestamp::from_unix_ms(1_000_000);
    const JOBS: usize = 40;
    for _ in 0..JOBS {
        store
            .enqueue_job(NewJob {
                id: JobId::generate(),
                workspace_id: None,
                kind: JobKind::Build,
                payload: serde_json::json!({}),
                max_attempts: 1,
                created_by: None,
                now,
            })
            .await
            .expect("enqueue");
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&store);
        workers.push(tokio::spawn(async move {
            let owner = format!("worker-{w}");
            let mut got = Vec::new();
            while let Some(job) = store
                .lease_job(&owner, &[JobKind::Build], now, 60_000)
                .await
                .expect("lease")
            {
                assert_eq!(job.lease_owner.as_deref(), Some(owner.as_str()));
                got.push(job.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    assert_eq!(all.len(), JOBS);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), JOBS, "a job was leased twice");
}
