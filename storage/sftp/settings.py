"""What an `sftp` target is configured with: the server, the login (a password, or a private key
with its passphrase) and the server's host key, which is always verified; all checked when the
configuration is loaded, none ever echoed."""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from storage.capabilities import folder_capabilities
from storage.settings import TargetSettings

HOST_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521")


# SFTP keeps no metadata: the server's own `sha256sum` of the stored bytes, where the account may
# run it (remote_checksum). SFTP's RENAME refuses an existing name.
CAPABILITIES = folder_capabilities("sha256", "chmod 0444 after the rename")


class SFTPSettings(TargetSettings):
    # Model-level errors would otherwise print the whole raw input, password included.
    model_config = ConfigDict(hide_input_in_errors=True)
    capabilities = CAPABILITIES

    type: str = "sftp"
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(min_length=1)
    auth_method: Literal["KEY", "PASSWORD"]
    # The login password with PASSWORD; the private key's passphrase with KEY (RealtimeKit's use).
    password: SecretStr | None = None
    private_key: SecretStr | None = None  # PEM or OpenSSH text
    private_key_file: str | None = None  # or the key read from this file
    known_hosts: str | None = None  # a known_hosts file listing the server...
    host_key: str | None = None  # ...or its one pinned public key: "ssh-ed25519 AAAA..."
    timeout: float = Field(default=30, gt=0, le=3600)  # seconds: connect, login, each SFTP reply
    remote_checksum: bool = True  # run `sha256sum` on the server for stat

    _file_key: SecretStr | None = PrivateAttr(default=None)

    @field_validator("path")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:
        """A remote folder, not a bucket prefix: an absolute path must stay absolute."""
        value = value.strip()
        if value == "~" or value.startswith("~/"):
            value = value[2:]  # SFTP starts in the login folder already; it does not expand ~
        trimmed = value.rstrip("/")
        return trimmed if trimmed or not value else "/"

    @field_validator("auth_method", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("password", "private_key", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any) -> Any:
        return None if value == "" else value  # RealtimeKit sends "" for unused fields

    @field_validator("host_key")
    @classmethod
    def _check_host_key(cls, value: str | None) -> str | None:
        return None if value is None else _parse_host_key(value)

    @field_validator("known_hosts")
    @classmethod
    def _check_known_hosts(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = os.path.expanduser(value.strip())
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.read(1)
        except OSError as exc:
            raise ValueError(f"known_hosts file {path!r} cannot be read: {exc.strerror}") from None
        return path

    @model_validator(mode="after")
    def _check_consistency(self) -> SFTPSettings:
        self._check_host_verification()
        self._check_credentials()
        return self

    def _check_host_verification(self) -> None:
        if (self.known_hosts is None) == (self.host_key is None):
            raise ValueError(
                "give exactly one of known_hosts (a known_hosts file) or host_key (the server's "
                "public key, e.g. the output of: ssh-keyscan -p PORT HOST): the SSH host key is "
                "always verified"
            )

    def _check_credentials(self) -> None:
        if self.private_key is not None and self.private_key_file is not None:
            raise ValueError("give private_key or private_key_file, not both")
        if self.private_key_file is not None:
            self._file_key = SecretStr(_read_key_file(self.private_key_file))
        if self.auth_method == "PASSWORD":
            if self.password is None:
                raise ValueError("auth_method PASSWORD needs password")
            if self.key_text() is not None:
                raise ValueError("private_key is only used with auth_method KEY")
            return
        text = self.key_text()
        if text is None:
            raise ValueError("auth_method KEY needs private_key (the private key's text) or private_key_file")
        if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
            raise ValueError(
                "private_key is not a PEM or OpenSSH private key "
                "(it starts with -----BEGIN ... PRIVATE KEY-----)"
            )

    def key_text(self) -> str | None:
        """The private key's text, from private_key or private_key_file."""
        secret = self.private_key or self._file_key
        return secret.get_secret_value() if secret is not None else None

    def secret_values(self) -> list[str]:
        values = super().secret_values()
        if self._file_key is not None:
            values.append(self._file_key.get_secret_value())
        return values


def _read_key_file(path: str) -> str:
    path = os.path.expanduser(path.strip())
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError:
        raise ValueError(f"private_key_file {path!r} is not a text (PEM or OpenSSH) key file") from None
    except OSError as exc:
        raise ValueError(f"private_key_file {path!r} cannot be read: {exc.strerror}") from None


def _parse_host_key(line: str) -> str:
    """Accept "TYPE BASE64", optionally after a known_hosts host field and before a comment;
    return "TYPE BASE64". The key blob must really hold a key of that type."""
    fields = line.split()
    if fields and fields[0].startswith("@"):
        raise ValueError("host_key: markers such as @cert-authority are not supported; "
                         "pin the server's own key")
    if len(fields) >= 2 and fields[0] in HOST_KEY_TYPES:
        kind, blob = fields[0], fields[1]
    elif len(fields) >= 3 and fields[1] in HOST_KEY_TYPES:
        kind, blob = fields[1], fields[2]
    else:
        raise ValueError(f"host_key must look like 'ssh-ed25519 AAAA...' (types: {', '.join(HOST_KEY_TYPES)})")
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise ValueError("host_key: the key data is not valid base64") from None
    name_length = int.from_bytes(raw[:4], "big")
    if name_length != len(kind) or raw[4 : 4 + name_length] != kind.encode():
        raise ValueError(f"host_key: the key data does not hold a {kind} key")
    return f"{kind} {blob}"
