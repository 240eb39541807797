//! What a client may hold of the server (`hutch_api::server`): header and body timeouts, the
//! keep-alive idle timeout, the connection caps and their reserve, 413 before reading. Raw
//! sockets on loopback, so the bytes sent are exactly the ones under test. Every bound has a
//! twin test showing what happens without it ([`ServeConfig::unbounded`]).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{OPERATOR_KEY, Server};
use hutch_api::{BodyRate, ServeConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// Short bounds, so the tests take seconds.
fn short() -> ServeConfig {
    ServeConfig {
        header_timeout: Some(Duration::from_millis(600)),
        body_rate: Some(BodyRate {
            grace: Duration::from_millis(600),
            min_bytes_per_s: 1000,
        }),
        ..ServeConfig::default()
    }
}

async fn start(dir: &tempfile::TempDir, serve: ServeConfig) -> (Server, SocketAddr) {
    let s = Server::start_serving(dir.path(), |_| {}, |a| a, serve).await;
    let addr = s
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    (s, addr)
}

/// A connection to `addr` from loopback address `from` (127.0.0.0/8 is all loopback).
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind((from, 0).into()).expect("bind client");
    socket.connect(addr).await.expect("connect")
}

/// One reply: its head and a body of `content-length` bytes; "" if the connection closed
/// first (or nothing came within `within`).
async fn reply(s: &mut TcpStream, within: Duration) -> String {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Whether the server closed `s` within `within` (a read sees the end, or a reset).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let wait = async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}

fn get(path: &str, key: Option<&str>) -> String {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n")
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A create whose headers declare 1 TB: 413 at once, the body never awaited — also when the
/// client waits for `100 Continue` (which it must then not get).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_routes_limit_gets_413_before_any_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, addr) = start(&dir, short()).await;
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut c = connect_from(LOCAL, addr).await;
        let head = format!(
            "POST /v1/sandboxes HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000000000000\r\n{expect}\r\n"
        );
        let started = Instant::now();
        c.write_all(head.as_bytes()).await.expect("send head");
        let r = reply(&mut c, Duration::from_secs(5)).await;
        let took = started.elapsed();
        eprintln!("413 to a declared 1 TB body ({expect:?}) in {took:?}");
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
        assert!(r.contains("\"code\":\"payload_too_large\""), "{r}");
        assert!(!r.contains("100 Continue"), "{r}");
        assert!(took < Duration::from_millis(500), "{took:?}");
    }
    s.stop().await;
}

/// A head that never ends is cut at the header timeout; so is a kept-alive connection left
/// idle after its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_and_idle_connections_are_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, addr) = start(&dir, short()).await;
    let mut half = connect_from(LOCAL, addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("send");
    let mut idle = connect_from(LOCAL, addr).await;
    idle.write_all(get("/healthz", None).as_bytes())
        .await
        .expect("send");
    let r = reply(&mut idle, Duration::from_secs(2)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let started = Instant::now();
    assert!(closed_within(&mut half, Duration::from_secs(3)).await);
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    assert!(started.elapsed() < Duration::from_millis(1500));
    s.stop().await;
}

/// Twin: without the timeout, both stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_header_timeout_half_sent_heads_and_idle_connections_stay_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, addr) = start(&dir, ServeConfig::unbounded()).await;
    let mut half = connect_from(LOCAL, addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("send");
    let mut idle = connect_from(LOCAL, addr).await;
    idle.write_all(get("/healthz", None).as_bytes())
        .await
        .expect("send");
    let r = reply(&mut idle, Duration::from_secs(2)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(!closed_within(&mut half, Duration::from_secs(3)).await);
    assert!(!closed_within(&mut idle, Duration::from_millis(100)).await);
    // A graceful stop would wait for them.
    drop((half, idle));
    s.stop().await;
}

/// Sends a create's head declaring 200 bytes, then a byte every 200 ms (5 B/s); the reply.
async fn trickle(addr: SocketAddr) -> (String, Duration) {
    let mut c = connect_from(LOCAL, addr).await;
    let head = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{"
    );
    c.write_all(head.as_bytes()).await.expect("send head");
    let started = Instant::now();
    let (mut rd, mut wr) = c.into_split();
    let sender = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(4), rd.read_to_end(&mut buf)).await;
    sender.abort();
    (
        String::from_utf8_lossy(&buf).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_below_the_minimum_rate_gets_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, addr) = start(&dir, short()).await;
    let (r, took) = trickle(addr).await;
    eprintln!("408 after {took:?}");
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.contains("\"code\":\"request_timeout\""), "{r}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    s.stop().await;
}

/// Twin: without a minimum rate the trickle holds the request open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_minimum_rate_a_trickled_body_is_awaited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, addr) = start(&dir, ServeConfig::unbounded()).await;
    let (r, took) = trickle(addr).await;
    assert!(r.is_empty(), "{r}");
    assert!(took >= Duration::from_secs(4));
    s.stop().await;
}

/// Over the per-address cap: the reserve serves `/healthz` and the operator, refuses the rest
/// with 429; with the reserve full too, the refusal comes without reading anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_per_address_cap_the_reserve_serves_only_health_and_the_operator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, addr) = start(
        &dir,
        ServeConfig {
            max_connections_per_client: Some(2),
            reserve: 8,
            reserve_per_client: 5,
            header_timeout: Some(Duration::from_secs(20)),
            reserve_header_timeout: Duration::from_secs(20),
            ..ServeConfig::default()
        },
    )
    .await;
    // Two normal connections from 127.0.0.9 fill its share.
    let from = Ipv4Addr::new(127, 0, 0, 9);
    let mut held = vec![
        connect_from(from, addr).await,
        connect_from(from, addr).await,
    ];
    // Let the server accept them before the next ones arrive.
    let r = reply(&mut held[0], Duration::from_millis(200)).await;
    assert!(r.is_empty(), "{r}");
    let (_ws, _admin, member) = s.workspace("limits").await;
    let cases = [
        (get("/healthz", None), "HTTP/1.1 200"),
        (get("/v1/sandboxes", Some(OPERATOR_KEY)), "HTTP/1.1 200"),
        (get("/v1/sandboxes", Some(&member)), "HTTP/1.1 429"),
    ];
    let mut reserve = Vec::new();
    for (request, status) in &cases {
        let mut c = connect_from(from, addr).await;
        c.write_all(request.as_bytes()).await.expect("send");
        let r = reply(&mut c, Duration::from_secs(5)).await;
        assert!(r.starts_with(status), "{request}: {r}");
        if status.ends_with("429") {
            assert!(r.contains("\"code\":\"too_many_connections\""), "{r}");
            assert!(closed_within(&mut c, Duration::from_secs(2)).await);
        } else {
            reserve.push(c);
        }
    }
    // The address may hold 5 in all, four held: one more (once the refused connection's
    // place is back: it is held until the socket has finished lingering)...
    let mut third = None;
    for _ in 0..50 {
        let mut c = connect_from(from, addr).await;
        c.write_all(get("/healthz", None).as_bytes())
            .await
            .expect("send");
        if reply(&mut c, Duration::from_secs(2))
            .await
            .starts_with("HTTP/1.1 200")
        {
            third = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let third = third.expect("a third reserve place");
    // ...then refusals, without a byte read.
    let mut over = connect_from(from, addr).await;
    let r = reply(&mut over, Duration::from_secs(2)).await;
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    // Another address is not affected.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 10), addr).await;
    other
        .write_all(get("/v1/sandboxes", Some(&member)).as_bytes())
        .await
        .expect("send");
    let r = reply(&mut other, Duration::from_secs(2)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Places come back: with the held connections closed, the address is served again.
    drop((held, reserve, third));
    common::eventually(5, "the address's places back", || async {
        let mut c = connect_from(from, addr).await;
        let _ = c
            .write_all(get("/v1/sandboxes", Some(&member)).as_bytes())
            .await;
        reply(&mut c, Duration::from_secs(2))
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    s.stop().await;
}

/// Over the global cap: 503 for others, `/healthz` still answered from the reserve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_global_cap_health_is_answered_and_others_get_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, addr) = start(
        &dir,
        ServeConfig {
            max_connections: Some(3),
            header_timeout: Some(Duration::from_secs(20)),
            ..ServeConfig::default()
        },
    )
    .await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(connect_from(Ipv4Addr::new(127, 0, 1, i), addr).await);
    }
    let r = reply(&mut held[0], Duration::from_millis(200)).await;
    assert!(r.is_empty(), "{r}");
    let from = Ipv4Addr::new(127, 0, 2, 1);
    let mut c = connect_from(from, addr).await;
    c.write_all(get("/healthz", None).as_bytes())
        .await
        .expect("send");
    let r = reply(&mut c, Duration::from_secs(2)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let mut c = connect_from(from, addr).await;
    c.write_all(get("/v1/openapi.json", None).as_bytes())
        .await
        .expect("send");
    let r = reply(&mut c, Duration::from_secs(2)).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("\"code\":\"unavailable\""), "{r}");
    s.stop().await;
}
