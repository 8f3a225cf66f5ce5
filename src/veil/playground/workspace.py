"""The policy files a playground edits, and their compilation through veil's own loader.

Edited text is compiled by `veil.policy.load_policy` — the function `veil check`, `veil test` and the
proxy use — on a private mirror of the policy set in a temporary directory (same relative layout, so
imports resolve as on disk). Locations in what it reports are mapped back to the files' own names.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.atomic import write_text_atomically
from veil.errors import Diagnostic, Diagnostics, Severity, VeilError
from veil.location import Location
from veil.policy import load_policy, load_sources
from veil.policy.compile import CompiledPolicy


class WorkspaceError(VeilError):
    code = "playground_invalid"


@dataclass
class Compiled:
    """One compilation of the editor's texts: the policy (None when it has errors) and every finding,
    located in the workspace's own file names."""

    policy: CompiledPolicy | None
    diagnostics: list[Diagnostic]
    names: dict[str, str] = field(default_factory=dict)  # mirror file name → workspace name

    def where(self, loc: Location | None) -> Location | None:
        if loc is None:
            return None
        return Location(self.names.get(loc.file, loc.file), loc.line, loc.col, loc.end_line, loc.end_col)

    def diagnostics_json(self) -> list[dict[str, Any]]:
        out = []
        for d in sorted(self.diagnostics, key=Diagnostic.sort_key):
            loc = self.where(d.location)
            out.append({
                "code": d.code, "severity": d.severity.value, "message": d.message, "hint": d.hint,
                "file": loc.file if loc else None, "line": loc.line if loc else None,
                "col": loc.col if loc else None, "end_line": loc.end_line if loc else None,
                "end_col": loc.end_col if loc else None,
                "text": d.render(),
            })
        return out


class Workspace:
    """The files of a policy set (as `veil check PATH...` reads them, imports included)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        _, sources, diags = load_sources(self.paths)
        unreadable = [d for d in diags if d.code in ("file_unreadable", "policy_empty")]
        if unreadable or not sources:
            raise WorkspaceError("; ".join(d.message for d in unreadable) or "no policy files found")
        self.names = sorted(sources)  # as the loader names them (paths as given on the command line)
        self.disk: dict[str, str] = dict(sources)
        self.root = Path(os.path.commonpath([str(Path(n).resolve().parent) for n in self.names]))
        self._cache: tuple[str, Compiled] | None = None

    def files(self) -> dict[str, str]:
        return {n: self.disk[n] for n in self.names}

    def _check(self, texts: Mapping[str, str]) -> None:
        unknown = set(texts) - set(self.names)
        if unknown:
            raise WorkspaceError(f"not a file of this policy set: {sorted(unknown)[0]}")

    def compile(self, texts: Mapping[str, str]) -> Compiled:
        """Compile the set with `texts` in place of the files they name (the others as on disk)."""
        self._check(texts)
        merged = {**self.disk, **texts}
        digest = hashlib.sha256(repr(sorted(merged.items())).encode()).hexdigest()
        if self._cache is not None and self._cache[0] == digest:
            return self._cache[1]
        with tempfile.TemporaryDirectory(prefix="veil-playground-") as tmp:
            mirror = Path(tmp)
            names: dict[str, str] = {}
            for name, text in merged.items():
                target = mirror / Path(name).resolve().relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
                names[str(target)] = name
            given = [mirror / p.resolve().relative_to(self.root) for p in self.paths]
            try:
                policy = load_policy(given)
            except Diagnostics as exc:
                result = Compiled(None, list(exc.items), names)
            else:
                result = Compiled(policy, list(policy.warnings), names)
        self._cache = (digest, result)
        return result

    def save(self, texts: Mapping[str, str]) -> list[str]:
        """Write edited files back (atomically); only files of the set, only when changed."""
        self._check(texts)
        written = []
        for name, text in texts.items():
            if self.disk.get(name) == text:
                continue
            write_text_atomically(Path(name), text, mode=0o644)
            self.disk[name] = text
            written.append(name)
        return written


def errors_of(compiled: Compiled) -> list[Diagnostic]:
    return [d for d in compiled.diagnostics if d.severity is Severity.ERROR]


__all__ = ["Compiled", "Workspace", "WorkspaceError", "errors_of"]
