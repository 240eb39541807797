"""Fixtures of the E2B conformance suite: hutch-guest instances and SDK clients.

The SDK's debug mode (`E2B_DEBUG=true`) skips the control plane and talks to
envd at the fixed address http://localhost:49983, so only one guest can serve
at a time. `GuestManager` keeps at most one running and restarts it when a test
needs a different configuration (with or without an access token):

1. `guest` / `token_guest` ask the manager for a guest of that configuration.
2. The manager stops the running guest if its configuration differs (SIGTERM,
   then SIGKILL after a deadline), refuses to start if something else holds the
   port, spawns `$HUTCH_GUEST_BIN --listen 127.0.0.1:49983 [--access-token T]`
   with its output in a log file, and polls `GET /health` until it answers 2xx,
   with a deadline (no fixed sleep).
3. At the end of the session the last guest is stopped.

The guest reads users from a copy of /etc/passwd and /etc/group (`--etc-root`)
in which root's home is a fresh empty directory (`ROOT_HOME`): every
`commands.run` is a login shell (`bash -l -c`), and the host's own root
dotfiles (here: a pyenv init that rehashes under a lock on every login) must
not slow down or wedge the suite. Other users are as on the host.

Each test has a deadline (`TEST_DEADLINE_S`): past it the guest is killed,
which makes any blocked SDK call fail at once, and the test is failed with a
dump of where it was stuck.

A missing prerequisite (binary, free port) fails the test; nothing is skipped.
"""

from __future__ import annotations

import faulthandler
import itertools
import sys
import threading
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

os.environ["E2B_DEBUG"] = "true"
# Nothing may reach a real control plane, whatever the caller's environment.
os.environ.pop("E2B_API_URL", None)
os.environ.pop("E2B_SANDBOX_URL", None)
os.environ.pop("E2B_DOMAIN", None)

from e2b import ConnectionConfig, Sandbox  # noqa: E402
from e2b.envd.versions import ENVD_DEBUG_FALLBACK  # noqa: E402

HOST = "127.0.0.1"
PORT = 49983
BASE_URL = f"http://{HOST}:{PORT}"
ACCESS_TOKEN = "hutch-conformance-token-" + uuid.uuid4().hex
READY_DEADLINE_S = 10.0
STOP_DEADLINE_S = 10.0
TEST_DEADLINE_S = float(os.environ.get("HUTCH_E2B_TEST_DEADLINE", "90"))

_FIXTURE_ROOT = Path(tempfile.mkdtemp(prefix="hutch-e2b-etc-"))
ROOT_HOME = str(_FIXTURE_ROOT / "root-home")


def _make_etc_root() -> Path:
    """A copy of /etc/passwd and /etc/group with root's home at ROOT_HOME."""
    _FIXTURE_ROOT.chmod(0o755)  # passwd must be readable whichever user a request runs as
    os.makedirs(ROOT_HOME, mode=0o700)
    (_FIXTURE_ROOT / "etc").mkdir()
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        f = line.split(":")
        if len(f) == 7 and f[2] == "0":
            f[5] = ROOT_HOME
        lines.append(":".join(f))
    (_FIXTURE_ROOT / "etc" / "passwd").write_text("\n".join(lines) + "\n")
    shutil.copyfile("/etc/group", _FIXTURE_ROOT / "etc" / "group")
    return _FIXTURE_ROOT


ETC_ROOT = _make_etc_root()


def _port_open() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=0.5):
            return True
    except OSError:
        return False


def _health_ok() -> bool:
    try:
        with urllib.request.urlopen(f"{BASE_URL}/health", timeout=1) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Guest:
    """A running hutch-guest and how it was configured."""

    token: Optional[str]
    proc: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return BASE_URL

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class GuestManager:
    def __init__(self) -> None:
        bin_path = os.environ.get("HUTCH_GUEST_BIN", "")
        if not bin_path:
            repo = Path(__file__).resolve().parents[3]
            bin_path = str(repo / "target" / "debug" / "hutch-guest")
        self.bin = bin_path
        log_dir = os.environ.get("HUTCH_E2B_LOG_DIR") or tempfile.mkdtemp(prefix="hutch-e2b-logs.")
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.current: Optional[Guest] = None
        self._seq = itertools.count(1)

    def ensure(self, token: Optional[str]) -> Guest:
        if self.current is not None and self.current.proc.poll() is None and self.current.token == token:
            return self.current
        self.stop()
        return self._start(token)

    def _start(self, token: Optional[str]) -> Guest:
        if not (os.path.isfile(self.bin) and os.access(self.bin, os.X_OK)):
            pytest.fail(
                f"prerequisite missing: guest binary {self.bin!r} (build it with `cargo build -p hutch-guest` "
                "or set HUTCH_GUEST_BIN)"
            )
        if _port_open():
            pytest.fail(f"prerequisite missing: {HOST}:{PORT} is already in use (the SDK debug mode needs it)")
        args = [self.bin, "--listen", f"{HOST}:{PORT}", "--etc-root", str(ETC_ROOT)]
        if token is not None:
            args += ["--access-token", token]
        name = f"guest-{next(self._seq)}-{'token' if token else 'open'}.log"
        log_path = self.log_dir / name
        log = open(log_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        guest = Guest(token=token, proc=proc, log_path=log_path)
        deadline = time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"hutch-guest exited with {proc.returncode} before serving /health:\n{guest.log_tail()}")
            if _health_ok():
                self.current = guest
                return guest
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        pytest.fail(f"hutch-guest did not answer /health within {READY_DEADLINE_S}s:\n{guest.log_tail()}")

    def kill_current(self) -> None:
        """Watchdog path: SIGKILL the serving guest so blocked SDK calls fail."""
        guest = self.current
        if guest is not None and guest.proc.poll() is None:
            guest.proc.kill()

    def stop(self) -> None:
        guest, self.current = self.current, None
        if guest is None:
            return
        if guest.proc.poll() is None:
            guest.proc.send_signal(signal.SIGTERM)
            try:
                guest.proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                guest.proc.kill()
                guest.proc.wait()
        deadline = time.monotonic() + STOP_DEADLINE_S
        while _port_open() and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture(scope="session")
def guest_manager() -> Iterator[GuestManager]:
    manager = GuestManager()
    yield manager
    manager.stop()
    shutil.rmtree(_FIXTURE_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def _deadline(request, guest_manager: GuestManager) -> Iterator[None]:
    fired = threading.Event()

    def on_timeout() -> None:
        fired.set()
        sys.stderr.write(f"\n*** {request.node.nodeid} exceeded {TEST_DEADLINE_S}s; killing the guest. Stacks:\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        guest_manager.kill_current()

    timer = threading.Timer(TEST_DEADLINE_S, on_timeout)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
    if fired.is_set():
        pytest.fail(f"test exceeded its {TEST_DEADLINE_S}s deadline (the guest was killed to unblock it)")


@pytest.fixture
def guest(guest_manager: GuestManager) -> Guest:
    """A guest without an access token."""
    return guest_manager.ensure(None)


@pytest.fixture
def token_guest(guest_manager: GuestManager) -> Guest:
    """A guest started with `--access-token ACCESS_TOKEN`."""
    return guest_manager.ensure(ACCESS_TOKEN)


@pytest.fixture
def sandbox(guest: Guest) -> Sandbox:
    """The SDK's own debug-mode path: no control plane, envd at localhost:49983."""
    return Sandbox.connect("debug_sandbox_id")


def make_sandbox(token: Optional[str], sandbox_cls=Sandbox):
    """A debug-mode Sandbox that knows an envd access token.

    In debug mode `Sandbox.create()`/`connect()` never learn a token: the
    control plane that would hand out `envdAccessToken` is skipped and
    `_cls_connect_sandbox` (e2b/sandbox_sync/main.py) sets it to None. So we do
    what `_cls_connect_sandbox` does after a real connect, through the public
    (documented as deprecated) constructor:
    - `envd_access_token=` is what `download_url()`/`upload_url()` sign with;
    - `ConnectionConfig(extra_sandbox_headers={"X-Access-Token": ...})` is what
      every envd request (Connect RPCs and /files) carries.
    `token=None` gives a sandbox that sends no token at all.
    """
    headers = {"E2b-Sandbox-Id": "debug_sandbox_id", "E2b-Sandbox-Port": str(PORT)}
    if token is not None:
        headers["X-Access-Token"] = token
    config = ConnectionConfig(debug=True, extra_sandbox_headers=headers)
    return sandbox_cls(
        sandbox_id="debug_sandbox_id",
        sandbox_domain=None,
        envd_version=ENVD_DEBUG_FALLBACK,
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=config,
    )


@pytest.fixture
def workdir() -> Iterator[str]:
    """A fresh directory every user (also `nobody`) may write in; removed after."""
    path = Path(tempfile.mkdtemp(prefix="hutch-e2b-"))
    path.chmod(0o777)
    yield str(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of the serving guest's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        manager = item.config.stash.get(_MANAGER_KEY, None)
        if manager is not None and manager.current is not None:
            report.sections.append(("hutch-guest log (tail)", manager.current.log_tail()))


_MANAGER_KEY = pytest.StashKey[GuestManager]()


@pytest.fixture(scope="session", autouse=True)
def _stash_manager(request, guest_manager: GuestManager) -> None:
    request.config.stash[_MANAGER_KEY] = guest_manager
