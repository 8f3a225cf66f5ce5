"""CPU per kept, dropped and transformed field of a shape, measured in-process on the real flow.

The shape's request runs through `veil.policy.flow.decide` (veil.bench.inproc: the proxy's flow, the
upstream answer and consent in memory) with three plans for its route, compiled by the real compiler
from the shape's policy and then cut down:

    plan      the policy as written                       keeps K leaves, drops D, transforms T
    no_keep   its keep statements removed                 keeps 0, transforms T, drops K + D
    none      its keep and transform statements removed   drops every leaf, L = K + D + T

Both cut-down plans keep one statement naming a key no item has (`items[*].<absent>`), so the plan
walks the same containers the real one does (the list, its items as filtered objects) and the body
is read the same way (lazily when the real plan is); only what the plan does with the fields differs.
CPU time is `time.process_time` of one request, the least of interleaved repeats (the run least
disturbed by the rest of a shared machine: the work itself is deterministic; medians left the
differences below in the noise). Then

    per_dropped     = t_none / L                          (every leaf dropped: the read, the per-item
                                                           consent filter and the walk, spread over L)
    per_kept        = per_dropped + (t_plan - t_no_keep) / K
    per_transformed = per_dropped + (t_no_keep - t_none) / T

so a regression in keeping, dropping or transforming shows in its own figure.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, replace
from typing import Any

from veil.bench.inproc import Shape, ShapeRun, load_shape_policy
from veil.errors import VeilError
from veil.policy.compile import CompiledPolicy
from veil.redact.engine import Action, FieldRule, compile_plan
from veil.redact.paths import Each, Key

ABSENT = "veil_bench_absent"  # never a generated field name (those are consonant-vowel syllables)


@dataclass(frozen=True)
class FieldCost:
    kept: int
    dropped: int
    transformed: int
    us_per_request: float  # the real plan, one whole request through the flow (the least of the repeats)
    us_per_kept: float | None
    us_per_dropped: float | None
    us_per_transformed: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _variant(shape: Shape, keep_transforms: bool) -> CompiledPolicy:
    """The shape's policy with its list route's keeps (and transforms unless `keep_transforms`) removed,
    and one keep of a key no item has."""
    policy = load_shape_policy(shape)
    purpose = dict(shape.headers)["Veil-Purpose"]
    path = shape.path.partition("?")[0]
    found = policy.match("GET", path)
    route = found[0] if found is not None else None
    if route is None or purpose not in route.rules or route.each is None:
        raise VeilError(f"shape {shape.name}: no list rule for {purpose} on {path}", code="bench_shape_invalid")
    rule = route.rules[purpose]
    list_path = route.each[0]
    rules = [r for r in rule.plan.rules
             if r.action is Action.DROP or (keep_transforms and r.action is Action.TRANSFORM)]
    absent = (*list_path, Key(ABSENT)) if isinstance(list_path[-1], Each) else (*list_path, Each(), Key(ABSENT))
    rules.append(FieldRule(absent, Action.KEEP, None, len(rule.locations)))
    plan = compile_plan(rules, rule.plan.guards, name=f"{rule.plan.name}-{'no-keep' if keep_transforms else 'none'}")
    if not isinstance(route.rules, dict):
        raise VeilError("compiled routes hold their rules in a dict", code="bench_shape_invalid")
    route.rules[purpose] = replace(rule, plan=plan)
    return policy


def _cpu(run: ShapeRun) -> float:
    t = time.process_time()
    run.once()
    return time.process_time() - t


def measure(shape: Shape, repeats: int = 7) -> FieldCost:
    """The shape's field costs (µs of CPU), from the least of `repeats` interleaved runs of each plan."""
    from veil.bench.inproc import leaf_counts

    real = ShapeRun(shape)
    kept, dropped, transformed = leaf_counts(shape, real.policy)
    runs = {"plan": real, "no_keep": ShapeRun(shape, _variant(shape, True)),
            "none": ShapeRun(shape, _variant(shape, False))}
    for run in runs.values():  # warm: generated code, caches of the plan's own
        run.once()
    times: dict[str, list[float]] = {k: [] for k in runs}
    enabled = gc.isenabled()
    try:
        for _ in range(repeats):
            for k, run in runs.items():
                gc.collect()
                gc.disable()
                times[k].append(_cpu(run))
                gc.enable()
    finally:
        if enabled:
            gc.enable()
        else:
            gc.disable()
    t = {k: min(v) * 1e6 for k, v in times.items()}
    leaves = kept + dropped + transformed
    per_dropped = t["none"] / leaves if leaves else None
    per_kept = per_dropped + (t["plan"] - t["no_keep"]) / kept if kept and per_dropped is not None else None
    per_tr = (per_dropped + (t["no_keep"] - t["none"]) / transformed
              if transformed and per_dropped is not None else None)
    return FieldCost(kept, dropped, transformed, t["plan"], per_kept, per_dropped, per_tr)
