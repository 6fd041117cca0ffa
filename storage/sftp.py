"""`sftp`: a folder on an SSH server the customer runs (RealtimeKit's storage_config type "sftp").

Safety comes from the SSH side, not from the storage side: the server's host key is always
verified (a known_hosts file or one pinned key; never trust-on-first-use), and a file appears
under its final name only once complete: it is written to a hidden temporary name in the same
folder and then renamed with SFTP's RENAME, which refuses an existing name.

SFTP has no object metadata, so there is no stored SHA-256 to read back. When the server lets
the user run commands, `sha256sum` on the server hashes the stored bytes: independent evidence,
better than a copy of our own claim. Without it, stat reports `sha256=None` and the pipeline
checks the size only.

paramiko is imported only when a connection is opened, so the rest of rtk-archive never needs it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import io
import logging
import os
import posixpath
import re
import shlex
import socket
import stat as stat_module
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from storage.base import (
    PROBE_PREFIX,
    LocalFile,
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    Retention,
    RetryableStorageError,
    StorageError,
    StoredObject,
    Target,
    TargetSettings,
    require_sdk,
)
from storage.local import PARTIAL_MARKER

log = logging.getLogger(__name__)

T = TypeVar("T")

SOURCE_CHUNK = 1 << 20  # local reads; paramiko cuts them into pipelined 32 KiB SFTP writes
MAX_CONNECTIONS = 4  # per target: enough for the pipeline's workers, modest for MaxStartups
PREFETCH_REQUESTS = 64  # outstanding 32 KiB reads while streaming a file back
# The slowest rate at which we still expect a server to hash a file (a small NAS): bounds how
# long stat waits for `sha256sum` before calling the server stuck.
SLOWEST_HASH_RATE = 20 << 20
HOST_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521")
_SHA256SUM_LINE = re.compile(rb"^\\?([0-9a-f]{64}) ")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --------------------------------------------------------------------------- settings


class SFTPSettings(TargetSettings):
    # Model-level errors would otherwise print the whole raw input, password included.
    model_config = ConfigDict(hide_input_in_errors=True)
    retention_modes = ("READ_ONLY",)
    retention_note = " (chmod 0444 after the rename; weaker: the owner can undo it)"
    retention_timed = False

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


# --------------------------------------------------------------------------- private keys


def load_private_key(paramiko: Any, text: str, passphrase: str | None) -> Any:
    """A paramiko key from PEM or OpenSSH text. Errors name the setting to fix and never the
    key or the passphrase; exceptions from the parsers are not chained, to keep it that way."""
    encrypted = _is_encrypted(text)
    if encrypted and not passphrase:
        raise PermanentStorageError("private_key is protected by a passphrase: put it in password")
    password = passphrase if encrypted else None
    key_class = _key_class(paramiko, text, password, encrypted)
    try:
        return key_class.from_private_key(io.StringIO(text), password=password)
    except (paramiko.SSHException, ValueError, TypeError):
        raise PermanentStorageError("private_key could not be loaded by paramiko") from None


def _key_class(paramiko: Any, text: str, password: str | None, encrypted: bool) -> Any:
    """Parse with `cryptography` (as paramiko's own PKey.from_path does) to learn the type."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    data = text.strip().encode() + b"\n"
    secret = password.encode() if password is not None else None
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=secret)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=secret)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise PermanentStorageError(
                "private_key could not be decrypted with the passphrase in password: check password"
            ) from None
        raise PermanentStorageError("private_key is not a valid PEM or OpenSSH private key") from None
    for kind, key_class in ((rsa.RSAPrivateKey, paramiko.RSAKey),
                            (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
                            (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey)):
        if isinstance(loaded, kind):
            return key_class
    raise PermanentStorageError("private_key is of a type SSH logins do not support here "
                                "(use ed25519, RSA or ECDSA)")


def _is_encrypted(text: str) -> bool:
    if "Proc-Type: 4,ENCRYPTED" in text or "BEGIN ENCRYPTED PRIVATE KEY" in text:
        return True  # legacy PEM / PKCS#8 with a passphrase
    match = re.search(r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END", text, re.DOTALL)
    if not match:
        return False
    try:
        blob = base64.b64decode("".join(match.group(1).split()))
    except binascii.Error:
        return False  # not decodable: the parser will say the key is invalid
    # openssh-key-v1\0, then the cipher name as an SSH string: "none" when unprotected.
    magic = b"openssh-key-v1\x00"
    if not blob.startswith(magic):
        return False
    length = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    cipher = blob[len(magic) + 4 : len(magic) + 4 + length]
    return cipher != b"none"


# --------------------------------------------------------------------------- connections


class HostKeyRefused(PermanentStorageError):
    """The server's host key is unknown or differs from the trusted one."""


@dataclass
class _Session:
    """One SSH connection with its SFTP session; used by one thread at a time."""

    client: Any  # paramiko.SSHClient
    sftp: Any  # paramiko.SFTPClient
    home: str  # the login folder, where relative paths start

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def absolute(self, path: str) -> str:
        return path if path.startswith("/") else posixpath.normpath(posixpath.join(self.home, path))

    def close(self) -> None:
        self.client.close()  # closes the SFTP channel with the transport


@dataclass
class _Lease:
    session: _Session
    reused: bool
    broken: bool = False


class _SessionPool:
    """Up to `size` connections, each lent to one thread at a time: paramiko's SFTPClient
    mixes up replies when two threads send requests at once. Idle connections are reused,
    so a run logs in once per worker, not once per file."""

    def __init__(self, opener: Callable[[], _Session], size: int, wait: float):
        self.opener = opener
        self.size = size
        self.wait = wait
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Session] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def lease(self, *, fresh: bool = False) -> Iterator[_Lease]:
        # Bounded wait: a thread that already holds a lease and asks for another cannot hang.
        if not self._slots.acquire(timeout=self.wait):
            raise RetryableStorageError(f"all {self.size} SFTP connections stayed busy for {self.wait:.0f}s")
        try:
            lease = self._take(fresh)
            try:
                yield lease
            except BaseException as exc:
                lease.broken = lease.broken or not _leaves_session_usable(exc)
                raise
            finally:
                self._give_back(lease)
        finally:
            self._slots.release()

    def _take(self, fresh: bool) -> _Lease:
        with self._lock:
            idle, self._idle = (self._idle, []) if fresh else (self._idle[-1:], self._idle[:-1])
        for session in idle:
            if session.alive() and not fresh:
                return _Lease(session, reused=True)
            session.close()  # dropped while idle (server restart, NAT time-out), or being replaced
        return _Lease(self.opener(), reused=False)

    def _give_back(self, lease: _Lease) -> None:
        if not lease.broken and lease.session.alive():
            with self._lock:
                if not self._closed:
                    self._idle.append(lease.session)
                    return
        lease.session.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()


def _leaves_session_usable(exc: BaseException) -> bool:
    """Our own refusals and SFTP status replies (errno set) leave the session in step; a
    time-out or protocol error may leave replies in flight, so that connection is dropped."""
    if isinstance(exc, StorageError):
        return True
    return isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, (TimeoutError, ConnectionError))


@contextlib.contextmanager
def _at(path: str) -> Iterator[None]:
    """Name the remote path in an SFTP error: paramiko's carry only the status text."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = path
        raise


# --------------------------------------------------------------------------- the target


class SFTPTarget(Target):
    type = "sftp"
    settings_model = SFTPSettings
    retained_objects_removable = True  # READ_ONLY is a chmod: the folder's owner can still remove

    def __init__(self, settings: SFTPSettings):
        super().__init__(settings)
        self.settings: SFTPSettings = settings
        self._pool = _SessionPool(self._open_session, MAX_CONNECTIONS, wait=max(settings.timeout, 60.0))
        self._pkey: Any = None
        self._pkey_lock = threading.Lock()
        self._checksum_unavailable = False  # set once the server shows it cannot run sha256sum

    # -- naming ---------------------------------------------------------------------------

    def describe(self) -> str:
        path = self.settings.path
        return self._uri(path if path.startswith("/") else f"/~/{path}".rstrip("/"))

    def _uri(self, absolute_path: str) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"sftp://{quote(self.settings.username, safe='')}@{host}:{self.settings.port}{quote(absolute_path)}"

    def _known_hosts_name(self) -> str:
        host, port = self.settings.host, self.settings.port
        return host if port == 22 else f"[{host}]:{port}"

    # -- connecting -----------------------------------------------------------------------

    def _open_session(self) -> _Session:
        paramiko = require_sdk("paramiko", "paramiko", target=self.name)
        credentials = self._credentials(paramiko)  # a bad key fails here, before any network
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())  # never trust on first use
        try:
            self._trust(paramiko, client.get_host_keys())
            self._connect(paramiko, client, credentials)
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.settings.timeout)
            return _Session(client, sftp, home=sftp.normalize("."))
        except BaseException:
            client.close()
            raise

    def _connect(self, paramiko: Any, client: Any, credentials: dict) -> None:
        s = self.settings
        try:
            client.connect(
                s.host, port=s.port, username=s.username, timeout=s.timeout, banner_timeout=s.timeout,
                auth_timeout=s.timeout, channel_timeout=s.timeout, allow_agent=False,
                look_for_keys=False, **credentials,
            )
        except paramiko.BadHostKeyException as exc:
            raise self._host_key_mismatch(exc.key, exc.expected_key) from None
        except paramiko.AuthenticationException:
            raise  # the host key was trusted (it is checked first): the login was refused
        except paramiko.SSHException:
            offered = _offered_host_key(client)
            if offered is not None and not client.get_host_keys().check(self._known_hosts_name(), offered):
                raise self._host_key_unknown(offered) from None
            raise

    def _trust(self, paramiko: Any, host_keys: Any) -> None:
        if self.settings.known_hosts is not None:
            try:
                host_keys.load(self.settings.known_hosts)
            except OSError as exc:  # not NotFound: that would mean "no such object"
                raise PermanentStorageError(f"known_hosts file {self.settings.known_hosts} cannot be "
                                            f"read: {exc.strerror}") from None
            return
        kind, blob = self.settings.host_key.split()
        key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
        host_keys.add(self._known_hosts_name(), kind, key)

    def _credentials(self, paramiko: Any) -> dict:
        if self.settings.auth_method == "PASSWORD":
            return {"password": self.settings.password.get_secret_value()}
        with self._pkey_lock:
            if self._pkey is None:
                passphrase = self.settings.password.get_secret_value() if self.settings.password else None
                with self._errors("loading private_key"):
                    self._pkey = load_private_key(paramiko, self.settings.key_text(), passphrase)
            return {"pkey": self._pkey}

    def _host_key_unknown(self, offered: Any) -> HostKeyRefused:
        where = (f"is not in known_hosts file {self.settings.known_hosts}" if self.settings.known_hosts
                 else "does not match host_key")
        return HostKeyRefused(
            f"the SSH host key of {self.settings.host}:{self.settings.port} {where}; the server offers "
            f"{offered.get_name()} {offered.fingerprint}. Check that fingerprint with the server's "
            f"administrator, then {self._pinning_advice(offered)}",
            target=self.name,
        )

    def _host_key_mismatch(self, offered: Any, expected: Any) -> HostKeyRefused:
        return HostKeyRefused(
            f"the SSH host key of {self.settings.host}:{self.settings.port} CHANGED: expected "
            f"{expected.get_name()} {expected.fingerprint}, the server offers {offered.get_name()} "
            f"{offered.fingerprint}. The connection may be intercepted; if the server's key was "
            f"replaced on purpose, confirm the new fingerprint with its administrator, then "
            f"{self._pinning_advice(offered)}",
            target=self.name,
        )

    def _pinning_advice(self, offered: Any) -> str:
        line = f"{offered.get_name()} {offered.get_base64()}"
        known_hosts = self.settings.known_hosts or "~/.ssh/known_hosts"
        return (f'pin it with host_key = "{line}" in this target\'s settings, or add it to a '
                f"known_hosts file with: ssh-keyscan -p {self.settings.port} {self.settings.host} "
                f">> {known_hosts} (and set known_hosts)")

    # -- running an operation on a connection ----------------------------------------------

    def _call(self, operation: Callable[[_Session], T]) -> T:
        """Run `operation` on a pooled connection; if a reused connection turns out to have
        dropped, reconnect once and run it again (each operation is safe to repeat)."""
        with self._pool.lease() as lease:
            try:
                return operation(lease.session)
            except Exception as exc:
                if not _dropped(lease, exc):
                    raise
                lease.broken = True
                log.info("target '%s': SFTP connection dropped (%s); reconnecting once", self.name,
                         type(exc).__name__)
        with self._pool.lease(fresh=True) as lease:
            return operation(lease.session)

    # -- hooks ------------------------------------------------------------------------------

    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        # Two steps, each retried on its own after a dropped connection: a drop while the
        # server hashes the stored file must not send the whole file again.
        self._call(lambda session: self._transfer_on(session, file, full_key))
        return self._call(lambda session: self._stat_on(session, full_key))

    def _transfer_on(self, session: _Session, file: LocalFile, full_key: str) -> None:
        final = session.absolute(full_key)
        folder, name = posixpath.split(final)
        _makedirs(session.sftp, folder)
        temp = posixpath.join(folder, f".{name}{PARTIAL_MARKER}{uuid.uuid4().hex}")
        renamed = False
        try:
            self._send(session.sftp, file, temp)
            if self.settings.retention_mode == "READ_ONLY":
                with _at(temp):  # before the rename: the final name is never writable
                    session.sftp.chmod(temp, 0o444)
            renamed = self._publish(session, temp, final, file)
        finally:
            if not renamed:
                self._remove_temporary(session, temp)

    def _send(self, sftp: Any, file: LocalFile, temp: str) -> None:
        with _at(temp):
            with file.open() as source, sftp.open(temp, "wbx") as remote:
                # Pipelined: writes go out without waiting for each reply, so throughput is not
                # bound by round trips; replies (and errors such as a full disk) arrive by close.
                remote.set_pipelined(True)
                while chunk := _read_source(source, file):
                    remote.write(chunk)
            stored = sftp.stat(temp).st_size
        if stored != file.size:
            raise RetryableStorageError(
                f"the server holds {stored} bytes of {file.size} after the transfer; upload abandoned"
            )

    def _publish(self, session: _Session, temp: str, final: str, file: LocalFile) -> bool:
        """Rename `temp` to `final`, never over another file: True once renamed, False when
        the very same file is already there (our own rename whose reply a dropped connection
        lost, or an identical upload by another worker)."""
        # SFTP's RENAME refuses an existing name (draft-ietf-secsh-filexfer-02, 6.5; OpenSSH
        # uses link(2), atomically). posix-rename@openssh.com would overwrite, so it is not used.
        # The look first catches a server that ignores the rule, and gives a clear message.
        if _exists(session.sftp, final):
            return self._same_file_or_conflict(session, final, file)
        try:
            with _at(final):
                session.sftp.rename(temp, final)
        except OSError:
            if _exists(session.sftp, final):
                return self._same_file_or_conflict(session, final, file)
            raise
        return True

    def _same_file_or_conflict(self, session: _Session, final: str, file: LocalFile) -> bool:
        size = session.sftp.stat(final).st_size
        if size == file.size and self._remote_sha256(session, final, size) == file.checksums.sha256:
            return False
        raise ObjectConflict(f"{self._uri(final)} appeared while uploading; not overwritten")

    def _remove_temporary(self, session: _Session, temp: str) -> None:
        try:
            session.sftp.remove(temp)
        except FileNotFoundError:
            return  # never created, or already renamed: nothing to clean
        except Exception as exc:  # noqa: BLE001 - the upload's own error is the one to raise
            # Typically the connection is gone; the leftover is removed by the next sweep.
            log.warning("target '%s': could not remove temporary %s (%s); sweep_partials will",
                        self.name, self._uri(temp), type(exc).__name__)

    def _stat(self, full_key: str) -> StoredObject:
        return self._call(lambda session: self._stat_on(session, full_key))

    def _stat_on(self, session: _Session, full_key: str) -> StoredObject:
        path = session.absolute(full_key)
        try:
            with _at(path):
                attrs = session.sftp.stat(path)
        except FileNotFoundError:
            raise NotFound(f"{self._uri(path)} not found", target=self.name) from None
        if not stat_module.S_ISREG(attrs.st_mode):
            raise PermanentStorageError(f"{self._uri(path)} is not a regular file", target=self.name)
        digest = self._remote_sha256(session, path, attrs.st_size)
        read_only = not attrs.st_mode & (stat_module.S_IWUSR | stat_module.S_IWGRP | stat_module.S_IWOTH)
        return StoredObject(
            key=full_key,
            uri=self._uri(path),
            size=attrs.st_size,
            sha256=digest,  # the server's own hash of the stored bytes: SFTP keeps no metadata
            native={"sha256": digest} if digest else {},
            retention=Retention(mode="READ_ONLY") if read_only else None,
        )

    def _remote_sha256(self, session: _Session, path: str, size: int) -> str | None:
        if not self.settings.remote_checksum or self._checksum_unavailable:
            return None
        paramiko = sys.modules["paramiko"]
        try:
            channel = session.client.get_transport().open_session(timeout=self.settings.timeout)
        except paramiko.ChannelException as exc:  # exec sessions refused for this user
            self._give_up_checksums(f"the server refused a command session (code {exc.code})")
            return None
        with channel:
            status, output = _run_command(channel, f"sha256sum -- {shlex.quote(path)}",
                                          self.settings.timeout + size / SLOWEST_HASH_RATE)
        match = _SHA256SUM_LINE.match(output)
        if status == 0 and match:
            return match.group(1).decode()
        if self._sha256sum_runs(session):
            log.warning("target '%s': sha256sum of %s failed (status %s); this file is checked by "
                        "size only", self.name, self._uri(path), status)
        else:  # a shell-less account (nologin, ForceCommand internal-sftp, chroot), no sha256sum
            self._give_up_checksums(f"sha256sum exited with status {status}")
        return None

    def _sha256sum_runs(self, session: _Session) -> bool:
        """Does hashing empty input work? Tells one unreadable file from no usable exec at all."""
        with session.client.get_transport().open_session(timeout=self.settings.timeout) as channel:
            status, output = _run_command(channel, "sha256sum </dev/null", self.settings.timeout)
        return status == 0 and output.startswith(EMPTY_SHA256.encode())

    def _give_up_checksums(self, reason: str) -> None:
        if not self._checksum_unavailable:
            self._checksum_unavailable = True
            log.warning("target '%s': remote sha256sum unavailable (%s); stored files are checked "
                        "by size only. Set remote_checksum = false to skip trying.", self.name, reason)

    def _delete(self, full_key: str) -> None:
        def remove(session: _Session) -> None:
            path = session.absolute(full_key)
            with _at(path):
                session.sftp.remove(path)
            folder = posixpath.dirname(path)
            if posixpath.basename(folder) == PROBE_PREFIX:
                # The probe's own folder goes too, once empty; another probe's file keeps it.
                with contextlib.suppress(OSError):
                    session.sftp.rmdir(folder)
        self._call(remove)

    @contextlib.contextmanager
    def _open_read(self, full_key: str) -> Iterator[Any]:
        # The connection stays lent while the caller reads, so no other thread talks over it.
        for fresh in (False, True):
            with self._pool.lease(fresh=fresh) as lease:
                try:
                    remote = self._open_remote(lease.session, full_key)
                except Exception as exc:
                    if fresh or not _dropped(lease, exc):
                        raise
                    lease.broken = True  # a reused connection had dropped: open a new one once
                    continue
                with remote:
                    yield remote
                return

    def _open_remote(self, session: _Session, full_key: str) -> Any:
        path = session.absolute(full_key)
        try:
            with _at(path):
                remote = session.sftp.open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"{self._uri(path)} not found", target=self.name) from None
        try:
            # Many reads in flight instead of one round trip per 32 KiB.
            remote.prefetch(max_concurrent_requests=PREFETCH_REQUESTS)
        except BaseException:
            remote.close()
            raise
        return remote

    def sweep_partials(self) -> int:
        with self._errors("sweep of partial uploads"):
            return self._call(self._sweep_on)

    def _sweep_on(self, session: _Session) -> int:
        removed = 0
        pending = [session.absolute(self.settings.path or ".")]
        while pending:
            folder = pending.pop()
            try:
                with _at(folder):
                    entries = session.sftp.listdir_attr(folder)
            except FileNotFoundError:
                continue  # nothing was ever uploaded there
            for entry in entries:
                child = posixpath.join(folder, entry.filename)
                if stat_module.S_ISDIR(entry.st_mode):  # lstat: symlinked folders are not followed
                    pending.append(child)
                elif stat_module.S_ISREG(entry.st_mode) and _is_partial(entry.filename):
                    removed += _remove_if_present(session.sftp, child)
        return removed

    def close(self) -> None:
        self._pool.close()

    # -- errors -----------------------------------------------------------------------------

    def _classify(self, exc: Exception, action: str) -> StorageError:
        paramiko = sys.modules.get("paramiko")
        if paramiko is not None and isinstance(exc, paramiko.SSHException):
            return self._classify_ssh(paramiko, exc, action)
        if isinstance(exc, EOFError):
            return RetryableStorageError(f"{action}: the server closed the connection", target=self.name)
        if isinstance(exc, socket.gaierror):
            return RetryableStorageError(f"{action}: host {self.settings.host!r} could not be resolved "
                                         "(check host)", target=self.name)
        if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
            return RetryableStorageError(f"{action}: no answer from {self._where()} within "
                                         f"{self.settings.timeout:g}s", target=self.name)
        if isinstance(exc, OSError):
            return self._classify_os(exc, action)
        return RetryableStorageError(f"{action}: {type(exc).__name__}", target=self.name)

    def _classify_ssh(self, paramiko: Any, exc: Exception, action: str) -> StorageError:
        if isinstance(exc, paramiko.BadHostKeyException):
            return self._host_key_mismatch(exc.key, exc.expected_key)
        if isinstance(exc, paramiko.AuthenticationException):
            fix = ("password" if self.settings.auth_method == "PASSWORD"
                   else "private_key, and that its public key is in the server's authorized_keys")
            return PermanentStorageError(
                f"{action}: login refused for user {self.settings.username} at {self._where()}: check {fix}",
                target=self.name,
            )
        if isinstance(exc, paramiko.IncompatiblePeer):
            return PermanentStorageError(
                f"{action}: no SSH algorithms in common with {self._where()} ({self._scrub(exc)}); "
                "if host_key names a key type the server lacks, pin the key it has",
                target=self.name,
            )
        if isinstance(exc, paramiko.ChannelException) and exc.code == 1:  # administratively prohibited
            return PermanentStorageError(f"{action}: {self._where()} refuses an SFTP session for user "
                                         f"{self.settings.username}", target=self.name)
        # Banner time-outs, dropped connections, protocol hiccups: worth another try.
        return RetryableStorageError(f"{action}: SSH error with {self._where()}: {self._scrub(exc)}",
                                     target=self.name)

    def _classify_os(self, exc: OSError, action: str) -> StorageError:
        at = exc.filename or self._where()
        if exc.errno == errno.ENOENT:
            return NotFound(f"{action}: no such file or folder at {at}", target=self.name)
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PermanentStorageError(
                f"{action}: permission denied at {at}: let user {self.settings.username} read and "
                "write there, or change path", target=self.name,
            )
        # A full disk or quota stays retryable, as in local.py: someone frees space and the next
        # attempt succeeds without a settings change. SFTP v3 cannot even report ENOSPC as such:
        # OpenSSH sends it as a generic "Failure", handled just below.
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return RetryableStorageError(f"{action}: no space left at {at}", target=self.name)
        if exc.errno is None and exc.args == ("Failure",):
            # SSH_FX_FAILURE: OpenSSH's answer for ENOSPC, EDQUOT, EEXIST and most others.
            return RetryableStorageError(
                f"{action}: the server reported a failure at {at} (a full disk, a quota, or a name "
                "in the way?)", target=self.name,
            )
        reason = exc.strerror or self._scrub(exc)
        return RetryableStorageError(f"{action}: {reason} ({self._where()})", target=self.name)

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _scrub(self, value: object) -> str:
        """Text from an SSH library is protocol text, but make certain no secret rides along."""
        text = str(value)
        for secret in self.settings.secret_values():
            text = text.replace(secret, "***")
        return text[:300]


# --------------------------------------------------------------------------- helpers


def _dropped(lease: _Lease, exc: Exception) -> bool:
    """The reused connection died under the operation (as opposed to the operation failing)."""
    if not lease.reused or isinstance(exc, StorageError):
        return False
    return isinstance(exc, (EOFError, ConnectionError)) or not lease.session.alive()


def _offered_host_key(client: Any) -> Any:
    transport = client.get_transport()
    if transport is None or transport.host_key is None:
        return None
    return transport.host_key


def _read_source(source: Any, file: LocalFile) -> bytes:
    try:
        return source.read(SOURCE_CHUNK)
    except OSError as exc:
        raise RetryableStorageError(
            f"reading the local file {file.path} failed ({exc.strerror or exc}); upload abandoned"
        ) from exc


def _run_command(channel: Any, command: str, timeout: float) -> tuple[int, bytes]:
    """Run `command`; return its exit status and standard output."""
    channel.settimeout(timeout)
    channel.exec_command(command)
    # EOF on stdin: an account forced into internal-sftp would otherwise wait for requests.
    channel.shutdown_write()
    output = bytearray()
    while chunk := channel.recv(65536):
        output += chunk
    deadline = time.monotonic() + timeout
    while not channel.exit_status_ready():
        if time.monotonic() > deadline:
            raise TimeoutError("no exit status from the remote command")
        time.sleep(0.01)
    return channel.recv_exit_status(), bytes(output)


def _makedirs(sftp: Any, folder: str) -> None:
    """mkdir -p; another worker creating the same folder meanwhile is fine."""
    missing = []
    current = folder
    while current not in ("", "/") and not _is_folder(sftp, current):
        missing.append(current)
        current = posixpath.dirname(current)
    for path in reversed(missing):
        try:
            with _at(path):
                sftp.mkdir(path)
        except OSError:
            if not _is_folder(sftp, path):  # not a lost race: a real failure
                raise


def _is_folder(sftp: Any, path: str) -> bool:
    try:
        with _at(path):
            mode = sftp.stat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat_module.S_ISDIR(mode):
        raise PermanentStorageError(f"{path} exists on the server but is not a folder")
    return True


def _exists(sftp: Any, path: str) -> bool:
    try:
        with _at(path):
            sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _is_partial(name: str) -> bool:
    return name.startswith(".") and PARTIAL_MARKER in name


def _remove_if_present(sftp: Any, path: str) -> int:
    try:
        with _at(path):
            sftp.remove(path)
    except FileNotFoundError:
        return 0  # removed meanwhile by another sweep
    return 1
