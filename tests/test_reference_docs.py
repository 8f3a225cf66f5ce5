"""The reference pages in docs/ list exactly what the code has: reason codes (from REASONS), the
Veil-* headers the proxy sets, every exported metric, and the consent import columns."""

from __future__ import annotations

import re
from pathlib import Path

from veil import metrics
from veil.consent.importer import COLUMNS, REQUIRED
from veil.reasons import REASONS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def table_rows(text: str) -> dict[str, list[str]]:
    """First cell (a `code`) -> the other cells, for every markdown table row."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if m:
            rows.setdefault(m.group(1), [c.strip() for c in m.group(2).split("|")])
    return rows


def test_every_reason_has_its_row_with_status_and_title() -> None:
    proxy = (DOCS / "reasons.md").read_text().split("## Admin API")[0]
    rows = table_rows(proxy)
    assert set(rows) == set(REASONS)
    for reason, (status, title) in REASONS.items():
        shown_status, shown_title = rows[reason][0], rows[reason][1]
        assert shown_title == title, reason
        if reason == "upstream_status":  # the upstream's own status is passed on
            assert shown_status == "the upstream's"
        else:
            assert shown_status == str(status), reason


def test_every_admin_reason_is_listed() -> None:
    source = (ROOT / "src" / "veil" / "proxy" / "admin.py").read_text()
    used = set(re.findall(r'_problem\(\d+, "([a-z_]+)"', source)) | {"request_invalid", "admin_unauthorized"}
    admin = table_rows((DOCS / "reasons.md").read_text().split("## Admin API")[1])
    assert used <= set(admin), used - set(admin)


def test_every_veil_header_is_documented() -> None:
    sent = set()
    for path in (ROOT / "src" / "veil" / "proxy").glob("*.py"):
        sent |= set(re.findall(r'b"(veil-[a-z-]+)"', path.read_text()))
    assert {"veil-decision", "veil-filtered", "veil-suppressed", "veil-report-only"} <= sent
    rows = {k.lower() for k in table_rows((DOCS / "headers.md").read_text())}
    assert sent <= rows, sent - rows


def test_every_metric_is_documented() -> None:
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    text = (DOCS / "metrics.md").read_text()
    documented = set(re.findall(r"`((?:veil|process)_[a-z_]+)`", text))
    assert names <= documented, names - documented
    assert {n for n in documented if n.startswith("veil_")} <= names, "docs/metrics.md names a metric veil lacks"


def test_every_import_column_is_documented() -> None:
    rows = table_rows((DOCS / "consent-import.md").read_text())
    assert set(rows) == set(COLUMNS)
    for column in COLUMNS:
        assert rows[column][0].startswith("yes" if column in REQUIRED else "no"), column
