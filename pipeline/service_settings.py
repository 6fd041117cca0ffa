"""The `[serve]` and `[webhook]` sections of the configuration: where `rtk-archive serve`
listens, its limits, how often it reconciles with a listing, and where the RealtimeKit public
key that signs webhooks comes from."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from pipeline.clock import duration_seconds
from pipeline.config_sections import Section

REALTIMEKIT_KEY_URL = "https://api.realtime.cloudflare.com/.well-known/webhooks.json"


def seconds(value: object) -> float:
    """A duration of at most 30 days (pipeline.clock's reading of durations)."""
    amount = duration_seconds(value)
    if amount > 30 * 86400:
        raise ValueError("must be from 0 to 30 days")
    return amount

class ServeConfig(Section):

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    webhook_path: str = "/webhooks/realtimekit"
    workers: int = Field(default=2, ge=0, le=64)  # files archived at once by the in-process worker
    # A listing run this often catches whatever no webhook announced; 0: never.
    reconcile_every: float = 1800.0
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    request_timeout: float = 10.0  # to receive a whole request body
    hint_attempts: int = Field(default=5, ge=1, le=100)  # tries per announced recording before giving up
    # An announced recording the API does not show as UPLOADED yet (or an API error) is tried
    # again after this long, doubling each time (at most 15 minutes).
    hint_retry: float = 15.0

    _durations = field_validator("reconcile_every", "request_timeout", "hint_retry", mode="before")(seconds)

    @field_validator("webhook_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", value):
            raise ValueError("must be a URL path starting with '/' (letters, digits, '.', '_', '~', '-', '/')")
        return value

    @field_validator("request_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0 seconds")
        return value


class WebhookConfig(Section):

    public_key: str | None = None  # the PEM itself; otherwise fetched from public_key_url
    public_key_url: str = REALTIMEKIT_KEY_URL
    # A bad signature fetches the key again (RealtimeKit may have rotated it), at most this
    # often, so forged requests cannot make this service hammer the key URL.
    key_refresh_interval: float = 60.0

    _interval = field_validator("key_refresh_interval", mode="before")(seconds)

    @field_validator("public_key")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value is not None and "-----BEGIN PUBLIC KEY-----" not in value:
            raise ValueError("must be a PEM public key (-----BEGIN PUBLIC KEY----- ...)")
        return value

    @field_validator("public_key_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL")
        return value
