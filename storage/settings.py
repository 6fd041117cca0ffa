"""The settings every [[targets]] entry shares, and the field checks several backends use: each
backend's settings model extends TargetSettings and declares its Capabilities."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from storage.capabilities import Capabilities


class TargetSettings(BaseModel):
    """Settings shared by every target type. The field names follow RealtimeKit's
    `storage_config`; each backend's subclass adds the fields it uses and forbids the rest."""

    # hide_input_in_errors: a validation message must never echo a value (it may be a secret).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False)

    name: str = Field(min_length=1)
    type: str
    path: str = ""  # prefix inside the bucket / folder; absent means the root
    key_template: str | None = None  # overrides [archive] key_template for this target
    # Write-once protection, opt-in; each backend's capabilities say which modes it can enforce.
    retention_mode: Literal["GOVERNANCE", "COMPLIANCE", "READ_ONLY", "LOCKED", "UNLOCKED"] | None = None
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    legal_hold: bool = False

    # What the backend can do; `_check_retention` holds every type's settings to it, so no
    # backend writes these checks again.
    capabilities: ClassVar[Capabilities] = Capabilities()

    @model_validator(mode="after")
    def _check_retention(self):
        can = self.capabilities
        mode, days, modes = self.retention_mode, self.retention_days, can.retention_modes
        if mode is not None and mode not in modes:
            offer = f"use {' or '.join(modes)}{can.retention_note}" if modes else "it offers no retention"
            raise ValueError(f"retention_mode {mode} is not available on {self.type}: {offer}")
        if can.retention_timed:
            if mode is not None and days is None:
                raise ValueError("retention_mode needs retention_days (how long objects stay locked): "
                                 "the two go together")
            if days is not None and mode is None:
                raise ValueError(f"retention_days needs retention_mode ({' or '.join(modes)}): "
                                 "the two go together")
        elif days is not None:
            raise ValueError(f"{self.type} cannot enforce retention_days; retention_mode "
                             f"{' or '.join(modes)}{can.retention_note} is all it offers")
        if self.legal_hold and not can.legal_hold:
            raise ValueError(f"{self.type} cannot enforce legal_hold")
        return self

    @field_validator("path")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:
        return value.strip().strip("/")

    def secret_values(self) -> list[str]:
        """Every secret this target holds, so the pipeline can scrub them from any output."""
        values = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        return values


def unused_field(value, message: str):
    """A storage_config field this type does not use: empty is accepted as it is (so a
    RealtimeKit storage_config can be copied over), any value is refused with `message`."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if text is not None and text.strip():
        raise ValueError(message)
    return value


def check_endpoint(value: str | None) -> str | None:
    """A service URL override (`endpoint`): http(s), a host, no credentials (they would end up
    in logs; keys belong in access_key/secret). Empty means the service's default."""
    if value is None or not value.strip():
        return None
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("endpoint must be a URL like https://host[:port]")
    if parts.username or parts.password:
        raise ValueError("endpoint must not contain credentials")
    return value


# A service URL override field, checked by check_endpoint.
EndpointURL = Annotated[str | None, AfterValidator(check_endpoint)]
