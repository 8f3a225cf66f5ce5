"""Run veil's schema tools over public OpenAPI documents of real APIs (not a test; nothing is downloaded).

    PYTHONPATH=src .venv/bin/python scripts/check_public_specs.py SPEC... [--work DIR] [--json]

Each SPEC is an OpenAPI file already on disk (a document split over several files is read from its
root file; its relative `$ref`s must be next to it). docs/onboarding.md names the documents and
commits the published table came from, and how they were brought here. For each document:

1. load it in process: version, operations (GET ones), component schemas, response field locations
   of the GET operations (veil.schema.reach.locations), problems (parts skipped with a warning);
2. `veil init --openapi SPEC --out WORK/<name>/starter`: routes written, routes not written (and why),
   subjects guessed, categories suggested;
3. `veil check` and `veil check --strict` and `veil fmt --check` on that starter set;
4. a small policy (WORK/<name>/probe/probe.veil) for up to three GET routes with response fields:
   `keep` two real top-level fields of each and, on the first, one name with a letter dropped; then
   `veil check --schema SPEC` must report exactly that name, at its line and column, with a hint
   (an error, or the warning `path_not_named` where the object allows other keys);
5. `veil coverage` on the starter set (JSON): fields listed, those flagged personal and in clear.

CPU seconds are the child process's user+system time (the CLI's import included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from veil.schema.openapi import load_api
from veil.schema.reach import locations

ROOT = Path(__file__).resolve().parents[1]


def veil(*args: str) -> tuple[int, str, float]:
    """(exit code, stdout+stderr, CPU seconds of the child)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "veil", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    before = _children_cpu()
    out, _ = proc.communicate()
    return proc.returncode, out, _children_cpu() - before


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def inventory(spec: Path) -> dict[str, Any]:
    t0 = time.process_time()
    api = load_api(spec)
    doc = api.doc
    schemas = (doc.get("components") or {}).get("schemas") or doc.get("definitions") or {}
    gets = [op for op in api.operations if op.method == "GET"]
    fields = 0
    unreadable = 0
    for op in gets:
        try:
            found, _ = locations(api.shapes(op))
        except Exception:  # counted and reported: the point is to find such failures
            unreadable += 1
            continue
        fields += sum(1 for loc in found if loc.steps and isinstance(loc.steps[-1], str))
    return {"version": api.version, "operations": len(api.operations), "gets": len(gets),
            "schemas": len(schemas), "fields": fields, "problems": api.problems,
            "unreadable_gets": unreadable, "load_and_walk_cpu_s": round(time.process_time() - t0, 2),
            "files_read": len(api.read_files())}


def probe_policy(spec: Path, starter_routes: str) -> tuple[str, str] | None:
    """(policy text, the misspelt name) from routes of the starter whose operation has named fields."""
    api = load_api(spec)
    routes = re.findall(r"^route GET (\S+) \{", starter_routes, re.M)
    blocks: list[str] = []
    typo = ""
    for tpl in routes:
        ops = api.operations_for("GET", tpl)
        if not ops:
            continue
        found, _ = locations(api.shapes(ops[0]), max_depth=1)
        names = sorted({str(loc.steps[0]) for loc in found if len(loc.steps) == 1 and isinstance(loc.steps[0], str)
                        and re.fullmatch(r"[a-z_][a-z0-9_]*", str(loc.steps[0])) and len(str(loc.steps[0])) > 4})
        if len(names) < 3:
            continue
        keeps = names[:2]
        if not typo:
            real = names[2]
            typo = real[:2] + real[3:]  # a letter dropped: `created` → `crated`
            if typo in names:
                continue
            keeps.append(typo)
        blocks.append(f"route GET {tpl} {{\n  for probe.read {{\n    keep {', '.join(keeps)}\n  }}\n}}\n")
        if len(blocks) == 3:
            break
    if not typo:
        return None
    head = (f'policy "probe" version "1"\n\nschema {json.dumps(str(spec.resolve()))}\n\n'
            'purpose probe.read {\n  description "Reading a few fields"\n  basis contract\n}\n\n')
    return head + "\n".join(blocks), typo


def run(spec: Path, work: Path) -> dict[str, Any]:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.stem)
    out = work / name
    starter = out / "starter"
    row: dict[str, Any] = {"spec": str(spec), **inventory(spec)}
    code, text, cpu = veil("init", "--openapi", str(spec), "--out", str(starter), "--force")
    row["init"] = {"exit": code, "cpu_s": round(cpu, 2), "said": text.strip().splitlines()[-1:]}
    if code != 0:
        row["init"]["output"] = text[-2000:]
        return row
    routes_text = (starter / "routes.veil").read_text()
    row["routes"] = len(re.findall(r"^route ", routes_text, re.M))
    row["not_routed"] = re.findall(r"^# GET .*?: (.*)$", routes_text, re.M)
    row["subjects"] = len(re.findall(r"^\s*subject path\.", routes_text, re.M))
    row["query_subjects"] = len(re.findall(r"^\s*subject query\.", routes_text, re.M))
    row["each"] = len(re.findall(r"^\s*each ", routes_text, re.M))
    cats = re.findall(r"^category (\S+)( sensitive)? = (.*)$", (starter / "categories.veil").read_text(), re.M)
    row["categories"] = {c: paths for c, _s, paths in cats}
    for label, args in (("check", ()), ("check_strict", ("--strict",))):
        code, text, cpu = veil("check", *args, str(starter))
        row[label] = {"exit": code, "cpu_s": round(cpu, 2), "summary": text.strip().splitlines()[-1:]}
    code, text, cpu = veil("fmt", "--check", str(starter))
    row["fmt_check"] = {"exit": code, "cpu_s": round(cpu, 2)}
    code, text, cpu = veil("coverage", "--format", "json", str(starter))
    cov: dict[str, Any] = {"exit": code, "cpu_s": round(cpu, 2)}
    try:
        report = json.loads(text[text.index("{"):])
        rules = report["rules"]
        cov["rules"] = len(rules)
        cov["fields"] = sum(len(r["fields"]) for r in rules)
        cov["fates"] = sorted({f["fate"] for r in rules for f in r["fields"]})
        cov["personal"] = sum(1 for r in rules for f in r["fields"] if f["personal"])
        cov["personal_in_clear"] = sum(len(r["personal_in_clear"]) for r in rules)
        cov["truncated"] = sum(1 for r in rules if r["truncated"])
        cov["routes_without_operation"] = len(report["routes_without_operation"])
    except ValueError:
        cov["output"] = text[-1500:]
    row["coverage"] = cov
    probe = probe_policy(spec, routes_text)
    if probe is not None:
        text_p, typo = probe
        (out / "probe").mkdir(parents=True, exist_ok=True)
        pfile = out / "probe" / "probe.veil"
        pfile.write_text(text_p)
        code, text, cpu = veil("check", "--format", "json", "--schema", str(spec), str(pfile))
        diags = json.loads(text[text.index("{"):])["diagnostics"]
        found = [d for d in diags if d["code"] in ("path_not_in_schema", "path_not_named")]
        row["typo"] = {"name": typo, "exit": code, "cpu_s": round(cpu, 2),
                       "found": [f"{Path(d['file']).name}:{d['line']}:{d['col']} {d['severity']}[{d['code']}] "
                                 f"{d['message']}" + (f" ({d['hint']})" if d.get("hint") else "") for d in found],
                       "caught": len(found) == 1 and typo in found[0]["message"]}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", type=Path)
    p.add_argument("--work", type=Path, default=Path("/tmp/veil-public-specs"))
    p.add_argument("--json", action="store_true", help="print the full results as JSON")
    args = p.parse_args()
    rows = [run(spec, args.work) for spec in args.specs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| spec | version | ops (GET) | schemas | fields | init CPU s | routes | not routed | subjects | "
          "categories | check / strict / fmt | typo caught | coverage fields (personal in clear) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "routes" not in r:
            print(f"| {Path(r['spec']).name} | {r['version']} | init failed: {r['init']} |")
            continue
        typo = r.get("typo", {})
        print(f"| {Path(r['spec']).name} | {r['version']} | {r['operations']} ({r['gets']}) | {r['schemas']} | "
              f"{r['fields']} | {r['init']['cpu_s']} | {r['routes']} | {len(r['not_routed'])} | "
              f"{r['subjects']} (+{r['query_subjects']} query, {r['each']} each) | {len(r['categories'])} | "
              f"{r['check']['exit']} / {r['check_strict']['exit']} / {r['fmt_check']['exit']} | "
              f"{typo.get('caught')} {typo.get('found', [''])[0] if typo.get('found') else ''} | "
              f"{r['coverage'].get('fields')} ({r['coverage'].get('personal_in_clear')}) |")


if __name__ == "__main__":
    main()
