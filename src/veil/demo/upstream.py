"""The demo upstream: a legacy personalization API that returns everything it knows.

Endpoints (all JSON):
    GET /customers/{id}                          one profile, or 404 {"error": "not_found"}
    GET /customers?limit=&offset=&segment=       {"items": [...], "total": N, "limit": L, "offset": O}
                                                 limit 1..1000 (default 100), offset >= 0
    GET /segments/sizes                          {"groups": [{"segment", "country", "count"}, ...]}
                                                 an aggregate; some groups have fewer than 10 members
    GET /healthz                                 {"status": "ok"}

Gzip: add the query parameter `gzip=1` to any endpoint and the body comes back gzip-compressed with
`Content-Encoding: gzip`, whatever the request's Accept-Encoding says. A query parameter travels
through a proxy unchanged, so proxy tests can put a gzip-encoding upstream behind veil with it.

Bodies are serialized once at start-up; a list response is a join of ready bytes.

    python -m veil.demo.upstream --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Sequence

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from veil.demo.data import generate_customers, segment_sizes, serialize

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
JSON = "application/json"


class _Catalog:
    """Ready-made bodies: per customer, per segment index, and the aggregate."""

    def __init__(self, n_customers: int) -> None:
        customers = generate_customers(n_customers)
        self.by_id: dict[str, bytes] = {str(c["id"]): serialize(c) for c in customers}
        self.ordered: list[bytes] = list(self.by_id.values())
        self.by_segment: dict[str, list[bytes]] = {}
        for c, body in zip(customers, self.ordered, strict=True):
            self.by_segment.setdefault(str(c["segment"]), []).append(body)
        self.sizes = orjson.dumps({"groups": segment_sizes(customers)})


def _json(body: bytes, request: Request, status: int = 200) -> Response:
    if request.query_params.get("gzip") == "1":
        return Response(gzip.compress(body, compresslevel=1), status, media_type=JSON,
                        headers={"Content-Encoding": "gzip"})
    return Response(body, status, media_type=JSON)


def _error(request: Request, status: int, reason: str) -> Response:
    return _json(orjson.dumps({"error": reason}), request, status)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        return None
    value = int(raw)
    return value if lo <= value <= hi else None


def create_app(n_customers: int = 1000) -> Starlette:
    catalog = _Catalog(n_customers)

    async def get_customer(request: Request) -> Response:
        body = catalog.by_id.get(request.path_params["id"])
        if body is None:
            return _error(request, 404, "not_found")  # the id is not echoed back
        return _json(body, request)

    async def list_customers(request: Request) -> Response:
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        if limit is None or offset is None:
            return _error(request, 400, "bad_pagination")
        segment = request.query_params.get("segment")
        pool = catalog.ordered if not segment else catalog.by_segment.get(segment, [])
        page = pool[offset:offset + limit]
        body = b'{"items":[' + b",".join(page) + b'],"total":%d,"limit":%d,"offset":%d}' % (
            len(pool), limit, offset)
        return _json(body, request)

    async def sizes(request: Request) -> Response:
        return _json(catalog.sizes, request)

    async def healthz(request: Request) -> Response:
        return _json(b'{"status":"ok"}', request)

    return Starlette(routes=[
        Route("/customers/{id}", get_customer),
        Route("/customers", list_customers),
        Route("/segments/sizes", sizes),
        Route("/healthz", healthz),
    ])


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m veil.demo.upstream",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--customers", type=int, default=1000)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.customers), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
