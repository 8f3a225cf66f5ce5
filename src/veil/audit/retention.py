"""How long decision records are kept, and removing local segments that may go.

Decision records are personal data (pseudonymized): they are kept as long as the longest retention
the policy states for its purposes (`retention 13 months`), capped by `audit.max_retention`, unless
`audit.retention` sets a period. In the store, retention drops whole time partitions
(`AuditStore.prune`); locally, rotated segments are removed here, oldest first, when they are shipped
(and `audit.ship.keep_local` has passed) or, without shipping, when their newest record is past
retention. Either way a signed prune marker (`<log>.pruned`) says up to which seq and mac the chain
was removed, so `veil audit verify` still verifies what remains and says what was pruned. The active
file is never removed here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from veil import metrics
from veil.audit._chain import fsync_dir, now_iso, pruned_path, read_json, seal, segments, unseal, write_head
from veil.durations import duration_days
from veil.keys import KeyRing

log = logging.getLogger("veil.audit")


def retention_days(configured: float | None, cap: float, purposes_retention: list[str | None]) -> float:
    """The configured retention, or the longest stated among the purposes (capped; the cap when
    none states one)."""
    if configured is not None:
        return configured
    stated = [d for r in purposes_retention if r and (d := duration_days(r)) is not None]
    return min(max(stated), cap) if stated else cap


def parse_time(value: Any) -> datetime | None:
    """A record's `time` (ISO 8601, or epoch seconds) as an aware datetime; None when it has none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            return None
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return None


def _ends(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(first record, last record) of a segment, without reading it all."""
    from veil.audit.log import _last_line

    with open(path, "rb") as f:
        head = f.readline()
    tail, _ = _last_line(path, truncate=False)
    out: list[dict[str, Any] | None] = []
    for raw in (head, tail):
        rec = None
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            rec = orjson.loads(raw) if raw else None
        out.append(rec if isinstance(rec, dict) and isinstance(rec.get("seq"), int) else None)
    return out[0], out[1]


def prune_local(active: Path, ring: KeyRing, *, shipped_seq: int | None, keep_local_days: float,
                retention: float, now: datetime | None = None) -> int:
    """Remove the rotated segments of the chain that may go, oldest first, stopping at the first
    that may not; returns how many records were removed.

    With shipping (`shipped_seq` not None) a segment may go once every record in it is shipped and it
    was last written `keep_local_days` ago, or when its newest record is past retention and shipped.
    Without shipping, once its newest record is past retention.
    """
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=retention)
    marker_file = pruned_path(active)
    try:
        marker = read_json(marker_file)
    except (ValueError, OSError):
        log.error("%s is unreadable: local segments are not removed", marker_file.name)
        return 0
    if marker is not None and not unseal(ring, marker):
        log.error("%s fails its MAC: local segments are not removed", marker_file.name)
        return 0
    removed = 0
    for _, path in segments(active):
        try:
            first, last = _ends(path)
            mtime = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
        except OSError:
            break
        if first is None or last is None or not isinstance(last.get("mac"), str):
            break
        count = last["seq"] - first["seq"] + 1
        newest = parse_time(last.get("time"))
        past = newest is not None and newest < cutoff
        if shipped_seq is not None:
            shipped = last["seq"] <= shipped_seq
            ok = shipped and (past or mtime <= now - timedelta(days=keep_local_days))
            reason = "retention" if past else "shipped"
        else:
            ok, reason = past, "retention"
        if not ok:
            break
        genesis = (marker or {}).get("genesis")
        if not genesis and first is not None and first.get("seq") == 1:
            genesis = first.get("mac")
        body: dict[str, Any] = {
            "kind": "pruned", "chain": active.name, "genesis": genesis or "", "through_seq": last["seq"],
            "through_mac": last["mac"], "records": int((marker or {}).get("records", 0)) + count,
            "at": now_iso(), "reason": reason,
        }
        if reason == "retention":
            body["before"] = cutoff.isoformat(timespec="seconds").replace("+00:00", "Z")
        marker = seal(ring, body)
        write_head(marker_file, marker)  # the marker first: a crash before the unlink leaves a segment
        os.unlink(path)                   # that verification skips (its records are at or below the marker)
        fsync_dir(active.parent)
        removed += count
        metrics.audit_pruned_total.labels("local").inc(count)
    return removed
