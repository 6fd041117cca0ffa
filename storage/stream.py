"""A file offered to a target while it is still being downloaded (issue 11, overlapped upload).

The pipeline hands a target a `GrowingFile`: its bytes in file order as they reach the spool,
so a multipart upload, a block upload, a resumable GCS upload or a sequential write can run
while the download is still going, and one large recording takes about max(download, upload)
instead of their sum.

The rule that keeps this safe is in the source, not in each backend: the bytes that complete the
file (the read that would reach `size`) and the end of the stream are handed out only after the
pipeline verified the whole download (its size and every digest). A backend therefore cannot
commit (complete a multipart upload, commit a block list, finalise a resumable upload, rename a
temporary) an unverified file, whatever its SDK does once it has all the bytes. When the download
fails or the file changes under it, `read` raises `SourceFailed`: the backend's usual
abort-on-failure then leaves nothing visible (no object, no open multipart upload, no
temporary).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import google_crc32c

from storage.errors import PermanentStorageError
from storage.values import SHA256_METADATA_KEY, LocalFile


class SourceFailed(Exception):
    """The file being downloaded failed, or changed, before it was complete and verified: the
    upload reading it must abort and leave nothing visible. Not a StorageError: the target did
    nothing wrong, and the download's failure is recorded where it happened."""


@runtime_checkable
class GrowingFile(Protocol):
    """A file still arriving in the spool, readable in order from byte 0 (one reader each:
    `reader()` gives every upload attempt its own stream from the start). Optional, not part
    of the check: `spool`, the path of the pipeline's own spool file, discarded after the
    uploads (a local target on its file system takes the finished file by hard link instead of
    overlapping, as `put` does with a LocalFile marked disposable)."""

    size: int  # the size the file must have (checked against it when the download ends)

    def read(self, n: int = -1) -> bytes:
        """The `n` next bytes (all the rest for -1; fewer only at the end, as a buffered file),
        blocking until they are in the spool. The bytes reaching `size`, and b"" after them,
        come only once the download is verified. Raises SourceFailed when the download failed
        or the file changed."""
        ...

    def readinto(self, buffer) -> int:
        """The next bytes into a buffer, as many as are in the spool now (blocking until at
        least one is): how many were filled, 0 only at the verified end."""
        ...

    def tell(self) -> int:
        """Bytes handed out by this reader so far."""
        ...

    def result(self) -> LocalFile:
        """Block until the download has ended: the complete, verified file (size and digests
        known), or SourceFailed."""
        ...

    def reader(self) -> GrowingFile:
        """A fresh reader of the same file from byte 0 (for a retried upload)."""
        ...


class SequentialReader:
    """A GrowingFile as the plain, forward-only binary stream SDK upload helpers read (s3transfer,
    google-resumable-media, a block stager): `read(n)` returns exactly `n` bytes until the end,
    waiting for them as long as the download runs, so a short read never cuts a part, block or
    chunk short (S3 refuses parts under 5 MiB, GCS chunks must be multiples of 256 KiB). Not
    seekable: an SDK that would rewind finds out at once instead of re-sending the wrong bytes.

    Before it hands out the file's last bytes (and so before any SDK can complete, commit or
    finalise), it checks that what it read is the verified download: its size and CRC32C (as
    Azure's CheckedSource does for a complete file), so an upload never commits bytes that
    changed between the download's hashing and the upload's reading."""

    def __init__(self, source: GrowingFile):
        self._source = source
        self._crc32c = google_crc32c.Checksum()
        self._seen = 0
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        wanted = self._source.size - self._seen + 1 if n is None or n < 0 else n
        pieces = []
        while wanted > 0:
            piece = self._source.read(wanted)
            if not piece:
                break  # the verified end
            pieces.append(piece)
            wanted -= len(piece)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._crc32c.update(data)
        self._seen += len(data)
        if self._seen >= self._source.size or (not data and n != 0):
            self._check()
        return data

    def _check(self) -> None:
        if not self._checked:
            self._checked = True
            check_bytes_read(self._source.result(), self._seen, self._crc32c)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._seen

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def check_bytes_read(file: LocalFile, seen: int, crc32c: google_crc32c.Checksum) -> None:
    """The bytes an upload read (`seen` of them, with this running CRC32C) are the verified
    file's; raises PermanentStorageError (before anything is committed) otherwise."""
    if seen != file.size:
        raise _changed(file, f"only {seen} of {file.size} bytes could be read" if seen < file.size
                       else f"it is now longer than {file.size} bytes")
    if crc32c.digest().hex() != file.checksums.crc32c:
        raise _changed(file, "its CRC32C differs from the one computed when it was verified")


def _changed(file: LocalFile, why: str) -> PermanentStorageError:
    return PermanentStorageError(f"source {file.path} changed after it was verified: {why}; "
                                 "nothing was stored (corrupted source)")


def with_sha256(file: LocalFile, metadata: dict[str, str]) -> dict[str, str]:
    """The object's metadata once the download is verified: the file's SHA-256 added (as `put`
    adds it), for a backend that can set metadata at the commit or afterwards."""
    return {SHA256_METADATA_KEY: file.checksums.sha256, **metadata}
