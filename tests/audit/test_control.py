"""ShipControl, what a veil process runs for its chain: the in-process shipper, the backlog bound (hold,
readiness, release) and retention passes over local segments and the store."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.audit.conftest import decision
from veil.audit import AuditLog
from veil.audit._chain import segments
from veil.audit.control import ShipControl
from veil.audit.store_verify import verify_store
from veil.config import parse_config
from veil.errors import AuditBacklogFull
from veil.keys import KeyRing

pytestmark = pytest.mark.postgres


def config(tmp_path: Path, **ship: Any) -> Any:
    return parse_config({"upstreams": {"u": {"url": "http://127.0.0.1:9"}},
                         "audit": {"path": str(tmp_path / "audit" / "decisions.log"), "retention": "30 days",
                                   "ship": ship}}, file="veil.yaml")


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t


async def test_ships_bounds_and_prunes(tmp_path: Path, ring: KeyRing, store_url: str) -> None:
    c = config(tmp_path, url=store_url, replica="r1", max_backlog=20000, on_full="refuse")
    log = AuditLog(c.audit_path, ring, flush_interval=0, max_bytes=2500, fsync="interval", fsync_interval=10)
    await log.start()
    control = ShipControl(c, log, ring, "main", retentions=lambda: ["13 months"])
    assert control.readiness() == {"decision_log_backlog": True}
    tasks = control.start()
    for i in range(40):
        await log.append(decision(i))
        await asyncio.sleep(0.01)
    assert control.shipper is not None
    for _ in range(200):
        if control.shipper.shipped_seq >= log.seq:
            break
        await asyncio.sleep(0.05)
    assert control.shipper.shipped_seq == log.seq

    # the store goes away (a wrong port from now on): the backlog grows to its bound, then refuses
    control.shipper.link.url = store_url.replace(":5432/", ":9/")
    await control.shipper.link.close()
    with pytest.raises(AuditBacklogFull):
        for i in range(40, 200):
            await log.append(decision(i))
    assert control.refusal == "audit_backlog_full" and control.readiness() == {"decision_log_backlog": False}
    assert control.backlog() > 10000  # (held on the estimate: the last measurement plus what was written since)
    control.shipper.link.url = store_url  # back
    for _ in range(200):
        if control.refusal is None:
            break
        await asyncio.sleep(0.05)
    assert control.refusal is None and log.held is None and control.readiness() == {"decision_log_backlog": True}
    # the refusal lifts once the backlog is under its bound, before all of it is shipped: wait for the rest
    for _ in range(400):
        if control.shipper.shipped_seq >= log.seq:
            break
        await asyncio.sleep(0.05)
    assert control.shipper.shipped_seq == log.seq

    # retention: shipped local segments go; the store drops partitions older than the period
    assert segments(log.path)
    result = await control.housekeep(now=datetime.now(UTC) + timedelta(days=400))
    assert result["local_records"] > 0 and len(segments(log.path)) <= 1  # (the active file, just rotated: unshipped)
    assert [m["reason"] for m in result["store_markers"]] == ["retention"]
    await stop(tasks)
    await log.close()
    await control.close()  # ships the closing checkpoint into a new partition
    store = await control.store()
    verdict = await verify_store(store, ring)
    assert verdict.ok, verdict.render()
    assert control.retention() == 30.0
    await control.link.close()  # type: ignore[union-attr]


async def test_serve_mode_keeps_ready(tmp_path: Path, ring: KeyRing) -> None:
    c = config(tmp_path, url="postgresql://postgres@127.0.0.1:9/x", max_backlog=3000, on_full="serve",
               timeout=1)
    log = AuditLog(c.audit_path, ring, flush_interval=0)
    await log.start()
    control = ShipControl(c, log, ring, "main", retentions=lambda: [])
    tasks = control.start()
    for i in range(30):
        await log.append(decision(i))  # never refused
        await asyncio.sleep(0.01)
    control.check_backlog()
    assert control.full and log.held == "serve" and control.refusal is None
    assert control.readiness() == {"decision_log_backlog": True}
    assert control.retention() == 30.0
    await stop(tasks)
    await log.close()
    await control.close()


async def test_a_quiet_log_is_rotated_so_that_retention_can_remove_it(tmp_path: Path, ring: KeyRing) -> None:
    c = parse_config({"upstreams": {"u": {"url": "http://127.0.0.1:9"}},
                      "audit": {"path": str(tmp_path / "audit" / "decisions.log"), "retention": "30 days"}},
                     file="veil.yaml")
    log = AuditLog(c.audit_path, ring, flush_interval=0)
    await log.start()
    for i in range(5):
        await log.append(decision(i))
    control = ShipControl(c, log, ring, "main", retentions=lambda: [])
    assert (await control.housekeep())["local_records"] == 0 and not segments(log.path)  # young: kept as is
    assert (await control.housekeep(now=datetime.now(UTC) + timedelta(days=2)))["local_records"] == 0
    assert len(segments(log.path)) == 1 and log.path.stat().st_size == 0  # rotated, not yet past retention
    result = await control.housekeep(now=datetime.now(UTC) + timedelta(days=40))
    assert result["local_records"] == 7 and not segments(log.path)  # start, 5 decisions, the rotation checkpoint
    await log.append(decision(9))
    await log.close()
    from veil.audit import verify

    assert verify([log.path], ring).ok
