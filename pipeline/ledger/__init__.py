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
           "open_ledger"]


def open_ledger(path: Path, *, command: str | None = None) -> Ledger:
    """The ledger to record in as `command` (created when missing; the right to record is held
    until it is closed: another command that records is refused with LockedError), or, without
    a command, to read only (nothing created or locked)."""
    return SqliteLedger.open(path, command=command)
