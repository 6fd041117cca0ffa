"""Verifying a copy in the pipeline: after every upload (`verify_copy`) and in `verify`. The
comparison itself and the re-read are storage's (`storage.compare`), written once and shared
with `Target.put`; here they become the pipeline's errors and problems."""

from __future__ import annotations

from pipeline.errors import VerificationError
from storage import LocalFile, StoredObject, TargetSettings, compare_copy, read_back

__all__ = ["compare_bytes", "compare_copy", "read_back", "verify_copy"]


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
