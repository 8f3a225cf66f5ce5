"""Real servers for end-to-end tests: the demo upstream and veil, each a subprocess on its own
127.0.0.1 port, talking HTTP. Consent is seeded through veil's admin API (the real SQLite store)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, require

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
KEYS = {
    "storefront": "demo-storefront-key",
    "ad_partner": "demo-ads-key",
    "warehouse": "demo-warehouse-key",
    "analytics": "demo-analytics-key",
}


def _log_of(proc: subprocess.Popen[bytes]) -> str:
    path = getattr(proc, "log_path", None)
    return Path(path).read_text(errors="replace") if path else ""


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server subprocess whose output goes to a file (a pipe nobody reads would block it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    proc.log_path = str(log_path)  # type: ignore[attr-defined]
    return proc


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_log_of(proc)[-3000:]}")
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready: {last}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return _log_of(proc)


@dataclass
class Upstream:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


def start_upstream(module: str = "veil.demo.upstream", *extra: str, log_dir: Path | None = None) -> Upstream:
    port = free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="veil-upstream-"))
    proc = spawn([sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port), *extra],
                 log_dir / f"upstream-{port}.log")
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return Upstream(f"http://127.0.0.1:{port}", port, proc)


@pytest.fixture(scope="session")
def demo_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    up = start_upstream(log_dir=tmp_path_factory.mktemp("demo-upstream"))
    yield up
    stop(up.proc)


@dataclass
class Veil:
    url: str
    admin: str
    dir: Path
    config_path: Path
    proc: subprocess.Popen[bytes]
    tokens: dict[str, str]
    policy_dir: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    def get(self, path: str, caller: str | None = "storefront", purpose: str | None = None,
            headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        h = dict(headers or {})
        if caller is not None:
            h["Veil-Key"] = KEYS.get(caller, caller)
        if purpose is not None:
            h["Veil-Purpose"] = purpose
        return self.client.get(self.url + path, headers=h, **kw)

    def consent(self, subject: str, key: str, action: str = "given", **extra: Any) -> None:
        r = self.client.post(
            f"{self.admin}/consent/{subject}", json={"key": key, "action": action, **extra},
            headers={"Authorization": f"Bearer {self.tokens['consent']}"},
        )
        assert r.status_code == 201, r.text

    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['read']}"} if "read" in self.tokens else {}

    def metrics(self) -> str:
        return self.client.get(f"{self.admin}/metrics", headers=self.read_headers()).text

    def readyz(self, *, details: bool = False, **params: str) -> httpx.Response:
        """/readyz as a probe sees it, or with the read token (details)."""
        headers = self.read_headers() if details else {}
        return self.client.get(f"{self.admin}/readyz", params=params, headers=headers)

    def stop(self) -> str:
        self.client.close()
        return stop(self.proc)


def write_keys(directory: Path) -> dict[str, str]:
    keys: dict[str, str] = {}
    for name in ("store", "audit", "pseudonym", "hash"):
        p = directory / f"{name}.key"
        p.write_text(secrets.token_hex(32))
        p.chmod(0o600)
        keys[name] = f"file:{p}"
    return keys


def write_tokens(directory: Path, *, read: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    tokens, refs = {}, {}
    for scope in ("read", "consent", "audit", "reload"):
        tok = f"{scope}-" + secrets.token_hex(16)
        p = directory / f"{scope}.token"
        p.write_text(tok)
        p.chmod(0o600)
        tokens[scope], refs[scope] = tok, f"file:{p}"
    if not read:  # metrics stay open in tests unless a test asks for a read token
        tokens.pop("read")
        refs.pop("read")
    return tokens, refs


def base_config(directory: Path, upstream_url: str, policy_dir: Path, token_refs: dict[str, str],
                proxy_port: int, admin_port: int) -> dict[str, Any]:
    """The veil.yaml every end-to-end veil starts from (keys and tokens as owner-only files)."""
    return {
        "listen": {"proxy": f"127.0.0.1:{proxy_port}", "admin": f"127.0.0.1:{admin_port}"},
        "upstreams": {"demo": {"url": upstream_url, "read_timeout": 3.0, "connect_timeout": 1.0}},
        "policy": {"paths": [str(policy_dir)]},
        "consent": {"url": f"sqlite:///{directory / 'consent.db'}", "cache_ttl": 0.5},
        "audit": {"path": str(directory / "audit" / "decisions.log"), "flush_ms": 1},
        "keys": write_keys(directory),
        "admin": {"tokens": token_refs},
    }


def start_veil(directory: Path, upstream_url: str, *, policy_src: Path = POLICIES,
               overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None,
               read_token: bool = False, wait: str = "/healthz", ready_timeout: float = 20.0) -> Veil:
    directory.mkdir(parents=True, exist_ok=True)
    policy_dir = directory / "policies"
    if not policy_dir.exists():
        shutil.copytree(policy_src, policy_dir, ignore=shutil.ignore_patterns("tests", "*.yaml", "*.md"))
    tokens, refs = write_tokens(directory, read=read_token)
    pport, aport = free_port(), free_port()
    cfg = base_config(directory, upstream_url, policy_dir, refs, pport, aport)
    for k, v in (overrides or {}).items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    config_path = directory / "veil.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    proc = spawn([sys.executable, "-m", "veil", "serve", "--config", str(config_path)],
                 directory / "veil.log", env={**os.environ, **(env or {})})
    admin = f"http://127.0.0.1:{aport}"
    try:
        wait_http(admin + wait, timeout=ready_timeout, proc=proc)
    except BaseException:
        stop(proc)  # a veil that did not come up must not outlive the test
        raise
    return Veil(f"http://127.0.0.1:{pport}", admin, directory, config_path, proc, tokens, policy_dir)


REASON_POLICY = Path(__file__).parent / "reason_policy"


def start_reason_veil(directory: Path, upstream_url: str) -> Veil:
    """A veil with the shipped callers, categories and purposes, and the routes of reason_policy/."""
    policy_dir = directory / "policies"
    policy_dir.mkdir(parents=True)
    for name in ("callers.veil", "categories.veil", "purposes.veil"):
        shutil.copy(POLICIES / name, policy_dir / name)
    for f in REASON_POLICY.glob("*.veil"):
        shutil.copy(f, policy_dir / f.name)
    return start_veil(directory, upstream_url)


@pytest.fixture(scope="module")
def sv(tmp_path_factory: pytest.TempPathFactory, demo_upstream: Upstream) -> Iterator[Veil]:
    """One veil per test module with the shipped policy set."""
    v = start_veil(tmp_path_factory.mktemp("shipped") / "veil", demo_upstream.url)
    yield v
    v.stop()


@pytest.fixture(scope="module")
def rv(tmp_path_factory: pytest.TempPathFactory, demo_upstream: Upstream) -> Iterator[Veil]:
    """One veil per test module with the reason_policy routes (block, subject query.X, respect gpc,
    require consent)."""
    v = start_reason_veil(tmp_path_factory.mktemp("rules") / "veil", demo_upstream.url)
    yield v
    v.stop()


@pytest.fixture
def veil_factory(tmp_path: Path, demo_upstream: Upstream) -> Iterator[Callable[..., Veil]]:
    started: list[Veil] = []

    def make(name: str = "veil", upstream_url: str | None = None, **kw: Any) -> Veil:
        v = start_veil(tmp_path / name, upstream_url or demo_upstream.url, **kw)
        started.append(v)
        return v

    yield make
    for v in started:
        v.stop()


@pytest.fixture
def veil(veil_factory: Callable[..., Veil]) -> Veil:
    return veil_factory()


# ------------------------------------------------------------------ the request path (issue 15)
REQUEST_POLICY = Path(__file__).parent / "request_policy"
# Short deadlines, a small read-ahead buffer (bodies over 4 KB are streamed) and a small pool, so the
# request-path tests see each limit within a second or two.
REQUEST_LIMITS = {
    "request_header_timeout": 1.0, "request_body_idle_timeout": 1.0, "request_body_timeout": 3.0,
    "request_buffer_bytes": 4096, "max_request_body_bytes": 2_000_000, "keep_alive_timeout": 2.0,
}


def request_upstream(url: str, client: str = "h1", **extra: Any) -> dict[str, Any]:
    return {"demo": {"url": url, "client": client, "read_timeout": 1.0, "connect_timeout": 1.0,
                     "total_timeout": 2.5, "pool_size": 4, "pool_timeout": 0.5, **extra}}


def start_request_veil(factory: Callable[..., Veil], name: str, upstream_url: str, client: str = "h1", *,
                       limits: dict[str, Any] | None = None, upstream: dict[str, Any] | None = None,
                       **overrides: Any) -> Veil:
    """A veil with request_policy/ in front of `upstream_url`, with REQUEST_LIMITS (and `limits`)."""
    return factory(name, upstream_url=upstream_url, policy_src=REQUEST_POLICY, overrides={
        "limits": {**REQUEST_LIMITS, **(limits or {})},
        "upstreams": request_upstream(upstream_url, client, **(upstream or {})), **overrides})


def upstream_log(up: Upstream) -> list[dict[str, Any]]:
    """What a recording upstream (recording_upstream.py, wsgi_upstream.py) received."""
    got: list[dict[str, Any]] = httpx.get(up.url + "/_log", timeout=5.0).json()
    return got


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    up = start_upstream("tests.e2e.recording_upstream", log_dir=tmp_path_factory.mktemp("recording"))
    yield up
    stop(up.proc)


@pytest.fixture(scope="module")
def wsgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A real third-party server: tests/e2e/wsgi_upstream.py under gunicorn (sync workers)."""
    require(shutil.which("gunicorn") is not None or _has_module("gunicorn"), "gunicorn")
    d = tmp_path_factory.mktemp("wsgi")
    port = free_port()
    proc = spawn([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2", "--chdir", str(ROOT),
                  "--timeout", "30", "tests.e2e.wsgi_upstream:app"], d / "gunicorn.log",
                 env={**os.environ, "WSGI_UPSTREAM_LOG": str(d / "processed.jsonl")})
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    yield Upstream(f"http://127.0.0.1:{port}", port, proc)
    stop(proc)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
