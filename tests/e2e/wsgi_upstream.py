"""A plain WSGI app for a real third-party upstream server (gunicorn) behind veil.

It processes a request only when its whole body arrived (gunicorn raises from `wsgi.input.read()`
when a chunked body ends without its terminating chunk or a Content-Length body is cut short), and
appends every processed request to the JSON-lines file named by $WSGI_UPSTREAM_LOG.

    POST|GET /echo/<id>   200 {"id", "method", "body", "expect", "length"}: the request as processed
    GET /_log             the processed requests
    GET /healthz          {}

    WSGI_UPSTREAM_LOG=/tmp/x.jsonl gunicorn -b 127.0.0.1:9200 tests.e2e.wsgi_upstream:app
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _json(start_response: StartResponse, doc: Any, status: str = "200 OK") -> Iterable[bytes]:
    body = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    log = os.environ["WSGI_UPSTREAM_LOG"]
    path: str = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        return _json(start_response, {})
    if path == "/_log":
        try:
            with open(log) as f:
                return _json(start_response, [json.loads(line) for line in f if line.strip()])
        except FileNotFoundError:
            return _json(start_response, [])
    body = environ["wsgi.input"].read()  # raises when the body does not arrive whole
    doc = {"id": path.rsplit("/", 1)[-1], "method": environ["REQUEST_METHOD"], "body": body.decode("latin-1"),
           "expect": environ.get("HTTP_EXPECT"), "length": len(body)}
    with open(log, "a") as f:
        f.write(json.dumps(doc) + "\n")
    return _json(start_response, doc)
