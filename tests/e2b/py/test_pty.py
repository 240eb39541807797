"""`sandbox.pty` of the real Python SDK (sync) against hutch-guest.

`pty.create` sends `Start{cmd: "/bin/bash", args: ["-i", "-l"], pty: {size}}`;
input goes through `SendInput{input: {pty: bytes}}`, resize through `Update`,
kill through `SendSignal(SIGKILL)`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import pytest
from e2b import CommandExitException, PtySize, Sandbox


class PtyReader:
    """Collects a PTY handle's output on a thread (the sync handle blocks)."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.result = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        def on_pty(chunk: bytes) -> None:
            with self.lock:
                self.buf.extend(chunk)

        try:
            self.result = self.handle.wait(on_pty=on_pty)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e

    def text(self) -> str:
        with self.lock:
            return self.buf.decode(errors="replace")

    def wait_for(self, pred: Callable[[str], bool], what: str, deadline_s: float = 10.0) -> str:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            t = self.text()
            if pred(t):
                return t
            if not self.thread.is_alive():
                break
            time.sleep(0.02)
        pytest.fail(f"PTY output never showed {what}; error={self.error!r}; output so far:\n{self.text()!r}")

    def join(self, deadline_s: float = 10.0) -> None:
        self.thread.join(deadline_s)
        assert not self.thread.is_alive(), "PTY stream did not end"


def test_pty_session_input_resize_kill(sandbox: Sandbox, workdir: str) -> None:
    h = sandbox.pty.create(PtySize(rows=24, cols=80), cwd=workdir, envs={"HUTCH_PTY": "yes"})
    assert h.pid > 0
    reader = PtyReader(h)
    try:
        sandbox.pty.send_stdin(h.pid, b"echo MARK-$HUTCH_PTY-$TERM; stty size; tty; pwd\n")
        out = reader.wait_for(lambda t: "24 80" in t and "MARK-yes-xterm-256color" in t, "echo + stty size 24 80")
        reader.wait_for(lambda t: "/dev/pts/" in t and workdir in t, "tty and cwd")

        sandbox.pty.resize(h.pid, PtySize(rows=50, cols=132))
        sandbox.pty.send_stdin(h.pid, b"stty size\n")
        reader.wait_for(lambda t: "50 132" in t, "stty size 50 132 after resize")

        # The PTY echoes what is typed (a terminal, not a pipe).
        sandbox.pty.send_stdin(h.pid, b"# typed-and-echoed\n")
        reader.wait_for(lambda t: "# typed-and-echoed" in t, "the echo of typed input")
        assert out  # keeps the first read for debugging output
    finally:
        assert sandbox.pty.kill(h.pid) is True
    reader.join()
    assert isinstance(reader.error, CommandExitException), reader.error
    assert reader.error.exit_code == -1


def test_pty_exit_code_from_shell(sandbox: Sandbox) -> None:
    h = sandbox.pty.create(PtySize(rows=10, cols=40))
    reader = PtyReader(h)
    sandbox.pty.send_stdin(h.pid, b"exit 7\n")
    reader.join()
    assert isinstance(reader.error, CommandExitException), (reader.error, reader.text())
    assert reader.error.exit_code == 7


def test_pty_login_environment(sandbox: Sandbox) -> None:
    h = sandbox.pty.create(PtySize(rows=10, cols=80), user="nobody", cwd="/tmp")
    reader = PtyReader(h)
    sandbox.pty.send_stdin(h.pid, b'echo "U=$USER H=$HOME I=$(id -u)"; exit 0\n')
    reader.join()
    assert reader.error is None, (reader.error, reader.text())
    assert "U=nobody H=/nonexistent I=65534" in reader.text()


def test_pty_connect(sandbox: Sandbox) -> None:
    h = sandbox.pty.create(PtySize(rows=10, cols=80))
    h.disconnect()
    attached = sandbox.pty.connect(h.pid)
    reader = PtyReader(attached)
    sandbox.pty.send_stdin(h.pid, b"echo CONNECTED-$((6*7))\n")
    reader.wait_for(lambda t: "CONNECTED-42" in t, "output through Connect")
    sandbox.pty.kill(h.pid)
    reader.join()
