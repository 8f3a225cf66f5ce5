"""Soak veil on loopback: a steady request rate for a bounded time and count (not a test).

    .venv/bin/python scripts/soak.py [--minutes 3] [--rate 200] [--max-requests N] [--keep]

Starts the demo upstream and veil (the e2e harness, tests/e2e/conftest.py) on 127.0.0.1, seeds
consent for 200 customers (every other one) through the admin API, then sends a fixed mix at a steady rate: profiles
with consent (redacted), profiles for the warehouse (contract), lists (filtered per item), aggregate
sizes (suppressed), advertising admitted by a TCF string, and blocks (no consent, GPC opt-out, no
route). In flight requests are bounded; a scheduler that falls behind counts `late` rather than
bursting. Reports throughput, latency percentiles, outcomes per kind, veil's RSS (VmRSS) and open
file descriptors at start, after warm-up and at the end, and verifies the decision log after a
graceful stop: the chain verifies and every response's Veil-Decision-Id is in it exactly once.
Exit status 1 when veil answered any 5xx, a request failed, an outcome was not the expected one,
RSS grew by more than --max-rss-growth-mib after warm-up, or the log does not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import KEYS, Veil, start_upstream, start_veil, stop  # noqa: E402

from veil.audit import verify  # noqa: E402
from veil.config import load_config  # noqa: E402

SUBJECTS = 400  # c-000000 .. c-000399; the even ones consent to personalization (notice 3)
# A real TC string (shared/reference/tcf golden corpus) granting TCF purposes 1-11 and vendor 755.
TC_GRANTS = ("CQa7ZkAQa7ZkAEsACBFRCFFoAP_gAELAACiQIrwFwAFAANAAqABwAEAANAAdABFACZAFAAUQAtgBfADCAIMARwAygB4gJ0A"
             "XmAxkCFwENAIrghpAWAAUAA0ACoAHAAQAA0AB0AEUAJkAUABRAC2AF8AMIAgwBHADKAHiAnQBeYDGQIXAQ0AA.cYAAADgAAAA")


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: how often, what to send, what veil must answer."""

    name: str
    weight: int
    caller: str
    purpose: str
    status: int
    decision: str


MIX = (
    Kind("profile", 30, "storefront", "personalize.recommendations", 200, "redact"),
    Kind("shipping", 15, "warehouse", "orders.fulfillment", 200, "redact"),
    Kind("list", 15, "storefront", "personalize.recommendations", 200, "filter"),
    Kind("sizes", 5, "analytics", "analytics.segments", 200, "redact"),
    Kind("ads_tcf", 10, "ad_partner", "advertising.targeted", 200, "redact"),
    Kind("no_consent", 15, "storefront", "personalize.recommendations", 403, "block"),
    Kind("gpc", 5, "ad_partner", "advertising.targeted", 403, "block"),
    Kind("no_route", 5, "storefront", "personalize.recommendations", 403, "block"),
)


def request_for(kind: Kind, rng: random.Random) -> tuple[str, dict[str, str]]:
    headers = {"Veil-Key": KEYS[kind.caller], "Veil-Purpose": kind.purpose}
    if kind.name in ("profile", "shipping"):
        path = f"/customers/c-{rng.randrange(0, SUBJECTS, 2):06d}"
    elif kind.name == "list":  # each page holds consented and other customers: filtered per item
        path = f"/customers?limit=20&offset={rng.randrange(0, SUBJECTS - 20, 20)}"
    elif kind.name == "sizes":
        path = "/segments/sizes"
    elif kind.name == "ads_tcf":
        path = f"/customers/c-{rng.randrange(1000):06d}"
        headers["Cookie"] = f"euconsent-v2={TC_GRANTS}"
    elif kind.name == "no_consent":
        path = f"/customers/c-{rng.randrange(1, SUBJECTS, 2):06d}"
    elif kind.name == "gpc":
        path = f"/customers/c-{rng.randrange(1000):06d}"
        headers.update({"Sec-GPC": "1", "Cookie": f"euconsent-v2={TC_GRANTS}"})
    else:
        path = f"/orders/{rng.randrange(1000)}"
    return path, headers


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@dataclass
class SoakResult:
    sent: int = 0
    seconds: float = 0.0
    late: int = 0  # requests the scheduler started more than 100 ms after their slot
    outcomes: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # (kind, status, decision)
    unexpected: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # transport errors by exception type
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    decision_ids: list[str] = field(default_factory=list)
    rss_kib: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the run, VmRSS)
    fds: list[tuple[float, int]] = field(default_factory=list)
    warmup: float = 0.0
    cpu_seconds: float = 0.0  # veil's CPU time during the load

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status, _), n in self.outcomes.items() if status >= 500)

    @property
    def rss_after_warmup(self) -> int:
        return next((kib for t, kib in self.rss_kib if t >= self.warmup), self.rss_kib[-1][1])

    @property
    def rss_growth_mib(self) -> float:
        return (self.rss_kib[-1][1] - self.rss_after_warmup) / 1024

    def render(self) -> str:
        all_ms = sorted(x for xs in self.latency_ms.values() for x in xs)
        lines = [
            f"requests {self.sent} in {self.seconds:.1f}s = {self.sent / max(self.seconds, 1e-9):.1f}/s "
            f"(late {self.late}); veil CPU {100 * self.cpu_seconds / max(self.seconds, 1e-9):.0f}% of one core "
            f"({1000 * self.cpu_seconds / max(self.sent, 1):.2f} ms/request)",
            f"veil 5xx {self.server_errors}; transport errors {sum(self.errors.values())}"
            + (f" {dict(self.errors)}" if self.errors else ""),
            f"latency ms all: p50 {_pct(all_ms, 50):.1f} p95 {_pct(all_ms, 95):.1f} p99 {_pct(all_ms, 99):.1f} "
            f"max {all_ms[-1] if all_ms else 0:.1f}",
        ]
        for kind in MIX:
            ms = sorted(self.latency_ms.get(kind.name, []))
            got = {f"{s} {d}": n for (k, s, d), n in sorted(self.outcomes.items()) if k == kind.name}
            lines.append(f"  {kind.name:<11} n={len(ms):<6} p50 {_pct(ms, 50):6.1f} p99 {_pct(ms, 99):6.1f}  {got}")
        if self.unexpected:
            lines.append(f"UNEXPECTED outcomes: {dict(self.unexpected)}")
        first, warm, last = self.rss_kib[0][1], self.rss_after_warmup, self.rss_kib[-1][1]
        lines.append(f"veil RSS: start {first / 1024:.1f} MiB, after warm-up ({self.warmup:.0f}s) "
                     f"{warm / 1024:.1f} MiB, end {last / 1024:.1f} MiB (growth after warm-up "
                     f"{self.rss_growth_mib:+.1f} MiB); peak {max(k for _, k in self.rss_kib) / 1024:.1f} MiB")
        lines.append(f"veil open fds: start {self.fds[0][1]}, peak {max(n for _, n in self.fds)}, "
                     f"end (idle) {self.fds[-1][1]}")
        return "\n".join(lines)


def _pct(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))]


def seed_consent(v: Veil) -> None:
    for i in range(0, SUBJECTS, 2):
        v.consent(f"c-{i:06d}", "personalization", notice_version=3)


async def run_load(url: str, pid: int, *, rate: float, seconds: float, max_requests: int,
                   warmup: float = 5.0, max_in_flight: int = 256, seed: int = 1, settle: float = 2.0
                   ) -> SoakResult:
    """Send the MIX at `rate` requests/s for `seconds` (at most `max_requests`) to the proxy at `url`."""
    rng = random.Random(seed)
    kinds = [k for k in MIX for _ in range(k.weight)]
    res = SoakResult(warmup=min(warmup, seconds / 3))
    total = min(max_requests, int(rate * seconds))
    slots = asyncio.Semaphore(max_in_flight)
    t0 = time.monotonic()

    def sample() -> None:
        t = time.monotonic() - t0
        res.rss_kib.append((t, rss_kib(pid)))
        res.fds.append((t, open_fds(pid)))

    async def one(session: aiohttp.ClientSession, kind: Kind, path: str, headers: dict[str, str]) -> None:
        start = time.perf_counter()
        try:
            async with session.get(url + path, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                decision = resp.headers.get("Veil-Decision", "-")
                did = resp.headers.get("Veil-Decision-Id")
                key = (kind.name, resp.status, decision)
        except (aiohttp.ClientError, TimeoutError) as exc:
            res.errors[type(exc).__name__] += 1
            return
        finally:
            slots.release()
        res.latency_ms[kind.name].append((time.perf_counter() - start) * 1000)
        res.outcomes[key] += 1
        if (resp.status, decision) != (kind.status, kind.decision):
            res.unexpected[key] += 1
        if did:
            res.decision_ids.append(did)

    async def sampler() -> None:
        while True:
            await asyncio.sleep(1.0)
            sample()

    sample()
    cpu0 = cpu_seconds(pid)
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=max_in_flight, force_close=False)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        watcher = asyncio.create_task(sampler())
        try:
            for i in range(total):
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.1:
                    res.late += 1
                await slots.acquire()
                kind = rng.choice(kinds)
                path, headers = request_for(kind, rng)
                task = asyncio.create_task(one(session, kind, path, headers))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                res.sent += 1
            await asyncio.gather(*tasks)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    res.seconds = time.monotonic() - t0
    res.cpu_seconds = cpu_seconds(pid) - cpu0
    await asyncio.sleep(settle)  # let the server close the client's connections before the last sample
    sample()
    return res


@dataclass
class LogCheck:
    ok: bool
    message: str
    records: int
    missing: int
    repeated: int


def check_log(v: Veil, decision_ids: list[str]) -> LogCheck:
    """Verify the (closed) decision log and find every decision id in it exactly once."""
    import orjson

    audit = v.dir / "audit"
    result = verify([audit], load_config(v.config_path).keyring("audit"))
    seen: Counter[str] = Counter()
    # every chain's active file and its rotated segments (decisions.log.1, ...), not the head files
    for path in sorted(p for p in audit.glob("decisions*.log*") if p.suffix not in (".head", ".tmp")):
        for line in path.read_bytes().splitlines():
            rec = orjson.loads(line)
            if "decision" in rec:
                seen[str(rec["id"])] += 1
    missing = sum(1 for d in decision_ids if seen[d] == 0)
    repeated = sum(1 for d in decision_ids if seen[d] > 1)
    return LogCheck(result.ok and not missing and not repeated, result.render(), result.records, missing, repeated)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    ap.add_argument("--max-rss-growth-mib", type=float, default=64.0)
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args(argv)
    if not 0 < args.minutes <= 60 or not 0 < args.rate <= 5000:
        ap.error("--minutes must be in (0, 60] and --rate in (0, 5000]")
    work = Path(tempfile.mkdtemp(prefix="veil-soak-"))
    up = start_upstream(log_dir=work)
    v = start_veil(work / "veil", up.url, overrides={"consent": {"cache_ttl": 2.0}})
    try:
        seed_consent(v)
        print(f"soak: {args.rate:.0f} req/s for {args.minutes:g} min against veil pid {v.proc.pid} ({work})",
              flush=True)
        res = asyncio.run(run_load(v.url, v.proc.pid, rate=args.rate, seconds=args.minutes * 60,
                                   max_requests=args.max_requests, warmup=min(30.0, args.minutes * 20)))
    finally:
        v.stop()
        stop(up.proc)
    log = check_log(v, res.decision_ids)
    print(res.render())
    print(f"decision log: {log.message}; decision ids missing {log.missing}, repeated {log.repeated}")
    failures = []
    if res.server_errors or res.errors or res.unexpected:
        failures.append("errors or unexpected outcomes")
    if res.rss_growth_mib > args.max_rss_growth_mib:
        failures.append(f"RSS grew by {res.rss_growth_mib:.1f} MiB")
    if not log.ok:
        failures.append("decision log")
    print("soak: " + ("FAILED: " + "; ".join(failures) if failures else "ok"))
    if not args.keep and not failures:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
