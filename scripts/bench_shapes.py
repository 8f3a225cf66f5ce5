"""CPU per response of veil enforcing list shapes, against an orjson round trip of the same body.

In-process and whole: the real ProxyApp and Runtime (the shape's policy files loaded as `veil serve`
loads them, the real SQLite consent store seeded with each item's consent, the real decision log with
the default durability), with only the upstream replaced by a MemoryTransport that answers with the
shape's body. For each shape, rounds of `--batch` requests through veil and `--batch` round trips
`orjson.dumps(orjson.loads(body))` are interleaved; the CPU of each (time.process_time: every thread of
this process, so the decision log's writer counts) is divided by the batch, and the medians compared.

    python scripts/bench_shapes.py [--items 1000] [--seed 1] [--rounds 7] [--batch 10] [--shape NAME]
    python scripts/bench_shapes.py --profile [--shape NAME]   # cProfile of veil's requests, top list
    python scripts/bench_shapes.py --small                    # the 1 KB profile path (flow + app)

Shapes come from veil.bench.shapes (the bench's seeded corpus) when it exists, else from the one shape
issue 16 describes (built here): 1,000 items of about 1 KB, a dozen fields each, most dropped, a nested
array kept in part (`items[*].history[*].track`), one hashed field per item, one subject in ten withdrawn.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import io
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conformance import asgi_call  # noqa: E402  (the suite's one ASGI call)

from veil.config import Config, KeySpec, Upstream  # noqa: E402
from veil.consent.store import Action, ConsentEvent  # noqa: E402
from veil.proxy.app import ProxyApp  # noqa: E402
from veil.proxy.runtime import Runtime  # noqa: E402
from veil.proxy.server import tune_gc  # noqa: E402
from veil.proxy.upstream import MemoryTransport, UpstreamRequest, UpstreamResponse  # noqa: E402
from veil.redact.reading import ReadChoice  # noqa: E402

KEY = "bench-shapes-key"
KEY_HASH = hashlib.sha256(KEY.encode()).hexdigest()


@dataclass
class LocalShape:
    """What the harness needs of a shape (veil.bench.shapes.Shape has these too)."""

    name: str
    body: bytes
    policy_files: dict[str, str]
    path: str
    headers: list[tuple[str, str]]
    given: list[str]  # subjects with consent given
    withdrawn: list[str] = field(default_factory=list)
    consent_key: str = "listing"


_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
          "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")


def _issue_item(rng: random.Random, i: int) -> dict[str, Any]:
    w = rng.choice
    return {
        "id": f"usr_{i:07d}",
        "email": f"{w(_WORDS)}.{w(_WORDS)}{rng.randrange(1000)}@example.org",
        "name": f"{w(_WORDS).title()} {w(_WORDS).title()}",
        "phone": f"+49 30 {rng.randrange(10**7):07d}",
        "status": w(("active", "paused", "closed")),
        "created_at": (datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**8))).isoformat(),
        "score": round(rng.random() * 100, 3),
        "address": {"street": f"{rng.randrange(1, 200)} {w(_WORDS).title()}str.", "city": w(_WORDS).title(),
                    "zip": f"{rng.randrange(10**5):05d}", "country": w(("DE", "FR", "NL", "IT"))},
        "tags": [w(_WORDS) for _ in range(rng.randrange(1, 5))],
        "history": [{"track": f"trk_{rng.randrange(10**6):06d}", "played_at": f"2026-0{rng.randrange(1, 10)}-1"
                     f"{rng.randrange(10)}T1{rng.randrange(10)}:00:00Z", "ms": rng.randrange(10**6),
                     "device": w(("ios", "android", "web"))} for _ in range(rng.randrange(2, 6))],
        "settings": {"lang": w(("de", "en", "fr")), "theme": w(("dark", "light")), "notify": rng.random() < .5},
        "bio": " ".join(w(_WORDS) for _ in range(rng.randrange(30, 60))),
    }


ISSUE_POLICY = f"""policy "bench-shapes" version "1"

purpose listing.read {{
  description "Reading the listing"
  basis consent
  consent "listing"
  retention 1 months
}}

category identity = id, name
category contact = email, phone
category contact.address = address
category behaviour = history, tags, settings

caller bench {{
  description "The benchmark"
  key sha256:{KEY_HASH}
  may listing.read
}}

route GET /items {{
  each items[*] subject id
  for listing.read {{
    keep total, next
    keep items[*].id, items[*].status, items[*].history[*].track
    hash items[*].email
  }}
}}
"""


def issue_shape(seed: int, items: int) -> LocalShape:
    rng = random.Random(seed)
    docs = [_issue_item(rng, i) for i in range(items)]
    body = orjson.dumps({"total": items, "next": None, "items": docs})
    ids = [d["id"] for d in docs]
    withdrawn = ids[::10]
    given = [s for s in ids if s not in set(withdrawn)]
    return LocalShape("issue16", body, {"bench.veil": ISSUE_POLICY}, "/items",
                      [("Veil-Key", KEY), ("Veil-Purpose", "listing.read")], given, withdrawn)


def profile_shape() -> LocalShape:
    """The 1 KB profile of `veil bench` (row 3): the demo policies, the fast upstream's profile."""
    from veil.bench.servers import fast_profile
    from veil.demo import policies_dir

    files = {p.name: p.read_text() for p in sorted(policies_dir().glob("*.veil"))}
    prof = fast_profile()
    return LocalShape("profile_1kb", orjson.dumps(prof), files, f"/customers/{prof['id']}",
                      [("Veil-Key", "demo-storefront-key"), ("Veil-Purpose", "personalize.recommendations")],
                      [prof["id"]], consent_key="personalization")


def load_shapes(seed: int, items: int) -> list[Any]:
    try:
        from veil.bench.shapes import corpus
    except ImportError:
        return [issue_shape(seed, items)]
    return list(corpus(seed, items, count=False))


# ---------------------------------------------------------------- the in-process proxy
class Harness:
    """A Runtime and ProxyApp for one shape, answering with its body."""

    def __init__(self, shape: Any, directory: Path, cache_ttl: float, lazy_min: int | None = 16 * 1024) -> None:
        self.shape = shape
        (directory / "policy").mkdir(parents=True, exist_ok=True)
        for name, text in shape.policy_files.items():
            (directory / "policy" / name).write_text(text)
        keys = {}
        for name in ("store", "audit", "pseudonym", "hash"):
            p = directory / f"{name}.key"
            p.write_text(hashlib.sha256(name.encode()).hexdigest())
            p.chmod(0o600)
            keys[name] = KeySpec(((name, f"file:{p}"),))
        self.config = Config(
            upstreams=(Upstream("bench", "http://upstream.invalid"),),
            policy_paths=(str(directory / "policy"),), policy_watch=False,
            consent_url=f"sqlite:///{directory / 'consent.db'}", consent_cache_ttl=cache_ttl,
            audit_path=str(directory / "audit" / "decisions.log"), keys=keys, lazy_json_min_bytes=lazy_min,
        )
        body = shape.body
        self.transport = MemoryTransport(self._answer(body))
        self.rt = Runtime(self.config, transports={"bench": self.transport})
        self.app: ProxyApp | None = None
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in shape.headers]

    @staticmethod
    def _answer(body: bytes) -> Callable[[UpstreamRequest], UpstreamResponse]:
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]

        def answer(req: UpstreamRequest) -> UpstreamResponse:
            return UpstreamResponse(200, headers, body)

        return answer

    async def start(self) -> None:
        await self.rt.start()
        now = datetime.now(UTC)
        key = getattr(self.shape, "consent_key", "listing")
        if hasattr(self.shape, "consented"):  # veil.bench.shapes.Shape
            given = [s for s in self.shape.subjects if s in self.shape.consented]
            withdrawn = [s for s in self.shape.subjects if s not in self.shape.consented]
        else:
            given, withdrawn = self.shape.given, self.shape.withdrawn
        events = [ConsentEvent(s, key, Action.GIVEN, now - timedelta(days=1), notice_version=3) for s in given]
        events += [ConsentEvent(s, key, Action.WITHDRAWN, now - timedelta(hours=1)) for s in withdrawn]
        await self.rt.store.record(events)
        self.app = ProxyApp(self.rt)

    async def close(self) -> None:
        await self.rt.close()

    async def request(self) -> tuple[int, dict[str, str], bytes]:
        assert self.app is not None
        answer = await asgi_call(self.app, "GET", self.shape.path, self.headers, b"")
        self.transport.requests.clear()
        return answer


def ref_round_trip(body: bytes) -> bytes:
    return orjson.dumps(orjson.loads(body))


async def measure(h: Harness, rounds: int, batch: int) -> tuple[float, float, float, float]:
    """(median µs of CPU per veil response, median µs of CPU per orjson round trip, and the least of
    each: on a shared machine the least is the steadier estimate of the work itself), interleaved."""
    body = h.shape.body
    status, _, out = await h.request()
    if status != 200:
        raise SystemExit(f"{h.shape.name}: veil answered {status}: {out[:300]!r}")
    for _ in range(2 + 2 * ReadChoice.PROBES):  # warm up: plans built, consent cached, reading chosen
        await h.request()
    veil, ref = [], []
    for _ in range(rounds):
        gc.collect()
        t0 = time.process_time()
        for _ in range(batch):
            await h.request()
        t1 = time.process_time()
        for _ in range(batch):
            ref_round_trip(body)
        t2 = time.process_time()
        veil.append((t1 - t0) / batch * 1e6)
        ref.append((t2 - t1) / batch * 1e6)
        await asyncio.sleep(0)  # let the decision log's writer run between rounds, as between requests
    return statistics.median(veil), statistics.median(ref), min(veil), min(ref)


async def profile(h: Harness, n: int, top: int) -> None:
    status, _, out = await h.request()
    if status != 200:
        raise SystemExit(f"{h.shape.name}: veil answered {status}: {out[:300]!r}")
    for _ in range(2):
        await h.request()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        await h.request()
    prof.disable()
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
    st.sort_stats("tottime").print_stats(top)
    print(s.getvalue())
    print(f"total tottime {total / n * 1e3:.2f} ms per response over {n} responses")
    # by file (own time): where the time goes, module by module
    by_file: dict[str, float] = {}
    for (file, _, _), v in st.stats.items():  # type: ignore[attr-defined]
        by_file[file] = by_file.get(file, 0.0) + v[2]
    print(f"{'own time by file':<80} {'%':>6}")
    for file, t in sorted(by_file.items(), key=lambda x: -x[1])[:top]:
        print(f"{file[-80:]:<80} {t / total * 100:6.1f}")


async def main_async(args: argparse.Namespace) -> None:
    shapes = [profile_shape()] if args.small else load_shapes(args.seed, args.items)
    if args.shape:
        shapes = [s for s in shapes if s.name in args.shape]
    tune_gc()  # the collector set up as `veil serve` sets it up
    with tempfile.TemporaryDirectory(prefix="h16b-shapes-") as tmp:
        rows = []
        for n, shape in enumerate(shapes):
            h = Harness(shape, Path(tmp) / f"s{n}", args.cache_ttl, args.lazy_min or None)
            await h.start()
            try:
                if args.profile:
                    print(f"==== {shape.name}: {len(shape.body) / 1024:.0f} KiB")
                    await profile(h, args.profile_n, args.top)
                    continue
                veil, ref, veil_min, ref_min = await measure(h, args.rounds, args.batch)
                rows.append((shape.name, len(shape.body), veil, ref))
                ways = [r.plan.reading.state() for route in h.rt.policy.current.routes for r in route.rules.values()
                        if any(r.plan.reading.state()["cpu_s_per_mib"].values())]
                print(f"{shape.name:<14} {len(shape.body) / 1024:6.0f} KiB  veil {veil:7.0f} µs  "
                      f"orjson loads+dumps {ref:7.0f} µs  CPU ratio {veil / ref:5.2f}  "
                      f"(least: {veil_min:7.0f} / {ref_min:6.0f} = {veil_min / ref_min:5.2f})"
                      + "".join(f"  read {'lazily' if w['lazy'] else 'whole'} {w['cpu_s_per_mib']}" for w in ways),
                      flush=True)
            finally:
                await h.close()
        if len(rows) > 1:
            worst = max(rows, key=lambda r: r[2] / r[3])
            print(f"worst: {worst[0]} CPU ratio {worst[2] / worst[3]:.2f} (throughput {worst[3] / worst[2]:.2f})")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--shape", action="append", help="only these shapes (by name)")
    ap.add_argument("--cache-ttl", type=float, default=30.0, help="consent cache TTL (veil bench uses 30)")
    ap.add_argument("--lazy-min", type=int, default=16 * 1024,
                    help="limits.lazy_json_min_bytes (0: never read lazily); VEIL_NATIVE=0 turns the native loop off")
    ap.add_argument("--profile", action="store_true", help="cProfile veil's requests instead of timing")
    ap.add_argument("--small", action="store_true", help="the 1 KB profile path instead of the list shapes")
    ap.add_argument("--profile-n", type=int, default=30)
    ap.add_argument("--top", type=int, default=35)
    args = ap.parse_args(argv)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    main()
