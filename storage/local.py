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
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import google_crc32c
from pydantic import Field, field_validator

from storage.capabilities import folder_capabilities
from storage.errors import NotFound, ObjectConflict, PermanentStorageError, RetryableStorageError, StorageError
from storage.settings import TargetSettings
from storage.stream import GrowingFile, SequentialReader, with_sha256
from storage.target import PROBE_PREFIX, Target, abandoned, check_key, is_partial, partial_name
from storage.values import SHA256_METADATA_KEY, LocalFile, ProbeResult, Retention, StoredObject

COPY_BUFFER = 8 << 20  # large: one read and one write per 8 MiB across file systems
GROWING_CHUNK = 1 << 20  # a file still downloading is written as it arrives, a MiB at a time
HASH_BUFFER = 2 << 20
LOW_SPACE = 1 << 30  # below this, the probe warns: one recording can be larger
# The file's SHA-256 is kept in an extended attribute where the file system allows it.
XATTR = f"user.{SHA256_METADATA_KEY}"


# A file has no checksum of its own: the CRC32C re-computed from the stored bytes. The final
# name is made by link(2), which refuses an existing name.
CAPABILITIES = folder_capabilities("crc32c", "files made read-only after the rename")


class LocalSettings(TargetSettings):
    capabilities = CAPABILITIES

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
        self._inside = os.path.join(str(self.root), "")  # the root with its separator: what a path inside starts with

    def full_key(self, key: str) -> str:
        return check_key(key, target=self.name)  # the folder is the root: keys are relative to it

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, full_key: str) -> Path:
        # A symbolic link inside the folder that points elsewhere must not carry a copy out of it
        # any more than a `..` in the key (check_key refuses those). The root is resolved once:
        # only the key's own components are looked at, up to the first that does not exist yet,
        # and only a link among them costs a full realpath (every component of the whole path
        # is an lstat, and each system call hands the interpreter's lock to another thread).
        path = os.path.join(self._inside, full_key)
        start = len(self._inside)
        while True:
            slash = path.find("/", start)
            try:
                mode = os.lstat(path if slash == -1 else path[:slash]).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break  # nothing below exists: nothing to follow
            if stat_module.S_ISLNK(mode):
                path = os.path.realpath(path)
                if not path.startswith(self._inside):
                    raise PermanentStorageError(f"key {full_key!r} resolves outside {self.root}", target=self.name)
                break
            if slash == -1:
                break
            start = slash + 1
        return Path(path)

    def probe(self) -> list[ProbeResult]:
        """The common probe, plus the free space where files will land. Folders the probe had
        to create (the target folder on a first check, the probe folder) are removed again,
        so a `check` leaves the disk as it found it."""
        probe_folder = self.root / PROBE_PREFIX
        created = [p for p in (probe_folder, self.root, *self.root.parents) if not p.exists()]
        try:
            results = super().probe()
        finally:
            _remove_empty(created)
        if all(result.ok for result in results):
            results.append(self._probe_space())
        return results

    def _probe_space(self) -> ProbeResult:
        free = shutil.disk_usage(nearest_existing(self.root)).free
        text = f"{free / 1e9:.1f} GB free under {self.root}"
        return ProbeResult("space", "warn" if free < LOW_SPACE else "ok",
                           text + ("; recordings are often larger" if free < LOW_SPACE else ""))

    def _upload(self, file: LocalFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        def write(temp: Path) -> str:
            if not (file.disposable and _take_by_link(file.path, temp)):
                with file.open() as src, open(temp, "xb") as fh:
                    _copy(src, fh, file.size)
            return metadata[SHA256_METADATA_KEY]
        return self._store(full_key, write)

    def _upload_growing(self, source: GrowingFile, full_key: str, metadata: Mapping[str, str]) -> StoredObject:
        """A sequential write of the temporary while the file downloads. Where the spool is on
        this file system, taking the finished spool file by hard link costs nothing, which no
        overlap beats: then the download is waited for and `_upload` does that."""
        spool = getattr(source, "spool", None)  # the pipeline's own spool file (storage.stream)
        if spool is not None and _same_file_system(Path(spool), self._path(full_key).parent):
            file = source.result()
            return self._upload(file, full_key, with_sha256(file, dict(metadata)))

        def write(temp: Path) -> str:
            # SequentialReader checks the bytes read against the verified file before the last.
            stream = SequentialReader(source)
            with open(temp, "xb") as fh:
                while chunk := stream.read(GROWING_CHUNK):
                    fh.write(chunk)
            return source.result().checksums.sha256  # (the end was read: the download is verified)
        return self._store(full_key, write)

    def _store(self, full_key: str, write: Callable[[Path], str]) -> StoredObject:
        """Atomic, never over an existing file: `write` fills the temporary (and gives the
        file's SHA-256), which is fsynced, then hard-linked to the final name, which refuses an
        existing name. The temporary is removed whatever happens."""
        final = self._path(full_key)
        created = _make_folders(final.parent)
        temp = final.with_name(partial_name(final.name))
        try:
            sha256 = write(temp)
            fd = os.open(temp, os.O_RDWR)  # (not open(): no buffer, no tty check, no seek)
            try:
                with contextlib.suppress(OSError):  # no user xattrs here: sha256 is re-hashed
                    os.setxattr(fd, XATTR, sha256.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
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
        for folder in created:  # a new folder's own entry must be durable too, or the file goes with it
            _fsync_dir(folder.parent)
        return self._stat_at(final, full_key)  # read back and re-hashed: what the pipeline verifies

    def _stat(self, full_key: str) -> StoredObject:
        return self._stat_at(self._path(full_key), full_key)

    def _stat_at(self, path: Path, full_key: str) -> StoredObject:
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

    def _delete(self, full_key: str) -> None:
        path = self._path(full_key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def sweep_partials(self, older_than: float | None = None) -> int:
        removed = 0
        if not self.root.is_dir():
            return 0
        probe_folder = os.path.join(self.root, PROBE_PREFIX)
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if is_partial(name) or dirpath == probe_folder:  # the latter: a probe killed before its removal
                    path = os.path.join(dirpath, name)
                    with contextlib.suppress(FileNotFoundError):
                        if not abandoned(name, os.stat(path).st_mtime, older_than):
                            continue  # still being written, by another process
                        os.unlink(path)
                        removed += 1
            if dirpath == probe_folder:  # only when it exists: no system call per run for nothing
                _remove_empty([Path(dirpath)])
        return removed

    def _classify(self, exc: Exception, action: str) -> StorageError:
        if isinstance(exc, PermissionError):
            return PermanentStorageError(
                f"{action}: permission denied under {self.root}; let this user write there",
                target=self.name,
            )
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return RetryableStorageError(f"{action}: no space left under {self.root}", target=self.name)
        if isinstance(exc, OSError) and exc.errno == errno.ENOTDIR:
            blocker = _file_in_the_way(Path(exc.filename) if exc.filename else self.root)
            return PermanentStorageError(
                f"{action}: {blocker} is a file, not a folder; fix `path` or move the file away",
                target=self.name)
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            return PermanentStorageError(f"{action}: {self.root} is on a read-only file system",
                                         target=self.name)
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
            return PermanentStorageError(f"{action}: {os.strerror(exc.errno)}", target=self.name)
        if isinstance(exc, OSError):
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            return RetryableStorageError(f"{action}: {reason}", target=self.name)
        return RetryableStorageError(f"{action}: {type(exc).__name__}", target=self.name)


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders, deepest first, while they are empty (another writer's file keeps
    a folder and every folder above it)."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue  # never created
        except OSError:
            return  # not empty (or not ours to remove): leave it and its parents


def nearest_existing(path: Path) -> Path:
    """`path` or its closest existing ancestor (the folder is created on the first write)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _file_in_the_way(path: Path) -> Path:
    """The first component of `path` that exists and is not a folder (ENOTDIR names only the
    whole path)."""
    for candidate in reversed((path, *path.parents)):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return path


def _retention(info: os.stat_result) -> Retention | None:
    writable = info.st_mode & (stat_module.S_IWUSR | stat_module.S_IWGRP | stat_module.S_IWOTH)
    return None if writable else Retention(mode="READ_ONLY")


# One file system-wide decision at a time: which target takes a spool file by link.
_LINK_LOCK = threading.Lock()
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _same_file_system(spool: Path, folder: Path) -> bool:
    try:
        return os.stat(spool).st_dev == os.stat(nearest_existing(folder)).st_dev
    except FileNotFoundError:  # (a spool not there yet: it is created beside its folder)
        return os.stat(nearest_existing(spool)).st_dev == os.stat(nearest_existing(folder)).st_dev


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
    """Copy `size` bytes in the kernel (copy_file_range: no bytes through Python, a reflink on
    file systems that can) when both ends are real files on one file system; through a large
    buffer otherwise. A target on another file system than the spool (a NAS mount, a second
    disk) is the common case: the kernel refuses with EXDEV there, and the buffer takes over
    from where the kernel stopped."""
    try:
        src_fd, dst_fd = src.fileno(), dst.fileno()
    except (AttributeError, OSError, ValueError):
        _copy_through_buffer(src, dst, size, 0)
        return
    copied = 0
    while copied < size:
        try:
            n = os.copy_file_range(src_fd, dst_fd, size - copied)
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
            _copy_through_buffer(src, dst, size, copied)
            return
        if n == 0:
            raise OSError(errno.EIO, f"source ended after {copied} of {size} bytes")
        copied += n


# copy_file_range's answers for "not between these two files": another file system (EXDEV),
# no such call (ENOSYS, seccomp filters), a file system without it (EOPNOTSUPP; EINVAL from
# some FUSE and network file systems), a descriptor it cannot use (EBADF).
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL,
                             errno.EBADF})


def _copy_through_buffer(src, dst, size: int, start: int) -> None:
    """Plain read/write of bytes [start, size) in COPY_BUFFER pieces; a source shorter than
    `size` is an error, never a short copy. Both streams are positioned at `start` first (the
    kernel moved their offsets as far as it got)."""
    if start:
        src.seek(start)
        dst.seek(start)
    left = size - start
    while left > 0:
        chunk = src.read(min(COPY_BUFFER, left))
        if not chunk:
            raise OSError(errno.EIO, f"source ended after {size - left} of {size} bytes")
        dst.write(chunk)
        left -= len(chunk)


def _crc32c_of(path: Path) -> str:
    checksum = google_crc32c.Checksum()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(HASH_BUFFER):
            checksum.update(chunk)
    return checksum.digest().hex()


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and any missing parents; returns those created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)  # (another writer may create it meanwhile)
    return missing


def _fsync_dir(path: Path) -> None:
    """Make the new directory entry durable: a rename/link is only safe after this."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
