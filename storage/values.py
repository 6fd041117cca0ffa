"""The values that cross the storage boundary: a verified local file with its digests, what a
target holds under a key, the results of a target's preflight probe, and the one spelling of a
moment in time that rtk-archive writes anywhere (storage and pipeline alike)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Literal

# User-metadata name under which every object carries the file's own SHA-256. Lower case,
# letters, digits and underscores: the one spelling that S3 (lower-cases names), Azure (C#
# identifiers only) and GCS all accept.
SHA256_METADATA_KEY = "rtk_sha256"


def iso_utc(value: datetime | str | None) -> str | None:
    """The one timestamp format: ISO 8601 in UTC with milliseconds and a Z
    ("2031-01-02T03:04:05.000Z"), as RealtimeKit writes its own, so timestamps sort and compare as
    text everywhere (retain-until dates, the ledger, the audit log, manifests, API queries). A
    datetime without a zone is taken as UTC; a string is parsed first; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
