"""Group commit for the SQLite ledger's write-ahead log: many commits, one fsync."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import BookkeepingError
from pipeline.group_commit import GroupCommit


class GroupSync(GroupCommit):
    """Group commit for the WAL (pipeline.group_commit): `committed()` under the ledger's lock
    once a commit's frames are written, then `wait_durable(n)`."""

    def __init__(self, path: Path):
        super().__init__()
        self._wal = Path(f"{path}-wal")
        self._fd: int | None = None

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
        # fdatasync, as SQLite itself syncs its WAL: the frames and the file's size (what reading
        # them back needs) reach the disk; the times a full fsync would also write do not matter,
        # and rewriting the WAL from its start after a checkpoint then costs no metadata write.
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
