//! A bounded slowloris on loopback against a server in a child process (this test binary
//! re-run as [`slowloris_server`], so the server's RSS and file descriptors are its own):
//! thousands of half-sent request heads from many addresses, bodies trickled a byte a second,
//! and bodies declared 1 TB long, while a probe from another address asks `/healthz` every
//! 50 ms. With the bounds on, every probe is answered within 100 ms and the server's RSS comes
//! back to within 20 % of its start; the twin, without bounds and with the open-file limit of
//! a default systemd service, shows the same attack starving `/healthz`.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use hutch_api::ServeConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The server's connection caps in the bounded run: below the attack, so the caps and the
/// reserve are what keeps `/healthz` answered.
const MAX_CONNECTIONS: usize = 1024;
const MAX_PER_CLIENT: usize = 64;
/// Attack: half-sent heads from `ADDRESSES` addresses, `PER_ADDRESS` connections each (over
/// the per-address cap, and together over the global cap).
const ADDRESSES: u8 = 40;
const PER_ADDRESS: usize = 75;
const SLOW_BODIES: usize = 100;
const HUGE_BODIES: usize = 20;
const PROBE_EVERY: Duration = Duration::from_millis(50);
const PROBE_LIMIT: Duration = Duration::from_millis(100);
/// A probe not answered within this counts as unanswered.
const PROBE_GIVE_UP: Duration = Duration::from_secs(2);

/// Not a test: the server under attack, started by the tests below in a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the slowloris tests' server process; does nothing when run by hand"]
async fn slowloris_server() {
    let Ok(root) = std::env::var("HUTCH_SLOWLORIS_ROOT") else {
        return;
    };
    if let Ok(n) = std::env::var("HUTCH_SLOWLORIS_NOFILE") {
        let n = n.parse().expect("open-file limit");
        let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        limit.current = Some(n);
        rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).expect("setrlimit");
    }
    let config = if std::env::var("HUTCH_SLOWLORIS_BOUNDED").as_deref() == Ok("1") {
        ServeConfig {
            max_connections: Some(MAX_CONNECTIONS),
            max_connections_per_client: Some(MAX_PER_CLIENT),
            ..ServeConfig::default()
        }
    } else {
        ServeConfig::unbounded()
    };
    let root = Path::new(&root);
    let s = Server::start_serving(root, |_| {}, |a| a, config).await;
    // The attackers that send bodies hold a workspace member's key (the operator's would
    // let them into the reserve).
    let (_, _, member) = s.workspace("attackers").await;
    std::fs::write(root.join("key"), member).expect("write");
    std::fs::write(root.join("addr.tmp"), s.base.trim_start_matches("http://")).expect("write");
    std::fs::rename(root.join("addr.tmp"), root.join("addr")).expect("rename");
    std::future::pending::<()>().await;
}

/// The server process; killed when dropped.
struct Child {
    process: std::process::Child,
    addr: SocketAddr,
    /// A workspace member's key.
    key: String,
}

impl Child {
    fn start(root: &Path, bounded: bool, nofile: Option<u64>) -> Child {
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["slowloris_server", "--exact", "--ignored", "--nocapture"])
            .env("HUTCH_SLOWLORIS_ROOT", root)
            .env("HUTCH_SLOWLORIS_BOUNDED", if bounded { "1" } else { "0" })
            .stdout(std::process::Stdio::null());
        if let Some(n) = nofile {
            cmd.env("HUTCH_SLOWLORIS_NOFILE", n.to_string());
        }
        let mut process = cmd.spawn().expect("start the server process");
        // The child may build the guest binary first.
        let deadline = Instant::now() + Duration::from_secs(300);
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(root.join("addr")) {
                break a.parse().expect("address");
            }
            if let Ok(Some(status)) = process.try_wait() {
                panic!("the server process ended: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the server process did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let key = std::fs::read_to_string(root.join("key")).expect("key");
        Child { process, addr, key }
    }

    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Lifts this process's open-file limit to its hard limit: the attack's sockets live here.
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE");
}

async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    socket.connect(addr).await
}

#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    /// Connections the server closed without a reply (the header timeout).
    cut: AtomicU64,
    /// Connections answered with an error (refused at a cap, 408, 413).
    refused: AtomicU64,
    /// The slowest 413 to a body declared 1 TB long, from the end of its head, in µs.
    slowest_413_us: AtomicU64,
    answered_413: AtomicU64,
}

/// How a held connection ended.
enum End {
    Cut,
    Answered(Vec<u8>),
    TimeUp,
}

/// Sends `drip` every `every` on `c` until the server answers or closes, or `until`.
async fn hold(c: &mut TcpStream, drip: &[u8], every: Duration, until: Instant) -> End {
    let mut buf = [0u8; 512];
    loop {
        let next = (Instant::now() + every).min(until);
        tokio::select! {
            r = c.read(&mut buf) => return match r {
                Ok(0) | Err(_) => End::Cut,
                Ok(n) => End::Answered(buf[..n].to_vec()),
            },
            () = tokio::time::sleep_until(next.into()) => {
                if Instant::now() >= until {
                    return End::TimeUp;
                }
                if c.write_all(drip).await.is_err() {
                    return End::Cut;
                }
            }
        }
    }
}

/// What an attacker sends: `head`, then `drip` every `every`; once the server ends the
/// connection, it waits about `pause` (from half to one and a half times, so attackers refused
/// together do not come back in step) and starts over.
struct Pattern {
    head: Arc<Vec<u8>>,
    drip: &'static [u8],
    every: Duration,
    pause: Duration,
}

/// One attacker from `from`, following `pattern` until `until`.
async fn attacker(
    from: Ipv4Addr,
    addr: SocketAddr,
    pattern: Arc<Pattern>,
    until: Instant,
    tally: Arc<Tally>,
    salt: u64,
) {
    let mut round = salt;
    while Instant::now() < until {
        if let Ok(mut c) = connect_from(from, addr).await {
            tally.opened.fetch_add(1, Ordering::Relaxed);
            let sent = Instant::now();
            if c.write_all(&pattern.head).await.is_ok() {
                match hold(&mut c, pattern.drip, pattern.every, until).await {
                    End::Cut => {
                        tally.cut.fetch_add(1, Ordering::Relaxed);
                    }
                    End::Answered(reply) => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        if reply.starts_with(b"HTTP/1.1 413") {
                            let us = sent.elapsed().as_micros() as u64;
                            tally.slowest_413_us.fetch_max(us, Ordering::Relaxed);
                            tally.answered_413.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    End::TimeUp => {}
                }
            }
        }
        round += 1;
        let spread = (from.to_bits() as u64)
            .wrapping_mul(7919)
            .wrapping_add(round * 104_729)
            % 1000;
        let pause = pattern.pause;
        tokio::time::sleep(pause / 2 + pause * spread as u32 / 1000).await;
    }
}

/// Starts every attacker, two a millisecond (a slowloris builds up; thousands of connects at
/// once would be a flood of another kind, met by the listen backlog); they stop at `until`
/// (their sockets close as they end).
async fn attack(
    addr: SocketAddr,
    key: &str,
    until: Instant,
    all: bool,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let half_heads = Arc::new(Pattern {
        head: Arc::new(b"GET /v1/sandboxes HTTP/1.1\r\nHost: t\r\n".to_vec()),
        drip: b"X-Slow: 1\r\n",
        every: Duration::from_secs(2),
        pause: Duration::from_secs(1),
    });
    for a in 0..ADDRESSES {
        for i in 0..PER_ADDRESS {
            if tasks.len() % 2 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let from = Ipv4Addr::new(127, 1, 0, a + 1);
            let pattern = half_heads.clone();
            tasks.push(tokio::spawn(attacker(
                from,
                addr,
                pattern,
                until,
                tally.clone(),
                i as u64,
            )));
        }
    }
    if !all {
        return tasks;
    }
    let body_head = |length: u64| {
        Arc::new(
            format!(
                "POST /v1/sandboxes HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{"
            )
            .into_bytes(),
        )
    };
    // Bodies trickled a byte a second; bodies declared 1 TB, sent as fast as they go.
    let slow = Arc::new(Pattern {
        head: body_head(100_000),
        drip: b" ",
        every: Duration::from_secs(1),
        pause: Duration::from_secs(1),
    });
    let huge = Arc::new(Pattern {
        head: body_head(1_000_000_000_000),
        drip: &[b' '; 1024],
        every: Duration::from_millis(50),
        pause: Duration::from_millis(200),
    });
    for (octet, pattern, count) in [(1, slow, SLOW_BODIES), (2, huge, HUGE_BODIES)] {
        for i in 0..count {
            let from = Ipv4Addr::new(127, 1, octet, (i % 10) as u8 + 1);
            tasks.push(tokio::spawn(attacker(
                from,
                addr,
                pattern.clone(),
                until,
                tally.clone(),
                i as u64,
            )));
        }
    }
    tasks
}

/// `GET /healthz` on a new connection from 127.0.0.2 every 50 ms until `until`, on a thread
/// and runtime of its own (the attackers' tasks must not delay it); each answer's latency,
/// [`PROBE_GIVE_UP`] for one that did not come.
fn probe(addr: SocketAddr, until: Instant) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("probe runtime");
        rt.block_on(async move {
            let mut latencies = Vec::new();
            let mut next = Instant::now();
            while next < until {
                tokio::time::sleep_until(next.into()).await;
                // Every 50 ms, without catching up in a burst after a late one.
                next = (next + PROBE_EVERY).max(Instant::now());
                let started = Instant::now();
                let answered = tokio::time::timeout(PROBE_GIVE_UP, async {
                    let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await?;
                    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                        .await?;
                    let mut reply = Vec::new();
                    c.read_to_end(&mut reply).await?;
                    if !reply.ends_with(b"ok") {
                        eprintln!("{}", String::from_utf8_lossy(&reply));
                    }
                    Ok::<_, std::io::Error>(
                        reply.starts_with(b"HTTP/1.1 200") && reply.ends_with(b"ok"),
                    )
                })
                .await;
                if !matches!(answered, Ok(Ok(true))) {
                    eprintln!("probe at {:?}: {answered:?}", started.elapsed());
                }
                latencies.push(match answered {
                    Ok(Ok(true)) => started.elapsed(),
                    _ => PROBE_GIVE_UP,
                });
            }
            latencies
        })
    })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Serialises the two tests: each measures a server under a load the other would add to.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_slowloris_healthz_answers_within_100_ms_and_memory_comes_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    raise_nofile();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Child::start(dir.path(), true, None);
    let addr = server.addr;

    // Warm-up: the probe's path and a few hundred connections, opened and closed.
    let tally = Arc::new(Tally::default());
    let warm = Instant::now() + Duration::from_secs(3);
    let probing = probe(addr, warm);
    let mut warm_conns = Vec::new();
    for i in 0..300 {
        if let Ok(c) = connect_from(Ipv4Addr::new(127, 1, 3, (i % 10) as u8 + 1), addr).await {
            warm_conns.push(c);
        }
    }
    probing.join().expect("probe");
    drop(warm_conns);
    tokio::time::sleep(Duration::from_secs(6)).await; // past the lingering close (5 s)
    let start_rss = server.rss();

    let attack_time = Duration::from_secs(30);
    let until = Instant::now() + attack_time;
    let probing = probe(addr, until);
    let tasks = attack(addr, &server.key, until, true, &tally).await;
    let mut peak_rss = start_rss;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(server.rss());
    }
    let mut latencies = probing.join().expect("probe");
    for t in tasks {
        t.await.expect("attacker");
    }
    // Back to the start within 20 %, once the attack's sockets have lingered out.
    let ended = Instant::now();
    let mut end_rss = server.rss();
    while end_rss > start_rss * 6 / 5 && ended.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        end_rss = server.rss();
    }
    latencies.sort();
    let max = latencies.last().copied().unwrap_or_default();
    let p99 = percentile(&latencies, 99);
    let t = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "slowloris {attack_time:?}: {} connections opened, {} cut at the header timeout, {} \
         answered with an error ({} 413s, slowest {} µs); /healthz: {} probes, p50 {:?}, p99 \
         {p99:?}, max {max:?}; server RSS start {} MiB, peak {} MiB, end {} MiB ({:.1} s after)",
        t(&tally.opened),
        t(&tally.cut),
        t(&tally.refused),
        t(&tally.answered_413),
        t(&tally.slowest_413_us),
        latencies.len(),
        percentile(&latencies, 50),
        start_rss >> 20,
        peak_rss >> 20,
        end_rss >> 20,
        ended.elapsed().as_secs_f64(),
    );
    assert!(max < PROBE_LIMIT, "a /healthz took {max:?}");
    assert!(t(&tally.answered_413) > 0, "the 1 TB bodies were answered");
    assert!(
        t(&tally.slowest_413_us) < 100_000,
        "413 within 100 ms of the head"
    );
    assert!(
        end_rss <= start_rss * 6 / 5,
        "RSS {} MiB after the attack, {} MiB before",
        end_rss >> 20,
        start_rss >> 20
    );
}

/// Twin: no bounds, and the open-file limit a systemd service starts with (1024). The
/// half-sent heads alone take every descriptor and `/healthz` goes unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bounds_the_same_slowloris_starves_healthz() {
    let _serial = ONE_AT_A_TIME.lock().await;
    raise_nofile();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Child::start(dir.path(), false, Some(1024));
    let addr = server.addr;
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(10);
    let probing = probe(addr, until);
    let tasks = attack(addr, &server.key, until, false, &tally).await;
    let mut latencies = probing.join().expect("probe");
    for t in tasks {
        t.await.expect("attacker");
    }
    latencies.sort();
    let unanswered = latencies.iter().filter(|l| **l >= PROBE_GIVE_UP).count();
    let slow = latencies.iter().filter(|l| **l >= PROBE_LIMIT).count();
    eprintln!(
        "unbounded: {} connections opened, {} cut; /healthz: {} probes, {slow} over 100 ms, \
         {unanswered} unanswered within {PROBE_GIVE_UP:?}",
        tally.opened.load(Ordering::Relaxed),
        tally.cut.load(Ordering::Relaxed),
        latencies.len(),
    );
    assert!(unanswered > 0, "some /healthz went unanswered");
}
