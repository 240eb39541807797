"""Access token and signed URLs, each with its positive twin.

The guest runs with `--access-token ACCESS_TOKEN` (the `token_guest` fixture).
See `conftest.make_sandbox` for how a debug-mode SDK sandbox is given a token.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from e2b import AuthenticationException, Sandbox, get_signature

from conftest import ACCESS_TOKEN, BASE_URL, Guest, make_sandbox


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _multipart(filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = "hutch" + uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _with_query(url: str, **changes: str) -> str:
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    q.update(changes)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q, quote_via=urllib.parse.quote)))


# --- X-Access-Token --------------------------------------------------------


def test_right_token_works(token_guest: Guest, workdir: str) -> None:
    sbx = make_sandbox(ACCESS_TOKEN)
    assert sbx.commands.run("echo authorised").stdout == "authorised\n"
    path = os.path.join(workdir, "t.txt")
    sbx.files.write(path, "with token")
    assert sbx.files.read(path) == "with token"
    assert [e.name for e in sbx.files.list(workdir)] == ["t.txt"]
    assert sbx.is_running() is True


@pytest.mark.parametrize("token", ["wrong-token", None], ids=["wrong", "missing"])
def test_wrong_or_missing_token_is_rejected(token_guest: Guest, workdir: str, token) -> None:
    sbx = make_sandbox(token) if token is not None else Sandbox.connect("debug_sandbox_id")
    path = os.path.join(workdir, "secret.txt")
    with open(path, "w") as f:
        f.write("s")
    with pytest.raises(AuthenticationException):
        sbx.commands.run("echo should-not-run")
    with pytest.raises(AuthenticationException):
        sbx.files.read(path)
    with pytest.raises(AuthenticationException):
        sbx.files.write(os.path.join(workdir, "nope.txt"), "x")
    with pytest.raises(AuthenticationException):
        sbx.files.list(workdir)
    assert not os.path.exists(os.path.join(workdir, "nope.txt"))


def test_health_needs_no_token(token_guest: Guest) -> None:
    status, _ = _http("GET", f"{BASE_URL}/health")
    assert 200 <= status < 300
    # ...and the SDK's own probe agrees.
    assert make_sandbox(None).is_running() is True


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/envs"), ("GET", "/metrics"), ("GET", "/files?path=/etc/hostname"), ("POST", "/process.Process/List")],
)
def test_plain_http_without_token_is_401(token_guest: Guest, method: str, path: str) -> None:
    headers = {"Content-Type": "application/json"} if method == "POST" else {}
    body = b"{}" if method == "POST" else None
    status, _ = _http(method, BASE_URL + path, body, headers)
    assert status == 401
    status, _ = _http(method, BASE_URL + path, body, {**headers, "X-Access-Token": ACCESS_TOKEN})
    assert status == 200


# --- signed URLs -----------------------------------------------------------


def test_signed_download_url(token_guest: Guest, workdir: str) -> None:
    sbx = make_sandbox(ACCESS_TOKEN)
    path = os.path.join(workdir, "dl.txt")
    sbx.files.write(path, "signed content")

    for url in (sbx.download_url(path), sbx.download_url(path, use_signature_expiration=60)):
        assert "signature=" in url
        status, body = _http("GET", url)
        assert (status, body) == (200, b"signed content"), url


def test_signed_upload_url(token_guest: Guest, workdir: str) -> None:
    sbx = make_sandbox(ACCESS_TOKEN)
    path = os.path.join(workdir, "up.txt")
    url = sbx.upload_url(path, use_signature_expiration=60)
    body, ctype = _multipart("up.txt", b"uploaded via signed url")
    status, resp = _http("POST", url, body, {"Content-Type": ctype})
    assert status == 200, resp
    assert open(path, "rb").read() == b"uploaded via signed url"


def test_signed_url_as_user(token_guest: Guest, workdir: str) -> None:
    sbx = make_sandbox(ACCESS_TOKEN)
    path = os.path.join(workdir, "as-nobody.txt")
    url = sbx.upload_url(path, user="nobody", use_signature_expiration=60)
    body, ctype = _multipart("as-nobody.txt", b"n")
    status, resp = _http("POST", url, body, {"Content-Type": ctype})
    assert status == 200, resp
    import pwd

    assert os.stat(path).st_uid == pwd.getpwnam("nobody").pw_uid
    status, got = _http("GET", sbx.download_url(path, user="nobody"))
    assert (status, got) == (200, b"n")


def test_tampered_signature_is_401(token_guest: Guest, workdir: str) -> None:
    sbx = make_sandbox(ACCESS_TOKEN)
    path = os.path.join(workdir, "tamper.txt")
    other = os.path.join(workdir, "other.txt")
    sbx.files.write(path, "t")
    sbx.files.write(other, "o")
    good = sbx.download_url(path, use_signature_expiration=60)
    assert _http("GET", good)[0] == 200  # the positive twin

    sig = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(good).query))["signature"]
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    cases = {
        "flipped signature": _with_query(good, signature=flipped),
        "other path": _with_query(good, path=other),
        "other user": _with_query(good, username="nobody"),
        "extended expiration": _with_query(good, signature_expiration=str(int(time.time()) + 3600)),
        "signature from another token": sbx._file_url(
            path, None, **_sig_kwargs(get_signature(path, "read", None, "not-the-token", 60))
        ),
        # A write signature must not open a read.
        "write signature used to read": sbx._file_url(
            path, None, **_sig_kwargs(get_signature(path, "write", None, ACCESS_TOKEN, 60))
        ),
    }
    for what, url in cases.items():
        status, _ = _http("GET", url)
        assert status == 401, f"{what}: {status} for {url}"

    body, ctype = _multipart("x", b"x")
    status, _ = _http("POST", _with_query(sbx.upload_url(path, use_signature_expiration=60), signature=flipped), body, {"Content-Type": ctype})
    assert status == 401
    assert open(path).read() == "t"


def test_expired_signature_is_401(token_guest: Guest, workdir: str) -> None:
    sbx = make_sandbox(ACCESS_TOKEN)
    path = os.path.join(workdir, "exp.txt")
    sbx.files.write(path, "e")
    fresh = get_signature(path, "read", None, ACCESS_TOKEN, 30)
    assert _http("GET", sbx._file_url(path, None, **_sig_kwargs(fresh)))[0] == 200  # positive twin
    expired = get_signature(path, "read", None, ACCESS_TOKEN, -5)
    status, _ = _http("GET", sbx._file_url(path, None, **_sig_kwargs(expired)))
    assert status == 401


def _sig_kwargs(sig) -> dict:
    return {"signature": sig["signature"], "signature_expiration": sig["expiration"]}
