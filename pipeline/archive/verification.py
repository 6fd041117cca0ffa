"""The one comparison of a stored copy with the file it must be, used after every upload
(`verify_copy`) and by `verify`, and the one re-read of a stored copy's bytes. Every difference is quoted with
what was found and what was expected, so a report says exactly what changed."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pipeline.errors import VerificationError
from storage import LocalFile, StoredObject, Target, TargetSettings, describe_missing, missing_protection

READ_CHUNK = 1 << 20


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


def verify_copy(local: LocalFile, stored: StoredObject, target_name: str, *,
                protection: TargetSettings | None = None) -> str:
    """Compare a copy just stored with the file it came from (and, when the target asks for
    write-once protection, check the copy carries it); returns what was compared. Raises
    VerificationError on any difference: the copy is then not marked archived."""
    problems, compared = compare_copy(stored, size=local.size, digests=local.checksums.as_dict(),
                                      protection=protection)
    if problems:
        raise VerificationError(f"target '{target_name}': copy at {stored.uri} does not match the download: "
                                + "; ".join(problems) + "; it was not marked archived")
    return "+".join(compared)
