"""Ed25519 signatures of the manifests: a detached signature document stored beside each
manifest at each target (`<manifest key>.sig`), made with `[signing] key` and checked by
`verify` with that key's public half and the older public keys `[signing] public_keys` lists
(key rotation: what an old key signed stays verifiable).

A signature proves that whoever holds the private key wrote exactly these manifest bytes; it
does not prove when (the trusted timestamps of the audit log do), and a stolen key can sign
anything: keep the private key off the machines an attacker could rewrite the archive from."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.errors import ConfigError, os_reason

FORMAT = "rtk-archive-signature/1"
SUFFIX = ".sig"


class SignatureProblem(Exception):
    """A signature that is missing, malformed, made by an unknown key, or does not match."""


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name of a key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signature_key(manifest_key: str) -> str:
    return manifest_key + SUFFIX


def generate_keys(out: Path) -> tuple[Path, Path, str]:
    """A new Ed25519 key pair: the private key at `out` (PEM, owner-only, never overwritten)
    and its public key at `out.pub`. Returns both paths and the key id."""
    private = Ed25519PrivateKey.generate()
    public_path = out.with_name(out.name + ".pub")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    for path in (out, public_path):
        if path.exists():
            raise ConfigError(f"{path}: already exists; a key is never overwritten (choose another --out)")
    try:
        fd = os.open(out, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        public_path.write_bytes(public_pem)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the key: {os_reason(exc)}") from None
    return out, public_path, key_id(private.public_key())


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"[signing] {what} {path}: cannot read it: {os_reason(exc)}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, "key"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[signing] key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"[signing] key {path}: not an Ed25519 key (`rtk-archive keys generate` makes one)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read(path, "public key"))
    except ValueError as exc:
        raise ConfigError(f"[signing] public key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"[signing] public key {path}: not an Ed25519 key")
    return key


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey
    key_id: str

    def sign(self, data: bytes) -> bytes:
        """The signature document for `data` (the manifest's exact bytes)."""
        document = {"format": FORMAT, "algorithm": "ed25519", "key_id": self.key_id,
                    "signed_sha256": hashlib.sha256(data).hexdigest(),
                    "signature": base64.b64encode(self.private.sign(data)).decode("ascii")}
        return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


class Keyring:
    """The public keys signatures are checked with: the signing key's own, and older ones."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], signer: Signer | None):
        self.keys = keys
        self.signer = signer

    @classmethod
    def from_config(cls, signing) -> Keyring:
        signer = None
        keys: dict[str, Ed25519PublicKey] = {}
        if signing.key is not None:
            private = load_private_key(signing.key)
            signer = Signer(private, key_id(private.public_key()))
            keys[signer.key_id] = private.public_key()
        for path in signing.public_keys:
            public = load_public_key(path)
            keys[key_id(public)] = public
        return cls(keys, signer)

    @property
    def configured(self) -> bool:
        return bool(self.keys)

    def verify(self, data: bytes, document: bytes) -> str:
        """The id of the key that signed `data`, or SignatureProblem saying why not."""
        try:
            parsed = json.loads(document)
            kid, signature = parsed["key_id"], base64.b64decode(parsed["signature"], validate=True)
            if parsed.get("format") != FORMAT or parsed.get("algorithm") != "ed25519":
                raise ValueError("unknown format or algorithm")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise SignatureProblem(f"not a signature document ({exc})") from None
        public = self.keys.get(kid)
        if public is None:
            raise SignatureProblem(f"signed by key {kid}, which is not among the configured public keys "
                                   f"({', '.join(sorted(self.keys)) or 'none'})")
        try:
            public.verify(signature, data)
        except InvalidSignature:
            raise SignatureProblem(f"the signature (key {kid}) does not match the manifest's bytes: the manifest "
                                   "or its signature was altered or swapped") from None
        return kid
