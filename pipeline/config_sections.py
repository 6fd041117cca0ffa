"""The configuration's sections for operations and evidence ([logging], [metrics], [notify],
[signing], [timestamping], [verify]) and what every section shares: unknown keys refused, no
inf or nan, paths that name something. pipeline.config assembles them with the rest."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pipeline.clock import parse_duration


class Section(BaseModel):
    # inf and nan are never a sensible number of seconds, hours or days.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def usable_path(value: Path) -> Path:
    text = str(value)
    if not text.strip() or text == ".":
        raise ValueError("must name a file or folder, not be empty")
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    return value


class LoggingConfig(Section):
    format: Literal["text", "json"] | None = None  # the command line's --log-format wins
    file: Path | None = None  # appended to, 0600, reopened after logrotate (--log-file wins)

    _file = field_validator("file")(lambda value: value if value is None else usable_path(value))


class MetricsConfig(Section):
    # node_exporter's textfile collector reads it: rewritten atomically after each command that records.
    textfile: Path | None = None

    _textfile = field_validator("textfile")(lambda value: value if value is None else usable_path(value))


class NotifyConfig(Section):
    ping_url: SecretStr | None = None  # healthchecks.io style: <url>/start, <url>, <url>/<exit code>
    timeout: float = Field(default=10.0, gt=0, le=300)
    attempts: int = Field(default=3, ge=1, le=10)

    @field_validator("ping_url")
    @classmethod
    def _ping_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value().strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL like https://hc-ping.com/<uuid>, without a query")
        return SecretStr(url)


class SigningConfig(Section):
    key: Path | None = None  # Ed25519 private key (PEM) that signs every new manifest
    public_keys: list[Path] = []  # older public keys: what they signed stays verifiable (rotation)


class TimestampingConfig(Section):
    url: str | None = None  # an RFC 3161 time-stamping authority (http or https)
    ca_file: Path | None = None  # the TSA's certificate and its chain (PEM), to verify tokens with
    timeout: float = Field(default=30.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value


class VerifyConfig(Section):
    # A copy last verified longer ago than this is overdue: `status` lists it, and a nightly
    # `verify --scrub` re-checks the oldest first so none stays overdue.
    max_age: timedelta = timedelta(days=30)

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        duration = parse_duration(value)
        if duration <= timedelta(0):
            raise ValueError("must be longer than nothing")
        return duration
