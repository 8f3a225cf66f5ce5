"""veil's process logs: one record per line, as text (default) or JSON (`log.format: json`).

A JSON record is one object: `time` (RFC 3339, UTC), `level`, `logger`, `message`, and, when the
code that logs knows them, `decision_id`, `route` (a template), `reason` (a stable code) and `worker`.
Only these fields are ever written (a whitelist, not "every `extra`"), and an exception appears as
`error`: its type and innermost frame (`KeyError at app.py:120 in _handle`), never its message or a
traceback (an exception's text may quote a value from a request or a body). A text record has the
same content on one line; a message that contains line breaks has them escaped, so no record spans
lines (a log shipper splits on newlines) and no input can forge a second record.

    log.error("upstream failed", extra={"decision_id": did, "route": "/customers/{id}", "reason": r})
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
FIELDS = ("decision_id", "route", "reason", "worker")  # the only extras a record carries


def where(exc: BaseException | None) -> str:
    """`TypeName at file:line in function` for the innermost frame: no exception message."""
    if exc is None:
        return "-"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    f = frames[-1]
    return f"{type(exc).__name__} at {Path(f.filename).name}:{f.lineno} in {f.name}"


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _time(record), "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = str(value)
        if record.exc_info and record.exc_info[1] is not None:
            out["error"] = where(record.exc_info[1])
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    """`2026-12-03T09:19:48.123Z INFO veil.policy[w0]: message decision_id=... route=... reason=...`"""

    def format(self, record: logging.LogRecord) -> str:
        worker = getattr(record, "worker", None)
        head = f"{_time(record)} {record.levelname} {record.name}{f'[{worker}]' if worker else ''}: "
        parts = [_one_line(record.getMessage())]
        for name in FIELDS[:-1]:
            value = getattr(record, name, None)
            if value is not None:
                parts.append(f"{name}={_one_line(str(value))}")
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(f"error={where(record.exc_info[1])}")
        return head + " ".join(parts)


class _Worker(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.worker = name

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "worker", None) is None:
            record.worker = self.worker
        return True


def configure(fmt: str = "text", level: str = "info", *, worker: str | None = None,
              stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one that writes `fmt` records to stderr."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning is a record too (logger py.warnings), not loose lines
