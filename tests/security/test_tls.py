"""TLS on both listeners and mutual TLS on the proxy listener, with certificates from trustme."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import trustme

from tests.security.conftest import Pki, TLSVeil, cert_caller
from veil.proxy.tlsinfo import rfc4514_name

PROFILE = "/customers/c-000001"
REC = "personalize.recommendations"


def _consent(v: TLSVeil, c: httpx.Client, subject: str) -> None:
    r = c.post(f"{v.admin}/consent/{subject}", json={"key": "personalization", "notice_version": 3},
               headers={"Authorization": f"Bearer {v.tokens['consent']}"})
    assert r.status_code == 201, r.text


def test_tls_on_both_listeners(tls_veil: Callable[..., TLSVeil], pki: Pki) -> None:
    v = tls_veil(overrides={"tls": pki.tls(), "admin": {"tokens": None, "tls": pki.tls()}},
                 verify=pki.client(), admin_tls=True, proxy_tls=True)
    c = v.client()
    assert v.url.startswith("https://") and v.admin.startswith("https://")
    assert c.get(v.admin + "/readyz").json()["status"] == "ready"
    r = c.get(v.url + PROFILE, headers={"Veil-Key": "demo-storefront-key", "Veil-Purpose": REC})
    assert r.status_code == 403 and r.json()["reason"] == "consent_missing"
    with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS listener gets no answer
        v.client(True).get(v.url.replace("https://", "http://") + PROFILE, timeout=1.0)
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA refuses the server
        v.client(True).get(v.admin + "/healthz")


def test_mutual_tls_refuses_clients_without_a_good_certificate(tls_veil: Callable[..., TLSVeil],
                                                               pki: Pki) -> None:
    good_ctx, good_subject = pki.issue_client("storefront", "Acme")
    assert good_subject.startswith("CN=storefront,") and good_subject.endswith(",O=Acme")
    v = tls_veil(overrides={"tls": pki.tls(mutual=True)}, verify=pki.client(), admin_tls=False,
                 proxy_tls=True, policy_extra=cert_caller("storefront_tls", good_subject))
    _consent(v, v.client(True), "c-000001")
    headers = {"Veil-Purpose": REC}
    with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
        v.client(pki.client()).get(v.url + PROFILE, headers=headers)
    other_ctx, _ = pki.issue_client("storefront", "Acme", ca=trustme.CA())
    with pytest.raises(httpx.HTTPError):  # a certificate from another CA: refused too
        v.client(other_ctx).get(v.url + PROFILE, headers=headers)
    # a good certificate, mapped to a caller by its subject (`cert "CN=storefront,...,O=Acme"`)
    r = v.client(good_ctx).get(v.url + PROFILE, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["veil-decision"] == "redact"
    # a good certificate whose subject no caller claims: accepted by TLS, unknown to the policy
    stranger = v.client(pki.issue_client("intruder", "Acme")[0])
    assert stranger.get(v.url + PROFILE, headers=headers).status_code == 401
    # a key still works on an mTLS connection (the key, when given, decides the caller)
    r = stranger.get(v.url + PROFILE, headers={**headers, "Veil-Key": "demo-storefront-key"})
    assert r.status_code == 200, r.text


def test_rfc4514_subject_format() -> None:
    subject = ((("countryName", "DE"),), (("organizationName", "Acme, Inc."),), (("commonName", "store"),))
    assert rfc4514_name(subject) == "CN=store,O=Acme\\, Inc.,C=DE"
    multi = ((("organizationalUnitName", "a"), ("userId", "u+1")), (("commonName", " x "),))
    assert rfc4514_name(multi) == "CN=\\ x\\ ,OU=a+UID=u\\+1"
    assert rfc4514_name(((("emailAddress", "a@b"),),)) == "emailAddress=a@b"


def test_rfc4514_matches_cryptography() -> None:
    from cryptography.x509 import Name, NameAttribute
    from cryptography.x509.oid import NameOID

    long = {NameOID.COMMON_NAME: "commonName", NameOID.ORGANIZATION_NAME: "organizationName",
            NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName", NameOID.COUNTRY_NAME: "countryName",
            NameOID.DOMAIN_COMPONENT: "domainComponent"}
    for values in (["store", "Acme", "Ops", "DE", "acme"], ["a,b+c", '"q"', "<x>;y=z", "DE", "#dc"],
                   [" lead", "trail ", "back\\slash", "FR", "a#b"]):
        name = Name([NameAttribute(oid, v) for oid, v in zip(
            [NameOID.DOMAIN_COMPONENT, NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME,
             NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME],
            [values[4], values[3], values[1], values[2], values[0]], strict=True)])
        as_ssl = tuple(((long[a.oid], str(a.value)),) for a in name)  # what getpeercert() returns
        assert rfc4514_name(as_ssl) == name.rfc4514_string(), values
