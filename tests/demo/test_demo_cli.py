"""`veil demo` twice in the same directory tells the same story: the consent store is reset at each
start, so the withdrawal of example 3 does not turn example 1 into a 403 on the next run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.conftest import spawn, wait_http

STOREFRONT = {"Veil-Key": "demo-storefront-key", "Veil-Purpose": "personalize.recommendations"}


def run_demo(directory: Path, ports: tuple[int, int, int], n: int) -> tuple[subprocess.Popen[bytes], str]:
    proxy, admin, upstream = ports
    proc = spawn([sys.executable, "-m", "veil", "demo", "--dir", str(directory), "--port", str(proxy),
                  "--admin-port", str(admin), "--upstream-port", str(upstream)],
                 directory.parent / f"demo-{n}.log")
    wait_http(f"http://127.0.0.1:{admin}/healthz", timeout=60, proc=proc)
    log = Path(proc.log_path)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while "Press Ctrl-C" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc, log.read_text()


def test_demo_is_repeatable(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port())
    proxy, admin = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    for n in (1, 2):
        proc, out = run_demo(tmp_path / "veil-demo", ports, n)
        try:
            assert "consent store reset to the demo's 1250 consent records" in out
            first = httpx.get(f"{proxy}/customers/c-000001", headers=STOREFRONT, timeout=10)
            assert first.status_code == 200, (n, first.text)  # example 1, on the first run and the second
            token = re.search(r"Authorization: Bearer ([0-9a-f]+)", out)
            assert token is not None
            r = httpx.post(f"{admin}/consent/c-000001", json={"key": "personalization", "action": "withdrawn"},
                           headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=10)
            assert r.status_code == 201, r.text
            time.sleep(1.2)  # the demo's consent cache_ttl
            after = httpx.get(f"{proxy}/customers/c-000001", headers=STOREFRONT, timeout=10)
            assert after.status_code == 403 and after.json()["reason"] == "consent_withdrawn"  # example 3
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        assert proc.returncode == 0
        assert "veil demo stopped." in Path(proc.log_path).read_text()  # type: ignore[attr-defined]
