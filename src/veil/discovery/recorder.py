"""The running side of discovery: one `Discovery` per process, fed by the proxy's report-only path.

    Discovery(settings, replica, decode).observe(method, route, purpose, status, headers, body)

`observe` is the one entry point the proxy calls, after a report-only response has been sent. It
samples (`sample`), keeps to 2xx JSON bodies within the body limit, undoes the content encoding
(`decode` and `is_json`: the proxy's own, passed in so this package stays below the proxy), parses (large
bodies with simdjson, read lazily: only the first `array_items` elements of a list are built), and
counts shapes and detector hits. It never raises and never logs a value: a failure is counted in
`errors` and logged by its type only.

State survives restarts: it is read from `state` at start, written (atomically, owner-only) every
`flush_seconds` and at shutdown. Each replica writes its own file; with `workers: N` each worker
writes `<stem>-w<i>.json`. `veil discover merge` adds files up; the admin endpoint adds this
process's live counts to its sibling workers' files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from veil.atomic import write_text_atomically
from veil.discovery.detectors import Detect
from veil.discovery.observe import Limits, Observer
from veil.discovery.state import State, StateError, merge
from veil.redact import lazy as lz
from veil.redact.lazy import NotLazy

log = logging.getLogger("veil.discovery")

Decode = Callable[[bytes, str | None, int], bytes]  # veil.redact.reading.decode_content
IsJson = Callable[[str | None], bool]  # veil.redact.reading.is_json_type
_LAZY_MIN = 16 * 1024


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    routes: tuple[str, ...] = ()  # "GET /customers/{id}"; empty: every route in report-only mode
    sample: float = 0.1
    state: str | None = None  # file path; None: in memory only
    flush_seconds: float = 30.0
    max_paths: int = 512
    array_items: int = 20
    max_values: int = 2000
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR")
    max_body_bytes: int = 10 * 1024 * 1024


def state_path(base: str, chain_id: str) -> Path:
    """`discovery.json` for chain `main`, `discovery-<chain>.json` for a worker (as the decision log)."""
    p = Path(base)
    return p if chain_id == "main" else p.with_name(f"{p.stem}-{chain_id}{p.suffix}")


def read_state(path: Path) -> State:
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise StateError(f"{path}: not JSON") from exc
    return State.from_json(data, where=str(path))


def write_state(path: Path, state: State) -> None:
    _write(path, _dump(state))


class Discovery:
    def __init__(self, settings: Settings, *, decode: Decode, is_json: IsJson, replica: str = "main",
                 rng: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.replica = replica
        self.decode = decode
        self.is_json = is_json
        self.rng = rng
        self.routes = frozenset(settings.routes)
        self.state = State(max_paths=settings.max_paths, replicas=[replica])
        self.observer = Observer(Detect(settings.phone_regions),
                                 Limits(settings.max_paths, settings.array_items, settings.max_values))
        self.errors = 0
        self.path = state_path(settings.state, replica) if settings.state else None
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- the request path
    def wants(self, method: str, route: str) -> bool:
        return not self.routes or f"{method} {route}" in self.routes

    def observe(self, method: str, route: str | None, purpose: str | None, status: int,
                headers: Sequence[tuple[str, str]], body: bytes) -> None:
        """Count one report-only response (sampled). Never raises."""
        if route is None or route == "-" or not 200 <= status < 300 or not body:
            return
        method = "GET" if method == "HEAD" else method
        if not self.wants(method, route) or (self.settings.sample < 1.0 and self.rng() >= self.settings.sample):
            return
        try:
            self._observe(f"{method} {route}", purpose or "-", headers, body)
        except Exception as exc:  # discovery must never break the proxy; the message may quote a value
            self.errors += 1
            log.warning("discovery skipped a response of %s %s: %s", method, route, type(exc).__name__)

    def _observe(self, route: str, purpose: str, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        ctype = encoding = None
        for k, v in headers:
            lk = k.lower()
            if lk == "content-type":
                ctype = v
            elif lk == "content-encoding":
                encoding = v
        if not self.is_json(ctype):
            return
        limit = self.settings.max_body_bytes
        if encoding:
            body = self.decode(body, encoding, limit)
        if len(body) > limit:
            return
        doc: Any = None
        if len(body) >= _LAZY_MIN:
            with contextlib.suppress(NotLazy):
                doc = lz.parse(body)
        if doc is None:
            doc = orjson.loads(body)
        shapes = self.state.observation(route, purpose)
        if shapes is not None:
            self.observer.observe(doc, shapes)

    # ---------------------------------------------------------------- persistence
    def load(self) -> None:
        """Add the replica's saved state (a restart continues counting)."""
        if self.path is None or not self.path.exists():
            return
        try:
            saved = read_state(self.path)
        except StateError as exc:
            log.error("discovery state not read, starting empty: %s", exc)
            return
        saved.replicas = [self.replica]
        self.state = merge([saved, self.state], max_paths=self.settings.max_paths)

    def save(self) -> None:
        if self.path is None:
            return
        try:
            write_state(self.path, self.state)
        except OSError as exc:
            log.error("discovery state not written to %s: %s", self.path, exc.strerror)

    async def start(self) -> None:
        self.load()
        if self.path is not None:
            self._task = asyncio.create_task(self._flush_loop(), name="veil-discovery-flush")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_seconds)
            if self.path is None:
                return
            text = _dump(self.state)  # on the event loop: nothing changes the counts meanwhile
            try:
                await asyncio.to_thread(_write, self.path, text)
            except OSError as exc:
                log.error("discovery state not written to %s: %s", self.path, exc.strerror)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.save()

    def siblings(self) -> list[Path]:
        """The saved states of the other workers of this replica (`<stem>-w<i>.json`, `<stem>.json`)."""
        if self.path is None or self.settings.state is None:
            return []
        base = Path(self.settings.state)
        found = [base, *sorted(base.parent.glob(f"{base.stem}-*{base.suffix}"))]
        return [p for p in found if p.exists() and p.resolve() != self.path.resolve()]

    def snapshot(self) -> State:
        """This process's live counts plus its sibling workers' saved ones."""
        states = [self.state]
        for p in self.siblings():
            try:
                states.append(read_state(p))
            except StateError as exc:
                log.warning("discovery state of a sibling not read: %s", exc)
        return merge(states, max_paths=self.settings.max_paths)


def _dump(state: State) -> str:
    return orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2).decode()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, text, mode=0o600)


__all__ = ["Discovery", "Settings", "read_state", "state_path", "write_state"]
