"""veil.yaml → frozen dataclasses. Every error names the key path (`upstreams.profiles.url`).

Secrets are never inline: a key is `env:NAME` or `file:PATH` (see veil.keys). A key entry may also be
a list of `{id, secret}` for rotation: the first is current, the rest still verify.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from veil.durations import duration_days  # the policy language's units
from veil.errors import ConfigError
from veil.keys import KeyRing, load_secret

MODES = ("enforce", "report-only")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    pool_size: int = 100
    client: str = "h1"  # h1 (veil.proxy.h1client) or aiohttp
    pool_timeout: float = 5.0  # waiting for a free connection of the pool → 503 upstream_busy
    total_timeout: float = 30.0  # the whole exchange: connect, send the request, read the response


@dataclass(frozen=True)
class ClientLimits:
    """What veil allows a client connection (see docs/deploy.md, "Slow and broken clients")."""

    header_timeout: float = 10.0  # the request line and headers, from the first byte (or the connection)
    keep_alive_timeout: float = 5.0  # an idle keep-alive connection between requests
    body_timeout: float = 30.0  # the whole request body
    body_idle_timeout: float = 10.0  # between two reads of the request body
    buffer_bytes: int = 1024 * 1024  # bodies up to this size are read whole before the upstream is called
    max_body_bytes: int = 10 * 1024 * 1024  # larger request bodies → 413 request_body_too_large


@dataclass(frozen=True)
class TLS:
    certfile: str
    keyfile: str
    client_ca: str | None = None  # set → mutual TLS: clients must present a cert signed by this CA


@dataclass(frozen=True)
class AuditShip:
    """`audit.ship`: copy the decision log to a PostgreSQL store (veil.audit.ship)."""

    url: str
    replica: str | None = None  # None: the host name (the pod name in Kubernetes)
    shipper: str = "veil"  # veil: this process ships its chain; sidecar: `veil audit ship` beside it does
    batch_records: int = 1000
    max_backlog_bytes: int = 256 * 1024 * 1024  # unshipped bytes on local disk, per chain (worker)
    on_full: str = "refuse"  # refuse: fail closed (audit_backlog_full); serve: keep serving, count
    partition: str = "month"  # the store's partition width (day, week, month), fixed when it is created
    keep_local_days: float = 0.0  # shipped segments stay on local disk this long
    timeout: float = 10.0  # seconds for one store operation
    drain_timeout: float = 5.0  # at shutdown, how long to keep shipping what is left


@dataclass(frozen=True)
class KeySpec:
    """Key references (not the key bytes): resolved by `resolve()` at start-up."""

    entries: tuple[tuple[str, str], ...]  # (key id, spec)

    def resolve(self, what: str) -> KeyRing:
        keys = {kid: load_secret(spec, what=what) for kid, spec in self.entries}
        return KeyRing(self.entries[0][0], keys)


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """The settings the request flow (veil.policy.flow) reads: the one place of their defaults.
    `veil serve` takes them from the config file; `veil test` and `veil explain` use the defaults
    unless given a config."""

    mode: str = "enforce"  # or report-only
    max_body_bytes: int = 10 * 1024 * 1024  # upstream bodies (decoded)
    max_json_depth: int = 64
    # bodies this large are read lazily (veil.redact.lazy) by plans the native loop does not run; None: never
    lazy_json_min_bytes: int | None = 16 * 1024
    max_request_body_bytes: int = 1024 * 1024  # a request body read for its subject (`subject request_body.…`)
    max_header_bytes: int = 32 * 1024
    tcf_header: str | None = None
    tcf_cookie: str | None = "euconsent-v2"


_FLOW = FlowSettings()


@dataclass(frozen=True)
class DiscoveryConfig:
    """`discovery:` (veil.discovery): shapes and detector counts of report-only responses."""

    routes: tuple[str, ...] = ()  # "GET /customers/{id}"; empty: every route in report-only mode
    sample: float = 0.1  # share of report-only responses examined
    state: str | None = None
    flush_seconds: float = 30.0
    max_paths: int = 512
    array_items: int = 20
    max_values: int = 2000
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR")


@dataclass(frozen=True)
class Config:
    proxy: Listen = Listen("127.0.0.1", 8080)
    admin: Listen = Listen("127.0.0.1", 8081)
    mode: str = _FLOW.mode
    upstreams: tuple[Upstream, ...] = ()
    policy_paths: tuple[str, ...] = ("policies",)
    policy_watch: bool = True
    consent_url: str = "sqlite:///veil-data/consent.db"
    consent_cache_ttl: float = 2.0
    consent_cache_size: int = 100_000
    # the consent store on the request path (issue 21): PostgreSQL timeouts (s), pool, circuit breaker,
    # how long a consent write waits for acknowledgements, and the cache lease (veil.consent.pg_peers)
    consent_connect_timeout: float = 1.0
    consent_query_timeout: float = 0.5
    consent_acquire_timeout: float = 0.5
    consent_pool_size: int = 10
    consent_circuit_failures: int = 3
    consent_retry_interval: float = 0.5
    consent_ack_timeout: float = 1.0
    consent_lease: float = 3.0
    audit_path: str = "veil-data/audit/decisions.log"
    audit_flush_ms: float = 0.0  # extra wait to gather a batch; 0 = pure group commit
    audit_checkpoint_every: int = 1000
    audit_fsync: str = "interval"  # always | interval | never (see veil.audit.log)
    audit_fsync_interval_ms: float = 100.0
    audit_retention_days: float | None = None  # None: the longest retention of the policy's purposes
    audit_max_retention_days: float = 25 * 30.4375  # caps the automatic retention
    audit_ship: AuditShip | None = None
    keys: dict[str, KeySpec] = field(default_factory=dict)
    admin_tokens: dict[str, KeySpec] = field(default_factory=dict)  # scope → token spec
    max_body_bytes: int = _FLOW.max_body_bytes
    max_json_depth: int = _FLOW.max_json_depth
    lazy_json_min_bytes: int | None = _FLOW.lazy_json_min_bytes
    tcf_header: str | None = _FLOW.tcf_header
    tcf_cookie: str | None = _FLOW.tcf_cookie
    tls: TLS | None = None
    admin_tls: TLS | None = None
    auth_fail_limit: int = 20  # failed authentications per client address per minute
    client_limits: ClientLimits = ClientLimits()
    trusted_proxies: tuple[str, ...] = ()  # networks whose X-Forwarded-For veil believes (veil.proxy.forwarded)
    workers: int = 1
    environment: str = "development"
    source: str | None = None  # the file it was read from
    log_format: str = "text"  # text | json (veil.logs)
    log_level: str = "info"
    consent_url_given: str | None = None  # consent.url as written (before a relative sqlite path is resolved)
    discovery: DiscoveryConfig | None = None  # None: off

    def flow(self) -> FlowSettings:
        """What the request flow reads of this config."""
        return FlowSettings(
            mode=self.mode, max_body_bytes=self.max_body_bytes, max_json_depth=self.max_json_depth,
            lazy_json_min_bytes=self.lazy_json_min_bytes, tcf_header=self.tcf_header, tcf_cookie=self.tcf_cookie,
            # a body read for its subject is read whole in memory: at most what is read ahead of the upstream
            max_request_body_bytes=self.client_limits.buffer_bytes,
        )

    def upstream(self, name: str | None) -> Upstream:
        if name is None:
            return self.upstreams[0]
        for u in self.upstreams:
            if u.name == name:
                return u
        raise ConfigError("upstreams", f"no upstream named {name!r}", file=self.source)

    def keyring(self, name: str) -> KeyRing:
        spec = self.keys.get(name)
        if spec is None:
            raise ConfigError(f"keys.{name}", "is required", file=self.source)
        return spec.resolve(f"keys.{name}")


# Config field → the key path in veil.yaml (for reload answers and messages).
KEY_PATHS: dict[str, str] = {
    "proxy": "listen.proxy", "admin": "listen.admin", "mode": "mode", "upstreams": "upstreams",
    "policy_paths": "policy.paths", "policy_watch": "policy.watch", "consent_url": "consent.url",
    "consent_cache_ttl": "consent.cache_ttl", "consent_cache_size": "consent.cache_size",
    "audit_path": "audit.path", "audit_flush_ms": "audit.flush_ms", "audit_checkpoint_every": "audit.checkpoint_every",
    "audit_fsync": "audit.fsync", "audit_fsync_interval_ms": "audit.fsync_interval_ms", "keys": "keys",
    "admin_tokens": "admin.tokens", "max_body_bytes": "limits.max_body_bytes",
    "max_json_depth": "limits.max_json_depth", "lazy_json_min_bytes": "limits.lazy_json_min_bytes",
    "tcf_header": "tcf.header", "tcf_cookie": "tcf.cookie", "tls": "tls", "admin_tls": "admin.tls",
    "auth_fail_limit": "limits.auth_failures_per_minute", "workers": "workers", "environment": "environment",
    "log_format": "log.format", "log_level": "log.level",
    **{f"consent_{k}": f"consent.{k}" for k in ("connect_timeout", "query_timeout", "acquire_timeout", "pool_size",
                                                 "circuit_failures", "retry_interval", "ack_timeout", "lease")},
    "audit_retention_days": "audit.retention", "audit_max_retention_days": "audit.max_retention",
    "audit_ship": "audit.ship",
    "client_limits": "limits.request_* (deadlines and sizes of client requests), limits.keep_alive_timeout",
    "trusted_proxies": "trusted_proxies",
}
# What a reload (SIGHUP, POST /reload) applies to a running veil; any other change needs a restart.
RELOADABLE = frozenset({"mode", "max_body_bytes", "max_json_depth", "lazy_json_min_bytes", "tcf_header",
                        "tcf_cookie", "auth_fail_limit"})


def changed_settings(old: Config, new: Config) -> list[str]:
    """The Config fields whose values differ (`source` aside)."""
    from dataclasses import fields

    skip = ("source", "consent_url_given")  # consent_url_given changes with consent_url
    return [f.name for f in fields(Config) if f.name not in skip and getattr(old, f.name) != getattr(new, f.name)]


KEY_NAMES = ("store", "audit", "pseudonym", "hash")
TOKEN_SCOPES = ("read", "consent", "audit", "reload")


class _Reader:
    def __init__(self, file: str | None) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(key, message, file=self.file)

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        return value

    def known(self, value: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> None:
        for k in value:
            if k not in allowed:
                hint = f"; expected one of: {', '.join(allowed)}"
                raise self.fail(f"{key}.{k}" if key else str(k), f"unknown key{hint}")

    def str_(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def optional_str(self, m: Mapping[str, Any], name: str, key: str, default: str | None) -> str | None:
        """A string, or None when given as null; `default` when absent."""
        if name not in m:
            return default
        return None if m[name] is None else self.str_(m[name], key)

    def num(self, value: Any, key: str, *, lo: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or value <= lo:
            raise self.fail(key, f"must be a number greater than {lo:g}")
        return float(value)

    def int_(self, value: Any, key: str, *, lo: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise self.fail(key, f"must be an integer >= {lo}")
        return value

    def listen(self, value: Any, key: str, default: Listen) -> Listen:
        if value is None:
            return default
        text = self.str_(str(value), key)
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise self.fail(key, "must be HOST:PORT, for example 127.0.0.1:8080")
        return Listen(host.strip("[]") or "127.0.0.1", int(port))

    def keyspec(self, value: Any, key: str) -> KeySpec:
        if isinstance(value, str):
            self.secret_ref(value, key)
            return KeySpec((("k1", value),))
        if isinstance(value, list) and value:
            entries = []
            for i, item in enumerate(value):
                m = self.mapping(item, f"{key}[{i}]")
                self.known(m, f"{key}[{i}]", ("id", "secret"))
                kid = self.str_(m.get("id"), f"{key}[{i}].id")
                entries.append((kid, self.secret_ref(m.get("secret"), f"{key}[{i}].secret")))
            return KeySpec(tuple(entries))
        raise self.fail(key, "must be env:NAME, file:PATH, or a list of {id, secret}")

    def secret_ref(self, value: Any, key: str) -> str:
        text = self.str_(value, key)
        if not (text.startswith("env:") or text.startswith("file:")):
            raise self.fail(key, "secrets are never inline: use env:NAME or file:PATH")
        return text

    def duration_days(self, value: Any, key: str, *, zero: bool = False) -> float:
        """A duration: "13 months", "400 days", "2 weeks", "1 year" (or 0 where zero is allowed)."""
        if zero and value in (0, "0"):
            return 0.0
        days = duration_days(str(value))
        if days is None:
            raise self.fail(key, 'must be a duration like "13 months", "400 days", "2 weeks" or "1 year"')
        return days

    def size(self, value: Any, key: str) -> int:
        """Bytes: an integer, or "256 MiB", "1 GB", "512 KiB"."""
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        m = _SIZE.fullmatch(str(value).strip())
        if not m or float(m.group(1)) <= 0:
            raise self.fail(key, 'must be a size in bytes, or like "256 MiB" or "1 GB"')
        return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").lower()])

    def tls(self, value: Any, key: str) -> TLS | None:
        if value is None:
            return None
        m = self.mapping(value, key)
        self.known(m, key, ("cert", "key", "client_ca"))
        ca = m.get("client_ca")
        return TLS(
            self.str_(m.get("cert"), f"{key}.cert"),
            self.str_(m.get("key"), f"{key}.key"),
            self.str_(ca, f"{key}.client_ca") if ca is not None else None,
        )


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
SHIP_KEYS = ("url", "replica", "shipper", "batch_records", "max_backlog", "on_full", "partition", "keep_local",
             "timeout", "drain_timeout")


def _audit_ship(r: _Reader, value: Any) -> AuditShip | None:
    if value is None:
        return None
    k = "audit.ship"
    m = r.mapping(value, k)
    r.known(m, k, SHIP_KEYS)
    url = r.str_(m.get("url"), f"{k}.url")
    if url.split(":", 1)[0] not in ("postgresql", "postgres"):
        raise r.fail(f"{k}.url", "must be a postgresql:// URL")
    choices = {"shipper": ("veil", "sidecar"), "on_full": ("refuse", "serve"), "partition": ("month", "week", "day")}
    picked = {}
    for name, allowed in choices.items():
        picked[name] = m.get(name, allowed[0])
        if picked[name] not in allowed:
            raise r.fail(f"{k}.{name}", f"must be one of {', '.join(allowed)}")
    d = AuditShip(url)
    return AuditShip(
        url=url,
        replica=r.optional_str(m, "replica", f"{k}.replica", None),
        shipper=picked["shipper"],
        batch_records=r.int_(m.get("batch_records", d.batch_records), f"{k}.batch_records"),
        max_backlog_bytes=r.size(m.get("max_backlog", d.max_backlog_bytes), f"{k}.max_backlog"),
        on_full=picked["on_full"],
        partition=picked["partition"],
        keep_local_days=r.duration_days(m.get("keep_local", 0), f"{k}.keep_local", zero=True),
        timeout=r.num(m.get("timeout", d.timeout), f"{k}.timeout"),
        drain_timeout=r.num(m.get("drain_timeout", d.drain_timeout), f"{k}.drain_timeout"),
    )


TOP_KEYS = (
    "listen", "mode", "upstreams", "policy", "consent", "audit", "keys", "admin", "limits", "tcf",
    "tls", "workers", "environment", "log", "discovery", "trusted_proxies",
)
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def listeners_clash(a: Listen, b: Listen) -> bool:
    """True when two listen addresses cannot both be bound: the same port on the same host, or on a
    wildcard address (0.0.0.0, ::) that covers the other."""
    wildcard = ("0.0.0.0", "::", "")
    return a.port == b.port and a.port != 0 and (a.host == b.host or a.host in wildcard or b.host in wildcard)


CONSENT_KEYS = (
    "url", "cache_ttl", "cache_size", "connect_timeout", "query_timeout", "acquire_timeout", "pool_size",
    "circuit_failures", "retry_interval", "ack_timeout", "lease",
)


def _consent_tuning(r: _Reader, consent: Mapping[str, Any]) -> dict[str, Any]:
    """The `consent:` keys besides url and cache, as Config fields (`consent_<key>`)."""
    out: dict[str, Any] = {}
    for key in ("connect_timeout", "query_timeout", "acquire_timeout", "retry_interval", "ack_timeout", "lease"):
        if key in consent:
            out[f"consent_{key}"] = r.num(consent[key], f"consent.{key}")
    for key in ("pool_size", "circuit_failures"):
        if key in consent:
            out[f"consent_{key}"] = r.int_(consent[key], f"consent.{key}")
    return out
DISCOVERY_KEYS = ("enabled", "routes", "sample", "state", "flush_seconds", "max_paths", "array_items", "max_values",
                  "phone_regions")


def _discovery(r: _Reader, value: Any, base: Path) -> DiscoveryConfig | None:
    """`discovery: on`, or a mapping (`enabled` defaults to true when the mapping is given)."""
    if value is None or value is False:
        return None
    if value is True:
        return DiscoveryConfig(state=str(base / "veil-data" / "discovery.json"))
    m = r.mapping(value, "discovery")
    r.known(m, "discovery", DISCOVERY_KEYS)
    enabled = m.get("enabled", True)
    if not isinstance(enabled, bool):
        raise r.fail("discovery.enabled", "must be true or false")
    if not enabled:
        return None
    routes = m.get("routes", [])
    if not isinstance(routes, list):
        raise r.fail("discovery.routes", 'must be a list of "METHOD /template"')
    for i, item in enumerate(routes):
        text = r.str_(item, f"discovery.routes[{i}]")
        method, _, tpl = text.partition(" ")
        if method not in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD") or not tpl.startswith("/"):
            raise r.fail(f"discovery.routes[{i}]", 'must be "METHOD /template", as in the policy')
    sample = m.get("sample", DiscoveryConfig.sample)
    if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0.0 < sample <= 1.0:
        raise r.fail("discovery.sample", "must be a number in (0, 1]")
    state = m.get("state", "veil-data/discovery.json")
    if state is not None:
        state = r.str_(state, "discovery.state")
        if not Path(state).is_absolute():
            state = str(base / state)
    regions = m.get("phone_regions", ["US", "GB", "DE", "FR"])
    if not isinstance(regions, list) or not all(isinstance(x, str) and len(x) == 2 and x.isalpha() for x in regions):
        raise r.fail("discovery.phone_regions", "must be a list of two-letter region codes (US, DE, ...)")
    return DiscoveryConfig(
        routes=tuple(str(x) for x in routes), sample=float(sample), state=state,
        flush_seconds=r.num(m.get("flush_seconds", 30.0), "discovery.flush_seconds"),
        max_paths=r.int_(m.get("max_paths", 512), "discovery.max_paths"),
        array_items=r.int_(m.get("array_items", 20), "discovery.array_items"),
        max_values=r.int_(m.get("max_values", 2000), "discovery.max_values", lo=0),
        phone_regions=tuple(x.upper() for x in regions),
    )


# limits.<key> → ClientLimits field
_CLIENT_LIMITS = {
    "request_header_timeout": "header_timeout", "keep_alive_timeout": "keep_alive_timeout",
    "request_body_timeout": "body_timeout", "request_body_idle_timeout": "body_idle_timeout",
    "request_buffer_bytes": "buffer_bytes", "max_request_body_bytes": "max_body_bytes",
}


def _client_limits(r: _Reader, limits: Mapping[str, Any]) -> ClientLimits:
    values: dict[str, Any] = {}
    for key, name in _CLIENT_LIMITS.items():
        if key in limits:
            if name.endswith("_bytes"):
                values[name] = r.int_(limits[key], f"limits.{key}")
            else:
                values[name] = r.num(limits[key], f"limits.{key}")
    out = ClientLimits(**values)
    if out.buffer_bytes > out.max_body_bytes:
        if "request_buffer_bytes" in limits:
            raise r.fail("limits.request_buffer_bytes", "must not exceed limits.max_request_body_bytes")
        out = ClientLimits(**{**values, "buffer_bytes": out.max_body_bytes})
    return out


def _trusted_proxies(r: _Reader, value: Any) -> tuple[str, ...]:
    """A list of networks (`10.0.0.0/8`, `2001:db8::/32`) or addresses; normalized (`10.0.0.0/8`)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.fail("trusted_proxies", "must be a list of networks, for example [10.0.0.0/8]")
    out = []
    for i, item in enumerate(value):
        text = r.str_(item, f"trusted_proxies[{i}]")
        try:
            out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError as exc:
            raise r.fail(f"trusted_proxies[{i}]", "must be an IP network (10.0.0.0/8) or address") from exc
    return tuple(out)


def parse_config(data: Any, *, file: str | None = None, base: Path | None = None) -> Config:
    r = _Reader(file)
    top = r.mapping(data, "")
    r.known(top, "", TOP_KEYS)
    base = base or Path(".")

    listen = r.mapping(top.get("listen"), "listen")
    r.known(listen, "listen", ("proxy", "admin"))

    mode = top.get("mode", "enforce")
    if mode not in MODES:
        raise r.fail("mode", f"must be one of {', '.join(MODES)}")

    ups_raw = r.mapping(top.get("upstreams"), "upstreams")
    if not ups_raw:
        raise r.fail("upstreams", "at least one upstream is required")
    upstreams = []
    for name, spec in ups_raw.items():
        k = f"upstreams.{name}"
        m = r.mapping(spec, k)
        r.known(m, k, ("url", "connect_timeout", "read_timeout", "pool_size", "client", "pool_timeout",
                       "total_timeout"))
        client = m.get("client", "h1")
        if client not in ("h1", "aiohttp"):
            raise r.fail(f"{k}.client", "must be h1 or aiohttp")
        url = r.str_(m.get("url"), f"{k}.url")
        try:  # an unclosed [IPv6], a port out of range, a host name IDNA cannot encode
            parts = urlsplit(url)
            _ = parts.port
            (parts.hostname or "").encode("idna")
        except (ValueError, UnicodeError) as exc:
            raise r.fail(f"{k}.url", "must be an http:// or https:// URL with a host") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise r.fail(f"{k}.url", "must be an http:// or https:// URL with a host")
        upstreams.append(
            Upstream(
                str(name),
                url.rstrip("/"),
                r.num(m.get("connect_timeout", 2.0), f"{k}.connect_timeout"),
                r.num(m.get("read_timeout", 10.0), f"{k}.read_timeout"),
                r.int_(m.get("pool_size", 100), f"{k}.pool_size"),
                client,
                r.num(m.get("pool_timeout", Upstream.pool_timeout), f"{k}.pool_timeout"),
                r.num(m.get("total_timeout", Upstream.total_timeout), f"{k}.total_timeout"),
            )
        )

    pol = r.mapping(top.get("policy"), "policy")
    r.known(pol, "policy", ("paths", "watch"))
    paths = pol.get("paths", ["policies"])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths:
        raise r.fail("policy.paths", "must be a list of files or directories")
    policy_paths = tuple(str(base / r.str_(p, f"policy.paths[{i}]")) for i, p in enumerate(paths))

    consent = r.mapping(top.get("consent"), "consent")
    r.known(consent, "consent", CONSENT_KEYS)
    consent_url = consent_url_given = r.str_(consent.get("url", Config.consent_url), "consent.url")
    scheme = consent_url.split(":", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise r.fail("consent.url", "must start with sqlite:/// or postgresql://")
    if scheme == "sqlite" and not consent_url.startswith("sqlite:///"):
        raise r.fail("consent.url", "must be sqlite:///relative/path or sqlite:////absolute/path")
    if scheme == "sqlite":
        p = Path(consent_url[len("sqlite:///"):])
        consent_url = "sqlite:///" + str(p if p.is_absolute() else base / p)

    audit = r.mapping(top.get("audit"), "audit")
    r.known(audit, "audit", ("path", "flush_ms", "checkpoint_every", "fsync", "fsync_interval_ms", "retention",
                             "max_retention", "ship"))
    retention = audit.get("retention", "auto")
    audit_retention = None if retention == "auto" else r.duration_days(retention, "audit.retention")
    audit_fsync = audit.get("fsync", Config.audit_fsync)
    if isinstance(audit_fsync, bool):  # true/false: the values before `interval` existed
        audit_fsync = "always" if audit_fsync else "never"
    if audit_fsync not in ("always", "interval", "never"):
        raise r.fail("audit.fsync", "must be always, interval or never")
    audit_path = r.str_(audit.get("path", Config.audit_path), "audit.path")
    if not Path(audit_path).is_absolute():
        audit_path = str(base / audit_path)

    keys_raw = r.mapping(top.get("keys"), "keys")
    r.known(keys_raw, "keys", KEY_NAMES)
    keys = {name: r.keyspec(v, f"keys.{name}") for name, v in keys_raw.items()}

    admin = r.mapping(top.get("admin"), "admin")
    r.known(admin, "admin", ("tokens", "tls"))
    tokens_raw = r.mapping(admin.get("tokens"), "admin.tokens")
    r.known(tokens_raw, "admin.tokens", TOKEN_SCOPES)
    tokens = {s: r.keyspec(v, f"admin.tokens.{s}") for s, v in tokens_raw.items()}

    limits = r.mapping(top.get("limits"), "limits")
    r.known(limits, "limits", ("max_body_bytes", "max_json_depth", "lazy_json_min_bytes", "auth_failures_per_minute",
                               *_CLIENT_LIMITS))
    lazy_min = limits.get("lazy_json_min_bytes", Config.lazy_json_min_bytes)
    tcf = r.mapping(top.get("tcf"), "tcf")
    r.known(tcf, "tcf", ("header", "cookie"))

    logs = r.mapping(top.get("log"), "log")
    r.known(logs, "log", ("format", "level"))
    log_format = logs.get("format", "text")
    if log_format not in LOG_FORMATS:
        raise r.fail("log.format", f"must be one of {', '.join(LOG_FORMATS)}")
    log_level = logs.get("level", "info")
    if log_level not in LOG_LEVELS:
        raise r.fail("log.level", f"must be one of {', '.join(LOG_LEVELS)}")

    proxy_listen = r.listen(listen.get("proxy"), "listen.proxy", Config.proxy)
    admin_listen = r.listen(listen.get("admin"), "listen.admin", Config.admin)
    if listeners_clash(proxy_listen, admin_listen):
        # both would bind it (with several workers, SO_REUSEPORT would even split connections between them)
        raise r.fail("listen.admin", f"must not use the proxy's port ({proxy_listen} and {admin_listen})")

    return Config(
        proxy=proxy_listen,
        admin=admin_listen,
        mode=mode,
        upstreams=tuple(upstreams),
        policy_paths=policy_paths,
        policy_watch=bool(pol.get("watch", True)),
        consent_url=consent_url,
        consent_cache_ttl=r.num(consent.get("cache_ttl", 2.0), "consent.cache_ttl"),
        consent_cache_size=r.int_(consent.get("cache_size", 100_000), "consent.cache_size"),
        **_consent_tuning(r, consent),
        audit_path=audit_path,
        audit_flush_ms=r.num(audit.get("flush_ms", 0.0), "audit.flush_ms", lo=-1e-9),
        audit_checkpoint_every=r.int_(audit.get("checkpoint_every", 1000), "audit.checkpoint_every"),
        audit_fsync=audit_fsync,
        audit_fsync_interval_ms=r.num(audit.get("fsync_interval_ms", 100.0), "audit.fsync_interval_ms"),
        audit_retention_days=audit_retention,
        audit_max_retention_days=r.duration_days(audit.get("max_retention", "25 months"), "audit.max_retention"),
        audit_ship=_audit_ship(r, audit.get("ship")),
        keys=keys,
        admin_tokens=tokens,
        max_body_bytes=r.int_(limits.get("max_body_bytes", Config.max_body_bytes), "limits.max_body_bytes"),
        max_json_depth=r.int_(limits.get("max_json_depth", Config.max_json_depth), "limits.max_json_depth"),
        lazy_json_min_bytes=None if lazy_min is None else r.int_(lazy_min, "limits.lazy_json_min_bytes"),
        auth_fail_limit=r.int_(limits.get("auth_failures_per_minute", 20), "limits.auth_failures_per_minute"),
        client_limits=_client_limits(r, limits),
        trusted_proxies=_trusted_proxies(r, top.get("trusted_proxies")),
        tcf_header=r.optional_str(tcf, "header", "tcf.header", None),
        tcf_cookie=r.optional_str(tcf, "cookie", "tcf.cookie", "euconsent-v2"),
        tls=r.tls(top.get("tls"), "tls"),
        admin_tls=r.tls(admin.get("tls"), "admin.tls"),
        workers=r.int_(top.get("workers", 1), "workers"),
        environment=r.str_(top.get("environment", "development"), "environment"),
        source=file,
        log_format=log_format,
        log_level=log_level,
        consent_url_given=consent_url_given,
        discovery=_discovery(r, top.get("discovery"), base),
    )


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config: {exc.strerror}", file=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("", "config is not UTF-8 text", file=str(p)) from exc
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"not valid YAML{where}", file=str(p)) from exc
    return parse_config(data, file=str(p), base=p.parent)
