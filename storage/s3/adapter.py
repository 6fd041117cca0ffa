"""The S3 adapter, through boto3: one adapter for every S3-compatible provider; what differs
between them is data (storage/s3/providers.py), never a second copy of the code.

What a put does on the wire (all checked against moto 5.2 and boto3 1.43):
- `upload_fileobj` with a TransferConfig: one PutObject below `multipart_threshold`, otherwise a
  multipart upload that s3transfer aborts itself when anything fails, so a failed put leaves
  neither an object nor an open multipart upload behind.
- `ChecksumAlgorithm="SHA256"` where the provider takes it: botocore hashes the bytes it
  actually sends and the server checks them on arrival (per part for multipart). We deliberately
  do NOT send the file's own digest as `ChecksumSHA256`: real S3 would refuse a mismatch, but
  moto (and possibly other S3-compatible stores) stores any declared value unchecked and then
  reports it back from head_object, so the "native" digest would merely echo our own claim. A
  digest computed from the transmitted bytes is independent evidence on every server; the
  pipeline compares it with the file's SHA-256 (that is how a file that changed after hashing
  is caught). A provider without it is verified by its single-part ETag (an MD5) where that is
  one.
- `If-None-Match: *` on PutObject and CompleteMultipartUpload where the provider honours it (S3
  conditional writes, honoured by moto; s3transfer does not accept it in ExtraArgs, so a client
  event hook adds it): the base class already refuses an existing key, this closes the race
  between its stat and our write. A 412 becomes ObjectConflict.
- Object Lock headers when retention is configured, and a check on the stored object that the
  server really applied them (moto ignores them on multipart uploads to an unlocked bucket).
- The file's SHA-256 as user metadata, sent as `x-amz-meta-rtk-sha256` (see `_wire_name`).

An overlapped upload (`put_growing`, storage/stream.py) of a file at or above
`multipart_threshold` goes through the same s3transfer manager, reading the growing file as a
forward-only stream (its size given up front, so parts start at once), where the provider takes
full-object checksums (providers.py `full_object_crc32c`: AWS). What such an object carries, and
what verifies it:
- NO `rtk-sha256` metadata: S3 fixes an object's metadata at CreateMultipartUpload, before the
  first part, when the file's SHA-256 is not known yet; nor can it be added afterwards without
  rewriting the object (CopyObject onto itself: a second version, and not create-only).
  `stat` reports sha256=None for it.
- A full-object CRC32C (ChecksumAlgorithm CRC32C, ChecksumType FULL_OBJECT): botocore computes
  each part's CRC32C over the bytes it sends, the server checks each on arrival and combines them
  into the CRC32C of the whole object, which `stat` reports as the native "crc32c". The pipeline
  compares it, with the size, against the CRC32C of the verified download. The file's own value
  is not sent on completion, so the reported digest is the server's, never an echo of our claim.
- Everything else as a put: If-None-Match on CompleteMultipartUpload, Object Lock headers and
  the check that the server applied them, abort of the multipart upload on any failure. The
  source hands out the file's last bytes only once the download is verified, so
  CompleteMultipartUpload can only follow a verified download; a failed one makes the read
  raise SourceFailed and s3transfer aborts the upload (nothing visible, no open upload).
- An existing object that carries no SHA-256 is compared by reading it back (Target._same_content).
Below `multipart_threshold` (100 MiB by default, settings.py says why) the file waits for the
download and goes in one PutObject, as `put`: it then carries S3's SHA-256 and `rtk-sha256`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from storage.errors import NotFound, PermanentStorageError, StorageError, require_sdk
from storage.protection import describe_missing, missing_protection, retain_until
from storage.s3.errors import classify, error_code, http_status
from storage.s3.head import etag, native_digests, retention
from storage.s3.providers import PROVIDERS, S3Provider
from storage.s3.settings import SETTINGS_MODELS, S3CompatibleSettings
from storage.stream import GrowingFile, SequentialReader, with_sha256
from storage.target import Target
from storage.values import SHA256_METADATA_KEY, BucketRetention, LocalFile, StoredObject

CONNECT_TIMEOUT = 10  # seconds
READ_TIMEOUT = 120  # a slow store can take a while to acknowledge a 16 MiB part
# botocore's own retries cover a single request (throttling, a dropped connection); the
# pipeline's retry loop covers a whole put on top of that.
BOTO_RETRIES = {"max_attempts": 3, "mode": "standard"}


class S3Target(Target):
    type = "aws"
    settings_model = SETTINGS_MODELS["aws"]
    provider: S3Provider = PROVIDERS["aws"]

    settings: S3CompatibleSettings

    def __init__(self, settings: S3CompatibleSettings):
        super().__init__(settings)
        self.bucket = settings.bucket
        self._client = None
        self._client_lock = threading.Lock()
        self._bucket_checked = False

    @classmethod
    def for_provider(cls, provider: S3Provider) -> type[S3Target]:
        """This adapter with one provider's profile: its type and its settings model."""
        name = provider.title.replace(" ", "") + "Target"
        return type(name, (cls,), {"type": provider.type, "provider": provider,
                                   "settings_model": SETTINGS_MODELS[provider.type], "__module__": __name__})

    def describe(self) -> str:
        s = self.settings
        return self.provider.label.format(bucket=self.bucket, path=s.path, region=s.region, endpoint=s.endpoint)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def where(self) -> str:
        """Where the bucket lives, for messages."""
        return self.settings.service_endpoint() or f"AWS region {self.settings.region}"

    def missing_bucket(self) -> str:
        return (f"bucket {self.bucket!r} does not exist at {self.where()}: create it or fix "
                "`bucket`/`region`")

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
        endpoint = settings.service_endpoint()
        # A provider that takes no flexible checksums gets none, not even botocore's default CRC.
        checksums = {} if self.provider.checksum else {"request_checksum_calculation": "when_required",
                                                       "response_checksum_validation": "when_required"}
        config = botocore_config.Config(
            retries=dict(BOTO_RETRIES),
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            # Several puts share this client, each with max_concurrency part uploads.
            max_pool_connections=max(10, 2 * settings.max_concurrency),
            s3={"addressing_style": self.provider.addressing if endpoint else "auto"},
            user_agent_extra="rtk-archive",
            **checksums,
        )
        credentials = {}
        if settings.access_key is not None and settings.secret is not None:
            credentials = {
                "aws_access_key_id": settings.access_key.get_secret_value(),
                "aws_secret_access_key": settings.secret.get_secret_value(),
            }
        # A session of our own: the default session is shared module state, not thread-safe.
        session = boto3.session.Session()
        client = session.client("s3", region_name=settings.region, endpoint_url=endpoint,
                                config=config, **credentials)
        if self.provider.conditional_writes:
            for operation in ("PutObject", "CompleteMultipartUpload"):
                client.meta.events.register(f"before-parameter-build.s3.{operation}", _create_only)
        return client

    # -- hooks ------------------------------------------------------------------------------

    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        client = self._s3()
        with file.open() as stream:
            client.upload_fileobj(stream, self.bucket, full_key,
                                  ExtraArgs=self._extra_args(metadata), Config=self._transfer_config())
        return self._protected(self._stat(full_key))

    def _upload_growing(self, source: GrowingFile, full_key: str, metadata: dict[str, str]) -> StoredObject:
        if source.size < self.settings.multipart_threshold:
            file = source.result()  # one request: nothing to overlap
            return self._upload(file, full_key, with_sha256(file, metadata))
        transfer = require_sdk("boto3.s3.transfer", "boto3", target=self.name)
        extra = {**self._extra_args(metadata), "ChecksumAlgorithm": "CRC32C", "ChecksumType": "FULL_OBJECT"}
        config = self._transfer_config()
        # Parts read from a stream are held in memory until sent: as many as are being sent.
        config.max_in_memory_upload_chunks = self.settings.max_concurrency
        with transfer.create_transfer_manager(self._s3(), config) as manager:
            future = manager.upload(SequentialReader(source), self.bucket, full_key, extra_args=extra,
                                    subscribers=[_KnownSize(source.size)])
            future.result()
        stored = self._stat(full_key)
        if "crc32c" not in stored.native:
            raise PermanentStorageError(
                f"{stored.uri} was stored without a full-object CRC32C, the only whole-file digest "
                "it could carry: the server does not honour full-object checksums; it cannot be "
                "verified except by reading it back", target=self.name)
        return self._protected(stored)

    def _protected(self, stored: StoredObject) -> StoredObject:
        """The stored object, if it carries the Object Lock protection configured."""
        missing = missing_protection(self.settings, stored)
        if missing:
            # A store that ignores Object Lock headers (moto for multipart uploads; possibly
            # other S3-compatible stores) would leave an unprotected object while the user
            # asked for write-once: say so loudly rather than report success.
            raise PermanentStorageError(
                f"{stored.uri} was stored WITHOUT the requested Object Lock protection "
                f"({describe_missing(self.settings, stored, missing)}): the bucket {self.bucket!r} "
                "or the server does not apply it; use a bucket with Object Lock enabled", target=self.name)
        return stored

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
        extra: dict[str, Any] = {"Metadata": {_wire_name(name): value for name, value in metadata.items()}}
        if self.provider.checksum:
            extra["ChecksumAlgorithm"] = self.provider.checksum
        if settings.storage_class:
            extra["StorageClass"] = settings.storage_class
        if settings.retention_mode:
            extra["ObjectLockMode"] = settings.retention_mode
            extra["ObjectLockRetainUntilDate"] = retain_until(settings.retention_days)
        if settings.legal_hold:
            extra["ObjectLockLegalHoldStatus"] = "ON"
        return extra

    def _stat(self, full_key: str) -> StoredObject:
        try:
            head = self._s3().head_object(Bucket=self.bucket, Key=full_key, ChecksumMode="ENABLED")
        except Exception as exc:
            if http_status(exc) == 404:
                self._check_bucket_exists()
                raise NotFound(f"{self._uri(full_key)} not found", target=self.name) from None
            raise
        return StoredObject(
            key=full_key,
            uri=self._uri(full_key),
            size=head["ContentLength"],
            sha256=_stored_sha256(head.get("Metadata", {})),
            native=native_digests(head, self.provider),
            version=head.get("VersionId") or etag(head) or None,
            retention=retention(head),
        )

    def _check_bucket_exists(self) -> None:
        """HEAD answers a bare 404 both for a missing key and a missing bucket; ask once per
        target, so a typo in `bucket` is reported as such and not as "nothing stored yet"."""
        if self._bucket_checked:
            return
        try:
            self._s3().head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if http_status(exc) == 404:
                raise PermanentStorageError(self.missing_bucket(), target=self.name) from None
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
            if error_code(exc) != "ObjectLockConfigurationNotFoundError":
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

    def sweep_partials(self, older_than: float | None = None) -> int:
        """Abort the multipart uploads a killed run left open under this target's prefix: they
        are invisible, yet their parts are billed until aborted (rclone's `cleanup` does the
        same). With `older_than`, only those no part of which arrived for that many seconds
        (other workers may be uploading now: S3 keeps no process name with an upload)."""
        prefix = f"{self.settings.path}/" if self.settings.path else ""
        aborted = 0
        with self._errors("clean-up of multipart uploads left open"):
            client = self._s3()
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    if older_than is not None and _idle_seconds(client, self.bucket, upload) < older_than:
                        continue
                    client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

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

    def _classify(self, exc: Exception, action: str) -> StorageError:
        return classify(self, exc, action)


# Every provider's adapter class: what the registry hands out for each S3-compatible type.
ADAPTERS: dict[str, type[S3Target]] = {name: S3Target.for_provider(p) for name, p in PROVIDERS.items()}


# --------------------------------------------------------------------------- helpers


class _KnownSize:
    """s3transfer subscriber: the size of a stream it cannot measure (the growing file's is known
    from the start), so the multipart upload starts at once instead of after reading
    `multipart_threshold` bytes, and parts are sized for S3's 10,000-part limit."""

    def __init__(self, size: int):
        self.size = size

    def on_queued(self, future, **_kwargs) -> None:
        future.meta.provide_transfer_size(self.size)


def _idle_seconds(client, bucket: str, upload: dict) -> float:
    """Seconds since an open multipart upload last grew: its start, or its newest part's."""
    last = upload["Initiated"]
    for page in client.get_paginator("list_parts").paginate(Bucket=bucket, Key=upload["Key"],
                                                             UploadId=upload["UploadId"]):
        last = max([last, *(part["LastModified"] for part in page.get("Parts", []))])
    return (datetime.now(timezone.utc) - last).total_seconds()


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
