"""Time as rtk-archive writes it: the one timestamp format (defined once, in storage.values,
the lowest layer: ISO 8601 in UTC with milliseconds and a Z, `2026-11-30T02:30:00.000Z`, as
RealtimeKit writes its own), now, and reading it back. The ledger, the audit log, manifests,
reports and the API's query parameters all use it, so they sort and compare as text."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from storage import iso_utc

__all__ = ["from_iso", "iso_utc", "parse_duration", "utcnow"]

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def utcnow() -> str:
    """Now, in the one format."""
    return iso_utc(datetime.now(timezone.utc))


def from_iso(text: str) -> datetime:
    """A timestamp written by `iso_utc` (or any ISO 8601 text) as an aware datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_duration(text: str) -> timedelta:
    """A length of time as people write it: 90s, 45m, 2h, 30d, 2w (one number and unit).
    Raises ValueError with a message saying what is accepted."""
    match = _DURATION.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a length of time: use a number and a unit, like 90s, 45m, 2h, 30d, 2w")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > 100 * 365 * 86_400:
        raise ValueError(f"{text!r} is longer than a hundred years")
    return timedelta(seconds=seconds)
