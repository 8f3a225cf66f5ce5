"""A legacy orders service for the subject tests: resources keyed by something other than the customer.

    GET  /orders/{id}        an order; its customer is in the body (`customer.id`)
    POST /recommendations    recommendations for the customer named in the JSON request body
    GET  /calls              how many requests each path received (to tell whether veil called it)

    python -m tests.e2e.orders_upstream --port 9200
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CUSTOMERS = {
    "c-000001": {"id": "c-000001", "name": "Ada Lovelace", "email": "ada@example.com", "phone": "+441234567"},
    "c-000003": {"id": "c-000003", "name": "Grace Hopper", "email": "grace@example.com", "phone": "+15551234"},
}
ORDERS = {"o-1": "c-000001", "o-3": "c-000003", "o-anon": None}
calls: Counter[str] = Counter()


async def order(request: Request) -> JSONResponse:
    oid = request.path_params["id"]
    calls[f"/orders/{oid}"] += 1
    if oid not in ORDERS:
        return JSONResponse({"error": "no such order"}, 404)
    cust = ORDERS[oid]
    body = {"order_id": oid, "total": 42.5, "items": [{"sku": "sku-1", "qty": 2}],
            "customer": dict(CUSTOMERS[cust]) if cust else {"name": "guest"}}
    return JSONResponse(body)


async def recommendations(request: Request) -> JSONResponse:
    calls["/recommendations"] += 1
    raw = await request.body()
    data = json.loads(raw)
    cust = CUSTOMERS.get(str(data.get("customer_id")), {})
    return JSONResponse({"customer": cust, "received": data, "recommendations": ["sku-7", "sku-9"]})


async def slots(request: Request) -> JSONResponse:
    calls["/slots"] += 1
    return JSONResponse({"slots": ["top-banner", "sidebar"], "viewer": {"ip": "203.0.113.9"}})


async def calls_endpoint(request: Request) -> JSONResponse:
    return JSONResponse(dict(calls))


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[
    Route("/orders/{id}", order), Route("/recommendations", recommendations, methods=["POST"]),
    Route("/slots", slots), Route("/calls", calls_endpoint), Route("/healthz", healthz),
])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
