"""`veil serve` start-up as an operator sees it: JSON logs, the startup line, and start failures as
one line with a documented exit code (3: a listener cannot bind its address)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.conftest import free_port
from tests.e2e.conftest import POLICIES, Upstream, base_config, spawn, start_veil, stop, wait_http, write_tokens


def config(tmp: Path, upstream: str, **over: Any) -> Path:
    _, refs = write_tokens(tmp)
    cfg = base_config(tmp, upstream, POLICIES, refs, free_port(), free_port())
    cfg.update(over)
    path = tmp / "veil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def serve(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veil", "serve", "--config", str(path), *extra],
                          capture_output=True, text=True, timeout=60)


def test_json_logs_one_object_per_line(tmp_path: Path, demo_upstream: Upstream) -> None:
    v = start_veil(tmp_path / "veil", demo_upstream.url, overrides={"log": {"format": "json"}})
    routes = v.policy_dir / "routes.veil"
    good = routes.read_text()
    routes.write_text(good + "\nroute GET /x {\n")
    tokens = {"Authorization": f"Bearer {v.tokens['reload']}"}
    assert v.client.post(f"{v.admin}/reload", headers=tokens).status_code == 422
    routes.write_text(good)
    assert v.client.post(f"{v.admin}/reload", headers=tokens).status_code == 200
    log = v.stop()
    records = [orjson.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    start = [r for r in records if "listening: proxy" in r["message"]]
    assert len(start) == 1 and start[0]["level"] == "info" and start[0]["logger"] == "veil"
    rejected = [r for r in records if "policy reload rejected" in r["message"]]
    assert rejected and rejected[0]["level"] == "error" and "routes.veil:" in rejected[0]["message"]
    assert any("succeeded after a rejected one" in r["message"] for r in records)


def test_json_logs_from_every_worker(tmp_path: Path, demo_upstream: Upstream) -> None:
    """`--log-format json` reaches the workers: the supervisor's and each worker's records are JSON,
    a worker's carry its name."""
    path = config(tmp_path, demo_upstream.url, workers=2)
    proc = spawn([sys.executable, "-m", "veil", "serve", "--config", str(path), "--log-format", "json"],
                 tmp_path / "serve.log")
    admin = "http://127.0.0.1:" + yaml.safe_load(path.read_text())["listen"]["admin"].rsplit(":", 1)[1]
    wait_http(admin + "/healthz", proc=proc)
    deadline = time.monotonic() + 20
    while (tmp_path / "serve.log").read_text().count("listening: proxy") < 2:
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.1)
    log = stop(proc)
    assert proc.returncode == 0, log
    records = [orjson.loads(line) for line in log.splitlines()]
    assert any(r["logger"] == "veil.workers" and "supervising 2 workers" in r["message"] for r in records)
    assert sorted(r["worker"] for r in records if "listening: proxy" in r["message"]) == ["w0", "w1"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_exits_3_with_one_line(tmp_path: Path, demo_upstream: Upstream, workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config(tmp_path, demo_upstream.url, workers=workers,
                      listen={"proxy": f"127.0.0.1:{port}", "admin": f"127.0.0.1:{free_port()}"})
        run = serve(path)
    assert run.returncode == 3, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].endswith(f"ERROR veil.serve: cannot start: listen.proxy: cannot listen on 127.0.0.1:{port}: "
                             "the address is already in use (another veil, or another program)")
    assert run.stdout == ""


def test_the_same_port_for_proxy_and_admin_is_a_config_error(tmp_path: Path, demo_upstream: Upstream) -> None:
    port = free_port()
    path = config(tmp_path, demo_upstream.url, listen={"proxy": f"0.0.0.0:{port}", "admin": f"127.0.0.1:{port}"})
    run = serve(path, "--log-format", "json")
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    rec = orjson.loads(line)
    assert rec["level"] == "error" and rec["message"].endswith(
        f"listen.admin: must not use the proxy's port (0.0.0.0:{port} and 127.0.0.1:{port})")


def test_an_invalid_policy_is_one_line(tmp_path: Path, demo_upstream: Upstream) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "bad.veil").write_text("caller broken {\n")
    path = config(tmp_path, demo_upstream.url, policy={"paths": [str(policies)]})
    run = serve(path)
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    assert "cannot start: the policy is invalid: 1 error(s): " in line and "bad.veil:1:16: error[parse_error]" in line
