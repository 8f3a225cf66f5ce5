"""What discovery keeps: counts per route, purpose and field path. Never a value, never a subject.

    State.observation(route, purpose) → Shapes     (created within the caps)
    merge(states)                     → State      several replicas (or workers) into one
    State.to_json() / State.from_json(data)        the file each replica writes

Per (route, purpose): how many responses were examined, and per path template (array indices
folded to `[*]`, keys that look like data folded to `*`): in how many responses it appeared, the JSON
types of its values, how many values the detectors examined and each detector's hits. Memory is
bounded: at most `max_paths` paths per route and purpose, `max_rules` route-purpose pairs; what
does not fit is counted as overflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from veil.errors import VeilError

FORMAT = 1


class StateError(VeilError):
    code = "discovery_state_invalid"


@dataclass
class PathStats:
    seen: int = 0  # responses in which the path appeared
    types: dict[str, int] = field(default_factory=dict)  # JSON type → values
    checked: int = 0  # values the detectors examined
    hits: dict[str, int] = field(default_factory=dict)  # detector → values it matched
    last: int = field(default=0, compare=False, repr=False)  # the observer's response serial (not saved)

    def add(self, other: PathStats) -> None:
        self.seen += other.seen
        self.checked += other.checked
        for k, n in other.types.items():
            self.types[k] = self.types.get(k, 0) + n
        for k, n in other.hits.items():
            self.hits[k] = self.hits.get(k, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {"seen": self.seen, "types": self.types, "checked": self.checked, "hits": self.hits}

    @staticmethod
    def from_json(d: Any) -> PathStats:
        return PathStats(_int(d.get("seen")), _counts(d.get("types")), _int(d.get("checked")), _counts(d.get("hits")))


@dataclass
class Shapes:
    responses: int = 0
    overflow: int = 0  # path occurrences not recorded: the path cap was reached
    paths: dict[str, PathStats] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"responses": self.responses, "overflow": self.overflow,
                "paths": {p: s.to_json() for p, s in sorted(self.paths.items())}}


@dataclass
class State:
    max_paths: int = 512
    max_rules: int = 1000
    rules: dict[tuple[str, str], Shapes] = field(default_factory=dict)  # (route "GET /x", purpose) → shapes
    overflow: int = 0  # responses not recorded: the route-purpose cap was reached
    replicas: list[str] = field(default_factory=list)  # where the counts come from

    def observation(self, route: str, purpose: str) -> Shapes | None:
        key = (route, purpose)
        hit = self.rules.get(key)
        if hit is None:
            if len(self.rules) >= self.max_rules:
                self.overflow += 1
                return None
            hit = self.rules[key] = Shapes()
        return hit

    def add(self, other: State) -> None:
        self.overflow += other.overflow
        for r in other.replicas:
            if r not in self.replicas:
                self.replicas.append(r)
        for key, theirs in other.rules.items():
            mine = self.observation(*key)
            if mine is None:
                self.overflow += theirs.responses
                continue
            mine.responses += theirs.responses
            mine.overflow += theirs.overflow
            for p, st in theirs.paths.items():
                have = mine.paths.get(p)
                if have is None:
                    if len(mine.paths) >= self.max_paths:
                        mine.overflow += st.seen
                        continue
                    have = mine.paths[p] = PathStats()
                have.add(st)

    def empty(self) -> bool:
        return not self.rules and not self.overflow

    def to_json(self) -> dict[str, Any]:
        routes: dict[str, dict[str, Any]] = {}
        for (route, purpose), shapes in sorted(self.rules.items()):
            routes.setdefault(route, {})[purpose] = shapes.to_json()
        return {"veil_discovery": FORMAT, "replicas": self.replicas, "max_paths": self.max_paths,
                "overflow": self.overflow, "routes": routes}

    @staticmethod
    def from_json(data: Any, *, where: str = "state") -> State:
        if not isinstance(data, dict) or data.get("veil_discovery") != FORMAT:
            raise StateError(f"{where}: not a veil discovery state (format {FORMAT})")
        st = State(max_paths=max(_int(data.get("max_paths")), 1) or 512)
        st.overflow = _int(data.get("overflow"))
        st.replicas = [str(r) for r in data.get("replicas") or [] if isinstance(r, str)]
        routes = data.get("routes", {})
        if not isinstance(routes, dict):
            raise StateError(f"{where}: routes must be a mapping")
        for route, purposes in routes.items():
            if not isinstance(purposes, dict):
                raise StateError(f"{where}: routes.{route} must be a mapping")
            for purpose, shapes in purposes.items():
                if not isinstance(shapes, dict):
                    raise StateError(f"{where}: routes.{route}.{purpose} must be a mapping")
                sh = Shapes(_int(shapes.get("responses")), _int(shapes.get("overflow")))
                paths = shapes.get("paths", {})
                if not isinstance(paths, dict):
                    raise StateError(f"{where}: routes.{route}.{purpose}.paths must be a mapping")
                for p, d in paths.items():
                    if isinstance(d, dict):
                        sh.paths[str(p)] = PathStats.from_json(d)
                st.rules[(str(route), str(purpose))] = sh
        return st


def merge(states: list[State], *, max_paths: int | None = None) -> State:
    out = State(max_paths=max_paths or max((s.max_paths for s in states), default=512))
    for s in states:
        out.add(s)
    return out


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _counts(v: Any) -> dict[str, int]:
    return {str(k): _int(n) for k, n in v.items()} if isinstance(v, dict) else {}


__all__ = ["PathStats", "Shapes", "State", "StateError", "merge"]
