//! `process.Process` end to end: a real guest on loopback, driven by a small
//! Connect client written here (reqwest + hutch_envd framing).
//!
//! Most tests share one in-process guest (`hutch_guest::router` +
//! `server::serve` on 127.0.0.1:0): its reaper calls `waitpid(-1)`, so one
//! test process must hold only one of them. The flood and orphan tests run
//! the guest binary as a child instead, to measure its RSS and to look at
//! its children. The tests need root (to switch users) and fail, never skip,
//! when something is missing.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use hutch_envd::{
    connect::{FrameDecoder, envelope},
    process::{
        ProcessConfig, StartRequest, StartResponse, process_event::Event,
        process_event::data_event::Output,
    },
};
use prost::Message as _;
use serde_json::{Value, json};

const NOBODY: u32 = 65534;
const EXTRA_GROUP: u32 = 4242;

// ---------------------------------------------------------------- client

#[derive(Debug, Clone, PartialEq)]
struct RpcErr {
    code: String,
    message: String,
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    user: Option<String>,
}

/// One decoded item of a server stream.
#[derive(Debug)]
enum Item {
    Event(Value),
    /// End of stream, with the error it carried.
    End(Option<RpcErr>),
}

struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    dec: FrameDecoder,
}

impl Events {
    async fn next(&mut self) -> Item {
        loop {
            if let Some(f) = self.dec.next_frame().expect("valid frames") {
                let v: Value = serde_json::from_slice(&f.payload).expect("frame JSON");
                if f.is_end_stream() {
                    let err = v.get("error").map(|e| RpcErr {
                        code: e["code"].as_str().unwrap_or_default().into(),
                        message: e["message"].as_str().unwrap_or_default().into(),
                    });
                    return Item::End(err);
                }
                return Item::Event(v["event"].clone());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.dec.push(&chunk),
                Some(Err(e)) => panic!("stream body failed: {e}"),
                None => panic!("stream ended without an end-of-stream envelope"),
            }
        }
    }
}

/// Everything a process stream carried.
#[derive(Debug, Default)]
struct Outcome {
    pid: u32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    pty: Vec<u8>,
    end: Value,
    keepalives: usize,
}

impl Outcome {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn exit_code(&self) -> i64 {
        self.end
            .get("exitCode")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }
    fn exited(&self) -> bool {
        self.end
            .get("exited")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    fn status(&self) -> &str {
        self.end["status"].as_str().unwrap_or_default()
    }
    fn error(&self) -> Option<&str> {
        self.end.get("error").and_then(Value::as_str)
    }
}

fn b64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().expect("base64 string"))
        .expect("base64")
}

impl Client {
    fn tcp(addr: std::net::SocketAddr) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
            user: None,
        }
    }

    fn unix(path: &Path) -> Client {
        let http = reqwest::Client::builder()
            .unix_socket(path)
            .build()
            .expect("unix client");
        Client {
            http,
            base: "http://guest".into(),
            user: None,
        }
    }

    fn as_user(&self, user: &str) -> Client {
        Client {
            user: Some(user.into()),
            ..self.clone()
        }
    }

    fn post(&self, method: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(format!("{}/process.Process/{method}", self.base));
        if let Some(u) = &self.user {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:"));
            r = r.header("authorization", format!("Basic {v}"));
        }
        r
    }

    async fn unary(&self, method: &str, body: Value) -> Result<Value, RpcErr> {
        let resp = self
            .post(method)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent");
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.expect("JSON reply");
        if ok {
            Ok(v)
        } else {
            Err(RpcErr {
                code: v["code"].as_str().unwrap_or_default().into(),
                message: v["message"].to_string(),
            })
        }
    }

    async fn stream(&self, method: &str, body: Value, headers: &[(&str, &str)]) -> Events {
        let mut r = self
            .post(method)
            .header("content-type", "application/connect+json")
            .body(envelope(0, body.to_string().as_bytes()));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.expect("request sent");
        assert_eq!(
            resp.status(),
            200,
            "streams answer 200, errors travel in the end envelope"
        );
        Events {
            body: resp.bytes_stream().boxed(),
            dec: FrameDecoder::new(64 << 20),
        }
    }

    /// Starts a process and returns its stream, checking the first event.
    async fn start(&self, body: Value, headers: &[(&str, &str)]) -> Result<(u32, Events), RpcErr> {
        let mut ev = self.stream("Start", body, headers).await;
        match ev.next().await {
            Item::Event(e) => {
                let pid = e["start"]["pid"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("first event must be start, got {e}"));
                Ok((pid as u32, ev))
            }
            Item::End(Some(err)) => Err(err),
            Item::End(None) => panic!("stream ended before start"),
        }
    }

    /// Starts a process and collects its whole stream.
    async fn run(&self, body: Value) -> Result<Outcome, RpcErr> {
        let (pid, ev) = self.start(body, &[]).await?;
        Ok(collect(pid, ev).await)
    }

    async fn sh(&self, script: &str) -> Outcome {
        self.run(json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false}))
            .await
            .unwrap_or_else(|e| panic!("start {script:?}: {e:?}"))
    }
}

async fn collect(pid: u32, mut ev: Events) -> Outcome {
    let mut o = Outcome {
        pid,
        ..Default::default()
    };
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        let item = tokio::select! {
            item = ev.next() => item,
            _ = &mut deadline => panic!("process {pid} did not end within 60 s; so far: {o:?}"),
        };
        match item {
            Item::Event(e) => {
                if let Some(d) = e.get("data") {
                    for (k, buf) in [
                        ("stdout", &mut o.stdout),
                        ("stderr", &mut o.stderr),
                        ("pty", &mut o.pty),
                    ] {
                        if let Some(s) = d.get(k) {
                            buf.extend(b64(s));
                        }
                    }
                } else if let Some(end) = e.get("end") {
                    o.end = end.clone();
                } else if e.get("keepalive").is_some() {
                    o.keepalives += 1;
                } else {
                    panic!("unexpected event {e}");
                }
            }
            Item::End(None) => {
                assert!(
                    !o.end.is_null(),
                    "stream closed without an end event: {o:?}"
                );
                return o;
            }
            Item::End(Some(err)) => panic!("stream of {pid} failed: {err:?}"),
        }
    }
}

/// Reads events until `pred` holds for the accumulated output, or panics.
async fn read_until(ev: &mut Events, what: &str, mut pred: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut acc = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !pred(&acc) {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, ev.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "waiting for {what}: got only {:?}",
                    String::from_utf8_lossy(&acc)
                )
            });
        match item {
            Item::Event(e) => {
                if let Some(d) = e.get("data") {
                    for k in ["stdout", "stderr", "pty"] {
                        if let Some(s) = d.get(k) {
                            acc.extend(b64(s));
                        }
                    }
                }
            }
            Item::End(e) => panic!(
                "stream ended ({e:?}) waiting for {what}: {:?}",
                String::from_utf8_lossy(&acc)
            ),
        }
    }
    acc
}

// ---------------------------------------------------------------- guests

struct Shared {
    addr: std::net::SocketAddr,
    fixture: PathBuf,
}

/// Writes passwd/group fixtures and a home for `nobody` under `dir`.
fn write_fixture(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("etc")).expect("fixture dir");
    std::fs::create_dir_all(dir.join("nobody-home")).expect("nobody home");
    std::fs::create_dir_all(dir.join("cgroup")).expect("cgroup fixture");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod fixture");
    std::os::unix::fs::chown(dir.join("nobody-home"), Some(NOBODY), Some(NOBODY))
        .expect("chown (tests need root)");
    std::fs::write(
        dir.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:{NOBODY}:{NOBODY}:nobody:{}:/bin/sh\n",
            dir.join("nobody-home").display()
        ),
    )
    .expect("passwd");
    std::fs::write(
        dir.join("etc/group"),
        format!("root:x:0:\nnogroup:x:{NOBODY}:\nhutchtest:x:{EXTRA_GROUP}:nobody\n"),
    )
    .expect("group");
    std::fs::write(dir.join("cgroup/memory.events"), "oom 0\noom_kill 0\n")
        .expect("cgroup fixture");
}

fn fixture_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hutch-process-{name}-{}", std::process::id()));
    write_fixture(&dir);
    dir
}

/// The in-process guest every test but the binary ones shares.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        assert_eq!(
            rustix::process::geteuid().as_raw(),
            0,
            "these tests switch users and need root"
        );
        let fixture = fixture_dir("shared");
        let (tx, rx) = std::sync::mpsc::channel();
        let mut config = hutch_guest::Config::for_tests();
        config.etc_root = fixture.clone();
        config.cgroup_root = fixture.join("cgroup");
        config
            .envs
            .insert("FROM_CONFIG".into(), "config-value".into());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let state = hutch_guest::GuestState::new(config).expect("guest state");
                let app = hutch_guest::router(state);
                hutch_guest::server::serve(app, Some(listener), None, std::future::pending())
                    .await
                    .expect("serve");
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("guest bound");
        Shared { addr, fixture }
    })
}

fn client() -> Client {
    Client::tcp(shared().addr)
}

/// The guest binary as a child process, on a Unix socket.
struct ChildGuest {
    child: std::process::Child,
    client: Client,
    _dir: PathBuf,
}

impl ChildGuest {
    async fn spawn(name: &str) -> ChildGuest {
        let dir = fixture_dir(name);
        let sock = dir.join("guest.sock");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hutch-guest"))
            .args(["--listen", "none", "--listen-unix"])
            .arg(&sock)
            .env("HUTCH_GUEST_ETC_ROOT", &dir)
            .env("HUTCH_GUEST_CGROUP_ROOT", dir.join("cgroup"))
            .spawn()
            .expect("spawn the guest binary");
        let client = Client::unix(&sock);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = client.http.get("http://guest/health").send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "guest binary did not answer /health within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ChildGuest {
            child,
            client,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // The shared guest's reaper may reap it first; then this is ECHILD.
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- /proc

fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", "VmRSS").expect("VmRSS of the guest")
}

async fn wait_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some((state, _)) = proc_stat(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) still there in state {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn stdout_stderr_and_exit_codes() {
    let c = client();
    let o = c.sh("echo out; echo err >&2; exit 3").await;
    assert!(o.pid > 0);
    assert_eq!(
        (o.out().as_str(), o.stderr.as_slice()),
        ("out\n", &b"err\n"[..])
    );
    assert_eq!(
        (o.exit_code(), o.exited(), o.status()),
        (3, true, "exit status 3")
    );
    assert_eq!(o.error(), Some("exit status 3"));

    let o = c.sh("true").await;
    assert_eq!(
        (o.exit_code(), o.exited(), o.status(), o.error()),
        (0, true, "exit status 0", None)
    );
}

#[tokio::test]
async fn death_by_signal_reads_like_envd() {
    let c = client();
    let o = c.sh("kill -KILL $$").await;
    assert_eq!(
        (o.exit_code(), o.exited(), o.status()),
        (-1, false, "signal: killed")
    );
    assert_eq!(
        o.error(),
        Some("signal: killed"),
        "not an OOM kill: the fixture counter did not move"
    );
    let o = c.sh("kill -TERM $$").await;
    assert_eq!((o.exit_code(), o.status()), (-1, "signal: terminated"));
}

#[tokio::test]
async fn env_cwd_and_user() {
    let c = client();
    let o = c
        .sh("echo $HOME $USER $LOGNAME $SHELL $FROM_CONFIG; pwd; id -u")
        .await;
    assert_eq!(o.out(), "/root root root /bin/sh config-value\n/root\n0\n");

    let home = shared().fixture.join("nobody-home");
    let script = "echo $HOME $USER $LOGNAME $FOO $FROM_CONFIG; pwd; id -u; id -g; id -G";
    let o = c
        .as_user("nobody")
        .run(json!({"process": {"cmd": "/bin/sh", "args": ["-c", script], "envs": {"FOO": "bar", "FROM_CONFIG": "request"}}}))
        .await
        .expect("start as nobody");
    let lines: Vec<String> = o.out().lines().map(str::to_owned).collect();
    assert_eq!(
        lines[0],
        format!("{} nobody nobody bar request", home.display()),
        "{o:?}"
    );
    assert_eq!(
        lines[1],
        home.display().to_string(),
        "default cwd is the user's home"
    );
    assert_eq!(lines[2], NOBODY.to_string());
    assert_eq!(lines[3], NOBODY.to_string());
    let groups: Vec<u32> = lines[4]
        .split_whitespace()
        .map(|g| g.parse().expect("gid"))
        .collect();
    assert!(
        groups.contains(&EXTRA_GROUP) && groups.contains(&NOBODY),
        "supplementary groups: {groups:?}"
    );

    let o = c
        .run(json!({"process": {"cmd": "/bin/pwd", "cwd": "/tmp"}}))
        .await
        .expect("start with cwd");
    assert_eq!(o.out(), "/tmp\n");

    let err = c
        .run(json!({"process": {"cmd": "/bin/pwd", "cwd": "/no/such/dir"}}))
        .await
        .expect_err("bad cwd");
    assert_eq!(err.code, "invalid_argument");
    assert!(
        err.message.contains("/no/such/dir") && err.message.contains("does not exist"),
        "{err:?}"
    );
}

#[tokio::test]
async fn stdin_send_input_and_close() {
    let c = client();
    let (pid, mut ev) = c
        .start(
            json!({"process": {"cmd": "/bin/sh", "args": ["-c", "cat; sleep 1"]}, "stdin": true}),
            &[],
        )
        .await
        .expect("start cat");
    let sel = json!({"pid": pid});
    c.unary(
        "SendInput",
        json!({"process": sel, "input": {"stdin": "aGVsbG8K"}}),
    )
    .await
    .expect("send input");
    read_until(&mut ev, "echoed stdin", |b| b == b"hello\n").await;
    c.unary("CloseStdin", json!({"process": sel}))
        .await
        .expect("close stdin");
    c.unary("CloseStdin", json!({"process": sel}))
        .await
        .expect("closing twice is fine, as envd");
    let o = collect(pid, ev).await;
    assert_eq!(o.exit_code(), 0, "cat ended at EOF: {o:?}");

    // Without stdin the process reads /dev/null, and input is refused.
    let (pid, ev) =
        c.start(json!({"process": {"cmd": "/bin/sh", "args": ["-c", "sleep 0.3; cat"]}, "stdin": false}), &[])
            .await
            .expect("start");
    let err = c
        .unary(
            "SendInput",
            json!({"process": {"pid": pid}, "input": {"stdin": "eA=="}}),
        )
        .await
        .expect_err("no stdin");
    assert_eq!(err.code, "failed_precondition", "{err:?}");
    let o = collect(pid, ev).await;
    assert_eq!((o.exit_code(), o.stdout.len()), (0, 0));

    // Absent `stdin` means open (envd before 0.3.0 semantics).
    let (pid, ev) = c
        .start(
            json!({"process": {"cmd": "/usr/bin/head", "args": ["-c", "3"]}}),
            &[],
        )
        .await
        .expect("start");
    c.unary(
        "SendInput",
        json!({"process": {"pid": pid}, "input": {"stdin": "YWJjZA=="}}),
    )
    .await
    .expect("input");
    assert_eq!(collect(pid, ev).await.out(), "abc");
}

#[tokio::test]
async fn stream_input_feeds_stdin() {
    let c = client();
    let (pid, ev) = c
        .start(json!({"process": {"cmd": "/bin/cat"}, "stdin": true}), &[])
        .await
        .expect("start cat");
    let msgs = [
        json!({"start": {"process": {"pid": pid}}}),
        json!({"data": {"input": {"stdin": base64::engine::general_purpose::STANDARD.encode("one ")}}}),
        json!({"keepalive": {}}),
        json!({"data": {"input": {"stdin": base64::engine::general_purpose::STANDARD.encode("two\n")}}}),
    ];
    let mut body = Vec::new();
    for m in msgs {
        body.extend_from_slice(&envelope(0, m.to_string().as_bytes()));
    }
    body.extend_from_slice(&envelope(2, b"{}"));
    let resp = c
        .post("StreamInput")
        .header("content-type", "application/connect+json")
        .body(body)
        .send()
        .await
        .expect("stream input");
    assert_eq!(resp.status(), 200);
    let mut dec = FrameDecoder::new(1 << 20);
    dec.push(&resp.bytes().await.expect("body"));
    let first = dec.next_frame().expect("frame").expect("a reply message");
    assert!(
        !first.is_end_stream(),
        "StreamInput replied with an error: {:?}",
        String::from_utf8_lossy(&first.payload)
    );
    let last = dec.next_frame().expect("frame").expect("end of stream");
    assert!(last.is_end_stream());
    assert_eq!(last.end_stream_error().expect("end"), None);

    c.unary("CloseStdin", json!({"process": {"pid": pid}}))
        .await
        .expect("close");
    assert_eq!(collect(pid, ev).await.out(), "one two\n");

    // Data before start is refused.
    let mut body = envelope(
        0,
        json!({"data": {"input": {"stdin": "eA=="}}})
            .to_string()
            .as_bytes(),
    )
    .to_vec();
    body.extend_from_slice(&envelope(2, b"{}"));
    let resp = c
        .post("StreamInput")
        .header("content-type", "application/connect+json")
        .body(body)
        .send()
        .await;
    let mut dec = FrameDecoder::new(1 << 20);
    dec.push(&resp.expect("sent").bytes().await.expect("body"));
    let f = dec.next_frame().expect("frame").expect("end");
    assert_eq!(
        f.end_stream_error().expect("json").map(|e| e.code.as_str()),
        Some("invalid_argument")
    );
}

#[tokio::test]
async fn pty_session_with_resize() {
    let c = client();
    let script = "tty; stty size; echo TERM=$TERM; read line; stty size; echo got:$line";
    let (pid, mut ev) = c
        .start(
            json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "pty": {"size": {"cols": 100, "rows": 30}}}),
            &[],
        )
        .await
        .expect("start pty");
    let out = read_until(&mut ev, "tty and size", |b| {
        String::from_utf8_lossy(b).contains("TERM=")
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/dev/pts/"), "tty output: {text:?}");
    assert!(text.contains("30 100"), "stty size: {text:?}");
    assert!(text.contains("TERM=xterm-256color"), "{text:?}");

    let sel = json!({"pid": pid});
    c.unary(
        "Update",
        json!({"process": sel, "pty": {"size": {"cols": 120, "rows": 40}}}),
    )
    .await
    .expect("resize");
    let err = c
        .unary("CloseStdin", json!({"process": sel}))
        .await
        .expect_err("no CloseStdin on a PTY");
    assert_eq!(err.code, "failed_precondition");
    let err = c
        .unary(
            "SendInput",
            json!({"process": sel, "input": {"stdin": "eA=="}}),
        )
        .await
        .expect_err("stdin");
    assert_eq!(err.code, "failed_precondition");
    c.unary(
        "SendInput",
        json!({"process": sel, "input": {"pty": "aGkK"}}),
    )
    .await
    .expect("pty input");
    let o = collect(pid, ev).await;
    let text = String::from_utf8_lossy(&o.pty);
    assert!(
        text.contains("40 120") && text.contains("got:hi"),
        "after resize: {text:?}"
    );
    assert_eq!(o.exit_code(), 0);

    // Update on a process without a PTY.
    let (pid, ev) = c
        .start(
            json!({"process": {"cmd": "/bin/sleep", "args": ["0.2"]}}),
            &[],
        )
        .await
        .expect("start");
    let err = c
        .unary(
            "Update",
            json!({"process": {"pid": pid}, "pty": {"size": {"cols": 1, "rows": 1}}}),
        )
        .await
        .expect_err("no pty");
    assert_eq!(err.code, "failed_precondition");
    collect(pid, ev).await;
}

#[tokio::test]
async fn connect_by_tag_list_and_cleanup() {
    let c = client();
    let tag = format!("srv-{}", std::process::id());
    let body = json!({"process": {"cmd": "/bin/sh", "args": ["-c", "sleep 1; echo late"], "envs": {"K": "V"}, "cwd": "/tmp"}, "tag": tag, "stdin": false});
    let (pid, start_stream) = c.start(body.clone(), &[]).await.expect("start tagged");

    let list = c.unary("List", json!({})).await.expect("list");
    let me = list["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned();
    let me = me.unwrap_or_else(|| panic!("{pid} not listed: {list}"));
    assert_eq!(me["tag"], tag);
    assert_eq!(me["config"]["cmd"], "/bin/sh");
    assert_eq!(me["config"]["envs"]["K"], "V");
    assert_eq!(me["config"]["cwd"], "/tmp");

    let err = c
        .start(body, &[])
        .await
        .err()
        .expect("duplicate tag refused");
    assert_eq!(err.code, "already_exists");

    let mut attached = c
        .stream("Connect", json!({"process": {"tag": tag}}), &[])
        .await;
    let Item::Event(first) = attached.next().await else {
        panic!("connect ended at once")
    };
    assert_eq!(first["start"]["pid"], pid);
    let attached = collect(pid, attached).await;
    assert_eq!(attached.out(), "late\n");
    let started = collect(pid, start_stream).await;
    assert_eq!(started.out(), "late\n");

    // Ended processes leave the registry.
    let list = c.unary("List", json!({})).await.expect("list");
    assert!(
        !list["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .any(|p| p["pid"] == pid),
        "{list}"
    );
    let mut gone = c
        .stream("Connect", json!({"process": {"pid": pid}}), &[])
        .await;
    match gone.next().await {
        Item::End(Some(e)) => assert_eq!(e.code, "not_found"),
        other => panic!("connect to an ended process: {other:?}"),
    }
    let mut gone = c
        .stream("Connect", json!({"process": {"tag": tag}}), &[])
        .await;
    assert!(matches!(gone.next().await, Item::End(Some(e)) if e.code == "not_found"));
}

#[tokio::test]
async fn send_signal_reaches_the_process_group() {
    let c = client();
    let (pid, mut ev) = c
        .start(json!({"process": {"cmd": "/bin/sh", "args": ["-c", "sleep 100 & echo $!; wait"]}, "stdin": false}), &[])
        .await
        .expect("start");
    let out = read_until(&mut ev, "background pid", |b| b.ends_with(b"\n")).await;
    let bg: u32 = String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .expect("bg pid");
    c.unary(
        "SendSignal",
        json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGTERM"}),
    )
    .await
    .expect("signal");
    let o = collect(pid, ev).await;
    assert_eq!(
        (o.exit_code(), o.exited(), o.status()),
        (-1, false, "signal: terminated")
    );
    wait_gone(bg, "the background child in the same group").await;

    let err = c
        .unary(
            "SendSignal",
            json!({"process": {"pid": 999_999_999u32}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await
        .expect_err("unknown pid");
    assert_eq!(err.code, "not_found");
    let (pid, ev) = c
        .start(
            json!({"process": {"cmd": "/bin/sleep", "args": ["100"]}}),
            &[],
        )
        .await
        .expect("start");
    let err = c
        .unary(
            "SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_UNSPECIFIED"}),
        )
        .await
        .expect_err("unspecified");
    assert_eq!(err.code, "invalid_argument");
    c.unary(
        "SendSignal",
        json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await
    .expect("kill");
    assert_eq!(collect(pid, ev).await.status(), "signal: killed");
}

#[tokio::test]
async fn keepalives_at_the_clients_interval() {
    let c = client();
    let body = json!({"process": {"cmd": "/bin/sleep", "args": ["3"]}, "stdin": false});
    let (pid, ev) = c
        .start(body, &[("keepalive-ping-interval", "1")])
        .await
        .expect("start");
    let t = Instant::now();
    let o = collect(pid, ev).await;
    assert!(t.elapsed() >= Duration::from_millis(2500));
    assert!(
        (2..=4).contains(&o.keepalives),
        "keepalives during a silent 3 s at 1 s: {}",
        o.keepalives
    );
    assert_eq!(o.exit_code(), 0);
}

#[tokio::test]
async fn disconnect_does_not_kill_but_the_call_timeout_does() {
    let c = client();
    let marker =
        std::env::temp_dir().join(format!("hutch-process-disconnect-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let script = format!("sleep 0.5; echo done > {}", marker.display());
    let (pid, ev) = c
        .start(
            json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false}),
            &[],
        )
        .await
        .expect("start");
    drop(ev);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "process {pid} did not survive its client's disconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(&marker);

    // envd kills a process when its Start call's Connect-Timeout-Ms passes.
    let t = Instant::now();
    let (pid, ev) = c
        .start(
            json!({"process": {"cmd": "/bin/sleep", "args": ["30"]}}),
            &[("connect-timeout-ms", "500")],
        )
        .await
        .expect("start");
    let o = collect(pid, ev).await;
    assert_eq!(o.status(), "signal: killed");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bad_requests_are_clear_errors() {
    let c = client();
    let cases = [
        (json!({}), "invalid_argument"),
        (json!({"process": {"cmd": ""}}), "invalid_argument"),
        (
            json!({"process": {"cmd": "/no/such/binary"}}),
            "invalid_argument",
        ),
        (
            json!({"process": {"cmd": "sh", "envs": {"A=B": "x"}}}),
            "invalid_argument",
        ),
        (
            json!({"process": {"cmd": "sh"}, "pty": {"size": {"cols": 0, "rows": 5}}}),
            "invalid_argument",
        ),
        (
            json!({"process": {"cmd": "sh", "args": vec!["x"; 5000]}}),
            "invalid_argument",
        ),
        (
            json!({"process": {"cmd": "sh"}, "tag": "x".repeat(300)}),
            "invalid_argument",
        ),
    ];
    for (body, code) in cases {
        let err = c
            .run(body.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("{body} was accepted"));
        assert_eq!(err.code, code, "{body}: {err:?}");
    }
    let err = c
        .run(json!({"process": {"cmd": "/no/such/binary"}}))
        .await
        .expect_err("refused");
    assert!(err.message.contains("/no/such/binary"), "{err:?}");

    let err = c
        .unary("SendInput", json!({"process": {}}))
        .await
        .expect_err("no selector");
    assert_eq!(err.code, "invalid_argument");
    let err = c
        .unary("CloseStdin", json!({"process": {"tag": "nope-never"}}))
        .await
        .expect_err("unknown tag");
    assert_eq!(err.code, "not_found");
    let resp = c
        .post("List")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 400);
    let resp = c
        .as_user("ghost")
        .post("Start")
        .header("content-type", "application/connect+json")
        .body(envelope(
            0,
            json!({"process": {"cmd": "/bin/true"}})
                .to_string()
                .as_bytes(),
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        resp.status(),
        401,
        "a user missing from the sandbox's passwd"
    );
}

/// Commands start as `execvp` would start them (the guest launches them
/// itself, see `process::launch`): the request's PATH is searched, a
/// script without `#!` runs under /bin/sh, a file that is not executable is
/// "permission denied", and the process starts with default signal
/// dispositions, nothing blocked and only its three stdio descriptors.
#[tokio::test]
async fn commands_start_as_execvp_would_start_them() {
    use std::os::unix::fs::PermissionsExt;
    let c = client();
    let bin = fixture_dir("launch").join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::fs::write(bin.join("hello"), "echo from-script \"$1\"\n").expect("script");
    std::fs::set_permissions(bin.join("hello"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(bin.join("plain"), "echo never\n").expect("plain file");
    std::fs::set_permissions(bin.join("plain"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let path = format!("/no/such/dir:{}:/bin:/usr/bin", bin.display());

    let o = c
        .run(json!({"process": {"cmd": "hello", "args": ["arg one"], "envs": {"PATH": path}}}))
        .await
        .expect("script found on the request's PATH");
    assert_eq!(o.out(), "from-script arg one\n", "{o:?}");
    assert_eq!(o.exit_code(), 0);

    let err = c
        .run(json!({"process": {"cmd": "plain", "envs": {"PATH": path}}}))
        .await
        .expect_err("not executable");
    assert_eq!(err.code, "invalid_argument", "{err:?}");
    assert!(err.message.contains("permission denied"), "{err:?}");
    let err = c
        .run(json!({"process": {"cmd": "hello", "envs": {"PATH": "/no/such/dir"}}}))
        .await
        .expect_err("not on PATH");
    assert!(err.message.contains("no such file"), "{err:?}");

    // The guest (this test process: Rust ignores SIGPIPE) has signals the
    // child must not inherit; the child starts clean.
    let own = std::fs::read_to_string("/proc/self/status").expect("own status");
    let sig_ign = |status: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .expect("SigIgn line")
            .trim()
            .to_owned();
        u64::from_str_radix(&hex, 16).expect("hex mask")
    };
    assert_ne!(
        sig_ign(&own) & (1 << (libc::SIGPIPE - 1)),
        0,
        "the guest ignores SIGPIPE"
    );
    // cat's own status: a shell's mask changes while it waits for children.
    let status = c
        .run(json!({"process": {"cmd": "/bin/cat", "args": ["/proc/self/status"]}}))
        .await
        .expect("cat runs")
        .out();
    let status = status.as_str();
    assert_eq!(sig_ign(status), 0, "{status}");
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .expect("SigBlk line")
        .trim();
    assert_eq!(
        u64::from_str_radix(blocked, 16).expect("hex"),
        0,
        "{status}"
    );
    // Besides stdio, only what this test process itself inherited without
    // close-on-exec (from whoever runs the tests) may reach the child.
    let mut expected: Vec<String> = vec!["0".into(), "1".into(), "2".into()];
    for entry in std::fs::read_dir("/proc/self/fdinfo").expect("fdinfo") {
        let name = entry
            .expect("fdinfo entry")
            .file_name()
            .into_string()
            .expect("fd name");
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{name}")) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).expect("octal flags"))
            .unwrap_or(0);
        if flags & libc::O_CLOEXEC as u32 == 0 && !expected.contains(&name) {
            expected.push(name);
        }
    }
    expected.sort();
    let fds = c.sh("ls /proc/$$/fd").await.out();
    let mut fds: Vec<String> = fds.lines().map(str::to_owned).collect();
    fds.sort();
    assert_eq!(
        fds, expected,
        "only stdio (and the test runner's own) is inherited"
    );
}

/// A process printing gigabytes: the writer blocks on its pipe while the
/// client reads slowly, the guest's RSS stays bounded, and a full-speed read
/// of 2 GiB completes with RSS flat.
#[tokio::test]
async fn flood_is_back_pressured_not_buffered() {
    const TOTAL: u64 = 2 << 30;
    const RSS_BOUND_KIB: u64 = 32 << 10;
    let g = ChildGuest::spawn("flood").await;
    let idle_rss = rss_kib(g.pid());

    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/usr/bin/head".into(),
            args: vec!["-c".into(), TOTAL.to_string(), "/dev/zero".into()],
            ..Default::default()
        }),
        stdin: Some(false),
        ..Default::default()
    };
    let resp = g
        .client
        .post("Start")
        .header("content-type", "application/connect+proto")
        .body(envelope(0, &req.encode_to_vec()))
        .send()
        .await
        .expect("start");
    let mut body = resp.bytes_stream();
    let mut dec = FrameDecoder::new(16 << 20);
    let mut next = async || -> Option<Event> {
        loop {
            if let Some(f) = dec.next_frame().expect("frame") {
                if f.is_end_stream() {
                    assert_eq!(f.end_stream_error().expect("json"), None);
                    return None;
                }
                return StartResponse::decode(f.payload)
                    .expect("proto")
                    .event
                    .and_then(|e| e.event);
            }
            dec.push(
                &body
                    .next()
                    .await
                    .expect("body continues")
                    .expect("body chunk"),
            );
        }
    };
    let Some(Event::Start(start)) = next().await else {
        panic!("first event must be start")
    };
    let writer = start.pid;
    let mut received = 0u64;
    let data = |ev: Option<Event>| match ev {
        Some(Event::Data(d)) => match d.output {
            Some(Output::Stdout(b)) => b.len() as u64,
            other => panic!("unexpected output {other:?}"),
        },
        Some(Event::Keepalive(_)) => 0,
        other => panic!("unexpected event {other:?}"),
    };
    for _ in 0..4 {
        received += data(next().await);
    }

    // Slow reader: stop reading; the writer must block and stay blocked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let wchar_a = proc_field(writer, "io", "wchar").expect("writer's /proc io");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let wchar_b = proc_field(writer, "io", "wchar").expect("writer's /proc io");
    let (state, _) = proc_stat(writer).expect("writer alive");
    let wchan = std::fs::read_to_string(format!("/proc/{writer}/wchan")).unwrap_or_default();
    assert_eq!(
        wchar_a, wchar_b,
        "the writer kept writing while nobody read"
    );
    assert_eq!(state, 'S', "the writer should sleep in write(2)");
    assert!(
        wchan.is_empty() || wchan == "0" || wchan.contains("pipe_write"),
        "writer waits in {wchan:?}"
    );
    assert!(
        wchar_b < 8 << 20,
        "only a bounded amount was written before blocking: {wchar_b}"
    );
    let blocked_rss = rss_kib(g.pid());
    assert!(
        blocked_rss < RSS_BOUND_KIB,
        "RSS while blocked: {blocked_rss} KiB"
    );

    // Full speed to the end.
    let t = Instant::now();
    let mut max_rss = blocked_rss;
    let mut next_probe = received + (128 << 20);
    let end = loop {
        match next().await {
            Some(Event::End(end)) => break end,
            ev => received += data(ev),
        }
        if received >= next_probe {
            max_rss = max_rss.max(rss_kib(g.pid()));
            next_probe += 128 << 20;
        }
    };
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(received, TOTAL, "every byte arrived");
    assert_eq!((end.exit_code, end.exited), (0, true));
    assert!(
        max_rss < RSS_BOUND_KIB,
        "RSS during the flood: {max_rss} KiB"
    );
    println!(
        "flood: idle RSS {idle_rss} KiB, blocked {blocked_rss} KiB, max {max_rss} KiB; writer blocked after {wchar_b} bytes; \
         {:.0} MiB/s over {secs:.1} s",
        TOTAL as f64 / (1 << 20) as f64 / secs
    );
}

/// A command that double-forks leaves an orphan; it is reparented to the
/// guest (positive twin: we see it there) and reaped when it exits.
#[tokio::test]
async fn orphans_are_reaped() {
    let g = ChildGuest::spawn("orphans").await;
    let o = g
        .client
        .sh("sh -c 'sleep 1 >/dev/null 2>&1 & echo $!'; exit 0")
        .await;
    assert_eq!(o.exit_code(), 0);
    let orphan: u32 = o.out().trim().parse().expect("orphan pid");
    let (_, ppid) = proc_stat(orphan).expect("the orphan is still sleeping");
    assert_eq!(
        ppid,
        g.pid(),
        "the orphan was reparented to the guest (a subreaper)"
    );
    wait_gone(orphan, "the orphan after it exits").await;

    let zombies: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(state, ppid)| ppid == g.pid() && state == 'Z'))
        .collect();
    assert!(zombies.is_empty(), "zombies under the guest: {zombies:?}");
}
