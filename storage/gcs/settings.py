"""What a `gcs` target is configured with: the bucket, the service-account key (checked when the
configuration is loaded, never echoed) or anonymous access to an emulator, and the chunk size."""

from __future__ import annotations

import base64
import binascii
import json

from pydantic import ConfigDict, Field, SecretStr, field_validator

from storage.capabilities import Capabilities
from storage.settings import EndpointURL, TargetSettings, unused_field

MiB = 1 << 20
CHUNK_QUANTUM = 256 * 1024  # resumable chunks must be multiples of 256 KiB
GCS_RETENTION_MODES = {"LOCKED": "Locked", "UNLOCKED": "Unlocked"}  # object retention modes


def credentials_info(secret: str) -> dict:
    """The credentials JSON from `secret`, given raw or base64-encoded (RealtimeKit does not say
    which). Errors name `secret` and never quote it."""
    text = secret.strip()
    if not text.startswith("{"):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("secret is neither service-account JSON nor base64 of it") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("secret is not valid JSON (expected the service account's key file)") from None
    # Only service-account keys: other credential types (external_account...) can make
    # google-auth run commands or fetch URLs named in the file, and RealtimeKit uses none.
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError("secret is JSON but not a service-account key (\"type\" must be "
                         "\"service_account\")")
    missing = [name for name in ("client_email", "private_key", "token_uri") if not info.get(name)]
    if missing:
        raise ValueError(f"secret: the service-account key lacks {', '.join(missing)}")
    return info


CAPABILITIES = Capabilities(
    # The object's MD5 and CRC32C, computed by GCS over the stored bytes; a resumable upload
    # makes one object, so both are whole-file digests (only composed objects lack an MD5).
    digests=frozenset({"md5", "crc32c"}), multipart_digests=frozenset({"md5", "crc32c"}), uses_md5=True,
    retention_modes=tuple(GCS_RETENTION_MODES),
    retention_note=" (object retention; the bucket must have it enabled)",
    legal_hold=True,  # a temporary hold
    conditional_create=True,  # ifGenerationMatch=0
    # A resumable upload fed as the file arrives; the SHA-256 is patched on once it is finalised.
    overlapped_upload=True,
)


class GCSSettings(TargetSettings):
    # Inputs stay out of validation messages: a pasted key must not be echoed.
    model_config = ConfigDict(hide_input_in_errors=True)
    capabilities = CAPABILITIES

    type: str = "gcs"
    bucket: str = Field(min_length=1)
    secret: SecretStr | None = None  # credentials JSON, raw or base64; absent: see module doc
    region: str | None = None  # informational: a bucket's location is fixed when it is created
    # Not used by gcs. Empty or absent is accepted so a storage_config can be copied as it is; a
    # value is refused, since it would be silently ignored (a key belongs in secret).
    access_key: SecretStr | None = None
    endpoint: EndpointURL = None  # service URL override (emulators, private endpoints)
    project: str | None = None  # billing project; object operations do not need one
    chunk_size: int = Field(default=16 * MiB, ge=CHUNK_QUANTUM, le=1024 * MiB)

    @field_validator("secret")
    @classmethod
    def _valid_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        credentials_info(value.get_secret_value())
        return value

    @field_validator("access_key")
    @classmethod
    def _access_key_unused(cls, value: SecretStr | None) -> None:
        unused_field(value, "access_key is not used by gcs targets: put the service-account key "
                            "JSON in secret and leave access_key empty")
        return None

    @field_validator("chunk_size")
    @classmethod
    def _chunk_multiple(cls, value: int) -> int:
        if value % CHUNK_QUANTUM:
            raise ValueError(f"chunk_size must be a multiple of 256 KiB ({CHUNK_QUANTUM} bytes)")
        return value
