"""Group commit for the SQLite ledger's write-ahead log: many commits, one fsync."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pipeline.errors import BookkeepingError


class GroupSync:
    """Group commit for the WAL: `committed()` numbers a commit whose frames are written (under
    the ledger's lock); `wait_durable(n)` returns once an fsync of the WAL that began after
    commit n was written has finished. The first waiter fsyncs for everyone committed so far;
    those arriving meanwhile wait for the next fsync, which one of them makes."""

    def __init__(self, path: Path):
        self._wal = Path(f"{path}-wal")
        self._fd: int | None = None
        self._commits = 0
        self._synced = 0
        self._syncing = False
        self._cond = threading.Condition()

    def committed(self) -> int:
        self._commits += 1
        return self._commits

    def wait_durable(self, commit: int) -> None:
        with self._cond:
            while self._synced < commit:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing, covered = True, self._commits
                try:
                    self._cond.release()
                    try:
                        self._fsync()
                    finally:
                        self._cond.acquire()
                    self._synced = max(self._synced, covered)
                finally:
                    self._syncing = False
                    self._cond.notify_all()

    def _fsync(self) -> None:
        try:
            self._fsync_wal()
        except OSError as exc:  # the write is not known to be durable: the ledger cannot go on
            raise BookkeepingError(f"ledger {self._wal.with_name(self._wal.name[:-4])}: cannot sync its "
                                   f"write-ahead log: {exc.strerror or exc}") from None

    def _fsync_wal(self) -> None:
        if self._fd is None:
            self._fd = os.open(self._wal, os.O_RDONLY)
            # Once: the WAL's name in its folder is durable too.
            folder = os.open(self._wal.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
