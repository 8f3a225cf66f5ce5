"""Which plain Python proxy is the fairest reference for `veil bench`: the set-ups of veil.bench.plain
(aiohttp's low-level server or `web.Application`; uvloop or asyncio) and the Starlette pass-through,
side by side on the bench's fast upstream, interleaved rounds, CPU per request of the proxy process.

    python scripts/bench_plain.py [--rounds 3] [--duration 3] [--list]

`--list` adds the parse-only variants on the demo's ~1 MB list. The reference the bench uses
(`veil.bench.plain` defaults) is the one with the least CPU per request here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from veil.bench import BenchContext, Scenario, Target, run_bench, servers
from veil.bench.report import render_table


def _plain(server: str, loop: str, parse: bool = False) -> Callable[[BenchContext], Target]:
    def setup(ctx: BenchContext) -> Target:
        proxy = ctx.keep(servers.start_plain(ctx.upstream.url, parse=parse, server=server, loop=loop))
        path = "/customers" if parse else f"/customers/{ctx.profile_id}"
        return Target(proxy.url + path, (), (proxy,))

    return setup


def _starlette(ctx: BenchContext) -> Target:
    proxy = ctx.keep(servers.start_proxy(ctx.upstream.url))
    return Target(f"{proxy.url}/customers/{ctx.profile_id}", (), (proxy,))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--list", action="store_true", help="also the parse-only variants on the 1 MB list")
    args = ap.parse_args()
    variants = [("raw", "uvloop"), *((s, lp) for s in ("lowlevel", "web") for lp in ("uvloop", "asyncio")),
                ("asgi", "uvloop")]
    rows = [Scenario(f"{s}_{lp}", f"{s[0]}{lp[0]}", f"plain {s}, {lp}", "1 KB", _plain(s, lp)) for s, lp in variants]
    rows.append(Scenario("starlette", "st", "Starlette on uvicorn, aiohttp client", "1 KB", _starlette))
    if args.list:
        rows += [Scenario(f"list_{s}_{lp}", f"L{s[0]}{lp[0]}", f"parse-only {s}, {lp}", "1 MB", _plain(s, lp, True))
                 for s, lp in variants]
    print(render_table(run_bench(rows, rounds=args.rounds, duration=args.duration, connections=16)))


if __name__ == "__main__":
    main()
