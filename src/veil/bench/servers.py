"""Servers under test, each in its own process on a free 127.0.0.1 port.

    start_fast_upstream(bodies)                 raw asyncio HTTP/1.1: a fixed ~1 KB profile for any path,
                                                the demo's ~1 MB list for /customers, and each given
                                                path's body (the shape corpus: /shapes/<name>)
    start_plain(upstream, parse)                the plain aiohttp reference (veil.bench.plain): the
                                                fastest Python pass-through / parse-only proxy we built
    start_proxy(upstream, client, parse)        a Starlette pass-through on uvicorn (uvloop, httptools)
                                                with one shared upstream client (aiohttp or httpx):
                                                information rows, the framework-based stack
    start_nginx(upstream, workdir)              nginx as a keep-alive reverse proxy: the non-Python floor
    start_demo_upstream()                       the demo personalization API (veil.demo.upstream)
    start_veil(config_path)                     `python -m veil serve --config PATH`

`cpu_seconds(pids)` reads utime + stime from /proc/<pid>/stat and `rss_bytes(pids)` VmRSS from
/proc/<pid>/status (no psutil); `Server.pids()` is the process and its descendants, so a
multi-worker server is counted whole.

The child side of each server is `python -m veil.bench.servers {fast-upstream,proxy} ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

import veil
from veil.errors import VeilError

LOOPBACK = "127.0.0.1"
CLIENTS = ("aiohttp", "httpx")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding",
})


class ServerError(VeilError):
    code = "bench_server_failed"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


# --- CPU accounting ----------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (by scanning /proc for parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, ()))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the given processes (a vanished process counts 0)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / _CLK_TCK


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident memory (VmRSS) of the given processes, summed (a vanished process counts 0)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


# --- process management -------------------------------------------------------------------------------

def child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(veil.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


@dataclass
class Server:
    """A server process; `url` is its base URL (no trailing slash)."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc.poll() is None else []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _probe(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            resp.read()
            return True
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code < 500
    except (OSError, ValueError):
        return False


def start_process(name: str, argv: Sequence[str], url: str, *, ready_url: str | None = None,
                  env: Mapping[str, str] | None = None, timeout: float = 30.0) -> Server:
    """Start `argv`, wait until `ready_url` (default `url` + "/") answers below 500, return the Server."""
    fd, log_name = tempfile.mkstemp(prefix=f"veil-bench-{name}-", suffix=".log")
    log = os.fdopen(fd, "wb")
    proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=child_env(env))
    server = Server(name, url, proc, Path(log_name), log)
    deadline = time.monotonic() + timeout
    probe = ready_url or url + "/"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise ServerError(f"{name} exited with status {proc.returncode} during start-up"
                              + (f":\n{tail}" if tail else ""))
        if _probe(probe):
            return server
        time.sleep(0.05)
    server.stop()
    raise ServerError(f"{name} did not become ready within {timeout:g} s")


def _module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", name, *args]


def start_fast_upstream(bodies: Mapping[str, bytes] | None = None, workdir: Path | None = None) -> Server:
    """The fast upstream; `bodies` maps a request path (without query) to the JSON it answers, written
    to files under `workdir` (default: a temporary directory) for the child to read."""
    port = free_port()
    argv = _module("veil.bench.servers", "fast-upstream", "--port", str(port))
    if bodies:
        folder = Path(tempfile.mkdtemp(prefix="veil-bench-bodies-", dir=workdir))
        for i, (path, body) in enumerate(bodies.items()):
            file = folder / f"{i}.json"
            file.write_bytes(body)
            argv += ["--body", f"{path}={file}"]
    return start_process("fast-upstream", argv, f"http://{LOOPBACK}:{port}",
                         ready_url=f"http://{LOOPBACK}:{port}/healthz", timeout=60.0)


def start_demo_upstream(n_customers: int = 1000) -> Server:
    port = free_port()
    argv = _module("veil.demo.upstream", "--port", str(port), "--customers", str(n_customers))
    return start_process("demo-upstream", argv, f"http://{LOOPBACK}:{port}",
                         ready_url=f"http://{LOOPBACK}:{port}/healthz")


def start_proxy(upstream_url: str, *, client: str = "aiohttp", parse: bool = False) -> Server:
    if client not in CLIENTS:
        raise ServerError(f"unknown upstream client {client!r}; expected one of {', '.join(CLIENTS)}")
    port = free_port()
    argv = _module("veil.bench.servers", "proxy", "--port", str(port), "--upstream", upstream_url,
                   "--client", client, *(["--parse"] if parse else []))
    name = f"{'parse-only' if parse else 'pass-through'}-{client}"
    return start_process(name, argv, f"http://{LOOPBACK}:{port}", ready_url=f"http://{LOOPBACK}:{port}/healthz")


def start_plain(upstream_url: str, *, parse: bool = False, server: str = "raw",
                loop: str = "uvloop") -> Server:
    """The plain aiohttp reference (veil.bench.plain): pass-through, or parse-only with `parse`."""
    port = free_port()
    argv = _module("veil.bench.plain", "--port", str(port), "--upstream", upstream_url, "--server", server,
                   "--loop", loop, *(["--parse"] if parse else []))
    name = f"{'parse-only' if parse else 'pass-through'}-plain-{server}-{loop}"
    return start_process(name, argv, f"http://{LOOPBACK}:{port}", ready_url=f"http://{LOOPBACK}:{port}/healthz")


_NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp-body;
  proxy_temp_path {dir}/tmp-proxy;
  fastcgi_temp_path {dir}/tmp-fastcgi;
  uwsgi_temp_path {dir}/tmp-uwsgi;
  scgi_temp_path {dir}/tmp-scgi;
  upstream bench {{ server {upstream}; keepalive 256; }}
  server {{
    listen {LOOPBACK}:{port} backlog=1024;
    location / {{
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffer_size 64k;
      proxy_buffers 64 64k;
      proxy_max_temp_file_size 0;
    }}
  }}
}}
"""


def nginx_binary() -> str | None:
    import shutil

    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if Path(p).exists()), None)


def start_nginx(upstream_url: str, workdir: Path) -> Server:
    """nginx (one worker, keep-alive to the upstream, buffered in memory) in front of `upstream_url`."""
    binary = nginx_binary()
    if binary is None:
        raise ServerError("nginx is not installed")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(user="user root;\n" if os.geteuid() == 0 else "", dir=workdir,
                                       upstream=upstream_url.split("://", 1)[1].rstrip("/"),
                                       LOOPBACK=LOOPBACK, port=port))
    return start_process("nginx", [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
                         f"http://{LOOPBACK}:{port}", ready_url=f"http://{LOOPBACK}:{port}/healthz")


def start_veil(config_path: str | Path, *, env: Mapping[str, str] | None = None,
               timeout: float = 60.0) -> Server:
    """`python -m veil serve --config PATH`; ready when the admin /healthz answers."""
    from veil.config import load_config

    config = load_config(config_path)
    for listen in (config.proxy, config.admin):
        if listen.host not in (LOOPBACK, "localhost", "::1"):
            raise ServerError("veil bench runs on loopback only: listen addresses must be 127.0.0.1")
    scheme = "https" if config.tls else "http"
    admin_scheme = "https" if config.admin_tls else "http"
    return start_process(
        "veil", _module("veil", "serve", "--config", str(config_path)),
        f"{scheme}://{config.proxy.host}:{config.proxy.port}",
        ready_url=f"{admin_scheme}://{config.admin.host}:{config.admin.port}/healthz",
        env=env, timeout=timeout,
    )


# --- child side: the fast upstream ----------------------------------------------------------------------

def fast_profile() -> dict[str, Any]:
    """The profile the fast upstream serves: the first generated customer of median size."""
    from veil.demo.data import generate_customers, serialize

    customers = generate_customers(1000)
    sizes = sorted(len(serialize(c)) for c in customers)
    median = sizes[len(sizes) // 2]
    return next(c for c in customers if len(serialize(c)) == median)


def fast_list_ids() -> list[str]:
    from veil.demo.data import customer_id

    return [customer_id(i) for i in range(1000)]


def _http_response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class _FastHTTP(asyncio.Protocol):
    """Minimal keep-alive HTTP/1.1 for GET without bodies: enough for load generators and proxies."""

    def __init__(self, profile: bytes, bodies: Mapping[bytes, bytes]) -> None:
        self.profile, self.bodies = profile, bodies
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buf + data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head, buf = buf[:end], buf[end + 4:]
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b"/"
            self.transport.write(self.bodies.get(path, self.profile))
            if b"\r\nconnection: close" in head.lower():
                self.transport.close()
                return
        if len(buf) > 65536:
            self.transport.close()
        self.buf = buf


async def serve_fast(host: str, port: int, bodies: Mapping[str, bytes] | None = None) -> None:
    """Serve the profile for any path, the demo list at /customers unless `bodies` says otherwise, and
    each of `bodies` (path without query → JSON) at its path."""
    from veil.bench.shapes import demo_body
    from veil.demo.data import serialize

    profile = _http_response(serialize(fast_profile()))
    given = dict(bodies or {})
    given.setdefault("/customers", demo_body())
    answers = {path.encode(): _http_response(body) for path, body in given.items()}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FastHTTP(profile, answers), host, port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


# --- child side: the bare proxies ----------------------------------------------------------------------

def proxy_app(upstream_url: str, *, client: str = "aiohttp", parse: bool = False) -> Any:
    """A Starlette app forwarding GET to `upstream_url` with no policy work (the framework-based stack)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    base = upstream_url.rstrip("/")
    fetchers: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if client == "aiohttp":
            import aiohttp

            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60))

            async def fetch_aiohttp(url: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
                async with session.get(url, headers=headers) as r:
                    return r.status, await r.read(), r.headers.get("content-type", "application/json")

            fetchers["fetch"] = fetch_aiohttp
            try:
                yield
            finally:
                await session.close()
        else:
            import httpx

            async with httpx.AsyncClient() as hc:  # default transport and pool limits

                async def fetch_httpx(url: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
                    r = await hc.get(url, headers=headers)
                    return r.status_code, r.content, r.headers.get("content-type", "application/json")

                fetchers["fetch"] = fetch_httpx
                yield

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def forward(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items()
                   if k not in _HOP_BY_HOP and not k.startswith("veil-")}
        query = request.url.query
        url = base + request.url.path + (f"?{query}" if query else "")
        try:
            status, body, ctype = await fetchers["fetch"](url, headers)
        except Exception:  # any upstream failure: a bare 502, like a real gateway
            return Response(b'{"error":"bad_gateway"}', 502, media_type="application/json")
        if parse:
            body = orjson.dumps(orjson.loads(body))
        return Response(body, status, media_type=ctype)

    return Starlette(routes=[Route("/healthz", healthz), Route("/{path:path}", forward)], lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m veil.bench.servers")
    sub = parser.add_subparsers(dest="kind", required=True)
    fast = sub.add_parser("fast-upstream")
    fast.add_argument("--port", type=int, required=True)
    fast.add_argument("--body", action="append", default=[], metavar="PATH=FILE",
                      help="answer GET PATH with the JSON in FILE")
    proxy = sub.add_parser("proxy")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--upstream", required=True)
    proxy.add_argument("--client", choices=CLIENTS, default="aiohttp")
    proxy.add_argument("--parse", action="store_true")
    args = parser.parse_args(argv)
    if args.kind == "fast-upstream":
        bodies = {}
        for spec in args.body:
            path, sep, file = spec.partition("=")
            if not sep or not path.startswith("/"):
                parser.error(f"--body takes PATH=FILE, got {spec!r}")
            bodies[path] = Path(file).read_bytes()
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
            asyncio.run(serve_fast(LOOPBACK, args.port, bodies))
        else:
            uvloop.run(serve_fast(LOOPBACK, args.port, bodies))
        return 0
    import uvicorn

    app = proxy_app(args.upstream, client=args.client, parse=args.parse)
    uvicorn.run(app, host=LOOPBACK, port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
