"""Run a fuzz target under atheris (coverage-guided, libFuzzer).

    python -m tests.fuzz.run TARGET [--seconds N] [--corpus-out DIR] [--artifacts DIR] [libFuzzer flags]
    python -m tests.fuzz.run --all --seconds 600         # every target in turn, a longer run
    python -m tests.fuzz.run --list

The modules a target exercises (INSTRUMENT: the parser under test, and lark for the policy target)
are instrumented, so libFuzzer sees which branches an input reaches; the rest of veil loads as usual
(instrumenting everything would cost seconds of start-up per run). New interesting inputs go to
`--corpus-out` (a scratch directory by default; copy the ones worth keeping into
tests/fuzz/corpus/TARGET/); the seed corpus tests/fuzz/corpus/TARGET/ is read, never written. A
crash, an unexpected exception, a failed property or an input slower than `-timeout` (10 s) stops
the run and leaves the input as `crash-*` / `timeout-*` in `--artifacts`: add it to
tests/fuzz/regressions/TARGET/ with the fix, and test_fuzz.py replays it from then on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import atheris

# target → the modules whose branches guide it
INSTRUMENT: dict[str, list[str]] = {
    "policy": ["veil.policy", "veil.redact.paths", "lark"],
    "tcf": ["veil.consent.tcf", "veil.consent._tcf_bits"],
    "field_path": ["veil.redact.paths"],
    "config": ["veil.config", "veil.keys", "veil.proxy.forwarded", "veil.proxy.h1client"],
    "consent_import": ["veil.consent.importer"],
    "h1_response": ["veil.proxy.h1client"],
    "decode": ["veil.redact.reading"],
    "json": ["veil.redact.reading", "veil.redact.lazy"],
    "lazy_eager": ["veil.redact"],
}


def _load_targets(name: str | None) -> dict[str, object]:
    include = INSTRUMENT.get(name or "", [])
    if include:
        with atheris.instrument_imports(include=include):
            from tests.fuzz.targets import TARGETS
    else:
        from tests.fuzz.targets import TARGETS
    return dict(TARGETS)

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"


def fuzz(name: str, seconds: int, corpus_out: Path, artifacts: Path, extra: list[str]) -> None:
    """Fuzz one target in this process (libFuzzer exits the process when it is done)."""
    targets = _load_targets(name)
    corpus_out.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], str(corpus_out), str(CORPUS / name), f"-max_total_time={seconds}", "-timeout=10",
            "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/", "-print_final_stats=1", *extra]
    atheris.Setup(argv, targets[name])
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", choices=sorted(INSTRUMENT))
    ap.add_argument("--all", action="store_true", help="fuzz every target in turn (one process each)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--corpus-out", type=Path, default=None)
    ap.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    args, extra = ap.parse_known_args()
    if args.list:
        print("\n".join(sorted(INSTRUMENT)))
        return 0
    if args.all:
        failed = []
        for name in sorted(INSTRUMENT):
            print(f"== {name} ({args.seconds} s)", flush=True)
            rc = subprocess.call([sys.executable, "-m", "tests.fuzz.run", name, "--seconds", str(args.seconds),
                                  "--artifacts", str(args.artifacts), *extra])
            if rc != 0:
                failed.append(name)
        print("failed: " + ", ".join(failed) if failed else "all targets ran clean")
        return 1 if failed else 0
    if args.target is None:
        ap.error("name a target, or --all, or --list")
    out = args.corpus_out or Path(tempfile.mkdtemp(prefix=f"veil-fuzz-{args.target}-"))
    fuzz(args.target, args.seconds, out, args.artifacts, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
