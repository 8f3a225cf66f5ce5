"""Benchmark veil's HTTP protocol (veil.proxy.h1server: head deadline and size limit, bounded unread
bodies) against uvicorn's own httptools protocol, under a trivial ASGI app (not a test).

    .venv/bin/python scripts/bench_protocol.py [--rounds 5] [--duration 4] [--connections 16]

Both servers run at once, each in its own process; wrk loads them in turn, round by round (so drift
on a shared machine touches both alike). Prints median requests/s of each and their ratio, for GET
and for a POST with a 1 KB body. Needs wrk on PATH.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = '''
import sys, uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from veil.config import ClientLimits
from veil.proxy.h1server import protocol_class

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more and scope["method"] == "POST":
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

kind, port = sys.argv[1], int(sys.argv[2])
http = HttpToolsProtocol if kind == "uvicorn" else protocol_class(ClientLimits(), "proxy")
uvicorn.run(app, host="127.0.0.1", port=port, http=http, ws="none", lifespan="off", log_level="warning",
            access_log=False, loop="uvloop")
'''

POST_LUA = 'wrk.method = "POST"\nwrk.body = string.rep("x", 1024)\nwrk.headers["Content-Type"] = "text/plain"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")


def wrk(port: int, duration: float, connections: int, script: str | None) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://127.0.0.1:{port}/"]
    if script:
        cmd[1:1] = ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not on PATH")
    tmp = Path(tempfile.mkdtemp())
    (tmp / "server.py").write_text(SERVER)
    (tmp / "post.lua").write_text(POST_LUA)
    ports = {"uvicorn": free_port(), "veil": free_port()}
    procs = [subprocess.Popen([sys.executable, str(tmp / "server.py"), k, str(p)]) for k, p in ports.items()]
    try:
        for p in ports.values():
            wait(p)
        for label, script in (("GET", None), ("POST 1 KB", str(tmp / "post.lua"))):
            got: dict[str, list[float]] = {k: [] for k in ports}
            for _ in range(args.rounds):
                for k, p in ports.items():
                    got[k].append(wrk(p, args.duration, args.connections, script))
            med = {k: statistics.median(v) for k, v in got.items()}
            print(f"{label:10} uvicorn {med['uvicorn']:>9,.0f} req/s   veil protocol {med['veil']:>9,.0f} req/s"
                  f"   ratio {med['veil'] / med['uvicorn']:.3f}   (rounds: {args.rounds} x {args.duration} s)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
