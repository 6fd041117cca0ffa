"""The ledger: what rtk-archive knows and did, per recording, per file and per target.

`open_ledger` is the one place a backend is chosen and opened; everything else speaks the
`Ledger` protocol and its typed rows."""

from __future__ import annotations

from pathlib import Path

from pipeline.ledger.protocol import Ledger
from pipeline.ledger.rows import (PROBLEM_STATES, AtRisk, AuditHead, CopyRow, FileRow, Known, ListedFile,
                                  ListedRecording, Problem, RecordingRow, RunRow, SignatureRow, StoredCopy,
                                  TimestampRow)
from pipeline.ledger.sqlite import SqliteLedger

__all__ = ["PROBLEM_STATES", "AtRisk", "AuditHead", "CopyRow", "FileRow", "Known", "Ledger", "ListedFile",
           "ListedRecording", "Problem", "RecordingRow", "RunRow", "SignatureRow", "StoredCopy", "TimestampRow",
           "is_postgres_url", "open_ledger"]


def open_ledger(location: Path | str, *, command: str | None = None, pool_size: int = 8) -> Ledger:
    """The ledger to record in as `command`, or, without a command, to read only (nothing created
    or locked). `location` is an SQLite file's path (created when missing; the right to record is
    held until it is closed: another command that records is refused with LockedError) or a
    postgresql:// URL (shared: no run lock; its schema must be at this code's version)."""
    if isinstance(location, str) and is_postgres_url(location):
        from pipeline.ledger.postgres import PostgresLedger  # psycopg is imported only for it

        return PostgresLedger.open(location, command=command, pool_size=pool_size)
    return SqliteLedger.open(Path(location), command=command)


def is_postgres_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.split(":", 1)[0] in ("postgresql", "postgres")
