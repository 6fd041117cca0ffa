"""One run per ledger at a time. An advisory `flock` on `<ledger>.lock`: the kernel drops it
when the holder dies, so a lock left by a killed run never blocks the next one. Only commands
that record take it; read-only commands neither take it nor create the file. A lock file that
cannot be created or opened for writing (a directory in its place, a read-only mount) is one
line naming it (`BookkeepingError`)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from pipeline.errors import LockedError, path_error
from pipeline.clock import utcnow
from pipeline.ledger.sqlite_files import READ_ONLY_HINT


class RunLock:
    def __init__(self, ledger_path: Path):
        self.path = Path(str(ledger_path) + ".lock")
        self._fd: int | None = None

    def acquire(self, command: str) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise path_error(f"lock file {self.path}: cannot create its folder", self.path.parent, exc,
                             read_only_hint=READ_ONLY_HINT) from None
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise path_error(f"lock file {self.path}: cannot open it for writing", self.path, exc,
                             read_only_hint=READ_ONLY_HINT) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"another rtk-archive run ({holder}) is using the ledger {self.path.with_suffix('')}; "
                "nothing was done. Wait for it to finish; overlapping runs are refused on purpose"
            ) from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                     "started_at": utcnow()}).encode())
        except OSError as exc:
            self.release()
            raise path_error(f"lock file {self.path}: cannot write who holds it", self.path, exc) from None
        return self

    def held_by(self) -> str | None:
        """Who holds the lock now (pid, host, command, since when), or None when no run does.
        A probe for `status`: never blocks, never creates the lock file; holds a shared lock
        for an instant only."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"unknown (cannot read {self.path}: {exc.strerror})"
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info.get('pid')} on {info.get('host')}, '{info.get('command')}' since {info.get('started_at')}"
    except (ValueError, OSError):
        return "holder unknown"
