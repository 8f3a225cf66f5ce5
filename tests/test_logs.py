"""veil.logs: one record per line, as text or JSON, with a whitelist of fields and no exception text."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from veil import logs


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream, logging.getLogger("veil.test")
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.captureWarnings(False)


def test_json_records_carry_the_known_fields_only(capture: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = capture
    logs.configure("json", "info", worker="w1", stream=stream)
    log.info("blocked %s", "upstream", extra={"decision_id": "abc123", "route": "/customers/{id}",
                                              "reason": "upstream_timeout", "subject": "c-000001",
                                              "email": "a@example.com"})
    log.debug("not shown at info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    rec = orjson.loads(lines[0])
    assert set(rec) == {"time", "level", "logger", "message", "decision_id", "route", "reason", "worker"}
    assert rec["level"] == "info" and rec["logger"] == "veil.test" and rec["message"] == "blocked upstream"
    assert rec["worker"] == "w1" and rec["route"] == "/customers/{id}" and rec["time"].endswith("Z")
    assert "c-000001" not in lines[0] and "example.com" not in lines[0]  # extras outside the list never appear


def test_exceptions_are_named_not_quoted(capture: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = capture
    logs.configure("json", stream=stream)
    try:
        raise ValueError("the body said c-000042 secret@example.com")
    except ValueError:
        log.exception("reload failed")
    rec = orjson.loads(stream.getvalue())
    assert rec["error"].startswith("ValueError at test_logs.py:") and "c-000042" not in stream.getvalue()
    assert rec["level"] == "error"


def test_text_records_are_one_line(capture: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = capture
    logs.configure("text", "info", stream=stream)
    log.error("policy reload rejected:\nfile.veil:1:2: error\n  | caret", extra={"decision_id": "d1"})
    try:
        raise KeyError("x")
    except KeyError:
        log.warning("with an exception", exc_info=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        "ERROR veil.test: policy reload rejected:\\nfile.veil:1:2: error\\n  | caret decision_id=d1")
    assert "error=KeyError at test_logs.py:" in lines[1] and "Traceback" not in stream.getvalue()


def test_a_forged_record_stays_inside_its_line(capture: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = capture
    logs.configure("text", stream=stream)
    log.warning("path %s", "/x\n2026-01-01T00:00:00.000Z INFO veil: forged")
    assert len(stream.getvalue().splitlines()) == 1


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("xml")
