"""How a `gcs` target's failures read: google-cloud-storage and google-auth exceptions mapped to
storage errors, and the few facts read from GCS's error bodies (its fixed reason words only)."""

from __future__ import annotations

import contextlib

from storage.errors import (
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    RetryableStorageError,
    StorageError,
    is_retryable_status,
    require_sdk,
)

SDK_PACKAGE = "google-cloud-storage"


def no_bucket(action: str, bucket: str, target: str) -> PermanentStorageError:
    return PermanentStorageError(
        f"{action}: bucket {bucket} does not exist (or the credentials cannot "
        "see it); create it or fix bucket", target=target)


def classify(exc: Exception, action: str, *, bucket: str, target: str) -> StorageError:
    """Map a google-cloud-storage / google-auth exception to a storage error whose message names
    what to fix and never quotes the service's text beyond its fixed reason words."""
    api = require_sdk("google.api_core.exceptions", SDK_PACKAGE, target=target)
    auth = require_sdk("google.auth.exceptions", "google-auth", target=target)
    if isinstance(exc, api.NotFound):  # e.g. an object deleted while it was being read
        if mentions_bucket(exc):
            return no_bucket(action, bucket, target)
        return NotFound(f"{action}: no such object in bucket {bucket}", target=target)
    if isinstance(exc, (api.PreconditionFailed, api.Conflict)):
        return ObjectConflict(f"{action}: an object already exists under this name in bucket "
                              f"{bucket}; rtk-archive never overwrites", target=target)
    if isinstance(exc, (api.Forbidden, api.Unauthorized)):
        return PermanentStorageError(
            f"{action}: access refused (HTTP {exc.code}); check secret / the service account's "
            f"permissions on bucket {bucket}", target=target)
    if isinstance(exc, auth.RefreshError) and not getattr(exc, "retryable", False):
        return PermanentStorageError(
            f"{action}: no access token could be obtained; check secret (the service-account "
            "key may be revoked, deleted or for another project)", target=target)
    if isinstance(exc, auth.DefaultCredentialsError):
        return PermanentStorageError(
            f"{action}: no credentials: set secret to the service-account key JSON, or "
            "provide application default credentials", target=target)
    if isinstance(exc, (auth.RefreshError, auth.TransportError)):
        return RetryableStorageError(f"{action}: the token endpoint is unavailable", target=target)
    if isinstance(exc, api.GoogleAPICallError):
        return _by_status(exc, action, target)
    if isinstance(exc, ValueError) and "bytes remaining" in str(exc):
        # The SDK's own message about a short source (sizes only, no secret).
        return PermanentStorageError(f"{action}: the source file is shorter than its verified "
                                     "size; it changed after it was verified", target=target)
    if isinstance(exc, OSError):  # requests' connection errors and source read errors
        return RetryableStorageError(f"{action}: I/O error ({type(exc).__name__})", target=target)
    return RetryableStorageError(f"{action}: {type(exc).__name__}", target=target)


def _by_status(exc, action: str, target: str) -> StorageError:
    code = getattr(exc, "code", None)
    if is_retryable_status(code):
        return RetryableStorageError(f"{action}: the service is unavailable (HTTP {code})",
                                     target=target)
    if code == 400 and _mentions_checksum(exc):
        return PermanentStorageError(
            f"{action}: GCS refused the bytes: their checksum differs from the file's "
            "(corrupted on transfer, or the source changed); nothing was stored", target=target)
    reason = _reason(exc)
    return PermanentStorageError(f"{action}: refused by the service (HTTP {code}"
                                 f"{', ' + reason if reason else ''})", target=target)


def data_corruption_types() -> tuple[type[Exception], ...]:
    """DataCorruption moved into google-cloud-storage in 3.0; older versions raise
    google-resumable-media's."""
    types = []
    with contextlib.suppress(ImportError):  # absent in google-cloud-storage < 3
        from google.cloud.storage.exceptions import DataCorruption

        types.append(DataCorruption)
    with contextlib.suppress(ImportError):  # absent when google-resumable-media is not installed
        from google.resumable_media import DataCorruption as LegacyDataCorruption

        types.append(LegacyDataCorruption)
    return tuple(types)


def generation_of(exc: Exception):
    """The generation of the object a failed check created, from the final response."""
    response = getattr(exc, "response", None)
    with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):  # no JSON: by name
        return int(response.json()["generation"])
    return None


def _error_payload(exc: Exception) -> dict:
    response = getattr(exc, "response", None)
    with contextlib.suppress(ValueError, AttributeError, TypeError):  # not a JSON error body
        error = response.json().get("error")
        if isinstance(error, dict):
            return error
    return {}


def _reason(exc: Exception) -> str:
    """GCS's reason word (notFound, invalid, forbidden...): fixed vocabulary, safe to show."""
    errors = getattr(exc, "errors", None) or _error_payload(exc).get("errors") or []
    for item in errors:
        if isinstance(item, dict) and isinstance(item.get("reason"), str):
            return item["reason"]
    return ""


def _mentions(exc: Exception, *words: str) -> bool:
    message = str(_error_payload(exc).get("message") or "").lower()
    return any(word in message for word in words)


def mentions_bucket(exc: Exception) -> bool:
    return _mentions(exc, "bucket") and not _mentions(exc, "no such object")


def _mentions_checksum(exc: Exception) -> bool:
    return _mentions(exc, "md5", "crc32c", "checksum", "hash")
