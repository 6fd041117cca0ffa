"""What an `azure` target is configured with: the storage account's connection string (checked
when the configuration is loaded, never echoed), the container, and the upload sizes."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator

from storage.capabilities import Capabilities
from storage.settings import TargetSettings, unused_field

MiB = 1 << 20
# Azure's limits: a block is at most 4000 MiB, a single Put Blob at most 5000 MiB.
MAX_BLOCK_SIZE = 4000 * MiB
MAX_SINGLE_PUT = 5000 * MiB
CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


def parse_connection_string(value: str) -> dict[str, str]:
    """`Name=value;Name=value` with names case-insensitive (upper-cased here, as the SDK does)
    and values that may contain `=` (base64 keys, SAS tokens). Errors never quote the value."""
    settings = {}
    for segment in value.strip().rstrip(";").split(";"):
        name, sep, item = segment.partition("=")
        if not sep or not name.strip():
            raise ValueError("access_key is not an Azure storage connection string "
                             "(expected Name=value pairs separated by ';')")
        settings[name.strip().upper()] = item.strip()
    return settings


def check_connection_string(value: str) -> None:
    """Refuse, at configuration time, what the SDK would only refuse at the first request."""
    parts = parse_connection_string(value)
    if parts.get("USEDEVELOPMENTSTORAGE", "").lower() == "true":
        return
    if not (parts.get("ACCOUNTNAME") or parts.get("BLOBENDPOINT")):
        raise ValueError("access_key: the connection string names no AccountName or BlobEndpoint")
    if not (parts.get("ACCOUNTKEY") or parts.get("SHAREDACCESSSIGNATURE")):
        raise ValueError("access_key: the connection string has no AccountKey or SharedAccessSignature")
    if parts.get("ACCOUNTKEY"):
        try:
            base64.b64decode(parts["ACCOUNTKEY"], validate=True)
        except binascii.Error:
            raise ValueError("access_key: the AccountKey in the connection string is not valid base64 "
                             "(copy the connection string again from the portal)") from None


def account_label(connection_string: str) -> str:
    """The account a connection string points at, for URIs and logs (never the key)."""
    try:
        parts = parse_connection_string(connection_string)
    except ValueError:  # only settings built without validation get here; the SDK will refuse it
        return "unknown-account"
    if parts.get("USEDEVELOPMENTSTORAGE", "").lower() == "true":
        return "devstoreaccount1"
    if parts.get("ACCOUNTNAME"):
        return parts["ACCOUNTNAME"]
    endpoint = urlsplit(parts.get("BLOBENDPOINT", ""))
    return endpoint.netloc or "unknown-account"


CAPABILITIES = Capabilities(
    # Content-MD5 of the whole file, set by the adapter, whose bytes it checks (CRC32C) as the
    # SDK reads them, whether they go in one Put Blob or in blocks.
    digests=frozenset({"md5"}), multipart_digests=frozenset({"md5"}), uses_md5=True,
    retention_modes=("LOCKED", "UNLOCKED"),  # version-level immutability policies
    retention_note=" (a version-level immutability policy)",
    legal_hold=True,
    conditional_create=True,  # If-None-Match: * on Put Blob and on the block list
    # Blocks staged as the file arrives; metadata (the SHA-256) and Content-MD5 go with the
    # block-list commit, so an overlapped copy carries the same as any other.
    overlapped_upload=True,
)


class AzureSettings(TargetSettings):
    # Inputs stay out of validation messages: a misplaced connection string must not be echoed.
    model_config = ConfigDict(hide_input_in_errors=True)
    capabilities = CAPABILITIES

    type: str = "azure"
    access_key: SecretStr  # the storage account connection string
    bucket: str = Field(min_length=1)  # the container
    # RealtimeKit sends these empty for azure. Empty or absent is accepted so a storage_config can
    # be copied as it is; a value is refused, since it would be silently ignored.
    secret: SecretStr | None = None
    region: str | None = None
    max_concurrency: int = Field(default=8, ge=1, le=64)
    block_size: int = Field(default=8 * MiB, ge=64 * 1024, le=MAX_BLOCK_SIZE)
    max_single_put_size: int = Field(default=64 * MiB, ge=0, le=MAX_SINGLE_PUT)

    @field_validator("access_key")
    @classmethod
    def _valid_connection_string(cls, value: SecretStr) -> SecretStr:
        check_connection_string(value.get_secret_value())
        return value

    @field_validator("bucket")
    @classmethod
    def _valid_container(cls, value: str) -> str:
        if not CONTAINER_NAME.match(value):
            raise ValueError(f"bucket {value!r} is not a valid Azure container name "
                             "(3-63 lower-case letters, digits and single hyphens)")
        return value

    @field_validator("secret")
    @classmethod
    def _secret_unused(cls, value: SecretStr | None) -> SecretStr | None:
        return unused_field(value, "secret is not used by azure targets: the connection string in "
                                   "access_key carries the account key; leave secret empty")

    @field_validator("region")
    @classmethod
    def _region_unused(cls, value: str | None) -> str | None:
        return unused_field(value, "region is not used by azure targets: the connection string in "
                                   "access_key names the account; leave region empty")
