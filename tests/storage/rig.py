"""The contract between the conformance suite and each backend's test rig.

A rig knows how to reach one backend's real test server and how to look at it behind the
adapter's back (list, tamper, delete), so tests can check what the adapter really left there.
Each backend's rig lives in tests/storage/rig_<type>.py as a fixture named `rig_<type>`."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Rig(ABC):
    type: str

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
