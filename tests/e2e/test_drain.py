"""Graceful drain: SIGTERM while slow requests are in flight. They complete with 200, new connections
are refused meanwhile, the process exits 0 and the decision log verifies, closed by a checkpoint."""

from __future__ import annotations

import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import KEYS, POLICIES, start_upstream, start_veil, stop
from veil.audit import verify
from veil.keys import KeyRing, load_secret

SLOW_ROUTE = """
route GET /slow/{id} {
  for orders.fulfillment {
    keep id
  }
}
"""
IN_FLIGHT = 5
DELAY = 1.5


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    up = start_upstream("tests.e2e.slow_upstream", log_dir=tmp_path)
    try:
        d = tmp_path / "veil"
        shutil.copytree(POLICIES, d / "policies", ignore=shutil.ignore_patterns("tests", "*.yaml", "*.md"))
        (d / "policies" / "slow.veil").write_text(SLOW_ROUTE)
        v = start_veil(d, up.url)
        headers = {"Veil-Key": KEYS["warehouse"], "Veil-Purpose": "orders.fulfillment"}

        def slow(i: int) -> tuple[int, bytes, float]:
            with httpx.Client(timeout=15.0) as c:
                r = c.get(f"{v.url}/slow/s{i}?delay={DELAY}", headers=headers)
                return r.status_code, r.content, time.monotonic()

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(slow, i) for i in range(IN_FLIGHT)]
            deadline = time.monotonic() + 10.0
            while httpx.get(f"{up.url}/stats").json()["started"] < IN_FLIGHT:
                assert time.monotonic() < deadline, "requests did not reach the upstream"
                time.sleep(0.02)
            v.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()

            refused_at = None
            while time.monotonic() - signalled < DELAY:  # while the slow requests are still in flight
                try:
                    httpx.get(f"{v.url}/slow/new?delay=0", headers=headers, timeout=1.0)
                except httpx.ConnectError:
                    refused_at = time.monotonic()
                    break
                time.sleep(0.02)
            assert refused_at is not None, "new connections were still accepted while draining"
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{v.admin}/healthz", timeout=1.0)
            results = [f.result(timeout=20) for f in futures]

        assert [status for status, _, _ in results] == [200] * IN_FLIGHT
        ids = sorted(orjson.loads(body)["id"] for _, body, _ in results)
        assert ids == [f"s{i}" for i in range(IN_FLIGHT)]
        assert all(done > refused_at for _, _, done in results)  # refused first, completed after
        assert v.proc.wait(timeout=20) == 0, v.stop()
        drained = max(done for _, _, done in results) - signalled
        print(f"\ndrain: refused new connections {refused_at - signalled:.3f}s after SIGTERM; "
              f"{IN_FLIGHT} in-flight requests completed {drained:.3f}s after it")

        ring = KeyRing.single(load_secret(f"file:{d / 'audit.key'}"), "k1")
        result = verify([d / "audit"], ring)
        assert result.ok, result.render()
        lines = (d / "audit" / "decisions.log").read_bytes().splitlines()
        last = orjson.loads(lines[-1])
        assert last["kind"] == "checkpoint" and last["reason"] == "close"
        recs = [orjson.loads(x) for x in lines if b'"decision"' in x]
        served = [r for r in recs if r["route"] == "/slow/{id}" and r["decision"] == "redact"]  # note removed
        assert len(served) >= IN_FLIGHT
        v.client.close()
    finally:
        stop(up.proc)
