"""A circuit breaker in front of a consent store: while the store is known to be down, calls fail at
once (`ConsentUnavailable`) instead of each waiting for its own timeout.

    closed ──(`failures` consecutive failures)──► open ──(a background probe succeeds)──► closed

While open, no caller touches the store: one background task probes it (`inner.ensure()` when the
store has one: connect, migrate and ping; else `inner.ping()`) every `retry_interval` seconds, and the
first probe that succeeds closes the circuit. A store opened without waiting (`veil serve` while the
database is unreachable) starts open. Every call also runs under a deadline (`budget` seconds), so a
store whose own timeouts fail to fire (a driver stuck in a silent network) still gives up.

`GuardedStore` is a `ConsentStore`; `call(fn)` runs any other operation of the inner store (a write
that waits for acknowledgements) under the same breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from veil import metrics
from veil.consent.store import ConsentEvent, ConsentState, ConsentStore
from veil.errors import ConsentUnavailable

log = logging.getLogger("veil.consent")
T = TypeVar("T")


class Circuit:
    """The breaker's state: closed (calls pass) or open (calls fail at once). Not thread-safe; one loop."""

    def __init__(self, failures: int = 3) -> None:
        if failures < 1:
            raise ValueError("failures must be >= 1")
        self.threshold = failures
        self.failures = 0
        self.open = False
        self.opened_at: float | None = None
        self.trips = 0
        self.reason = ""

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self, reason: str) -> bool:
        """Count a failure; True when this one opened the circuit."""
        self.failures += 1
        self.reason = reason
        if not self.open and self.failures >= self.threshold:
            self.trip(reason)
            return True
        return False

    def trip(self, reason: str) -> None:
        self.open, self.opened_at, self.reason = True, time.monotonic(), reason
        self.trips += 1
        metrics.consent_circuit_open.set(1)
        metrics.consent_store_up.set(0)
        metrics.consent_circuit_trips_total.inc()

    def close(self) -> None:
        self.open, self.opened_at, self.failures, self.reason = False, None, 0, ""
        metrics.consent_circuit_open.set(0)
        metrics.consent_store_up.set(1)


class GuardedStore:
    """`ConsentStore` behind a `Circuit`. `budget`: the most one call may take (seconds)."""

    def __init__(self, inner: ConsentStore, *, failures: int = 3, retry_interval: float = 0.5,
                 budget: float = 2.0, start_open: bool = False) -> None:
        self.inner = inner
        self.circuit = Circuit(failures)
        self.retry_interval = retry_interval
        self.budget = budget
        self.hasher = getattr(inner, "hasher", None)
        self._prober: asyncio.Task[None] | None = None
        self._closed = False
        if start_open:
            self.circuit.trip("not connected yet")
            self._start_probe()
        else:
            metrics.consent_circuit_open.set(0)

    @property
    def available(self) -> bool:
        """False while the circuit is open (the store is known to be down)."""
        return not self.circuit.open

    def on_change(self, callback: Callable[[str], None]) -> None:
        register: Any = getattr(self.inner, "on_change", None)
        if callable(register):
            register(callback)

    def on_lease(self, callback: Callable[[float], None]) -> None:
        register: Any = getattr(self.inner, "on_lease", None)
        if callable(register):
            register(callback)

    async def call(self, fn: Callable[[], Awaitable[T]], *, budget: float | None = None) -> T:
        """Run `fn` (an operation of the inner store) under the breaker and the deadline."""
        if self.circuit.open:
            raise ConsentUnavailable(f"consent store unavailable (circuit open: {self.circuit.reason})")
        try:
            async with asyncio.timeout(self.budget if budget is None else budget):
                result = await fn()
        except ConsentUnavailable as exc:
            self._failed(str(exc))
            raise
        except TimeoutError as exc:
            self._failed("no answer within the deadline")
            raise ConsentUnavailable("consent store did not answer in time") from exc
        self.circuit.succeeded()
        return result

    def _failed(self, reason: str) -> None:
        if self.circuit.failed(reason):
            log.warning("consent store circuit opened after %d failure(s): %s; requests that need consent "
                        "fail closed until a probe succeeds", self.circuit.failures, reason)
            self._start_probe()

    def _start_probe(self) -> None:
        if self._closed or (self._prober is not None and not self._prober.done()):
            return
        try:
            self._prober = asyncio.get_running_loop().create_task(self._probe(), name="veil-consent-probe")
        except RuntimeError:  # no running loop (constructed outside one): the first call starts it
            self._prober = None

    async def _probe(self) -> None:
        attempt = 0
        while self.circuit.open and not self._closed:
            attempt += 1
            try:
                ok = await self._probe_once()
            except Exception as exc:  # a probe must never die silently
                ok = False
                log.debug("consent store probe failed: %s", exc)
            if ok:
                down = time.monotonic() - (self.circuit.opened_at or time.monotonic())
                self.circuit.close()
                log.warning("consent store reachable again after %.2fs (%d probe(s)): circuit closed",
                            down, attempt)
                return
            await asyncio.sleep(self.retry_interval)

    async def _probe_once(self) -> bool:
        ensure: Any = getattr(self.inner, "ensure", None)
        # ensure() may migrate the schema: give it longer than a request gets
        async with asyncio.timeout(max(self.budget, 30.0) if callable(ensure) else self.budget):
            if callable(ensure):
                await ensure()
                return True
            return await self.inner.ping()

    # -- ConsentStore ----------------------------------------------------------------------------------

    async def current(
        self, subjects: Sequence[str], keys: Sequence[str]
    ) -> dict[tuple[str, str], ConsentState]:
        return await self.call(lambda: self.inner.current(subjects, keys))

    async def record(self, events: Sequence[ConsentEvent]) -> None:
        await self.call(lambda: self.inner.record(events))

    async def history(self, subject: str) -> list[ConsentEvent]:
        return await self.call(lambda: self.inner.history(subject))

    async def ping(self) -> bool:
        """A real check while closed (a failed ping counts as a failure); False at once while open."""
        if self.circuit.open:
            self._start_probe()
            return False
        try:
            async with asyncio.timeout(self.budget):
                ok = await self.inner.ping()
        except (TimeoutError, ConsentUnavailable):
            ok = False
        if ok:
            self.circuit.succeeded()
        else:
            self._failed("ping failed")
        return ok

    async def close(self) -> None:
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._prober
        await self.inner.close()
