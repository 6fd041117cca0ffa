"""What an S3 HEAD answer says about a stored object, read once for every provider: the digests
the server computed over the stored bytes (only those that are digests of the whole file, as
the provider's entry allows), the version and the Object Lock protection."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from storage.s3.providers import S3Provider
from storage.values import Retention, iso_utc

_PLAIN_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


def native_digests(head: Mapping[str, Any], provider: S3Provider) -> dict[str, str]:
    """Digests the server computed over the stored bytes, hex encoded, only where they are
    digests of the whole file and the provider's entry says they are what they seem."""
    native = {}
    sha256 = _full_object_sha256(head) if provider.checksum == "SHA256" else None
    if sha256:
        native["sha256"] = sha256
    md5 = _etag_md5(head) if provider.etag_is_md5 else None
    if md5:
        native["md5"] = md5
    crc32c = _full_object_crc32c(head) if provider.full_object_crc32c else None
    if crc32c:
        native["crc32c"] = crc32c
    return native


def _full_object_crc32c(head: Mapping[str, Any]) -> str | None:
    # Of the whole object only when the server says FULL_OBJECT (an overlapped upload); a
    # COMPOSITE one is a CRC of the parts' CRCs.
    value = head.get("ChecksumCRC32C")
    if not value or head.get("ChecksumType") != "FULL_OBJECT":
        return None
    return _decoded(value, 4)


def _full_object_sha256(head: Mapping[str, Any]) -> str | None:
    # A multipart object carries a checksum of the part checksums, not the file's digest (S3
    # has no full-object SHA-256 for multipart), so it is left out. Real S3 marks it ("...=-3",
    # ChecksumType COMPOSITE); moto returns it bare, so the ETag's "-N" is checked too.
    value = head.get("ChecksumSHA256")
    if not value or "-" in value or head.get("ChecksumType") == "COMPOSITE" or _is_multipart(head):
        return None
    return _decoded(value, 32)


def _decoded(value: str, length: int) -> str | None:
    """A base64 checksum header as hex, if it is a digest of that many bytes."""
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None  # not a digest we can read: report nothing rather than a wrong value
    return digest.hex() if len(digest) == length else None


def _etag_md5(head: Mapping[str, Any]) -> str | None:
    # The ETag is the MD5 of the bytes only for a single-part object stored unencrypted or
    # with SSE-S3; SSE-KMS and SSE-C ETags are opaque, multipart ones end in "-N".
    value = etag(head).lower()
    if head.get("SSECustomerAlgorithm") or head.get("ServerSideEncryption", "AES256") != "AES256":
        return None
    return value if _PLAIN_MD5_ETAG.match(value) else None


def etag(head: Mapping[str, Any]) -> str:
    """The ETag without its quotes."""
    return str(head.get("ETag", "")).strip('"')


def _is_multipart(head: Mapping[str, Any]) -> bool:
    return "-" in etag(head)


def retention(head: Mapping[str, Any]) -> Retention | None:
    """Object Lock mode, retain-until date and legal hold, as HEAD reports them."""
    mode = head.get("ObjectLockMode")
    until = head.get("ObjectLockRetainUntilDate")
    hold = head.get("ObjectLockLegalHoldStatus") == "ON"
    if not mode and not hold:
        return None
    if isinstance(until, datetime):
        until = iso_utc(until)
    return Retention(mode=mode or "HOLD", until=until, legal_hold=hold)
