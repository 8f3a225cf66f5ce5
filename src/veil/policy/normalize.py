"""Request path normalization: one canonical form that veil matches and the upstream receives.

Rules (documented in SECURITY.md): the raw path is percent-decoded once and must then be valid UTF-8;
an encoded '/', '\\' or '%' (double encoding), a dot segment ('.', '..', also when encoded), an empty
segment ('//'), a ';' parameter, a backslash or a control character is refused (400 path_invalid) —
veil does not guess how the upstream would read them. One trailing slash is removed. Matching is
case-sensitive. The upstream receives the normalized path re-encoded with `quote`.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from veil.errors import PathInvalid

_SAFE = "/:@!$&'()*+,=-._~"
_BAD_ENCODED = (b"%2f", b"%5c", b"%25", b"%00")


# A path that is already canonical: non-empty segments of characters `quote(..., safe=_SAFE)` keeps,
# none starting with '.', at most one trailing slash. Most requests take this exit.
_PLAIN = re.compile(rb"(?:/[A-Za-z0-9:@!$&'()*+,=\-_~][A-Za-z0-9:@!$&'()*+,=\-_~.]*)+/?|/")


def normalize_path(raw: bytes) -> tuple[str, str]:
    """raw (as on the wire, without query) → (decoded normalized path, re-encoded path for upstream).
    PathInvalid (400 path_invalid) for a path veil does not accept."""
    if len(raw) <= 4096 and _PLAIN.fullmatch(raw):
        text = raw.decode("ascii")
        if len(text) > 1 and text.endswith("/"):
            text = text[:-1]
        return text, text
    return _normalize(raw)


def _normalize(raw: bytes) -> tuple[str, str]:
    if not raw.startswith(b"/") or len(raw) > 4096:
        raise PathInvalid("path must start with '/' and be at most 4096 bytes")
    lowered = raw.lower()
    if any(b in lowered for b in _BAD_ENCODED):
        raise PathInvalid("encoded '/', '\\\\', '%' or NUL")
    if b";" in raw or b"\\" in raw:
        raise PathInvalid("';' parameters and backslashes are not accepted")
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PathInvalid("not valid UTF-8 after percent-decoding") from exc
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise PathInvalid("control character")
    if len(text) > 1 and text.endswith("/"):
        text = text[:-1]
    segments = text.split("/")[1:]
    if text != "/":
        for seg in segments:
            if seg in ("", ".", ".."):
                raise PathInvalid("empty or dot segment")
    return text, quote(text, safe=_SAFE)
