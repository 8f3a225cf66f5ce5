"""Text → lark parse tree. The grammar ships inside the package (`veil/grammar/veil.lark`); in a
source checkout it is read from `grammar/` at the repository root.

Parse errors become a Diagnostic with file:line:col, and a hint naming what was expected.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from veil.errors import Diagnostic
from veil.location import Location

_READABLE = {
    "STRING": "a string in double quotes",
    "DOTTED": "a dotted name like personalize.recommendations",
    "NAME": "a name",
    "INT": "a whole number",
    "PATH": "a field path like address.zip or items[*].email",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "METHOD": "an HTTP method (GET, POST, ...)",
    "ROUTE_PATH": "a path template starting with '/'",
    "SUBJECT_REF": "path.NAME, query.NAME or header.NAME",
    "KEY_HASH": "sha256:<hex digest>",
    "EQUAL": "'='",
    "SIGNED_NUMBER": "a number",
    "AT": "'@'",
    "MORETHAN": "'>'",
    "LESSTHAN": "'<'",
}


def grammar_text() -> str:
    try:
        return resources.files("veil").joinpath("grammar/veil.lark").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        root = Path(__file__).resolve().parents[3]
        return (root / "grammar" / "veil.lark").read_text(encoding="utf-8")


@functools.cache
def parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
        cache=False,
    )


def _expected(exc: UnexpectedInput) -> str:
    names: set[str] = set()
    if isinstance(exc, UnexpectedToken):
        names = set(exc.accepts or exc.expected)
    elif isinstance(exc, UnexpectedCharacters):
        names = set(exc.allowed or ())
    elif isinstance(exc, UnexpectedEOF):
        names = set(exc.expected)
    words = []
    for n in sorted(names):
        if n.startswith("__") or n == "$END":
            continue
        if n in _READABLE:
            words.append(_READABLE[n])
        else:
            t = parser().get_terminal(n)
            pattern = getattr(t.pattern, "value", n)
            words.append(f"'{pattern}'" if t.pattern.type == "str" else n.lower())
    words = sorted(set(words))
    if not words:
        return ""
    if len(words) > 8:
        head = words[:8] if "'}'" in words[:8] or "'}'" not in words else [*words[:7], "'}'"]
        words = [*head, "..."]  # a closing brace stays visible: it drives the "missing '}'" hint
    return "expected " + ", ".join(words)


def parse_text(text: str, file: str) -> tuple[Tree[Token] | None, list[Diagnostic], list[tuple[int, str]]]:
    """Parse one file; returns (tree or None, diagnostics, comments as (line, text))."""
    comments = scan_comments(text)
    try:
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        return None, [_diagnostic(exc, text, file)], comments
    return tree, [], comments


def scan_comments(text: str) -> list[tuple[int, str]]:
    """Comments as (line, text); a '#' inside a double-quoted string is not a comment."""
    out: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        in_string = escaped = False
        for i, ch in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "#":
                out.append((lineno, line[i:].rstrip()))
                break
    return out


def _diagnostic(exc: UnexpectedInput, text: str, file: str) -> Diagnostic:
    line, col = exc.line, exc.column
    at_end = isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    if isinstance(exc, UnexpectedEOF) or at_end or line is None or line < 1:
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        msg = "unexpected end of file"
    elif isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        ch = text[pos] if pos < len(text) else ""
        msg = f"unexpected character {ch!r}"
    elif isinstance(exc, UnexpectedToken):
        tok = exc.token
        shown = str(tok) if tok.type != "$END" else "end of file"
        msg = f"unexpected {shown!r}" if tok.type != "$END" else "unexpected end of file"
    else:  # pragma: no cover - lark has no other subclasses today
        msg = "syntax error"
    hint = _expected(exc) or None
    if hint and "'}'" in hint and msg.startswith("unexpected end"):
        hint += " (is a '}' missing?)"
    return Diagnostic("parse_error", msg, Location(file, line, col), hint=hint)
