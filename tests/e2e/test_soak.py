"""A short soak (~30 s, marked slow): a steady loopback rate with a mix of redacted, filtered, TCF-admitted
and blocked requests. No 5xx and no transport error from veil, every outcome the expected one, bounded
RSS growth, and a decision log that verifies with every response's decision id in it exactly once.
The long version: `.venv/bin/python scripts/soak.py --minutes 3`."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.conftest import Veil

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"
RATE = 100.0  # requests/s: below saturation on a small shared CI machine (veil uses ~3 ms CPU per request)
SECONDS = 22.0
MAX_RSS_GROWTH_MIB = 48.0  # generous: a leak of a few KiB per request would still show over 2,200 requests


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("veil_soak_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
async def test_short_soak(veil_factory: Callable[..., Veil]) -> None:
    soak = load_soak()
    v = veil_factory("soak", overrides={"consent": {"cache_ttl": 2.0}})
    soak.seed_consent(v)
    res = await soak.run_load(v.url, v.proc.pid, rate=RATE, seconds=SECONDS, max_requests=5000, warmup=5.0)
    print("\n" + res.render())
    assert res.sent == int(RATE * SECONDS)
    assert res.server_errors == 0 and not res.errors, res.render()
    assert not res.unexpected, res.unexpected
    kinds = {kind for kind, _, _ in res.outcomes}
    assert kinds == {k.name for k in soak.MIX}
    assert res.rss_growth_mib < MAX_RSS_GROWTH_MIB, res.render()
    assert res.fds[-1][1] < res.fds[0][1] + 32, res.fds  # sockets and files are given back
    v.stop()
    log = soak.check_log(v, res.decision_ids)
    print(f"decision log: {log.message}; missing {log.missing}, repeated {log.repeated}")
    assert log.ok, log
    assert len(res.decision_ids) == res.sent
