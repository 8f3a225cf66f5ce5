"""`veil init --openapi`: a starter policy set that passes `veil check` and `veil fmt --check`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from veil.cli import main
from veil.schema.openapi import Operation
from veil.schema.starter import guess_query_subject, guess_subject, route_template

FIX = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("spec", [FIX / "edge30.yaml", FIX / "edge31.json", ROOT / "policies" / "openapi.yaml",
                                  ROOT / "examples" / "orders-api" / "openapi.yaml"])
def test_starter_passes_check_and_fmt(tmp_path: Path, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "api"
    shutil.copytree(spec.parent, work, ignore=shutil.ignore_patterns("*.veil", "tests", "policies"))
    out = work / "policies"
    assert main(["init", "--openapi", str(work / spec.name), "--out", str(out)]) == 0
    assert main(["check", str(out)]) == 0
    assert main(["fmt", "--check", str(out)]) == 0
    capsys.readouterr()
    routes = (out / "routes.veil").read_text()
    assert "keep" not in routes.replace("# keep", "")  # every rule empty: deny by default
    assert main(["init", "--openapi", str(work / spec.name), "--out", str(out)]) == 1  # never overwrites
    assert "--force" in capsys.readouterr().err


def test_what_the_starter_guesses(tmp_path: Path) -> None:
    work = tmp_path / "api"
    shutil.copytree(FIX, work)
    assert main(["init", "--openapi", str(work / "edge30.yaml"), "--out", str(work / "p")]) == 0
    routes = (work / "p" / "routes.veil").read_text()
    assert "route GET /v2/accounts/{accountId} {\n  subject path.accountId" in routes
    assert "# the document's path is /v2/files/{name}.json: {name} here holds the whole segment\n" \
           "route GET /v2/files/{name} {" in routes
    cats = (work / "p" / "categories.veil").read_text()
    assert "category identity.government_id sensitive = ssn" in cats
    assert "category demographics.birth_date = date_of_birth" in cats
    assert "category identity.alias = nickname" in cats
    assert "phone_verified" not in cats and "hobby" not in cats
    purposes = (work / "p" / "purposes.veil").read_text()
    assert 'schema "../edge30.yaml"' in purposes


def test_subject_and_templates() -> None:
    assert guess_subject("/customers/{id}") == "id"
    assert guess_subject("/v1/users/{user}/orders/{order}") == "user"
    assert guess_subject("/orders/{customerId}") == "customerId"
    assert guess_subject("/products/{id}") is None
    op = Operation("GET", "/a/{x-y}/b", None, None, (), [], "")
    assert route_template(op, "/v1") == ("/v1/a/{x_y}/b", ["x_y"], None)
    bad = Operation("GET", "/a b", None, None, (), [], "")
    assert route_template(bad, "")[0] is None


def test_a_subject_in_the_query() -> None:
    """RPC-style APIs (`/users.info?user=U1`) name the person in the query, not the path."""
    def op(*params: tuple[str, str]) -> Operation:
        return Operation("GET", "/users.info", None, None, params, [], "")
    assert guess_query_subject(op(("query", "token"), ("query", "user"))) == "user"
    assert guess_query_subject(op(("query", "customer_id"))) == "customer_id"
    assert guess_query_subject(op(("query", "userId"))) == "userId"
    assert guess_query_subject(op(("query", "users"))) is None  # a filter over a list
    assert guess_query_subject(op(("query", "user_count"))) is None
    assert guess_query_subject(op(("header", "user"))) is None
    assert guess_query_subject(op(("query", "channel"))) is None
