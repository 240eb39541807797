//! `hutch-bench`: the harness behind `make bench`. Each figure is measured
//! beside its baseline in the same run on the same machine and reported as a
//! ratio; the output is a Markdown section that scripts/bench.sh assembles
//! into BENCHMARKS.md. Benchmarks report speed; they assert nothing.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use hutch_guest_client::{Endpoint, GuestClient, process};

mod core;

#[derive(Parser)]
struct Args {
    /// The static hutch-guest binary to measure.
    #[arg(long, env = "HUTCH_GUEST_STATIC_BIN")]
    guest: PathBuf,
    /// Iterations of each latency measurement.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// The `hutch` binary (release) for the sandbox figures; without it only
    /// the guest is measured.
    #[arg(long, env = "HUTCH_BIN")]
    hutch: Option<PathBuf>,
    /// Measure only one sandbox figure (a quick check while working on its
    /// path; needs `--hutch`).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Bytes moved by the throughput measurements.
    #[arg(long, default_value_t = 256 << 20)]
    bytes: u64,
}

/// The figures `--only` can pick.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Only {
    /// Exec round trip against `crun exec`.
    Exec,
    /// Create → first output against `crun run`.
    Create,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        if let Some(which) = args.only {
            let hutch = args.hutch.as_deref().context("--only needs --hutch")?;
            return core::section(hutch, &args.guest, args.iterations, Some(which)).await;
        }
        guest_section(&args).await?;
        if let Some(hutch) = &args.hutch {
            core::section(hutch, &args.guest, args.iterations, None).await?;
        }
        Ok(())
    })
}

/// Sorted samples with percentiles.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Samples {
        v.sort();
        Samples(v)
    }
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS missing")
}

/// Polls the socket with raw HTTP until /health answers 204.
fn wait_health(sock: &Path, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            if buf[..n].starts_with(b"HTTP/1.1 204") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("guest did not answer /health on {}", sock.display());
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

fn start_guest(bin: &Path, sock: &Path) -> anyhow::Result<std::process::Child> {
    let _ = std::fs::remove_file(sock);
    Command::new(bin)
        .args(["--listen", "none", "--listen-unix"])
        .arg(sock)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

async fn run_true(client: &GuestClient) -> anyhow::Result<()> {
    let spec = process::Spec {
        cmd: "/bin/true".into(),
        ..Default::default()
    };
    let mut events = client.start(spec).await?;
    let mut ended = false;
    while let Some(event) = events.next().await? {
        if let process::Event::End(e) = event {
            anyhow::ensure!(e.exit_code == 0, "true exited {}", e.exit_code);
            ended = true;
        }
    }
    anyhow::ensure!(ended, "no end event");
    Ok(())
}

async fn guest_section(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("guest.sock");
    let n = args.iterations;

    // Size.
    let size = std::fs::metadata(&args.guest)?.len();

    // Time to ready, against fork+exec+wait of a static binary.
    let mut ready = Vec::new();
    let mut spawn_wait = Vec::new();
    let busybox = Path::new("/bin/busybox");
    for _ in 0..30 {
        let t = Instant::now();
        let mut child = start_guest(&args.guest, &sock)?;
        wait_health(&sock, t + Duration::from_secs(5))?;
        ready.push(t.elapsed());
        child.kill()?;
        child.wait()?;
        let t = Instant::now();
        Command::new(busybox).arg("true").status()?;
        spawn_wait.push(t.elapsed());
    }
    let ready = Samples::new(ready);
    let spawn_wait = Samples::new(spawn_wait);

    // Idle RSS and command round trip on one running guest.
    let mut child = start_guest(&args.guest, &sock)?;
    wait_health(&sock, Instant::now() + Duration::from_secs(5))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = vm_rss_kib(child.id())?;

    let client = GuestClient::new(Endpoint::Unix(sock.clone()));
    for _ in 0..20 {
        run_true(&client).await?;
    }
    let mut rt = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run_true(&client).await?;
        rt.push(t.elapsed());
    }
    let mut base = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        Command::new("/bin/true").status()?;
        base.push(t.elapsed());
    }
    let rt = Samples::new(rt);
    let base = Samples::new(base);
    let rss_after = vm_rss_kib(child.id())?;

    // File throughput through /files against cat through a pipe.
    let shm = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())?;
    let file = shm.path().join("blob");
    let total = args.bytes;
    let chunk = bytes::Bytes::from(vec![0x5au8; 1 << 20]);
    let chunks = total / chunk.len() as u64;
    let t = Instant::now();
    let c2 = chunk.clone();
    let body = futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(c2.clone())));
    client
        .upload(file.to_str().context("path")?, None, body)
        .await?;
    let up = t.elapsed();
    anyhow::ensure!(
        std::fs::metadata(&file)?.len() == total,
        "upload size mismatch"
    );
    let t = Instant::now();
    let mut got = 0u64;
    let mut stream = Box::pin(
        client
            .download(file.to_str().context("path")?, None)
            .await?,
    );
    while let Some(b) = stream.next().await {
        got += b?.len() as u64;
    }
    let down = t.elapsed();
    anyhow::ensure!(got == total, "download size mismatch");
    let rss_files = vm_rss_kib(child.id())?;

    // Baselines: write the same bytes into `cat > file`, read them from `cat file`.
    let dst = shm.path().join("blob2");
    let t = Instant::now();
    let mut cat = Command::new("sh")
        .arg("-c")
        .arg(format!("cat > {}", dst.display()))
        .stdin(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = cat.stdin.take().context("stdin")?;
        for _ in 0..chunks {
            stdin.write_all(&chunk)?;
        }
    }
    cat.wait()?;
    let up_base = t.elapsed();
    let t = Instant::now();
    let mut cat = Command::new("cat")
        .arg(&dst)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = cat.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let k = out.read(&mut buf)?;
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    cat.wait()?;
    let down_base = t.elapsed();
    anyhow::ensure!(got == total, "cat size mismatch");
    child.kill()?;
    child.wait()?;

    let mbps = |d: Duration| total as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!("## Guest daemon (`hutch-guest`)\n");
    println!("Static binary `{}`.\n", args.guest.display());
    println!("| figure | hutch-guest | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| binary size | {:.2} MiB | — | — | small |",
        size as f64 / (1u64 << 20) as f64
    );
    println!(
        "| exec → `/health` answered, p50 (p90) | {} ({}) | fork+exec+wait of static busybox `true`: {} | {:.1}× | < 5 ms |",
        ms(ready.pct(0.5)),
        ms(ready.pct(0.9)),
        ms(spawn_wait.pct(0.5)),
        ready.pct(0.5).as_secs_f64() / spawn_wait.pct(0.5).as_secs_f64()
    );
    println!(
        "| idle RSS | {:.2} MiB | — | — | < 4 MiB |",
        rss_idle as f64 / 1024.0
    );
    println!(
        "| RSS after {} commands / after 2×{} MiB of file transfer | {:.2} MiB / {:.2} MiB | — | — | flat |",
        n + 20,
        total >> 20,
        rss_after as f64 / 1024.0,
        rss_files as f64 / 1024.0
    );
    println!(
        "| command round trip (`/bin/true`, Start stream over the Unix socket), p50 (p90) | {} ({}) | fork+exec+wait of `/bin/true`: {} ({}) | {:.2}× | — |",
        ms(rt.pct(0.5)),
        ms(rt.pct(0.9)),
        ms(base.pct(0.5)),
        ms(base.pct(0.9)),
        rt.pct(0.5).as_secs_f64() / base.pct(0.5).as_secs_f64()
    );
    println!(
        "| upload {} MiB (`POST /files`, octet-stream) | {:.0} MiB/s | `cat > file` through a pipe: {:.0} MiB/s | {:.2}× | — |",
        total >> 20,
        mbps(up),
        mbps(up_base),
        mbps(up) / mbps(up_base)
    );
    println!(
        "| download {} MiB (`GET /files`) | {:.0} MiB/s | `cat file` through a pipe: {:.0} MiB/s | {:.2}× | — |",
        total >> 20,
        mbps(down),
        mbps(down_base),
        mbps(down) / mbps(down_base)
    );
    println!();
    Ok(())
}
