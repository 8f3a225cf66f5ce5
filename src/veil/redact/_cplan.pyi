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

def configure(gone: Any, type_error: type[BaseException], /) -> None: ...

def depth_ok(node: Any, limit: int, /) -> bool: ...
