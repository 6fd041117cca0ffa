"""Time as rtk-archive writes it: the one timestamp format (defined once, in storage.values,
the lowest layer: ISO 8601 in UTC with milliseconds and a Z, `2026-11-30T02:30:00.000Z`, as
RealtimeKit writes its own), now, and reading it back. The ledger, the audit log, manifests,
reports and the API's query parameters all use it, so they sort and compare as text."""

from __future__ import annotations

from datetime import datetime, timezone

from storage import iso_utc

__all__ = ["from_iso", "iso_utc", "utcnow"]


def utcnow() -> str:
    """Now, in the one format."""
    return iso_utc(datetime.now(timezone.utc))


def from_iso(text: str) -> datetime:
    """A timestamp written by `iso_utc` (or any ISO 8601 text) as an aware datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
