"""SSH connections to one server, each lent to one thread at a time and reused: a run logs in
once per worker, not once per file, and a connection that dropped is noticed and replaced."""

from __future__ import annotations

import contextlib
import posixpath
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from storage.errors import RetryableStorageError, StorageError


@dataclass
class Session:
    """One SSH connection with its SFTP session; used by one thread at a time."""

    client: Any  # paramiko.SSHClient
    sftp: Any  # paramiko.SFTPClient
    home: str  # the login folder, where relative paths start

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def absolute(self, path: str) -> str:
        return path if path.startswith("/") else posixpath.normpath(posixpath.join(self.home, path))

    def close(self) -> None:
        self.client.close()  # closes the SFTP channel with the transport


@dataclass
class Lease:
    session: Session
    reused: bool
    broken: bool = False


class SessionPool:
    """Up to `size` connections, each lent to one thread at a time: paramiko's SFTPClient
    mixes up replies when two threads send requests at once. Idle connections are reused,
    so a run logs in once per worker, not once per file."""

    def __init__(self, opener: Callable[[], Session], size: int, wait: float):
        self.opener = opener
        self.size = size
        self.wait = wait
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Session] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def lease(self, *, fresh: bool = False) -> Iterator[Lease]:
        # Bounded wait: a thread that already holds a lease and asks for another cannot hang.
        if not self._slots.acquire(timeout=self.wait):
            raise RetryableStorageError(f"all {self.size} SFTP connections stayed busy for {self.wait:.0f}s")
        try:
            lease = self._take(fresh)
            try:
                yield lease
            except BaseException as exc:
                lease.broken = lease.broken or not _leaves_session_usable(exc)
                raise
            finally:
                self._give_back(lease)
        finally:
            self._slots.release()

    def _take(self, fresh: bool) -> Lease:
        with self._lock:
            idle, self._idle = (self._idle, []) if fresh else (self._idle[-1:], self._idle[:-1])
        for session in idle:
            if session.alive() and not fresh:
                return Lease(session, reused=True)
            session.close()  # dropped while idle (server restart, NAT time-out), or being replaced
        return Lease(self.opener(), reused=False)

    def _give_back(self, lease: Lease) -> None:
        if not lease.broken and lease.session.alive():
            with self._lock:
                if not self._closed:
                    self._idle.append(lease.session)
                    return
        lease.session.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()


def _leaves_session_usable(exc: BaseException) -> bool:
    """Our own refusals and SFTP status replies (errno set) leave the session in step; a
    time-out or protocol error may leave replies in flight, so that connection is dropped."""
    if isinstance(exc, StorageError):
        return True
    return isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, (TimeoutError, ConnectionError))


def dropped(lease: Lease, exc: Exception) -> bool:
    """The reused connection died under the operation (as opposed to the operation failing)."""
    if not lease.reused or isinstance(exc, StorageError):
        return False
    return isinstance(exc, (EOFError, ConnectionError)) or not lease.session.alive()
