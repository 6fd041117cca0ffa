"""Write-once protection, written once: when a new object's retention ends, and the one comparison of the protection a target asks for with what a stored
object carries (used by every adapter after an upload, and by the pipeline's verification)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from storage.values import StoredObject


class ProtectionSettings(Protocol):
    """What a target asks for (a TargetSettings has both)."""

    retention_mode: str | None
    legal_hold: bool


def retain_until(days: int) -> datetime:
    """The end of the retention of an object written now."""
    return datetime.now(UTC) + timedelta(days=days)


def missing_protection(settings: ProtectionSettings, stored: StoredObject) -> list[str]:
    """The write-once settings the stored object does not honour, by name: "retention_mode"
    when a retention mode is asked for and the object carries another one (or none; a backend
    reports a retention without an end date as mode HOLD), "legal_hold" when a hold is asked for
    and the object has none. Empty when it carries everything asked for."""
    retention = stored.retention
    missing = []
    if settings.retention_mode and (retention is None or retention.mode != settings.retention_mode):
        missing.append("retention_mode")
    if settings.legal_hold and (retention is None or not retention.legal_hold):
        missing.append("legal_hold")
    return missing


def describe_missing(settings: ProtectionSettings, stored: StoredObject, missing: list[str]) -> str:
    """The missing protection in words, quoting what was asked for and what the object carries:
    "retention COMPLIANCE (the object carries none) and a legal hold"."""
    found = stored.retention.mode if stored.retention else "none"
    words = {"retention_mode": f"retention {settings.retention_mode} (the object carries {found})",
             "legal_hold": "a legal hold"}
    return " and ".join(words[name] for name in missing)
