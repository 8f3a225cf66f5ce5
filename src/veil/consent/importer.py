"""Import existing consent records from CSV or JSON Lines into a consent store.

Columns (CSV header or JSONL object keys): subject, consent_key, action (given|withdrawn), at (ISO 8601;
no offset means UTC) are required; source, method, notice_version, expires_at, jurisdiction, purposes
(`;`-separated in CSV, a list or `;`-separated string in JSONL) are optional.

The whole file is validated first: any bad row → `ImportInvalid` listing `line N: column: problem`
(never the value) and nothing is written. Then rows go in batches, each committed together with the
file's import mark (last committed line) in `veil_import_progress`, keyed by a hash of path, size and
mtime. `resume=True` continues after the mark; a changed file is a new import.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from veil.consent._schema import ImportMark, file_key, utc
from veil.consent.store import Action, ConsentEvent
from veil.errors import VeilError

COLUMNS = (
    "subject", "consent_key", "action", "at", "source", "method", "notice_version", "expires_at",
    "jurisdiction", "purposes",
)
REQUIRED = ("subject", "consent_key", "action", "at")
MAX_TEXT = 512
MAX_REPORTED = 100
FORMATS = ("csv", "jsonl")

Progress = Callable[[int, int], None]  # (rows imported so far in this run, last committed line)


class ImportTarget(Protocol):
    """What a store offers the importer (SqliteConsentStore and PostgresConsentStore have it)."""

    async def import_mark(self, file_key: str) -> ImportMark | None: ...

    async def import_batch(
        self, events: Sequence[ConsentEvent], *, file_key: str, line: int, done: bool
    ) -> None: ...

    async def reset_import(self, file_key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    column: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.column}: {self.problem}"


class ImportInvalid(VeilError):
    code = "consent_import_invalid"

    def __init__(self, errors: list[RowError], total: int) -> None:
        self.errors = errors
        self.total = total
        first = f"; first: {errors[0]}" if errors else ""
        super().__init__(f"{total} invalid value(s) in the import file, nothing imported{first}")

    def render(self) -> str:
        lines = [str(e) for e in self.errors]
        if self.total > len(self.errors):
            lines.append(f"... and {self.total - len(self.errors)} more")
        return "\n".join(lines)


@dataclass
class ImportResult:
    rows: int = 0  # imported by this run
    skipped: int = 0  # committed by an earlier run (resume)
    last_line: int = 0
    seconds: float = 0.0
    already_done: bool = False
    errors: list[RowError] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise VeilError(f"import format must be one of {', '.join(FORMATS)}", code="usage")
        return fmt
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise VeilError("cannot tell the import format from the file name; pass --format csv|jsonl", code="usage")


# -- reading -----------------------------------------------------------------------------------------

Raw = dict[str, Any]


def read_raw(path: Path, fmt: str) -> Iterator[tuple[int, Raw | RowError]]:
    """(line number, raw row or a structural error) for every record of the file."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            yield from (_read_csv(f) if fmt == "csv" else _read_jsonl(f))
    except UnicodeDecodeError as exc:
        raise VeilError("import file is not UTF-8 text", code="consent_import_invalid") from exc
    except OSError as exc:
        raise VeilError(f"cannot read import file: {exc.strerror}", code="consent_import_invalid") from exc


def _read_csv(f: Any) -> Iterator[tuple[int, Raw | RowError]]:
    reader = csv.reader(f, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error:
        yield 1, RowError(1, "header", "not valid CSV")
        return
    bad = False
    for name in header:
        if name not in COLUMNS:
            bad = True
            yield 1, RowError(1, "header", f"unknown column {name!r}")
    for name in REQUIRED:
        if name not in header:
            bad = True
            yield 1, RowError(1, "header", f"missing column {name!r}")
    if bad:
        return
    prev = reader.line_num
    while True:
        line = prev + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield line, RowError(line, "row", "not valid CSV")
            return
        prev = reader.line_num
        if not record:
            continue
        if len(record) != len(header):
            yield line, RowError(line, "row", f"has {len(record)} fields, header has {len(header)}")
            continue
        yield line, dict(zip(header, record, strict=True))


def _read_jsonl(f: Any) -> Iterator[tuple[int, Raw | RowError]]:
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            yield line, RowError(line, "row", "not valid JSON")
            continue
        if not isinstance(obj, dict):
            yield line, RowError(line, "row", "must be a JSON object")
            continue
        unknown = [k for k in obj if k not in COLUMNS]
        if unknown:
            yield line, RowError(line, "row", f"unknown key {str(unknown[0])[:40]!r}")
            continue
        yield line, obj


# -- validating ------------------------------------------------------------------------------------------


def parse_row(line: int, raw: Raw) -> ConsentEvent | list[RowError]:
    errors: list[RowError] = []
    subject = _text(raw, "subject", line, errors, True)
    key = _text(raw, "consent_key", line, errors, True)
    action_text = _text(raw, "action", line, errors, True)
    action = None
    if action_text is not None:
        action = _ACTIONS.get(action_text.lower())
        if action is None:
            errors.append(RowError(line, "action", "must be 'given' or 'withdrawn'"))
    at = _when(raw, "at", line, errors, True)
    expires_at = _when(raw, "expires_at", line, errors, False)
    if at is not None and expires_at is not None and expires_at <= at:
        errors.append(RowError(line, "expires_at", "is not after at"))
    notice_version: int | None = None
    nv = raw.get("notice_version")
    if nv is None or nv == "":
        pass
    elif isinstance(nv, int) and not isinstance(nv, bool):
        notice_version = nv
    elif isinstance(nv, str) and nv.strip():
        digits = nv.strip()
        if digits.isascii() and digits.isdigit():  # "¹".isdigit() is True, int("¹") fails
            notice_version = int(digits)
        else:
            errors.append(RowError(line, "notice_version", "must be a whole number"))
    else:
        errors.append(RowError(line, "notice_version", "must be a whole number"))
    if notice_version is not None and not 0 <= notice_version < 2**31:
        errors.append(RowError(line, "notice_version", "is out of range"))
    purposes = _purposes(raw.get("purposes"), lambda p: errors.append(RowError(line, "purposes", p)))
    source = _text(raw, "source", line, errors, False) or "import"
    method = _text(raw, "method", line, errors, False) or "unspecified"
    jurisdiction = _text(raw, "jurisdiction", line, errors, False)
    if errors or subject is None or key is None or action is None or at is None:
        return errors
    return ConsentEvent(
        subject=subject, consent_key=key, action=action, at=at, source=source, method=method,
        notice_version=notice_version, expires_at=expires_at, jurisdiction=jurisdiction, purposes=purposes,
    )


_ACTIONS = {a.value: a for a in Action}


def _text(raw: Raw, column: str, line: int, errors: list[RowError], required: bool) -> str | None:
    """A stripped, printable, bounded string, or None (absent/empty); problems go to `errors`."""
    value = raw.get(column)
    if isinstance(value, int) and not isinstance(value, bool) and column == "subject":
        value = str(value)
    if value is None or value == "":
        if required:
            errors.append(RowError(line, column, "is required"))
        return None
    if not isinstance(value, str):
        errors.append(RowError(line, column, "must be a string"))
        return None
    value = value.strip()
    if len(value) > MAX_TEXT or not value.isprintable():
        errors.append(RowError(line, column, f"must be at most {MAX_TEXT} printable characters"))
        return None
    if not value:
        if required:
            errors.append(RowError(line, column, "is required"))
        return None
    return value


def _when(raw: Raw, column: str, line: int, errors: list[RowError], required: bool) -> datetime | None:
    value = _text(raw, column, line, errors, required)
    if value is None:
        return None
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        errors.append(RowError(line, column, "is not an ISO 8601 date or date-time"))
        return None
    except OverflowError:  # year 1 or 9999 with an offset that leaves the range once in UTC
        errors.append(RowError(line, column, "is out of range once converted to UTC"))
        return None


def _purposes(value: Any, fail: Callable[[str], None]) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items: list[Any] = value.split(";") if isinstance(value, str) else value
    if not isinstance(items, list):
        items = [None]
    if not all(isinstance(p, str) for p in items):
        fail("must be ';'-separated names (or a list of strings in JSONL)")
        return ()
    out = tuple(p.strip() for p in items if p.strip())
    if any(len(p) > MAX_TEXT or not p.isprintable() for p in out):
        fail(f"each purpose must be at most {MAX_TEXT} printable characters")
        return ()
    return out


def events(path: Path, fmt: str) -> Iterator[tuple[int, ConsentEvent | list[RowError]]]:
    for line, raw in read_raw(path, fmt):
        yield line, [raw] if isinstance(raw, RowError) else parse_row(line, raw)


def validate_file(path: Path, fmt: str, *, max_reported: int = MAX_REPORTED) -> int:
    """Check every row; return the number of rows, or raise ImportInvalid."""
    rows, total = 0, 0
    reported: list[RowError] = []
    for _line, parsed in events(path, fmt):
        if isinstance(parsed, list):
            total += len(parsed)
            reported.extend(parsed[: max(0, max_reported - len(reported))])
        else:
            rows += 1
    if total:
        raise ImportInvalid(reported, total)
    return rows


# -- importing -------------------------------------------------------------------------------------------


async def import_file(
    store: ImportTarget, path: str | Path, *, fmt: str | None = None, resume: bool = False,
    restart: bool = False, batch_size: int = 10_000, progress: Progress | None = None,
) -> ImportResult:
    p = Path(path)
    kind = detect_format(p, fmt)
    try:
        key = file_key(p)
    except OSError as exc:
        raise VeilError(f"cannot read import file: {exc.strerror}", code="consent_import_invalid") from exc
    started = time.perf_counter()
    mark = await store.import_mark(key)
    if restart:
        await store.reset_import(key)
        mark = None
    elif mark is not None and not resume:
        state = "completely" if mark.done else f"up to line {mark.line}"
        raise VeilError(
            f"this file was imported before ({state}); pass --resume to continue or --restart to import "
            "it again from the start",
            code="consent_import_seen",
        )
    result = ImportResult()
    if mark is not None and mark.done:
        result.already_done, result.last_line = True, mark.line
        return result
    start = mark.line if mark is not None else 0
    validate_file(p, kind)

    batch: list[ConsentEvent] = []
    last = start
    for line, parsed in events(p, kind):
        if isinstance(parsed, list):  # the file changed under us
            raise ImportInvalid(parsed, len(parsed))
        if line <= start:
            result.skipped += 1
            continue
        batch.append(parsed)
        last = line
        if len(batch) >= batch_size:
            await store.import_batch(batch, file_key=key, line=last, done=False)
            result.rows += len(batch)
            batch = []
            if progress is not None:
                progress(result.rows, last)
    await store.import_batch(batch, file_key=key, line=last, done=True)
    result.rows += len(batch)
    result.last_line = last
    result.seconds = time.perf_counter() - started
    if progress is not None:
        progress(result.rows, last)
    return result
