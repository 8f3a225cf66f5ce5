"""The demo upstream over a real socket: `python -m veil.demo.upstream` on a free port."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from veil.bench.servers import Server, start_demo_upstream
from veil.demo.data import (
    customer_id,
    generate_customers,
    median_profile_bytes,
    segment_sizes,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with start_demo_upstream() as server:
        yield server


@pytest.fixture
def client(upstream: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=10) as c:
        yield c


def _get(client: httpx.Client, path: str, status: int = 200, **params: Any) -> Any:
    resp = client.get(path, params=params)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    return resp.json()


def test_data_is_deterministic_and_about_1kb() -> None:
    customers = generate_customers()
    assert len(customers) == 1000
    assert customers == generate_customers()
    assert generate_customers(10, seed=1) != generate_customers(10, seed=2)
    assert 800 <= median_profile_bytes(customers) <= 1500
    ids = [c["id"] for c in customers]
    assert ids[123] == customer_id(123) == "c-000123"
    assert len(set(ids)) == 1000


def test_profile_shape(client: httpx.Client) -> None:
    p = _get(client, "/customers/c-000042")
    assert p["id"] == "c-000042"
    assert set(p) >= {
        "name", "email", "phone", "birth_date", "address", "location", "last_ip", "preferences",
        "purchase_history", "loyalty", "health", "payment", "segment", "created_at",
    }
    assert set(p["address"]) == {"street", "city", "zip", "country"}
    assert set(p["location"]) == {"lat", "lon"}
    assert set(p["preferences"]) == {"categories", "newsletter", "language"}
    assert 3 <= len(p["purchase_history"]) <= 8
    assert set(p["purchase_history"][0]) == {"order_id", "sku", "price", "date", "category"}
    assert set(p["loyalty"]) == {"tier", "points"}
    assert set(p["health"]) == {"allergies", "pregnancy"}
    assert set(p["payment"]) == {"card_last4", "card_brand", "iban"}
    assert "example" in p["email"].split("@")[1]  # reserved domains only


def test_unknown_customer_is_a_json_404_without_the_id(client: httpx.Client) -> None:
    resp = client.get("/customers/c-999999")
    assert resp.status_code == 404
    assert resp.json() == {"error": "not_found"}
    assert "999999" not in resp.text


def test_list_pagination_covers_all_1000_customers(client: httpx.Client) -> None:
    first = _get(client, "/customers")
    assert (first["total"], first["limit"], first["offset"], len(first["items"])) == (1000, 100, 0, 100)
    seen = []
    for offset in range(0, 1000, 300):
        page = _get(client, "/customers", limit=300, offset=offset)
        assert page["offset"] == offset and page["limit"] == 300
        seen += [item["id"] for item in page["items"]]
    assert seen == [customer_id(i) for i in range(1000)]
    whole = _get(client, "/customers", limit=1000)
    assert len(whole["items"]) == 1000
    assert _get(client, "/customers", limit=10, offset=995)["items"][-1]["id"] == "c-000999"
    assert _get(client, "/customers", offset=5000)["items"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"offset": "-1"}])
def test_list_rejects_bad_pagination(client: httpx.Client, params: dict[str, Any]) -> None:
    assert _get(client, "/customers", 400, **params) == {"error": "bad_pagination"}


def test_list_filters_by_segment(client: httpx.Client) -> None:
    vip = _get(client, "/customers", segment="vip", limit=1000)
    assert vip["total"] == len(vip["items"]) > 0
    assert {item["segment"] for item in vip["items"]} == {"vip"}
    assert _get(client, "/customers", segment="nope")["total"] == 0


def test_segment_sizes_is_an_aggregate_with_small_groups(client: httpx.Client) -> None:
    groups = _get(client, "/segments/sizes")["groups"]
    assert groups == segment_sizes(generate_customers())
    assert sum(g["count"] for g in groups) == 1000
    assert set(groups[0]) == {"segment", "country", "count"}
    assert any(g["count"] < 10 for g in groups)
    assert any(g["count"] >= 10 for g in groups)


def test_gzip_variant(client: httpx.Client) -> None:
    plain = client.get("/customers/c-000007")
    raw = client.get("/customers/c-000007", params={"gzip": "1"}, headers={"Accept-Encoding": "identity"})
    assert raw.headers["content-encoding"] == "gzip"
    # httpx decodes transparently; check the bytes on the wire too
    assert raw.json() == plain.json()
    with client.stream("GET", "/customers", params={"gzip": "1", "limit": 5}) as resp:
        wire = b"".join(resp.iter_raw())
    assert orjson.loads(gzip.decompress(wire))["limit"] == 5
    assert "content-encoding" not in plain.headers


def test_healthz(client: httpx.Client) -> None:
    assert _get(client, "/healthz") == {"status": "ok"}
