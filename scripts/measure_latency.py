"""Measure the latency distributions behind veil's histogram buckets (veil.metrics), on loopback.

Starts the demo upstream and a veil whose histograms have fine buckets (factor 1.2, 10 µs to 30 s;
set by a launcher, the shipped buckets are untouched), seeds consent for 199 customers, runs wrk
against a profile (1 and 16 connections) and a 1,000-item list (1 and 4 connections), and prints the
p50/p90/p99 (ms, upper bucket bound) of veil's overhead, the upstream call and the consent lookup.

    python scripts/measure_latency.py [--cache-ttl 2.0] [--seconds 6]

Needs wrk on PATH. The figures quoted in docs/metrics.md came from this script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.e2e.conftest import KEYS, start_upstream, start_veil, stop  # noqa: E402

LAUNCHER = """
import sys, prometheus_client
FINE = tuple(round(0.00001 * 1.2 ** k, 8) for k in range(82))
class Fine(prometheus_client.Histogram):
    def __init__(self, *a, **k):
        k["buckets"] = FINE
        super().__init__(*a, **k)
prometheus_client.Histogram = Fine
from veil.cli import main
sys.exit(main(sys.argv[1:]))
"""


def buckets(text: str, name: str, labels: dict[str, str]) -> dict[float, float]:
    out: dict[float, float] = {}
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == name + "_bucket" and all(s.labels.get(k) == v for k, v in labels.items()):
                out[float(s.labels["le"])] = s.value
    return out


def quantiles(before: dict[float, float], after: dict[float, float]) -> str:
    d = sorted((le, after[le] - before.get(le, 0)) for le in after)
    total = d[-1][1] if d else 0
    if not total:
        return "n=0"
    qs = [next(round(le * 1000, 2) for le, c in d if c >= q * total) for q in (0.5, 0.9, 0.99)]
    return f"n={int(total)} p50 {qs[0]} p90 {qs[1]} p99 {qs[2]} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-ttl", type=float, default=2.0)
    ap.add_argument("--seconds", type=int, default=6)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="veil-latency-"))
    launcher = tmp / "launch.py"
    launcher.write_text(LAUNCHER)
    up = start_upstream(log_dir=tmp)
    # start_veil runs `python -m veil`; the launcher runs the same CLI with fine buckets
    import tests.e2e.conftest as harness

    spawn = harness.spawn
    harness.spawn = lambda argv, log, env=None: spawn([argv[0], str(launcher), *argv[3:]], log, env)
    v = start_veil(tmp / "veil", up.url, overrides={
        "consent": {"cache_ttl": args.cache_ttl},
        "audit": {"flush_ms": 0, "path": str(tmp / "veil" / "audit" / "decisions.log")},
    })
    try:
        for i in range(1, 200):
            v.consent(f"c-{i:06d}", "personalization", notice_version=3)
        script = tmp / "ids.lua"
        script.write_text('n = 0\nrequest = function()\n n = n + 1\n'
                          ' return wrk.format("GET", string.format("/customers/c-%06d", 1 + n % 199))\nend\n')
        runs = [("profile", "/customers/c-000001", "/customers/{id}", c, script) for c in (1, 16)]
        runs += [("list 1000", "/customers?limit=1000", "/customers", c, None) for c in (1, 4)]
        for label, path, route, conns, lua in runs:
            hists = {"overhead": ("veil_overhead_duration_seconds", {"route": route}),
                     "upstream": ("veil_upstream_request_duration_seconds", {"upstream": "demo"}),
                     "consent": ("veil_consent_store_lookup_duration_seconds", {})}
            t0 = v.metrics()
            cmd = ["wrk", f"-t{min(conns, 2)}", f"-c{conns}", f"-d{args.seconds}s",
                   "-H", f"Veil-Key: {KEYS['storefront']}", "-H", "Veil-Purpose: personalize.recommendations"]
            subprocess.run([*cmd, *(["-s", str(lua)] if lua else []), v.url + path], check=True, capture_output=True)
            t1 = v.metrics()
            print(f"{label} c={conns}: " + "; ".join(
                f"{n} {quantiles(buckets(t0, *h), buckets(t1, *h))}" for n, h in hists.items()), flush=True)
    finally:
        v.stop()
        stop(up.proc)


if __name__ == "__main__":
    main()
