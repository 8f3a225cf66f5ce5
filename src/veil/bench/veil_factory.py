"""The veil rows of `veil bench`: a veil.yaml, the example policies, keys and seeded consent for each
variant (enforce a 1 KB profile, with the default decision-log durability and with `audit.fsync:
always`; enforce a 1 MB list with per-item consent; report-only, without and with discovery)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import yaml

from veil.bench import VeilCase, VeilSetup
from veil.config import load_config
from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import Action, ConsentEvent, SubjectHasher
from veil.demo import policies_dir
from veil.keys import write_private_file

HEADERS = (("Veil-Key", "demo-storefront-key"), ("Veil-Purpose", "personalize.recommendations"))


def factory(case: VeilCase) -> VeilSetup:
    d = case.workdir
    keys = {}
    for name in ("store", "audit", "pseudonym", "hash"):
        p = d / "keys" / f"{name}.key"
        write_private_file(p, secrets.token_hex(32))
        keys[name] = f"file:{p}"
    cfg = {
        "listen": {"proxy": f"127.0.0.1:{case.proxy_port}", "admin": f"127.0.0.1:{case.admin_port}"},
        "mode": "report-only" if case.variant.startswith("report_only") else "enforce",
        "upstreams": {"bench": {"url": case.upstream_url, "pool_size": 64}},
        "policy": {"paths": [str(policies_dir())], "watch": False},
        "consent": {"url": f"sqlite:///{d / 'consent.db'}", "cache_ttl": 30.0},
        "audit": {"path": str(d / "audit" / "decisions.log"),
                  **({"fsync": "always"} if case.variant == "enforce_small_fsync" else {})},
        "keys": keys,
        # every response examined (the worst case: production would sample)
        **({"discovery": {"sample": 1.0, "state": str(d / "discovery.json")}}
           if case.variant == "report_only_discovery" else {}),
    }
    path = d / "veil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path)
    if case.variant == "enforce_list":
        subjects = [s for i, s in enumerate(case.list_ids) if i % 10]  # 90% consented
    else:
        subjects = [case.profile_id]
    _seed(Path(config.consent_url[len("sqlite:///"):]), SubjectHasher(config.keyring("store")), subjects)
    req = "/customers?limit=1000" if case.variant == "enforce_list" else f"/customers/{case.profile_id}"
    return VeilSetup(path, req, HEADERS)


def _seed(db: Path, hasher: SubjectHasher, subjects: list[str]) -> None:
    import asyncio

    async def go() -> None:
        store = SqliteConsentStore(db, hasher)
        now = datetime.now(UTC)
        await store.record([ConsentEvent(s, "personalization", Action.GIVEN, now, notice_version=3)
                            for s in subjects])
        await store.close()

    asyncio.run(go())
