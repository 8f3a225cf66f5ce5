"""Discovery state: bounded counts, observation of documents (lazy or plain), merging replicas, the
file format, and the recorder's sampling, persistence and failure handling."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from pathlib import Path

import orjson
import pytest

from veil.discovery.detectors import Detect
from veil.discovery.observe import Limits, Observer
from veil.discovery.recorder import Discovery, Settings, read_state, state_path, write_state
from veil.discovery.state import Shapes, State, StateError, merge
from veil.redact import lazy
from veil.redact.reading import decode_content, is_json_type

JSON = [("Content-Type", "application/json")]
PROFILE = {"id": "c-1", "email": "jane.roe@example.org", "phone": "+44 20 7946 0958",
           "address": {"street": "High Street 1", "zip": "SW1A 1AA"},
           "orders": [{"sku": "A-1", "card": "4111111111111111"}, {"sku": "B-2", "card": "4111 1111 1111 1111"}],
           "prices": [[1, 2], [3]], "note": None, "vip": True, "score": 1.5}


def _observe(doc: object, limits: Limits = Limits()) -> Shapes:
    sh = Shapes()
    Observer(Detect(), limits).observe(doc, sh)
    return sh


def test_paths_types_and_hits_fold_indices() -> None:
    sh = _observe(PROFILE)
    assert sh.responses == 1
    p = sh.paths
    assert p["email"].hits == {"email": 1} and p["email"].types == {"string": 1}
    assert p["orders[*].card"].seen == 1 and p["orders[*].card"].checked == 2 and p["orders[*].card"].hits == {
        "card": 2}
    assert p["prices[*][*]"].types == {"integer": 3}
    assert p["note"].types == {"null": 1} and p["vip"].types == {"boolean": 1} and p["score"].types == {"number": 1}
    assert p["address.zip"].hits == {"postal_code": 1}
    assert p["$"].types == {"object": 1}


def test_lazy_documents_count_the_same() -> None:
    body = orjson.dumps(PROFILE)
    assert _observe(lazy.parse(body)).to_json() == _observe(orjson.loads(body)).to_json()


def test_keys_that_look_like_data_are_folded() -> None:
    doc = {"by_email": {"jane.roe@example.org": 1}, "by_id": {"c-000123": 2, "ok_name": 3}, "by_name": {
        "first name": 4}, "map": {f"k{i}": i for i in range(100)}}
    text = json.dumps(_observe(doc).to_json())
    for leaked in ("jane.roe", "000123", "first name", "k42"):
        assert leaked not in text
    paths = _observe(doc).paths
    assert "by_email.*" in paths and "by_id.*" in paths and "by_id.ok_name" in paths and "map.*" in paths


def test_bounds() -> None:
    many = {f"field_{chr(97 + i // 26)}{chr(97 + i % 26)}": "x" for i in range(50)}
    sh = _observe(many, Limits(max_paths=10))
    assert len(sh.paths) == 10 and sh.overflow == 41
    long_list = {"items": [{"email": "a.b@example.org"}] * 1000}
    sh = _observe(long_list, Limits(array_items=5))
    assert sh.paths["items[*].email"].checked == 5
    sh = _observe(long_list, Limits(array_items=1000, max_values=7))
    assert sh.paths["items[*].email"].checked == 7
    sh = _observe(long_list, Limits(array_items=1000, max_nodes=50))
    assert sum(sh.paths["items[*].email"].types.values()) < 50


def test_merge_adds_up_and_keeps_the_caps() -> None:
    a, b = State(max_paths=4, replicas=["w0"]), State(max_paths=4, replicas=["w1"])
    for st, doc in ((a, {"x": 1, "y": "a@b.example"}), (b, {"x": 2, "z": 1, "w": 2})):
        sh = st.observation("GET /r", "p")
        assert sh is not None
        Observer(Detect(), Limits(max_paths=4)).observe(doc, sh)
    m = merge([a, b], max_paths=4)
    sh = m.rules[("GET /r", "p")]
    assert sh.responses == 2 and m.replicas == ["w0", "w1"]
    assert sh.paths["x"].seen == 2 and sh.paths["x"].types == {"integer": 2}
    assert set(sh.paths) == {"$", "x", "y", "z"} and sh.overflow == 1  # `w` does not fit
    again = State.from_json(json.loads(json.dumps(m.to_json())))
    assert again.to_json() == m.to_json()


def test_rule_cap() -> None:
    st = State(max_rules=2)
    assert st.observation("GET /a", "p") and st.observation("GET /b", "p")
    assert st.observation("GET /c", "p") is None and st.overflow == 1


@pytest.mark.parametrize("data", [{}, {"veil_discovery": 2}, [], {"veil_discovery": 1, "routes": []},
                                  {"veil_discovery": 1, "routes": {"GET /a": []}}])
def test_bad_state_files(data: object) -> None:
    with pytest.raises(StateError):
        State.from_json(data)


def _discovery(tmp: Path, **kw: object) -> Discovery:
    settings = Settings(True, state=str(tmp / "d.json"), **kw)  # type: ignore[arg-type]
    return Discovery(settings, decode=decode_content, is_json=is_json_type)


def test_recorder_filters_samples_and_decodes(tmp_path: Path) -> None:
    d = _discovery(tmp_path, sample=1.0)
    body = orjson.dumps(PROFILE)
    d.observe("GET", "/c/{id}", "p", 200, JSON, body)
    d.observe("HEAD", "/c/{id}", "p", 200, JSON, body)  # HEAD is served by GET
    d.observe("GET", "/c/{id}", "p", 404, JSON, body)  # not 2xx
    d.observe("GET", "/c/{id}", "p", 200, [("Content-Type", "text/html")], body)
    d.observe("GET", "-", "p", 200, JSON, body)  # no route
    d.observe("GET", "/c/{id}", None, 200, [*JSON, ("Content-Encoding", "gzip")], gzip.compress(body))
    assert d.state.rules[("GET /c/{id}", "p")].responses == 2
    assert d.state.rules[("GET /c/{id}", "-")].responses == 1
    big = orjson.dumps({"items": [PROFILE] * 200})  # read lazily
    d.observe("GET", "/c", "p", 200, JSON, big)
    assert d.state.rules[("GET /c", "p")].paths["items[*].email"].checked == 20
    sampled = Discovery(Settings(True, sample=0.25), decode=decode_content, is_json=is_json_type,
                        rng=iter([0.1, 0.3, 0.2, 0.9] * 10).__next__)
    for _ in range(8):
        sampled.observe("GET", "/c/{id}", "p", 200, JSON, body)
    assert sampled.state.rules[("GET /c/{id}", "p")].responses == 4
    only = _discovery(tmp_path, sample=1.0, routes=("GET /only",))
    only.observe("GET", "/c/{id}", "p", 200, JSON, body)
    assert not only.state.rules


def test_recorder_never_raises_nor_logs_a_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _discovery(tmp_path, sample=1.0)
    with caplog.at_level(logging.DEBUG):
        d.observe("GET", "/c/{id}", "p", 200, JSON, b'{"email": "secret.person@example.org", ')
        d.observe("GET", "/c/{id}", "p", 200, [*JSON, ("Content-Encoding", "br")], b"secret.person")
    assert d.errors == 2
    assert "secret.person" not in caplog.text and "discovery skipped" in caplog.text


def test_state_persists_per_replica_and_merges_siblings(tmp_path: Path) -> None:
    async def run() -> None:
        w0 = Discovery(Settings(True, sample=1.0, state=str(tmp_path / "d.json")), decode=decode_content,
                       is_json=is_json_type, replica="w0")
        w1 = Discovery(Settings(True, sample=1.0, state=str(tmp_path / "d.json")), decode=decode_content,
                       is_json=is_json_type, replica="w1")
        for w in (w0, w1):
            await w.start()
            w.observe("GET", "/c/{id}", "p", 200, JSON, orjson.dumps(PROFILE))
        await w1.close()
        assert w0.snapshot().rules[("GET /c/{id}", "p")].responses == 2
        await w0.close()
        again = Discovery(Settings(True, sample=1.0, state=str(tmp_path / "d.json")), decode=decode_content,
                          is_json=is_json_type, replica="w0")
        await again.start()
        again.observe("GET", "/c/{id}", "p", 200, JSON, orjson.dumps(PROFILE))
        assert again.state.rules[("GET /c/{id}", "p")].responses == 2
        await again.close()

    asyncio.run(run())
    assert state_path(str(tmp_path / "d.json"), "w1") == tmp_path / "d-w1.json"
    assert (tmp_path / "d-w0.json").stat().st_mode & 0o777 == 0o600
    merged = merge([read_state(tmp_path / "d-w0.json"), read_state(tmp_path / "d-w1.json")])
    assert merged.rules[("GET /c/{id}", "p")].responses == 3
    write_state(tmp_path / "m.json", merged)
    assert read_state(tmp_path / "m.json").to_json() == merged.to_json()
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(StateError):
        read_state(tmp_path / "bad.json")
