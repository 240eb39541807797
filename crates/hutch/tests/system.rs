//! System tier, end to end: a real `hutch serve` (crun, built-in busybox
//! template, static guest) driven by the `hutch` CLI and by plain HTTP.
//!
//! 1. Sandboxes work through the CLI: create, exec with its exit code, cp in
//!    and out, get, ls.
//! 2. The file API reads through a symlink to `/` inside the sandbox and gets
//!    the sandbox's own file, never the host's.
//! 3. The server is killed with SIGKILL while two sandboxes run; one of them
//!    dies while the server is down. After a restart the live one is usable,
//!    the dead one is `failed` with a reason and left nothing behind.
//!    An exec session cut off by the crash has its process killed at the restart; a process
//!    left running in the background by a command survives it.
//!    A half-formatted pool image left by the killed server is gone after the restart.
//! 4. Delete removes every trace (no mount left under the data dir).
//!
//! Needs root, crun and the static guest (`make guest`, or
//! `HUTCH_GUEST_STATIC_BIN`): missing any of them fails the test by name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const PARENT: &str = "hutch-e2e";
const KEY: &str = "hk_e2etestkey0123456789abcdefghijklmn";

fn guest_bin() -> PathBuf {
    hutch_testkit::static_guest_bin()
}

fn prerequisites() {
    hutch_testkit::require_root("sandboxes");
    hutch_testkit::require_file("/usr/bin/crun", "run `make setup`");
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hutch serve` on `listen` under cgroup parent `parent`, stdout piped; started through
/// `prlimit` with a soft limit of 1024 open files (a systemd service's default).
fn serve_command(data: &Path, listen: &str, parent: &str) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:", "--", env!("CARGO_BIN_EXE_hutch")]);
    cmd.args(["serve", "--listen", listen, "--cgroup-parent", parent])
        .arg("--data-dir")
        .arg(data)
        .arg("--guest-bin")
        .arg(guest_bin())
        .env("HUTCH_ADMIN_KEY", KEY)
        .env("HUTCH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

fn serve(data: &Path) -> Server {
    serve_under(data, PARENT)
}

/// `hutch serve` under its own cgroup parent: a server's recovery removes every sandbox
/// under its parent that its store does not know, so tests running at once use one each.
fn serve_under(data: &Path, parent: &str) -> Server {
    let mut child = serve_command(data, "127.0.0.1:0", parent)
        .spawn()
        .expect("starting hutch serve");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(u) = l.strip_prefix("Hutch is serving at ") {
                    break u.trim().to_owned();
                }
            }
            _ => panic!("hutch serve exited before serving"),
        }
    };
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

/// A supervisor that closes the pipe (after reading the URL, or at once)
/// must not take the server down with it: printing the banner used to panic
/// on EPIPE and end `hutch serve` (seen as a reset connection in `make bench`).
#[test]
fn serve_outlives_a_closed_stdout() {
    prerequisites();
    let tmp = hutch_testkit::passable_tempdir("/var/tmp", "hutch-e2e-");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = serve_command(
        &tmp.path().join("data"),
        &format!("127.0.0.1:{port}"),
        "hutch-e2e-stdout",
    )
    .spawn()
    .expect("starting hutch serve");
    // The read end is closed before the server prints anything.
    drop(child.stdout.take());
    let mut server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (code, body) = get(&server, "/v1/templates");
        if code == 200 {
            assert!(body.contains("busybox"), "{body}");
            break;
        }
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "hutch serve exited"
        );
        assert!(std::time::Instant::now() < deadline, "not serving in 120 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "hutch serve exited after it began serving"
    );

    // It raised its soft limit on open files to the hard one...
    let nofile = |limits: &str| -> (String, String) {
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files");
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[3].to_owned(), f[4].to_owned())
    };
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let (soft, hard) = nofile(&limits);
    assert_eq!(soft, hard, "{limits}");
    // ...from the 1024 it was started with (the twin: prlimit does lower it).
    let out = Command::new("prlimit")
        .args(["--nofile=1024:", "--", "cat", "/proc/self/limits"])
        .output()
        .expect("prlimit");
    let (soft, hard) = nofile(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(soft, "1024");
    assert_ne!(
        hard, "1024",
        "the hard limit must be above 1024 for this test"
    );
}

fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(args)
        .env("HUTCH_URL", &server.url)
        .env("HUTCH_API_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .expect("running the hutch CLI")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "CLI failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let canon = std::fs::canonicalize(dir).unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(&canon))
        .collect()
}

fn get(server: &Server, path: &str) -> (u16, String) {
    call(server, "GET", path, &[], None)
}

/// `method path` with extra curl arguments and an optional body; (status, body).
fn call(
    server: &Server,
    method: &str,
    path: &str,
    extra: &[&str],
    body: Option<&Path>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H"])
        .arg(format!("Authorization: Bearer {KEY}"))
        .args(extra);
    if let Some(file) = body {
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    let out = cmd
        .arg(format!("{}{path}", server.url))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap_or(0), body.to_owned())
}

#[test]
fn serve_cli_files_and_sigkill_recovery() {
    prerequisites();
    let tmp = hutch_testkit::passable_tempdir("/var/tmp", "hutch-e2e-");
    let data = tmp.path().join("data");
    let server = serve(&data);

    // 1. The CLI.
    let a = ok(&cli(
        &server,
        &[
            "sandbox",
            "create",
            "--template",
            "busybox",
            "--memory-mb",
            "64",
        ],
    ))
    .trim()
    .to_owned();
    let out = cli(
        &server,
        &[
            "exec",
            &a,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "exec exits with the command's code"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let local = tmp.path().join("in.txt");
    std::fs::write(&local, "payload\n").unwrap();
    ok(&cli(
        &server,
        &["cp", local.to_str().unwrap(), &format!("{a}:/tmp/in.txt")],
    ));
    let back = tmp.path().join("back.txt");
    ok(&cli(
        &server,
        &["cp", &format!("{a}:/tmp/in.txt"), back.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "payload\n");
    assert!(ok(&cli(&server, &["sandbox", "ls"])).contains(&a));
    assert!(ok(&cli(&server, &["sandbox", "get", &a, "--json"])).contains("\"running\""));

    // 2. A symlink to / inside the sandbox resolves inside the sandbox.
    ok(&cli(
        &server,
        &[
            "exec",
            &a,
            "--",
            "sh",
            "-c",
            "ln -s / /tmp/root && echo sandbox-marker > /etc/marker",
        ],
    ));
    let (code, body) = get(
        &server,
        &format!("/v1/sandboxes/{a}/files?path=/tmp/root/etc/marker"),
    );
    assert_eq!((code, body.as_str()), (200, "sandbox-marker\n"));
    let (code, body) = get(
        &server,
        &format!("/v1/sandboxes/{a}/files?path=/tmp/root/etc/hostname"),
    );
    assert_eq!(code, 200);
    // The positive twin: the host has a different file at that path, so the
    // check would catch a read that escaped.
    let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert_ne!(
        body.trim(),
        host_hostname.trim(),
        "the read reached the host's /etc/hostname"
    );
    assert!(
        !Path::new("/etc/marker").exists(),
        "the sandbox wrote the host's /etc"
    );
    let (code, _) = get(
        &server,
        &format!("/v1/sandboxes/{a}/files?path=/tmp/root/etc/shadow-of-host-only"),
    );
    assert_eq!(code, 404);

    // 3. SIGKILL the server with two sandboxes; kill one sandbox meanwhile.
    let b = ok(&cli(
        &server,
        &[
            "sandbox",
            "create",
            "--template",
            "busybox",
            "--memory-mb",
            "64",
        ],
    ))
    .trim()
    .to_owned();
    // In `a`: an exec session whose client goes with the server, and a process a command left
    // running in the background (not a session: it must survive recovery).
    let mut session = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["exec", &a, "--", "sleep", "1001"])
        .env("HUTCH_URL", &server.url)
        .env("HUTCH_API_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running the hutch CLI");
    ok(&cli(
        &server,
        &[
            "exec",
            &a,
            "--",
            "sh",
            "-c",
            "setsid sleep 1002 </dev/null >/dev/null 2>&1 &",
        ],
    ));
    let ps = |server: &Server| ok(&cli(server, &["exec", &a, "--", "ps", "-o", "args"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = ps(&server);
        if now.contains("sleep 1001") && now.contains("sleep 1002") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the processes did not start: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    let _ = session.kill();
    let _ = session.wait();
    let procs = format!("/sys/fs/cgroup/pids/{PARENT}/{b}/cgroup.procs");
    for pid in std::fs::read_to_string(&procs)
        .expect("the sandbox's cgroup")
        .split_whitespace()
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // The create of `b` took a pooled disk image and started a refill, which the kill may
    // have cut short; a half-formatted image of a dead filler is planted too, so the check
    // does not depend on the timing.
    let pool = data.join("agent/rootfs/.pool");
    let size = std::fs::read_dir(&pool)
        .expect("the disk-image pool")
        .flatten()
        .next()
        .expect("a pool of one size")
        .path();
    std::fs::write(size.join("4194305-0.tmp"), b"half-formatted").unwrap();
    let server = serve(&data);
    let litter: Vec<_> = std::fs::read_dir(&size)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && !n.starts_with(&format!("{}-", server.child.id())))
        .collect();
    assert!(
        litter.is_empty(),
        "crash litter survived the restart: {litter:?}"
    );
    assert_eq!(
        ok(&cli(&server, &["exec", &a, "--", "cat", "/tmp/in.txt"])),
        "payload\n",
        "the live sandbox is usable after restart"
    );
    // Recovery ended the orphaned session's process and left the background one alone.
    let now = ps(&server);
    assert!(
        !now.contains("sleep 1001"),
        "an orphaned exec session outlived the crash: {now}"
    );
    assert!(
        now.contains("sleep 1002"),
        "recovery killed a process that was no session: {now}"
    );
    let got = ok(&cli(&server, &["sandbox", "get", &b, "--json"]));
    assert!(
        got.contains("\"failed\""),
        "the dead sandbox is failed: {got}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while mounts_under(&data).iter().any(|m| m.contains(&b)) {
        assert!(
            Instant::now() < deadline,
            "the dead sandbox left mounts: {:?}",
            mounts_under(&data)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // 4. Delete leaves nothing.
    ok(&cli(&server, &["sandbox", "rm", &a, &b]));
    let out = cli(&server, &["sandbox", "get", &a]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        mounts_under(&data).is_empty(),
        "mounts left: {:?}",
        mounts_under(&data)
    );
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/pids/{PARENT}/{a}")).exists(),
        "cgroup left"
    );

    // 5. Every cached layer is also in the blob store, the copy other hosts fetch.
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let cached = names(&data.join("agent/layers"));
    assert_eq!(cached.len(), 2, "busybox and debian:12: {cached:?}");
    assert_eq!(names(&data.join("blobs/sha256")), cached);
}

/// One request of [`bad_input_is_a_4xx_never_a_5xx`].
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    extra: Vec<String>,
    body: Option<PathBuf>,
}

fn case(what: &'static str, method: &'static str, path: String, extra: &[&str]) -> Case {
    Case {
        what,
        method,
        path,
        extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        body: None,
    }
}

fn json_case(what: &'static str, path: String, body: &str) -> Case {
    case(
        what,
        "POST",
        path,
        &["-H", "content-type: application/json", "-d", body],
    )
}

fn upload_case(what: &'static str, path: String, body: &Path) -> Case {
    Case {
        body: Some(body.to_owned()),
        ..case(what, "PUT", path, &[])
    }
}

/// Bad input is the client's error: every request below, each a mistake or a probe a
/// tenant can make, is answered with a 4xx and a stable error code, never a 5xx (they were
/// 503s: an unknown user, moving a mount point, uploading to `/proc/1/mem`, and now and then
/// an upload refused while its body was still being sent). The sandbox stays usable.
#[test]
fn bad_input_is_a_4xx_never_a_5xx() {
    prerequisites();
    let tmp = hutch_testkit::passable_tempdir("/var/tmp", "hutch-e2e-");
    let server = serve_under(&tmp.path().join("data"), "hutch-e2e-input");
    let id = ok(&cli(
        &server,
        &["sandbox", "create", "--template", "busybox"],
    ))
    .trim()
    .to_owned();
    let small = tmp.path().join("small");
    std::fs::write(&small, b"xx").unwrap();
    // Large enough that the refusal races the body still being sent.
    let large = tmp.path().join("large");
    std::fs::write(&large, vec![b'x'; 4 << 20]).unwrap();
    let websocket = [
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let sb = format!("/v1/sandboxes/{id}");
    let exec = format!("{sb}/exec");
    let files = format!("{sb}/files");
    let mut cases = vec![
        json_case(
            "exec as an unknown user",
            exec.clone(),
            r#"{"cmd":["id"],"user":"nobody-such","wait":true}"#,
        ),
        json_case(
            "streamed exec as an unknown user",
            exec.clone(),
            r#"{"cmd":["id"],"user":"nobody-such"}"#,
        ),
        json_case(
            "exec in a missing cwd",
            exec.clone(),
            r#"{"cmd":["id"],"cwd":"/nonexistent","wait":true}"#,
        ),
        json_case(
            "exec of a missing program",
            exec.clone(),
            r#"{"cmd":["/nonexistent"],"wait":true}"#,
        ),
        json_case(
            "exec of a directory",
            exec,
            r#"{"cmd":["/tmp"],"wait":true}"#,
        ),
        case(
            "download as an unknown user",
            "GET",
            format!("{files}?path=/etc/hostname&user=nobody-such"),
            &[],
        ),
        case(
            "list as an unknown user",
            "GET",
            format!("{files}/list?path=/&user=nobody-such"),
            &[],
        ),
        case(
            "stat as an unknown user",
            "GET",
            format!("{files}/stat?path=/&user=nobody-such"),
            &[],
        ),
        upload_case(
            "upload as an unknown user",
            format!("{files}?path=/tmp/u&user=nobody-such"),
            &small,
        ),
        case(
            "terminal as an unknown user",
            "GET",
            format!("{sb}/pty?user=nobody-such"),
            &websocket,
        ),
        json_case(
            "mkdir as an unknown user",
            format!("{files}/mkdir"),
            r#"{"path":"/tmp/d","user":"nobody-such"}"#,
        ),
        json_case(
            "mkdir in /proc",
            format!("{files}/mkdir"),
            r#"{"path":"/proc/foo"}"#,
        ),
        json_case(
            "moving the guest's config mount",
            format!("{files}/move"),
            r#"{"source":"/.hutch/config","destination":"/tmp/x"}"#,
        ),
        json_case(
            "moving /proc",
            format!("{files}/move"),
            r#"{"source":"/proc","destination":"/tmp/p"}"#,
        ),
        json_case(
            "moving a file into /proc",
            format!("{files}/move"),
            r#"{"source":"/etc/passwd","destination":"/proc/passwd"}"#,
        ),
        case(
            "removing the guest's config mount",
            "DELETE",
            format!("{files}?path=/.hutch/config"),
            &[],
        ),
        case(
            "removing /.hutch",
            "DELETE",
            format!("{files}?path=/.hutch"),
            &[],
        ),
        case(
            "removing /proc",
            "DELETE",
            format!("{files}?path=/proc"),
            &[],
        ),
        upload_case(
            "upload to /proc/1/mem",
            format!("{files}?path=/proc/1/mem"),
            &small,
        ),
        upload_case(
            "upload to /proc/self/mem",
            format!("{files}?path=/proc/self/mem"),
            &small,
        ),
        upload_case(
            "upload into /sys/fs/cgroup",
            format!("{files}?path=/sys/fs/cgroup/x"),
            &small,
        ),
        upload_case(
            "upload to /dev/null",
            format!("{files}?path=/dev/null"),
            &small,
        ),
        case(
            "download of /proc/1/fd/1",
            "GET",
            format!("{files}?path=/proc/1/fd/1"),
            &[],
        ),
        case(
            "download of /dev/zero",
            "GET",
            format!("{files}?path=/dev/zero"),
            &[],
        ),
        case(
            "download of an empty path",
            "GET",
            format!("{files}?path="),
            &[],
        ),
    ];
    for _ in 0..20 {
        cases.push(upload_case(
            "upload over the guest's token",
            format!("{files}?path=/.hutch/config/token"),
            &large,
        ));
    }
    let mut wrong = Vec::new();
    for c in &cases {
        let extra: Vec<&str> = c.extra.iter().map(String::as_str).collect();
        let (code, reply) = call(&server, c.method, &c.path, &extra, c.body.as_deref());
        if !(400..500).contains(&code) || !reply.contains("\"code\"") {
            wrong.push(format!(
                "{}: {} {} -> {code} {reply}",
                c.what, c.method, c.path
            ));
        }
    }
    let log = std::fs::read_to_string(
        tmp.path()
            .join(format!("data/agent/sandboxes/{id}/guest.log")),
    )
    .unwrap_or_default();
    let state = cli(&server, &["sandbox", "get", &id, "--json"]);
    let procs: Vec<String> = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/hutch-e2e-input/{id}/cgroup.procs"
    ))
    .unwrap_or_default()
    .split_whitespace()
    .map(|p| {
        format!(
            "{p}:{}",
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ")
        )
    })
    .collect();
    assert!(
        wrong.is_empty(),
        "not a 4xx with a code:\n{}\nthe sandbox: {}\nits processes: {procs:?}\nits guest's log:\n{log}",
        wrong.join("\n"),
        String::from_utf8_lossy(&state.stdout)
    );
    // Nothing was lost: the sandbox answers, and the unknown user's upload wrote nothing.
    assert_eq!(
        ok(&cli(&server, &["exec", &id, "--", "echo", "fine"])),
        "fine\n"
    );
    let (code, _) = get(&server, &format!("{files}?path=/tmp/u"));
    assert_eq!(code, 404, "the unknown user's upload wrote a file");
    // The server is killed at the end of the test: delete first, or the sandbox outlives it.
    ok(&cli(&server, &["sandbox", "rm", &id]));
}
