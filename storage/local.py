"""`local`: a folder on this machine (a NAS mount, a backup disk). Writes are atomic: a
temporary name in the same folder, fsync, then a hard link to the final name, which fails if
the name is taken, so a file is never overwritten and never seen half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat as stat_module
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import google_crc32c
from pydantic import Field, field_validator

from storage.base import (
    check_key,
    SHA256_METADATA_KEY,
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
)

PARTIAL_MARKER = ".rtk-partial-"
COPY_BUFFER = 1 << 20
# The file's SHA-256 is kept in an extended attribute where the file system allows it.
XATTR = f"user.{SHA256_METADATA_KEY}"


class LocalSettings(TargetSettings):
    retention_modes = ("READ_ONLY",)
    retention_note = " (files made read-only after the rename; weaker: the owner can undo it)"
    retention_timed = False

    type: str = "local"
    path: str = Field(min_length=1)  # the folder

    @field_validator("path")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:  # a folder, not a bucket prefix: keep it
        return os.path.expanduser(value.strip())


class LocalTarget(Target):
    type = "local"
    settings_model = LocalSettings

    def __init__(self, settings: LocalSettings):
        super().__init__(settings)
        self.root = Path(settings.path).resolve()

    def full_key(self, key: str) -> str:
        return check_key(key)  # the folder is the root: keys are relative to it

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, full_key: str) -> Path:
        path = (self.root / full_key).resolve()
        if self.root != path and self.root not in path.parents:
            raise PermanentStorageError(f"key {full_key!r} resolves outside {self.root}")
        return path

    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        final = self._path(full_key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}{PARTIAL_MARKER}{uuid.uuid4().hex}")
        try:
            if not (file.disposable and _take_by_link(file.path, temp)):
                with file.open() as src, open(temp, "xb") as fh:
                    _copy(src, fh, file.size)
            with open(temp, "rb+") as fh:
                with contextlib.suppress(OSError):  # no user xattrs here: sha256 is re-hashed
                    os.setxattr(fh.fileno(), XATTR, metadata[SHA256_METADATA_KEY].encode())
                os.fsync(fh.fileno())
            try:
                os.link(temp, final)  # atomic, and refuses an existing name
            except FileExistsError:
                raise ObjectConflict(f"{final} appeared while uploading; not overwritten") from None
            if self.settings.retention_mode == "READ_ONLY":
                os.chmod(final, stat_module.S_IRUSR | stat_module.S_IRGRP)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        _fsync_dir(final.parent)
        return self._stat(full_key)  # read back and re-hashed: what the pipeline verifies

    def _stat(self, full_key: str) -> StoredObject:
        path = self._path(full_key)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise NotFound(f"{full_key} not found in {self.root}", target=self.name) from None
        if not stat_module.S_ISREG(info.st_mode):
            raise PermanentStorageError(f"{path} is not a regular file", target=self.name)
        try:
            stored_sha = os.getxattr(path, XATTR).decode()
        except OSError:
            stored_sha = None
        return StoredObject(
            key=full_key,
            uri="file://" + quote(str(path)),
            size=info.st_size,
            sha256=stored_sha,
            # A file has no checksum of its own: the CRC32C re-computed from its bytes is the
            # independent evidence (the check GCS makes; ~20x faster than SHA-256, so verifying
            # a copy costs little). `verify --deep` re-hashes SHA-256.
            native={"crc32c": _crc32c_of(path)},
            retention=_retention(info),
        )

    @contextlib.contextmanager
    def _open_read(self, full_key: str):
        try:
            with open(self._path(full_key), "rb") as fh:
                yield fh
        except FileNotFoundError:
            raise NotFound(f"{full_key} not found in {self.root}", target=self.name) from None

    def sweep_partials(self) -> int:
        removed = 0
        if not self.root.is_dir():
            return 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if PARTIAL_MARKER in name and name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
        return removed

    def _classify(self, exc: Exception, action: str) -> StorageError:
        if isinstance(exc, PermissionError):
            return PermanentStorageError(
                f"{action}: permission denied under {self.root}; let this user write there",
                target=self.name,
            )
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return RetryableStorageError(f"{action}: no space left under {self.root}", target=self.name)
        if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.ENOTDIR, errno.ENAMETOOLONG):
            return PermanentStorageError(f"{action}: {os.strerror(exc.errno)}", target=self.name)
        if isinstance(exc, OSError):
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            return RetryableStorageError(f"{action}: {reason}", target=self.name)
        return RetryableStorageError(f"{action}: {type(exc).__name__}", target=self.name)


def _retention(info: os.stat_result) -> Retention | None:
    writable = info.st_mode & (stat_module.S_IWUSR | stat_module.S_IWGRP | stat_module.S_IWOTH)
    return None if writable else Retention(mode="READ_ONLY")


# One file system-wide decision at a time: which target takes a spool file by link.
_LINK_LOCK = threading.Lock()
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _take_by_link(source: Path, temp: Path) -> bool:
    """Hard-link the pipeline's spool file instead of copying it, when it lives on this file
    system and no other target took it already (so two local targets never share one inode:
    each holds its own copy). The verification that follows re-hashes the linked file."""
    with _LINK_LOCK:
        try:
            if os.stat(source).st_nlink != 1:
                return False
            os.link(source, temp)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                return False  # another file system, or no hard links there: copy instead
            raise
    os.chmod(temp, 0o666 & ~_UMASK)  # the spool is private; an archived file gets the usual mode
    return True


def _copy(src, dst, size: int) -> None:
    """Copy in the kernel (copy_file_range: no bytes through Python, a reflink on file
    systems that can) when the source is a real file; through a buffer otherwise."""
    try:
        src_fd, dst_fd = src.fileno(), dst.fileno()
    except (AttributeError, OSError, ValueError):
        shutil.copyfileobj(src, dst, COPY_BUFFER)
        return
    copied = 0
    while copied < size:
        n = os.copy_file_range(src_fd, dst_fd, size - copied)
        if n == 0:
            raise OSError(errno.EIO, f"source ended after {copied} of {size} bytes")
        copied += n


def _crc32c_of(path: Path) -> str:
    checksum = google_crc32c.Checksum()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(COPY_BUFFER * 2):
            checksum.update(chunk)
    return checksum.digest().hex()


def _fsync_dir(path: Path) -> None:
    """Make the new directory entry durable: a rename/link is only safe after this."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
