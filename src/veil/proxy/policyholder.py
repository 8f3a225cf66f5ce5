"""The active policy and its hot reload: parse and compile off the event loop, swap atomically.

A request reads `holder.current` once and runs entirely under that policy. An invalid policy is
rejected (errors logged, metric `veil_policy_reloads_total{result="error"}`); the last good one stays.
The watcher polls the files' identity (resolved path, inode, size, mtime), which notices edits,
deletions and Kubernetes ConfigMap updates (an atomic swap of the `..data` symlink). A reload that
would leave no route at all (a deleted routes file) is rejected like an invalid one. SIGHUP and the
admin `POST /reload` call `reload()` directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from veil import metrics
from veil.errors import Diagnostics
from veil.logs import where
from veil.policy import load_policy
from veil.policy.compile import CompiledPolicy
from veil.policy.load import expand_paths

log = logging.getLogger("veil.policy")


def _load(paths: Sequence[str], hash_key: bytes | None) -> CompiledPolicy:
    return load_policy(paths, hash_key=hash_key)


def _signature(paths: Sequence[str]) -> tuple[tuple[str, int, int, int], ...]:
    out: list[tuple[str, int, int, int]] = []
    for p in paths:
        if Path(p).is_dir():
            out.append((os.path.realpath(p), 0, 0, 0))
    for name in map(str, expand_paths(paths)):
        try:
            st = os.stat(name)
            out.append((os.path.realpath(name), st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((name, -1, -1, -1))
    return tuple(out)


class PolicyHolder:
    def __init__(self, paths: Sequence[str], *, hash_key: bytes | None,
                 on_install: Callable[[], None] | None = None) -> None:
        self.paths = list(paths)
        self.on_install = on_install
        self.hash_key = hash_key
        self.current: CompiledPolicy | None = None
        self.last_error: str | None = None
        self._sig: tuple[tuple[str, int, int, int], ...] = ()
        self._lock = asyncio.Lock()

    def load_initial(self) -> CompiledPolicy:
        """Synchronous first load (at start-up); raises Diagnostics."""
        self._sig = _signature(self.paths)
        try:
            policy = _load(self.paths, self.hash_key)
        except Exception:
            metrics.policy_loaded(False)
            raise
        self._install(policy)
        metrics.policy_loaded(True)
        return policy

    def _install(self, policy: CompiledPolicy) -> None:
        if self.current is not None and self.current.version != policy.version:
            # clear() alone leaves the old series at 1 in multiprocess mode (values live in files)
            metrics.policy_info.labels(self.current.version).set(0)
        self.current = policy
        self.last_error = None
        metrics.set_policy_version(policy.version)
        if self.on_install is not None:
            self.on_install()
        for w in policy.warnings:  # one record each: location, code, message, hint on one line
            log.warning("policy warning: %s%s", w.render().split("\n", 1)[0], f" (hint: {w.hint})" if w.hint else "")

    async def reload(self) -> bool:
        """Reload now; True when a new policy is active. Never raises for a bad policy. Each outcome is
        one log record (a rejected policy's diagnostics on one line; `last_error` keeps the full render)."""
        async with self._lock:
            self._sig = _signature(self.paths)
            try:
                policy = await asyncio.to_thread(_load, self.paths, self.hash_key)
            except Diagnostics as exc:
                return self._rejected(exc.render(limit=20), exc.one_line())
            except Exception as exc:  # a bug must not take the last good policy away
                reason = f"internal error: {type(exc).__name__}"
                return self._rejected(reason, f"{reason} ({where(exc)})")
            if not policy.routes and self.current is not None and self.current.routes:
                # a deleted routes file (or one caught mid-rename) would block everything: keep the last good
                reason = "the new policy has no routes (a file deleted?); not activated"
                return self._rejected(reason, reason)
            previous = self.current.version if self.current else None
            recovered = self.last_error is not None
            self._install(policy)
            metrics.policy_reloads_total.labels("ok").inc()
            metrics.policy_loaded(True)
            if recovered:  # the operator who saw the rejection needs to see it resolved
                if previous != policy.version:
                    log.info("policy reload succeeded after a rejected one: version %s replaces %s",
                             policy.version, previous)
                else:
                    log.info("policy reload succeeded after a rejected one: version %s stays in force",
                             policy.version)
            elif previous != policy.version:
                log.info("policy %s version %s active", policy.name, policy.version)
            return True

    def _rejected(self, error: str, line: str) -> bool:
        self.last_error = error
        metrics.policy_reloads_total.labels("error").inc()
        metrics.policy_loaded(False)
        log.error("policy reload rejected; keeping version %s: %s",
                  self.current.version if self.current else "none", line)
        return False

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                sig = await asyncio.to_thread(_signature, self.paths)
            except Exception:  # pragma: no cover - stat errors are folded into the signature
                continue
            if sig != self._sig:
                await self.reload()
