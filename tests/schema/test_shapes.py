"""Schemas read for structure: which field paths a response can have (OpenAPI 3.0 and 3.1, plain JSON
Schema), through $ref chains, other files, allOf/oneOf/anyOf, nullable, additionalProperties,
arrays of arrays and recursion."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.redact.paths import parse_path
from veil.schema.openapi import load_api, load_json_schema
from veil.schema.reach import locations, misfits, producible, suggest
from veil.schema.shape import SchemaError, Shape, kinds

FIX = Path(__file__).parent / "fixtures"


def _shapes(spec: str, method: str, template: str) -> list[Shape]:
    api = load_api(FIX / spec)
    ops = api.operations_for(method, template)
    assert ops, f"no operation for {method} {template}"
    return [s for op in ops for s in api.shapes(op)]


@pytest.fixture(scope="module")
def account() -> list[Shape]:
    return _shapes("edge30.yaml", "GET", "/v2/accounts/{id}")


@pytest.mark.parametrize("path", [
    "id", '"odd key"', "owner.name", "owner.date_of_birth", "contact_email", "tags", "tags[*]", "tags[*][*]",
    "labels.anything", "labels.*", "settings.whatever.deep", "extra.known", "extra.unknown", "closed.only",
    "payout", "payout.iban", "payout.holder.full_name", "shipping.street", "shipping.postal_code",
    "parent.parent.parent.owner.ssn", "**.ssn", "*.name", "**.full_name", "note", "note.x.y",
    "**.passport", "*.street",  # `settings` is a free-form object: any key at any depth
])
def test_paths_the_schema_can_produce(account: list[Shape], path: str) -> None:
    assert producible(account, parse_path(path))


@pytest.mark.parametrize("path", [
    "adress", "owner.adress", "tags.x", "tags[*].x", "closed.other", "payout.iban.x", "shipping.city",
    "id[*]", "extra.known.deeper", "owner.*.x",
])
def test_paths_it_cannot(account: list[Shape], path: str) -> None:
    assert not producible(account, parse_path(path))


def test_kinds_follow_nullable_one_of_and_any_of(account: list[Shape]) -> None:
    from veil.schema.shape import child

    payout = child(account[0], "payout")
    assert kinds(payout[0]) == {"string", "object", "null"}
    shipping = child(account[0], "shipping")
    assert kinds(shipping[0]) == {"object", "null"}


def test_routes_match_operations_with_server_prefix_and_other_parameter_names() -> None:
    api = load_api(FIX / "edge30.yaml")
    assert [op.path for op in api.operations_for("GET", "/v2/accounts/{x}")] == ["/accounts/{accountId}"]
    assert [op.path for op in api.operations_for("GET", "/accounts/{x}")] == ["/accounts/{accountId}"]
    assert [op.path for op in api.operations_for("HEAD", "/accounts/{x}")] == ["/accounts/{accountId}"]
    assert api.operations_for("GET", "/v2/accounts/me") != []  # a static segment under a parameter
    assert api.operations_for("POST", "/v2/accounts/{x}") == []
    assert api.operations_for("GET", "/v2/users/{x}") == []
    events = api.operations_for("GET", "/accounts/{a}/events")
    assert events == []  # the path item's $ref names nothing: no operation, no crash


def test_openapi_31_types_prefix_items_const_pattern_properties_and_id_scopes() -> None:
    order = _shapes("edge31.json", "GET", "/orders/{id}")
    for ok in ("buyer.email", "point[*]", "status", "attrs.x-color", "lines[*].sku", "**.qty"):
        assert producible(order, parse_path(ok)), ok
    for bad in ("buyer.phone", "lines[*].price", "point[*].x"):
        assert not producible(order, parse_path(bad)), bad
    listing = _shapes("edge31.json", "GET", "/orders")
    assert producible(listing, parse_path("[*].lines[*].qty"))
    assert not producible(listing, parse_path("items[*].id"))


def test_plain_json_schema_for_a_route_and_a_pointer_into_a_document() -> None:
    line = load_json_schema("line.schema.json", FIX)
    assert producible([line], parse_path("customer.email"))
    assert not producible([line], parse_path("customer.phone"))
    person = load_json_schema("edge30.yaml#/components/schemas/Person", FIX)
    assert producible([person], parse_path("ssn"))
    with pytest.raises(SchemaError, match="names nothing"):
        load_json_schema("edge30.yaml#/components/schemas/Nope", FIX)


def test_recursion_is_listed_once_per_branch(account: list[Shape]) -> None:
    found, truncated = locations(account)
    templates = [loc.template for loc in found]
    assert "parent" in templates and "parent.parent" in templates
    assert not any(t.startswith("parent.parent.parent") for t in templates)
    assert not truncated
    assert any(loc.recursive for loc in found)


def test_did_you_mean(account: list[Shape]) -> None:
    assert suggest(account, parse_path("owner.nmae")) == "owner.name"
    assert suggest(account, parse_path("contact_emial")) == "contact_email"
    assert suggest(account, parse_path("**.snn")) == "**.ssn"
    assert suggest(account, parse_path("zzzzzz")) is None


def test_misfits_name_paths_and_types_never_values(account: list[Shape]) -> None:
    doc = {"id": "secret-id-123", "owner": {"nmae": "Jane Roe"}, "tags": [["a"], "b"], "closed": {"only": 5}}
    found = misfits(account, doc)
    assert "owner.nmae: not in the schema" in found
    assert "tags[*]: a string where the schema has array" in found
    assert "closed.only: an integer where the schema has string" in found
    assert not any("Jane" in f or "secret" in f for f in found)
    assert misfits(account, {"id": "x", "payout": None, "labels": {"k": "v"}}) == []


@pytest.mark.parametrize("text, match", [
    ("openapi: 2.5.0\npaths: {}\n", "not supported"),
    ("swagger: '1.2'\n", "not an OpenAPI document"),
    ("[1, 2]\n", "mapping at the top"),
    ("openapi: 3.0.0\npaths: [1]\n", "paths: must be a mapping"),
    ("openapi: 3.0.0\npaths: {/a: {get: {responses: {'200': {content: {application/json: {schema: {$ref: "
     "'#/nope'}}}}}}}}\n", None),
    ("{ not json", "not valid JSON"),
    ("a: [unclosed\n", "line 2"),
])
def test_bad_documents(tmp_path: Path, text: str, match: str | None) -> None:
    p = tmp_path / ("spec.json" if text.startswith("{") else "spec.yaml")
    p.write_text(text)
    if match is None:  # loads; the broken $ref shows when the operation's shapes are built
        api = load_api(p)
        with pytest.raises(SchemaError, match="cannot be resolved"):
            api.shapes(api.operations[0])
        return
    with pytest.raises(SchemaError, match=match):
        load_api(p)


def test_remote_refs_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "spec.yaml"
    p.write_text("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n          content:\n"
                 "            application/json:\n              schema: {$ref: 'https://example.test/s.json'}\n")
    api = load_api(p)
    with pytest.raises(SchemaError, match="cannot be resolved"):
        api.shapes(api.operations[0])


def test_swagger_2(tmp_path: Path) -> None:
    p = tmp_path / "spec.yaml"
    p.write_text("swagger: '2.0'\nbasePath: /api\npaths:\n  /users/{id}:\n    get:\n      responses:\n"
                 "        '200':\n          schema: {$ref: '#/definitions/User'}\n"
                 "definitions:\n  User: {type: object, properties: {email: {type: string}}}\n")
    api = load_api(p)
    shapes = [s for op in api.operations_for("GET", "/api/users/{x}") for s in api.shapes(op)]
    assert producible(shapes, parse_path("email")) and not producible(shapes, parse_path("mail"))
