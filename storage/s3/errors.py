"""How an S3-compatible target's failures read: botocore's exceptions and S3's error codes mapped
to storage errors whose messages name what to fix, built from the error code and fixed text only
(botocore's own message can carry request details: the access key id, the string to sign)."""

from __future__ import annotations

import re
import sys
from typing import Any, Protocol

from storage.errors import (
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    RetryableStorageError,
    StorageError,
    is_retryable_status,
)


class S3Facts(Protocol):
    """What the messages need to know of the target (an S3Target, storage/s3/adapter.py)."""

    name: str
    bucket: str
    settings: Any

    def where(self) -> str: ...

    def missing_bucket(self) -> str: ...

_ERROR_CODE = re.compile(r"[^A-Za-z0-9.]")


def error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("Error", {}).get("Code")


def http_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def classify(target: S3Facts, exc: Exception, action: str) -> StorageError:
    botocore_exceptions = sys.modules.get("botocore.exceptions")
    # botocore is imported whenever one of its exceptions exists, so looking it up in
    # sys.modules never imports an SDK just to classify an unrelated error.
    if botocore_exceptions is not None:
        if isinstance(exc, botocore_exceptions.ClientError):
            return _client_error(target, exc, action)
        if isinstance(exc, botocore_exceptions.BotoCoreError):
            return _botocore_error(target, exc, action, botocore_exceptions)
    if isinstance(exc, OSError):  # the local source failed to read (disk, truncated spool)
        reason = exc.strerror or type(exc).__name__
        return RetryableStorageError(f"{action}: reading the local file failed: {reason}",
                                     target=target.name)
    return RetryableStorageError(f"{action}: {type(exc).__name__}", target=target.name)


def _client_error(target: S3Facts, exc, action: str) -> StorageError:
    error = exc.response.get("Error", {})
    code = _ERROR_CODE.sub("", str(error.get("Code", "")))[:64] or "unknown"
    rule = _RULES.get(code, _by_status)
    return rule(target, action, code, http_status(exc), error)


def _botocore_error(target: S3Facts, exc, action: str, errors) -> StorageError:
    kind, name, where = type(exc).__name__, target.name, target.where()
    if isinstance(exc, (errors.NoCredentialsError, errors.PartialCredentialsError)):
        return PermanentStorageError(
            f"{action}: no AWS credentials found: set access_key and secret or configure "
            "the AWS credential chain", target=name)
    if isinstance(exc, errors.SSLError):  # a certificate problem does not heal by retrying
        return PermanentStorageError(
            f"{action}: TLS verification failed for {where} ({kind}): check "
            "`endpoint` and the system CA certificates", target=name)
    if isinstance(exc, errors.CredentialRetrievalError):  # a credential_process or IMDS hiccup
        return RetryableStorageError(
            f"{action}: the AWS credential chain failed to deliver credentials ({kind})", target=name)
    transient = (errors.ConnectionError, errors.HTTPClientError, errors.IncompleteReadError,
                 errors.ChecksumError)
    if isinstance(exc, transient):
        return RetryableStorageError(f"{action}: connection to {where} failed ({kind})", target=name)
    return PermanentStorageError(f"{action}: {kind}", target=name)


# One small function per family of S3 error codes: (target, action, code, status, error).


def _bad_credentials(target, action, code, status, error) -> StorageError:
    return PermanentStorageError(
        f"{action}: the server refused the credentials ({code}): check access_key and "
        "secret (or the AWS credential chain) for this target", target=target.name)


def _access_denied(target, action, code, status, error) -> StorageError:
    # A HEAD answer has no body: a bare 403 may also be a wrong key pair.
    keys = "check access_key and secret; " if code == "403" else ""
    return PermanentStorageError(
        f"{action}: access denied to bucket {target.bucket!r} ({code}): {keys}the key needs "
        "s3:PutObject, s3:GetObject and s3:ListBucket (so a missing key answers 404); check "
        "the bucket policy and the key's permissions", target=target.name)


def _no_bucket(target, action, code, status, error) -> StorageError:
    return PermanentStorageError(f"{action}: {target.missing_bucket()}", target=target.name)


def _invalid_request(target, action, code, status, error) -> StorageError:
    # The server's message is only matched, never repeated.
    text = str(error.get("Message", "")).lower().replace(" ", "")
    if "objectlock" in text:
        return PermanentStorageError(
            f"{action}: bucket {target.bucket!r} has no Object Lock, but retention_mode/"
            "legal_hold ask for it: use a bucket created with Object Lock enabled, or remove "
            "those settings", target=target.name)
    return PermanentStorageError(f"{action}: the server refused the request ({code})", target=target.name)


def _precondition(target, action, code, status, error) -> StorageError:
    return ObjectConflict(
        f"{action}: another object appeared under this key while uploading ({code}); "
        "rtk-archive never overwrites", target=target.name)


def _wrong_region(target, action, code, status, error) -> StorageError:
    return PermanentStorageError(
        f"{action}: bucket {target.bucket!r} is not in region {target.settings.region} ({code}): "
        "set `region` to the bucket's region", target=target.name)


def _not_found(target, action, code, status, error) -> StorageError:
    return NotFound(f"{action}: not found ({code})", target=target.name)


def _archived(target, action, code, status, error) -> StorageError:
    return PermanentStorageError(
        f"{action}: the object is in an archive storage class ({code}): restore it before "
        "reading, or use a storage_class that can be read directly", target=target.name)


def _bad_storage_class(target, action, code, status, error) -> StorageError:
    return PermanentStorageError(
        f"{action}: storage_class {target.settings.storage_class!r} is not accepted here "
        f"({code})", target=target.name)


def _clock(target, action, code, status, error) -> StorageError:
    return PermanentStorageError(
        f"{action}: this machine's clock is too far off ({code}): synchronise it (NTP)", target=target.name)


def _unsupported(target, action, code, status, error) -> StorageError:
    # A 501 is not a busy server: retrying would fail the same way.
    return PermanentStorageError(
        f"{action}: this store does not implement something the upload uses ({code}): "
        "create-only writes (If-None-Match), SHA-256 checksums or Object Lock", target=target.name)


def _transient(target, action, code, status, error) -> StorageError:
    return RetryableStorageError(f"{action}: the server is busy or failed ({code})", target=target.name)


def _by_status(target, action, code, status, error) -> StorageError:
    """Codes without a rule: the HTTP status decides (storage.errors.is_retryable_status)."""
    if status == 404:
        return _not_found(target, action, code, status, error)
    if status == 403:  # HEAD has no body, so no code: a bare 403
        return _access_denied(target, action, code, status, error)
    if is_retryable_status(status):
        return _transient(target, action, code, status, error)
    return PermanentStorageError(f"{action}: the server refused the request ({code})", target=target.name)


_RULES = {
    **dict.fromkeys(("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                     "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId"), _bad_credentials),
    **dict.fromkeys(("AccessDenied", "AllAccessDisabled", "AccountProblem"), _access_denied),
    "NoSuchBucket": _no_bucket,
    **dict.fromkeys(("NoSuchKey", "NotFound"), _not_found),
    "InvalidRequest": _invalid_request,
    "PreconditionFailed": _precondition,
    **dict.fromkeys(("PermanentRedirect", "AuthorizationHeaderMalformed",
                     "IllegalLocationConstraintException"), _wrong_region),
    "InvalidObjectState": _archived,
    "InvalidStorageClass": _bad_storage_class,
    "RequestTimeTooSkewed": _clock,
    "NotImplemented": _unsupported,
    **dict.fromkeys(("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                     "Throttling", "ThrottlingException", "RequestLimitExceeded",
                     "TooManyRequests", "ConditionalRequestConflict", "OperationAborted",
                     "BadDigest", "XAmzContentSHA256Mismatch", "IncompleteBody"), _transient),
}
