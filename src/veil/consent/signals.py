"""Consent signals a request carries: Global Privacy Control and the IAB TCF string. Pure functions.

`gpc_from_headers` reads `Sec-GPC` values; `tcf_from_request` picks the raw TC string from a
configured header or cookie (`euconsent-v2` by default). Decoding is `veil.consent.tcf.decode`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["GPC_HEADER", "TCF_COOKIE", "gpc_from_headers", "tcf_from_request"]

GPC_HEADER = "sec-gpc"
TCF_COOKIE = "euconsent-v2"
_OWS = " \t"  # RFC 9110 optional whitespace

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def gpc_from_headers(values: Sequence[str]) -> bool:
    """True iff any `Sec-GPC` value is exactly "1" once optional whitespace is stripped.

    Any other value ("0", "true", "1, 1", "") is ignored, as the GPC spec says.
    """
    return any(value.strip(_OWS) == "1" for value in values)


def tcf_from_request(
    headers: Headers,
    cookie_header: str | None,
    *,
    header_name: str | None = None,
    cookie_name: str | None = TCF_COOKIE,
) -> str | None:
    """The raw TC string of a request, or None when it carries none.

    The header `header_name` (case-insensitive) wins over the cookie `cookie_name` in the `Cookie`
    header `cookie_header`; pass None for either to not look there. If the header appears more than
    once with different values, the request is ambiguous and None is returned. Of repeated
    cookies the first is taken (RFC 6265 sends the most specific path first). Surrounding
    whitespace and cookie-value quotes are removed; empty values count as absent.
    """
    if header_name is not None:
        wanted = header_name.lower()
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        values = {v.strip(_OWS) for k, v in pairs if k.lower() == wanted} - {""}
        if len(values) > 1:
            return None  # ambiguous: fail closed rather than guess
        if values:
            return values.pop()
    if cookie_name is not None and cookie_header:
        for part in cookie_header.split(";"):
            name, sep, value = part.partition("=")
            if sep and name.strip(_OWS) == cookie_name:
                value = value.strip(_OWS)
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value or None
    return None
