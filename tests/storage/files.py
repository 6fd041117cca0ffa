"""What the storage tests share: a target built from a rig's settings, verified local files
(one that fails midway too), and reading a stored object back."""

from __future__ import annotations

import io
from pathlib import Path

from pipeline.archive.hashing import hash_file
from storage import LocalFile, NotFound, build_target, settings_model


def make_target(rig, prefix: str, *, name: str = "conformance", **overrides):
    """A target on the rig's server under `prefix`, with `overrides` on top of its settings."""
    raw = {**rig.target_settings(name, prefix), **overrides}
    return build_target(settings_model(raw["type"]).model_validate(raw))


def local_file(path: Path) -> LocalFile:
    """The file at `path`, hashed, as the pipeline hands it to a target."""
    hasher = hash_file(path)
    return LocalFile(path=path, size=hasher.size, checksums=hasher.checksums())


def write(tmp_path: Path, name: str, data: bytes) -> LocalFile:
    path = tmp_path / name
    path.write_bytes(data)
    return local_file(path)


def source(tmp_path: Path, data: bytes, name: str = "src.bin") -> LocalFile:
    """`data` as a verified local file (write, with the data first)."""
    return write(tmp_path, name, data)


def someone_writes_after_the_check(monkeypatch, rig, target, full_key: str, data: bytes) -> list[str]:
    """Set up the race create-only writes exist for: the target's first stat answers "not
    found", and right after it another writer creates `data` at `full_key` behind the
    adapter's back. Returns the keys that stat was asked for (to prove the race was set up)."""
    real_stat = target.stat
    checks: list[str] = []

    def stat_then_someone_writes(asked: str):
        if checks:
            return real_stat(asked)
        checks.append(asked)
        rig.plant(full_key, data)  # right after our check found nothing
        raise NotFound(f"{asked} not found (checked before the other writer)")

    monkeypatch.setattr(target, "stat", stat_then_someone_writes)
    return checks


def read_back(target, key: str) -> bytes:
    with target.open_read(key) as stream:
        return stream.read()


class _FailingReader(io.BufferedReader):
    """A source whose read breaks halfway, like a disk error or a truncated spool file. It is
    a stream, not a file: no descriptor to copy from behind its back."""

    def __init__(self, raw, fail_after: int):
        super().__init__(raw)
        self._left = fail_after

    def fileno(self):
        raise io.UnsupportedOperation("a stream without a file descriptor")

    def read(self, size=-1):
        if self._left <= 0:
            raise OSError("simulated read failure halfway through the source")
        chunk = super().read(size if size is not None and size >= 0 else self._left)
        chunk = chunk[: self._left]
        self._left -= len(chunk)
        return chunk

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class FailingFile(LocalFile):
    def open(self):
        return _FailingReader(io.FileIO(self.path, "rb"), self.size // 2)
