"""GDPR Art. 30 records of processing: one row per purpose and category, CSV and JSON writers."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from veil.notice import build_notice, records_csv, records_json, records_of_processing
from veil.notice.ropa import COLUMNS
from veil.policy.compile import CompiledPolicy


def test_rows_cover_purpose_by_category(example: CompiledPolicy) -> None:
    rows = records_of_processing(example)
    notice = build_notice(example)
    want = {(p.name, c.name) for p in notice.purposes for c in p.categories}
    assert {(r["purpose"], r["category"]) for r in rows} == want
    assert len(rows) == len(want)
    assert {r["purpose"] for r in rows} == set(example.purposes)
    assert all(tuple(r) == COLUMNS for r in rows)
    assert {r["controller"] for r in rows} == {"Acme Retail GmbH"}
    row = next(r for r in rows if (r["purpose"], r["category"]) == ("advertising.targeted", "identity"))
    assert row["lawful_basis"] == "consent" and row["lawful_basis_article"] == "GDPR Art. 6(1)(a)"
    assert row["disclosed_as"] == "pseudonymized" and row["retention"] == "6 months"
    assert row["recipients"] == "Acme advertising partners (TCF vendors)"
    assert row["gpc_honored"] is True and row["sensitive"] is False and row["tcf_purposes"] == "1; 3; 4"


def test_sensitive_flag_and_purpose_without_data(write_policy: Any) -> None:
    policy = write_policy("""
policy "clinic"
purpose care { description "d" basis consent consent "k" retention 1 year recipients "Doctors" }
purpose quiet { description "d" basis contract retention 1 year recipients "nobody" }
category health sensitive = health
route GET /p/{id} { subject path.id  for care { keep health }  for quiet { keep nothing_here } }
""")
    rows = records_of_processing(policy)
    assert [(r["purpose"], r["category"], r["sensitive"]) for r in rows] == [
        ("care", "health", True), ("quiet", "", False)]
    assert rows[0]["controller"] == "clinic" and rows[0]["consent_key"] == "k"


def test_csv_and_json_writers(example: CompiledPolicy) -> None:
    rows = records_of_processing(example)
    parsed = list(csv.DictReader(io.StringIO(records_csv(rows))))
    assert len(parsed) == len(rows)
    assert tuple(parsed[0]) == COLUMNS
    assert parsed[0]["purpose"] == rows[0]["purpose"] and parsed[0]["sensitive"] in ("yes", "no")
    assert json.loads(records_json(rows)) == rows
    assert records_csv(rows) == records_csv(records_of_processing(example))


def test_csv_defuses_formulas(write_policy: Any) -> None:
    policy = write_policy("""
purpose p { description "=HYPERLINK(\\"x\\")" basis contract retention 1 year recipients "@evil" }
""")
    (row,) = list(csv.DictReader(io.StringIO(records_csv(records_of_processing(policy)))))
    assert row["description"].startswith("'=") and row["recipients"] == "'@evil"
