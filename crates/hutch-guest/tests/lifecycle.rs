//! The guest as a whole process: TCP and a Unix socket served at once, and
//! SIGTERM passed on to the processes it started before it exits cleanly.

#![allow(clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One raw HTTP/1.1 request; returns the status line and body.
fn http(
    stream: &mut impl ReadWrite,
    method: &str,
    path: &str,
    body: &[u8],
    ct: &str,
) -> (String, Vec<u8>) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: g\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&out[..split])
        .lines()
        .next()
        .unwrap()
        .to_owned();
    (status, out[split + 4..].to_vec())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn wait_ready(port: u16, sock: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the guest exited early"
        );
        if let (Ok(mut t), Ok(mut u)) = (
            std::net::TcpStream::connect(("127.0.0.1", port)),
            UnixStream::connect(sock),
        ) {
            let (a, _) = http(&mut t, "GET", "/health", b"", "text/plain");
            let (b, _) = http(&mut u, "GET", "/health", b"", "text/plain");
            assert!(a.contains("204") && b.contains("204"), "{a} / {b}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the guest did not come up on both listeners"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_tcp_and_unix_at_once_and_passes_sigterm_on() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("guest.sock");
    let marker = dir.path().join("got-term");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hutch-guest"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--listen-unix"])
        .arg(&sock)
        .args(["--stop-grace-secs", "5"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port, &sock, &mut child);

    // A process that records SIGTERM and then exits; started over the Unix
    // socket, so the TCP listener's process list is the same guest's.
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; sleep 60 & wait",
        marker.display()
    );
    let req =
        serde_json::json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false});
    let payload = serde_json::to_vec(&req).unwrap();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let mut u = UnixStream::connect(&sock).unwrap();
    let head = format!(
        "POST /process.Process/Start HTTP/1.1\r\nHost: g\r\nContent-Type: application/connect+json\r\nContent-Length: {}\r\n\r\n",
        frame.len()
    );
    u.write_all(head.as_bytes()).unwrap();
    u.write_all(&frame).unwrap();
    // Wait until TCP's List shows it: both listeners serve one guest.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (status, body) = http(
            &mut t,
            "POST",
            "/process.Process/List",
            b"{}",
            "application/json",
        );
        assert!(status.contains("200"), "{status}");
        if String::from_utf8_lossy(&body).contains("trap") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the process never showed up in List over TCP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the guest did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the guest exited with {status}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "term",
        "SIGTERM was not passed on"
    );
    assert!(!sock.exists(), "the socket file was left behind");
}
