"""The tamper-evident decision log: writer (`AuditLog`), verifier (`verify`) and the per-subject
access report (`report`). File layout and record format: see `veil.audit._chain`.
"""

from veil.audit.log import AuditLog, AuditRecordInvalid
from veil.audit.report import Disclosure, Recipient, SubjectReport, pseudonym, pseudonyms, report
from veil.audit.verify import VerifyResult, find_chains, verify

__all__ = [
    "AuditLog",
    "AuditRecordInvalid",
    "Disclosure",
    "Recipient",
    "SubjectReport",
    "VerifyResult",
    "find_chains",
    "pseudonym",
    "pseudonyms",
    "report",
    "verify",
]
