"""The storage adapter protocol: what every backend must do (a few small hooks), and the
behaviour written once above them: put never overwrites, stat answers NotFound, errors are
classified and never leak a secret, and the preflight probe. Verification of a copy, retries
and bookkeeping live in `pipeline/`, not here."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import socket
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, ClassVar

import google_crc32c

from storage.capabilities import Capabilities
from storage.compare import compare_copy, read_back
from storage.errors import NotFound, ObjectConflict, PermanentStorageError, StorageError, without_target
from storage.settings import TargetSettings
from storage.stream import GrowingFile, SourceFailed
from storage.values import (
    SHA256_METADATA_KEY,
    BucketRetention,
    Checksums,
    LocalFile,
    ProbeResult,
    StoredObject,
)

# Backends whose temporaries are visible (local, sftp) name them ".<name><marker><random>" in
# the final name's folder, so `sweep_partials` can tell them from anything else.
PARTIAL_MARKER = ".rtk-partial-"


def check_key(key: str, *, target: str | None = None) -> str:
    """Refuse keys that could leave the target's prefix. The pipeline already builds safe keys;
    this is the last line of defence, so a bug upstream can never write outside the prefix."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\x00" in key or "\\" in key:
        raise PermanentStorageError(f"unsafe object key {key!r}", target=target)
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise PermanentStorageError(f"unsafe object key {key!r}", target=target)
    return key


def partial_name(final_name: str) -> str:
    """A fresh temporary name beside `final_name`, hidden and marked for `sweep_partials`, that
    says which process writes it (`<host>.<pid>.<random>`): a sweep removes at once what a
    process that is gone from this host left, and others' only when they were abandoned."""
    return f".{final_name}{PARTIAL_MARKER}{HOST_TAG}.{os.getpid()}.{uuid.uuid4().hex}"


def is_partial(name: str) -> bool:
    """Is this file name one of our temporaries?"""
    return name.startswith(".") and PARTIAL_MARKER in name


def abandoned(name: str, mtime: float, older_than: float | None) -> bool:
    """Should a sweep remove this temporary? Always without an age (one run at a time); with
    one (other processes may be writing now): when the process named in it is gone from this
    host, or when it was not written for `older_than` seconds."""
    if older_than is None or mtime < time.time() - older_than:
        return True
    owner = name.rsplit(PARTIAL_MARKER, 1)[-1].split(".")
    if len(owner) != 3 or not owner[1].isdigit():
        return False  # a name from before owners were written: by its age only
    return owner[0] == HOST_TAG and not process_alive(int(owner[1]))


# This machine's name as a temporary's name carries it (no dots: they separate the parts).
HOST_TAG = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def process_alive(pid: int) -> bool:
    """Is a process of this id running on this machine?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class Target(ABC):
    """One configured destination. Methods may be called from several threads at once: an
    adapter whose SDK client is not thread-safe guards it itself."""

    type: ClassVar[str]
    settings_model: ClassVar[type[TargetSettings]] = TargetSettings

    def __init__(self, settings: TargetSettings):
        self.settings = settings
        self.name = settings.name

    @property
    def capabilities(self) -> Capabilities:
        """What this backend can do, as its settings model declares it."""
        return self.settings.capabilities

    @property
    def uses_md5(self) -> bool:
        """Whether the pipeline must compute the file's MD5 for this target."""
        return self.capabilities.uses_md5

    # -- public behaviour, written once ---------------------------------------------------

    def full_key(self, key: str) -> str:
        """The key inside the bucket / under the folder: the target's `path` prefix + key."""
        check_key(key, target=self.name)
        return posixpath.join(self.settings.path, key) if self.settings.path else key

    def put(self, file: LocalFile, key: str, metadata: Mapping[str, str] | None = None) -> StoredObject:
        """Store `file` under `key`, all or nothing. An identical object already there is a
        no-op; a different one is refused with ObjectConflict, never overwritten. Returns the
        object as read back from the backend after the upload: what the pipeline verifies."""
        try:
            existing = self.stat(key)
        except NotFound:
            existing = None
        if existing is not None:
            if existing.size == file.size and self._same_content(key, existing, file):
                return existing
            raise ObjectConflict(
                f"a different object already exists at {existing.uri} "
                f"(size {existing.size}, sha256 {existing.sha256 or 'unknown'}); "
                "rtk-archive never overwrites: move it away or change key_template",
                target=self.name,
            )
        meta = {SHA256_METADATA_KEY: file.checksums.sha256, **(metadata or {})}
        full = self.full_key(key)
        with self._errors(f"upload of {full}"):
            return self._upload(file, full, meta)

    def put_growing(self, source: GrowingFile, key: str, metadata: Mapping[str, str] | None = None) -> StoredObject:
        """Store a file that is still being downloaded (storage/stream.py), all or nothing, and
        committed only after the download was verified. Where something is already under `key`,
        or this backend has no overlapped upload (capabilities.overlapped_upload), it waits
        for the download and does `put`. SourceFailed (the download failed) passes through
        unchanged, after the backend aborted its upload."""
        try:
            existing = self.stat(key)
        except NotFound:
            existing = None
        if existing is not None or not self.capabilities.overlapped_upload:
            return self.put(source.result(), key, metadata)
        full = self.full_key(key)
        with self._errors(f"upload of {full}"):
            return self._upload_growing(source, full, dict(metadata or {}))

    def _same_content(self, key: str, existing: StoredObject, file: LocalFile) -> bool:
        """Is the object under `key` the file? The one comparison (storage.compare) of what the
        backend reports; for a backend that could neither store nor compute a SHA-256 (SFTP
        without a remote shell), by reading it back."""
        problems, _compared = compare_copy(existing, size=file.size, digests=file.checksums.as_dict())
        if problems:
            return False  # the size, the stored SHA-256 or the backend's own digest contradicts the file
        if existing.sha256 is not None:
            return True
        return read_back(self, key) == (file.size, file.checksums.sha256)

    def stat(self, key: str) -> StoredObject:
        """What is stored under `key`; NotFound when nothing is."""
        full = self.full_key(key)
        with self._errors(f"stat of {full}"):
            return self._stat(full)

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        """A binary stream of the stored bytes (for deep verification)."""
        full = self.full_key(key)
        with self._errors(f"read of {full}"):
            with self._open_read(full) as stream:
                yield stream

    def remove(self, key: str) -> None:
        """Remove the object under `key` (every trace of it). Only `repair` uses it, to take an
        altered copy out of the way after copying it aside to a quarantine key; the backend
        enforces write-once protection (a locked object refuses: PermanentStorageError)."""
        full = self.full_key(key)
        with self._errors(f"removal of {full}"):
            self._delete(full)

    def sweep_partials(self, older_than: float | None = None) -> int:
        """Remove temporary objects a killed run left behind (with `older_than`, only those not
        written for that many seconds: other processes may be uploading now); returns how
        many. Backends whose temporaries are visible (capabilities.temporaries_visible) need
        this, and S3, whose open multipart uploads are billed."""
        return 0

    def probe(self) -> list[ProbeResult]:
        """Check this target before any file is sent to it: access, retention, a create-only
        write (see probe_target below)."""
        return probe_target(self)

    def describe(self) -> str:
        """A one-line, secret-free description for logs: e.g. s3://bucket/prefix."""
        return f"{self.type}:{self.settings.path or '/'}"

    def close(self) -> None:
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- backend hooks ----------------------------------------------------------------------

    @abstractmethod
    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        """Upload with the SDK's managed (multipart / resumable / block) upload, sending the
        backend's native integrity check; abort and clean up on failure; return the object
        read back from the backend after the upload, as `_stat` would. Never overwrite: the
        base class checked, but a backend that offers a create-only condition uses it too."""

    def _upload_growing(self, source: GrowingFile, full_key: str, metadata: dict[str, str]) -> StoredObject:
        """Upload while the file arrives, reading `source` in order. `metadata` lacks the
        file's SHA-256 (unknown until the end): add `source.result().checksums.sha256` at commit
        where the backend can. Commit only after `source` returned its end; on SourceFailed or
        any failure, abort so nothing is visible, and re-raise. Backends that declare
        capabilities.overlapped_upload implement it."""
        raise PermanentStorageError(f"{self.type} targets cannot upload a file while it downloads",
                                    target=self.name)

    @abstractmethod
    def _stat(self, full_key: str) -> StoredObject:
        """Read size, metadata SHA-256 and native checksums back; raise NotFound if absent."""

    @abstractmethod
    def _open_read(self, full_key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A context manager yielding a readable binary stream of the object."""

    @abstractmethod
    def _delete(self, full_key: str) -> None:
        """Remove the object (every trace of it: a versioned store deletes that version). Only
        the probe and `remove` (an altered copy `repair` copied aside) use it: archived copies
        are never deleted by the tool."""

    @abstractmethod
    def _classify(self, exc: Exception, action: str) -> StorageError:
        """Map an SDK exception to Retryable/Permanent/NotFound with a safe, helpful message
        naming what to fix (never str() of an exception that may echo a credential)."""

    def _bucket_retention(self) -> BucketRetention:
        """The bucket's own write-once settings, for the probe. A folder or SFTP server has
        none: what this target asks for is all there is to report."""
        mode = self.settings.retention_mode
        if mode is None:
            return BucketRetention(summary="no retention configured")
        return BucketRetention(summary=f"retention_mode {mode}: each file is made read-only after it is "
                                       "written (the owner can undo it)")

    def _probe_write_nothing(self, full_key: str) -> str:
        """Prove that an object could be created under `full_key` without creating one (a
        multipart upload started and aborted, a block staged and never committed, an upload
        session opened and cancelled). Returns what was done, for the report. Backends whose
        objects can be locked implement it."""
        raise PermanentStorageError(f"{self.type} targets cannot check write permission without "
                                    "writing", target=self.name)

    def _protection_needs(self) -> str | None:
        """"retention_mode needs" / "legal_hold needs" / "retention_mode and legal_hold need", for
        a bucket that cannot provide them; None when neither is configured."""
        wanted = [name for name, on in (("retention_mode", self.settings.retention_mode is not None),
                                        ("legal_hold", self.settings.legal_hold)) if on]
        if not wanted:
            return None
        return " and ".join(wanted) + (" need" if len(wanted) > 1 else " needs")

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Every failure inside becomes a StorageError that names this target."""
        try:
            yield
        except SourceFailed:
            raise  # the download failed, not the target: the pipeline reports it where it happened
        except StorageError as exc:
            if exc.target is None:
                exc.target = self.name
                exc.args = (f"target '{self.name}': {exc.args[0]}",)
            raise
        except Exception as exc:  # every SDK failure is classified, none escapes raw
            raise self._classify(exc, action) from exc


# --------------------------------------------------------------------------- the probe

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
    try:
        with _probe_file() as file:
            stored = target.put(file, key)
            with target.open_read(key) as stream:
                back = stream.read(len(PROBE_BYTES) + 1)
    except StorageError:  # stored, then its stat or read back failed: removed, so no retry leaves one
        with contextlib.suppress(StorageError), target._errors(f"removal of the probe object {full}"):
            target._delete(full)
        raise
    removal = None
    try:
        with target._errors(f"removal of {stored.uri}"):
            target._delete(full)
    except StorageError as exc:
        removal = (f"the probe object could not be removed: {without_target(exc, target.name)}; remove it "
                   f"by hand, or allow deletes under {PROBE_PREFIX}/")
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
    crc = google_crc32c.Checksum(PROBE_BYTES)
    checksums = Checksums(sha256=hashlib.sha256(PROBE_BYTES).hexdigest(),
                          md5=hashlib.md5(PROBE_BYTES, usedforsecurity=False).hexdigest(), crc32c=crc.digest().hex())
    fd, name = tempfile.mkstemp(prefix="rtk-archive-probe-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(PROBE_BYTES)
        yield LocalFile(path=Path(name), size=len(PROBE_BYTES), checksums=checksums)
    finally:
        os.unlink(name)
