"""What one archiving command records as it goes, from many threads at once: its counts (each
in one unit), its problems (one line each, also logged), and its audit lines (the trail is
written before the ledger says anything is archived)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, fields

from pipeline.archive.context import Context

log = logging.getLogger("rtk_archive.archive")


@dataclass
class RunSummary:
    run_id: str
    archived: int = 0  # files newly archived (verified at every target) by this run
    failed: int = 0  # files that could not be archived at one or more targets (+ audit log copies)
    skipped: int = 0  # files_skipped + recordings_skipped (the key scripts already read)
    lost: int = 0  # files_lost + recordings_lost
    at_risk: int = 0  # recordings near RealtimeKit's deletion and still not archived everywhere
    bytes_downloaded: int = 0  # bytes fetched from the file server by this run (resumed spool bytes excluded)
    interrupted: bool = False
    budget_stop: str | None = None  # why a budget (--max-duration, --max-transfer) stopped new files
    files_not_started: int = 0  # files that budget left for the next run
    problems: list[str] = field(default_factory=list)  # one line per failure, lost or skipped item
    at_risk_ids: list[str] = field(default_factory=list)
    # The same, each in one unit.
    files_failed: int = 0
    files_lost: int = 0  # RealtimeKit no longer serves them and no target holds them
    files_skipped: int = 0  # nothing to do: archived at every target, or lost in an earlier run
    recordings_skipped: int = 0  # not UPLOADED yet, or RealtimeKit holds no copy
    recordings_lost: int = 0  # their 7 days ended before every file was archived
    copies_stored: int = 0  # recording files stored and verified at a target
    copies_failed: int = 0  # copies (files, manifests, audit logs) that could not be stored

    def counts(self) -> dict:
        return {"archived": self.archived, "failed": self.failed, "skipped": self.skipped,
                "lost": self.lost, "at_risk": self.at_risk,
                "files_archived": self.archived, "files_failed": self.files_failed,
                "files_lost": self.files_lost, "files_skipped": self.files_skipped,
                "recordings_skipped": self.recordings_skipped, "recordings_lost": self.recordings_lost,
                "recordings_at_risk": self.at_risk, "copies_stored": self.copies_stored,
                "copies_failed": self.copies_failed, "bytes_downloaded": self.bytes_downloaded}


_COUNTERS = {f.name for f in fields(RunSummary) if f.type == "int"}


class Book:
    """The run's summary, problems and audit lines behind one lock."""

    def __init__(self, context: Context):
        self.context = context
        self.summary = RunSummary(run_id=context.run_id)
        self._lock = threading.Lock()

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, amount in increments.items():
                if name not in _COUNTERS:
                    raise AttributeError(f"RunSummary has no counter {name!r}")
                setattr(self.summary, name, getattr(self.summary, name) + amount)

    def problem(self, line: str, **fields) -> None:
        """`fields`: structured fields for --log-format json (recording_id, file, target, error)."""
        with self._lock:
            self.summary.problems.append(line)
        log.error("%s", line, extra=fields)

    def audit(self, action: str, **fields) -> None:
        if self.context.audit is not None:
            self.context.audit.event(action, **fields)

    # One outcome each: the ledger, the counts, the problem line and the audit line together.

    def file_failed(self, rid: str, kind: str, reason: str) -> None:
        self.context.ledger.set_file_state(rid, kind, "failed", reason, count_attempt=True)
        self.count(failed=1, files_failed=1)
        self.problem(reason, recording_id=rid, file=kind, error=reason)
        self.audit("failed", recording_id=rid, kind=kind, reason=reason)

    def file_lost(self, rid: str, kind: str, reason: str) -> None:
        self.context.ledger.set_file_state(rid, kind, "lost", reason, count_attempt=True)
        self.count(lost=1, files_lost=1)
        self.problem(f"lost: {reason}", recording_id=rid, file=kind, error=reason)
        self.audit("lost", recording_id=rid, kind=kind, reason=reason)

    def not_everywhere(self, rid: str, kind: str, reasons: dict[str, str]) -> None:
        """A file still missing at some target after this run: failed, with every reason."""
        self.context.ledger.set_file_state(rid, kind, "failed", "; ".join(reasons.values()))
        self.count(failed=1, files_failed=1)
