"""`azure`: Azure Blob Storage, through azure-storage-blob.

RealtimeKit's storage_config for azure: `access_key` is the storage account's connection string,
`bucket` the container, `path` a prefix; `secret` and `region` are empty.

An upload is a block blob: blocks are staged in parallel and become visible only when the block
list is committed, with `If-None-Match: *` so an existing blob is never replaced. Each request
carries a transactional MD5 (`validate_content=True`), and the blob's Content-MD5 is set to the
file's MD5. Azure validates that stored MD5 on a single Put Blob but never on a block list, so the
adapter checksums the bytes as the SDK reads them and refuses to let the last block go out if
they are not the verified file's: the stored Content-MD5 is therefore true of the bytes.

An overlapped upload (`put_growing`, storage/stream.py) of a file over `max_single_put_size`
stages blocks (Put Block, each with its transactional MD5) as the file arrives, at most
`max_concurrency` at a time, and commits the block list only after the source returned its end,
which it does only once the download is verified. Block blobs take metadata and Content-MD5 at
the commit (Put Block List), so an overlapped copy carries exactly what a put's does: the
`rtk_sha256` metadata, Content-MD5 (the verified file's MD5, the bytes staged checked against
the file's CRC32C before the last block is read), the immutability policy / legal hold, with `If-None-Match: *`. On a
failed download nothing is committed: staged blocks stay invisible and Azure discards them.
"""

from __future__ import annotations

import base64
import contextlib
import mimetypes
import threading
from collections.abc import Mapping

from storage.azure.blocks import CheckedSource, stage_blocks
from storage.azure.settings import AzureSettings, account_label
from storage.errors import (
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    RetryableStorageError,
    StorageError,
    is_retryable_status,
    require_sdk,
)
from storage.protection import missing_protection, retain_until
from storage.stream import GrowingFile, SequentialReader, with_sha256
from storage.values import iso_utc
from storage.target import PROBE_BYTES, Target
from storage.values import SHA256_METADATA_KEY, BucketRetention, LocalFile, Retention, StoredObject

SDK_PACKAGE = "azure-storage-blob"
# The SDK's own retries cover one request; the pipeline retries a whole put on top of that.
# Its default waits 15 s, then 18 s, then 24 s: a server that is down cost a minute and a half
# per request (and per preflight probe) before the pipeline even heard of it.
SDK_RETRIES = {"retry_total": 3, "initial_backoff": 1, "increment_base": 2}
AUTH_ERROR_CODES = {"AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
                    "InvalidAuthenticationInfo", "AccountIsDisabled"}


# --------------------------------------------------------------------------- the adapter


class AzureTarget(Target):
    type = "azure"
    settings_model = AzureSettings
    settings: AzureSettings

    def __init__(self, settings: AzureSettings):
        super().__init__(settings)
        self.account = account_label(settings.access_key.get_secret_value())
        self._service = None
        self._container_client = None
        self._lock = threading.Lock()  # the SDK clients are thread-safe; creating them once is not

    def describe(self) -> str:
        prefix = f"/{self.settings.path}" if self.settings.path else ""
        return f"azure://{self.account}/{self.settings.bucket}{prefix}"

    def close(self) -> None:
        with self._lock:
            service, self._service, self._container_client = self._service, None, None
        if service is not None:
            service.close()

    # -- clients ------------------------------------------------------------------------

    def _client_kwargs(self) -> dict:
        """Extra keyword arguments for the service client (a seam: tests add a request hook)."""
        return {}

    def _container(self):
        with self._lock:
            if self._container_client is None:
                self._service = self._connect()
                self._container_client = self._service.get_container_client(self.settings.bucket)
            return self._container_client

    def _connect(self):
        blob_sdk = require_sdk("azure.storage.blob", SDK_PACKAGE, target=self.name)
        try:
            return blob_sdk.BlobServiceClient.from_connection_string(
                self.settings.access_key.get_secret_value().strip(),
                max_single_put_size=self.settings.max_single_put_size,
                max_block_size=self.settings.block_size,
                **SDK_RETRIES,
                **self._client_kwargs(),
            )
        except ValueError:
            # The SDK's message is generic today, but never risk echoing the connection string.
            raise PermanentStorageError(
                "access_key is not a usable Azure storage connection string; copy it again from "
                "the storage account's 'Access keys' page", target=self.name) from None

    def _blob(self, full_key: str):
        return self._container().get_blob_client(full_key)

    # -- hooks ----------------------------------------------------------------------------

    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        blob = self._blob(full_key)
        with file.open() as raw:
            blob.upload_blob(CheckedSource(raw, file), **self._upload_kwargs(file, full_key, metadata))
        stored = self._stat(full_key)
        return self._ensure_protection(blob, full_key, stored)

    def _upload_growing(self, source: GrowingFile, full_key: str, metadata: dict[str, str]) -> StoredObject:
        if source.size <= self.settings.max_single_put_size:
            file = source.result()  # one request: nothing to overlap
            return self._upload(file, full_key, with_sha256(file, metadata))
        blob = self._blob(full_key)
        settings = self.settings
        blocks = stage_blocks(blob, SequentialReader(source), settings.block_size, settings.max_concurrency)
        file = source.result()  # the download ended verified, and the bytes staged are its
        blob_sdk = require_sdk("azure.storage.blob", SDK_PACKAGE, target=self.name)
        core = require_sdk("azure.core", SDK_PACKAGE, target=self.name)
        blob.commit_block_list(
            [blob_sdk.BlobBlock(block_id) for block_id in blocks],
            content_settings=self._content_settings(file, full_key),
            metadata=with_sha256(file, metadata),
            match_condition=core.MatchConditions.IfMissing,  # If-None-Match: *: create-only
            **self._protection_kwargs())
        return self._ensure_protection(blob, full_key, self._stat(full_key))

    def _upload_kwargs(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> dict:
        """Arguments of upload_blob. The immutability policy and legal hold go with the upload
        itself, so on an account that supports them the blob is never visible unprotected."""
        return {
            "length": file.size,
            "overwrite": False,  # If-None-Match: * on the commit: create-only
            "max_concurrency": self.settings.max_concurrency,
            "metadata": dict(metadata),
            "content_settings": self._content_settings(file, full_key),
            "validate_content": True,
            **self._protection_kwargs(),
        }

    def _content_settings(self, file: LocalFile, full_key: str):
        """The blob's content type and Content-MD5 (the verified file's MD5)."""
        blob_sdk = require_sdk("azure.storage.blob", SDK_PACKAGE, target=self.name)
        content_type = mimetypes.guess_type(full_key)[0] or "application/octet-stream"
        return blob_sdk.ContentSettings(content_type=content_type,
                                        content_md5=bytearray.fromhex(file.checksums.md5))

    def _protection_kwargs(self) -> dict:
        """The immutability policy and legal hold configured, as upload arguments."""
        kwargs = {}
        policy = self.immutability_policy()
        if policy is not None:
            kwargs["immutability_policy"] = policy
        if self.settings.legal_hold:
            kwargs["legal_hold"] = True
        return kwargs

    def immutability_policy(self):
        """The policy for a blob uploaded now, or None when retention is not configured."""
        if self.settings.retention_mode is None:
            return None
        blob_sdk = require_sdk("azure.storage.blob", SDK_PACKAGE, target=self.name)
        mode = {"LOCKED": blob_sdk.BlobImmutabilityPolicyMode.LOCKED,
                "UNLOCKED": blob_sdk.BlobImmutabilityPolicyMode.UNLOCKED}[self.settings.retention_mode]
        return blob_sdk.ImmutabilityPolicy(expiry_time=retain_until(self.settings.retention_days),
                                           policy_mode=mode)

    def _ensure_protection(self, blob, full_key: str, stored: StoredObject) -> StoredObject:
        """An account may take the upload but not keep the policy or hold (Azurite does this).
        Ask once more explicitly; if the account refuses, remove the fresh blob, so a retry does
        not find an identical but unprotected object and take it as done."""
        missing = missing_protection(self.settings, stored)
        if not missing:
            return stored
        try:
            if "retention_mode" in missing:
                blob.set_immutability_policy(self.immutability_policy())
            if "legal_hold" in missing:
                blob.set_legal_hold(True)
        except Exception as exc:
            self._remove_unprotected(blob, stored)
            raise self._protection_refused(exc) from exc
        stored = self._stat(full_key)
        if missing_protection(self.settings, stored):
            self._remove_unprotected(blob, stored)
            raise PermanentStorageError(
                f"{stored.uri}: the account accepted the immutability policy / legal hold but does "
                "not report it; the blob was removed. Check version-level immutability on the "
                f"container {self.settings.bucket}", target=self.name)
        return stored

    def _protection_refused(self, exc: Exception) -> StorageError:
        core = require_sdk("azure.core.exceptions", SDK_PACKAGE, target=self.name)
        status = getattr(exc, "status_code", None)
        if isinstance(exc, core.HttpResponseError) and status is not None and not is_retryable_status(status):
            return PermanentStorageError(
                f"the account refused the immutability policy / legal hold (HTTP {exc.status_code}"
                f"{_code_suffix(exc)}); the uploaded blob was removed. Enable version-level "
                f"immutability on the container {self.settings.bucket}, or remove retention_mode / "
                "legal_hold from this target", target=self.name)
        return self._classify(exc, "setting the immutability policy / legal hold")

    def _remove_unprotected(self, blob, stored: StoredObject) -> None:
        core = require_sdk("azure.core", SDK_PACKAGE, target=self.name)
        try:
            blob.delete_blob(etag=stored.version, match_condition=core.MatchConditions.IfNotModified)
        except Exception as exc:
            raise PermanentStorageError(
                f"{stored.uri} is stored WITHOUT the requested immutability policy / legal hold and "
                "could not be removed; remove it by hand before the next run", target=self.name) from exc

    def _stat(self, full_key: str) -> StoredObject:
        return self._stored(full_key, self._blob(full_key).get_blob_properties())

    def _stored(self, full_key: str, props) -> StoredObject:
        md5 = props.content_settings.content_md5
        return StoredObject(
            key=full_key,
            uri=f"azure://{self.account}/{self.settings.bucket}/{full_key}",
            size=props.size,
            sha256=(props.metadata or {}).get(SHA256_METADATA_KEY),
            native={"md5": bytes(md5).hex()} if md5 else {},
            version=props.version_id or (props.etag or "").strip('"') or None,
            retention=_retention(props),
        )

    def _delete(self, full_key: str) -> None:
        self._blob(full_key).delete_blob()

    def _bucket_retention(self) -> BucketRetention:
        """Immutability as the container reports it. A container-level policy or legal hold
        keeps every blob written now, so the probe writes nothing there."""
        props = self._container().get_container_properties()
        versioned = bool(getattr(props, "immutable_storage_with_versioning_enabled", False))
        policy = bool(getattr(props, "has_immutability_policy", False))
        hold = bool(getattr(props, "has_legal_hold", False))
        parts = [f"version-level immutability {'enabled' if versioned else 'not enabled'}"]
        if policy:
            parts.append("a container immutability policy is set")
        if hold:
            parts.append("a container legal hold is set")
        needs = self._protection_needs()
        problem = None
        if needs and not versioned:
            problem = (f"{needs} version-level immutability on container {self.settings.bucket}, which "
                       "it does not have: every upload would be refused; enable it, or remove those "
                       "settings")
        return BucketRetention(summary="container " + ", ".join(parts), locks_new_objects=policy or hold,
                               problem=problem)

    def _probe_write_nothing(self, full_key: str) -> str:
        """A staged block needs write permission but never becomes a blob unless a block list
        is committed; Azure discards uncommitted blocks after a week."""
        block_id = base64.b64encode(b"rtk-archive-probe").decode()
        self._blob(full_key).stage_block(block_id, PROBE_BYTES, length=len(PROBE_BYTES))
        return "a block was staged and never committed"

    @contextlib.contextmanager
    def _open_read(self, full_key: str):
        # The downloader pins the blob's ETag after the first range, so the bytes cannot mix
        # two versions; it has read(size) like a file.
        yield self._blob(full_key).download_blob(max_concurrency=self.settings.max_concurrency)

    # -- errors ---------------------------------------------------------------------------

    def _classify(self, exc: Exception, action: str) -> StorageError:
        core = require_sdk("azure.core.exceptions", SDK_PACKAGE, target=self.name)
        where = f"container {self.settings.bucket} in account {self.account}"
        if isinstance(exc, core.ResourceNotFoundError):
            if _error_code(exc) == "ContainerNotFound":
                return PermanentStorageError(f"{action}: {where} does not exist; create it or fix "
                                             "bucket", target=self.name)
            return NotFound(f"{action}: no such blob in {where}", target=self.name)
        if isinstance(exc, core.ResourceExistsError):
            return ObjectConflict(f"{action}: a blob already exists under this name in {where}; "
                                  "rtk-archive never overwrites", target=self.name)
        if type(exc).__name__ == "AzureSigningError":
            return PermanentStorageError(f"{action}: requests could not be signed with the AccountKey "
                                         "in access_key; copy the connection string again", target=self.name)
        if _is_auth_failure(core, exc):
            return PermanentStorageError(
                f"{action}: access refused{_status_suffix(exc)}; check the connection string in "
                f"access_key (account key, or SAS permissions) for {where}", target=self.name)
        if isinstance(exc, (core.ServiceRequestError, core.ServiceResponseError)):
            return RetryableStorageError(f"{action}: connection to {self.account} failed "
                                         f"({type(exc).__name__})", target=self.name)
        if isinstance(exc, core.HttpResponseError):
            return _by_status(exc, action, self.name)
        if isinstance(exc, OSError):  # reading the source, or the network below the SDK
            return RetryableStorageError(f"{action}: I/O error ({type(exc).__name__})", target=self.name)
        return RetryableStorageError(f"{action}: {type(exc).__name__}", target=self.name)


# --------------------------------------------------------------------------- helpers


def _retention(props) -> Retention | None:
    policy = getattr(props, "immutability_policy", None)
    expiry = getattr(policy, "expiry_time", None)
    mode = getattr(policy, "policy_mode", None)
    hold = bool(getattr(props, "has_legal_hold", False))
    if expiry is None and not hold:
        return None
    mode_text = str(getattr(mode, "value", mode) or "").upper()
    return Retention(
        mode=mode_text if expiry is not None and mode_text else "HOLD",
        until=iso_utc(expiry) if expiry is not None else None,
        legal_hold=hold,
    )


def _error_code(exc: Exception) -> str:
    """Azure's error code (BlobNotFound, AuthenticationFailed...): a fixed word, safe to show."""
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    return str(code) if code else ""


def _code_suffix(exc: Exception) -> str:
    code = _error_code(exc)
    return f", {code}" if code else ""


def _status_suffix(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f" (HTTP {status}{_code_suffix(exc)})" if status else f" ({type(exc).__name__})"


def _is_auth_failure(core, exc: Exception) -> bool:
    if isinstance(exc, core.ClientAuthenticationError):
        return True
    return isinstance(exc, core.HttpResponseError) and (
        getattr(exc, "status_code", None) == 403 or _error_code(exc) in AUTH_ERROR_CODES)


def _by_status(exc: Exception, action: str, target: str) -> StorageError:
    status = getattr(exc, "status_code", None)
    if status is None or is_retryable_status(status):
        return RetryableStorageError(f"{action}: the service is unavailable{_status_suffix(exc)}",
                                     target=target)
    if status == 501:
        return PermanentStorageError(f"{action}: the service does not implement this operation"
                                     f"{_status_suffix(exc)}", target=target)
    return PermanentStorageError(f"{action}: refused by the service{_status_suffix(exc)}", target=target)
