"""Bit-level reading for TC strings: base64url segments, fixed-width fields, vendor id sets.

`BitReader` turns one base64url segment (no padding) into a string of '0'/'1' characters once, so
every field read is a slice plus `int(..., 2)`. Reading past the end raises `Malformed("truncated")`;
`decode` in `tcf.py` catches it, so it never leaves the package.

`IdSet` holds vendor ids as sorted, disjoint, inclusive intervals. A range-encoded section of a
few hundred bytes can name every id up to 65535 many times over; keeping intervals (merged once)
bounds both the time and the memory of decoding whatever the input.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator

from veil.errors import VeilError

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SIX_BITS = {char: format(value, "06b") for value, char in enumerate(ALPHABET)}
_ONES = re.compile("1+")


class Malformed(VeilError):
    """A segment that cannot be decoded further; `detail` is the stable detail code."""

    code = "tcf_invalid"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class IdSet:
    """An immutable set of positive ids kept as sorted, disjoint, inclusive intervals."""

    __slots__ = ("_ends", "_size", "_starts")

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        starts: list[int] = []
        ends: list[int] = []
        for start, end in sorted(intervals):
            if ends and start <= ends[-1] + 1:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        self._set(starts, ends)

    @classmethod
    def from_disjoint(cls, starts: list[int], ends: list[int]) -> IdSet:
        """From intervals already sorted, disjoint and non-adjacent (e.g. runs of a bitfield)."""
        made = cls.__new__(cls)
        made._set(starts, ends)
        return made

    def _set(self, starts: list[int], ends: list[int]) -> None:
        self._starts = tuple(starts)
        self._ends = tuple(ends)
        self._size = sum(ends) - sum(starts) + len(starts)

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, int):
            return False
        i = bisect_right(self._starts, item) - 1
        return i >= 0 and item <= self._ends[i]

    def __iter__(self) -> Iterator[int]:
        for start, end in zip(self._starts, self._ends, strict=True):
            yield from range(start, end + 1)

    def __len__(self) -> int:
        return self._size

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdSet):
            return self._starts == other._starts and self._ends == other._ends
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._starts, self._ends))

    def __repr__(self) -> str:
        parts = [str(s) if s == e else f"{s}-{e}" for s, e in zip(self._starts, self._ends, strict=True)]
        return f"IdSet({', '.join(parts)})"

    @property
    def intervals(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self._starts, self._ends, strict=True))


class BitReader:
    """Reads big-endian unsigned fields from one base64url segment, left to right."""

    __slots__ = ("_bits", "pos")

    def __init__(self, segment: str) -> None:
        try:
            self._bits = "".join([_SIX_BITS[char] for char in segment])
        except KeyError:
            raise Malformed("bad_base64") from None
        self.pos = 0

    def _take(self, width: int) -> str:
        end = self.pos + width
        if end > len(self._bits):
            raise Malformed("truncated")
        chunk = self._bits[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, width: int) -> int:
        return int(self._take(width), 2)

    def flag(self) -> bool:
        return self._take(1) == "1"

    def letters(self, count: int = 2) -> str | None:
        """`count` letters of 6 bits each, 0 = 'A'; None when a value is past 'Z'."""
        values = [self.uint(6) for _ in range(count)]
        if any(v > 25 for v in values):
            return None
        return "".join(chr(ord("A") + v) for v in values)

    def bitfield(self, width: int) -> frozenset[int]:
        """The 1-based positions of the set bits among the next `width` bits."""
        chunk = self._take(width)
        return frozenset(i + 1 for i, bit in enumerate(chunk) if bit == "1")

    def bitfield_ids(self, width: int) -> IdSet:
        """Like `bitfield`, for long vendor bitfields: runs of ones become intervals."""
        runs = [m.span() for m in _ONES.finditer(self._take(width))]
        return IdSet.from_disjoint([start + 1 for start, _ in runs], [end for _, end in runs])
