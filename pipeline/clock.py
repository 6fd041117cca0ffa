"""The one timestamp format of rtk-archive: ISO 8601 in UTC with milliseconds and a `Z`
(`2026-11-30T02:30:00.000Z`), as RealtimeKit writes its own. The ledger, the audit log, the
manifests, the reports and the API's query parameters all use it, so they sort and compare as
text."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_utc(value: datetime | None) -> str | None:
    """`value` in the one format; a naive datetime is taken as UTC; None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> str:
    """Now, in the one format."""
    return iso_utc(datetime.now(timezone.utc))


def from_iso(text: str) -> datetime:
    """A timestamp written by `iso_utc` (or any ISO 8601 text) as an aware datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
