"""Shared test helpers: free ports, subprocess servers on 127.0.0.1, and service availability
(tests that need PostgreSQL or promtool skip elsewhere but fail when CI=true)."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require(available: bool, what: str) -> None:
    """Skip when `what` is unavailable here; under CI=true, fail instead."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available")
    pytest.skip(f"{what} is not available")
