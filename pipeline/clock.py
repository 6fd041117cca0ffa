"""Time as rtk-archive writes it: the one timestamp format (defined once, in storage.values,
the lowest layer: ISO 8601 in UTC with milliseconds and a Z, `2026-11-30T02:30:00.000Z`, as
RealtimeKit writes its own), now, and reading it back. The ledger, the audit log, manifests,
reports and the API's query parameters all use it, so they sort and compare as text."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from storage import iso_utc

__all__ = ["duration_seconds", "from_iso", "iso_utc", "parse_duration", "utcnow"]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_CENTURY = 100 * 365 * 86_400


def utcnow() -> str:
    """Now, in the one format."""
    return iso_utc(datetime.now(timezone.utc))


def from_iso(text: str) -> datetime:
    """A timestamp written by `iso_utc` (or any ISO 8601 text) as an aware datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def duration_seconds(value: str | int | float) -> float:
    """The one reading of a length of time, for every option and setting that takes one:
    a number of seconds, or a number and a unit (ms, s, m, h, d, w), or several (`1h30m`).
    Raises ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: use 90s, 45m, 1h30m, 2d, 2w or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(number + unit for number, unit in parts) != text:
                raise ValueError(f"{value!r} is not a duration: use 90s, 45m, 1h30m, 2d, 2w or a number of seconds")
            seconds = sum(float(number) * _SECONDS[unit] for number, unit in parts)
    if not 0 <= seconds <= _CENTURY:
        raise ValueError(f"{value!r} must be from 0 to a hundred years")
    return seconds


def parse_duration(text: str) -> timedelta:
    """`duration_seconds` as a timedelta."""
    return timedelta(seconds=duration_seconds(text))