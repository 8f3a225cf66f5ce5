"""Deciding a request: pure functions of (compiled policy, request facts, consent facts).

    admit(policy, method, path, keys, purposes)  → Admitted | Blocked      (before any I/O)
    consent_reason(rule, states, now, gpc, tcf)   → None (ok) | reason code
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from veil.consent.store import MISSING_STATE, ConsentState, Status
from veil.location import Location
from veil.policy.compile import CompiledCaller, CompiledPolicy, CompiledPurpose, CompiledRoute, CompiledRule

if TYPE_CHECKING:
    from veil.consent.tcf import TCFResult

PURPOSE_RE = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")

# reason code → (HTTP status, title)
REASONS: dict[str, tuple[int, str]] = {
    "route_not_covered": (403, "No policy route covers this request"),
    "path_invalid": (400, "The request path is not in normal form"),
    "method_override": (400, "Method override headers are not accepted"),
    "unknown_caller": (401, "Unknown caller"),
    "key_ambiguous": (400, "More than one Veil-Key header"),
    "caller_not_allowed": (403, "This caller may not use this route for this purpose"),
    "purpose_missing": (400, "No purpose declared"),
    "purpose_ambiguous": (400, "More than one purpose declared"),
    "purpose_invalid": (400, "The declared purpose is not a valid purpose name"),
    "purpose_unknown": (403, "The declared purpose is not defined by the policy"),
    "purpose_not_allowed": (403, "This caller may not claim this purpose"),
    "purpose_not_covered": (403, "This route has no rule for the declared purpose"),
    "blocked_by_rule": (403, "Blocked by policy"),
    "subject_missing": (400, "The request does not identify the data subject"),
    "consent_missing": (403, "The data subject has not consented to this purpose"),
    "consent_withdrawn": (403, "The data subject withdrew consent for this purpose"),
    "consent_expired": (403, "The data subject's consent has expired"),
    "consent_stale": (403, "Consent was given to an older notice version"),
    "consent_unavailable": (503, "Consent cannot be verified right now"),
    "gpc_opt_out": (403, "The data subject opted out with Global Privacy Control"),
    "tcf_invalid": (403, "The TCF consent string is invalid"),
    "upstream_unavailable": (502, "The upstream service is unavailable"),
    "upstream_timeout": (504, "The upstream service timed out"),
    "upstream_redirect": (502, "The upstream answered with a redirect"),
    "upstream_status": (502, "The upstream answered with an error status"),
    "body_invalid": (502, "The upstream body cannot be enforced"),
    "body_too_large": (502, "The upstream body exceeds the size limit"),
    "content_type_unsupported": (502, "The upstream content type cannot be enforced"),
    "encoding_unsupported": (502, "The upstream content encoding cannot be enforced"),
    "range_not_allowed": (416, "Byte ranges are not served on enforced routes"),
    "audit_unavailable": (503, "The decision log cannot be written"),
    "policy_unavailable": (503, "No valid policy is loaded"),
    "rate_limited": (429, "Too many failed authentications"),
    "headers_too_large": (431, "Request headers are too large"),
    "internal_error": (500, "Internal error"),
    # The request path (issue 15): a client's body or connection, the upstream's pool and statuses.
    "request_aborted": (400, "The request body did not arrive whole"),
    "request_timeout": (408, "The request did not arrive in time"),
    "request_too_large": (413, "The request body exceeds the size limit"),
    "upgrade_refused": (400, "Protocol upgrades (WebSocket) are not supported"),
    "upstream_busy": (503, "No upstream connection became free in time"),
    "upstream_status_invalid": (502, "The upstream answered with a status veil cannot relay"),
}


def status_reason(status: int) -> str | None:
    """What an upstream status means before its body is read: None for 2xx (the body is enforced),
    else the reason of the block. 1xx interim responses never get here (the upstream client skips
    them); a status veil cannot relay (outside 200-599, 101 included) is `upstream_status_invalid`."""
    if not 200 <= status <= 599:
        return "upstream_status_invalid"
    if status < 300:
        return None
    return "upstream_redirect" if status < 400 else "upstream_status"


def no_content(status: int, body: bytes) -> bool:
    """Whether a 2xx response has nothing to enforce, and so passes with an empty body (decision allow,
    nothing disclosed): 204 and 205 never carry a body; any other 2xx (200, 201, 202, 203, ...) whose
    body is zero bytes, whatever its content type says (an empty 201 Created with a Location, an empty
    202 Accepted). A body of one byte or more is enforced as JSON, or refused."""
    return status in (204, 205) or not body


@dataclass(frozen=True, slots=True)
class Blocked:
    reason: str
    route: str | None = None  # template, for metrics
    purpose: str | None = None
    caller: str | None = None
    locations: tuple[Location, ...] = ()

    @property
    def status(self) -> int:
        return REASONS[self.reason][0]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a setattr call per field
class Admitted:
    route: CompiledRoute
    params: dict[str, str]
    caller: CompiledCaller
    purpose: CompiledPurpose
    rule: CompiledRule


def admit(
    policy: CompiledPolicy,
    method: str,
    path: str,
    keys: Sequence[str],
    purposes: Sequence[str],
    *,
    cert_subject: str | None = None,
) -> Admitted | Blocked:
    """Steps 1-3 of the request flow: route, caller, purpose, rule. No I/O."""
    found = policy.match(method, path)
    if found is None:
        return Blocked("route_not_covered")
    route, params = found
    tpl = route.template
    caller: CompiledCaller | None = None
    if len(keys) > 1:
        return Blocked("key_ambiguous", tpl)
    if keys:
        caller = policy.authenticate(keys[0])
    elif cert_subject is not None:
        caller = policy.cert_index.get(cert_subject)
    if caller is None:
        return Blocked("unknown_caller", tpl)
    if not purposes:
        return Blocked("purpose_missing", tpl, caller=caller.name)
    if len(purposes) > 1 or "," in purposes[0]:
        return Blocked("purpose_ambiguous", tpl, caller=caller.name)
    name = purposes[0].strip()
    purpose = policy.purposes.get(name)  # defined purpose names are valid names: check those first
    if purpose is None:
        if not PURPOSE_RE.fullmatch(name):
            return Blocked("purpose_invalid", tpl, caller=caller.name)
        return Blocked("purpose_unknown", tpl, caller=caller.name)
    if name not in caller.claimable and not caller.may_claim(name):
        return Blocked("purpose_not_allowed", tpl, name, caller.name, (caller.loc,))
    rule = route.rules.get(name)
    if rule is None:
        return Blocked("purpose_not_covered", tpl, name, caller.name, (route.loc,))
    if rule.callers is not None and caller.name not in rule.callers:
        return Blocked("caller_not_allowed", tpl, name, caller.name, (rule.loc,))
    if rule.block is not None:
        return Blocked("blocked_by_rule", tpl, name, caller.name, (rule.loc,))
    return Admitted(route, params, caller, purpose, rule)


def consent_reason(
    rule: CompiledRule,
    states: Mapping[str, ConsentState],
    now: datetime,
    *,
    gpc: bool = False,
    tcf: TCFResult | None = None,
    vendor: int | None = None,
) -> str | None:
    """None when the subject's consent facts allow the rule, else the reason code.

    Precedence: GPC opt-out first; then for each required consent key a withdrawal in the store
    always wins; a valid store consent (not expired, not older than the purpose's max age, given to a
    recent enough notice) suffices; otherwise, for the purpose's own consent, a TCF string that
    allows the mapped TCF purposes (and the caller's vendor) suffices when the purpose reads TCF.
    """
    purpose = rule.purpose
    if gpc and (purpose.gpc_honor or rule.respect_gpc):
        return "gpc_opt_out"
    reads_tcf = "tcf" in purpose.sources and purpose.needs_consent
    if reads_tcf and (purpose.consent_key is None or "store" not in purpose.sources):
        why = _tcf_reason(purpose, tcf, vendor)
        if why is not None:
            return why
    oldest = now - purpose.max_age if purpose.max_age is not None else None
    for key in rule.consent_keys:
        state = states.get(key, MISSING_STATE)
        if state.status is Status.WITHDRAWN:
            return "consent_withdrawn"
        why = _store_reason(purpose, state, now, oldest)
        if why is None:
            continue
        if reads_tcf and key == purpose.consent_key:
            tcf_why = _tcf_reason(purpose, tcf, vendor)
            if tcf_why is None:
                continue
            if tcf_why == "tcf_invalid" and why == "consent_missing":
                why = tcf_why
        return why
    return None


def consent_reasons(
    rule: CompiledRule,
    subjects: Iterable[str],
    states: Mapping[tuple[str, str], ConsentState],
    now: datetime,
    *,
    gpc: bool = False,
    vendor: int | None = None,
) -> dict[str, str | None]:
    """`consent_reason` for each subject of a list response (one batched store lookup, no TCF string),
    with what is the same for every subject worked out once."""
    purpose = rule.purpose
    keys = rule.consent_keys
    if ("tcf" in purpose.sources and purpose.needs_consent) or (gpc and (purpose.gpc_honor or rule.respect_gpc)):
        return {s: consent_reason(rule, {k: states[(s, k)] for k in keys if (s, k) in states}, now, gpc=gpc,
                                  vendor=vendor) for s in subjects}
    oldest = now - purpose.max_age if purpose.max_age is not None else None
    out: dict[str, str | None] = {}
    for s in subjects:
        why = None
        for key in keys:
            state = states.get((s, key), MISSING_STATE)
            if state.status is Status.WITHDRAWN:
                why = "consent_withdrawn"
                break
            why = _store_reason(purpose, state, now, oldest)
            if why is not None:
                break
        out[s] = why
    return out


def _store_reason(purpose: CompiledPurpose, state: ConsentState, now: datetime, oldest: datetime | None
                  ) -> str | None:
    """`oldest`: now less the purpose's max age (None: no max age)."""
    if state.status is Status.EXPIRED:
        return "consent_expired"
    if state.status is not Status.GIVEN:
        return "consent_missing"
    if state.expires_at is not None and state.expires_at <= now:
        return "consent_expired"
    if oldest is not None and state.at is not None and state.at < oldest:
        return "consent_expired"
    if purpose.min_notice is not None and (state.notice_version or 0) < purpose.min_notice:
        return "consent_stale"
    return None


def _tcf_reason(purpose: CompiledPurpose, tcf: TCFResult | None, vendor: int | None) -> str | None:
    if tcf is None:
        return "consent_missing"
    if not tcf.valid or tcf.string is None:
        return "tcf_invalid"
    from veil.consent.tcf import allows

    ok = allows(tcf.string, purposes=purpose.tcf_purposes, special_features=purpose.tcf_features,
                vendor_id=vendor, legitimate_interest=purpose.tcf_li)
    return None if ok else "consent_missing"
