"""Parse tree → AST (a lark Transformer into frozen dataclasses, every node located)."""

from __future__ import annotations

import json
from typing import Any

from lark import Token, Transformer, Tree, v_args
from lark.exceptions import VisitError
from lark.tree import Meta

from veil.errors import Diagnostic, VeilError
from veil.location import Location
from veil.policy import ast
from veil.policy.ast import StmtKind


class _BuildError(VeilError):
    """A problem found while building the AST; carried out as its Diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message, code=diagnostic.code)
        self.diagnostic = diagnostic


def _unquote(tok: Token, file: str) -> str:
    try:
        value = json.loads(str(tok))
    except ValueError as exc:
        raise _BuildError(
            Diagnostic(
                "bad_string", "invalid escape in string", _tok_loc(tok, file),
                hint='use JSON escapes: \\" \\\\ \\n \\t \\uXXXX',
            )
        ) from exc
    assert isinstance(value, str)
    return value


def _tok_loc(tok: Token, file: str) -> Location:
    return Location(file, tok.line or 0, tok.column or 0, tok.end_line, tok.end_column)


@v_args(meta=True)
class _Builder(Transformer[Token, Any]):
    def __init__(self, file: str) -> None:
        super().__init__(visit_tokens=False)
        self.file = file

    def _loc(self, meta: Meta) -> Location:
        if getattr(meta, "empty", True):
            return Location(self.file, 0, 0)
        return Location(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _s(self, tok: Token) -> str:
        return _unquote(tok, self.file)

    # ------------------------------------------------------------ file level
    def start(self, meta: Meta, items: list[Any]) -> ast.Module:
        header = next((i for i in items if isinstance(i, ast.Header)), None)
        return ast.Module(
            file=self.file,
            header=header,
            imports=tuple(i for i in items if isinstance(i, ast.Import)),
            purposes=tuple(i for i in items if isinstance(i, ast.Purpose)),
            categories=tuple(i for i in items if isinstance(i, ast.Category)),
            callers=tuple(i for i in items if isinstance(i, ast.Caller)),
            routes=tuple(i for i in items if isinstance(i, ast.Route)),
            notices=tuple(i for i in items if isinstance(i, ast.Notice)),
            schemas=tuple(i for i in items if isinstance(i, ast.SchemaRef)),
            order=tuple(items),
        )

    def header(self, meta: Meta, c: list[Token]) -> ast.Header:
        return ast.Header(self._s(c[0]), self._s(c[1]) if len(c) > 1 else None, self._loc(meta))

    def import_(self, meta: Meta, c: list[Token]) -> ast.Import:
        return ast.Import(self._s(c[0]), self._loc(meta))

    def schema_(self, meta: Meta, c: list[Token]) -> ast.SchemaRef:
        return ast.SchemaRef(self._s(c[0]), self._loc(meta))

    # ------------------------------------------------------------ purposes
    def purpose(self, meta: Meta, c: list[Any]) -> ast.Purpose:
        return ast.Purpose(str(c[0]), tuple(c[1:]), self._loc(meta))

    def _attr(self, name: str, meta: Meta, values: list[Any]) -> ast.Attr:
        return ast.Attr(name, tuple(values), self._loc(meta))

    def p_description(self, meta: Meta, c: list[Token]) -> ast.Attr:
        if len(c) == 2:  # description de "..."
            return self._attr(f"description.{c[0]}", meta, [self._s(c[1])])
        return self._attr("description", meta, [self._s(c[0])])

    def _text(self, name: str, meta: Meta, c: list[Token]) -> ast.Attr:
        if len(c) == 2:  # profiling_logic de "..."
            return self._attr(f"{name}.{c[0]}", meta, [self._s(c[1])])
        return self._attr(name, meta, [self._s(c[0])])

    def p_logic(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._text("profiling_logic", meta, c)

    def p_effects(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._text("profiling_effects", meta, c)

    def p_decisions(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._text("automated_decisions", meta, c)

    def p_decisions_word(self, meta: Meta, c: list[Token]) -> ast.Attr:  # `none` (checks says otherwise)
        return self._attr("automated_decisions", meta, [ast.Ident(str(c[0]))])

    def p_basis(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("basis", meta, [str(c[0])])

    def p_consent(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("consent", meta, [self._s(c[0])])

    def p_retention(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("retention", meta, [ast.Duration(int(c[0]), str(c[1]), self._loc(meta))])

    def p_recipients(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("recipients", meta, [self._s(t) for t in c])

    def p_processing(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("processing", meta, [str(t) for t in c])

    def p_gpc(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("gpc", meta, [str(c[0])])

    def p_max_age(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("consent_max_age", meta, [ast.Duration(int(c[0]), str(c[1]), self._loc(meta))])

    def p_notice(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("notice_version", meta, [int(c[0])])

    def p_sources(self, meta: Meta, c: list[Token]) -> ast.Attr:
        return self._attr("consent_from", meta, [str(t) for t in c])

    def p_tcf(self, meta: Meta, c: list[tuple[str, tuple[int, ...]]]) -> ast.Attr:
        return self._attr("tcf", meta, list(c))

    def tcf_purposes(self, meta: Meta, c: list[Token]) -> tuple[str, tuple[int, ...]]:
        return ("purposes", tuple(int(t) for t in c))

    def tcf_features(self, meta: Meta, c: list[Token]) -> tuple[str, tuple[int, ...]]:
        return ("special_features", tuple(int(t) for t in c))

    def tcf_li(self, meta: Meta, c: list[Token]) -> tuple[str, tuple[int, ...]]:
        return ("legitimate_interest", ())

    # ------------------------------------------------------------ notice
    def notice(self, meta: Meta, c: list[ast.Attr]) -> ast.Notice:
        return ast.Notice(tuple(c), self._loc(meta))

    def n_attr(self, meta: Meta, c: list[Token]) -> ast.Attr:
        values = [self._s(t) if t.type == "STRING" else ast.Ident(str(t)) for t in c[1:]]
        return self._attr(str(c[0]), meta, values)

    # ------------------------------------------------------------ categories
    def category(self, meta: Meta, c: list[Token]) -> ast.Category:
        name, rest = str(c[0]), c[1:]
        sensitive = bool(rest) and rest[0].type == "SENSITIVE"
        if sensitive:
            rest = rest[1:]
        paths = tuple(ast.PathRef(str(t), _tok_loc(t, self.file)) for t in rest)
        return ast.Category(name, sensitive, paths, self._loc(meta))

    # ------------------------------------------------------------ callers
    def caller(self, meta: Meta, c: list[Any]) -> ast.Caller:
        name, attrs = str(c[0]), c[1:]
        desc = next((a[1] for a in attrs if a[0] == "description"), None)
        keys = tuple(a[1] for a in attrs if a[0] == "key")
        may = tuple(m for a in attrs if a[0] == "may" for m in a[1])
        vendor = next((a[1] for a in attrs if a[0] == "vendor"), None)
        certs = tuple(a[1] for a in attrs if a[0] == "cert")
        layout = tuple((a[0], a[2]) for a in attrs)
        return ast.Caller(name, desc, keys, may, vendor, certs, self._loc(meta), layout)

    def c_description(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("description", self._s(c[0]), self._loc(meta))

    def c_key_hash(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        loc = self._loc(meta)
        return ("key", ast.CallerKey("sha256", str(c[0]).split(":", 1)[1].lower(), loc), loc)

    def c_key_env(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("key", ast.CallerKey("env", str(c[0]), self._loc(meta)), self._loc(meta))

    def c_key_file(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("key", ast.CallerKey("file", self._s(c[0]), self._loc(meta)), self._loc(meta))

    def c_key_plain(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("key", ast.CallerKey("plain", self._s(c[0]), self._loc(meta)), self._loc(meta))

    def c_may(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("may", tuple((str(t), _tok_loc(t, self.file)) for t in c), self._loc(meta))

    def c_vendor(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("vendor", int(c[0]), self._loc(meta))

    def c_cert(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("cert", self._s(c[0]), self._loc(meta))

    # ------------------------------------------------------------ routes
    def route(self, meta: Meta, c: list[Any]) -> ast.Route:
        method, template, attrs = str(c[0]), str(c[1]), c[2:]
        subject = each = upstream = mode = schema = None
        subject_loc = mode_loc = ast.NOWHERE
        rules = []
        layout: list[tuple[str, Location]] = []
        for a in attrs:
            layout.append(("rule", a.loc) if isinstance(a, ast.Rule) else (a[0], a[-1]))
            if isinstance(a, ast.Rule):
                rules.append(a)
            elif a[0] == "subject":
                subject, subject_loc = a[1], a[2]
            elif a[0] == "each":
                each = a[1]
            elif a[0] == "upstream":
                upstream = a[1]
            elif a[0] == "mode":
                mode, mode_loc = a[1], a[2]
            elif a[0] == "schema":
                schema = a[1]
        return ast.Route(
            method, template, subject, each, upstream, mode, tuple(rules), self._loc(meta),
            subject_loc, mode_loc, tuple(layout), schema,
        )

    def r_subject(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        source, _, name = str(c[0]).partition(".")
        return ("subject", (source, name), _tok_loc(c[0], self.file))

    def r_each(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("each", (ast.PathRef(str(c[0]), _tok_loc(c[0], self.file)),
                         ast.PathRef(str(c[1]), _tok_loc(c[1], self.file))), self._loc(meta))

    def r_upstream(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("upstream", str(c[0]), self._loc(meta))

    def r_mode(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        return ("mode", str(c[0]), self._loc(meta))

    def r_schema(self, meta: Meta, c: list[Token]) -> tuple[str, Any, Location]:
        loc = self._loc(meta)
        return ("schema", ast.SchemaRef(self._s(c[0]), loc), loc)

    def rule(self, meta: Meta, c: list[Any]) -> ast.Rule:
        purposes = tuple((str(t), _tok_loc(t, self.file)) for t in c if isinstance(t, Token))
        body = tuple(s for s in c if isinstance(s, ast.Stmt))
        return ast.Rule(purposes, body, self._loc(meta))

    # ------------------------------------------------------------ statements
    def target(self, meta: Meta, c: list[Token]) -> ast.Target:
        return ast.Target(str(c[0]), False, self._loc(meta))

    def category_ref(self, meta: Meta, c: list[Token]) -> ast.Target:
        return ast.Target(str(c[0]), True, self._loc(meta))

    def _stmt(self, kind: StmtKind, meta: Meta, c: list[Any]) -> ast.Stmt:
        targets = tuple(x for x in c if isinstance(x, ast.Target))
        args = tuple(x for x in c if not isinstance(x, ast.Target))
        return ast.Stmt(kind, targets, args, self._loc(meta))

    def s_keep(self, meta: Meta, c: list[Any]) -> ast.Stmt:
        return self._stmt(StmtKind.KEEP, meta, c)

    def s_drop(self, meta: Meta, c: list[Any]) -> ast.Stmt:
        return self._stmt(StmtKind.DROP, meta, c)

    def s_hash(self, meta: Meta, c: list[Any]) -> ast.Stmt:
        return self._stmt(StmtKind.HASH, meta, c)

    def s_mask(self, meta: Meta, c: list[Any]) -> ast.Stmt:
        return self._stmt(StmtKind.MASK, meta, c)

    def mask_arg(self, meta: Meta, c: list[Token]) -> tuple[str, int]:
        return (str(c[0]), int(c[1]))

    def s_null(self, meta: Meta, c: list[Any]) -> ast.Stmt:
        return self._stmt(StmtKind.NULL, meta, c)

    def s_replace(self, meta: Meta, c: list[Any]) -> ast.Stmt:
        return self._stmt(StmtKind.REPLACE, meta, c)

    def s_generalize(self, meta: Meta, c: list[Any]) -> ast.Stmt:
        targets = tuple(x for x in c if isinstance(x, ast.Target))
        rest = [x for x in c if not isinstance(x, ast.Target)]
        args: list[Any] = [str(rest[0])]
        if len(rest) > 1:
            tok = rest[1]
            args.append(int(tok) if tok.type == "INT" else str(tok))
        return ast.Stmt(StmtKind.GENERALIZE, targets, tuple(args), self._loc(meta))

    def s_suppress(self, meta: Meta, c: list[Token]) -> ast.Stmt:
        lst = ast.Target(str(c[0]), False, _tok_loc(c[0], self.file))
        cnt = ast.Target(str(c[1]), False, _tok_loc(c[1], self.file))
        return ast.Stmt(StmtKind.SUPPRESS, (lst, cnt), (int(c[2]),), self._loc(meta))

    def s_require_consent(self, meta: Meta, c: list[Token]) -> ast.Stmt:
        return ast.Stmt(StmtKind.REQUIRE_CONSENT, (), tuple(self._s(t) for t in c), self._loc(meta))

    def s_require_caller(self, meta: Meta, c: list[Token]) -> ast.Stmt:
        return ast.Stmt(StmtKind.REQUIRE_CALLER, (), tuple(str(t) for t in c), self._loc(meta))

    def s_respect_gpc(self, meta: Meta, c: list[Token]) -> ast.Stmt:
        return ast.Stmt(StmtKind.RESPECT_GPC, (), (), self._loc(meta))

    def s_block(self, meta: Meta, c: list[Token]) -> ast.Stmt:
        return ast.Stmt(StmtKind.BLOCK, (), (self._s(c[0]),), self._loc(meta))

    # ------------------------------------------------------------ values
    def v_string(self, meta: Meta, c: list[Token]) -> str:
        return self._s(c[0])

    def v_number(self, meta: Meta, c: list[Token]) -> int | float:
        text = str(c[0])
        return int(text) if text.lstrip("-").isdigit() else float(text)

    def v_true(self, meta: Meta, c: list[Token]) -> bool:
        return True

    def v_false(self, meta: Meta, c: list[Token]) -> bool:
        return False

    def v_null(self, meta: Meta, c: list[Token]) -> None:
        return None


def build_module(tree: Tree[Token], file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    try:
        module = _Builder(file).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, _BuildError):
            return None, [exc.orig_exc.diagnostic]
        if isinstance(exc.orig_exc, ValueError):  # int() of a number with thousands of digits
            meta = getattr(exc.obj, "meta", None)
            line, col = getattr(meta, "line", 0), getattr(meta, "column", 0)
            return None, [Diagnostic("number_invalid", "a number is too large", Location(file, line, col),
                                     hint="numbers in a policy have at most a few digits")]
        raise
    assert isinstance(module, ast.Module)
    return module, []
