"""The handshake between `veil serve --workers N`'s supervisor (veil.proxy.workers) and its workers:
the environment variable that names the supervisor, and a worker asking it to reload every worker."""

from __future__ import annotations

import os
import signal

SUPERVISOR_ENV = "VEIL_SUPERVISOR_PID"


def reload_all_workers() -> bool:
    """In a worker: ask the supervisor to send SIGHUP to every worker (admin `POST /reload` reaches
    one worker only). False when this process is not a supervised worker."""
    pid = os.environ.get(SUPERVISOR_ENV)
    if not pid or not pid.isdigit() or int(pid) != os.getppid():
        return False
    try:
        os.kill(int(pid), signal.SIGHUP)
    except OSError:
        return False
    return True
