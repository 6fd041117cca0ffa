"""The SSH host key, always verified: trusting exactly the key a known_hosts file lists or the one
pinned in the settings (never trust on first use), and refusals that show the offered key's
fingerprint and say how to pin it once its owner has confirmed it."""

from __future__ import annotations

import base64
from typing import Any

from storage.errors import PermanentStorageError
from storage.sftp.settings import SFTPSettings


class HostKeyRefused(PermanentStorageError):
    """The server's host key is unknown or differs from the trusted one."""


def known_hosts_name(settings: SFTPSettings) -> str:
    """The server's name as a known_hosts file spells it."""
    host, port = settings.host, settings.port
    return host if port == 22 else f"[{host}]:{port}"


def trust(paramiko: Any, host_keys: Any, settings: SFTPSettings) -> None:
    """Load the one set of trusted keys into paramiko's HostKeys."""
    if settings.known_hosts is not None:
        try:
            host_keys.load(settings.known_hosts)
        except OSError as exc:  # not NotFound: that would mean "no such object"
            raise PermanentStorageError(f"known_hosts file {settings.known_hosts} cannot be "
                                        f"read: {exc.strerror}") from None
        return
    kind, blob = settings.host_key.split()
    key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    host_keys.add(known_hosts_name(settings), kind, key)


def offered_key(client: Any) -> Any:
    """The host key the server offered on this connection, if it got that far."""
    transport = client.get_transport()
    if transport is None or transport.host_key is None:
        return None
    return transport.host_key


def unknown(settings: SFTPSettings, offered: Any) -> HostKeyRefused:
    where = (f"is not in known_hosts file {settings.known_hosts}" if settings.known_hosts
             else "does not match host_key")
    return HostKeyRefused(
        f"the SSH host key of {settings.host}:{settings.port} {where}; the server offers "
        f"{offered.get_name()} {offered.fingerprint}. Check that fingerprint with the server's "
        f"administrator, then {_pinning_advice(settings, offered)}",
        target=settings.name,
    )


def changed(settings: SFTPSettings, offered: Any, expected: Any) -> HostKeyRefused:
    return HostKeyRefused(
        f"the SSH host key of {settings.host}:{settings.port} CHANGED: expected "
        f"{expected.get_name()} {expected.fingerprint}, the server offers {offered.get_name()} "
        f"{offered.fingerprint}. The connection may be intercepted; if the server's key was "
        f"replaced on purpose, confirm the new fingerprint with its administrator, then "
        f"{_pinning_advice(settings, offered)}",
        target=settings.name,
    )


def _pinning_advice(settings: SFTPSettings, offered: Any) -> str:
    line = f"{offered.get_name()} {offered.get_base64()}"
    known_hosts = settings.known_hosts or "~/.ssh/known_hosts"
    return (f'pin it with host_key = "{line}" in this target\'s settings, or add it to a '
            f"known_hosts file with: ssh-keyscan -p {settings.port} {settings.host} "
            f">> {known_hosts} (and set known_hosts)")
