"""The one comparison of a stored copy with the file it must be, and the one re-read of a
stored copy's bytes. `Target.put` uses it to tell "already there" from "something else is
there"; the pipeline uses it after every upload and in `verify`. Every difference is quoted
with what was found and what was expected, so a report says exactly what changed."""

from __future__ import annotations

import hashlib
import contextlib
from collections.abc import Mapping
from typing import BinaryIO, Protocol

from storage.protection import describe_missing, missing_protection
from storage.settings import TargetSettings
from storage.values import StoredObject

READ_CHUNK = 1 << 20


class Readable(Protocol):
    """What a re-read needs of a target (storage.target.Target is one)."""

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]: ...


def compare_copy(stored: StoredObject, *, size: int | None, digests: Mapping[str, str | None],
                 protection: TargetSettings | None = None) -> tuple[list[str], list[str]]:
    """Compare what the backend reports for a copy (size, the SHA-256 stored with it, the
    digests the backend computed itself, and the write-once protection the target's settings
    ask for, when given) with the file's size and digests. Returns (problems, what was compared)."""
    problems: list[str] = []
    compared: list[str] = []
    missing = missing_protection(protection, stored) if protection is not None else []
    if missing:
        problems.append(f"write-once protection missing: {describe_missing(protection, stored, missing)}")
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


def read_back(target: Readable, key: str) -> tuple[int, str]:
    """Re-read a stored copy: its length and the SHA-256 of its bytes (raises StorageError)."""
    digest = hashlib.sha256()
    count = 0
    with target.open_read(key) as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
            count += len(chunk)
    return count, digest.hexdigest()
