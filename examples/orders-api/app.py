"""The orders API: a second legacy upstream for veil's examples and tests (the first is the demo's
personalization API). It was written long before anyone thought about minimization: every order
carries the buyer's contact details, the shipping address, the payment method (a full card number
from a payment integration nobody removed, or an IBAN for invoices), free-form metadata and the
parcel's GPS track. All data is synthetic and deterministic.

    GET /orders/{orderId}                   one order, or 404 {"error": "not_found"}
    GET /orders?customer=&limit=            {"data": [...orders], "has_more": bool}
    GET /customers/{customerId}/summary     {"customer": {...}, "orders": N, "lifetime_value": {...}}
    GET /healthz

    python examples/orders-api/app.py --host 127.0.0.1 --port 9100

Its OpenAPI document is openapi.yaml next to this file; the policy veil enforces for it is in
policies/ (and how it was written, step by step, in README.md).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

FIRST = ("Ada", "Bruno", "Chiara", "Dmitri", "Eva", "Farid", "Greta", "Hiro", "Ines", "Jamal", "Kira", "Luca")
LAST = ("Lovelace", "Moreau", "Rossi", "Ivanov", "Lindqvist", "Haddad", "Berg", "Tanaka", "Silva", "Okafor")
CITIES = (("Berlin", "10115", "DE", "+49"), ("Paris", "75002", "FR", "+33"), ("Milano", "20121", "IT", "+39"),
          ("Madrid", "28013", "ES", "+34"), ("Amsterdam", "1012 AB", "NL", "+31"))
SKUS = ("BOOK-1001", "MUG-2002", "LAMP-3003", "DESK-4004", "PEN-5005", "BAG-6006")
TEST_CARDS = ("4111111111111111", "5555555555554444", "378282246310005", "4012888888881881")  # network test numbers


def _iban(rng: random.Random, country: str) -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


def make_customer(rng: random.Random, i: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, zip_code, country, cc = rng.choice(CITIES)
    return {
        "id": f"cus_{i:05d}",
        "full_name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{i}@shop.example",
        "phone": f"{cc} {rng.randint(100, 999)} {rng.randint(1000000, 9999999)}",
        "date_of_birth": f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "address": {"line1": f"Hauptstrasse {rng.randint(1, 200)}", "line2": None, "city": city,
                    "postal_code": zip_code, "country": country},
        "marketing_opt_in": rng.random() < 0.4,
    }


def make_order(rng: random.Random, n: int, customer: dict[str, Any]) -> dict[str, Any]:
    lines = [{"sku": rng.choice(SKUS), "quantity": rng.randint(1, 3), "unit_price": {
        "amount": rng.randint(299, 9999), "currency": "EUR"}} for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.6:
        payment: dict[str, Any] = {"type": "card", "brand": "visa", "number": rng.choice(TEST_CARDS),
                                   "expiry": f"{rng.randint(1, 12):02d}/{rng.randint(27, 31)}"}
    else:
        payment = {"type": "bank_transfer", "iban": _iban(rng, customer["address"]["country"]),
                   "reference": f"INV-{n:06d}"}
    lat, lon = 52.52 + rng.uniform(-1, 1), 13.40 + rng.uniform(-1, 1)
    return {
        "id": f"ord_{n:06d}",
        "status": rng.choice(("placed", "paid", "shipped", "delivered")),
        "placed_at": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
        "customer": customer,
        "shipping": {"address": customer["address"], "carrier": rng.choice(("dhl", "ups", "gls")),
                     "tracking": {"number": f"TRK{rng.randint(10**9, 10**10 - 1)}",
                                  "route": [[round(lat + k * 0.01, 5), round(lon + k * 0.01, 5)] for k in range(3)]},
                     "buyer_ip": f"198.51.100.{rng.randint(1, 254)}"},
        "lines": lines,
        "total": {"amount": sum(x["quantity"] * x["unit_price"]["amount"] for x in lines), "currency": "EUR"},
        "payment": payment,
        "metadata": {"channel": rng.choice(("web", "app")), "campaign": rng.choice(("spring", "none"))},
        "notes": None,
    }


def build(n_customers: int = 40, n_orders: int = 200, seed: int = 17) -> tuple[dict[str, Any], dict[str, Any]]:
    rng = random.Random(seed)
    customers = {f"cus_{i:05d}": make_customer(rng, i) for i in range(n_customers)}
    ids = list(customers)
    orders = {}
    for n in range(n_orders):
        o = make_order(rng, n, customers[ids[n % n_customers]])
        orders[o["id"]] = o
    return customers, orders


def create_app(n_customers: int = 40, n_orders: int = 200) -> Starlette:
    customers, orders = build(n_customers, n_orders)

    async def get_order(request: Request) -> JSONResponse:
        o = orders.get(request.path_params["orderId"])
        return JSONResponse(o) if o else JSONResponse({"error": "not_found"}, 404)

    async def list_orders(request: Request) -> JSONResponse:
        who = request.query_params.get("customer")
        try:
            limit = min(max(int(request.query_params.get("limit", "20")), 1), 100)
        except ValueError:
            return JSONResponse({"error": "bad_limit"}, 400)
        found = [o for o in orders.values() if who is None or o["customer"]["id"] == who]
        return JSONResponse({"data": found[:limit], "has_more": len(found) > limit})

    async def summary(request: Request) -> JSONResponse:
        c = customers.get(request.path_params["customerId"])
        if c is None:
            return JSONResponse({"error": "not_found"}, 404)
        mine = [o for o in orders.values() if o["customer"]["id"] == c["id"]]
        value = sum(o["total"]["amount"] for o in mine)
        return JSONResponse({"customer": c, "orders": len(mine),
                             "lifetime_value": {"amount": value, "currency": "EUR"}})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/orders/{orderId}", get_order),
        Route("/orders", list_orders),
        Route("/customers/{customerId}/summary", summary),
        Route("/healthz", healthz),
    ])


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="The example orders API (a legacy upstream for veil)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
