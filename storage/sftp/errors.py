"""How an `sftp` target's failures read: paramiko's and the socket's exceptions mapped to storage
errors that name what to fix (a host key, a login, a permission, a full disk)."""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

from storage.errors import NotFound, PermanentStorageError, RetryableStorageError, StorageError
from storage.sftp import hostkeys
from storage.sftp.settings import SFTPSettings


def classify(settings: SFTPSettings, exc: Exception, action: str) -> StorageError:
    """Map a paramiko or socket failure to a storage error naming what to fix."""
    paramiko = sys.modules.get("paramiko")
    if paramiko is not None and isinstance(exc, paramiko.SSHException):
        return _ssh(settings, paramiko, exc, action)
    if isinstance(exc, EOFError):
        return RetryableStorageError(f"{action}: the server closed the connection", target=settings.name)
    if isinstance(exc, socket.gaierror):
        return RetryableStorageError(f"{action}: host {settings.host!r} could not be resolved "
                                     "(check host)", target=settings.name)
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return RetryableStorageError(f"{action}: no answer from {_where(settings)} within "
                                     f"{settings.timeout:g}s", target=settings.name)
    if isinstance(exc, OSError):
        return _os(settings, exc, action)
    return RetryableStorageError(f"{action}: {type(exc).__name__}", target=settings.name)

def _ssh(settings: SFTPSettings, paramiko: Any, exc: Exception, action: str) -> StorageError:
    if isinstance(exc, paramiko.BadHostKeyException):
        return hostkeys.changed(settings, exc.key, exc.expected_key)
    if isinstance(exc, paramiko.AuthenticationException):
        fix = ("password" if settings.auth_method == "PASSWORD"
               else "private_key, and that its public key is in the server's authorized_keys")
        return PermanentStorageError(
            f"{action}: login refused for user {settings.username} at {_where(settings)}: check {fix}",
            target=settings.name,
        )
    if isinstance(exc, paramiko.IncompatiblePeer):
        return PermanentStorageError(
            f"{action}: no SSH algorithms in common with {_where(settings)} ({_scrub(settings, exc)}); "
            "if host_key names a key type the server lacks, pin the key it has",
            target=settings.name,
        )
    if isinstance(exc, paramiko.ChannelException) and exc.code == 1:  # administratively prohibited
        return PermanentStorageError(f"{action}: {_where(settings)} refuses an SFTP session for user "
                                     f"{settings.username}", target=settings.name)
    # Banner time-outs, dropped connections, protocol hiccups: worth another try.
    return RetryableStorageError(f"{action}: SSH error with {_where(settings)}: {_scrub(settings, exc)}",
                                 target=settings.name)

def _os(settings: SFTPSettings, exc: OSError, action: str) -> StorageError:
    at = exc.filename or _where(settings)
    if exc.errno == errno.ENOENT:
        return NotFound(f"{action}: no such file or folder at {at}", target=settings.name)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermanentStorageError(
            f"{action}: permission denied at {at}: let user {settings.username} read and "
            "write there, or change path", target=settings.name,
        )
    # A full disk or quota stays retryable, as in local.py: someone frees space and the next
    # attempt succeeds without a settings change. SFTP v3 cannot even report ENOSPC as such:
    # OpenSSH sends it as a generic "Failure", handled just below.
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RetryableStorageError(f"{action}: no space left at {at}", target=settings.name)
    if exc.errno is None and exc.args == ("Failure",):
        # SSH_FX_FAILURE: OpenSSH's answer for ENOSPC, EDQUOT, EEXIST and most others.
        return RetryableStorageError(
            f"{action}: the server reported a failure at {at} (a full disk, a quota, or a name "
            "in the way?)", target=settings.name,
        )
    reason = exc.strerror or _scrub(settings, exc)
    return RetryableStorageError(f"{action}: {reason} ({_where(settings)})", target=settings.name)

def _where(settings: SFTPSettings) -> str:
    return f"{settings.host}:{settings.port}"

def _scrub(settings: SFTPSettings, value: object) -> str:
    """Text from an SSH library is protocol text, but make certain no secret rides along."""
    text = str(value)
    for secret in settings.secret_values():
        text = text.replace(secret, "***")
    return text[:300]
