"""`sandbox.commands` of the real Python SDK against hutch-guest.

Every `commands.run(cmd)` goes out as `process.Process/Start` with
`{cmd: "/bin/bash", args: ["-l", "-c", cmd], envs, cwd}, stdin: false`.
"""

from __future__ import annotations

import os
import pwd
import time

import pytest
from conftest import ROOT_HOME
from e2b import (
    AuthenticationException,
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    Sandbox,
)


def test_run_stdout_and_exit_code_zero(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("echo hello; printf 'no newline'")
    assert r.exit_code == 0
    assert r.stdout == "hello\nno newline"
    assert r.stderr == ""
    assert r.error is None


def test_run_stderr_is_kept_apart(sandbox: Sandbox) -> None:
    out, err = [], []
    r = sandbox.commands.run("echo to-out; echo to-err >&2", on_stdout=out.append, on_stderr=err.append)
    assert r.stdout == "to-out\n"
    assert r.stderr == "to-err\n"
    assert "".join(out) == "to-out\n"
    assert "".join(err) == "to-err\n"


def test_run_nonzero_exit_raises_with_code(sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo partial; echo bad >&2; exit 3")
    e = info.value
    assert e.exit_code == 3
    assert e.stdout == "partial\n"
    assert e.stderr == "bad\n"


def test_run_command_not_found_is_127(sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("hutch-no-such-command-xyz")
    assert info.value.exit_code == 127
    assert "not found" in info.value.stderr


@pytest.mark.parametrize("sig,word", [("KILL", "killed"), ("TERM", "terminated")])
def test_run_killed_by_signal(sandbox: Sandbox, sig: str, word: str) -> None:
    # envd reports death by signal like Go's ProcessState: exitCode -1,
    # exited false, status/error "signal: killed" (or "terminated").
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run(f"echo before; kill -{sig} $$")
    e = info.value
    assert e.exit_code == -1, f"exit_code={e.exit_code} error={e.error!r}"
    assert e.stdout == "before\n"
    assert e.error is not None and word in e.error.lower(), e.error


def test_envs_and_cwd(sandbox: Sandbox, workdir: str) -> None:
    r = sandbox.commands.run(
        'printf "%s|%s|" "$HUTCH_A" "$HUTCH_B"; pwd',
        envs={"HUTCH_A": "one two", "HUTCH_B": "ü=ß"},
        cwd=workdir,
    )
    assert r.stdout == f"one two|ü=ß|{workdir}\n"


def test_default_cwd_is_home_and_user_root(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("id -u; echo $HOME; pwd; echo $USER")
    home = ROOT_HOME  # root's home in the guest's passwd (see conftest)
    assert r.stdout == f"0\n{home}\n{home}\nroot\n"


def test_cwd_missing_fails(sandbox: Sandbox, workdir: str) -> None:
    assert sandbox.commands.run("pwd", cwd=workdir).stdout == f"{workdir}\n"  # positive twin
    # envd answers Start with invalid_argument "cwd '...' does not exist".
    with pytest.raises(InvalidArgumentException):
        sandbox.commands.run("true", cwd=os.path.join(workdir, "does-not-exist"))


def test_background_wait(sandbox: Sandbox) -> None:
    t0 = time.monotonic()
    h = sandbox.commands.run("sleep 0.5; echo done", background=True)
    assert time.monotonic() - t0 < 0.5, "background=True must return before the command ends"
    assert h.pid > 0
    r = h.wait()
    assert r.exit_code == 0
    assert r.stdout == "done\n"


def test_background_iterate_output(sandbox: Sandbox) -> None:
    h = sandbox.commands.run("for i in 1 2 3; do echo $i; sleep 0.05; done", background=True)
    seen = "".join(out for out, _err, _pty in h if out)
    assert seen == "1\n2\n3\n"


def test_kill_background(sandbox: Sandbox) -> None:
    h = sandbox.commands.run("sleep 60", background=True)
    t0 = time.monotonic()
    assert h.kill() is True
    with pytest.raises(CommandExitException) as info:
        h.wait()
    assert time.monotonic() - t0 < 10
    assert info.value.exit_code == -1
    # The process is gone: killing it again reports "not found" as False.
    assert sandbox.commands.kill(h.pid) is False


def test_kill_unknown_pid_is_false(sandbox: Sandbox) -> None:
    h = sandbox.commands.run("sleep 60", background=True)
    assert sandbox.commands.kill(h.pid) is True  # positive twin
    with pytest.raises(CommandExitException):
        h.wait()
    assert sandbox.commands.kill(2**31 - 7) is False


def test_send_stdin_and_close_stdin(sandbox: Sandbox) -> None:
    h = sandbox.commands.run("read line; echo got:$line; cat", background=True, stdin=True)
    h.send_stdin("hello\n")
    sandbox.commands.send_stdin(h.pid, b"rest-of-input")
    h.close_stdin()
    r = h.wait()
    assert r.stdout == "got:hello\nrest-of-input"


def test_stdin_off_reads_eof(sandbox: Sandbox) -> None:
    # `stdin=False` (the default) must give the process an empty stdin, not a
    # pipe that never closes.
    r = sandbox.commands.run("cat; echo eof", timeout=10)
    assert r.stdout == "eof\n"


def test_list_shows_running_command(sandbox: Sandbox, workdir: str) -> None:
    h = sandbox.commands.run("sleep 30", background=True, envs={"HUTCH_MARK": "list"}, cwd=workdir)
    try:
        procs = {p.pid: p for p in sandbox.commands.list()}
        assert h.pid in procs, f"pid {h.pid} not in {sorted(procs)}"
        p = procs[h.pid]
        assert p.cmd == "/bin/bash"
        assert p.args == ["-l", "-c", "sleep 30"]
        assert p.envs.get("HUTCH_MARK") == "list"
        assert p.cwd == workdir
    finally:
        h.kill()
    with pytest.raises(CommandExitException):
        h.wait()
    deadline = time.monotonic() + 5
    while h.pid in {p.pid for p in sandbox.commands.list()}:
        assert time.monotonic() < deadline, "killed process still listed"
        time.sleep(0.05)


def test_connect_to_running_command(sandbox: Sandbox) -> None:
    h = sandbox.commands.run("read x; echo got:$x; exit 4", background=True, stdin=True)
    h.disconnect()
    attached = sandbox.commands.connect(h.pid)
    assert attached.pid == h.pid
    sandbox.commands.send_stdin(h.pid, "via-connect\n")
    with pytest.raises(CommandExitException) as info:
        attached.wait()
    assert info.value.exit_code == 4
    assert info.value.stdout == "got:via-connect\n"


def test_connect_unknown_pid_fails(sandbox: Sandbox) -> None:
    h = sandbox.commands.run("sleep 0.3; echo twin", background=True)
    assert sandbox.commands.connect(h.pid).wait().stdout == "twin\n"  # positive twin
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(2**31 - 7)


def test_large_output_is_complete(sandbox: Sandbox) -> None:
    # 8 MiB through the stream: more than any per-process buffer, so the
    # guest must pace the process rather than drop output.
    r = sandbox.commands.run("head -c 8388608 /dev/zero | tr '\\0' a; echo", timeout=60)
    assert len(r.stdout) == 8 * 1024 * 1024 + 1
    assert set(r.stdout[:-1]) == {"a"}


def test_user_selection_nobody(sandbox: Sandbox, workdir: str) -> None:
    nobody = pwd.getpwnam("nobody")
    r = sandbox.commands.run("id -u; id -g; whoami; echo $USER", user="nobody", cwd=workdir)
    assert r.stdout == f"{nobody.pw_uid}\n{nobody.pw_gid}\nnobody\nnobody\n"
    target = os.path.join(workdir, "made-by-nobody")
    sandbox.commands.run(f"touch {target}", user="nobody", cwd=workdir)
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)


def test_user_root_explicit(sandbox: Sandbox) -> None:
    assert sandbox.commands.run("id -u", user="root").stdout == "0\n"


def test_unknown_user_is_rejected(sandbox: Sandbox) -> None:
    assert sandbox.commands.run("whoami", user="nobody", cwd="/tmp").stdout == "nobody\n"  # positive twin
    # envd rejects a user missing from /etc/passwd as unauthenticated.
    with pytest.raises(AuthenticationException):
        sandbox.commands.run("true", user="hutch-no-such-user")
