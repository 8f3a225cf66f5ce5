"""`veil serve --workers N`: N worker processes sharing the proxy and admin ports.

Each worker is a fresh interpreter (spawn, not fork: prometheus-client picks its value store at
import time, so PROMETHEUS_MULTIPROC_DIR must be set before a worker imports it) running
`veil.proxy.server.serve(config, chain_id="w<i>", reuse_port=True)`: both listeners are bound with
SO_REUSEPORT and the kernel spreads new connections over the workers. Each worker writes its own
decision-log chain (`decisions-w0.log`, ...); `/metrics` on any worker aggregates all of them.

The parent only supervises: SIGTERM/SIGINT are forwarded (every worker drains), SIGHUP is forwarded
(every worker reloads its policy; a worker's admin `POST /reload` asks the parent for that too).
A worker that dies on its own stops the rest and the parent exits 1, so the orchestrator restarts
the whole set (a half-capacity veil that looks healthy is worse).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from veil.config import Config
from veil.proxy.supervisor import SUPERVISOR_ENV

log = logging.getLogger("veil.workers")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_dir() -> tuple[Path, bool]:
    """The multiprocess metrics directory, emptied; True when veil created it (and removes it)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        d = Path(given)
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob("*.db"):  # values of a previous run would be added to this one's
            stale.unlink()
        return d, False
    return Path(tempfile.mkdtemp(prefix="veil-metrics-")), True


def _worker(config: Config, chain_id: str) -> None:
    """A worker's main (in a spawned interpreter)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s[{chain_id}]: %(message)s")
    from veil.errors import Diagnostics
    from veil.proxy.server import run_async, serve

    try:
        run_async(serve(config, chain_id=chain_id, reuse_port=True))
    except Diagnostics as exc:
        print(f"veil worker {chain_id}: the policy is invalid:\n{exc.render(20)}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"veil worker {chain_id}: error: {exc}", file=sys.stderr)
        sys.exit(1)


def run_workers(config: Config, n: int) -> int:
    """Run n workers until they exit; 0 when all stopped cleanly after a signal, else 1."""
    if n < 1:
        raise ValueError("at least one worker is required")
    mdir, created = _metrics_dir()
    os.environ[MULTIPROC_ENV] = str(mdir)  # inherited by the spawned workers
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    for signum in FORWARDED:
        previous[signum] = signal.signal(signum, forward)
    try:
        for i in range(n):
            proc = ctx.Process(target=_worker, args=(config, f"w{i}"), name=f"veil-w{i}", daemon=False)
            proc.start()
            procs.append(proc)
            if stopping:
                break
        log.warning("veil supervising %d workers (pids %s)", len(procs), ", ".join(str(p.pid) for p in procs))
        failed = False
        running = list(procs)
        while running:
            wait([p.sentinel for p in running], timeout=1.0)
            for done in [p for p in running if p.exitcode is not None]:
                running.remove(done)
                if done.exitcode != 0 or not stopping:
                    failed = True
                    log.error("worker %s exited with %s%s", done.name, done.exitcode,
                              "" if stopping else ": stopping the others")
                if not stopping:
                    forward(signal.SIGTERM, None)
        return 1 if failed else 0
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
        for p in procs:
            p.join(timeout=30)
            if p.exitcode is None:
                p.kill()
                p.join()
        if created:
            shutil.rmtree(mdir, ignore_errors=True)
