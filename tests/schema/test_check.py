"""A policy checked against its API's schema: `schema` lines (top level and per route), errors with
file:line:col, caret and "did you mean", warnings for routes without an operation and for personal
fields kept in clear without a category; `veil check --schema`, `veil coverage`, `veil test`,
`veil notice` use it; `veil fmt` keeps it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from veil.cli import main
from veil.errors import Diagnostics, Severity
from veil.policy.fmt import format_text
from veil.schema.check import load_checked

FIX = Path(__file__).parent / "fixtures"

PURPOSES = '''
purpose billing {
  description "Invoices"
  basis contract
  retention 10 years
  recipients "Accounting"
}
'''


def _policy(tmp: Path, routes: str, *, schema: str | None = "edge30.yaml", extra: str = "") -> Path:
    d = tmp / "p"
    d.mkdir(exist_ok=True)
    for f in ("edge30.yaml", "external.yaml", "edge31.json", "line.schema.json"):
        shutil.copy(FIX / f, d / f)
    head = f'schema "{schema}"\n' if schema else ""
    (d / "policy.veil").write_text(head + PURPOSES + extra + routes)
    return d


def _diags(d: Path, **kw: object) -> list:  # type: ignore[type-arg]
    try:
        policy, _ = load_checked([d], **kw)  # type: ignore[arg-type]
    except Diagnostics as exc:
        return exc.items
    return policy.warnings


def test_a_path_no_response_can_have_is_an_error_with_caret_and_did_you_mean(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    d = _policy(tmp_path, '''
route GET /v2/accounts/{id} {
  for billing {
    keep id, owner.nmae, contact_emial
    drop owner.snn
  }
}
''')
    assert main(["check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "policy.veil:12:14: error[path_not_in_schema]: no response of GET /v2/accounts/{id} has owner.nmae" in out
    assert "^^^^^^^^^^" in out
    assert "did you mean 'owner.name'?" in out
    assert "did you mean 'contact_email'?" in out
    assert "did you mean 'owner.ssn'?" in out
    assert "(edge30.yaml: GET /accounts/{accountId})" in out


def test_warnings_route_without_operation_and_personal_in_clear(tmp_path: Path) -> None:
    d = _policy(tmp_path, '''
route GET /v2/accounts/{id} {
  for billing {
    keep id, owner, payout
  }
}

route GET /v2/invoices/{id} {
  for billing {
    keep total
  }
}
''')
    found = {(x.code, x.severity) for x in _diags(d)}
    assert ("route_not_in_schema", Severity.WARNING) in found
    personal = [x for x in _diags(d) if x.code == "personal_in_clear"]
    text = "\n".join(x.message for x in personal)
    for path in ("owner.name", "owner.date_of_birth", "owner.ssn", "owner.nickname", "payout.iban",
                 "payout.holder.full_name"):
        assert f"{path} looks personal" in text, path
    assert "phone_verified" not in text  # a boolean about a phone is not a phone number
    assert "hobby" not in text  # x-veil-personal: false
    assert all(x.location is not None and x.location.line == 12 for x in personal)
    assert any("category identity.government_id = owner.ssn" in (x.hint or "") for x in personal)
    nickname = next(x for x in personal if "owner.nickname" in x.message)
    assert "x-veil-category" in nickname.message and "identity.alias" in (nickname.hint or "")


def test_a_category_silences_the_personal_warning(tmp_path: Path) -> None:
    d = _policy(tmp_path, '''
route GET /v2/accounts/{id} {
  for billing {
    keep id, owner.name
    hash contact_email
  }
}
''', extra="category identity = name\n")
    assert not [x for x in _diags(d) if x.code == "personal_in_clear"]


def test_route_level_json_schema_and_check_flag(tmp_path: Path) -> None:
    d = _policy(tmp_path, '''
route GET /lines/{id} {
  schema "line.schema.json"
  for billing {
    keep sku, qty, customer.emial
  }
}

route GET /orders/{id} {
  for billing {
    keep id, lines[*].sku, buyer.phone
  }
}
''', schema=None)
    diags = _diags(d, extra_schemas=[d / "edge31.json"])
    errors = {x.message for x in diags if x.severity is Severity.ERROR}
    assert any("customer.emial" in m and "line.schema.json" in m for m in errors)
    assert any("buyer.phone" in m for m in errors)
    assert not any("lines[*].sku" in m for m in errors)
    alone = _diags(d)  # without --schema only the route with its own JSON Schema is checked
    assert [x.code for x in alone] == ["path_not_in_schema"] and "customer.emial" in alone[0].message


def test_bad_schema_references_are_errors_at_the_schema_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    d = _policy(tmp_path, '''
route GET /x/{id} {
  schema "missing.json"
  for billing {
    keep a
  }
}
''', schema="nope.yaml")
    assert main(["check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "policy.veil:1:1: error[schema_invalid]: schema" in out and "nope.yaml" in out
    assert "error[schema_invalid]: schema missing.json" in out


def test_each_and_suppress_paths_are_checked(tmp_path: Path) -> None:
    d = _policy(tmp_path, '''
route GET /orders {
  each [*] subject buyer.emial
  for billing {
    keep [*].id
    suppress [*].lines where qty < 5
  }
}
''', schema="edge31.json")
    diags = _diags(d)
    msgs = [x.message for x in diags if x.code == "path_not_in_schema"]
    assert any("have no buyer.emial" in m for m in msgs), msgs


def test_fmt_round_trips_schema_lines() -> None:
    text = 'schema   "api.yaml"\nschema "more.yaml"\n\nroute GET /a {\n  schema "a.json#/x"  # why\n  for p {\n  }\n}\n'
    out = format_text(text)
    assert out == ('schema "api.yaml"\nschema "more.yaml"\n\nroute GET /a {\n  schema "a.json#/x"  # why\n\n'
                   "  for p {\n  }\n}\n")
    assert format_text(out) == out


def test_coverage_lists_every_field_with_its_fate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _policy(tmp_path, '''
route GET /v2/accounts/{id} {
  for billing {
    keep id, owner, tags, labels
    hash contact_email
    mask payout.iban last 4
    drop owner.ssn
    generalize owner.date_of_birth year
  }
}
''', extra="category identity = name, nickname, full_name\ncategory payment = payout\n")
    code = main(["coverage", str(d), "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    rows = {f["path"]: f for f in data["rules"][0]["fields"]}
    assert rows["id"]["fate"] == "kept" and rows["id"]["statement"].startswith("keep id")
    assert rows["contact_email"]["fate"] == "transformed" and rows["contact_email"]["how"] == "hash"
    assert rows["owner.ssn"]["fate"] == "dropped"
    assert rows["owner.date_of_birth"]["how"] == "date"
    assert rows["owner"]["fate"] == "kept"
    assert rows["settings"]["fate"] == "removed" and rows["settings"]["statement"] == "for billing {"
    assert rows["tags[*][*]"]["fate"] == "kept"
    assert rows["labels.*"]["fate"] == "kept"
    assert rows["payout"]["fate"] == "partial"  # an object kept for its masked iban; as a string: removed
    assert "removed as scalar" in rows["payout"]["note"]
    assert rows["payout.iban"]["how"] == "mask"
    assert rows["owner.name"]["category"] == "identity"
    assert data["rules"][0]["personal_in_clear"] == []
    assert code == 0
    # without the category, name is personal and in clear: listed first, exit 1
    text = (d / "policy.veil").read_text()
    (d / "policy.veil").write_text(text.replace("category identity = name, ", "category identity = "))
    assert main(["coverage", str(d)]) == 1
    md = capsys.readouterr().out
    assert "**Personal and in clear, no category:** `owner.name`" in md
    assert md.index("| `owner.name`") < md.index("| `id`")


def test_veil_test_lists_bodies_the_schema_does_not_allow(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    d = _policy(tmp_path, '''
caller app {
  key sha256:0000000000000000000000000000000000000000000000000000000000000000
  may billing
}

route GET /v2/accounts/{id} {
  for billing {
    keep id
  }
}
''')
    (d / "tests").mkdir()
    (d / "tests" / "t.yaml").write_text('''cases:
  - name: an account
    request: {path: /v2/accounts/a1, caller: app, purpose: billing}
    response: {body: {id: a1, owner: {nmae: Jane}}}
    expect: {decision: redact, body: {id: a1}}
''')
    assert main(["test", str(d)]) == 0
    out = capsys.readouterr().out
    assert "owner.nmae: not in the schema" in out and "Jane" not in out
    assert main(["test", str(d), "--strict-schema"]) == 1


def test_notice_refuses_to_under_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _policy(tmp_path, '''
route GET /v2/accounts/{id} {
  for billing {
    keep id, owner.name
  }
}
''')
    assert main(["notice", str(d)]) == 1
    assert "owner.name" in capsys.readouterr().err
    assert main(["notice", str(d), "--allow-uncategorized"]) == 0


def test_schema_is_a_keyword_only_where_one_is_expected() -> None:
    text = 'category meta = schema\n\nroute GET /a {\n  for p {\n    keep schema, id\n    drop @meta\n  }\n}\n'
    assert format_text(text) == text


def test_a_typo_under_an_object_that_allows_other_keys_is_a_warning(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(FIX / "open.yaml", d / "open.yaml")
    routes = '''
route GET /grants/{id} {
  for billing {
    keep id, sttus, parties[*].roel, labels.campaign, zz_custom_key
  }
}
'''
    (d / "policy.veil").write_text('schema "open.yaml"\n' + PURPOSES + routes)
    assert main(["check", str(d)]) == 0  # the schema allows these keys: no error
    out = capsys.readouterr().out
    assert "policy.veil:12:14: warning[path_not_named]: no response schema of GET /grants/{id} names sttus" in out
    assert "did you mean 'status'?" in out and "did you mean 'parties[*].role'?" in out
    assert "names labels.campaign" not in out  # a map's keys are not named by any schema: nothing to suggest
    assert "names zz_custom_key" not in out  # nothing close: an extra key the object allows
    assert main(["check", "--strict", str(d)]) == 1
