"""The standard `process_*` metrics of every worker under `veil serve --workers N`.

prometheus-client's multiprocess collector aggregates the values workers write to their files, but
process metrics are read from /proc at scrape time, so the scraped worker alone would report itself.
Each worker (and the supervisor) writes its pid to `process-<name>.pid` in PROMETHEUS_MULTIPROC_DIR
at start (`register_process`); a scrape reads /proc for each of them and exports the usual names with
a bounded `worker` label (`w0`, `w1`, ..., `supervisor`). `sum by (instance)
(rate(process_cpu_seconds_total[5m]))` is the pod's CPU; a file whose process is gone is skipped.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric

_PID_FILE = re.compile(r"process-([A-Za-z0-9_-]{1,32})\.pid")


def register_process(directory: str | os.PathLike[str], name: str) -> None:
    """Record this process under `name` for the process metrics of a multiprocess scrape."""
    path = Path(directory) / f"process-{name}.pid"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(path)


def _processes(directory: Path) -> Iterator[tuple[str, int]]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        m = _PID_FILE.fullmatch(entry.name)
        if m is None:
            continue
        try:
            text = entry.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and Path(f"/proc/{text}").exists():
            yield m.group(1), int(text)


class WorkerProcessCollector:
    """process_* for every registered process, labelled by worker name."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for name, pid in _processes(self.directory):
            for family in ProcessCollector(pid=functools.partial(int, pid), registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for s in family.samples:
                    merged.add_sample(s.name, {**s.labels, "worker": name}, s.value)
        return list(families.values())
