"""The preflight probe, written once for every backend: is the target reachable, does its
bucket's write-once protection fit the settings, and does it take a create-only write."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import google_crc32c

from storage.errors import NotFound, PermanentStorageError, StorageError, without_target
from storage.values import BucketRetention, Checksums, LocalFile, ProbeResult

if TYPE_CHECKING:
    from storage.target import Target

# Where the probe writes its probe objects, under the target's prefix: one place a bucket policy
# can allow deletes for, or a lifecycle rule can clean.
PROBE_PREFIX = ".rtk-archive-probe"
PROBE_BYTES = b"rtk-archive probe object: written to check that this target accepts files, then removed.\n"


def probe_target(target: Target) -> list[ProbeResult]:
    """Check `target` before any file is sent to it, in three steps: access (reachable,
    credentials accepted: a stat of a key that cannot exist must answer "not found"), retention
    (as the bucket itself reports it, against what this target asks for) and write (the tool's
    own create-only put of a small probe object under PROBE_PREFIX, read back and removed).
    Where an object might not be removable (retention configured, or a bucket that locks new
    objects), write permission is proven without storing anything. One attempt per step, no
    retries: the pipeline decides about retries and time limits. A failed access step ends the
    probe (nothing else can work)."""
    key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
    access = _step(target, "access", lambda: _access(target, key))
    if not access.ok:
        return [access]
    try:
        with target._errors("reading the retention settings"):
            bucket = target._bucket_retention()
    except StorageError as exc:
        # Often only a missing read permission: say so, and store nothing to be safe.
        bucket = BucketRetention(summary=f"could not be read ({without_target(exc, target.name)})",
                                 locks_new_objects=True)
        retention = ProbeResult("retention", "warn", bucket.summary + "; the write check "
                                "stores nothing permanent")
    else:
        retention = (ProbeResult("retention", "fail", f"{bucket.summary}; {bucket.problem}")
                     if bucket.problem else ProbeResult("retention", "ok", bucket.summary))
    protected = target._protection_needs() is not None
    locked = bucket.locks_new_objects or (protected and not target.capabilities.retained_objects_removable)
    write = _step(target, "write", lambda: _write(target, key, locked))
    return [access, retention, write]


def _step(target: Target, check: str, step) -> ProbeResult:
    try:
        status, detail = step()
    except StorageError as exc:
        return ProbeResult(check, "fail", without_target(exc, target.name), retryable=exc.retryable)
    return ProbeResult(check, status, detail)


def _access(target: Target, key: str) -> tuple[str, str]:
    full = target.full_key(key)
    try:
        with target._errors("reaching the target"):
            found = target._stat(full)
    except NotFound:
        return "ok", f"{target.describe()}: reached, access granted"
    raise PermanentStorageError(f"{found.uri} exists although its name is random: this target "
                                "does not answer \"not found\" for a missing key", target=target.name)


def _write(target: Target, key: str, locked: bool) -> tuple[str, str]:
    full = target.full_key(key)
    if locked:
        with target._errors(f"trial upload of {full}"):
            how = target._probe_write_nothing(full)
        return "ok", f"writable: {how}; nothing was stored (objects here may not be removable)"
    with _probe_file() as file:
        stored = target.put(file, key)
        with target.open_read(key) as stream:
            back = stream.read(len(PROBE_BYTES) + 1)
    try:
        with target._errors(f"removal of {stored.uri}"):
            target._delete(full)
    except StorageError as exc:
        removal = (f"the probe object could not be removed: {without_target(exc, target.name)}; remove it "
                   f"by hand, or allow deletes under {PROBE_PREFIX}/")
    else:
        removal = None
    if back != PROBE_BYTES:
        return "fail", (f"the probe object {stored.uri} read back {len(back)} bytes that differ from "
                        f"the {len(PROBE_BYTES)} written" + (f"; {removal}" if removal else ""))
    if removal:
        return "warn", f"writable (create-only put, read back), but {removal}"
    detail = "writable: a probe object was created (create-only), read back and removed"
    if not target.capabilities.conditional_create:
        detail += ("; this store offers no conditional write, so create-only rests on the look "
                   "before each write alone")
    return "ok", detail


@contextlib.contextmanager
def _probe_file() -> Iterator[LocalFile]:
    """PROBE_BYTES as a LocalFile with all three digests, in a private temporary file."""
    crc = google_crc32c.Checksum()
    crc.update(PROBE_BYTES)
    checksums = Checksums(sha256=hashlib.sha256(PROBE_BYTES).hexdigest(),
                          md5=hashlib.md5(PROBE_BYTES, usedforsecurity=False).hexdigest(), crc32c=crc.digest().hex())
    fd, name = tempfile.mkstemp(prefix="rtk-archive-probe-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(PROBE_BYTES)
        yield LocalFile(path=Path(name), size=len(PROBE_BYTES), checksums=checksums)
    finally:
        os.unlink(name)
