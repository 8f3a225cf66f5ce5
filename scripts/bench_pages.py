"""Medians for the pages people read: rendering the privacy notice (html, both languages) and one
playground round (compile the edited policy text with veil's loader + decide the example), which is
what every keystroke in the playground costs after the 200 ms debounce.

    python scripts/bench_pages.py [--policy policies/] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from veil.notice import render_notice
from veil.playground.example import defaults, evaluate
from veil.playground.workspace import Workspace
from veil.policy import load_policy


def _median_ms(fn: Callable[[int], object], rounds: int) -> tuple[float, float, float]:
    times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--policy", default="policies")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    policy = load_policy([args.policy])
    ws = Workspace([args.policy])
    example = defaults(ws.compile({}).policy, datetime.now(UTC))
    routes = next(n for n in ws.names if Path(n).name == "routes.veil") if any(
        Path(n).name == "routes.veil" for n in ws.names) else ws.names[0]
    rows = {
        "notice html en": lambda i: render_notice(policy, "html", "en"),
        "notice html de": lambda i: render_notice(policy, "html", "de"),
        "load_policy (veil check)": lambda i: load_policy([args.policy]),
        # a new text every round: no compile cache hit, as when typing
        "playground round (edit)": lambda i: evaluate(ws.compile({routes: ws.disk[routes] + f"\n# {i}\n"}), example),
        "playground round (example only)": lambda i: evaluate(ws.compile({}), {**example, "status": 200}),
    }
    print(f"{'what':<34} {'median ms':>10} {'min':>8} {'max':>8}   ({args.rounds} rounds)")
    for name, fn in rows.items():
        med, lo, hi = _median_ms(fn, args.rounds)
        print(f"{name:<34} {med:>10.2f} {lo:>8.2f} {hi:>8.2f}")


if __name__ == "__main__":
    main()
