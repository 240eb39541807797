"""The async SDK (`AsyncSandbox`): it streams where the sync one polls.

Each test drives its own event loop with `asyncio.run`, so no pytest plugin is
needed. `watch_dir` here is the server-streaming `WatchDir` (the sync SDK uses
the CreateWatcher polling trio, covered in test_files.py).
"""

from __future__ import annotations

import asyncio
import os
import pwd

import pytest
from e2b import (
    AsyncSandbox,
    AuthenticationException,
    CommandExitException,
    FilesystemEventType,
    PtySize,
)

from conftest import ACCESS_TOKEN, Guest, make_sandbox


async def _eventually(pred, what: str, deadline_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        if pred():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def test_async_run_and_exit_codes(guest: Guest) -> None:
    async def main() -> None:
        sbx = await AsyncSandbox.connect("debug_sandbox_id")
        r = await sbx.commands.run("echo async-out; echo async-err >&2")
        assert (r.exit_code, r.stdout, r.stderr) == (0, "async-out\n", "async-err\n")
        with pytest.raises(CommandExitException) as info:
            await sbx.commands.run("exit 42")
        assert info.value.exit_code == 42
        r = await sbx.commands.run("id -u", user="nobody", cwd="/tmp")
        assert r.stdout == f"{pwd.getpwnam('nobody').pw_uid}\n"

    asyncio.run(main())


def test_async_background_stdin_kill(guest: Guest) -> None:
    async def main() -> None:
        sbx = await AsyncSandbox.connect("debug_sandbox_id")
        h = await sbx.commands.run("read x; echo got:$x", background=True, stdin=True)
        await h.send_stdin("async\n")
        r = await h.wait()
        assert r.stdout == "got:async\n"

        h = await sbx.commands.run("sleep 60", background=True)
        assert h.pid in {p.pid for p in await sbx.commands.list()}
        assert await h.kill() is True
        with pytest.raises(CommandExitException) as info:
            await h.wait()
        assert info.value.exit_code == -1

    asyncio.run(main())


def test_async_pty(guest: Guest, workdir: str) -> None:
    async def main() -> None:
        sbx = await AsyncSandbox.connect("debug_sandbox_id")
        buf = bytearray()
        h = await sbx.pty.create(PtySize(rows=30, cols=100), on_data=buf.extend, cwd=workdir)
        await sbx.pty.send_stdin(h.pid, b"stty size\n")
        await _eventually(lambda: b"30 100" in buf, f"'30 100' in {bytes(buf)!r}")
        await sbx.pty.resize(h.pid, PtySize(rows=40, cols=120))
        await sbx.pty.send_stdin(h.pid, b"stty size\n")
        await _eventually(lambda: b"40 120" in buf, f"'40 120' in {bytes(buf)!r}")
        assert await sbx.pty.kill(h.pid) is True
        with pytest.raises(CommandExitException):
            await h.wait()

    asyncio.run(main())


def test_async_files_and_streaming_watch(guest: Guest, workdir: str) -> None:
    async def main() -> None:
        sbx = await AsyncSandbox.connect("debug_sandbox_id")
        events = []
        os.makedirs(os.path.join(workdir, "sub"))
        handle = await sbx.files.watch_dir(workdir, on_event=events.append, recursive=True)
        try:
            path = os.path.join(workdir, "sub", "a.txt")
            await sbx.files.write(path, "async file")
            assert await sbx.files.read(path) == "async file"
            await sbx.files.rename(path, os.path.join(workdir, "b.txt"))
            await sbx.files.remove(os.path.join(workdir, "b.txt"))
            want = {
                ("sub/a.txt", FilesystemEventType.CREATE),
                ("sub/a.txt", FilesystemEventType.WRITE),
                ("b.txt", FilesystemEventType.REMOVE),
            }
            await _eventually(
                lambda: want <= {(e.name, e.type) for e in events},
                f"{want} in {[(e.name, e.type) for e in events]}",
            )
            names = [e.name for e in await sbx.files.list(workdir)]
            assert names == ["sub"]
        finally:
            await handle.stop()

    asyncio.run(main())


def test_async_token(token_guest: Guest) -> None:
    async def main() -> None:
        good = make_sandbox(ACCESS_TOKEN, AsyncSandbox)
        assert (await good.commands.run("echo ok")).stdout == "ok\n"
        bad = make_sandbox("wrong", AsyncSandbox)
        with pytest.raises(AuthenticationException):
            await bad.commands.run("echo no")

    asyncio.run(main())
