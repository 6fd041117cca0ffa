"""The one comparison of a stored copy with the file it must be, used after every upload and
by `verify`, and the one re-read of a stored copy's bytes. Every difference is quoted with
what was found and what was expected, so a report says exactly what changed."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from storage import StoredObject, Target

READ_CHUNK = 1 << 20


def compare_copy(stored: StoredObject, *, size: int | None, digests: Mapping[str, str | None],
                 retention: str | None = None) -> tuple[list[str], list[str]]:
    """Compare what the backend reports for a copy (size, the SHA-256 stored with it, the
    digests the backend computed itself, and the write-once protection when one is required)
    with the file's size and digests. Returns (problems, what was compared)."""
    problems: list[str] = []
    compared: list[str] = []
    if retention and (stored.retention is None or stored.retention.mode != retention):
        found = stored.retention.mode if stored.retention else "none"
        problems.append(f"retention {retention} was requested but the object carries {found}")
    if size is not None:
        compared.append("size")
        if stored.size != size:
            problems.append(f"size is {stored.size}, expected {size}")
    expected_sha256 = digests.get("sha256")
    if stored.sha256 is not None and expected_sha256:
        compared.append("sha256(metadata)")
        if stored.sha256 != expected_sha256:
            problems.append(f"the SHA-256 stored with it is {stored.sha256}, expected {expected_sha256}")
    for name, value in sorted(stored.native.items()):
        expected = digests.get(name)
        if expected:
            compared.append(f"{name}(backend)")
            if value.lower() != expected.lower():
                problems.append(f"the backend's {name} is {value.lower()}, expected {expected}")
    return problems, compared


def read_back(target: Target, key: str) -> tuple[int, str]:
    """Re-read a stored copy: its length and the SHA-256 of its bytes (raises StorageError)."""
    digest = hashlib.sha256()
    count = 0
    with target.open_read(key) as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
            count += len(chunk)
    return count, digest.hexdigest()


def compare_bytes(found: tuple[int, str], *, size: int | None, sha256: str | None) -> list[str]:
    """A re-read copy against the file: one problem quoting both lengths and both hashes."""
    count, digest = found
    if (size is None or count == size) and (not sha256 or digest == sha256):
        return []
    return [f"re-read {count} bytes with SHA-256 {digest}, expected {size if size is not None else '?'} bytes "
            f"with SHA-256 {sha256 or '?'} (content altered)"]
