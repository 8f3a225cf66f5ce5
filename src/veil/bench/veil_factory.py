"""The veil rows of `veil bench`: a veil.yaml, the policies, keys and seeded consent for each variant
(enforce a 1 KB profile, with the default decision-log durability, with `audit.fsync: always`, and
with the decision log shipped to PostgreSQL; report-only, without and with discovery: the example
policies; enforce a list of the shape corpus with per-item consent: the shape's own policy set, its
consented subjects given and the others withdrawn, as veil.bench.shapes chose them for the seed).

Row 3s ships to `VEIL_BENCH_PG_URL` (postgresql://...?schema=NAME: a schema of its own, which the
row creates and leaves behind); without it the row is skipped with that hint."""

from __future__ import annotations

import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from veil.bench import VeilCase, VeilSetup
from veil.bench.servers import free_port
from veil.config import load_config
from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import Action, ConsentEvent, SubjectHasher
from veil.demo import policies_dir
from veil.errors import VeilError
from veil.keys import write_private_file

HEADERS = (("Veil-Key", "demo-storefront-key"), ("Veil-Purpose", "personalize.recommendations"))


def factory(case: VeilCase) -> VeilSetup:
    d = case.workdir
    keys = {}
    for name in ("store", "audit", "pseudonym", "hash"):
        p = d / "keys" / f"{name}.key"
        write_private_file(p, secrets.token_hex(32))
        keys[name] = f"file:{p}"
    shape = case.shape
    if case.variant == "enforce_list" and shape is None:
        raise VeilError("the enforce_list variant serves a shape of the corpus: none was given", code="bench_usage")
    policy_paths = [str(policies_dir())]
    if shape is not None:
        folder = d / "policy"
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in shape.policy_files.items():
            (folder / name).write_text(text, encoding="utf-8")
        policy_paths = [str(folder)]
    cfg = {
        "listen": {"proxy": f"127.0.0.1:{case.proxy_port}", "admin": f"127.0.0.1:{case.admin_port}"},
        "mode": "report-only" if case.variant.startswith("report_only") else "enforce",
        "upstreams": {"bench": {"url": case.upstream_url, "pool_size": 64}},
        "policy": {"paths": policy_paths, "watch": False},
        "consent": {"url": f"sqlite:///{d / 'consent.db'}", "cache_ttl": 30.0},
        "audit": {"path": str(d / "audit" / "decisions.log"),
                  **({"fsync": "always"} if case.variant == "enforce_small_fsync" else {}),
                  **({"ship": {"url": _ship_url(), "replica": "bench"}} if case.variant == "enforce_small_ship"
                     else {}),
                  **({"ship": {"url": _ship_url(), "replica": "bench-sidecar", "shipper": "sidecar"}}
                     if case.variant == "enforce_small_ship_sidecar" else {})},
        "keys": keys,
        # every response examined (the worst case: production would sample)
        **({"discovery": {"sample": 1.0, "state": str(d / "discovery.json")}}
           if case.variant == "report_only_discovery" else {}),
    }
    path = d / "veil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path)
    db, hasher = Path(config.consent_url[len("sqlite:///"):]), SubjectHasher(config.keyring("store"))
    if shape is not None:
        given = [s for s in dict.fromkeys(shape.subjects) if s in shape.consented]
        withdrawn = [s for s in dict.fromkeys(shape.subjects) if s not in shape.consented]
        _seed(db, hasher, given, shape.consent_key, withdrawn)
        return VeilSetup(path, shape.path, shape.headers)
    _seed(db, hasher, [case.profile_id])
    sidecars: tuple[tuple[str, tuple[str, ...], str], ...] = ()
    if case.variant == "enforce_small_ship_sidecar":  # `veil audit ship` beside veil, as in a pod
        port = free_port()
        argv = (sys.executable, "-m", "veil", "audit", "ship", "--config", str(path), "--metrics", f"127.0.0.1:{port}")
        sidecars = (("veil-audit-ship", argv, f"http://127.0.0.1:{port}/metrics"),)
    return VeilSetup(path, f"/customers/{case.profile_id}", HEADERS, sidecars=sidecars)


def _ship_url() -> str:
    url = os.environ.get("VEIL_BENCH_PG_URL")
    if not url:
        raise VeilError("set VEIL_BENCH_PG_URL=postgresql://...?schema=NAME to ship the log (rows 3s and 3c)",
                        code="bench_usage")
    return url


def _seed(db: Path, hasher: SubjectHasher, subjects: list[str], key: str = "personalization",
          withdrawn: list[str] | None = None) -> None:
    import asyncio

    async def go() -> None:
        store = SqliteConsentStore(db, hasher)
        now = datetime.now(UTC)
        events = [ConsentEvent(s, key, Action.GIVEN, now, notice_version=3) for s in subjects]
        events += [ConsentEvent(s, key, Action.WITHDRAWN, now, notice_version=3) for s in withdrawn or ()]
        await store.record(events)
        await store.close()

    asyncio.run(go())
