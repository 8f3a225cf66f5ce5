"""What the writer and the verifier share: file names, canonical bytes and MACs, the head file.

One chain (chain id `main`, configured path `audit/decisions.log`) lives in:

    audit/decisions.log        the active file; chain `w1` writes audit/decisions-w1.log instead
    audit/decisions.log.1      rotated segments, oldest first (.1, .2, ...); a number is never reused
    audit/decisions.log.2      while a higher one exists, so sorting by number is chain order
    audit/decisions.log.head   {"chain", "seq", "mac", "file", "time"} of the last record written,
                               atomically replaced at most every 50 ms and on rotation and close
    audit/decisions.log.pruned a signed marker: the segments up to seq N were removed (retention, or
                               shipped to the store); the chain resumes at N+1 with prev = its mac
    audit/decisions.log.ship   the shipper's cursor (veil.audit.ship): how far the store has the chain

A record is one line of JSON. Its `mac` is HMAC-SHA256(key[kid], canonical(record without mac)), where
canonical = orjson with sorted keys; `prev` is the previous record's mac ("" for the first record).

A marker (a prune marker, the store's ship head) is a JSON object signed the same way: `kid` and `mac`
= HMAC-SHA256(key[kid], canonical(marker without mac)); `seal` makes one, `unseal` checks one.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from veil.keys import KeyRing, hmac_sha256

ENVELOPE = ("seq", "prev", "kid", "mac")
OWN_KINDS = frozenset({"start", "checkpoint", "unrecorded"})
WILDCARD_KID = "*"  # a ring entry with this id verifies records whose kid is not in the ring

_CHAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SEGMENT = re.compile(r"(?P<base>.+)\.(?P<n>\d+)")
# In a directory, chains are the files named *.log / *.jsonl and their numbered segments.
_DIR_ENTRY = re.compile(r"(?P<base>.+\.(?:log|jsonl))(?:\.(?P<n>\d+))?")


def valid_chain_id(chain_id: str) -> bool:
    return _CHAIN_ID.fullmatch(chain_id) is not None


def active_path(path: Path, chain_id: str) -> Path:
    """`decisions.log` for chain `main`, `decisions-<chain>.log` for any other chain."""
    if chain_id == "main":
        return path
    return path.with_name(f"{path.stem}-{chain_id}{path.suffix}")


def head_path(active: Path) -> Path:
    return active.with_name(active.name + ".head")


def pruned_path(active: Path) -> Path:
    return active.with_name(active.name + ".pruned")


def cursor_path(active: Path) -> Path:
    return active.with_name(active.name + ".ship")


def segment_path(active: Path, n: int) -> Path:
    return active.with_name(f"{active.name}.{n}")


def segments(active: Path) -> list[tuple[int, Path]]:
    """Rotated segments of the chain whose active file is `active`, oldest first."""
    found: list[tuple[int, Path]] = []
    try:
        names = os.listdir(active.parent)
    except OSError:
        return found
    prefix = active.name + "."
    for name in names:
        rest = name[len(prefix):] if name.startswith(prefix) else ""
        if rest.isdigit() and rest.isascii():
            found.append((int(rest), active.with_name(name)))
    return sorted(found)


def chain_files(active: Path) -> list[Path]:
    """All files of a chain in order: segments oldest first, then the active file if it exists."""
    files = [p for _, p in segments(active)]
    if active.is_file():
        files.append(active)
    return files


def base_of(path: Path) -> Path:
    """The active file a path belongs to (`decisions.log.3` → `decisions.log`)."""
    m = _SEGMENT.fullmatch(path.name)
    return path.with_name(m.group("base")) if m else path


def chains_in_dir(directory: Path) -> list[Path]:
    bases = set()
    for name in os.listdir(directory):
        m = _DIR_ENTRY.fullmatch(name)
        if m and (directory / name).is_file():
            bases.add(directory / m.group("base"))
    return sorted(bases)


def canonical(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def sign(key: bytes, body: bytes) -> str:
    return hmac_sha256(key, body).hex()


def seal(ring: KeyRing, marker: Mapping[str, Any]) -> dict[str, Any]:
    """The marker with `kid` and `mac` (under the ring's current key) added."""
    body = {k: v for k, v in marker.items() if k not in ("kid", "mac")}
    body["kid"] = ring.current_id
    body["mac"] = sign(ring.current, canonical(body))
    return body


def unseal(ring: KeyRing, marker: Any) -> bool:
    """True when `marker` is a JSON object whose mac verifies under the ring key its kid names."""
    if not isinstance(marker, Mapping) or not isinstance(marker.get("kid"), str) \
            or not isinstance(marker.get("mac"), str):
        return False
    key = ring.get(marker["kid"]) or ring.get(WILDCARD_KID)
    if key is None:
        return False
    body = {k: v for k, v in marker.items() if k != "mac"}
    return hmac.compare_digest(sign(key, canonical(body)), marker["mac"])


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON object file (a marker, a cursor); None when absent. ValueError when not valid."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_head(path: Path) -> dict[str, Any] | None:
    """The head file's content, None when there is none. Raises ValueError when it is not valid."""
    data = read_json(path)
    if data is None:
        return None
    seq, mac = data.get("seq"), data.get("mac")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(mac, str):
        raise ValueError("needs an integer seq and a string mac")
    return data


def write_head(path: Path, data: Mapping[str, Any], *, sync: bool = True) -> None:
    """Replace the head file (or a marker, a cursor) atomically: write a temporary file, fsync it,
    rename it over."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(data) + b"\n")
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seq_of(raw: bytes | str) -> int | None:
    """The seq of a raw record, None when it has none (for lookahead: never raises)."""
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    seq = rec.get("seq") if isinstance(rec, dict) else None
    return seq if isinstance(seq, int) else None
