"""Moving an altered copy out of the way before `repair` puts the good bytes back under its key:
rtk-archive never overwrites, so the altered object is first copied aside to
`quarantine/<key>` at the same target (create-only, verified: nothing is lost, an auditor can
still look at it) and only then removed. Where its retention or legal hold forbids removal, it
is left as it is. Also the one way `repair` reads a stored copy into the spool while hashing it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from pipeline.archive.hashing import CHUNK_SIZE, Hasher
from pipeline.archive.store import ascii_metadata
from pipeline.archive.verification import compare_copy
from pipeline.clock import iso_utc
from pipeline.errors import VerificationError
from storage import LocalFile, ObjectConflict, StorageError, StoredObject, Target

QUARANTINE_PREFIX = "quarantine"


class QuarantineRefused(Exception):
    """The altered object was copied aside (`quarantine_key`) but could not be removed."""

    def __init__(self, message: str, quarantine_key: str):
        super().__init__(message)
        self.quarantine_key = quarantine_key


@contextlib.contextmanager
def spooled_copy(target: Target, key: str, spool: Path, *, md5: bool) -> Iterator[LocalFile]:
    """The object under `key`, read into a private spool file while its digests are computed
    (raises NotFound or StorageError); the spool file is removed afterwards."""
    fd, name = tempfile.mkstemp(dir=spool, prefix=".rtk-repair-")
    try:
        hasher = Hasher(md5=md5)
        with os.fdopen(fd, "wb") as out, target.open_read(key) as stream:
            while chunk := stream.read(CHUNK_SIZE):
                hasher.update(chunk)
                out.write(chunk)
        yield LocalFile(path=Path(name), size=hasher.size, checksums=hasher.checksums(), disposable=True)
    finally:
        os.unlink(name)


def removal_forbidden(target: Target, stored: StoredObject) -> str | None:
    """Why the write-once protection `stored` carries forbids removing it, or None. A folder's
    read-only mode can be undone by its owner (capabilities.retained_objects_removable)."""
    retention = stored.retention
    if retention is None or target.capabilities.retained_objects_removable:
        return None
    if retention.legal_hold:
        return "it is under a legal hold, which forbids moving it aside"
    if retention.until is None:
        return f"its retention ({retention.mode}) forbids moving it aside"
    if retention.until > iso_utc(datetime.now(timezone.utc)):
        return f"its retention ({retention.mode} until {retention.until}) forbids moving it aside"
    return None


def move_aside(target: Target, key: str, spool: Path, *, md5: bool, audit: Callable[..., None],
               recording_id: str, kind: str) -> str:
    """Copy the object under `key` to `quarantine/<key>` at the same target, verify that copy,
    then remove the original. Returns the quarantine key. Raises QuarantineRefused when the
    original cannot be removed, StorageError / VerificationError when the copy aside fails (the
    original is then untouched)."""
    with spooled_copy(target, key, spool, md5=md5) as altered:
        metadata = {"rtk_recording_id": ascii_metadata(recording_id), "rtk_kind": kind,
                    "rtk_quarantined_from": ascii_metadata(key)}
        aside = f"{QUARANTINE_PREFIX}/{key}"
        try:
            stored = target.put(altered, aside, metadata)
        except ObjectConflict:  # another altered version was moved aside before: keep both
            stamp = iso_utc(datetime.now(timezone.utc)).replace(":", "").replace("-", "").replace(".", "")
            aside = f"{QUARANTINE_PREFIX}/{key}.{stamp}"
            stored = target.put(altered, aside, metadata)
        problems, _ = compare_copy(stored, size=altered.size, digests=altered.checksums.as_dict())
        if problems:
            raise VerificationError(f"the copy aside at {stored.uri} does not match the altered object: "
                                    + "; ".join(problems) + "; the altered object was left in place")
        audit("quarantined", recording_id=recording_id, kind=kind, target=target.name, key=key,
              quarantine_key=aside, uri=stored.uri, sha256=altered.checksums.sha256, size=altered.size)
    try:
        target.remove(key)
    except StorageError as exc:
        raise QuarantineRefused(f"it was copied aside to {aside}, but could not be removed: {exc}", aside) from exc
    return aside
