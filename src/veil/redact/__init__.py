"""The redaction core: field paths, value transforms and compiled field plans (pure: no I/O)."""

from veil.redact.engine import (
    Action,
    DocumentTooDeep,
    FieldFate,
    FieldPlan,
    FieldRule,
    Guard,
    Report,
    RuleError,
    compile_plan,
)
from veil.redact.paths import (
    AnyKey,
    Deep,
    Each,
    FieldPath,
    Key,
    Segment,
    ends_with,
    format_path,
    matches,
    parse_path,
    template,
)
from veil.redact.transforms import Transform, TransformArgError, TransformTypeError

__all__ = [
    "Action",
    "AnyKey",
    "Deep",
    "DocumentTooDeep",
    "Each",
    "FieldFate",
    "FieldPath",
    "FieldPlan",
    "FieldRule",
    "Guard",
    "Key",
    "Report",
    "RuleError",
    "Segment",
    "Transform",
    "TransformArgError",
    "TransformTypeError",
    "compile_plan",
    "ends_with",
    "format_path",
    "matches",
    "parse_path",
    "template",
]
