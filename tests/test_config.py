"""veil.yaml loading: errors name the key path; arbitrary input only ever raises ConfigError."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.config import load_config, parse_config
from veil.errors import ConfigError, VeilError

GOOD: dict[str, Any] = {
    "listen": {"proxy": "127.0.0.1:8080", "admin": "127.0.0.1:8081"},
    "upstreams": {"profiles": {"url": "http://127.0.0.1:9000", "read_timeout": 5}},
    "policy": {"paths": ["policies"]},
    "consent": {"url": "sqlite:///veil.db"},
    "keys": {"store": "env:VEIL_STORE_KEY", "audit": [{"id": "k2", "secret": "file:/k2"},
                                                       {"id": "k1", "secret": "env:K1"}]},
    "admin": {"tokens": {"consent": "env:TOKEN"}},
}


def test_a_good_config_parses(tmp_path: Path) -> None:
    c = parse_config(GOOD, file="veil.yaml", base=tmp_path)
    assert c.upstream(None).url == "http://127.0.0.1:9000"
    assert c.upstream("profiles").read_timeout == 5.0
    assert c.keys["audit"].entries == (("k2", "file:/k2"), ("k1", "env:K1"))
    assert c.consent_url == f"sqlite:///{tmp_path / 'veil.db'}"
    assert c.mode == "enforce" and c.tcf_cookie == "euconsent-v2" and c.tcf_header is None


@pytest.mark.parametrize(("value", "mode"), [(None, "interval"), (True, "always"), (False, "never"),
                                             ("always", "always"), ("never", "never")])
def test_audit_fsync_modes(tmp_path: Path, value: Any, mode: str) -> None:
    audit = {} if value is None else {"fsync": value}
    assert parse_config({**GOOD, "audit": audit}, file="veil.yaml", base=tmp_path).audit_fsync == mode


def test_audit_shipping_and_retention(tmp_path: Path) -> None:
    c = parse_config(GOOD, file="veil.yaml", base=tmp_path)
    assert c.audit_ship is None and c.audit_retention_days is None  # auto: the policy's longest
    c = parse_config({**GOOD, "audit": {"retention": "400 days", "max_retention": "2 years", "ship": {
        "url": "postgresql://veil@db/veil?schema=veil_audit", "replica": "pod-1", "shipper": "sidecar",
        "max_backlog": "1.5 GiB", "on_full": "serve", "partition": "week", "keep_local": "1 day",
        "batch_records": 500, "timeout": 3, "drain_timeout": 2}}}, file="veil.yaml", base=tmp_path)
    ship = c.audit_ship
    assert ship is not None
    assert (ship.url, ship.replica, ship.shipper, ship.on_full, ship.partition) == (
        "postgresql://veil@db/veil?schema=veil_audit", "pod-1", "sidecar", "serve", "week")
    assert (ship.max_backlog_bytes, ship.keep_local_days, ship.batch_records, ship.timeout, ship.drain_timeout) == (
        int(1.5 * 2**30), 1.0, 500, 3.0, 2.0)
    assert (c.audit_retention_days, c.audit_max_retention_days) == (400.0, 730.5)
    d = parse_config({**GOOD, "audit": {"ship": {"url": "postgres://db/veil"}}}, file="veil.yaml").audit_ship
    assert d is not None and (d.shipper, d.on_full, d.max_backlog_bytes, d.keep_local_days) == (
        "veil", "refuse", 256 * 2**20, 0.0)
    assert parse_config({**GOOD, "audit": {"ship": {"url": "postgresql://x", "max_backlog": 4096}}},
                        file="v").audit_ship.max_backlog_bytes == 4096  # type: ignore[union-attr]


@pytest.mark.parametrize(("value", "expected"), [("absent", 16384), (None, None), (1, 1), (65536, 65536)])
def test_lazy_json_min_bytes(tmp_path: Path, value: Any, expected: int | None) -> None:
    limits = {} if value == "absent" else {"lazy_json_min_bytes": value}
    assert parse_config({**GOOD, "limits": limits}, file="veil.yaml", base=tmp_path).lazy_json_min_bytes == expected


@pytest.mark.parametrize("patch,key", [
    ({"mode": "monitor"}, "mode"),
    ({"upstreams": {}}, "upstreams"),
    ({"upstreams": {"p": {"url": "ftp://x"}}}, "upstreams.p.url"),
    ({"upstreams": {"p": {"url": "http://x", "pool_size": 0}}}, "upstreams.p.pool_size"),
    ({"upstreams": {"p": {"url": "http://x", "retries": 3}}}, "upstreams.p.retries"),
    ({"listen": {"proxy": "8080"}}, "listen.proxy"),
    ({"keys": {"store": "0123456789abcdef0123456789abcdef"}}, "keys.store"),
    ({"keys": {"unknown": "env:X"}}, "keys.unknown"),
    ({"admin": {"tokens": {"write": "env:X"}}}, "admin.tokens.write"),
    ({"consent": {"url": "mysql://x"}}, "consent.url"),
    ({"audit": {"fsync": "yes"}}, "audit.fsync"),
    ({"audit": {"fsync_interval_ms": 0}}, "audit.fsync_interval_ms"),
    ({"workers": True}, "workers"),
    ({"limits": {"lazy_json_min_bytes": 0}}, "limits.lazy_json_min_bytes"),
    ({"limits": {"lazy_json_min_bytes": "16k"}}, "limits.lazy_json_min_bytes"),
    ({"tcf": {"cookie": 5}}, "tcf.cookie"),
    ({"audit": {"retention": "a while"}}, "audit.retention"),
    ({"audit": {"max_retention": "0 days"}}, "audit.max_retention"),
    ({"audit": {"ship": "postgresql://x"}}, "audit.ship"),
    ({"audit": {"ship": {"url": "sqlite:///x"}}}, "audit.ship.url"),
    ({"audit": {"ship": {"url": "postgresql://x", "on_full": "drop"}}}, "audit.ship.on_full"),
    ({"audit": {"ship": {"url": "postgresql://x", "shipper": "agent"}}}, "audit.ship.shipper"),
    ({"audit": {"ship": {"url": "postgresql://x", "partition": "year"}}}, "audit.ship.partition"),
    ({"audit": {"ship": {"url": "postgresql://x", "max_backlog": "lots"}}}, "audit.ship.max_backlog"),
    ({"audit": {"ship": {"url": "postgresql://x", "max_backlog": 0}}}, "audit.ship.max_backlog"),
    ({"audit": {"ship": {"url": "postgresql://x", "keep_local": "1 fortnight"}}}, "audit.ship.keep_local"),
    ({"audit": {"ship": {"url": "postgresql://x", "batch": 5}}}, "audit.ship.batch"),
    ({"colour": "blue"}, "colour"),
    # found by tests/fuzz (config): urlsplit and .port raised ValueError
    ({"upstreams": {"p": {"url": "http://[::1"}}}, "upstreams.p.url"),
    ({"upstreams": {"p": {"url": "http://h:99999"}}}, "upstreams.p.url"),
    ({"upstreams": {"p": {"url": "http://x", "pool_timeout": 0}}}, "upstreams.p.pool_timeout"),
    ({"upstreams": {"p": {"url": "http://x", "total_timeout": "30s"}}}, "upstreams.p.total_timeout"),
    ({"limits": {"request_header_timeout": -1}}, "limits.request_header_timeout"),
    ({"limits": {"request_buffer_bytes": 1.5}}, "limits.request_buffer_bytes"),
    ({"limits": {"request_buffer_bytes": 2048, "max_request_body_bytes": 1024}}, "limits.request_buffer_bytes"),
    ({"trusted_proxies": "10.0.0.0/8"}, "trusted_proxies"),
    ({"trusted_proxies": ["10.0.0.0/8", "lb.internal"]}, "trusted_proxies[1]"),
])
def test_errors_name_the_key_path(patch: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, **patch}, file="veil.yaml")
    assert info.value.key == key
    assert str(info.value).startswith(f"veil.yaml: {key}: ")


def test_request_path_limits_and_trusted_proxies(tmp_path: Path) -> None:
    c = parse_config(GOOD, file="veil.yaml", base=tmp_path)
    lim = c.client_limits
    assert (lim.header_timeout, lim.keep_alive_timeout, lim.body_timeout, lim.body_idle_timeout) == (10, 5, 30, 10)
    assert (lim.buffer_bytes, lim.max_body_bytes) == (1024 * 1024, 10 * 1024 * 1024)
    assert c.trusted_proxies == () and c.upstream(None).pool_timeout == 5.0 and c.upstream(None).total_timeout == 30
    c = parse_config({**GOOD, "trusted_proxies": ["10.1.2.3/8", "2001:db8::1", "127.0.0.1"],
                      "limits": {"request_body_timeout": 60, "max_request_body_bytes": 5}}, file="veil.yaml")
    assert c.trusted_proxies == ("10.0.0.0/8", "2001:db8::1/128", "127.0.0.1/32")
    assert c.client_limits.body_timeout == 60 and c.client_limits.max_body_bytes == 5
    assert c.client_limits.buffer_bytes == 5  # the read-ahead buffer never exceeds the body limit


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_config(binary)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from([*GOOD, "mode", "limits", "tcf", "tls", "audit", "workers", "environment"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, yaml_values, max_size=6) | yaml_values)
def test_fuzz_structures_raise_only_config_errors(data: Any) -> None:
    with contextlib.suppress(VeilError):
        parse_config(data, file="fuzz.yaml")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300) | st.builds(lambda d: yaml.safe_dump(d), st.dictionaries(keys, yaml_values)))
def test_fuzz_text_raises_only_config_errors(tmp_path: Path, text: str) -> None:
    f = tmp_path / "veil.yaml"
    f.write_bytes(text.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(VeilError):
        load_config(f)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (False, None), ({"enabled": False}, None),
    (True, ("veil-data/discovery.json", 0.1, ())),
    ({"sample": 0.5, "routes": ["GET /customers/{id}"], "state": "/var/lib/veil/d.json"},
     ("/var/lib/veil/d.json", 0.5, ("GET /customers/{id}",))),
    ({"state": None, "sample": 1}, (None, 1.0, ())),
])
def test_discovery(tmp_path: Path, value: Any, expected: tuple[Any, ...] | None) -> None:
    c = parse_config({**GOOD, "discovery": value}, file="veil.yaml", base=tmp_path).discovery
    if expected is None:
        assert c is None
        return
    assert c is not None
    state, sample, routes = expected
    assert c.state == (str(tmp_path / state) if state and not state.startswith("/") else state)
    assert (c.sample, c.routes) == (sample, routes)


@pytest.mark.parametrize("patch,key", [
    ({"discovery": "yes"}, "discovery"),
    ({"discovery": {"sample": 0}}, "discovery.sample"),
    ({"discovery": {"sample": 1.5}}, "discovery.sample"),
    ({"discovery": {"routes": "GET /a"}}, "discovery.routes"),
    ({"discovery": {"routes": ["/a"]}}, "discovery.routes[0]"),
    ({"discovery": {"max_paths": 0}}, "discovery.max_paths"),
    ({"discovery": {"phone_regions": ["USA"]}}, "discovery.phone_regions"),
    ({"discovery": {"enabled": "on"}}, "discovery.enabled"),
    ({"discovery": {"flush": 3}}, "discovery.flush"),
])
def test_discovery_errors_name_the_key_path(patch: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, **patch}, file="veil.yaml")
    assert info.value.key == key
