"""Security tests: veil subprocesses (reusing the e2e harness) plus a launcher for TLS listeners and
a throwaway certificate authority (trustme)."""

from __future__ import annotations

import shutil
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml
from cryptography import x509

from tests.conftest import free_port
from tests.e2e.conftest import (  # noqa: F401  (fixtures re-exported for this directory)
    POLICIES,
    Upstream,
    base_config,
    demo_upstream,
    spawn,
    stop,
    veil,
    veil_factory,
    write_keys,
    write_tokens,
)


def cert_caller(name: str, subject: str) -> str:
    """A caller that authenticates by its client certificate only (mutual TLS)."""
    return f'caller {name} {{\n  cert "{subject}"\n  may personalize\n}}\n'


def copy_policies(dest: Path, extra: str = "") -> Path:
    shutil.copytree(POLICIES, dest, ignore=shutil.ignore_patterns("tests", "*.yaml", "*.md"))
    if extra:
        (dest / "extra.veil").write_text(extra)
    return dest


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 and its files (key files owner-only)."""

    ca: trustme.CA
    dir: Path
    ca_file: Path
    server_pem: Path

    def issue_client(self, name: str, org: str | None = None, ca: trustme.CA | None = None
                     ) -> tuple[ssl.SSLContext, str]:
        """A client context trusting this CA and presenting a certificate `CN=name,...,O=org`, and
        the certificate's subject as RFC 4514 text (by `cryptography`, independent of veil's code)."""
        leaf = (ca or self.ca).issue_cert(f"{name}.clients.test", common_name=name, organization_name=org)
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        leaf.configure_cert(ctx)
        subject = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).subject.rfc4514_string()
        return ctx, subject

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def tls(self, *, mutual: bool = False) -> dict[str, str]:
        out = {"cert": str(self.server_pem), "key": str(self.server_pem)}
        if mutual:
            out["client_ca"] = str(self.ca_file)
        return out


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    d = tmp_path / "pki"
    d.mkdir(mode=0o700)
    ca_file = d / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_pem = d / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    server_pem.chmod(0o600)
    return Pki(ca, d, ca_file, server_pem)


@dataclass
class TLSVeil:
    url: str
    admin: str
    dir: Path
    config_path: Path
    proc: Any
    tokens: dict[str, str]
    verify: ssl.SSLContext | bool
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, verify: ssl.SSLContext | bool | None = None) -> httpx.Client:
        c = httpx.Client(timeout=5.0, verify=self.verify if verify is None else verify)
        self.clients.append(c)
        return c

    def stop(self) -> str:
        for c in self.clients:
            c.close()
        return stop(self.proc)


def launch(directory: Path, upstream_url: str, *, overrides: dict[str, Any], verify: ssl.SSLContext,
           admin_tls: bool, proxy_tls: bool, policy_extra: str = "") -> TLSVeil:
    """veil serve with TLS on one or both listeners; waits for the admin /healthz over the right scheme."""
    directory.mkdir(parents=True, exist_ok=True)
    policy_dir = copy_policies(directory / "policies", policy_extra)
    tokens, refs = write_tokens(directory)
    pport, aport = free_port(), free_port()
    cfg: dict[str, Any] = {**base_config(directory, upstream_url, policy_dir, refs, pport, aport), **overrides}
    config_path = directory / "veil.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    proc = spawn([sys.executable, "-m", "veil", "serve", "--config", str(config_path)],
                 directory / "veil.log")
    admin = f"{'https' if admin_tls else 'http'}://127.0.0.1:{aport}"
    url = f"{'https' if proxy_tls else 'http'}://127.0.0.1:{pport}"
    v = TLSVeil(url, admin, directory, config_path, proc, tokens, verify)
    probe = v.client(verify if admin_tls else True)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"veil exited:\n{stop(proc)[-3000:]}")
        try:
            if probe.get(admin + "/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                v.stop()
                raise
        time.sleep(0.05)
    return v


@pytest.fixture
def tls_veil(tmp_path: Path, demo_upstream: Upstream) -> Iterator[Callable[..., TLSVeil]]:  # noqa: F811
    started: list[TLSVeil] = []

    def make(name: str = "veil", **kw: Any) -> TLSVeil:
        v = launch(tmp_path / name, demo_upstream.url, **kw)
        started.append(v)
        return v

    yield make
    for v in started:
        v.stop()
