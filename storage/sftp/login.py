"""Logging in to the SSH server: the private key loaded from its text (a passphrase where it has
one), and one verified SSH connection with its SFTP session."""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

from storage.errors import PermanentStorageError
from storage.sftp import hostkeys
from storage.sftp.pool import Session
from storage.sftp.settings import SFTPSettings


def open_session(paramiko: Any, settings: SFTPSettings, credentials: dict) -> Session:
    """Connect, verify the host key (before any credential is sent), log in, open SFTP."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())  # never trust on first use
    try:
        hostkeys.trust(paramiko, client.get_host_keys(), settings)
        _connect(paramiko, client, settings, credentials)
        sftp = client.open_sftp()
        sftp.get_channel().settimeout(settings.timeout)
        return Session(client, sftp, home=sftp.normalize("."))
    except BaseException:
        client.close()
        raise


def _connect(paramiko: Any, client: Any, s: SFTPSettings, credentials: dict) -> None:
    try:
        client.connect(
            s.host, port=s.port, username=s.username, timeout=s.timeout, banner_timeout=s.timeout,
            auth_timeout=s.timeout, channel_timeout=s.timeout, allow_agent=False,
            look_for_keys=False, **credentials,
        )
    except paramiko.BadHostKeyException as exc:
        raise hostkeys.changed(s, exc.key, exc.expected_key) from None
    except paramiko.AuthenticationException:
        raise  # the host key was trusted (it is checked first): the login was refused
    except paramiko.SSHException:
        offered = hostkeys.offered_key(client)
        if offered is not None and not client.get_host_keys().check(hostkeys.known_hosts_name(s), offered):
            raise hostkeys.unknown(s, offered) from None
        raise


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
