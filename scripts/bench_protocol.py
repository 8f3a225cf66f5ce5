"""Benchmark veil's HTTP protocol (veil.proxy.h1server: head deadline and size limit, bounded unread
bodies) against uvicorn's own httptools protocol, under a trivial ASGI app (not a test).

    .venv/bin/python scripts/bench_protocol.py                 # CPU per request, in-process
    .venv/bin/python scripts/bench_protocol.py --wrk [--rounds 5] [--duration 4] [--connections 16]

Default: one keep-alive connection per protocol class, fed the same 8-header GET 20,000 times
in-process (no sockets; the event loop runs the app), CPU time per request (process time, so other
processes on a shared machine disturb it less), alternating the two classes for 7 rounds; prints the
medians and their difference. `--wrk`: both servers in their own processes, wrk loads them in turn,
round by round, requests/s for GET and for a POST with a 1 KB body (needs wrk; on a busy machine the
spread between rounds is larger than the difference).
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


def wrk(port: int, duration: int, connections: int, script: str | None) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://127.0.0.1:{port}/"]
    if script:
        cmd[1:1] = ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    return float(m.group(1))


REQ = (b"GET /customers/c-1 HTTP/1.1\r\nHost: x\r\nVeil-Key: k\r\nVeil-Purpose: p\r\nAccept: */*\r\n"
       b"User-Agent: wrk\r\nX-A: 1\r\nX-B: 2\r\n\r\n")


def cpu(rounds: int, n: int = 20_000) -> None:
    import asyncio
    from typing import Any

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from veil.config import ClientLimits
    from veil.proxy.h1server import protocol_class

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    class Transport(asyncio.Transport):
        def write(self, data: Any) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"peername": ("127.0.0.1", 5), "sockname": ("127.0.0.1", 80)}.get(name, default)

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    async def one(cls: Any) -> float:
        cfg = uvicorn.Config(app, lifespan="off", log_level="warning", ws="none", http=cls)
        cfg.load()
        proto = cls(config=cfg, server_state=ServerState(), app_state={})
        proto.connection_made(Transport())
        t0 = time.process_time()
        for _ in range(n):
            proto.data_received(REQ)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        took = (time.process_time() - t0) / n * 1e6
        proto.connection_lost(None)  # cancels the connection's timers
        return took

    async def run() -> None:
        classes = {"uvicorn": HttpToolsProtocol, "veil": protocol_class(ClientLimits(), "proxy")}
        got: dict[str, list[float]] = {k: [] for k in classes}
        for _ in range(rounds):
            for k, cls in classes.items():
                got[k].append(await one(cls))
        med = {k: statistics.median(v) for k, v in got.items()}
        print(f"CPU per request (median of {rounds}): uvicorn protocol {med['uvicorn']:.1f} us, "
              f"veil protocol {med['veil']:.1f} us, difference {med['veil'] - med['uvicorn']:+.1f} us")

    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wrk", action="store_true", help="load real servers with wrk instead")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if not args.wrk:
        cpu(args.rounds)
        return
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
            ratios = sorted(b / a for a, b in zip(got["uvicorn"], got["veil"], strict=True))
            print(f"{label:10} uvicorn {med['uvicorn']:>9,.0f} req/s   veil protocol {med['veil']:>9,.0f} req/s"
                  f"   ratio of medians {med['veil'] / med['uvicorn']:.3f}, per round {statistics.median(ratios):.3f}"
                  f" ({ratios[0]:.2f}-{ratios[-1]:.2f})   (rounds: {args.rounds} x {args.duration} s)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
