"""Digests computed while bytes flow: SHA-256 (the archive's identity of a file) plus the MD5
and CRC32C that the backends check natively on upload."""

from __future__ import annotations

import hashlib
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
