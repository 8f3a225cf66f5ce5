"""Request bodies over real sockets (issue 15, items 1 and 3): a body that does not arrive whole never
reaches the upstream as a whole one, `Expect: 100-continue` works, too large bodies are refused.

The upstreams record what they received: tests/e2e/recording_upstream.py (raw, the bytes on the
wire) and tests/e2e/wsgi_upstream.py under gunicorn (a real third-party server: what an application
would have processed). Each test runs with both of veil's upstream clients (h1 and aiohttp); one veil
per (client, upstream) serves the whole module."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import require
from tests.e2e.conftest import (
    REQUEST_LIMITS,
    REQUEST_POLICY,
    Upstream,
    Veil,
    request_upstream,
    start_veil,
    upstream_log,
)
from tests.e2e.raw import KEY, PURPOSE, Raw, chunk

CLIENTS = ["h1", "aiohttp"]
MAX_BODY = REQUEST_LIMITS["max_request_body_bytes"]  # 2,000,000


def records(v: Veil) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for p in sorted((v.dir / "audit").iterdir()):
        if p.is_file() and not p.name.endswith(".head"):
            out += [orjson.loads(line) for line in p.read_bytes().splitlines() if line.strip()]
    return out


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def metric(v: Veil, pattern: str) -> float:
    m = re.search(rf"^{pattern} (\S+)$", v.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def blocks(v: Veil, reason: str, route: str = "/echo/{id}") -> float:
    return metric(v, rf'veil_requests_total\{{decision="block",purpose="support.lookup",reason="{reason}",'
                     rf'route="{re.escape(route)}"\}}')


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def veil_for(tmp_path_factory: pytest.TempPathFactory, recording: Upstream, wsgi: Upstream
             ) -> Iterator[Callable[[str, Upstream], Veil]]:
    """veil_for(client, upstream): the module's veil with request_policy/ and REQUEST_LIMITS."""
    started: dict[tuple[str, int], Veil] = {}

    def get(client: str, up: Upstream) -> Veil:
        key = (client, up.port)
        if key not in started:
            started[key] = start_veil(
                tmp_path_factory.mktemp(f"bodies-{client}") / "veil", up.url, policy_src=REQUEST_POLICY,
                overrides={"limits": REQUEST_LIMITS, "upstreams": request_upstream(up.url, client)})
        return started[key]

    yield get
    for v in started.values():
        v.stop()


# ------------------------------------------------------------------ item 1: cut-off bodies
def test_cut_off_chunked_body_is_never_completed_towards_the_upstream(
        veil_for: Callable[[str, Upstream], Veil], recording: Upstream, wsgi: Upstream, client: str) -> None:
    """The issue's case: a chunked POST whose client disconnects mid-body. The body is larger than
    the read-ahead buffer, so veil is already streaming it when the client goes."""
    for up in (recording, wsgi):
        v = veil_for(client, up)
        before = blocks(v, "request_aborted")
        marker = f"amount=1000-{client}-{up.port}"
        with Raw(v.url) as c:
            c.send(c.head("POST", f"/echo/{marker}", {"Transfer-Encoding": "chunked",
                                                       "Content-Type": "application/x-www-form-urlencoded"}))
            c.send(chunk(marker.encode() + b"&pad=" + b"x" * 8000))  # over request_buffer_bytes: streamed
            if up is recording:  # the upstream has the start of the body before the client goes
                wait_for(lambda m=marker, u=up: any(m in r["body"] for r in upstream_log(u)))
            else:
                time.sleep(0.3)
        if up is recording:
            wait_for(lambda m=marker, u=up: any(m in r["target"] and r["complete"] is False
                                                for r in upstream_log(u)))
            rec = next(r for r in upstream_log(up) if marker in r["target"])
            assert rec["framing"] == "chunked" and rec["complete"] is False  # no terminating chunk, ever
        else:
            time.sleep(0.5)
            assert not any(marker in r["body"] for r in upstream_log(up))  # gunicorn's app never got it whole
        wait_for(lambda v=v, n=before + 1: blocks(v, "request_aborted") == n)
        assert metric(v, r'veil_upstream_errors_total\{kind="client",upstream="demo"\}') == 0
        wait_for(lambda v=v, n=int(before) + 1: len([r for r in records(v) if r.get("reason") == "request_aborted"])
                 == n)
        rec = [r for r in records(v) if r.get("reason") == "request_aborted"][-1]
        assert rec["decision"] == "block" and rec["route"] == "/echo/{id}"


def test_cut_off_small_body_never_touches_the_upstream(
        veil_for: Callable[[str, Upstream], Veil], recording: Upstream, client: str) -> None:
    """A body within the read-ahead buffer is read whole before an upstream connection is taken:
    when it is cut off (chunked, or short of its Content-Length) the upstream sees nothing at all."""
    v = veil_for(client, recording)
    for framing in ("chunked", "length"):
        before = blocks(v, "request_aborted")
        marker = f"small-{client}-{framing}"
        with Raw(v.url) as c:
            if framing == "chunked":
                c.send(c.head("POST", f"/echo/{marker}", {"Transfer-Encoding": "chunked"}) + chunk(b"amount=10"))
            else:
                c.send(c.head("POST", f"/echo/{marker}", {"Content-Length": "100"}) + b"amount=10")
            time.sleep(0.2)
        wait_for(lambda n=before + 1: blocks(v, "request_aborted") == n)
        assert not any(marker in r["target"] for r in upstream_log(recording))


def test_malformed_chunk_from_the_client_is_not_forwarded_as_complete(
        veil_for: Callable[[str, Upstream], Veil], recording: Upstream) -> None:
    v = veil_for("h1", recording)
    with Raw(v.url) as c:
        c.send(c.head("POST", "/echo/badchunk", {"Transfer-Encoding": "chunked"}) + chunk(b"x" * 5000)
               + b"zz\r\nnot hex\r\n")
        r = c.response()
        assert r.status == 400
        assert c.closed_within(2.0)
    time.sleep(0.3)
    assert not any(r["complete"] for r in upstream_log(recording) if "badchunk" in r["target"])


@pytest.mark.parametrize("size", [10, 5000, 300_000])
def test_whole_bodies_arrive_whole(veil_for: Callable[[str, Upstream], Veil], recording: Upstream, client: str,
                                   size: int) -> None:
    """Buffered (10 B) and streamed (5 KB, 300 KB) bodies, chunked and with a length, arrive byte for
    byte; a buffered chunked body reaches the upstream with a Content-Length."""
    v = veil_for(client, recording)
    body = (b"0123456789" * (size // 10 + 1))[:size]
    for framing in ("chunked", "length"):
        with Raw(v.url) as c:
            extra = {"Transfer-Encoding": "chunked"} if framing == "chunked" else {"Content-Length": str(size)}
            data = (chunk(body[: size // 2]) + chunk(body[size // 2:]) + b"0\r\n\r\n") if framing == "chunked" else body
            c.send(c.head("POST", f"/echo/whole-{framing}-{size}", extra) + data)
            r = c.response()
        assert r.status == 200, r.body[:300]
        assert r.json()["body"].encode("latin-1") == body
        seen = r.json()["headers"]
        if size <= 4096:
            assert seen.get("content-length") == str(size) and "transfer-encoding" not in seen


def test_too_large_bodies_are_refused(veil_for: Callable[[str, Upstream], Veil], recording: Upstream,
                                      client: str) -> None:
    v = veil_for(client, recording)
    with Raw(v.url) as c:  # declared too large: refused before a byte of the body is read
        c.send(c.head("POST", f"/echo/declared-{client}", {"Content-Length": str(MAX_BODY + 1)}))
        r = c.response()
        assert r.status == 413 and r.json()["reason"] == "request_body_too_large"
    with Raw(v.url) as c:  # chunked, too large only on the way: the upstream connection is aborted
        c.send(c.head("POST", f"/echo/chunked-large-{client}", {"Transfer-Encoding": "chunked"}))
        for _ in range(MAX_BODY // 400_000 + 1):
            c.send(chunk(b"y" * 400_000))
        r = c.response()
        assert r.status == 413 and r.json()["reason"] == "request_body_too_large"
    time.sleep(0.3)
    assert not any(f"declared-{client}" in r["target"] for r in upstream_log(recording))
    assert not any(r["complete"] for r in upstream_log(recording) if f"chunked-large-{client}" in r["target"])


# ------------------------------------------------------------------ item 3: Expect: 100-continue
def test_expect_100_continue_with_a_large_body(veil_for: Callable[[str, Upstream], Veil], recording: Upstream,
                                               wsgi: Upstream, client: str) -> None:
    """What curl does with a body over 1 MB: veil answers 100 Continue itself, reads the body and
    forwards it without the expectation; the upstream's own interim responses are skipped."""
    body = b"z" * 1_200_000
    for up, path in ((recording, "/echo/expect"), (recording, "/interim/expect"), (wsgi, "/echo/expect")):
        v = veil_for(client, up)
        with Raw(v.url) as c:
            c.send(c.head("POST", path, {"Content-Length": str(len(body)), "Expect": "100-continue"}))
            assert c.interim() == 100
            c.send(body)
            r = c.response()
        assert r.status == 200, r.body[:300]
        doc = r.json()
        assert len(doc["body"]) == len(body)
        if up is wsgi:
            processed = [x for x in upstream_log(wsgi) if x["id"] == "expect"]
            assert processed[-1]["length"] == len(body) and processed[-1]["expect"] is None
        else:
            assert "expect" not in doc["headers"]


def test_expect_100_continue_on_a_blocked_request_gets_no_continue(veil_for: Callable[[str, Upstream], Veil],
                                                                  recording: Upstream) -> None:
    """A refused request is answered without 100 Continue; the body never comes, so the connection
    is closed after the answer (it could not be reused)."""
    v = veil_for("h1", recording)
    with Raw(v.url) as c:
        c.send(c.head("POST", "/echo/nope", {"Content-Length": "1000000", "Expect": "100-continue"}, key="wrong"))
        r = c.response()
        assert r.status == 401 and r.interim == [] and r.json()["reason"] == "unknown_caller"
        assert c.closed_within(2.0)


def test_curl_posting_a_large_file(veil_for: Callable[[str, Upstream], Veil], wsgi: Upstream,
                                   tmp_path: Path) -> None:
    """The issue's reproduction with curl itself (it adds `Expect: 100-continue` over 1 MB)."""
    require(shutil.which("curl") is not None, "curl")
    v = veil_for("h1", wsgi)
    data = tmp_path / "big.bin"
    data.write_bytes(b"q" * 1_500_000)
    out = subprocess.run(["curl", "-sS", "-v", "-X", "POST", "--data-binary", f"@{data}",
                          "-H", f"Veil-Key: {KEY}", "-H", f"Veil-Purpose: {PURPOSE}",
                          "-H", "Content-Type: application/octet-stream", f"{v.url}/echo/curl"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert b"Expect: 100-continue" in out.stderr and b"HTTP/1.1 100 Continue" in out.stderr
    doc = orjson.loads(out.stdout)
    assert doc["id"] == "curl" and doc["method"] == "POST"
    processed = [r for r in upstream_log(wsgi) if r["id"] == "curl"]
    assert processed and processed[-1]["length"] == 1_500_000 and processed[-1]["expect"] is None
