"""A tiny slow upstream for drain tests.

    GET /slow/{id}?delay=SECONDS   {"id": id, "note": "..."} after sleeping (at most 10 s)
    GET /stats                     {"started": N, "finished": M}: requests to /slow so far
    GET /healthz                   {"status": "ok"}

    python -m tests.e2e.slow_upstream --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def create_app() -> Starlette:
    counts = {"started": 0, "finished": 0}

    async def slow(request: Request) -> JSONResponse:
        counts["started"] += 1
        try:
            delay = min(float(request.query_params.get("delay", "1")), 10.0)
        except ValueError:
            delay = 1.0
        await asyncio.sleep(delay)
        counts["finished"] += 1
        return JSONResponse({"id": request.path_params["id"], "note": "slow but complete"})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(counts)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/slow/{id}", slow), Route("/stats", stats), Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
