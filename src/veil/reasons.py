"""Reason codes: why veil decided what it did. One enum, each member carrying its HTTP status and the
problem title; the code (the member's value) is stable and appears in problem+json bodies, decision
records, `Veil-Report-Only` headers and the `reason` label of `veil_requests_total`.

A reason that does not exist is an AttributeError at import time (and a mypy error), never a 500.
`OK` is the reason of every decision that let data leave.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    status: int
    # the problem+json title; it shadows str.title on purpose (a reason's title is its problem title)
    title: str  # type: ignore[assignment]

    def __new__(cls, code: str, status: int, title: str) -> Reason:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        member.title = title
        return member

    OK = ("ok", 200, "Allowed")
    # admission (steps 1-3)
    ROUTE_NOT_COVERED = ("route_not_covered", 403, "No policy route covers this request")
    PATH_INVALID = ("path_invalid", 400, "The request path is not in normal form")
    METHOD_OVERRIDE = ("method_override", 400, "Method override headers are not accepted")
    UNKNOWN_CALLER = ("unknown_caller", 401, "Unknown caller")
    KEY_AMBIGUOUS = ("key_ambiguous", 400, "More than one Veil-Key header")
    CALLER_NOT_ALLOWED = ("caller_not_allowed", 403, "This caller may not use this route for this purpose")
    PURPOSE_MISSING = ("purpose_missing", 400, "No purpose declared")
    PURPOSE_AMBIGUOUS = ("purpose_ambiguous", 400, "More than one purpose declared")
    PURPOSE_INVALID = ("purpose_invalid", 400, "The declared purpose is not a valid purpose name")
    PURPOSE_UNKNOWN = ("purpose_unknown", 403, "The declared purpose is not defined by the policy")
    PURPOSE_NOT_ALLOWED = ("purpose_not_allowed", 403, "This caller may not claim this purpose")
    PURPOSE_NOT_COVERED = ("purpose_not_covered", 403, "This route has no rule for the declared purpose")
    BLOCKED_BY_RULE = ("blocked_by_rule", 403, "Blocked by policy")
    HEADERS_TOO_LARGE = ("headers_too_large", 431, "Request headers are too large")
    # subject, consent and signals (step 4)
    SUBJECT_MISSING = ("subject_missing", 400, "The request does not identify the data subject")
    SUBJECT_UNIDENTIFIED = ("subject_unidentified", 502, "The upstream response does not identify the data subject")
    REQUEST_BODY_INVALID = ("request_body_invalid", 400, "The request body cannot be read for its subject")
    REQUEST_BODY_TOO_LARGE = ("request_body_too_large", 413, "The request body exceeds the size limit")
    # the client's request on the wire (veil.proxy.reqbody, veil.proxy.h1server)
    REQUEST_ABORTED = ("request_aborted", 400, "The request body did not arrive whole")
    REQUEST_TIMEOUT = ("request_timeout", 408, "The request did not arrive in time")
    UPGRADE_REFUSED = ("upgrade_refused", 400, "Protocol upgrades (WebSocket) are not supported")
    CONSENT_MISSING = ("consent_missing", 403, "The data subject has not consented to this purpose")
    CONSENT_WITHDRAWN = ("consent_withdrawn", 403, "The data subject withdrew consent for this purpose")
    CONSENT_EXPIRED = ("consent_expired", 403, "The data subject's consent has expired")
    CONSENT_STALE = ("consent_stale", 403, "Consent was given to an older notice version")
    CONSENT_UNAVAILABLE = ("consent_unavailable", 503, "Consent cannot be verified right now")
    GPC_OPT_OUT = ("gpc_opt_out", 403, "The data subject opted out with Global Privacy Control")
    TCF_INVALID = ("tcf_invalid", 403, "The TCF consent string is invalid")
    # the upstream and its response (steps 5-6)
    UPSTREAM_UNAVAILABLE = ("upstream_unavailable", 502, "The upstream service is unavailable")
    UPSTREAM_TIMEOUT = ("upstream_timeout", 504, "The upstream service timed out")
    UPSTREAM_REDIRECT = ("upstream_redirect", 502, "The upstream answered with a redirect")
    UPSTREAM_STATUS = ("upstream_status", 502, "The upstream answered with an error status")
    UPSTREAM_STATUS_INVALID = ("upstream_status_invalid", 502, "The upstream answered with a status veil cannot relay")
    UPSTREAM_BUSY = ("upstream_busy", 503, "No upstream connection became free in time")
    BODY_INVALID = ("body_invalid", 502, "The upstream body cannot be enforced")
    BODY_TOO_LARGE = ("body_too_large", 502, "The upstream body exceeds the size limit")
    CONTENT_TYPE_UNSUPPORTED = ("content_type_unsupported", 502, "The upstream content type cannot be enforced")
    ENCODING_UNSUPPORTED = ("encoding_unsupported", 502, "The upstream content encoding cannot be enforced")
    RANGE_NOT_ALLOWED = ("range_not_allowed", 416, "Byte ranges are not served on enforced routes")
    # veil itself (step 7 and the edges)
    AUDIT_UNAVAILABLE = ("audit_unavailable", 503, "The decision log cannot be written")
    AUDIT_BACKLOG_FULL = ("audit_backlog_full", 503, "The decision log cannot be shipped and its local backlog is full")
    POLICY_UNAVAILABLE = ("policy_unavailable", 503, "No valid policy is loaded")
    RATE_LIMITED = ("rate_limited", 429, "Too many failed authentications")
    INTERNAL_ERROR = ("internal_error", 500, "Internal error")

    @classmethod
    def of(cls, code: str) -> Reason:
        """The Reason for a code; ValueError for an unknown one."""
        found = cls._value2member_map_.get(code)
        if found is None:
            raise ValueError(f"unknown reason code {code!r}")
        return found  # type: ignore[return-value]

    @property
    def code(self) -> str:
        return self.value

    @property
    def discloses(self) -> bool:
        """Whether a decision with this reason lets the response body leave (only OK does)."""
        return self is Reason.OK


# code → (status, title), for readers that want the table (docs, tests, problem bodies).
REASONS: dict[str, tuple[int, str]] = {r.value: (r.status, r.title) for r in Reason if r is not Reason.OK}


__all__ = ["REASONS", "Reason"]
