"""Instructions per request of the 1 KB profile path, for callgrind (issue 16): the real ProxyApp and
Runtime (demo policies, SQLite consent, the decision log), the upstream replaced by a fixed answer at
UpstreamPool.request, so that it runs unchanged at 995ca0d and later commits (copy it there).

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/a.out python scripts/profile_ir.py 200
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/b.out python scripts/profile_ir.py 400
    # instructions per request = (summary of b - summary of a) / 200: start-up and warm-up cancel out

Periodic background work (consent probe, metrics flush, the decision log's interval sync) is stopped:
under valgrind a request takes ~50x longer, so it would be amortized over ~50x fewer requests than in a
real run and vary with the machine's load. ABLATE=disclose,audit,record,count,overhead removes one
piece of per-request work (measurement only: what it costs). PROF=FILE writes a cProfile of the N
requests instead.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from veil.bench.servers import fast_profile
from veil.config import Config, KeySpec, Upstream
from veil.consent.store import Action, ConsentEvent
from veil.proxy import upstream as up
from veil.proxy.app import ProxyApp
from veil.proxy.runtime import Runtime

try:
    from veil.demo import policies_dir
except ImportError:
    from veil.commands.demo import policies_dir

W = 20


def ablate(what: str, rt: Any, app: Any) -> None:
    """Measurement only: remove one piece of per-request work to see its cost."""
    try:
        from veil.policy import flow
    except ImportError:
        flow = None
    from veil import metrics
    from veil.proxy import app as appmod
    if what == "disclose":
        flow._disclose = lambda policy, out: None
    elif what == "audit":
        async def append(record: Any) -> None:
            return None
        rt.audit.append = append
    elif what == "record":
        app.rec.record = lambda *a, **k: {}
    elif what == "count":
        appmod.count = lambda *a, **k: None
    elif what == "overhead":
        class _N:
            def observe(self, v: float) -> None: pass
        metrics.overhead = lambda *a: _N()
        metrics.upstream_seconds = lambda *a: _N()
    elif what == "respheaders":
        pass
    else:
        raise SystemExit(f"unknown ablation {what}")


async def main(n: int, after: Any = None) -> None:
    prof = fast_profile()
    body = orjson.dumps(prof)
    resp_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]

    async def request(self: Any, upstream: Any, method: str, path_qs: str, headers: Any, b: Any,
                      max_bytes: int) -> Any:
        return up.UpstreamResponse(200, resp_headers, body)

    up.UpstreamPool.request = request  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="prof-drive-") as tmp:
        d = Path(tmp)
        (d / "policy").mkdir()
        for p in sorted(policies_dir().glob("*.veil")):
            (d / "policy" / p.name).write_text(p.read_text())
        keys = {}
        for name in ("store", "audit", "pseudonym", "hash"):
            p = d / f"{name}.key"
            p.write_text(hashlib.sha256(name.encode()).hexdigest())
            p.chmod(0o600)
            keys[name] = KeySpec(((name, f"file:{p}"),))
        config = Config(upstreams=(Upstream("bench", "http://upstream.invalid"),),
                        policy_paths=(str(d / "policy"),), policy_watch=False,
                        consent_url=f"sqlite:///{d / 'consent.db'}", consent_cache_ttl=3600.0,
                        audit_path=str(d / "audit" / "decisions.log"), keys=keys)
        rt = Runtime(config)
        await rt.start()
        # Measurement only: no periodic background work (the consent probe, the metrics flush, the
        # decision log's interval sync): under valgrind a request takes ~50x longer, so these would be
        # amortized over ~50x fewer requests than in a real run, and vary with the machine's load.
        for t in list(getattr(rt, "_tasks", [])):
            t.cancel()
        syncer = getattr(rt.audit, "_syncer", None)
        if syncer is not None:
            syncer.cancel()
        now = datetime.now(UTC)
        await rt.store.record([ConsentEvent(prof["id"], "personalization", Action.GIVEN,
                                            now - timedelta(days=1), notice_version=3)])
        app = ProxyApp(rt)
        for a in filter(None, os.environ.get("ABLATE", "").split(",")):
            ablate(a, rt, app)
        path = f"/customers/{prof['id']}"
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": [(b"host", b"veil.test"), (b"veil-key", b"demo-storefront-key"),
                        (b"veil-purpose", b"personalize.recommendations")],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
        }

        async def one() -> tuple[int, bytes]:
            msgs: list[dict[str, Any]] = []
            done = False

            async def receive() -> dict[str, Any]:
                nonlocal done
                if done:
                    return {"type": "http.disconnect"}
                done = True
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(m: dict[str, Any]) -> None:
                msgs.append(m)

            await app(scope, receive, send)
            return msgs[0]["status"], b"".join(m.get("body", b"") for m in msgs[1:])

        for i in range(W):
            st, out = await one()
            if i == 0:
                print("status", st, "body sha", hashlib.sha256(out).hexdigest()[:16], len(out), file=sys.stderr)
                if st != 200:
                    print(out[:400], file=sys.stderr)
            await asyncio.sleep(0)
        prof = None
        if os.environ.get("PROF"):
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        for _ in range(n):
            await one()
            await asyncio.sleep(0)
        if prof is not None:
            prof.disable()
            prof.dump_stats(os.environ["PROF"])
        if after is not None:
            await after()
        await rt.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
