"""`aws` and `digitalocean`: Amazon S3 and any S3-compatible store, through boto3.

One adapter. DigitalOcean Spaces is a profile of it (an endpoint derived from the region, a
required region, its own `describe()`), not a second copy of the code.

What a put does on the wire (all checked against moto 5.2 and boto3 1.43):
- `upload_fileobj` with a TransferConfig: one PutObject below `multipart_threshold`, otherwise a
  multipart upload that s3transfer aborts itself when anything fails, so a failed put leaves
  neither an object nor an open multipart upload behind.
- `ChecksumAlgorithm="SHA256"`: botocore hashes the bytes it actually sends and the server
  checks them on arrival (per part for multipart). We deliberately do NOT send the file's own
  digest as `ChecksumSHA256`: real S3 would refuse a mismatch, but moto (and possibly other
  S3-compatible stores) stores any declared value unchecked and then reports it back from
  head_object, so the "native" digest would merely echo our own claim. A digest computed from
  the transmitted bytes is independent evidence on every server; the pipeline compares it
  with the file's SHA-256 (that is how a file that changed after hashing is caught).
- `If-None-Match: *` on PutObject and CompleteMultipartUpload (S3 conditional writes, honoured
  by moto; s3transfer does not accept it in ExtraArgs, so a client event hook adds it): the
  base class already refuses an existing key, this closes the race between its stat and our
  write. A 412 becomes ObjectConflict.
- Object Lock headers when retention is configured, and a check on the stored object that the
  server really applied them (moto ignores them on multipart uploads to an unlocked bucket).
- The file's SHA-256 as user metadata, sent as `x-amz-meta-rtk-sha256` (see `_wire_name`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator

from storage.base import (
    check_endpoint,
    SHA256_METADATA_KEY,
    BucketRetention,
    LocalFile,
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    Retention,
    RetryableStorageError,
    StorageError,
    StoredObject,
    Target,
    TargetSettings,
    require_sdk,
)

MiB = 1 << 20
# S3 refuses parts under 5 MiB (except the last); s3transfer caps a file at 10,000 parts and
# grows the part size itself when a file would need more.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
CONNECT_TIMEOUT = 10  # seconds
READ_TIMEOUT = 120  # a slow store can take a while to acknowledge a 16 MiB part
# botocore's own retries cover a single request (throttling, a dropped connection); the
# pipeline's retry loop covers a whole put on top of that.
BOTO_RETRIES = {"max_attempts": 3, "mode": "standard"}

_REGION = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_STORAGE_CLASS = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PLAIN_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_ERROR_CODE = re.compile(r"[^A-Za-z0-9.]")


# --------------------------------------------------------------------------- settings


class _S3CompatibleSettings(TargetSettings):
    """Fields shared by every S3-compatible profile (storage_config names first)."""

    retention_modes = ("GOVERNANCE", "COMPLIANCE")
    retention_note = " (S3 Object Lock; the bucket must have it enabled)"
    legal_hold_supported = True

    access_key: SecretStr | None = None  # access key id; absent: boto3's credential chain
    secret: SecretStr | None = None  # secret access key
    bucket: str = Field(min_length=1)
    region: str | None = None
    endpoint: str | None = None  # service URL override (S3-compatible stores, test servers)
    storage_class: str | None = None
    multipart_threshold: int = Field(default=64 * MiB, ge=MIN_PART_SIZE)
    part_size: int = Field(default=16 * MiB, ge=MIN_PART_SIZE, le=MAX_PART_SIZE)
    max_concurrency: int = Field(default=8, ge=1, le=64)

    @field_validator("bucket")
    @classmethod
    def _plain_bucket(cls, value: str) -> str:
        value = value.strip()
        if not value or "/" in value:
            raise ValueError("bucket must be a bucket name (put folders in `path`)")
        return value

    @field_validator("region")
    @classmethod
    def _lower_region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()  # RealtimeKit shows regions like `SGP1`; slugs are lower
        if not _REGION.match(value):
            raise ValueError(f"region {value!r} is not a region name like us-east-1 or nyc3")
        return value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        return check_endpoint(value)

    @field_validator("storage_class")
    @classmethod
    def _upper_storage_class(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().upper()
        if not _STORAGE_CLASS.match(value):
            raise ValueError(f"storage_class {value!r} is not a storage class like STANDARD_IA")
        return value

    @model_validator(mode="after")
    def _check_pairs(self):
        _require_both_keys(self.access_key, self.secret)
        return self

    def service_endpoint(self) -> str | None:
        """The URL boto3 talks to; None means AWS's own endpoint for the region."""
        return self.endpoint


def _require_both_keys(access_key: SecretStr | None, secret: SecretStr | None) -> None:
    """Half a key pair is always a mistake; silently falling back to the credential chain
    would write with somebody else's identity."""
    if access_key is not None and secret is None:
        raise ValueError("access_key is set but secret is missing: set both, or neither to use "
                         "the AWS credential chain")
    if secret is not None and access_key is None:
        raise ValueError("secret is set but access_key is missing: set both, or neither to use "
                         "the AWS credential chain")


class S3Settings(_S3CompatibleSettings):
    type: str = "aws"
    region: str | None = "us-east-1"


class SpacesSettings(_S3CompatibleSettings):
    type: str = "digitalocean"
    region: str  # required: it names the Spaces endpoint

    def service_endpoint(self) -> str:
        # The convention DigitalOcean documents; RealtimeKit's docs do not confirm it, so an
        # explicit `endpoint` wins.
        return self.endpoint or f"https://{self.region}.digitaloceanspaces.com"


# --------------------------------------------------------------------------- the adapter


class S3Target(Target):
    type = "aws"
    settings_model = S3Settings
    # Path-style URLs (host/bucket/key) for a custom endpoint: most S3-compatible servers
    # (MinIO, moto, Ceph) need them; boto3 already uses them for IP endpoints.
    custom_endpoint_addressing: ClassVar[str] = "path"

    settings: _S3CompatibleSettings

    def __init__(self, settings: _S3CompatibleSettings):
        super().__init__(settings)
        self.bucket = settings.bucket
        self._client = None
        self._client_lock = threading.Lock()
        self._bucket_checked = False

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.settings.path}"

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- the client -------------------------------------------------------------------------

    def _s3(self):
        """The boto3 client, created on first use (boto3 clients are thread-safe; creating
        one is not, hence the lock)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self):
        boto3 = require_sdk("boto3", "boto3", target=self.name)
        botocore_config = require_sdk("botocore.config", "boto3", target=self.name)
        settings = self.settings
        config = botocore_config.Config(
            retries=dict(BOTO_RETRIES),
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            # Several puts share this client, each with max_concurrency part uploads.
            max_pool_connections=max(10, 2 * settings.max_concurrency),
            s3={"addressing_style": self._addressing_style()},
            user_agent_extra="rtk-archive",
        )
        credentials = {}
        if settings.access_key is not None and settings.secret is not None:
            credentials = {
                "aws_access_key_id": settings.access_key.get_secret_value(),
                "aws_secret_access_key": settings.secret.get_secret_value(),
            }
        # A session of our own: the default session is shared module state, not thread-safe.
        session = boto3.session.Session()
        client = session.client(
            "s3", region_name=settings.region, endpoint_url=settings.service_endpoint(),
            config=config, **credentials,
        )
        for operation in ("PutObject", "CompleteMultipartUpload"):
            client.meta.events.register(f"before-parameter-build.s3.{operation}", _create_only)
        return client

    def _addressing_style(self) -> str:
        return self.custom_endpoint_addressing if self.settings.endpoint else "auto"

    # -- hooks ------------------------------------------------------------------------------

    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        client = self._s3()
        with file.open() as stream:
            client.upload_fileobj(
                stream, self.bucket, full_key,
                ExtraArgs=self._extra_args(metadata), Config=self._transfer_config(),
            )
        stored = self._stat(full_key)
        self._check_protection(stored)
        return stored

    def _check_protection(self, stored: StoredObject) -> None:
        """A store that ignores Object Lock headers (moto for multipart uploads; possibly other
        S3-compatible stores) would leave an unprotected object while the user asked for
        write-once: say so loudly rather than report success."""
        settings = self.settings
        retention = stored.retention
        missing_mode = settings.retention_mode and (
            retention is None or retention.mode != settings.retention_mode)
        missing_hold = settings.legal_hold and (retention is None or not retention.legal_hold)
        if missing_mode or missing_hold:
            raise PermanentStorageError(
                f"{stored.uri} was stored WITHOUT the requested Object Lock protection: the "
                f"bucket {self.bucket!r} or the server does not apply it; use a bucket with "
                "Object Lock enabled", target=self.name)

    def _transfer_config(self):
        transfer = require_sdk("boto3.s3.transfer", "boto3", target=self.name)
        settings = self.settings
        return transfer.TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=settings.part_size,
            max_concurrency=settings.max_concurrency,
            use_threads=True,
            # The classic s3transfer manager, never the CRT one boto3 may pick when awscrt is
            # installed: its abort-on-failure and ExtraArgs handling is what was tested here.
            preferred_transfer_client="classic",
        )

    def _extra_args(self, metadata: Mapping[str, str]) -> dict[str, Any]:
        settings = self.settings
        extra: dict[str, Any] = {
            "Metadata": {_wire_name(name): value for name, value in metadata.items()},
            "ChecksumAlgorithm": "SHA256",
        }
        if settings.storage_class:
            extra["StorageClass"] = settings.storage_class
        if settings.retention_mode:
            extra["ObjectLockMode"] = settings.retention_mode
            extra["ObjectLockRetainUntilDate"] = (
                datetime.now(UTC) + timedelta(days=settings.retention_days)
            )
        if settings.legal_hold:
            extra["ObjectLockLegalHoldStatus"] = "ON"
        return extra

    def _stat(self, full_key: str) -> StoredObject:
        try:
            head = self._s3().head_object(Bucket=self.bucket, Key=full_key, ChecksumMode="ENABLED")
        except Exception as exc:
            if _http_status(exc) == 404:
                self._check_bucket_exists()
                raise NotFound(f"{self._uri(full_key)} not found", target=self.name) from None
            raise
        return StoredObject(
            key=full_key,
            uri=self._uri(full_key),
            size=head["ContentLength"],
            sha256=_stored_sha256(head.get("Metadata", {})),
            native=_native_digests(head),
            version=head.get("VersionId") or _etag(head) or None,
            retention=_retention(head),
        )

    def _check_bucket_exists(self) -> None:
        """HEAD answers a bare 404 both for a missing key and a missing bucket; ask once per
        target, so a typo in `bucket` is reported as such and not as "nothing stored yet"."""
        if self._bucket_checked:
            return
        try:
            self._s3().head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _http_status(exc) == 404:
                raise PermanentStorageError(self._missing_bucket(), target=self.name) from None
            raise
        self._bucket_checked = True

    def _delete(self, full_key: str) -> None:
        # On a versioned bucket a plain delete only hides the object behind a delete marker:
        # delete the very version the probe wrote.
        client = self._s3()
        version = client.head_object(Bucket=self.bucket, Key=full_key).get("VersionId")
        if version and version != "null":
            client.delete_object(Bucket=self.bucket, Key=full_key, VersionId=version)
        else:
            client.delete_object(Bucket=self.bucket, Key=full_key)

    def _bucket_retention(self) -> BucketRetention:
        """Object Lock as the bucket reports it. A bucket with Object Lock keeps every version
        it holds (a default retention locks even objects written without one), so the probe
        writes nothing there."""
        try:
            answer = self._s3().get_object_lock_configuration(Bucket=self.bucket)
        except Exception as exc:
            if _error_code(exc) != "ObjectLockConfigurationNotFoundError":
                raise
            answer = {}
        config = answer.get("ObjectLockConfiguration") or {}
        enabled = config.get("ObjectLockEnabled") == "Enabled"
        if not enabled:
            needs = self._protection_needs()
            problem = (f"{needs} Object Lock, which bucket {self.bucket!r} does not have: every upload "
                       "would be refused; use a bucket created with Object Lock, or remove those "
                       "settings") if needs else None
            return BucketRetention(summary="Object Lock: not enabled", problem=problem)
        rule = (config.get("Rule") or {}).get("DefaultRetention") or {}
        if rule:
            period = f"{rule['Days']}d" if rule.get("Days") else f"{rule.get('Years')}y"
            summary = f"Object Lock: enabled, default {rule.get('Mode')} {period}"
        else:
            summary = "Object Lock: enabled, no default retention"
        return BucketRetention(summary=summary, locks_new_objects=True)

    def _probe_write_nothing(self, full_key: str) -> str:
        """CreateMultipartUpload needs s3:PutObject and takes the same Object Lock headers as an
        upload (refused by a bucket without Object Lock); aborting it leaves nothing behind."""
        client = self._s3()
        extra = self._extra_args({SHA256_METADATA_KEY: "0" * 64})
        upload = client.create_multipart_upload(Bucket=self.bucket, Key=full_key, **extra)
        client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload["UploadId"])
        return "a multipart upload with this target's settings was started and aborted"

    @contextlib.contextmanager
    def _open_read(self, full_key: str):
        response = self._s3().get_object(Bucket=self.bucket, Key=full_key)
        body = response["Body"]
        try:
            yield body
        finally:
            body.close()

    def _uri(self, full_key: str) -> str:
        return f"s3://{self.bucket}/{full_key}"

    def _missing_bucket(self) -> str:
        return (f"bucket {self.bucket!r} does not exist at {self._where()}: create it or fix "
                "`bucket`/`region`")

    def _where(self) -> str:
        return self.settings.service_endpoint() or f"AWS region {self.settings.region}"

    # -- errors -----------------------------------------------------------------------------

    def _classify(self, exc: Exception, action: str) -> StorageError:
        botocore_exceptions = sys.modules.get("botocore.exceptions")
        # botocore is imported whenever one of its exceptions exists, so looking it up in
        # sys.modules never imports an SDK just to classify an unrelated error.
        if botocore_exceptions is not None:
            if isinstance(exc, botocore_exceptions.ClientError):
                return self._classify_client_error(exc, action)
            if isinstance(exc, botocore_exceptions.BotoCoreError):
                return self._classify_botocore_error(exc, action, botocore_exceptions)
        if isinstance(exc, OSError):  # the local source failed to read (disk, truncated spool)
            reason = exc.strerror or type(exc).__name__
            return RetryableStorageError(f"{action}: reading the local file failed: {reason}",
                                         target=self.name)
        return RetryableStorageError(f"{action}: {type(exc).__name__}", target=self.name)

    def _classify_client_error(self, exc, action: str) -> StorageError:
        """Build the message from the error code and fixed text only: botocore's own message
        can carry request details (the access key id, the string to sign)."""
        error = exc.response.get("Error", {})
        code = _ERROR_CODE.sub("", str(error.get("Code", "")))[:64] or "unknown"
        status = _http_status(exc)
        return _CLIENT_ERROR_RULES.get(code, _by_status)(self, action, code, status, error)

    def _classify_botocore_error(self, exc, action: str, errors) -> StorageError:
        kind = type(exc).__name__
        if isinstance(exc, (errors.NoCredentialsError, errors.PartialCredentialsError)):
            return PermanentStorageError(
                f"{action}: no AWS credentials found: set access_key and secret or configure "
                "the AWS credential chain", target=self.name)
        if isinstance(exc, errors.SSLError):  # a certificate problem does not heal by retrying
            return PermanentStorageError(
                f"{action}: TLS verification failed for {self._where()} ({kind}): check "
                "`endpoint` and the system CA certificates", target=self.name)
        if isinstance(exc, errors.CredentialRetrievalError):  # a credential_process or IMDS hiccup
            return RetryableStorageError(
                f"{action}: the AWS credential chain failed to deliver credentials ({kind})",
                target=self.name)
        transient = (errors.ConnectionError, errors.HTTPClientError, errors.IncompleteReadError,
                     errors.ChecksumError)
        if isinstance(exc, transient):
            return RetryableStorageError(
                f"{action}: connection to {self._where()} failed ({kind})", target=self.name)
        return PermanentStorageError(f"{action}: {kind}", target=self.name)

    # One small function per family of S3 error codes.

    def _bad_credentials(self, action, code, status, error) -> StorageError:
        return PermanentStorageError(
            f"{action}: the server refused the credentials ({code}): check access_key and "
            "secret (or the AWS credential chain) for this target", target=self.name)

    def _access_denied(self, action, code, status, error) -> StorageError:
        # A HEAD answer has no body: a bare 403 may also be a wrong key pair.
        keys = "check access_key and secret; " if code == "403" else ""
        return PermanentStorageError(
            f"{action}: access denied to bucket {self.bucket!r} ({code}): {keys}the key needs "
            "s3:PutObject, s3:GetObject and s3:ListBucket (so a missing key answers 404); check "
            "the bucket policy and the key's permissions", target=self.name)

    def _no_bucket(self, action, code, status, error) -> StorageError:
        return PermanentStorageError(f"{action}: {self._missing_bucket()}", target=self.name)

    def _invalid_request(self, action, code, status, error) -> StorageError:
        # The server's message is only matched, never repeated.
        text = str(error.get("Message", "")).lower().replace(" ", "")
        if "objectlock" in text:
            return PermanentStorageError(
                f"{action}: bucket {self.bucket!r} has no Object Lock, but retention_mode/"
                "legal_hold ask for it: use a bucket created with Object Lock enabled, or remove "
                "those settings", target=self.name)
        return PermanentStorageError(f"{action}: the server refused the request ({code})",
                                     target=self.name)

    def _precondition(self, action, code, status, error) -> StorageError:
        return ObjectConflict(
            f"{action}: another object appeared under this key while uploading ({code}); "
            "rtk-archive never overwrites", target=self.name)

    def _wrong_region(self, action, code, status, error) -> StorageError:
        return PermanentStorageError(
            f"{action}: bucket {self.bucket!r} is not in region {self.settings.region} ({code}): "
            "set `region` to the bucket's region", target=self.name)

    def _not_found(self, action, code, status, error) -> StorageError:
        return NotFound(f"{action}: not found ({code})", target=self.name)

    def _archived(self, action, code, status, error) -> StorageError:
        return PermanentStorageError(
            f"{action}: the object is in an archive storage class ({code}): restore it before "
            "reading, or use a storage_class that can be read directly", target=self.name)

    def _bad_storage_class(self, action, code, status, error) -> StorageError:
        return PermanentStorageError(
            f"{action}: storage_class {self.settings.storage_class!r} is not accepted here "
            f"({code})", target=self.name)

    def _clock(self, action, code, status, error) -> StorageError:
        return PermanentStorageError(
            f"{action}: this machine's clock is too far off ({code}): synchronise it (NTP)",
            target=self.name)

    def _unsupported(self, action, code, status, error) -> StorageError:
        # A 501 is not a busy server: retrying would fail the same way.
        return PermanentStorageError(
            f"{action}: this store does not implement something the upload uses ({code}): "
            "create-only writes (If-None-Match), SHA-256 checksums or Object Lock",
            target=self.name)

    def _transient(self, action, code, status, error) -> StorageError:
        return RetryableStorageError(f"{action}: the server is busy or failed ({code})",
                                     target=self.name)


def _by_status(target: S3Target, action: str, code: str, status: int | None, error) -> StorageError:
    """Codes without a rule: 5xx and 429 are worth retrying, other 4xx need a person."""
    if status == 404:
        return target._not_found(action, code, status, error)
    if status == 403:  # HEAD has no body, so no code: a bare 403
        return target._access_denied(action, code, status, error)
    if status is not None and (status >= 500 or status in (408, 429)):
        return target._transient(action, code, status, error)
    return PermanentStorageError(f"{action}: the server refused the request ({code})",
                                 target=target.name)


_CLIENT_ERROR_RULES = {
    **dict.fromkeys(("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                     "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId"),
                    S3Target._bad_credentials),
    **dict.fromkeys(("AccessDenied", "AllAccessDisabled", "AccountProblem"),
                    S3Target._access_denied),
    "NoSuchBucket": S3Target._no_bucket,
    **dict.fromkeys(("NoSuchKey", "NotFound"), S3Target._not_found),
    "InvalidRequest": S3Target._invalid_request,
    "PreconditionFailed": S3Target._precondition,
    **dict.fromkeys(("PermanentRedirect", "AuthorizationHeaderMalformed",
                     "IllegalLocationConstraintException"), S3Target._wrong_region),
    "InvalidObjectState": S3Target._archived,
    "InvalidStorageClass": S3Target._bad_storage_class,
    "RequestTimeTooSkewed": S3Target._clock,
    "NotImplemented": S3Target._unsupported,
    **dict.fromkeys(("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                     "Throttling", "ThrottlingException", "RequestLimitExceeded",
                     "TooManyRequests", "ConditionalRequestConflict", "OperationAborted",
                     "BadDigest", "XAmzContentSHA256Mismatch", "IncompleteBody"),
                    S3Target._transient),
}


class SpacesTarget(S3Target):
    """DigitalOcean Spaces: the S3 adapter with the Spaces profile."""

    type = "digitalocean"
    settings_model = SpacesSettings
    # Spaces serves virtual-hosted URLs on its own domain; "auto" keeps those and falls back
    # to path style for IP endpoints (a test server).
    custom_endpoint_addressing = "auto"

    def describe(self) -> str:
        return f"do://{self.bucket}/{self.settings.path} @ {self.settings.region}"


# --------------------------------------------------------------------------- helpers


def _create_only(params: dict, **_kwargs) -> None:
    """botocore hook: make every object write create-only (S3 conditional writes)."""
    params.setdefault("IfNoneMatch", "*")


def _wire_name(name: str) -> str:
    """Metadata names travel as `x-amz-meta-<name>` headers. Headers with underscores are
    dropped by common HTTP front ends (nginx by default, WSGI servers such as moto's), so an
    underscore becomes a hyphen on S3; S3 itself keeps both."""
    return name.replace("_", "-")


def _stored_sha256(metadata: Mapping[str, str]) -> str | None:
    # Objects written with the underscore spelling (by another tool, or directly) count too.
    return metadata.get(_wire_name(SHA256_METADATA_KEY)) or metadata.get(SHA256_METADATA_KEY)


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("Error", {}).get("Code")


def _http_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _native_digests(head: Mapping[str, Any]) -> dict[str, str]:
    """Digests the server computed over the stored bytes, hex encoded, only where they are
    digests of the whole file."""
    native = {}
    sha256 = _full_object_sha256(head)
    if sha256:
        native["sha256"] = sha256
    md5 = _etag_md5(head)
    if md5:
        native["md5"] = md5
    return native


def _full_object_sha256(head: Mapping[str, Any]) -> str | None:
    # A multipart object carries a checksum of the part checksums, not the file's digest (S3
    # has no full-object SHA-256 for multipart), so it is left out. Real S3 marks it ("...=-3",
    # ChecksumType COMPOSITE); moto returns it bare, so the ETag's "-N" is checked too.
    value = head.get("ChecksumSHA256")
    if not value or "-" in value or head.get("ChecksumType") == "COMPOSITE" or _is_multipart(head):
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None  # not a digest we can read: report nothing rather than a wrong value
    return digest.hex() if len(digest) == 32 else None


def _etag_md5(head: Mapping[str, Any]) -> str | None:
    # The ETag is the MD5 of the bytes only for a single-part object stored unencrypted or
    # with SSE-S3; SSE-KMS and SSE-C ETags are opaque, multipart ones end in "-N".
    etag = _etag(head).lower()
    if head.get("SSECustomerAlgorithm") or head.get("ServerSideEncryption", "AES256") != "AES256":
        return None
    return etag if _PLAIN_MD5_ETAG.match(etag) else None


def _etag(head: Mapping[str, Any]) -> str:
    return str(head.get("ETag", "")).strip('"')


def _is_multipart(head: Mapping[str, Any]) -> bool:
    return "-" in _etag(head)


def _retention(head: Mapping[str, Any]) -> Retention | None:
    mode = head.get("ObjectLockMode")
    until = head.get("ObjectLockRetainUntilDate")
    hold = head.get("ObjectLockLegalHoldStatus") == "ON"
    if not mode and not hold:
        return None
    if isinstance(until, datetime):
        until = until.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Retention(mode=mode or "HOLD", until=until, legal_hold=hold)
