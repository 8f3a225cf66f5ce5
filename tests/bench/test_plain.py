"""The bench's references relay what the upstream answers: the plain proxies (every server set-up) and
nginx, on real sockets."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from veil.bench import servers
from veil.bench.plain import SERVERS
from veil.bench.shapes import build


def _get(url: str) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read(), resp.headers.get("Content-Type", "")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[servers.Server, bytes]]:
    body = build("unknown_keys", 2, 30, count=False).body
    with servers.start_fast_upstream({"/shapes/unknown_keys": body}, tmp_path_factory.mktemp("bodies")) as up:
        yield up, body


@pytest.mark.slow
@pytest.mark.parametrize("server", SERVERS)
def test_plain_references_relay_the_body(upstream: tuple[servers.Server, bytes], server: str) -> None:
    up, body = upstream
    with servers.start_plain(up.url, server=server) as plain, \
            servers.start_plain(up.url, server=server, parse=True) as parse:
        for _ in range(3):  # keep-alive: the same connection pool answers again
            status, got, ctype = _get(plain.url + "/shapes/unknown_keys?limit=30")
            assert (status, got) == (200, body) and ctype.startswith("application/json")
            status, got, _ = _get(parse.url + "/shapes/unknown_keys?limit=30")
            assert status == 200 and orjson.loads(got) == orjson.loads(body)
        _, profile, _ = _get(plain.url + "/customers/c-000001")
        assert orjson.loads(profile)["id"] == servers.fast_profile()["id"]


@pytest.mark.slow
@pytest.mark.skipif(servers.nginx_binary() is None, reason="nginx is not installed")
def test_nginx_floor_relays_the_body(upstream: tuple[servers.Server, bytes], tmp_path: Path) -> None:
    up, body = upstream
    with servers.start_nginx(up.url, tmp_path / "nginx") as nginx:
        status, got, _ = _get(nginx.url + "/shapes/unknown_keys")
        assert (status, got) == (200, body)
        assert len(nginx.pids()) >= 2  # master and worker: both counted
