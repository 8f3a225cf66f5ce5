"""`veil serve --workers N`: N worker processes sharing the proxy and admin ports.

Each worker is a fresh interpreter (spawn, not fork: prometheus-client picks its value store at
import time, so PROMETHEUS_MULTIPROC_DIR must be set before a worker imports it) running
`veil.proxy.server.serve(config, chain_id="w<i>", reuse_port=True)`: both listeners are bound with
SO_REUSEPORT and the kernel spreads new connections over the workers. Each worker writes its own
decision-log chain (`decisions-w0.log`, ...); `/metrics` on any worker aggregates all of them.

The workers of one veil also talk to each other (veil.proxy.siblings): the parent makes a private
directory for their sockets and names it, the number of workers and the replica's name
(`host:pid`) in the environment. A consent write waits until every worker dropped the subject; `/readyz`
on any worker answers for all of them.

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
import socket
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from veil.config import Config
from veil.proxy.siblings import BUS_ENV, REPLICA_ENV, WORKERS_ENV
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
        for pattern in ("*.db", "process-*.pid"):  # a previous run's values would be added to this one's
            for stale in d.glob(pattern):
                stale.unlink()
        return d, False
    return Path(tempfile.mkdtemp(prefix="veil-metrics-")), True


def _worker(config: Config, chain_id: str) -> None:
    """A worker's main (in a spawned interpreter)."""
    from veil import logs

    logs.configure(config.log_format, config.log_level, worker=chain_id)
    from veil._process_metrics import register_process
    from veil.errors import Diagnostics, VeilError
    from veil.listen import EXIT_LISTEN, ListenError
    from veil.proxy.server import run_async, serve

    register_process(os.environ[MULTIPROC_ENV], chain_id)
    try:
        run_async(serve(config, chain_id=chain_id, reuse_port=True))
    except ListenError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(EXIT_LISTEN)
    except Diagnostics as exc:
        log.error("cannot start: the policy is invalid: %s", exc.one_line())
        sys.exit(1)
    except (VeilError, OSError) as exc:
        log.error("cannot start: %s", exc)
        sys.exit(1)


def run_workers(config: Config, n: int) -> int:
    """Run n workers until they exit; 0 when all stopped cleanly after a signal, 3 (EXIT_LISTEN) when
    a listener could not bind, else 1. Raises ListenError when an address is taken before any start."""
    if n < 1:
        raise ValueError("at least one worker is required")
    from veil._process_metrics import register_process
    from veil.listen import check_free

    check_free(config)  # an address in use: one error here rather than N failing workers (ListenError)
    mdir, created = _metrics_dir()
    os.environ[MULTIPROC_ENV] = str(mdir)  # inherited by the spawned workers
    register_process(mdir, "supervisor")
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    bus = Path(tempfile.mkdtemp(prefix="veil-bus-"))  # mode 0700
    os.environ[BUS_ENV] = str(bus)
    os.environ[WORKERS_ENV] = str(n)
    os.environ[REPLICA_ENV] = f"{socket.gethostname()}:{os.getpid()}"
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
        log.info("veil supervising %d workers (pids %s)", len(procs), ", ".join(str(p.pid) for p in procs))
        failed = False
        codes: list[int] = []
        running = list(procs)
        while running:
            wait([p.sentinel for p in running], timeout=1.0)
            for done in [p for p in running if p.exitcode is not None]:
                running.remove(done)
                codes.append(done.exitcode or 0)
                if done.exitcode != 0 or not stopping:
                    failed = True
                    log.error("worker %s exited with %s%s", done.name, done.exitcode,
                              "" if stopping else ": stopping the others")
                if not stopping:
                    forward(signal.SIGTERM, None)
        from veil.listen import EXIT_LISTEN

        if EXIT_LISTEN in codes:
            return EXIT_LISTEN
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
        shutil.rmtree(bus, ignore_errors=True)
        for name in (BUS_ENV, WORKERS_ENV, REPLICA_ENV):
            os.environ.pop(name, None)
