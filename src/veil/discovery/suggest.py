"""`veil discover suggest`: policy lines for what discovery found.

For each path that looks personal and no category names: a `category` line (a new category, or the
path added to an existing one). For each finding (personal and left in clear): a statement in the
rule of its route and purpose — the category's usual form (`hash`, `mask … last 4`, `generalize …
year`, `drop`; veil.personal). The lines are checked before they are printed: the policy with them
applied (in memory) must pass every check `veil check` runs, including the schema's. A new sensitive
category that would make an existing `keep` an error (GDPR Art. 9: kept in clear without consent) is
suggested as not sensitive, with a note. `--apply` writes the changed files (canonically formatted,
comments kept).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from veil.discovery.report import PathRow, RuleReport
from veil.errors import Diagnostic, Severity
from veil.location import Location
from veil.policy import ast
from veil.policy.checks import run_checks
from veil.policy.compile import CompiledPolicy, compile_policy
from veil.policy.fmt import format_module, parse_module


@dataclass
class CategoryChange:
    name: str
    sensitive: bool
    paths: list[str]
    existing: ast.Category | None  # None: a new category
    file: str
    why: list[str] = field(default_factory=list)
    note: str | None = None

    def line(self) -> str:
        old = [p.text for p in self.existing.paths] if self.existing else []
        sensitive = self.existing.sensitive if self.existing else self.sensitive
        return f"category {self.name}{' sensitive' if sensitive else ''} = {', '.join(old + self.paths)}"


@dataclass
class StatementChange:
    route: str
    purpose: str
    text: str
    kind: str
    path: str
    args: tuple[object, ...]
    rule: ast.Rule
    file: str
    why: str


@dataclass
class Suggestions:
    categories: list[CategoryChange] = field(default_factory=list)
    statements: list[StatementChange] = field(default_factory=list)
    problems: list[Diagnostic] = field(default_factory=list)  # what the checks said (empty: it passes)
    modules: list[ast.Module] = field(default_factory=list)  # the policy with the lines applied
    changed: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.categories and not self.statements


def _why(row: PathRow) -> str:
    assert row.personal is not None
    if row.detector:
        return f"detector {row.detector}: {row.rate:.0%} of {row.stats.checked} value(s)"
    return row.personal.reason


def _statement(template: str, path: str) -> tuple[str, str, tuple[object, ...]]:
    """(text, kind, args) of a suggested statement: `mask {path} last 4` → mask, (("last", 4),)."""
    text = template.format(path=path)
    words = template.split()
    kind = words[0]
    rest = words[2:]
    if kind == "mask":
        return text, kind, tuple((rest[i], int(rest[i + 1])) for i in range(0, len(rest), 2))
    if kind == "generalize":
        return text, kind, tuple(int(w) if w.isdigit() else w for w in rest)
    return text, kind, ()


def _find_rule(modules: Sequence[ast.Module], route_key: str, purpose: str) -> tuple[ast.Module, ast.Route, ast.Rule
                                                                                          ] | None:
    method, _, template = route_key.partition(" ")
    for m in modules:
        for r in m.routes:
            if r.method == method and r.template == template:
                for rule in r.rules:
                    if any(name == purpose for name, _ in rule.purposes):
                        return m, r, rule
    return None


def plan(policy: CompiledPolicy, reports: Sequence[RuleReport]) -> Suggestions:
    out = Suggestions()
    modules = list(policy.modules)
    existing = {c.name: (m, c) for m in modules for c in m.categories}
    home = max(modules, key=lambda m: len(m.categories)).file if modules else ""
    cats: dict[str, CategoryChange] = {}
    claimed: set[str] = set()
    for rep in reports:
        for row in rep.rows:
            if row.personal is None or row.category is not None or row.path in claimed:
                continue
            claimed.add(row.path)
            name = row.personal.category
            change = cats.get(name)
            if change is None:
                m_c = existing.get(name)
                change = cats[name] = CategoryChange(
                    name, row.personal.sensitive, [], m_c[1] if m_c else None, m_c[0].file if m_c else home)
            change.paths.append(row.path)
            change.why.append(f"{row.path}: {_why(row)}")
    out.categories = list(cats.values())
    for rep in reports:
        found = _find_rule(modules, rep.route, rep.purpose)
        if found is None:
            continue
        m, _route, rule = found
        for row in rep.findings:
            assert row.personal is not None
            text, kind, args = _statement(row.personal.suggest, row.path)
            out.statements.append(StatementChange(rep.route, rep.purpose, text, kind, row.path, args, rule, m.file,
                                                  _why(row)))
    _verify(policy, out)
    if any(d.code == "sensitive_without_consent" for d in out.problems):
        for c in out.categories:
            if c.existing is None and c.sensitive:
                c.sensitive = False
                c.note = ("sensitive (GDPR Art. 9 / CCPA) by its kind, but an existing `keep` holds it in clear "
                          "for a purpose not based on consent: mark it sensitive once that keep is gone")
        _verify(policy, out)
    return out


def _verify(policy: CompiledPolicy, s: Suggestions) -> None:
    """Apply the suggestions to the policy's modules in memory and run every check on the result."""
    modules = list(policy.modules)
    changed: set[str] = set()
    for c in s.categories:
        refs = tuple(ast.PathRef(p) for p in c.paths)
        for i, m in enumerate(modules):
            if m.file != c.file:
                continue
            if c.existing is not None:
                new = dataclasses.replace(c.existing, paths=c.existing.paths + refs)
                modules[i] = _swap(m, c.existing, new)
            else:
                new = ast.Category(c.name, c.sensitive, refs)
                modules[i] = dataclasses.replace(m, categories=(*m.categories, new), order=(*m.order, new))
            changed.add(m.file)
    by_rule: dict[int, list[StatementChange]] = {}
    for st in s.statements:
        by_rule.setdefault(id(st.rule), []).append(st)
    for changes in by_rule.values():
        rule = changes[0].rule
        body = rule.body + tuple(
            ast.Stmt(ast.StmtKind(ch.kind), (ast.Target(ch.path, False),), ch.args) for ch in changes)
        new_rule = dataclasses.replace(rule, body=body)
        for i, m in enumerate(modules):
            for r in m.routes:
                if any(x is rule for x in r.rules):
                    new_route = dataclasses.replace(r, rules=tuple(new_rule if x is rule else x for x in r.rules))
                    modules[i] = _swap(m, r, new_route)
                    changed.add(m.file)
    s.modules, s.changed = modules, changed
    diags = [d for d in run_checks(modules) if d.severity is Severity.ERROR]
    if not diags:
        try:
            patched = compile_policy(modules, version=policy.version)
        except Exception as exc:  # a compile failure here is a bug in the suggestions: say so, plainly
            diags = [Diagnostic("suggestion_invalid", f"the suggested policy does not compile: {type(exc).__name__}")]
        else:
            patched.sources = policy.sources
            from veil.schema.check import check_schemas, load_schemas

            schemas, sd = load_schemas(modules)
            diags = [d for d in sd + (check_schemas(patched, schemas) if schemas else [])
                     if d.severity is Severity.ERROR]
    s.problems = diags


def _swap(m: ast.Module, old: object, new: object) -> ast.Module:
    def sub(items: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(new if x is old else x for x in items)

    return dataclasses.replace(
        m, categories=sub(m.categories), routes=sub(m.routes), order=sub(m.order))  # type: ignore[arg-type]


def render(s: Suggestions) -> str:
    lines: list[str] = []
    if s.empty:
        return "# veil discover suggest: nothing to suggest (no path looks personal and goes without a category)\n"
    verdict = ("with these lines the policy passes veil check" if not s.problems
               else f"WARNING: with these lines the policy has {len(s.problems)} error(s), listed at the end")
    lines.append(f"# veil discover suggest: {len(s.categories)} category line(s), {len(s.statements)} statement(s); "
                 f"{verdict}")
    for c in s.categories:
        where = (f"replace the line at {c.existing.loc.file}:{c.existing.loc.line} with"
                 if c.existing else f"add to {c.file}")
        lines += ["", f"# {where}:"]
        lines += [f"#   {w}" for w in c.why]
        if c.note:
            lines.append(f"#   note: {c.note}")
        lines.append(c.line())
    by_rule: dict[tuple[str, str, Location], list[StatementChange]] = {}
    for st in s.statements:
        by_rule.setdefault((st.route, ", ".join(n for n, _ in st.rule.purposes), st.rule.loc), []).append(st)
    for (route, purposes, loc), changes in by_rule.items():
        lines += ["", f"# route {route}, rule `for {purposes}` at {loc.file}:{loc.line}: add inside it"]
        for ch in changes:
            lines.append(f"    {ch.text}  # {ch.why}")
    for d in s.problems:
        lines += ["", f"# error[{d.code}] {d.location or ''}: {d.message}"]
    return "\n".join(lines) + "\n"


def apply(s: Suggestions) -> list[Path]:
    """Write every changed policy file (canonical layout; comments kept). Only when the checks pass."""
    from veil.atomic import write_text_atomically

    if s.problems:
        raise ValueError("the suggestions do not pass veil check")
    written: list[Path] = []
    for m in s.modules:
        if m.file not in s.changed:
            continue
        text = format_module(m)
        parse_module(text, m.file)  # it must parse back
        path = Path(m.file)
        write_text_atomically(path, text, mode=path.stat().st_mode & 0o7777)
        written.append(path)
    return written


__all__ = ["Suggestions", "apply", "plan", "render"]
