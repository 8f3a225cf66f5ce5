"""Durations as the policy language and veil.yaml write them: "13 months", "400 days", "2 weeks",
"1 year" (singular or plural). One table of units for both (a month is 30.4375 days, a year 365.25)."""

from __future__ import annotations

DAYS_PER_UNIT = {"day": 1.0, "week": 7.0, "month": 30.4375, "year": 365.25}


def unit_days(unit: str) -> float:
    """Days in one unit ("days" or "day"); 0 for a word that is not a unit."""
    return DAYS_PER_UNIT.get(unit.rstrip("s"), 0.0)


def duration_days(text: str) -> float | None:
    """Days in a duration as written ("13 months"); None when it is not one."""
    amount, _, unit = text.strip().partition(" ")
    if not amount.isdigit():
        return None
    days = int(amount) * unit_days(unit.strip())
    return days if days > 0 else None
