"""`sandbox.files` of the real Python SDK (sync) against hutch-guest.

read/write go through plain HTTP `GET`/`POST /files`; the rest through
`filesystem.Filesystem` over Connect; the sync `watch_dir` through the polling
trio CreateWatcher / GetWatcherEvents / RemoveWatcher.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import pwd
import time

import pytest
from e2b import FileType, FilesystemEventType, NotFoundException, Sandbox
from e2b.sandbox.filesystem.filesystem import WriteEntry

MIB = 1024 * 1024


def test_write_then_read_text_and_bytes(sandbox: Sandbox, workdir: str) -> None:
    path = os.path.join(workdir, "hello.txt")
    info = sandbox.files.write(path, "héllo\n")
    assert info.path == path
    assert info.name == "hello.txt"
    assert info.type == FileType.FILE
    assert open(path, "rb").read() == "héllo\n".encode()
    assert sandbox.files.read(path) == "héllo\n"
    assert bytes(sandbox.files.read(path, format="bytes")) == "héllo\n".encode()


def test_write_overwrites_and_creates_parents(sandbox: Sandbox, workdir: str) -> None:
    path = os.path.join(workdir, "a", "b", "c.bin")
    sandbox.files.write(path, b"first version, longer")
    sandbox.files.write(path, b"second")
    assert open(path, "rb").read() == b"second"


def test_write_octet_stream_and_gzip(sandbox: Sandbox, workdir: str) -> None:
    data = bytes(range(256)) * 64
    p1 = os.path.join(workdir, "octet.bin")
    sandbox.files.write(p1, data, use_octet_stream=True)
    assert open(p1, "rb").read() == data
    p2 = os.path.join(workdir, "gzip.bin")
    sandbox.files.write(p2, data, gzip=True)
    assert open(p2, "rb").read() == data
    assert bytes(sandbox.files.read(p2, format="bytes", gzip=True)) == data


def test_overwrite_is_in_place(sandbox: Sandbox, workdir: str) -> None:
    # envd opens an existing file O_WRONLY|O_TRUNC and writes into it: the
    # inode, its mode and any hard link survive, and watchers see a WRITE of
    # the file itself (not a rename from a temporary name).
    path = os.path.join(workdir, "script.sh")
    with open(path, "w") as f:
        f.write("old")
    os.chmod(path, 0o750)
    os.link(path, os.path.join(workdir, "hardlink"))
    before = os.stat(path)
    sandbox.files.write(path, "new content")
    after = os.stat(path)
    assert open(path).read() == "new content"
    assert after.st_mode & 0o777 == 0o750, oct(after.st_mode)
    assert after.st_ino == before.st_ino, "the file was replaced, not overwritten"
    assert open(os.path.join(workdir, "hardlink")).read() == "new content"


def test_write_files_multiple(sandbox: Sandbox, workdir: str) -> None:
    entries = [
        WriteEntry(path=os.path.join(workdir, "m1.txt"), data="one"),
        WriteEntry(path=os.path.join(workdir, "sub", "m2.txt"), data=b"two"),
        WriteEntry(path=os.path.join(workdir, "m3.txt"), data=io.BytesIO(b"three")),
    ]
    infos = sandbox.files.write_files(entries)
    assert sorted(i.path for i in infos) == sorted(e["path"] for e in entries)
    assert open(os.path.join(workdir, "m1.txt")).read() == "one"
    assert open(os.path.join(workdir, "sub", "m2.txt")).read() == "two"
    assert open(os.path.join(workdir, "m3.txt")).read() == "three"


def test_read_missing_is_not_found(sandbox: Sandbox, workdir: str) -> None:
    with open(os.path.join(workdir, "present"), "w") as f:
        f.write("here")
    assert sandbox.files.read(os.path.join(workdir, "present")) == "here"  # positive twin
    with pytest.raises(NotFoundException):
        sandbox.files.read(os.path.join(workdir, "missing"))


def test_list_with_depth(sandbox: Sandbox, workdir: str) -> None:
    os.makedirs(os.path.join(workdir, "d", "e"))
    for rel in ["a.txt", "b.txt", "d/c.txt", "d/e/deep.txt"]:
        with open(os.path.join(workdir, rel), "w") as f:
            f.write(rel)
    entries = sandbox.files.list(workdir)
    by_name = {e.name: e for e in entries}
    assert set(by_name) == {"a.txt", "b.txt", "d"}
    assert by_name["d"].type == FileType.DIR
    assert by_name["a.txt"].type == FileType.FILE
    assert by_name["a.txt"].path == os.path.join(workdir, "a.txt")
    assert by_name["a.txt"].size == len("a.txt")

    deep = {e.path for e in sandbox.files.list(workdir, depth=2)}
    assert deep == {os.path.join(workdir, p) for p in ["a.txt", "b.txt", "d", "d/c.txt", "d/e"]}


def test_list_missing_is_not_found(sandbox: Sandbox, workdir: str) -> None:
    assert sandbox.files.list(workdir) == []  # positive twin
    with pytest.raises(NotFoundException):
        sandbox.files.list(os.path.join(workdir, "missing"))


def test_exists(sandbox: Sandbox, workdir: str) -> None:
    path = os.path.join(workdir, "x")
    assert sandbox.files.exists(path) is False
    open(path, "w").close()
    assert sandbox.files.exists(path) is True
    assert sandbox.files.exists(workdir) is True


def test_get_info_file_dir_symlink(sandbox: Sandbox, workdir: str) -> None:
    path = os.path.join(workdir, "info.txt")
    with open(path, "w") as f:
        f.write("12345")
    os.chmod(path, 0o640)
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)

    info = sandbox.files.get_info(path)
    assert info.name == "info.txt"
    assert info.path == path
    assert info.type == FileType.FILE
    assert info.size == 5
    assert info.mode & 0o777 == 0o640
    assert info.permissions.endswith("rw-r-----"), info.permissions
    assert info.owner == "root"
    assert info.group == "root"
    assert info.modified_time >= before
    assert info.symlink_target is None

    d = sandbox.files.get_info(workdir)
    assert d.type == FileType.DIR
    assert d.mode & 0o777 == 0o777
    assert d.permissions.endswith("rwxrwxrwx"), d.permissions

    link = os.path.join(workdir, "link")
    os.symlink(path, link)
    li = sandbox.files.get_info(link)
    assert li.symlink_target == path

    with pytest.raises(NotFoundException):
        sandbox.files.get_info(os.path.join(workdir, "missing"))


def test_make_dir(sandbox: Sandbox, workdir: str) -> None:
    path = os.path.join(workdir, "new", "nested")
    assert sandbox.files.make_dir(path) is True
    assert os.path.isdir(path)
    assert sandbox.files.make_dir(path) is False


def test_remove_file_and_tree(sandbox: Sandbox, workdir: str) -> None:
    f = os.path.join(workdir, "gone.txt")
    open(f, "w").close()
    sandbox.files.remove(f)
    assert not os.path.exists(f)
    tree = os.path.join(workdir, "tree")
    os.makedirs(os.path.join(tree, "inner"))
    open(os.path.join(tree, "inner", "leaf"), "w").close()
    sandbox.files.remove(tree)
    assert not os.path.exists(tree)
    assert sandbox.files.exists(tree) is False


def test_rename(sandbox: Sandbox, workdir: str) -> None:
    src = os.path.join(workdir, "old.txt")
    with open(src, "w") as f:
        f.write("moved")
    dst = os.path.join(workdir, "renamed.txt")
    info = sandbox.files.rename(src, dst)
    assert info.path == dst
    assert info.name == "renamed.txt"
    assert not os.path.exists(src)
    assert open(dst).read() == "moved"
    with pytest.raises(NotFoundException):
        sandbox.files.rename(src, os.path.join(workdir, "again.txt"))


def test_file_owned_by_selected_user(sandbox: Sandbox, workdir: str) -> None:
    nobody = pwd.getpwnam("nobody")
    path = os.path.join(workdir, "owned", "by-nobody.txt")
    sandbox.files.write(path, "mine", user="nobody")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    # The parent directory it had to create belongs to the user too.
    assert os.stat(os.path.dirname(path)).st_uid == nobody.pw_uid
    assert sandbox.files.get_info(path, user="nobody").owner == "nobody"
    assert sandbox.files.read(path, user="nobody") == "mine"
    # ...and a directory made as nobody.
    d = os.path.join(workdir, "dir-by-nobody")
    assert sandbox.files.make_dir(d, user="nobody") is True
    assert os.stat(d).st_uid == nobody.pw_uid


def test_round_trip_100_mib_with_sha256(sandbox: Sandbox, workdir: str) -> None:
    size = 100 * MIB
    # Deterministic, incompressible-enough content without holding a 2nd copy.
    block = hashlib.sha256(b"hutch").digest() * (MIB // 32)
    chunks = [bytes([i % 251]) + block[1:] for i in range(size // MIB)]
    want = hashlib.sha256()
    for c in chunks:
        want.update(c)
    path = os.path.join(workdir, "big.bin")

    t0 = time.monotonic()
    sandbox.files.write(path, iter(chunks), request_timeout=120)  # iterable → octet-stream, streamed
    upload_s = time.monotonic() - t0
    assert os.path.getsize(path) == size

    guest_sum = sandbox.commands.run(f"sha256sum {path}", timeout=60).stdout.split()[0]
    assert guest_sum == want.hexdigest()

    t0 = time.monotonic()
    got = hashlib.sha256()
    n = 0
    for chunk in sandbox.files.read(path, format="stream", request_timeout=120):
        got.update(chunk)
        n += len(chunk)
    download_s = time.monotonic() - t0
    assert n == size
    assert got.hexdigest() == want.hexdigest()

    # The multipart path (bytes data) with the same digest, read back whole.
    path2 = os.path.join(workdir, "big-multipart.bin")
    sandbox.files.write(path2, b"".join(chunks), request_timeout=120)
    assert hashlib.sha256(bytes(sandbox.files.read(path2, format="bytes", request_timeout=120))).hexdigest() == want.hexdigest()
    print(f"100 MiB upload {upload_s:.2f}s, streamed download {download_s:.2f}s")


def _collect(handle, pred, deadline_s: float = 10.0):
    events = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        events.extend(handle.get_new_events())
        if pred(events):
            return events
        time.sleep(0.05)
    pytest.fail(f"watch never produced the expected events; got {[(e.name, e.type) for e in events]}")


def test_watch_dir_polling(sandbox: Sandbox, workdir: str) -> None:
    handle = sandbox.files.watch_dir(workdir)
    try:
        sandbox.files.write(os.path.join(workdir, "w.txt"), "data")
        sandbox.files.rename(os.path.join(workdir, "w.txt"), os.path.join(workdir, "w2.txt"))
        sandbox.files.remove(os.path.join(workdir, "w2.txt"))
        events = _collect(
            handle,
            lambda ev: {("w.txt", FilesystemEventType.CREATE), ("w2.txt", FilesystemEventType.REMOVE)}
            <= {(e.name, e.type) for e in ev},
        )
        kinds = {(e.name, e.type) for e in events}
        leaked = sorted({e.name for e in events} - {"w.txt", "w2.txt"})
        assert not leaked, f"events name files the SDK never wrote: {leaked}"
        assert ("w.txt", FilesystemEventType.WRITE) in kinds
        assert ("w.txt", FilesystemEventType.RENAME) in kinds or ("w2.txt", FilesystemEventType.CREATE) in kinds
    finally:
        handle.stop()
    with pytest.raises(Exception):
        handle.get_new_events()


def test_watch_dir_polling_recursive(sandbox: Sandbox, workdir: str) -> None:
    os.makedirs(os.path.join(workdir, "sub"))
    handle = sandbox.files.watch_dir(workdir, recursive=True)
    try:
        sandbox.files.write(os.path.join(workdir, "sub", "deep.txt"), "x")
        sandbox.files.make_dir(os.path.join(workdir, "sub", "newdir"))
        _collect(
            handle,
            lambda ev: {("sub/deep.txt", FilesystemEventType.CREATE), ("sub/newdir", FilesystemEventType.CREATE)}
            <= {(e.name, e.type) for e in ev},
        )
    finally:
        handle.stop()


def test_watch_missing_dir_fails(sandbox: Sandbox, workdir: str) -> None:
    sandbox.files.watch_dir(workdir).stop()  # positive twin
    with pytest.raises(NotFoundException):
        sandbox.files.watch_dir(os.path.join(workdir, "missing"))
