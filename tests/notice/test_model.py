"""The notice model of the example policy set, and that it never under-states what the engine sends."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from veil.demo.data import generate_customers
from veil.notice import build_notice
from veil.notice._model import Notice, PurposeNotice
from veil.policy.compile import CompiledPolicy
from veil.redact.paths import Deep, matches


def _purpose(notice: Notice, name: str) -> PurposeNotice:
    return next(p for p in notice.purposes if p.name == name)


def _cats(p: PurposeNotice) -> dict[str, tuple[str, ...]]:
    return {c.name: c.manners for c in p.categories}


def test_every_purpose_with_basis_recipients_retention(example: CompiledPolicy) -> None:
    notice = build_notice(example)
    assert [p.name for p in notice.purposes] == list(example.purposes)
    assert notice.controller == "Acme Retail GmbH" and notice.version == "2026.11"
    assert notice.jurisdictions == ("gdpr", "ccpa")
    bases = {p.name: (p.basis.code, p.basis.article) for p in notice.purposes}
    assert bases == {
        "personalize.recommendations": ("consent", "GDPR Art. 6(1)(a)"),
        "advertising.targeted": ("consent", "GDPR Art. 6(1)(a)"),
        "orders.fulfillment": ("contract", "GDPR Art. 6(1)(b)"),
        "analytics.segments": ("legitimate_interests", "GDPR Art. 6(1)(f)"),
    }
    orders = _purpose(notice, "orders.fulfillment")
    assert orders.recipients == ("Acme logistics", "Parcel carriers")
    assert orders.retention == "10 years"
    assert orders.consent is None
    assert _purpose(notice, "orders.fulfillment").retention_parts == (10, "years")


def test_categories_and_how_they_are_shared(example: CompiledPolicy) -> None:
    notice = build_notice(example)
    assert _cats(_purpose(notice, "personalize.recommendations")) == {
        "identity": ("in clear",), "contact": ("pseudonymized",), "contact.address": ("generalized",),
        "demographics": ("generalized",), "behaviour": ("in clear",),
    }
    assert _cats(_purpose(notice, "advertising.targeted")) == {
        "identity": ("pseudonymized",), "demographics": ("generalized",),
        "location.precise": ("generalized",), "behaviour": ("in clear",),
    }
    # orders masks payment.card_last4 by path, but under a contract basis the sensitive category is
    # dropped (drop beats transform): the notice follows the engine and does not list it.
    assert "payment" not in _cats(_purpose(notice, "orders.fulfillment"))
    assert _cats(_purpose(notice, "orders.fulfillment"))["contact"] == ("masked",)


def test_sensitive_categories_called_out(example: CompiledPolicy) -> None:
    notice = build_notice(example)
    sensitive = {c.name for c in notice.categories if c.sensitive}
    assert sensitive == {"health", "payment"}
    by_name = {c.name: c for c in notice.categories}
    assert by_name["health"].purposes == () and by_name["payment"].purposes == ()
    assert by_name["contact"].fields == ("email", "phone")


def test_consent_gpc_and_tcf(example: CompiledPolicy) -> None:
    notice = build_notice(example)
    rec = _purpose(notice, "personalize.recommendations")
    assert rec.consent is not None
    consent = rec.consent
    assert (consent.key, consent.max_age, consent.notice_version) == ("personalization", "13 months", 2)
    assert '"action": "withdrawn"' in rec.consent.withdraw_api
    assert rec.consent.withdraw_cli == "veil consent withdraw --subject ID --key personalization"
    ads = _purpose(notice, "advertising.targeted")
    assert ads.gpc_honored and notice.honors_gpc
    assert [p.name for p in notice.purposes if p.gpc_honored] == ["advertising.targeted"]
    assert ads.tcf is not None and [n for n, _ in ads.tcf.purposes] == [1, 3, 4]
    assert ads.tcf.purposes[0][1] == "Store and/or access information on a device"
    assert ads.consent is not None and ads.consent.sources == ("store", "tcf")


def test_disclosures_split_sale_and_sharing_from_business_purposes(example: CompiledPolicy) -> None:
    by = {d.category: d for d in build_notice(example).disclosures}
    assert set(by) == {"identity", "contact", "contact.address", "demographics", "location.precise", "behaviour"}
    assert by["location.precise"].sold_or_shared == ("advertising.targeted",)  # processing sharing
    assert by["location.precise"].business == () and by["location.precise"].business_to == ()
    assert by["contact"].sold_or_shared == ()
    assert by["contact"].business_to == ("Acme storefront", "Acme logistics", "Parcel carriers")
    assert by["identity"].sold_or_shared_to == ("Acme advertising partners (TCF vendors)",)


def test_without_a_notice_section_the_policy_name_stands_in(write_policy: Any) -> None:
    policy = write_policy('policy "bare"\n'
                          'purpose p { description "d" basis contract retention 1 year recipients "r" }\n')
    notice = build_notice(policy)
    assert notice.controller == "bare" and notice.jurisdictions == ("gdpr",) and not notice.section.declared


def test_respect_gpc_on_a_route_is_reported(write_policy: Any) -> None:
    policy = write_policy("""
purpose p { description "d" basis consent consent "k" retention 1 year recipients "r" }
category contact = email
route GET /a/{id} { subject path.id  for p { respect gpc  keep email } }
""")
    (p,) = build_notice(policy).purposes
    assert not p.gpc_honored and p.gpc_routes == ("GET /a/{id}",)


def test_category_reach_edge_cases(write_policy: Any) -> None:
    policy = write_policy("""
purpose p { description "d" basis consent consent "k" retention 1 year recipients "r" }
category health sensitive = health.allergies
category contact = email, phone
category ids = id
category other = x.y
route GET /a/{id} { subject path.id  for p {
  keep health, items[*].email, **.id
  null phone
  keep x
  drop x.y
} }
""")
    (p,) = build_notice(policy).purposes
    # keep an ancestor reaches the category; null discloses nothing; a drop of the field wins
    assert _cats(p) == {"health": ("in clear",), "contact": ("in clear",), "ids": ("in clear",)}
    assert p.sensitive


def _leaves(doc: Any, at: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*at, i))
    else:
        yield at


def test_notice_never_understates_the_engine(example: CompiledPolicy) -> None:
    customers = generate_customers(20)
    notice = build_notice(example)
    for route in example.routes:
        for purpose, rule in route.rules.items():
            doc: Any = ({"items": customers, "total": 20, "limit": 20, "offset": 0}
                        if route.each else customers[0])
            out, _ = rule.plan.apply(copy.deepcopy(doc))
            sent = set()
            for leaf in _leaves(out):
                for name, (_, paths) in example.categories.items():
                    if any(matches((Deep(), *cp), leaf[:i]) for cp in paths for i in range(len(leaf) + 1)):
                        sent.add(name)
            listed = set(_cats(_purpose(notice, purpose)))
            assert sent <= listed, (route.template, purpose, sent - listed)
