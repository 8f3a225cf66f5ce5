"""Benchmark `veil consent import` (not a test): generate N consent rows as CSV, import them into
PostgreSQL and/or SQLite through the real CLI (a subprocess), print rows/s.

    .venv/bin/python scripts/import_bench.py --rows 200000
    .venv/bin/python scripts/import_bench.py --rows 1000000 --targets pg --profile

PostgreSQL: a fresh schema `veil_bench_<pid>` in --pg-url (default the test database), dropped after.
SQLite: a fresh file in the work directory. `--profile` runs the CLI under cProfile and prints the
top functions by own time. Rows: ~4 per 3 subjects, two consent keys, 1 in 10 a withdrawal, some with
expiry, notice version, jurisdiction and purposes (all synthetic).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import pstats
import random
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

KEY_ENV = "VEIL_BENCH_STORE_KEY"
HEADER = ("subject", "consent_key", "action", "at", "source", "method", "notice_version", "expires_at",
          "jurisdiction", "purposes")


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    subjects = max(1, rows * 3 // 4)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in range(rows):
            at = t0 + timedelta(seconds=rnd.randrange(60 * 86_400 * 10) + i)
            withdrawn = rnd.random() < 0.1
            expires = (at + timedelta(days=395)).isoformat() if rnd.random() < 0.3 else ""
            w.writerow((
                f"user-{rnd.randrange(subjects):09d}@example.com",
                "personalization" if rnd.random() < 0.7 else "advertising",
                "withdrawn" if withdrawn else "given",
                at.isoformat(), "crm", "web-form", rnd.choice(("", "2", "3")),
                "" if withdrawn else expires, rnd.choice(("EU", "US-CA", "")),
                "recs;email" if rnd.random() < 0.2 else "",
            ))


def run_import(url: str, path: Path, batch_size: int, profile: Path | None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the importer process, its output)."""
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "veil", "consent", "import", str(path), "--store", url, "--store-key", f"env:{KEY_ENV}",
            "--batch-size", str(batch_size), "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"import into {url.split(':', 1)[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, cpu, done.stdout.strip()


def top_costs(profile: Path, n: int = 15) -> str:
    out = io.StringIO()
    pstats.Stats(str(profile), stream=out).sort_stats("tottime").print_stats(n)
    text = out.getvalue()
    return text[text.find("   ncalls"):]


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--targets", default="pg,sqlite", help="comma-separated: pg, sqlite")
    ap.add_argument("--pg-url", default=os.environ.get("VEIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    ap.add_argument("--profile", action="store_true", help="run the import under cProfile, print top costs")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="veil-import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ[KEY_ENV] = secrets.token_hex(32)

    csv_path = work / f"consent-{args.rows}.csv"
    started = time.perf_counter()
    generate(csv_path, args.rows)
    size_mb = csv_path.stat().st_size / 1e6
    print(f"generated {args.rows} rows ({size_mb:.0f} MB) in {time.perf_counter() - started:.1f}s: {csv_path}")

    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        schema = f"veil_bench_{os.getpid()}"
        if target == "pg":
            url = f"{args.pg_url}?schema={schema}"
        elif target == "sqlite":
            url = f"sqlite:///{work / f'consent-{os.getpid()}.db'}"
        else:
            raise SystemExit(f"unknown target {target!r} (pg, sqlite)")
        profile = work / f"import-{target}.prof" if args.profile else None
        try:
            wall, cpu, out = run_import(url, csv_path, args.batch_size, profile)
        finally:
            if target == "pg":
                asyncio.run(drop_schema(args.pg_url, schema))
        m = re.search(r"\(([\d.]+) rows/s\)", out)
        reported = f", importer reports {float(m.group(1)):,.0f} rows/s" if m else ""
        print(f"{target:7s} {args.rows:>9,} rows in {wall:6.1f}s wall: {args.rows / wall:>9,.0f} rows/s{reported}; "
              f"importer CPU {cpu:.1f}s ({cpu / args.rows * 1e6:.0f} us/row)")
        if profile is not None:
            print(top_costs(profile))
        if target == "sqlite":
            Path(url[len("sqlite:///"):]).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
