"""What an archiving command works with, opened once by `pipeline.session`: the configuration,
the ledger, the audit log (None when the command only reads), the targets, the RealtimeKit
client and the HTTP client for file downloads (None when the command needs none), and the
event that asks it to stop."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.audit import AuditLog
from pipeline.config import Config
from pipeline.archive.evidence.timestamps import stamp_head
from pipeline.errors import BookkeepingError
from pipeline.ledger import Ledger
from storage import Target

log = logging.getLogger("rtk_archive")


@dataclass
class Context:
    config: Config
    command: str
    run_id: str
    ledger: Ledger
    audit: AuditLog | None  # None: the command reads only (or cannot record: see `recording`)
    targets: dict[str, Target] = field(default_factory=dict)
    api: Any = None  # pipeline.realtimekit's client, when the command talks to RealtimeKit
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def recording(self) -> bool:
        """Whether this command records: results go to the audit log, then the ledger."""
        return self.audit is not None

    def note_audit_head(self) -> None:
        """Sync the audit log and record in the ledger where it ends now (its last whole line,
        also after a write failed), so `audit verify` catches a log cut short after this command."""
        if self.audit is None:
            return
        if self.audit.failure is None:
            self.audit.sync()
        self.ledger.record_audit_head(audit_path=self.config.audit.path, lines=self.audit.lines,
                                      head=self.audit.head, command=self.command, run_id=self.run_id)
        if self.audit.lines:  # and, with [timestamping], a trusted time for it (a failure is a warning)
            stamp_head(self.config, self.ledger, lines=self.audit.lines, head=self.audit.head)

    @contextlib.contextmanager
    def noting_audit_head(self) -> Iterator[None]:
        """Around a command's work: where the audit log ends is recorded afterwards, also when
        the work failed (a failure to record it then is logged: the first error is reported)."""
        try:
            yield
        except BaseException:
            try:
                self.note_audit_head()
            except BookkeepingError as exc:
                log.error("%s", exc)
            raise
        self.note_audit_head()
