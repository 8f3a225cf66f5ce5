"""The compiled parts of the redaction core (veil.redact._cplan, built by pip from `_cplan.c` where a C
compiler and Python's headers are; see hatch_build.py), or None where it was not built: then the
generated Python runs, with the same results (tests/redact/test_native.py compares the two).

`VEIL_NATIVE=0` in the environment turns it off for a comparison, or to rule it out."""

from __future__ import annotations

import os
from typing import Any

from veil.redact.transforms import TransformTypeError

GONE: Any = object()  # a field-plan closure's "this node is removed" result (veil.redact._compile)


def _load() -> Any:
    try:
        from veil.redact import _cplan as mod
    except ImportError:
        return None
    mod.configure(GONE, TransformTypeError)
    return mod


cplan: Any = _load()  # the module, also when VEIL_NATIVE=0 (tests compare both)
ENABLED = cplan is not None and os.environ.get("VEIL_NATIVE", "1") != "0"
DEPTH_LIMIT = 4096  # _cplan.depth_ok's largest limit (its walk recurses that deep at most)
