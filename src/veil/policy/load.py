"""Files → modules → checked, compiled policy. A policy set is a list of files and directories
(every `*.veil` file directly in a directory, sorted; subdirectories are not read) plus whatever they
`import` (relative to the importer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from veil.errors import Diagnostic, Diagnostics, Severity
from veil.location import Location
from veil.policy import ast
from veil.policy.build import build_module
from veil.policy.checks import run_checks
from veil.policy.compile import CompiledPolicy, compile_policy
from veil.policy.lint import check_plans
from veil.policy.syntax import parse_text


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The files of a policy set as given: files as they are, a directory's `*.veil` files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # A directory means the *.veil files directly in it: subdirectories (starter packs, Kubernetes'
            # hidden `..<timestamp>/` ConfigMap versions) are policy sets of their own, loaded by name.
            out.extend(sorted(q for q in p.glob("*.veil") if q.is_file() and not q.name.startswith(".")))
        else:
            out.append(p)
    return out


def load_sources(paths: Iterable[str | Path]) -> tuple[list[ast.Module], dict[str, str], list[Diagnostic]]:
    """Read and parse every file of the set (following imports). Never raises for bad input."""
    modules: list[ast.Module] = []
    sources: dict[str, str] = {}
    diags: list[Diagnostic] = []
    queue: list[tuple[Path, Location | None]] = [(p, None) for p in expand_paths(paths)]
    seen: set[Path] = set()
    while queue:
        path, origin = queue.pop(0)
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            diags.append(Diagnostic("file_unreadable", f"cannot read {name}: {reason}", origin))
            continue
        sources[name] = text
        tree, errs, comments = parse_text(text, name)
        diags.extend(errs)
        if tree is None:
            continue
        module, errs = build_module(tree, name)
        diags.extend(errs)
        if module is None:
            continue
        module = ast.Module(**{**module.__dict__, "comments": tuple(comments)})
        modules.append(module)
        for imp in module.imports:
            target = (path.parent / imp.target)
            if not target.exists():
                diags.append(Diagnostic(
                    "import_not_found", f"imported file {imp.target!r} does not exist", imp.loc,
                    hint="import paths are relative to the importing file",
                ))
                continue
            queue.extend((p, imp.loc) for p in expand_paths([target]))
    if not modules and not diags:
        diags.append(Diagnostic("policy_empty", "no .veil files found in " + ", ".join(map(str, paths))))
    return modules, sources, diags


def policy_version(sources: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(Path(name).name.encode() + b"\x00" + sources[name].encode() + b"\x00")
    return h.hexdigest()[:16]


def load_policy(
    paths: Iterable[str | Path], *, hash_key: bytes | None = None, strict_warnings: bool = False
) -> CompiledPolicy:
    """Parse, check and compile a policy set; raises Diagnostics when any error was found."""
    paths = list(paths)
    modules, sources, diags = load_sources(paths)
    if not any(d.severity is Severity.ERROR for d in diags):
        diags.extend(run_checks(modules))
    errors = [d for d in diags if d.severity is Severity.ERROR or strict_warnings]
    if errors:
        raise Diagnostics(diags, sources)
    policy = compile_policy(modules, version=policy_version(sources), hash_key=hash_key)
    # the compiled plans are asked what their statements do (statements that are silent no-ops)
    seen = {(d.code, d.location) for d in diags}
    diags.extend(d for d in check_plans(policy) if (d.code, d.location) not in seen)
    if any(d.severity is Severity.ERROR or strict_warnings for d in diags):
        raise Diagnostics(diags, sources)
    policy.warnings = [d for d in diags if d.severity is Severity.WARNING] + policy.warnings
    policy.sources = sources
    return policy
