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
from veil.reasons import REASONS, Reason

if TYPE_CHECKING:
    from veil.consent.tcf import TCFResult

PURPOSE_RE = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")

# code → (HTTP status, title): the table of veil.reasons.Reason (kept here for older imports)
__all__ = ["REASONS", "Admitted", "Blocked", "Reason", "admit", "consent_reason", "consent_reasons", "no_content",
           "status_reason"]


def status_reason(status: int) -> Reason | None:
    """What an upstream status means before its body is read: None for 2xx (the body is enforced),
    else the reason of the block. 1xx interim responses never get here (the upstream client skips
    them); a status veil cannot relay (outside 200-599, 101 included) is `upstream_status_invalid`."""
    if not 200 <= status <= 599:
        return Reason.UPSTREAM_STATUS_INVALID
    if status < 300:
        return None
    return Reason.UPSTREAM_REDIRECT if status < 400 else Reason.UPSTREAM_STATUS


def no_content(status: int, body: bytes) -> bool:
    """Whether a 2xx response has nothing to enforce, and so passes with an empty body (decision allow,
    nothing disclosed): 204 and 205 never carry a body; any other 2xx (200, 201, 202, 203, ...) whose
    body is zero bytes, whatever its content type says (an empty 201 Created with a Location, an empty
    202 Accepted). A body of one byte or more is enforced as JSON, or refused."""
    return status in (204, 205) or not body


@dataclass(frozen=True, slots=True)
class Blocked:
    reason: Reason
    route: str | None = None  # template, for metrics
    purpose: str | None = None
    caller: str | None = None
    locations: tuple[Location, ...] = ()

    @property
    def status(self) -> int:
        return self.reason.status


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
        return Blocked(Reason.ROUTE_NOT_COVERED)
    route, params = found
    tpl = route.template
    caller: CompiledCaller | None = None
    if len(keys) > 1:
        return Blocked(Reason.KEY_AMBIGUOUS, tpl)
    if keys:
        caller = policy.authenticate(keys[0])
    elif cert_subject is not None:
        caller = policy.cert_index.get(cert_subject)
    if caller is None:
        return Blocked(Reason.UNKNOWN_CALLER, tpl)
    if not purposes:
        return Blocked(Reason.PURPOSE_MISSING, tpl, caller=caller.name)
    if len(purposes) > 1 or "," in purposes[0]:
        return Blocked(Reason.PURPOSE_AMBIGUOUS, tpl, caller=caller.name)
    name = purposes[0].strip()
    purpose = policy.purposes.get(name)  # defined purpose names are valid names: check those first
    if purpose is None:
        if not PURPOSE_RE.fullmatch(name):
            return Blocked(Reason.PURPOSE_INVALID, tpl, caller=caller.name)
        return Blocked(Reason.PURPOSE_UNKNOWN, tpl, caller=caller.name)
    if name not in caller.claimable and not caller.may_claim(name):
        return Blocked(Reason.PURPOSE_NOT_ALLOWED, tpl, name, caller.name, (caller.loc,))
    rule = route.rules.get(name)
    if rule is None:
        return Blocked(Reason.PURPOSE_NOT_COVERED, tpl, name, caller.name, (route.loc,))
    if rule.callers is not None and caller.name not in rule.callers:
        return Blocked(Reason.CALLER_NOT_ALLOWED, tpl, name, caller.name, (rule.loc,))
    if rule.block is not None:
        return Blocked(Reason.BLOCKED_BY_RULE, tpl, name, caller.name, (rule.loc,))
    return Admitted(route, params, caller, purpose, rule)


def consent_reason(
    rule: CompiledRule,
    states: Mapping[str, ConsentState],
    now: datetime,
    *,
    gpc: bool = False,
    tcf: TCFResult | None = None,
    vendor: int | None = None,
) -> Reason | None:
    """None when the subject's consent facts allow the rule, else the reason code.

    Precedence: GPC opt-out first; then for each required consent key a withdrawal in the store
    always wins; a valid store consent (not expired, not older than the purpose's max age, given to a
    recent enough notice) suffices; otherwise, for the purpose's own consent, a TCF string that
    allows the mapped TCF purposes (and the caller's vendor) suffices when the purpose reads TCF.
    """
    purpose = rule.purpose
    if gpc and (purpose.gpc_honor or rule.respect_gpc):
        return Reason.GPC_OPT_OUT
    reads_tcf = "tcf" in purpose.sources and purpose.needs_consent
    if reads_tcf and (purpose.consent_key is None or "store" not in purpose.sources):
        why = _tcf_reason(purpose, tcf, vendor)
        if why is not None:
            return why
    oldest = now - purpose.max_age if purpose.max_age is not None else None
    for key in rule.consent_keys:
        state = states.get(key, MISSING_STATE)
        if state.status is Status.WITHDRAWN:
            return Reason.CONSENT_WITHDRAWN
        why = _store_reason(purpose, state, now, oldest)
        if why is None:
            continue
        if reads_tcf and key == purpose.consent_key:
            tcf_why = _tcf_reason(purpose, tcf, vendor)
            if tcf_why is None:
                continue
            if tcf_why == Reason.TCF_INVALID and why == Reason.CONSENT_MISSING:
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
) -> dict[str, Reason | None]:
    """`consent_reason` for each subject of a list response (one batched store lookup, no TCF string),
    with what is the same for every subject worked out once."""
    purpose = rule.purpose
    keys = rule.consent_keys
    if ("tcf" in purpose.sources and purpose.needs_consent) or (gpc and (purpose.gpc_honor or rule.respect_gpc)):
        return {s: consent_reason(rule, {k: states[(s, k)] for k in keys if (s, k) in states}, now, gpc=gpc,
                                  vendor=vendor) for s in subjects}
    oldest = now - purpose.max_age if purpose.max_age is not None else None
    out: dict[str, Reason | None] = {}
    get, withdrawn = states.get, Status.WITHDRAWN  # a list response judges a thousand subjects
    for s in subjects:
        why = None
        for key in keys:
            state = get((s, key), MISSING_STATE)
            if state.status is withdrawn:
                why = Reason.CONSENT_WITHDRAWN
                break
            why = _store_reason(purpose, state, now, oldest)
            if why is not None:
                break
        out[s] = why
    return out


def _store_reason(purpose: CompiledPurpose, state: ConsentState, now: datetime, oldest: datetime | None
                  ) -> Reason | None:
    """`oldest`: now less the purpose's max age (None: no max age)."""
    status = state.status
    if status is not Status.GIVEN:
        return Reason.CONSENT_EXPIRED if status is Status.EXPIRED else Reason.CONSENT_MISSING
    if state.expires_at is not None and state.expires_at <= now:
        return Reason.CONSENT_EXPIRED
    if oldest is not None and state.at is not None and state.at < oldest:
        return Reason.CONSENT_EXPIRED
    if purpose.min_notice is not None and (state.notice_version or 0) < purpose.min_notice:
        return Reason.CONSENT_STALE
    return None


def _tcf_reason(purpose: CompiledPurpose, tcf: TCFResult | None, vendor: int | None) -> Reason | None:
    if tcf is None:
        return Reason.CONSENT_MISSING
    if not tcf.valid or tcf.string is None:
        return Reason.TCF_INVALID
    from veil.consent.tcf import allows

    ok = allows(tcf.string, purposes=purpose.tcf_purposes, special_features=purpose.tcf_features,
                vendor_id=vendor, legitimate_interest=purpose.tcf_li)
    return None if ok else Reason.CONSENT_MISSING
