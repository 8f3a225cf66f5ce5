"""The notice's texts, one catalog per language (`en.toml`, `de.toml` beside this file), and the choice
of a language for a reader (`Accept-Language`, RFC 9110 §12.5.4).

    catalog("de").t("purpose.kept", retention="13 Monate")     negotiate("de-AT,de;q=0.9,en;q=0.5") → "de"
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from veil.errors import VeilError

DEFAULT = "en"
_RANGE = re.compile(r"\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*")


def available() -> tuple[str, ...]:
    """Language tags with a catalog, sorted."""
    return tuple(sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml")))


class Catalog:
    """One language's texts, addressed by dotted key; a key missing here falls back to English."""

    def __init__(self, lang: str, data: Mapping[str, Any], fallback: Catalog | None) -> None:
        self.lang = lang
        self._data = data
        self._fallback = fallback

    def _get(self, key: str) -> Any:
        node: Any = self._data
        for part in _split(key):
            if not isinstance(node, Mapping) or part not in node:
                if self._fallback is not None:
                    return self._fallback._get(key)
                raise KeyError(key)
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        try:
            self._get(key)
        except KeyError:
            return False
        return True

    def t(self, key: str, **values: str) -> str:
        """The text for `key` with its {placeholders} filled (values are inserted as given)."""
        text = self._get(key)
        if not isinstance(text, str):
            raise KeyError(key)
        return text.format_map(values) if values else text

    def duration(self, amount: int, unit: str) -> str:
        """"13 months" → "13 Monate": units day(s), week(s), month(s), year(s)."""
        forms = self._get(f"unit.{unit.rstrip('s')}")
        return str(forms["one" if amount == 1 else "other"]).format(n=amount)

    def label(self, category: str) -> str:
        """A readable name for a category: the catalog's, or the name with . and _ as spaces."""
        labels = self._data.get("label", {})
        if category in labels:
            return str(labels[category])
        if self._fallback is not None:
            return self._fallback.label(category)
        return re.sub(r"[._]+", " ", category)


def _split(key: str) -> list[str]:
    """`manner.in clear` → ["manner", "in clear"]; only the first dot separates a table from its key
    where the key itself has dots (`label.contact.address`)."""
    table, _, rest = key.partition(".")
    return [table, rest] if rest else [table]


@functools.cache
def catalog(lang: str = DEFAULT) -> Catalog:
    if lang not in available():
        raise VeilError(f"no notice texts for language {lang!r} (available: {', '.join(available())})",
                        code="notice_language")
    data = tomllib.loads(resources.files(__name__).joinpath(f"{lang}.toml").read_text(encoding="utf-8"))
    return Catalog(lang, data, None if lang == DEFAULT else catalog(DEFAULT))


def negotiate(header: str | None, languages: tuple[str, ...] | None = None) -> str:
    """The best available language for an Accept-Language header (`de-AT` matches `de`; q=0 refuses;
    ties keep the header's order); the default when nothing matches or the header is malformed."""
    langs = languages or available()
    best: tuple[float, int, str] | None = None
    for i, part in enumerate((header or "").split(",")[:32]):
        m = _RANGE.fullmatch(part)
        if m is None:
            continue
        tag, q = m.group(1).lower(), float(m.group(2) or 1)
        if q <= 0:
            continue
        found = DEFAULT if tag == "*" else next(
            (x for x in langs if x == tag or tag.startswith(x + "-") or x.startswith(tag + "-")), None)
        if found is not None and (best is None or (q, -i) > (best[0], -best[1])):
            best = (q, i, found)
    return best[2] if best else DEFAULT


__all__ = ["DEFAULT", "Catalog", "available", "catalog", "negotiate"]
