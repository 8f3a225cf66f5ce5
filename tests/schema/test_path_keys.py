"""Path keys with a `#fragment` or `?query` written into them (published documents use them to give one
path several operations of a method): the operation serves the path before it, for `veil check`,
`veil coverage` and `veil init`. Segments of a parameter and a fixed suffix (`{Sid}.json`): a route's
whole-segment parameter serves them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from veil.cli import main
from veil.schema.openapi import load_api, request_path

FIX = Path(__file__).parent / "fixtures" / "pathkeys"

PURPOSE = '''schema "api.yaml"

purpose stock {
  description "Counting boxes"
  basis contract
  retention 1 year
  recipients "Warehouse"
}
'''


def test_request_path() -> None:
    assert request_path("/boxes/{boxId}#with_label") == "/boxes/{boxId}"
    assert request_path("/tallies?preview=yes") == "/tallies"
    assert request_path("/a?b#c") == "/a"
    assert request_path("/plain/{x}") == "/plain/{x}"


def test_a_route_serves_every_operation_of_its_path() -> None:
    api = load_api(FIX / "api.yaml")
    ops = api.operations_for("GET", "/api/boxes/{id}")
    assert sorted(op.path for op in ops) == ["/boxes/{boxId}", "/boxes/{boxId}#with_label"]
    assert [op.path for op in api.operations_for("GET", "/api/tallies")] == ["/tallies?preview=yes"]
    assert [op.path for op in api.operations_for("GET", "/api/owners/{o}")] == ["/owners/{ownerId}.json"]


def test_a_typo_on_a_suffixed_path_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _policy(tmp_path, "id, ful_name", route="/api/owners/{o}")
    assert main(["check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "policy.veil:12:14: error[path_not_in_schema]" in out and "did you mean 'full_name'?" in out


def _policy(tmp: Path, keeps: str, route: str = "/api/boxes/{id}") -> Path:
    d = tmp / "p"
    d.mkdir(exist_ok=True)
    shutil.copy(FIX / "api.yaml", d / "api.yaml")
    (d / "policy.veil").write_text(f"{PURPOSE}\nroute GET {route} {{\n  for stock {{\n    keep {keeps}\n  }}\n}}\n")
    return d


def test_check_reads_the_fragment_operation_and_still_catches_typos(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    d = _policy(tmp_path, "id, width, label.text")  # label exists only in the #with_label operation
    assert main(["check", "--strict", str(d)]) == 0, capsys.readouterr().out
    d = _policy(tmp_path, "id, label.txet")
    assert main(["check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "policy.veil:12:14: error[path_not_in_schema]" in out and "did you mean 'label.text'?" in out
    d = _policy(tmp_path, "boxes, shelves", route="/api/tallies")
    assert main(["check", "--strict", str(d)]) == 0, capsys.readouterr().out  # no "route without operation"


def test_init_routes_the_path_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "api"
    shutil.copytree(FIX, work)
    out = work / "policies"
    assert main(["init", "--openapi", str(work / "api.yaml"), "--out", str(out)]) == 0
    routes = (out / "routes.veil").read_text()
    assert routes.count("route GET /api/boxes/{boxId} {") == 1
    assert "route GET /api/tallies {" in routes
    assert "# GET /api/boxes/{boxId}#with_label: another path of the same shape has a route" in routes
    assert "does not allow" not in routes
    # `{ownerId}.json`: routed with a whole-segment parameter, no subject guessed from it (its value is
    # `o1.json`, not the id); a parameter before the suffixed one still names the subject
    assert "# the document's path is /api/owners/{ownerId}.json: {ownerId} here holds the whole segment\n" \
           "route GET /api/owners/{ownerId} {" in routes
    owner = routes.split("route GET /api/owners/{ownerId} {")[1].split("\n}")[0]
    assert "subject" not in owner
    assert "route GET /api/owners/{ownerId}/boxes/{boxId} {\n  subject path.ownerId" in routes
    assert "# GET /api/boxes/{boxId}/label.{fmt}: a parameter fills only part of the segment" in routes
    assert "route GET /api/owners.info {\n  subject query.owner\n" in routes
    assert main(["check", str(out)]) == 0
    assert main(["fmt", "--check", str(out)]) == 0
    capsys.readouterr()
