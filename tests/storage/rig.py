"""The contract between the conformance suite and each backend's test rig.

A rig knows how to reach one backend's real test server and how to look at it behind the
adapter's back (list, tamper, delete), so tests can check what the adapter really left there.
Each backend's rigs live in tests/storage/rig_<backend>.py, as fixtures named `rig_<type>`; the
class attributes below tell the suite, before any server starts, what that server enforces."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class Rig(ABC):
    type: ClassVar[str]
    # The fixture that starts this rig's server; None: `rig_<type>`.
    fixture: ClassVar[str | None] = None
    # The backend has credentials a server can refuse (see bad_credentials).
    has_credentials: ClassVar[bool] = True
    # The write-time create-only condition is enforced by this server for this adapter, so a
    # race between put's look and its write can be tested here.
    enforces_create_only: ClassVar[bool] = True
    # ...for multipart / block uploads too (a race case with large files).
    create_only_in_parts: ClassVar[bool] = False
    # The server refuses an upload whose declared digests do not match the bytes (instead of
    # storing it and reporting digests of the real bytes).
    refuses_lying_digests: ClassVar[bool] = False

    @abstractmethod
    def target_settings(self, name: str, prefix: str) -> dict:
        """A [[targets]] table (plain dict, as a user writes it in TOML) for this server,
        with `prefix` as its `path`."""

    def small_parts(self) -> dict:
        """Overrides that force multipart / resumable / chunked transfers on a ~12 MiB file."""
        return {}

    def bad_credentials(self, name: str, prefix: str) -> tuple[dict, list[str]] | None:
        """Settings whose credentials the server refuses, and the secret strings in them that
        must never appear in an error. None for a backend without credentials (local)."""
        return None

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every object visible at the server whose full key starts with `prefix`
        (temporaries included: that is the point)."""

    # raw_* take a key as StoredObject.key reports it.
    @abstractmethod
    def raw_read(self, full_key: str) -> bytes: ...

    @abstractmethod
    def raw_write(self, full_key: str, data: bytes) -> None:
        """Replace an object's bytes behind the adapter's back (keep its metadata if the
        backend allows it), to prove verification catches tampering."""

    @abstractmethod
    def raw_delete(self, full_key: str) -> None: ...

    @abstractmethod
    def plant(self, full_key: str, data: bytes) -> None:
        """Create an object behind the adapter's back, as another writer would (folders made
        as needed)."""

    @abstractmethod
    def everything(self) -> set[str]:
        """Every object (and, where they exist, folder) the server holds in the rig's whole
        area, not only under one prefix: what a test compares before and after to prove that
        nothing was written anywhere."""
