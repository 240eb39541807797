//! R16 end to end: 2 GiB printed by a process, streamed through exec (guest → control plane
//! → NDJSON over HTTP → client), leaves this process's memory flat. This process holds the
//! API server and the control plane (the guest is another process), so its RSS is the
//! server's. Its own test binary, so no other test shares the RSS.

mod common;

use std::time::{Duration, Instant};

use common::{OPERATOR_KEY, Server};
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;

const FLOOD: u64 = 2 << 30;
const MAX_GROWTH: u64 = 64 << 20;

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Streams an exec that prints `bytes`; returns (output bytes seen, peak RSS while streaming).
async fn stream(s: &Server, id: &str, bytes: u64) -> (u64, u64) {
    let line = "x".repeat(1023);
    let cmd = format!("yes {line} | head -c {bytes}");
    let resp = s
        .req(
            OPERATOR_KEY,
            Method::POST,
            &format!("/v1/sandboxes/{id}/exec"),
        )
        .json(&json!({"cmd": ["sh", "-c", cmd]}))
        .send()
        .await
        .expect("exec");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut seen = 0u64;
    let mut peak = 0u64;
    let mut exit = None;
    let mut last_sample = Instant::now();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        pending.extend_from_slice(&chunk);
        // Parse complete lines only as far as needed: count output bytes, keep the exit.
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let ev: serde_json::Value = serde_json::from_slice(&pending[..nl]).expect("NDJSON");
            pending.drain(..=nl);
            match ev["type"].as_str() {
                Some("stdout") => seen += ev["data"].as_str().map_or(0, |d| d.len() as u64),
                Some("exit") => exit = Some(ev),
                Some("error") => panic!("exec failed: {ev}"),
                _ => {}
            }
        }
        if last_sample.elapsed() > Duration::from_millis(100) {
            peak = peak.max(rss());
            last_sample = Instant::now();
        }
    }
    let exit = exit.expect("an exit event");
    assert_eq!(exit["exit_code"], 0, "{exit}");
    (seen, peak.max(rss()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_of_output_leaves_the_servers_rss_flat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    // A memory test, not a speed test: the sandbox outlives the default 300 s timeout, which a
    // loaded 2-core machine can take to push 2 GiB through debug builds.
    let id = s
        .create(
            OPERATOR_KEY,
            json!({"template": "busybox", "timeout_s": 3600}),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Warm up allocator pools and connection buffers, then measure.
    let (seen, _) = stream(&s, &id, 32 << 20).await;
    assert_eq!(seen, 32 << 20);
    let before = rss();
    let started = Instant::now();
    let (seen, peak) = stream(&s, &id, FLOOD).await;
    let after = rss();
    assert_eq!(seen, FLOOD, "every byte arrived");
    eprintln!(
        "2 GiB in {:.1} s; RSS before {} MiB, peak {} MiB, after {} MiB",
        started.elapsed().as_secs_f64(),
        before >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH,
        "RSS grew from {} MiB to a peak of {} MiB while streaming",
        before >> 20,
        peak >> 20
    );
    assert!(after.saturating_sub(before) < MAX_GROWTH);
    s.stop().await;
}
