"""Compare veil's discovery detectors with Presidio's analyzer on the same values (not a test).

Run it in a throwaway virtualenv that has presidio-analyzer (and veil's own detector dependencies,
python-stdnum, phonenumbers, orjson), never in the project's environment:

    python -m venv /tmp/venv && /tmp/venv/bin/pip install presidio-analyzer python-stdnum orjson pyyaml
    PYTHONPATH=src /tmp/venv/bin/python scripts/compare_presidio.py [--profiles 40] [--model PATH]

Presidio's default NLP engine loads spaCy's `en_core_web_lg`, which is not on the package registry
this project's machines reach (`spacy download` fetches it from elsewhere). Without `--model`, the
script gives Presidio a blank English spaCy pipeline written to a temporary directory (tokenizer only,
no NER): its pattern recognizers (e-mail, phone, credit card, IBAN, IP, US SSN, ...) still run, the
NER-based ones (PERSON, LOCATION, NRP, DATE_TIME) find nothing. That is Presidio's cost floor.

Prints, for the string values of demo profiles (~1 KB JSON each): CPU µs per value and per profile
for veil's `Detect` and for `AnalyzerEngine.analyze`, the import/initialisation CPU time, and the
resident memory after each (Linux ru_maxrss).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from veil.demo.data import generate_customers
from veil.discovery.detectors import Detect


def strings(doc: Any) -> Iterator[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from strings(v)


def cpu(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profiles", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model", help="a spaCy pipeline (package name or directory) for Presidio")
    args = p.parse_args()
    docs = generate_customers(args.profiles)
    size = statistics.median(len(orjson.dumps(d)) for d in docs)
    values = [s for d in docs for s in strings(d)]
    per_doc = len(values) / len(docs)
    print(f"{len(docs)} profiles, median {size:.0f} B of JSON, {per_doc:.0f} string values each")
    print(f"memory before detectors: {rss_mb():.0f} MB max RSS")

    det = Detect()
    veil_s = cpu(lambda: [det(v) for v in values], args.rounds)
    veil_kinds = Counter(k for v in values if (k := det(v)))
    veil_hits = sum(veil_kinds.values())
    print(f"veil Detect: {veil_s / len(values) * 1e6:.2f} µs/value, {veil_s / len(docs) * 1e6:.0f} µs/profile "
          f"(CPU, median of {args.rounds}); {veil_hits} values flagged: {dict(veil_kinds.most_common())}")

    t0 = time.process_time()
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    model = args.model
    tmp = None
    if model is None:
        tmp = tempfile.TemporaryDirectory(prefix="presidio-blank-")
        spacy.blank("en").to_disk(tmp.name)
        model = tmp.name
    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}).create_engine()
    engine = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    engine.analyze(text="warm up jane@example.org", language="en")
    init_s = time.process_time() - t0
    print(f"presidio import + engine: {init_s:.2f} s CPU; memory now {rss_mb():.0f} MB max RSS (model: "
          f"{'blank English pipeline, no NER' if tmp else model})")
    sample = values[: max(1, len(values) // 4)]  # Presidio is slow: a quarter of the values is enough
    pres_s = cpu(lambda: [engine.analyze(text=v, language="en") for v in sample], max(1, args.rounds // 2))
    results = [engine.analyze(text=v, language="en") for v in sample]
    pres_hits = sum(1 for r in results if r)
    pres_kinds = Counter(max(r, key=lambda x: x.score).entity_type for r in results if r)
    us = pres_s / len(sample) * 1e6
    print(f"presidio analyze: {us:.0f} µs/value, {us * per_doc:.0f} µs/profile (CPU); "
          f"{pres_hits} of {len(sample)} values flagged: {dict(pres_kinds.most_common())}")
    strong = Counter(max(x, key=lambda y: y.score).entity_type
                     for r in results if (x := [y for y in r if y.score >= 0.5]))
    print(f"  of which with a score of 0.5 or more: {sum(strong.values())}: {dict(strong.most_common())}")
    veil_sample = Counter(k for v in sample if (k := det(v)))
    print(f"veil on the same {len(sample)} values: {sum(veil_sample.values())} flagged: "
          f"{dict(veil_sample.most_common())}")
    print(f"ratio presidio/veil per value: {us / (veil_s / len(values) * 1e6):.0f}x")


if __name__ == "__main__":
    main()
