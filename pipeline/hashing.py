"""Digests computed while bytes flow: SHA-256 (the archive's identity of a file) plus the MD5
and CRC32C that the backends check natively on upload."""

from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path

import google_crc32c

from storage.base import Checksums

CHUNK_SIZE = 1 << 20


class Hasher:
    """Feed it chunks in order; `checksums()` gives the three digests."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._crc32c = google_crc32c.Checksum()
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha256.update(chunk)
        self._md5.update(chunk)
        self._crc32c.update(chunk)
        self.size += len(chunk)

    def checksums(self) -> Checksums:
        return Checksums(
            sha256=self._sha256.hexdigest(),
            md5=self._md5.hexdigest(),
            crc32c=self._crc32c.digest().hex(),
        )


def hash_file(path: Path, *, limit: int | None = None) -> Hasher:
    """Hash a file (or its first `limit` bytes) in fixed chunks: memory stays flat."""
    hasher = Hasher()
    remaining = limit
    with open(path, "rb") as fh:
        while remaining is None or remaining > 0:
            want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
            chunk = fh.read(want)
            if not chunk:
                break
            hasher.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return hasher


class BackgroundHasher:
    """A Hasher fed from its own thread, so hashing overlaps receiving and writing.

    hashlib and google-crc32c release the GIL on large buffers, so on two cores the digests
    cost almost no wall time. The queue is bounded: memory stays flat (a few MiB) and a slow
    hasher slows the download instead of buffering it."""

    _DONE = object()

    def __init__(self, hasher: Hasher | None = None, depth: int = 64):
        self.hasher = hasher or Hasher()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="hasher", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (chunk := self._queue.get()) is not self._DONE:
            if self._error is None:
                try:
                    self.hasher.update(chunk)
                except BaseException as exc:  # handed to the caller by finish()
                    self._error = exc

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def finish(self) -> Hasher:
        """Wait for every queued chunk to be hashed; the Hasher holds the digests."""
        self._queue.put(self._DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.hasher
