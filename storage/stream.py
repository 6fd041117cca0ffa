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

from storage.values import LocalFile


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
