"""RealtimeKit webhooks: checking `rtk-signature` (base64 RSA-SHA256, PKCS#1 v1.5, over the raw
body) with RealtimeKit's public key, and reading the payloads (camelCase; `fileSize` a string).

The key comes from `[webhook] public_key` (PEM) or from `public_key_url` (RealtimeKit's
well-known URL by default), fetched once and cached; when a signature fails with the cached
key, the key is fetched again, once, so a rotated key is followed without a restart."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import pipeline
from pipeline.service_settings import WebhookConfig

log = logging.getLogger("rtk_archive.serve")

SIGNATURE_HEADER = "rtk-signature"
DELIVERY_HEADER = "rtk-uuid"
WEBHOOK_ID_HEADER = "rtk-webhook-id"
RECORDING_EVENT = "recording.statusUpdate"
ARTIFACT_EVENTS = ("meeting.transcript", "meeting.summary", "meeting.chatSynced")


class KeyUnavailable(Exception):
    """The public key could not be fetched or read: the webhook cannot be checked now (5xx, so
    RealtimeKit delivers it again)."""


class BadPayload(ValueError):
    """A correctly signed body that is not a webhook this service can read."""


# --------------------------------------------------------------------------- payloads


class _Camel(BaseModel):
    # Unknown fields are kept out, not refused: RealtimeKit may add fields at any time.
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class WebhookRecording(_Camel):
    id: str = Field(min_length=1)
    recording_id: str | None = Field(default=None, alias="recordingId")
    status: str
    download_url: str | None = Field(default=None, alias="downloadUrl", repr=False)
    audio_download_url: str | None = Field(default=None, alias="audioDownloadUrl", repr=False)
    download_url_expiry: str | None = Field(default=None, alias="downloadUrlExpiry")
    file_size: int | None = Field(default=None, alias="fileSize")  # a string of digits on the wire
    output_file_name: str | None = Field(default=None, alias="outputFileName")
    meeting_id: str | None = Field(default=None, alias="meetingId")
    recording_duration: float | None = Field(default=None, alias="recordingDuration")

    @field_validator("file_size", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if not value.isdigit():
                raise ValueError("fileSize must be a whole number of bytes")
            return int(value)
        return value


class WebhookMeeting(_Camel):
    id: str | None = None
    session_id: str | None = Field(default=None, alias="sessionId")
    title: str | None = None


class RecordingStatusUpdate(_Camel):
    event: str
    recording: WebhookRecording
    meeting: WebhookMeeting | None = None


class WebhookEvent(_Camel):
    """Any event: only its name is read."""
    event: str = Field(min_length=1)


def parse_event(body: bytes) -> WebhookEvent | RecordingStatusUpdate:
    """The event in a (verified) body; BadPayload, one line, when it cannot be read."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadPayload("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("the body is not a JSON object")
    try:
        event = WebhookEvent.model_validate(data)
        if event.event == RECORDING_EVENT:
            return RecordingStatusUpdate.model_validate(data)
        return event
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_input=False, include_url=False))
        raise BadPayload(f"unreadable {data.get('event', 'event')!s:.60}: {problems}") from None


# --------------------------------------------------------------------------- signatures


def verify_signature(key: rsa.RSAPublicKey, body: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def decode_signature(header: str) -> bytes | None:
    """The signature's bytes, or None when the header is not base64."""
    try:
        return base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


class PublicKey:
    """RealtimeKit's webhook key: configured, or fetched from its URL and cached; `refresh()`
    fetches it again (at most once per failing delivery, the caller decides)."""

    def __init__(self, settings: WebhookConfig, *, timeout: float = 10.0):
        self.url = settings.public_key_url
        self.fixed = settings.public_key is not None
        self._key = load_public_key(settings.public_key) if settings.public_key else None
        self._timeout = timeout
        self._refresh_interval = settings.key_refresh_interval
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def current(self) -> rsa.RSAPublicKey:
        with self._lock:
            if self._key is None:
                self._key = self._fetch()
            return self._key

    def refresh(self) -> rsa.RSAPublicKey | None:
        """A freshly fetched key; None when the key is configured, or was fetched less than
        `key_refresh_interval` ago (nothing new to try)."""
        if self.fixed:
            return None
        with self._lock:
            if self._fetched_at is not None and time.monotonic() - self._fetched_at < self._refresh_interval:
                return None
            self._key = self._fetch()
            return self._key

    def _fetch(self) -> rsa.RSAPublicKey:
        try:
            response = httpx.get(self.url, timeout=self._timeout, follow_redirects=True,
                                 headers={"User-Agent": f"rtk-archive/{pipeline.__version__}"})
            response.raise_for_status()
            pem = response.json()["data"]["publicKey"]
            key = load_public_key(pem)
        except httpx.HTTPError as exc:
            raise KeyUnavailable(f"cannot fetch the webhook public key from {self.url}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyUnavailable(f"{self.url} did not answer a usable public key ({exc})") from None
        self._fetched_at = time.monotonic()
        log.info("webhook public key fetched from %s", self.url)
        return key


def signed_by(key_source: PublicKey, body: bytes, header: str | None) -> bool:
    """Whether `header` is a valid signature of `body`; with a fetched key, a failure is tried
    once more with the key fetched again (RealtimeKit may have rotated it)."""
    signature = decode_signature(header) if header else None
    if signature is None:
        return False
    if verify_signature(key_source.current(), body, signature):
        return True
    fresh = key_source.refresh()
    return fresh is not None and verify_signature(fresh, body, signature)
