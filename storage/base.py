"""The storage adapter protocol: what every backend (local, aws, digitalocean, azure, gcs,
sftp) must do, and the behaviour written once above them.

A backend implements four small hooks (`_upload`, `_stat`, `_open_read`, `_classify`); the
rules that make a put safe (refuse a different object under an existing key, skip an identical
one, never leak a secret in an error) live here, in `Target.put` and `Target._errors`.
Verification of a copy, retries and bookkeeping live in `pipeline/`, not here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import os
import posixpath
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar, Literal

import google_crc32c
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# User-metadata names stored with every object. Lower case, letters, digits and underscores:
# the one spelling that S3 (lower-cases names), Azure (C# identifiers only) and GCS all accept.
SHA256_METADATA_KEY = "rtk_sha256"


# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """A storage operation failed. `retryable` tells the pipeline whether trying again can help.

    Messages are built by the adapters from safe facts (target name, key, an error code),
    never from a credential, so they can be logged and stored in the ledger as they are.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, target: str | None = None):
        self.target = target
        super().__init__(f"target '{target}': {message}" if target else message)


class RetryableStorageError(StorageError):
    """Throttling, time-outs, broken connections, 5xx: the same call may succeed later."""

    retryable = True


class PermanentStorageError(StorageError):
    """Bad credentials, a missing bucket, no permission, a bad setting: a person must act."""


class NotFound(PermanentStorageError, FileNotFoundError):
    """The key does not exist at the target (the one sentinel every backend raises)."""


class ObjectConflict(PermanentStorageError):
    """A different object already sits under the key; rtk-archive never overwrites one."""


class MissingSDK(PermanentStorageError):
    """The backend's SDK is not installed."""


def require_sdk(module: str, package: str, *, target: str | None = None):
    """Import a backend SDK lazily; a missing one says exactly what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingSDK(
            f"the Python package '{package}' is needed for this target: pip install '{package}'",
            target=target,
        ) from exc


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Checksums:
    """A file's digests, hex encoded. CRC32C is the big-endian 32-bit value as 8 hex digits.
    MD5 is None when no configured target checks it (it is the slowest of the three)."""

    sha256: str
    md5: str | None
    crc32c: str

    @staticmethod
    def _b64(hex_value: str) -> str:
        return base64.b64encode(bytes.fromhex(hex_value)).decode("ascii")

    @property
    def sha256_base64(self) -> str:
        return self._b64(self.sha256)

    @property
    def md5_base64(self) -> str:
        return self._b64(self.md5)

    @property
    def crc32c_base64(self) -> str:
        return self._b64(self.crc32c)

    def as_dict(self) -> dict[str, str]:
        """The digests that were computed."""
        values = {"sha256": self.sha256, "md5": self.md5, "crc32c": self.crc32c}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class LocalFile:
    """A complete, verified local file, ready to be stored: its size and digests are known.

    Adapters read the bytes only through `open()`, so the one place that reads a source can be
    exercised by the conformance suite with a source that fails midway."""

    path: Path
    size: int
    checksums: Checksums
    # The pipeline's own spool file, discarded after the upload: a backend on the same file
    # system may take it by hard link instead of writing the bytes a second time.
    disposable: bool = False

    def open(self) -> BinaryIO:
        """A seekable binary stream of the file, positioned at 0."""
        return open(self.path, "rb")


@dataclass(frozen=True)
class Retention:
    """The write-once protection an object carries, as the backend reports it."""

    mode: str  # GOVERNANCE | COMPLIANCE | LOCKED | UNLOCKED | HOLD | READ_ONLY ...
    until: str | None = None  # ISO 8601, UTC
    legal_hold: bool = False


@dataclass(frozen=True)
class StoredObject:
    """What a target holds under a key, as read back from the backend."""

    key: str  # the full key at the target, prefix included
    uri: str  # where a person finds it: s3://bucket/key, sftp://host:port/path, file:///...
    size: int
    sha256: str | None  # the file's SHA-256 as stored in the object's metadata
    # Digests the backend computed itself (hex, same encoding as Checksums): these are the
    # independent evidence the pipeline compares against the file's own digests.
    native: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None  # version id / generation / ETag, where the backend has one
    retention: Retention | None = None


@dataclass(frozen=True)
class ProbeResult:
    """One check of a target before any file is sent to it (see `Target.probe`)."""

    check: str  # access | retention | write
    status: Literal["ok", "warn", "fail"]
    detail: str  # one line, built from safe facts only (never a credential)
    retryable: bool = False  # a failure that may pass when tried again (a busy server, a full disk)

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class BucketRetention:
    """Write-once protection as the bucket (container, folder) itself reports it."""

    summary: str  # one line, e.g. "Object Lock: enabled, default GOVERNANCE 30d"
    # An object written now might never be removable (a default retention, a retention policy,
    # a container-level hold): the write check must then store nothing.
    locks_new_objects: bool = False
    problem: str | None = None  # a configured setting this bucket cannot honour


# --------------------------------------------------------------------------- settings


class TargetSettings(BaseModel):
    """Settings shared by every target type. The field names follow RealtimeKit's
    `storage_config`; each backend's subclass adds the fields it uses and forbids the rest."""

    # hide_input_in_errors: a validation message must never echo a value (it may be a secret).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False)

    name: str = Field(min_length=1)
    type: str
    path: str = ""  # prefix inside the bucket / folder; absent means the root
    key_template: str | None = None  # overrides [archive] key_template for this target
    # Write-once protection, opt-in; each backend says which modes it can enforce.
    retention_mode: Literal["GOVERNANCE", "COMPLIANCE", "READ_ONLY", "LOCKED", "UNLOCKED"] | None = None
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    legal_hold: bool = False

    # What a backend's settings class declares it can enforce; `_check_retention` holds every
    # type's settings to it, so no backend writes these checks again.
    retention_modes: ClassVar[tuple[str, ...]] = ()
    retention_note: ClassVar[str] = ""  # what the modes are, for the error message
    retention_timed: ClassVar[bool] = True  # the modes last retention_days
    legal_hold_supported: ClassVar[bool] = False

    @model_validator(mode="after")
    def _check_retention(self):
        mode, days, modes = self.retention_mode, self.retention_days, self.retention_modes
        if mode is not None and mode not in modes:
            offer = f"use {' or '.join(modes)}{self.retention_note}" if modes else "it offers no retention"
            raise ValueError(f"retention_mode {mode} is not available on {self.type}: {offer}")
        if self.retention_timed:
            if mode is not None and days is None:
                raise ValueError("retention_mode needs retention_days (how long objects stay locked): "
                                 "the two go together")
            if days is not None and mode is None:
                raise ValueError(f"retention_days needs retention_mode ({' or '.join(modes)}): "
                                 "the two go together")
        elif days is not None:
            raise ValueError(f"{self.type} cannot enforce retention_days; retention_mode "
                             f"{' or '.join(modes)}{self.retention_note} is all it offers")
        if self.legal_hold and not self.legal_hold_supported:
            raise ValueError(f"{self.type} cannot enforce legal_hold")
        return self

    @field_validator("path")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:
        return value.strip().strip("/")

    def secret_values(self) -> list[str]:
        """Every secret this target holds, so the pipeline can scrub them from any output."""
        values = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        return values


def unused_field(value, message: str):
    """A storage_config field this type does not use: empty is accepted as it is (so a
    RealtimeKit storage_config can be copied over), any value is refused with `message`."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if text is not None and text.strip():
        raise ValueError(message)
    return value


def check_endpoint(value: str | None) -> str | None:
    """A service URL override (`endpoint`): http(s), a host, no credentials (they would end up
    in logs; keys belong in access_key/secret). Empty means the service's default."""
    if value is None or not value.strip():
        return None
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("endpoint must be a URL like https://host[:port]")
    if parts.username or parts.password:
        raise ValueError("endpoint must not contain credentials")
    return value


# --------------------------------------------------------------------------- the adapter


def check_key(key: str, *, target: str | None = None) -> str:
    """Refuse keys that could leave the target's prefix. The pipeline already builds safe keys;
    this is the last line of defence, so a bug upstream can never write outside the prefix."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\x00" in key or "\\" in key:
        raise PermanentStorageError(f"unsafe object key {key!r}", target=target)
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise PermanentStorageError(f"unsafe object key {key!r}", target=target)
    return key


# Where `probe` writes its probe objects, under the target's prefix: one place a bucket policy
# can allow deletes for, or a lifecycle rule can clean.
PROBE_PREFIX = ".rtk-archive-probe"
PROBE_BYTES = b"rtk-archive probe object: written to check that this target accepts files, then removed.\n"


class Target(ABC):
    """One configured destination. Methods may be called from several threads at once: an
    adapter whose SDK client is not thread-safe guards it itself."""

    type: ClassVar[str]
    settings_model: ClassVar[type[TargetSettings]] = TargetSettings
    # Whether the backend checks the file's MD5 on the way in (the pipeline computes MD5,
    # the slowest digest, only when a configured target does).
    uses_md5: ClassVar[bool] = False
    # Whether an object stored with this target's retention settings can still be removed by
    # the tool (READ_ONLY files can; Object Lock, immutability policies and holds cannot). When
    # not, `probe` proves write permission without storing anything.
    retained_objects_removable: ClassVar[bool] = False

    def __init__(self, settings: TargetSettings):
        self.settings = settings
        self.name = settings.name

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

    def _same_content(self, key: str, existing: StoredObject, file: LocalFile) -> bool:
        """Is the object under `key` the file? By its stored SHA-256, or, for a backend that
        could not store or compute one (SFTP without a remote shell), by reading it back."""
        known = file.checksums.as_dict()
        if any(known.get(name) not in (None, value.lower()) for name, value in existing.native.items()):
            return False  # the backend's own digest contradicts the file, whatever the metadata claims
        if existing.sha256 is not None:
            return existing.sha256 == file.checksums.sha256
        digest = hashlib.sha256()
        with self.open_read(key) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest() == file.checksums.sha256

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

    def sweep_partials(self) -> int:
        """Remove temporary objects a killed run left behind; returns how many. Only backends
        whose temporaries are visible (local, sftp) need this."""
        return 0

    def describe(self) -> str:
        """A one-line, secret-free description for logs: e.g. s3://bucket/prefix."""
        return f"{self.type}:{self.settings.path or '/'}"

    def close(self) -> None:
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the preflight probe, written once ---------------------------------------------------

    def probe(self) -> list[ProbeResult]:
        """Check this target before any file is sent to it, in three steps:
        access (reachable, credentials accepted: a stat of a key that cannot exist must answer
        "not found"), retention (as the bucket itself reports it, against what this target
        asks for) and write (the tool's own create-only put of a small probe object under
        PROBE_PREFIX, read back and removed). Where an object might not be removable (retention
        configured, or a bucket that locks new objects), write permission is proven without
        storing anything. One attempt per step, no retries: the pipeline decides about retries
        and time limits. A failed access step ends the probe (nothing else can work)."""
        key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
        access = self._probe_step("access", lambda: self._probe_access(key))
        if not access.ok:
            return [access]
        try:
            with self._errors("reading the retention settings"):
                bucket = self._bucket_retention()
        except StorageError as exc:
            # Often only a missing read permission: say so, and store nothing to be safe.
            bucket = BucketRetention(summary=f"could not be read ({_reason(exc, self.name)})",
                                     locks_new_objects=True)
            retention = ProbeResult("retention", "warn", bucket.summary + "; the write check "
                                    "stores nothing permanent")
        else:
            retention = (ProbeResult("retention", "fail", f"{bucket.summary}; {bucket.problem}")
                         if bucket.problem else ProbeResult("retention", "ok", bucket.summary))
        protected = self._protection_needs() is not None
        locked = bucket.locks_new_objects or (protected and not self.retained_objects_removable)
        write = self._probe_step("write", lambda: self._probe_write(key, locked))
        return [access, retention, write]

    def _probe_step(self, check: str, step) -> ProbeResult:
        try:
            status, detail = step()
        except StorageError as exc:
            return ProbeResult(check, "fail", _reason(exc, self.name), retryable=exc.retryable)
        return ProbeResult(check, status, detail)

    def _probe_access(self, key: str) -> tuple[str, str]:
        full = self.full_key(key)
        try:
            with self._errors("reaching the target"):
                found = self._stat(full)
        except NotFound:
            return "ok", f"{self.describe()}: reached, access granted"
        raise PermanentStorageError(f"{found.uri} exists although its name is random: this target "
                                    "does not answer \"not found\" for a missing key", target=self.name)

    def _probe_write(self, key: str, locked: bool) -> tuple[str, str]:
        full = self.full_key(key)
        if locked:
            with self._errors(f"trial upload of {full}"):
                how = self._probe_write_nothing(full)
            return "ok", f"writable: {how}; nothing was stored (objects here may not be removable)"
        with _probe_file() as file:
            stored = self.put(file, key)
            with self.open_read(key) as stream:
                back = stream.read(len(PROBE_BYTES) + 1)
        try:
            with self._errors(f"removal of {stored.uri}"):
                self._delete(full)
        except StorageError as exc:
            removal = (f"the probe object could not be removed: {_reason(exc, self.name)}; remove it "
                       f"by hand, or allow deletes under {PROBE_PREFIX}/")
        else:
            removal = None
        if back != PROBE_BYTES:
            return "fail", (f"the probe object {stored.uri} read back {len(back)} bytes that differ from "
                            f"the {len(PROBE_BYTES)} written" + (f"; {removal}" if removal else ""))
        if removal:
            return "warn", f"writable (create-only put, read back), but {removal}"
        return "ok", "writable: a probe object was created (create-only), read back and removed"

    def _bucket_retention(self) -> BucketRetention:
        """The bucket's own write-once settings. A folder or SFTP server has none: what this
        target asks for is all there is to report."""
        mode = self.settings.retention_mode
        if mode is None:
            return BucketRetention(summary="no retention configured")
        return BucketRetention(summary=f"retention_mode {mode}: each file is made read-only after it is "
                                       "written (the owner can undo it)")

    def _protection_needs(self) -> str | None:
        """"retention_mode needs" / "legal_hold needs" / "retention_mode and legal_hold need", for
        a bucket that cannot provide them; None when neither is configured."""
        wanted = [name for name, on in (("retention_mode", self.settings.retention_mode is not None),
                                        ("legal_hold", self.settings.legal_hold)) if on]
        if not wanted:
            return None
        return " and ".join(wanted) + (" need" if len(wanted) > 1 else " needs")

    def _probe_write_nothing(self, full_key: str) -> str:
        """Prove that an object could be created under `full_key` without creating one (a
        multipart upload started and aborted, a block staged and never committed, an upload
        session opened and cancelled). Returns what was done, for the report. Backends whose
        objects can be locked implement it."""
        raise PermanentStorageError(f"{self.type} targets cannot check write permission without "
                                    "writing", target=self.name)

    # -- backend hooks ----------------------------------------------------------------------

    @abstractmethod
    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        """Upload with the SDK's managed (multipart / resumable / block) upload, sending the
        backend's native integrity check; abort and clean up on failure; return the object
        read back from the backend after the upload, as `_stat` would. Never overwrite: the base class checked, but a backend that offers a
        create-only condition should use it too."""

    @abstractmethod
    def _stat(self, full_key: str) -> StoredObject:
        """Read size, metadata SHA-256 and native checksums back; raise NotFound if absent."""

    @abstractmethod
    def _open_read(self, full_key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A context manager yielding a readable binary stream of the object."""

    @abstractmethod
    def _delete(self, full_key: str) -> None:
        """Remove the object (every trace of it: a versioned store deletes that version). Only
        the probe uses it: archived copies are never deleted by the tool."""

    @abstractmethod
    def _classify(self, exc: Exception, action: str) -> StorageError:
        """Map an SDK exception to Retryable/Permanent/NotFound with a safe, helpful message
        naming what to fix (never str() of an exception that may echo a credential)."""

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except StorageError as exc:
            if exc.target is None:
                exc.target = self.name
                exc.args = (f"target '{self.name}': {exc.args[0]}",)
            raise
        except Exception as exc:  # every SDK failure is classified, none escapes raw
            raise self._classify(exc, action) from exc


def _reason(exc: StorageError, target: str) -> str:
    """The message of a storage error without its "target 'x': " lead (the caller names it)."""
    text = str(exc)
    lead = f"target '{target}': "
    return text[len(lead):] if text.startswith(lead) else text


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
