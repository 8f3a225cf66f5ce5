"""Policy test cases run through the whole proxy app, in-process: the real ProxyApp and Runtime (policy
files loaded as `veil serve` loads them, the real SQLite consent store seeded with the case's consent,
the real decision log), with only the upstream replaced by a MemoryTransport that answers with the
case's response. What the case expects is checked against what the proxy sent and logged.

`veil test` runs the same case through the same flow (veil.policy.testing); running both makes a case
that passes in one and fails in the other visible at once. Wire behaviour is tested on sockets in
tests/e2e.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from veil.config import Config as VeilConfig
from veil.config import FlowSettings, KeySpec, Upstream
from veil.consent.store import Action, ConsentEvent, Status
from veil.location import Location
from veil.policy.cases import Case, View, check_expectations
from veil.policy.compile import DEV_HASH_KEY
from veil.policy.testing import caller_view, request_facts
from veil.proxy.app import ProxyApp
from veil.proxy.runtime import Runtime
from veil.proxy.upstream import MemoryTransport, UpstreamRequest, UpstreamResponse

# Expectations the proxy cannot be asked: `rules` lists the statements behind a decision, which only an
# explanation computes (`veil explain`, `veil test`); the proxy logs the rule and the statements that
# dropped or transformed fields.
NOT_ON_THE_WIRE = ("rules",)


def _key_file(directory: Path, name: str, material: bytes) -> KeySpec:
    p = directory / f"{name}.key"
    p.write_bytes(material)
    p.chmod(0o600)
    return KeySpec(((name, f"file:{p}"),))


def config_for(directory: Path, policy_paths: list[Path]) -> VeilConfig:
    """A veil config for an in-process run: the case's policy, its own store, log and keys (the hash
    key is the development key `veil test` uses, so hashed values match)."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {name: _key_file(directory, name, secrets.token_hex(32).encode())
            for name in ("store", "audit", "pseudonym")}
    keys["hash"] = _key_file(directory, "hash", DEV_HASH_KEY)
    return VeilConfig(
        upstreams=(Upstream("case", "http://upstream.invalid"),),
        policy_paths=tuple(map(str, policy_paths)), policy_watch=False,
        consent_url=f"sqlite:///{directory / 'consent.db'}", consent_cache_ttl=0.0,
        audit_path=str(directory / "audit" / "decisions.log"), audit_fsync="never", keys=keys,
    )


def _subjects(case: Case) -> Iterator[str]:
    """Every value that could be a subject of this case (for consent given to `*`)."""
    req = case.request
    path, _, query = req.path.partition("?")
    yield from (s for s in path.split("/") if s)
    for part in query.split("&"):
        yield part.partition("=")[2]
    yield from (v for _, v in req.headers)
    for doc in (case.response.body, orjson.loads(req.body) if req.body and req.body[:1] in b"[{" else None):
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
            elif isinstance(node, str | int) and not isinstance(node, bool):
                yield str(node)


def consent_events(case: Case) -> list[ConsentEvent]:
    """The case's consent as events in the store (a state `expired` is consent that has run out)."""
    assert case.consent is not None
    out: list[ConsentEvent] = []
    wildcard = case.consent.get("*")
    subjects = dict(case.consent)
    if wildcard is not None:
        for s in dict.fromkeys(_subjects(case)):
            subjects.setdefault(s, wildcard)
        subjects.pop("*", None)
    for subject, states in subjects.items():
        for key, st in states.items():
            if st.status is Status.MISSING:
                continue
            at = st.at or case.now
            expires = st.expires_at
            if st.status is Status.EXPIRED and (expires is None or expires > case.now):
                expires = case.now - timedelta(seconds=1)
                at = min(at, expires - timedelta(seconds=1))
            action = Action.WITHDRAWN if st.status is Status.WITHDRAWN else Action.GIVEN
            out.append(ConsentEvent(subject, key, action, at, source=st.source or "case", method="case",
                                    notice_version=st.notice_version, expires_at=expires))
    return out


async def asgi_call(app: ProxyApp, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
                    ) -> tuple[int, dict[str, str], bytes]:
    """One request straight through the ASGI interface (no client library normalizing the path)."""
    raw_path, _, query = target.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": raw_path, "raw_path": raw_path.encode("utf-8"), "query_string": query.encode("utf-8"),
        "headers": [(b"host", b"veil.test"), *headers]
        + ([(b"content-length", str(len(body)).encode())] if body else []),
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
    }
    sent = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        messages.append(msg)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    out_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    data = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], out_headers, data


@dataclass
class ProxyResult:
    view: View
    record: dict[str, Any] | None
    upstream_called: bool
    failures: list[str]


def _record(path: Path, decision_id: str) -> dict[str, Any] | None:
    for f in sorted(path.parent.glob("decisions*.log")):
        for line in f.read_bytes().splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("id") == decision_id:
                return rec
    return None


async def run_through_proxy(policy_paths: list[Path], case: Case, directory: Path) -> ProxyResult:
    """`case` sent to a ProxyApp; its expectations checked against the response and the decision record."""
    cfg = config_for(directory, policy_paths)
    answer = case.response

    def upstream(req: UpstreamRequest) -> UpstreamResponse:
        return UpstreamResponse(answer.status, answer.header_list(), answer.payload())

    transport = MemoryTransport(upstream)
    rt = Runtime(cfg, transports={"case": transport}, clock=lambda: case.now)
    await rt.start()
    try:
        policy = rt.policy.current
        assert policy is not None
        view, token = caller_view(policy, case.request.caller, case.request.key)
        rt.policy.current = view  # a named caller gets a throw-away key, as in `veil test`
        if case.consent is not None:
            await rt.store.record(consent_events(case))
        facts = request_facts(case.request, token, FlowSettings())
        status, headers, body = await asgi_call(ProxyApp(rt), case.request.method, case.request.path,
                                                list(facts.headers), case.request.body or b"")
    finally:
        await rt.close()
    decision_id = headers.get("veil-decision-id", "")
    record = _record(Path(cfg.audit_path), decision_id) if decision_id else None
    problem = headers.get("content-type") == "application/problem+json"
    data = orjson.loads(body) if body else None
    locations = tuple(_location(r) for r in (record or {}).get("rules", []) if isinstance(r, str))
    reason = str(data.get("reason")) if problem and isinstance(data, dict) else "ok"
    if record is not None and case.request.method == "HEAD":
        reason = str(record.get("reason"))  # a HEAD answer has no body to carry it
    view = View(
        decision=headers.get("veil-decision", "?"),
        reason=reason,
        status=status, body=None if problem else data,
        filtered=int((record or {}).get("filtered", 0)),
        suppressed=int(headers.get("veil-suppressed", "0")),
        locations=locations,
    )
    expect = {k: v for k, v in case.expect.items() if k not in NOT_ON_THE_WIRE}
    return ProxyResult(view, record, bool(transport.requests), check_expectations(expect, view))


def _location(text: str) -> Location:
    file, _, rest = text.rpartition(":")
    file, _, line = file.rpartition(":")
    try:
        return Location(file, int(line), int(rest))
    except ValueError:
        return Location(text, 0, 0)
