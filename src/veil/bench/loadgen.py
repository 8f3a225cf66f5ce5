"""Closed-loop HTTP load: `wrk` when it is on PATH, else a built-in aiohttp generator.

Both keep a fixed number of keep-alive connections busy for a fixed time and report throughput and
latency percentiles. The built-in generator runs in its own process (`python -m veil.bench.loadgen`)
so it does not share an event loop or the GIL with anything under test; it prints `measuring` when the
warm-up is over (the caller starts its CPU accounting there) and then one JSON line with the result.

Targets must be on loopback: a benchmark here never sends traffic anywhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import orjson

from veil.errors import VeilError

TOOLS = ("auto", "wrk", "builtin")
_LOOPBACK_HOSTS = ("localhost", "::1")


class LoadError(VeilError):
    code = "bench_load_failed"


@dataclass(frozen=True)
class LoadSpec:
    url: str
    duration: float
    connections: int = 16
    headers: tuple[tuple[str, str], ...] = ()
    warmup: float = 0.0
    timeout: float = 10.0


@dataclass(frozen=True)
class LoadResult:
    tool: str
    requests: int  # responses received in the measured window, any status
    non_2xx: int  # of those, status outside 200-399 (wrk's definition)
    errors: int  # connect/read/write errors and timeouts
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not (host.startswith("127.") or host in _LOOPBACK_HOSTS):
        raise LoadError("load targets must be on loopback (127.0.0.0/8, localhost, ::1)")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def choose_tool(tool: str = "auto") -> str:
    if tool not in TOOLS:
        raise LoadError(f"unknown load generator {tool!r}; expected one of {', '.join(TOOLS)}")
    if tool == "auto":
        return "wrk" if shutil.which("wrk") else "builtin"
    if tool == "wrk" and not shutil.which("wrk"):
        raise LoadError("wrk is not on PATH")
    return tool


def run_load(spec: LoadSpec, tool: str = "auto", on_measure: Callable[[], None] | None = None) -> LoadResult:
    """Drive `spec.url`; `on_measure` is called right before the measured window starts."""
    check_loopback(spec.url)
    if spec.duration <= 0 or spec.connections < 1:
        raise LoadError("duration must be > 0 and connections >= 1")
    if choose_tool(tool) == "wrk":
        return _run_wrk(spec, on_measure)
    return _run_builtin(spec, on_measure)


# --- wrk ------------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_NUM_UNIT = r"([\d.]+)(us|ms|s|m|h)"


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(text: str) -> LoadResult:
    """Parse the output of `wrk --latency`."""
    done = re.search(r"(\d+) requests in " + _NUM_UNIT, text)
    p50 = re.search(r"^\s*50(?:\.0+)?%\s+" + _NUM_UNIT, text, re.M)
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+" + _NUM_UNIT, text, re.M)
    if not (done and p50 and p99):
        raise LoadError("could not read wrk's output (requests or latency distribution missing)")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    requests = int(done.group(1))
    seconds = _ms(done.group(2), done.group(3)) / 1e3
    return LoadResult(
        tool="wrk",
        requests=requests,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(g) for g in socket_errors.groups()) if socket_errors else 0,
        seconds=seconds,
        rps=requests / seconds if seconds > 0 else 0.0,
        p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
    )


def _wrk_argv(spec: LoadSpec, duration: float) -> list[str]:
    argv = ["wrk", "-t1", f"-c{spec.connections}", f"-d{max(1, round(duration))}s", "--latency",
            f"--timeout={max(1, math.ceil(spec.timeout))}s"]
    for name, value in spec.headers:
        argv += ["-H", f"{name}: {value}"]
    return [*argv, spec.url]


def _wrk(argv: list[str], limit: float) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LoadError("wrk did not finish in time") from exc
    if done.returncode != 0:
        raise LoadError(f"wrk failed with status {done.returncode}: {done.stderr.strip()[:200]}")
    return done.stdout


def _run_wrk(spec: LoadSpec, on_measure: Callable[[], None] | None) -> LoadResult:
    # wrk's -d is whole seconds: the warm-up is rounded, and skipped below half a second.
    if round(spec.warmup) >= 1:
        _wrk(_wrk_argv(spec, spec.warmup), spec.warmup + spec.timeout + 10)
    if on_measure:
        on_measure()
    return parse_wrk(_wrk(_wrk_argv(spec, spec.duration), spec.duration + spec.timeout + 10))


# --- built-in (parent side) --------------------------------------------------------------------------------

def _run_builtin(spec: LoadSpec, on_measure: Callable[[], None] | None) -> LoadResult:
    argv = [sys.executable, "-m", "veil.bench.loadgen", "--url", spec.url, "--duration", str(spec.duration),
            "--connections", str(spec.connections), "--warmup", str(spec.warmup),
            "--timeout", str(spec.timeout)]
    for name, value in spec.headers:
        argv += ["--header", f"{name}: {value}"]
    from veil.bench.servers import child_env  # the same import path as the parent

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=child_env(None), text=True)
    watchdog = threading.Timer(spec.warmup + spec.duration + spec.timeout + 30, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        result_line = ""
        for line in proc.stdout:
            if line.strip() == "measuring":
                if on_measure:
                    on_measure()
            elif line.startswith("{"):
                result_line = line
        err = proc.stderr.read()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    finally:
        watchdog.cancel()
    if proc.returncode != 0 or not result_line:
        raise LoadError(f"load generator failed with status {proc.returncode}: {err.strip()[-300:]}")
    return LoadResult(**orjson.loads(result_line))


# --- built-in (child side) ----------------------------------------------------------------------------

async def drive(spec: LoadSpec) -> LoadResult:
    """Run the closed loop in this process: `spec.connections` workers on one keep-alive pool."""
    import aiohttp

    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + spec.warmup, start + spec.warmup + spec.duration
    latencies: list[float] = []
    counts = {"non_2xx": 0, "errors": 0}

    async def announce() -> None:
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        print("measuring", flush=True)

    connector = aiohttp.TCPConnector(limit=spec.connections, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=dict(spec.headers),
                                     auto_decompress=False) as session:

        async def worker() -> None:
            while (t0 := loop.time()) < stop_at:
                p0 = time.perf_counter()
                try:
                    async with session.get(spec.url) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    if t0 >= measure_from:
                        counts["errors"] += 1
                    continue
                if t0 >= measure_from:
                    latencies.append((time.perf_counter() - p0) * 1e3)
                    if not 200 <= status < 400:
                        counts["non_2xx"] += 1

        announcer = asyncio.create_task(announce())
        await asyncio.gather(*(worker() for _ in range(spec.connections)))
        await announcer
    seconds = max(loop.time() - measure_from, 1e-9)
    latencies.sort()
    return LoadResult(
        tool="builtin", requests=len(latencies), non_2xx=counts["non_2xx"], errors=counts["errors"],
        seconds=seconds, rps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
    )


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError("a header is NAME: VALUE")
    return name.strip(), value.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m veil.bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--header", type=_header, action="append", default=[])
    args = parser.parse_args(argv)
    spec = LoadSpec(args.url, args.duration, args.connections, tuple(args.header), args.warmup, args.timeout)
    check_loopback(spec.url)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        result = asyncio.run(drive(spec))
    else:
        result = uvloop.run(drive(spec))
    sys.stdout.write(orjson.dumps(result.to_dict()).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
