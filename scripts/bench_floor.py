"""The floor of a list response per bench shape: what any enforcing proxy must spend on it, against the
parse-only reference (an orjson round trip of the same body), in process.

    python scripts/bench_floor.py [--seed 1] [--items 1000] [--repeats 7] [--shape NAME ...]

Per shape, the least CPU of `--repeats` interleaved runs of each of:

    reference    orjson.loads + orjson.dumps of the body (what bench rows 6x do to it)
    parse        orjson.loads of the body
    pseudonyms   the keyed hash of each kept item's subject, which the decision record holds (as veil computes
                 them: in C where veil.redact._cplan is built and on, else keys.keyed_hashes)
    transforms   each transform the policy asks for, on each value it applies to (found by the plan's explain),
                 as veil computes them (veil.redact.native.fast where the module is built and on)
    write        orjson.dumps of the enforced document
    floor        parse + pseudonyms + transforms + write: no per-item consent, no filtering, no report
    veil         the whole request in process (veil.bench.inproc: the real flow, upstream and consent in memory)

`floor / reference` above 1.25 means a ratio of 0.8 to the reference cannot be reached by any
implementation that does this work with these primitives (orjson, hashlib's HMAC-SHA256, the
transforms), however its loop is written: what is left is the shape's own mandated work.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from veil.audit.report import pseudonym_list
from veil.bench.inproc import ShapeRun, load_shape_policy
from veil.bench.shapes import SHAPES, build
from veil.keys import KeyRing
from veil.redact import native
from veil.redact.reading import ReadChoice
from veil.redact.transforms import TransformTypeError


def least(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
        gc.enable()
    return best * 1e3


def value_at(doc: Any, path: Sequence[str | int]) -> Any:
    for seg in path:
        doc = doc[seg]
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--shape", action="append", help="only these shapes")
    args = ap.parse_args(argv)
    print(f"{'shape':<14} {'reference':>9} {'parse':>7} {'pseudo':>7} {'transf':>7} {'write':>7} {'floor':>7} "
          f"{'veil':>7}  floor/ref veil/ref  (ms of CPU, least of {args.repeats})")
    for name in args.shape or SHAPES:
        measure(name, args)


def measure(name: str, args: argparse.Namespace) -> None:
    shape = build(name, args.seed, args.items)
    policy = load_shape_policy(shape)
    purpose = dict(shape.headers)["Veil-Purpose"]
    found = policy.match("GET", shape.path.partition("?")[0])
    assert found is not None
    rule = found[0].rules[purpose]
    body = shape.body
    doc = orjson.loads(body)
    out = orjson.dumps(ShapeRun(shape).once().doc)
    kept = [s for s in shape.subjects if s in shape.consented]
    transforms = {r.rule_id: r.transform for r in rule.plan.rules if r.transform is not None}
    fast = {rid: native.fast(t) if native.ENABLED else t for rid, t in transforms.items()}
    pairs = [(fast[f.rule_id], value_at(doc, f.path)) for f in rule.plan.explain(doc)
             if f.fate == "transformed"]
    ring = KeyRing("k", {"k": b"k" * 32})
    run = ShapeRun(shape)
    for _ in range(2 + 2 * ReadChoice.PROBES):  # the plan has chosen how it reads (ReadChoice)
        run.once()

    def apply_transforms() -> None:
        for t, v in pairs:
            try:  # noqa: SIM105  (suppress() would add its own cost to the timing)
                t(v)
            except TransformTypeError:
                pass

    t = {
        "reference": least(lambda: orjson.dumps(orjson.loads(body)), args.repeats),
        "parse": least(lambda: orjson.loads(body), args.repeats),
        "pseudo": least(lambda: pseudonym_list(ring, kept), args.repeats),
        "transf": least(apply_transforms, args.repeats),
        "write": least(lambda: orjson.dumps(orjson.loads(out)), args.repeats)
        - least(lambda: orjson.loads(out), args.repeats),
        "veil": least(run.once, args.repeats),
    }
    t["floor"] = t["parse"] + t["pseudo"] + t["transf"] + max(t["write"], 0.0)
    ref = t["reference"]
    print(f"{name:<14} {ref:9.2f} {t['parse']:7.2f} {t['pseudo']:7.2f} {t['transf']:7.2f} {t['write']:7.2f} "
          f"{t['floor']:7.2f} {t['veil']:7.2f}  {t['floor'] / ref:9.2f} {t['veil'] / ref:8.2f}", flush=True)


if __name__ == "__main__":
    main()
