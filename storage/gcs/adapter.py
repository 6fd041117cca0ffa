"""`gcs`: Google Cloud Storage, through google-cloud-storage (JSON API).

RealtimeKit's storage_config for gcs: `secret` is the service-account key (JSON, raw or base64),
`bucket` the bucket, `region` informational, `path` a prefix; `access_key` is not used.

An upload sends the file's MD5 and CRC32C with the object's metadata, so GCS refuses bytes that
do not match them; the SDK also compares its own CRC32C of the bytes sent with the server's and
deletes the object on a mismatch. Files over 8 MiB (the SDK's threshold) go through a resumable
upload in `chunk_size` pieces; an unfinished session never becomes an object (GCS forgets it after
a week). `ifGenerationMatch=0` makes the upload create-only. Credentials come from `secret`, or
are anonymous when only an `endpoint` is set (emulators), or are the application default ones.

An overlapped upload (`put_growing`, storage/stream.py) of a file over the SDK's 8 MiB threshold
is the same resumable upload, fed `chunk_size` pieces as the file arrives; the last chunk, which
finalises the object, can only be read once the download is verified (and the bytes read are
checked against its CRC32C first). A resumable session fixes the object's metadata when it
opens, before the file's digests are known, so what such an object carries:
- its MD5 and CRC32C as GCS computes them over the stored bytes (the independent evidence the
  pipeline compares), GCS having refused the final chunk unless its CRC32C of all the bytes
  received matches the SDK's CRC32C of the bytes sent (x-goog-hash on the last chunk);
- the `rtk_sha256` metadata, patched onto exactly that generation right after it is finalised
  (metadata stays writable under retention and holds), together with the temporary hold when
  `legal_hold` is set. Were that patch refused, the upload fails: with `legal_hold` the object
  is removed, as after a put whose hold is refused; without, the copy stays (under retention it
  could not be removed anyway) lacking only the SHA-256, and a retry finds it and compares it by
  its digests and by reading it back.
- object retention, create-only (`ifGenerationMatch=0`) and the protection checks as a put.
"""

from __future__ import annotations

import base64
import contextlib
import mimetypes
import threading
from collections.abc import Mapping

from storage.errors import NotFound, PermanentStorageError, StorageError, is_retryable_status, require_sdk
from storage.gcs.errors import (
    SDK_PACKAGE,
    classify,
    data_corruption_types,
    generation_of,
    mentions_bucket,
    no_bucket,
)
from storage.gcs.settings import GCS_RETENTION_MODES, GCSSettings, credentials_info
from storage.protection import missing_protection, retain_until
from storage.stream import GrowingFile, SequentialReader, with_sha256
from storage.values import iso_utc
from storage.target import PROBE_BYTES, Target
from storage.values import SHA256_METADATA_KEY, BucketRetention, LocalFile, Retention, StoredObject

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
# Files up to this size go in one request (the SDK's own threshold): nothing to overlap.
SINGLE_REQUEST_MAX = 8 << 20


class GCSTarget(Target):
    """google-cloud-storage clients hold a requests session, which is not documented as
    thread-safe: each thread gets its own client."""

    type = "gcs"
    settings_model = GCSSettings
    settings: GCSSettings

    def __init__(self, settings: GCSSettings):
        super().__init__(settings)
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        prefix = f"/{self.settings.path}" if self.settings.path else ""
        return f"gs://{self.settings.bucket}{prefix}"

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        self._local = threading.local()
        for client in clients:
            client.close()

    # -- clients ------------------------------------------------------------------------

    def client(self):
        """This thread's storage client (tests use it to watch the requests sent)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._connect()
            with self._lock:
                self._clients.append(client)
        return client

    def _connect(self):
        storage = require_sdk("google.cloud.storage", SDK_PACKAGE, target=self.name)
        credentials, project = self._credentials()
        options = {"api_endpoint": self.settings.endpoint} if self.settings.endpoint else None
        # project=None tells the client not to go looking for one: objects do not need it.
        return storage.Client(project=self.settings.project or project, credentials=credentials,
                              client_options=options)

    def _credentials(self):
        """(credentials, project) from `secret`; anonymous for a bare endpoint; (None, None)
        lets the client find the application default credentials."""
        if self.settings.secret is not None:
            service_account = require_sdk("google.oauth2.service_account", "google-auth", target=self.name)
            info = credentials_info(self.settings.secret.get_secret_value())
            try:
                credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
            except ValueError:  # a damaged private key inside valid JSON; never echo the key
                raise PermanentStorageError(
                    "secret holds a service-account key whose private_key cannot be loaded; "
                    "download the service account's key again", target=self.name) from None
            return credentials, info.get("project_id")
        if self.settings.endpoint is not None:
            anonymous = require_sdk("google.auth.credentials", "google-auth", target=self.name)
            return anonymous.AnonymousCredentials(), None
        return None, None

    def _bucket(self):
        return self.client().bucket(self.settings.bucket)

    def _new_blob(self, full_key: str):
        return self._bucket().blob(full_key, chunk_size=self.settings.chunk_size)

    def _uri(self, full_key: str) -> str:
        return f"gs://{self.settings.bucket}/{full_key}"

    # -- hooks ----------------------------------------------------------------------------

    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        blob = self.prepare_blob(file, full_key, metadata)
        with file.open() as source:
            self._send(blob, source, file.size)
        if self.settings.legal_hold:
            self._place_hold(blob)
        stored = self._stored(blob)
        self._check_protection(blob, stored)
        return stored

    def _upload_growing(self, source: GrowingFile, full_key: str, metadata: dict[str, str]) -> StoredObject:
        if source.size <= SINGLE_REQUEST_MAX:
            file = source.result()  # one request: nothing to overlap
            return self._upload(file, full_key, with_sha256(file, metadata))
        blob = self._blob_to_create(full_key, metadata)  # no digests yet: GCS computes them
        self._send(blob, SequentialReader(source), source.size)
        file = source.result()  # verified: the last chunk could not be read before
        blob.metadata = with_sha256(file, metadata)
        if self.settings.legal_hold:
            self._place_hold(blob)  # with the metadata, in one patch
        else:
            blob.patch(if_generation_match=blob.generation, if_metageneration_match=blob.metageneration)
        stored = self._stored(blob)
        self._check_protection(blob, stored)
        return stored

    def prepare_blob(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]):
        """The blob to create: metadata, declared digests (GCS checks them against the bytes),
        content type and, when configured, object retention, set at creation so the object is
        never unprotected. A temporary hold cannot be sent with the upload: see _place_hold."""
        blob = self._blob_to_create(full_key, metadata)
        blob.md5_hash = file.checksums.md5_base64
        blob.crc32c = file.checksums.crc32c_base64
        return blob

    def _blob_to_create(self, full_key: str, metadata: Mapping[str, str]):
        """A new blob with metadata, content type and, when configured, object retention."""
        blob = self._new_blob(full_key)
        blob.metadata = dict(metadata)
        blob.content_type = mimetypes.guess_type(full_key)[0] or "application/octet-stream"
        self._set_retention(blob)
        return blob

    def _set_retention(self, blob) -> None:
        mode = self.settings.retention_mode
        if mode is not None:
            blob.retention.mode = GCS_RETENTION_MODES[mode]
            blob.retention.retain_until_time = retain_until(self.settings.retention_days)

    def _send(self, blob, source, size: int) -> None:
        api = require_sdk("google.api_core.exceptions", SDK_PACKAGE, target=self.name)
        try:
            # ifGenerationMatch=0: create-only on GCS. gcp-storage-emulator ignores it; there the
            # base class's stat-before-put is what refuses an existing object.
            blob.upload_from_file(source, size=size, checksum="crc32c", if_generation_match=0)
        except api.NotFound as exc:  # creating an object: only the bucket can be missing
            raise self._no_bucket(f"upload of {blob.name}") from exc
        except data_corruption_types() as exc:
            # The SDK deleted the object already; make sure, so no bad object can remain.
            self._discard(blob, generation_of(exc))
            raise PermanentStorageError(
                f"upload of {blob.name}: corrupted on transfer (the CRC32C of the bytes sent and "
                "of the stored object differ); the object was removed", target=self.name) from exc

    def _place_hold(self, blob) -> None:
        blob.temporary_hold = True
        try:
            blob.patch(if_generation_match=blob.generation)
        except Exception as exc:
            self._discard(blob, blob.generation)
            raise self._protection_refused(exc, blob.name) from exc

    def _check_protection(self, blob, stored: StoredObject) -> None:
        """The emulator, or a bucket without object retention, may store the object and drop
        the retention or hold: remove it then, so a retry does not find an identical but
        unprotected object and take it as done."""
        missing = missing_protection(self.settings, stored)
        if missing:
            self._discard(blob, blob.generation)
            raise PermanentStorageError(
                f"{stored.uri}: the bucket stored the object without the requested "
                f"{'retention' if 'retention_mode' in missing else 'temporary hold'}; the object was removed. "
                f"Enable object retention on bucket {self.settings.bucket}, or remove "
                "retention_mode / legal_hold from this target", target=self.name)

    def _protection_refused(self, exc: Exception, name: str) -> StorageError:
        code = getattr(exc, "code", None)
        if isinstance(code, int) and not is_retryable_status(code):
            return PermanentStorageError(
                f"{self._uri(name)}: the bucket refused the temporary hold (HTTP {code}); the object "
                "was removed. Check the service account's permissions (storage.objects.update)",
                target=self.name)
        return self._classify(exc, f"hold on {name}")

    def _discard(self, blob, generation) -> None:
        """Delete the object this upload created (that generation only). An object already gone
        is what we want; any other failure is reported, never swallowed."""
        api = require_sdk("google.api_core.exceptions", SDK_PACKAGE, target=self.name)
        try:
            blob.bucket.blob(blob.name).delete(if_generation_match=generation)
        except api.NotFound:
            return  # the SDK's own clean-up got there first
        except Exception as exc:
            raise PermanentStorageError(
                f"{self._uri(blob.name)} is stored but failed a check and could not be removed; "
                "remove it by hand before the next run", target=self.name) from exc

    def _stat(self, full_key: str) -> StoredObject:
        blob = self._new_blob(full_key)
        self._reload(blob)
        return self._stored(blob)

    def _reload(self, blob) -> None:
        api = require_sdk("google.api_core.exceptions", SDK_PACKAGE, target=self.name)
        try:
            blob.reload()
        except api.NotFound as exc:
            # The emulator answers an empty 404 for a missing bucket too; GCS says which it is.
            if mentions_bucket(exc):
                raise self._no_bucket(f"stat of {blob.name}") from exc
            raise NotFound(f"{self._uri(blob.name)} not found", target=self.name) from exc

    def _stored(self, blob) -> StoredObject:
        native = {}
        if blob.md5_hash:  # composite objects have none
            native["md5"] = base64.b64decode(blob.md5_hash).hex()
        if blob.crc32c:
            native["crc32c"] = base64.b64decode(blob.crc32c).hex()
        return StoredObject(
            key=blob.name,
            uri=self._uri(blob.name),
            size=int(blob.size or 0),
            sha256=(blob.metadata or {}).get(SHA256_METADATA_KEY),
            native=native,
            version=str(blob.generation) if blob.generation is not None else None,
            retention=retention_of(blob),
        )

    def _delete(self, full_key: str) -> None:
        # That generation only: on a versioned bucket this removes it for good.
        blob = self._new_blob(full_key)
        self._reload(blob)
        self._bucket().delete_blob(full_key, generation=blob.generation)

    def _bucket_retention(self) -> BucketRetention:
        """Retention as the bucket reports it. A bucket retention policy or a default
        event-based hold keeps every object written now, so the probe writes nothing there."""
        api = require_sdk("google.api_core.exceptions", SDK_PACKAGE, target=self.name)
        try:
            bucket = self.client().get_bucket(self.settings.bucket)
        except api.NotFound as exc:
            raise self._no_bucket("reading the bucket's settings") from exc
        period = bucket.retention_period
        event_hold = bool(bucket.default_event_based_hold)
        object_retention = (bucket._properties.get("objectRetention") or {}).get("mode") == "Enabled"
        parts = []
        if period:
            locked = " (locked)" if bucket.retention_policy_locked else ""
            parts.append(f"retention policy {int(period) // 86400}d{locked}")
        else:
            parts.append("no retention policy")
        parts.append(f"object retention {'enabled' if object_retention else 'not enabled'}")
        if event_hold:
            parts.append("default event-based hold")
        problem = None
        if self.settings.retention_mode is not None and not object_retention:
            problem = (f"retention_mode {self.settings.retention_mode} needs object retention, which "
                       f"bucket {self.settings.bucket} does not have enabled: every upload would be "
                       "refused; enable it, or remove retention_mode")
        return BucketRetention(summary=", ".join(parts), locks_new_objects=bool(period) or event_hold,
                               problem=problem)

    def _probe_write_nothing(self, full_key: str) -> str:
        """Opening a resumable upload session needs storage.objects.create and carries this
        target's retention; cancelling it (DELETE on the session URL) leaves no object."""
        blob = self._new_blob(full_key)
        self._set_retention(blob)
        api = require_sdk("google.api_core.exceptions", SDK_PACKAGE, target=self.name)
        try:
            session = blob.create_resumable_upload_session(size=len(PROBE_BYTES), if_generation_match=0)
        except api.NotFound as exc:  # creating an object: only the bucket can be missing
            raise self._no_bucket(f"trial upload of {full_key}") from exc
        response = self.client()._http.delete(session)  # the client's authorised session
        if response.status_code not in (200, 204, 499):  # GCS answers 499 to a cancelled session
            # Not a permission problem: an unfinished session never becomes an object.
            return (f"a resumable upload session was opened; cancelling it was answered HTTP "
                    f"{response.status_code}, and GCS forgets the unfinished session within a week")
        return "a resumable upload session was opened and cancelled"

    @contextlib.contextmanager
    def _open_read(self, full_key: str):
        blob = self._new_blob(full_key)
        self._reload(blob)  # pins the generation: the reader never mixes two versions
        with blob.open("rb") as reader:
            yield reader

    # -- errors ---------------------------------------------------------------------------

    def _no_bucket(self, action: str) -> PermanentStorageError:
        return no_bucket(action, self.settings.bucket, self.name)

    def _classify(self, exc: Exception, action: str) -> StorageError:
        return classify(exc, action, bucket=self.settings.bucket, target=self.name)


def retention_of(blob) -> Retention | None:
    """The object's retention and holds as GCS reports them (None when it has neither)."""
    info = blob._properties.get("retention") or {}
    mode, until = info.get("mode"), info.get("retainUntilTime")
    hold = bool(blob.temporary_hold or blob.event_based_hold)
    if not until and not hold:
        return None
    return Retention(mode=str(mode).upper() if until and mode else "HOLD",
                     until=iso_utc(until) if until else None, legal_hold=hold)

