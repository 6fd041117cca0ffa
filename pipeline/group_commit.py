"""Group commit: many writers to one file, one fsync for all of them. The ledger's write-ahead
log (pipeline.ledger.sqlite_sync) and the audit log (pipeline.audit) both use it, so a record
that must be on disk before the caller goes on costs a share of an fsync, not one of its own."""

from __future__ import annotations

import threading


class GroupCommit:
    """`committed()` numbers a write once its bytes are written (call it under the writer's own
    lock, so numbers follow the order of the writes); `wait_durable(n)` returns once an fsync
    that began after write n has finished. The first waiter fsyncs for everyone written so far;
    those arriving meanwhile wait for the next fsync, which one of them makes. `_fsync` is the
    file's own (it raises when the write is not known to be durable); once one failed, every
    wait raises the same (a later fsync that succeeds does not bring lost writes back)."""

    def __init__(self) -> None:
        self._commits = 0
        self._synced = 0
        self._syncing = False
        self._failed: BaseException | None = None
        self._cond = threading.Condition()

    def committed(self) -> int:
        self._commits += 1
        return self._commits

    @property
    def last(self) -> int:
        """The number of the last write so far (what a caller waits for to have all of them)."""
        return self._commits

    def wait_durable(self, commit: int) -> None:
        with self._cond:
            while self._synced < commit:
                if self._failed is not None:  # after a failed fsync nothing is known to be on disk
                    raise self._failed
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing, covered = True, self._commits
                try:
                    self._cond.release()
                    try:
                        self._fsync()
                    except Exception as exc:
                        self._failed = exc
                        raise
                    finally:
                        self._cond.acquire()
                    self._synced = max(self._synced, covered)
                finally:
                    self._syncing = False
                    self._cond.notify_all()

    def _fsync(self) -> None:
        raise NotImplementedError
