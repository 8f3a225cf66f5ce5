"""Inspect a deployment's config: `inspect(config) -> list[Finding]`.

Severity says what the finding does to veil: an **error** stops `veil serve` from starting (an unset
`env:` key, an unreadable key or TLS file, an address in use, an invalid policy, an unreachable
PostgreSQL) or leaves it refusing every request (a decision log it cannot write); a **warning** is a
weak or surprising setting veil starts with; a **note** is worth knowing and changes no exit code.
Each finding names the config key to change and how. doctor reads files, binds each listen address
for an instant (closed at once, never accepting) and opens one connection to a PostgreSQL consent
store; no key material is printed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from veil.config import KEY_NAMES, Config, KeySpec
from veil.errors import Diagnostics, VeilError
from veil.keys import load_secret

ERROR = "error"  # veil will not start (or will refuse every request): `veil doctor` exits 1
WARNING = "warning"  # a weak setting veil starts with: exits 1 too
NOTE = "note"  # printed, does not change the exit code
COUNTED = (ERROR, WARNING)


@dataclass(frozen=True)
class Finding:
    code: str  # stable slug
    key: str  # the config key path (or file) to change
    message: str  # what is wrong
    fix: str  # what to change
    severity: str = WARNING

    def render(self) -> str:
        return f"{self.severity}[{self.code}] {self.key}: {self.message}\n      fix: {self.fix}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def inspect(config: Config) -> list[Finding]:
    found: list[Finding] = []
    for check in (_listeners, _secrets, _tls_files, _consent_store, _audit_dir, _policy, _admin, _mode, _audit,
                  _tls, _workers, _keys, _file_modes, _upstreams, _trusted_proxies, _native):
        found.extend(check(config))
    order = {ERROR: 0, WARNING: 1, NOTE: 2}
    return sorted(found, key=lambda f: order[f.severity])


def _listeners(c: Config) -> Iterator[Finding]:
    from veil.listen import ListenError, bind

    for key, listen in (("listen.proxy", c.proxy), ("listen.admin", c.admin)):
        try:
            bind(listen, key).close()
        except ListenError as exc:
            yield Finding("listen_failed", key,
                          f"{exc.message.split(': ', 1)[1]}: veil will not start (`veil serve` exits 3)",
                          f"free {listen} (`ss -ltnp 'sport = :{listen.port}'` shows who holds it) or choose "
                          f"another address for {key}", ERROR)
        except VeilError as exc:
            yield Finding("listen_failed", key, f"{exc.message}: veil will not start", f"check {key}", ERROR)
    if c.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        yield Finding("reuseport_missing", "workers",
                      "several workers need SO_REUSEPORT, which this system lacks: veil will not start",
                      "set workers: 1", ERROR)


def _secret_finding(key: str, ref: str, exc: VeilError) -> Finding:
    kind, _, target = ref.partition(":")
    text = str(exc)
    if kind == "env" and "is not set" in text:
        return Finding("env_unset", key, f"environment variable {target} is not set: veil will not start",
                       f"export {target}=... (generate one with `veil keygen`) in veil's environment", ERROR)
    if kind == "file" and not Path(target).exists():
        return Finding("key_file_missing", key, f"key file {target} does not exist: veil will not start",
                       f"create it with `veil keygen --out {target}`", ERROR)
    if "accessible by group or others" in text:
        return Finding("permissive_mode", key, f"key file {target} is accessible by group or others: veil refuses "
                       "it and will not start", f"chmod 600 {target}", ERROR)
    return Finding("key_invalid", key, f"{text}: veil will not start", "see docs/keys.md", ERROR)


def _secrets(c: Config) -> Iterator[Finding]:
    """Every key and admin token resolved as `veil serve` resolves it (the bytes are dropped at once)."""
    for key, ref in _specs(c):
        try:
            load_secret(ref, what=key)
        except VeilError as exc:
            yield _secret_finding(key, ref, exc)


def _tls_files(c: Config) -> Iterator[Finding]:
    for key, tls in (("tls", c.tls), ("admin.tls", c.admin_tls)):
        if tls is None:
            continue
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(tls.certfile, tls.keyfile)  # what the listener does at start
            if tls.client_ca:
                context.load_verify_locations(tls.client_ca)
        except (OSError, ssl.SSLError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
                getattr(exc, "reason", None) or type(exc).__name__)
            yield Finding("tls_invalid", key, f"the certificate, key or client CA cannot be loaded ({why}): "
                          "veil will not start", f"check {key}.cert, {key}.key and {key}.client_ca", ERROR)


def _consent_store(c: Config) -> Iterator[Finding]:
    given = c.consent_url_given or c.consent_url
    if c.consent_url.startswith("sqlite:///"):
        db = Path(c.consent_url[len("sqlite:///"):])
        if given.startswith("sqlite:///") and not given.startswith("sqlite:////"):
            written = given[len("sqlite:///"):]
            top = Path(written).parts[0] if Path(written).parts else ""
            if top and Path("/", top).is_dir():
                yield Finding("sqlite_path_relative", "consent.url",
                              f"{given} is the relative path {written} (resolved against the config's "
                              f"directory: {db}); it looks meant to be /{written}",
                              f"write sqlite:////{written} (four slashes) for the absolute path")
            else:
                yield Finding("sqlite_path_relative", "consent.url",
                              f"{given} is relative to the config's directory: the store is {db}",
                              "write sqlite:////absolute/path to make it independent of the config's place", NOTE)
        existing = db.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK) \
                or (db.exists() and not os.access(db, os.R_OK | os.W_OK)):
            yield Finding("consent_store_unwritable", "consent.url",
                          f"{db} cannot be created or written by this user: veil will not start",
                          f"make {existing} writable for veil's user, or move the store", ERROR)
        return
    from veil.consent.postgres import split_url

    dsn, _ = split_url(c.consent_url)
    problem = asyncio.run(_pg_problem(dsn))
    if problem:
        yield Finding("consent_store_unreachable", "consent.url",
                      f"PostgreSQL does not answer ({problem}): veil will not start",
                      "check the host, port, credentials (PGPASSWORD) and network path", ERROR)


async def _pg_problem(dsn: str) -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=3.0)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return type(exc).__name__
    except ValueError:
        return "not a valid postgresql:// URL"
    await conn.close()
    return None


def _audit_dir(c: Config) -> Iterator[Finding]:
    directory = Path(c.audit_path).parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        yield Finding("audit_unwritable", "audit.path",
                      f"{directory} cannot be created or written by this user: veil starts but refuses every "
                      "request (audit_unavailable)", f"make {existing} writable for veil's user", ERROR)


def _admin(c: Config) -> Iterator[Finding]:
    if is_loopback(c.admin.host):
        return
    for scope in ("consent", "audit", "reload"):
        if scope not in c.admin_tokens:
            yield Finding("admin_scope_untokened", f"admin.tokens.{scope}",
                          f"the admin listener is on {c.admin} (not loopback) and has no {scope} token: "
                          f"the {scope} API is closed to everyone, so operators will be tempted to open it",
                          f"generate one with `veil keygen --kind token --out {scope}.token` and set "
                          f"admin.tokens.{scope}: file:/path/{scope}.token")
    if "read" not in c.admin_tokens:
        yield Finding("admin_read_open", "admin.tokens.read",
                      f"the admin listener is on {c.admin} (not loopback) without a read token: /metrics and "
                      "/notice are open to anyone who can reach it",
                      "set admin.tokens.read (Prometheus sends it as a bearer token), or listen on 127.0.0.1")


def _mode(c: Config) -> Iterator[Finding]:
    if c.environment == "production" and c.mode == "report-only":
        yield Finding("report_only_in_production", "mode",
                      "mode is report-only in production: nothing is redacted or blocked",
                      "set mode: enforce once the decision log shows the policy is right")


def _audit(c: Config) -> Iterator[Finding]:
    if c.environment == "production" and c.audit_fsync == "never":
        yield Finding("audit_never_synced", "audit.fsync",
                      "the decision log is never fsynced: a crash of the machine can lose any amount of it",
                      "set audit.fsync: interval (the default; loses at most fsync_interval_ms) or always")
    fleet = c.consent_url.startswith(("postgresql:", "postgres:")) or c.workers > 1
    if c.environment == "production" and c.audit_ship is None and fleet:
        yield Finding("audit_not_shipped", "audit.ship",
                      "a fleet (PostgreSQL consent store) keeps its decision log on each replica's disk only: it is "
                      "lost with the pod, and an access report must collect every replica's files",
                      "set audit.ship.url to a PostgreSQL schema (docs/deploy.md, the decision log of a fleet)",
                      NOTE)
    if c.environment == "production" and c.audit_ship is not None and c.audit_ship.on_full == "serve":
        yield Finding("audit_unrecorded_allowed", "audit.ship.on_full",
                      "with on_full: serve, decisions made while the unshipped backlog is full are served "
                      "without a record (counted, but missing from access reports)",
                      "set audit.ship.on_full: refuse (fail closed), and size max_backlog for the outages "
                      "you must ride out")


def _tls(c: Config) -> Iterator[Finding]:
    listeners = (("proxy", c.proxy, c.tls, "tls"), ("admin", c.admin, c.admin_tls, "admin.tls"))
    for name, listen, tls, key in listeners:
        if tls is None and not is_loopback(listen.host):
            yield Finding("tls_missing", key,
                          f"the {name} listener is on {listen} (not loopback) without TLS: keys, tokens and "
                          "personal data cross the network in clear",
                          f"set {key}: {{cert: ..., key: ...}} (and client_ca for mutual TLS), or terminate "
                          "TLS in a sidecar and listen on 127.0.0.1")


def _workers(c: Config) -> Iterator[Finding]:
    if c.workers > 1 and c.consent_url.startswith("sqlite:"):
        yield Finding("sqlite_workers", "workers",
                      f"{c.workers} worker processes share a SQLite consent store: writers serialize on one "
                      "file lock and each worker caches consent separately (a withdrawal reaches the others "
                      "only after consent.cache_ttl)",
                      "use workers: 1 with SQLite, or a postgresql:// consent store")


def _native(c: Config) -> Iterator[Finding]:
    from veil.redact import native

    if native.cplan is None:
        yield Finding("native_loop_missing", "(installation)",
                      "veil.redact._cplan, the field plan's per-item loop and transforms in C, was not built "
                      "when veil was installed (no C compiler, or no Python or OpenSSL headers): the same plans "
                      "run as generated Python, up to about 4x the CPU on large list responses",
                      "install a C compiler and the headers of Python and OpenSSL (Debian: gcc python3-dev "
                      "libssl-dev), then reinstall veil",
                      NOTE)
    elif not native.ENABLED:
        yield Finding("native_loop_off", "VEIL_NATIVE", "VEIL_NATIVE=0 turns the native loop off: plans run as "
                      "generated Python", "unset VEIL_NATIVE", NOTE)


def _keys(c: Config) -> Iterator[Finding]:
    for name in KEY_NAMES:
        if name in c.keys:
            continue
        why = {
            "store": "consent rows are keyed by a key that dies with the process: after a restart no "
                     "recorded consent is found",
            "audit": "the decision log is signed with a throw-away key: it cannot be verified later",
            "pseudonym": "subject pseudonyms change at every restart: access reports cannot find a subject",
            "hash": "the hash transform uses veil's built-in development key, which is public: anyone can "
                    "recompute the pseudonyms in responses",
        }[name]
        yield Finding("key_missing", f"keys.{name}", f"not configured: {why}",
                      f"`veil keygen --out {name}.key`, then keys.{name}: file:/path/{name}.key")


def _specs(c: Config) -> Iterator[tuple[str, str]]:
    def refs(prefix: str, spec: KeySpec) -> Iterator[tuple[str, str]]:
        for i, (_, ref) in enumerate(spec.entries):
            yield (prefix if len(spec.entries) == 1 else f"{prefix}[{i}]"), ref

    for name, spec in c.keys.items():
        yield from refs(f"keys.{name}", spec)
    for scope, spec in c.admin_tokens.items():
        yield from refs(f"admin.tokens.{scope}", spec)


def _private(path: Path, key: str, what: str, *, directory: bool = False) -> Iterator[Finding]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Finding("file_unreadable", key, f"cannot inspect {path}: {exc.strerror}", "check the path")
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        want = "700" if directory else "600"
        message = f"{what} {path} is accessible by group or others (mode {mode:o})"
        yield Finding("permissive_mode", key, message, f"chmod {want} {path}")


def _file_modes(c: Config) -> Iterator[Finding]:
    for key, tls in (("tls.key", c.tls), ("admin.tls.key", c.admin_tls)):
        if tls is not None:
            yield from _private(Path(tls.keyfile), key, "TLS private key")
    if c.consent_url.startswith("sqlite:///"):
        db = Path(c.consent_url[len("sqlite:///"):])
        yield from _private(db.parent, "consent.url", "consent store directory", directory=True)
        for suffix in ("", "-wal", "-shm"):
            yield from _private(db.with_name(db.name + suffix), "consent.url", "consent store file")
    audit_dir = Path(c.audit_path).parent
    yield from _private(audit_dir, "audit.path", "decision log directory", directory=True)
    if audit_dir.is_dir():
        for f in sorted(audit_dir.iterdir()):
            if f.is_file():
                yield from _private(f, "audit.path", "decision log file")


def _upstreams(c: Config) -> Iterator[Finding]:
    from urllib.parse import urlsplit

    for u in c.upstreams:
        parts = urlsplit(u.url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            yield Finding("upstream_plaintext", f"upstreams.{u.name}.url",
                          f"plain HTTP to {parts.hostname}: veil trusts the network to the upstream",
                          "use https:// unless that network is private to veil and the upstream", NOTE)


def _trusted_proxies(c: Config) -> Iterator[Finding]:
    """A trusted network that is public (or everything) lets clients there choose their address for
    the failed-authentication limit and the logs (SECURITY.md, "Client addresses behind a load balancer")."""
    for i, text in enumerate(c.trusted_proxies):
        net = ipaddress.ip_network(text)
        if net.prefixlen == 0 or net.is_global:
            yield Finding("trusted_proxies_public", f"trusted_proxies[{i}]",
                          f"{text} is trusted for X-Forwarded-For: clients there can choose their address",
                          "list only the load balancers' own (private) networks")


def _policy(c: Config) -> Iterator[Finding]:
    from veil.policy.load import load_policy

    paths = list(c.policy_paths)
    try:
        policy = load_policy(paths)
    except Diagnostics as exc:
        yield Finding("policy_invalid", "policy.paths", f"veil will not start: {exc.summary()}",
                      f"run `veil check {' '.join(paths)}`", ERROR)
        return
    except VeilError as exc:
        yield Finding("policy_invalid", "policy.paths", f"{exc.message}: veil will not start", "check policy.paths",
                      ERROR)
        return
    for d in policy.warnings:
        where = str(d.location) if d.location else "policy"
        yield Finding(f"policy_{d.code}", where, d.message, d.hint or "see `veil check`")
    if c.environment == "production":
        for r in policy.routes:
            if r.mode == "report-only":
                yield Finding("report_only_in_production", str(r.loc),
                              f"route {r.method} {r.template} is report-only in production",
                              "remove `mode report-only` from the route")


__all__ = ["COUNTED", "ERROR", "NOTE", "WARNING", "Finding", "inspect", "is_loopback"]
