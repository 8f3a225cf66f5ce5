"""A decision log after `kill -9`, as `veil audit verify` (a subprocess) reads it: an incomplete last
line is reported as a torn write with its repair, not as tampering; a damaged line in the middle is
tampering; restarting veil repairs the tail and records what it cut."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable

from tests.e2e.conftest import Veil, spawn, stop, wait_http


def verify(v: Veil, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veil", "audit", "verify", str(v.dir / "audit"),
                           "--key", f"file:{v.dir / 'audit.key'}", *extra],
                          capture_output=True, text=True, timeout=60)


def test_torn_tail_after_a_crash_and_tampering_in_the_middle(veil_factory: Callable[..., Veil]) -> None:
    v = veil_factory("crash")
    for i in range(5):
        assert v.get(f"/customers/c-00010{i}", caller="warehouse", purpose="orders.fulfillment").status_code == 200
    v.proc.send_signal(signal.SIGKILL)
    v.proc.wait(10)
    log = v.dir / "audit" / "decisions.log"
    complete = log.read_bytes()
    assert complete.endswith(b"\n")
    # what a crash in the middle of the next write leaves: part of a record, no newline
    with open(log, "ab") as f:
        f.write(complete.splitlines()[-1][:61])
    run = verify(v)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "incomplete last line (61 bytes, no newline)" in run.stdout
    assert f"truncate -s {len(complete)} {log}" in run.stdout
    assert "FAILED" not in run.stdout and "malformed" not in run.stdout
    as_json = json.loads(verify(v, "--json").stdout)
    assert as_json["ok"] is True and as_json["torn_tails"][0]["offset"] == len(complete)

    # the same log with a line in the middle cut short: that is not what a crash does
    lines = complete.splitlines(keepends=True)
    tampered = b"".join([*lines[:2], lines[2][:50] + b"\n", *lines[3:]])
    log.write_bytes(tampered + complete.splitlines()[-1][:61])
    run = verify(v)
    assert run.returncode == 1 and f"FAILED at {log}:3: malformed" in run.stdout, run.stdout
    assert "changed after it was written" in run.stdout

    # back to the crashed log; a restart cuts the torn tail and says so in its start record
    log.write_bytes(complete + complete.splitlines()[-1][:61])
    proc = spawn([sys.executable, "-m", "veil", "serve", "--config", str(v.config_path)], v.dir / "again.log")
    try:
        wait_http(v.admin + "/healthz", proc=proc)  # the same config: keys, ports, log
        assert v.get("/customers/c-000109", caller="warehouse", purpose="orders.fulfillment").status_code == 200
    finally:
        stop(proc)
    run = verify(v)
    assert run.returncode == 0 and run.stdout.startswith("ok:") and "incomplete" not in run.stdout, run.stdout
    starts = [json.loads(x) for x in log.read_bytes().splitlines() if b'"start"' in x]
    assert starts[-1]["discarded_bytes"] == 61
