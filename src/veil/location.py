"""Source locations and the source line with a caret under them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A 1-based position in a source file (policy file, config file, test file)."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def snippet(self, source: str | None) -> str:
        """The source line with a caret under the column, or '' when the line is unknown.

        >>> Location("p.veil", 1, 5).snippet("keep emial")
        '    1 | keep emial\\n      |     ^'
        """
        if source is None or self.line < 1:
            return ""
        lines = source.splitlines()
        if self.line > len(lines):
            return ""
        text = lines[self.line - 1].expandtabs(1)
        width = 1
        if self.end_line == self.line and self.end_col is not None and self.end_col > self.col:
            width = self.end_col - self.col
        gutter = f"{self.line:>5} | "
        return f"{gutter}{text}\n{' ' * (len(gutter) - 2)}| {' ' * (self.col - 1)}{'^' * width}"
