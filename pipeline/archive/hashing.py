"""Digests computed while bytes flow: SHA-256 (the archive's identity of a file) plus the MD5
and CRC32C that the backends check natively on upload."""

from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path

import google_crc32c

from storage import Checksums

CHUNK_SIZE = 1 << 20


class Hasher:
    """Feed it chunks in order; `checksums()` gives the three digests."""

    def __init__(self, *, md5: bool = True) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._crc32c = google_crc32c.Checksum()
        self.size = 0

    @property
    def with_md5(self) -> bool:
        return self._md5 is not None

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha256.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)
        self._crc32c.update(chunk)
        self.size += len(chunk)

    def checksums(self) -> Checksums:
        return Checksums(
            sha256=self._sha256.hexdigest(),
            md5=self._md5.hexdigest() if self._md5 is not None else None,
            crc32c=self._crc32c.digest().hex(),
        )


def hash_file(path: Path, *, limit: int | None = None, md5: bool = True) -> Hasher:
    """Hash a file (or its first `limit` bytes) in fixed chunks: memory stays flat."""
    hasher = Hasher(md5=md5)
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


class InlineHasher:
    """BackgroundHasher's interface, hashing on the caller's thread (for small files)."""

    def __init__(self, hasher: Hasher):
        self.hasher = hasher
        self.update = hasher.update

    def finish(self) -> Hasher:
        return self.hasher


class BackgroundHasher:
    """Digests computed on worker threads, so hashing runs beside the download instead of
    after it: SHA-256 and CRC32C on one thread, MD5 (when wanted) on a second.

    hashlib and google-crc32c release the GIL while they hash. The download thread only
    collects its 64 KiB reads into batches of about `BATCH` bytes; the first worker joins each
    batch into one block (a hash call per 64 KiB read would wait for the GIL after every one,
    starving the workers) and passes the block on to the MD5 worker. Queues are bounded:
    memory stays flat (a few MiB) and a slow hasher slows the download instead of buffering it."""

    BATCH = 2 << 20
    _DONE = None

    def __init__(self, hasher: Hasher | None = None, depth: int = 3):
        self.hasher = hasher or Hasher()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._errors: list[BaseException] = []
        h = self.hasher
        self._batches: queue.Queue = queue.Queue(maxsize=depth)
        self._blocks: queue.Queue | None = queue.Queue(maxsize=depth) if h._md5 is not None else None
        self._threads = [threading.Thread(target=self._hash_batches, name="hash-sha256", daemon=True)]
        if self._blocks is not None:
            self._threads.append(threading.Thread(target=self._hash_md5, name="hash-md5", daemon=True))
        for thread in self._threads:
            thread.start()

    def _hash_batches(self) -> None:
        h = self.hasher
        try:
            while (batch := self._batches.get()) is not self._DONE:
                if self._errors:
                    continue
                block = b"".join(batch)
                h._sha256.update(block)
                h._crc32c.update(block)
                if self._blocks is not None:
                    self._blocks.put(block)
        except BaseException as exc:  # handed to the caller by finish()
            self._errors.append(exc)
        finally:
            if self._blocks is not None:
                self._blocks.put(self._DONE)

    def _hash_md5(self) -> None:
        try:
            while (block := self._blocks.get()) is not self._DONE:
                if not self._errors:
                    self.hasher._md5.update(block)
        except BaseException as exc:  # handed to the caller by finish()
            self._errors.append(exc)

    def update(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._batches.put(self._pending)  # a list of reads: joined by the worker
            self.hasher.size += self._pending_size
            self._pending = []
            self._pending_size = 0

    def finish(self) -> Hasher:
        """Wait until every byte given is hashed; the Hasher then holds the digests."""
        self._flush()
        self._batches.put(self._DONE)
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]
        return self.hasher
