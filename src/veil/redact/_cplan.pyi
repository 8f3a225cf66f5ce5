from typing import Any

KEEP: int
FIXED: int
TRANSFORM: int
OBJECT: int
ARRAY: int
SCRUB: int
CALL: int

class Filter:
    def __init__(self, entries: list[tuple[str, int, Any, Any, Any, int, int]], shape: Any, nondict: Any,
                 counters: tuple[Any, ...] | None) -> None: ...
    def __call__(self, value: Any, ev: dict[Any, Any], /) -> Any: ...

class InPlace:
    def __init__(self, gone: tuple[tuple[str, Any], ...], fns: tuple[tuple[str, Any], ...], nondict: Any) -> None: ...
    def __call__(self, value: Any, ev: dict[Any, Any], /) -> Any: ...

def configure(gone: Any, type_error: type[BaseException], depth: Any, /) -> None: ...

def depth_ok(node: Any, limit: int, /) -> bool: ...

class Xform:
    def __init__(self, py: Any, kind: int, a: int, b: int, text: str, key: bytes) -> None: ...
    def __call__(self, value: Any, /) -> Any: ...

def keyed_hexes(key: bytes, context: bytes, values: list[Any], n: int, /) -> list[str] | None: ...

X_MASK: int
X_HASH: int
X_PREFIX: int
X_BUCKET: int
X_DATE: int
X_ROUND: int
X_IP: int
ARG_MAX: int
