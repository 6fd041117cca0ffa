"""The spool file offered to targets while it downloads (issue 11, overlapped upload): the
pipeline's side of storage.stream.GrowingFile.

`SpoolFeed` is told by the download how far the contiguous prefix of the file reached in the
spool (`grown`), that the file starts again from byte 0 (`restarted`), and how the download
ended (`finished` with the verified file, or `failed`). Each `SpoolReader` reads the spool
through its own descriptor with os.preadv into the caller's buffer (the page cache, never a
copy of the file in memory), blocking until the bytes it wants are there.

The safety rule of storage.stream lives here: before `finished`, a reader gets at most the
first `size - 1` bytes, so the read that completes the file, and the end after it, come only
once the pipeline verified the whole download (size and digests). A failed download, a stopping
run, or a restart from byte 0 under a reader that had already handed bytes out raise
SourceFailed: the upload aborts and leaves nothing visible."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from storage import LocalFile, SourceFailed

WAKE_SECONDS = 1.0  # a waiting reader looks at the run's stop event at least this often


class SpoolFeed:
    """What the download tells the readers (the writer's side, one per file)."""

    def __init__(self, path: Path, size: int, stop: threading.Event):
        self.path = path
        self.size = size
        self.stop = stop
        self._changed = threading.Condition()
        self._prefix = 0  # bytes from 0 that are in the spool, in file order
        self._generation = 0  # counts restarts from byte 0 (the spool is then a new file)
        self._result: LocalFile | None = None
        self._failure: str | None = None

    # ----------------------------------------------------------------- the download's side

    def grown(self, prefix: int) -> None:
        with self._changed:
            if prefix > self._prefix:
                self._prefix = prefix
                self._changed.notify_all()

    def restarted(self) -> None:
        """Called before the spool is replaced by an empty file: readers that handed bytes out
        fail, the others start again on the new file."""
        with self._changed:
            self._generation += 1
            self._prefix = 0
            self._changed.notify_all()

    def finished(self, local: LocalFile) -> None:
        """The download is complete and verified (and recorded): the tail may go out."""
        with self._changed:
            if self._failure is not None:
                return
            if local.size != self.size:  # (the download checks this itself: never hand out a wrong end)
                self._failure = f"the download ended at {local.size} bytes, not {self.size}"
            else:
                self._result = local
            self._changed.notify_all()

    def failed(self, reason: str) -> None:
        """The download ended without a verified file; a no-op once it finished."""
        with self._changed:
            if self._result is None and self._failure is None:
                self._failure = reason
                self._changed.notify_all()

    def reader(self) -> SpoolReader:
        return SpoolReader(self)

    # ----------------------------------------------------------------- the readers' side

    def _readable_end(self, position: int, generation: int | None) -> tuple[int, int]:
        """Block until a reader at `position` (of the file's `generation`) may read further, or
        the end is verified: the end it may read to now, and the current generation."""
        with self._changed:
            while True:
                if self._failure is not None:
                    raise SourceFailed(self._failure)
                if position and generation != self._generation:
                    raise SourceFailed("the file changed while it was downloaded and is downloaded again "
                                       "from byte 0")
                if self._result is not None:
                    return self.size, self._generation
                end = min(self._prefix, self.size - 1)  # the last byte only once verified
                if end > position:
                    return end, self._generation
                if self.stop.is_set():
                    raise SourceFailed("the run is stopping before the file was downloaded")
                self._changed.wait(WAKE_SECONDS)

    def _still(self, generation: int) -> bool:
        with self._changed:
            return generation == self._generation and self._failure is None

    def _verified(self) -> LocalFile:
        with self._changed:
            while True:
                if self._failure is not None:
                    raise SourceFailed(self._failure)
                if self._result is not None:
                    return self._result
                if self.stop.is_set():
                    raise SourceFailed("the run is stopping before the file was downloaded")
                self._changed.wait(WAKE_SECONDS)


class SpoolReader:
    """One reader of a SpoolFeed from byte 0 (storage.stream.GrowingFile). `read(n)` fills
    what was asked unless the file ends first; `readinto` gives what is there. `spool` names
    the pipeline's own spool file, discarded after the uploads (a local target on its file
    system takes it by hard link once finished instead of copying it)."""

    def __init__(self, feed: SpoolFeed):
        self._feed = feed
        self.size = feed.size
        self.spool = feed.path
        self._position = 0
        self._fd: int | None = None
        self._generation: int | None = None  # the file version `_fd` reads

    def reader(self) -> SpoolReader:
        return SpoolReader(self._feed)

    def result(self) -> LocalFile:
        return self._feed._verified()

    def tell(self) -> int:
        return self._position

    def read(self, n: int = -1) -> bytes:
        """The next `n` bytes (all the rest for -1), fewer only at the end: as a buffered file
        reads (SDKs cut multipart parts from such reads)."""
        want = self.size - self._position if n is None or n < 0 else min(n, self.size - self._position)
        buffer = bytearray(max(0, want))
        view = memoryview(buffer)
        filled = 0
        while filled < len(view) and (got := self._read_some(view[filled:])):
            filled += got
        del view
        del buffer[filled:]
        return bytes(buffer)

    def readinto(self, buffer) -> int:
        """As many of the next bytes as are in the spool now, at least one (blocking until
        there is one), up to the buffer's size: 0 only at the verified end. For sequential
        writers that write what arrived as it arrives."""
        return self._read_some(memoryview(buffer).cast("B"))

    def _read_some(self, view: memoryview) -> int:
        """Some of the next bytes into `view` (0 at the verified end)."""
        while True:
            end, generation = self._feed._readable_end(self._position, self._generation)
            if self._position >= end:
                self.close()
                return 0
            if generation != self._generation:  # nothing handed out yet: read the new file
                self.close()
            if self._fd is None:
                try:
                    self._fd = os.open(self._feed.path, os.O_RDONLY)
                except FileNotFoundError:
                    if self._feed._still(generation):
                        raise
                    continue  # (replaced by a restart from byte 0 just now)
                self._generation = generation
            count = os.preadv(self._fd, [view[: min(len(view), end - self._position)]], self._position)
            # A restart may have replaced the file between the look and the read: those bytes
            # are not handed out (with nothing handed out yet, the new file is read instead).
            if not self._feed._still(generation):
                self.close()
                if self._position:  # raises SourceFailed: the download failed, or starts again from byte 0
                    self._feed._readable_end(self._position, generation)
                self._generation = None
                continue
            if not count:  # the download said these bytes were written: never wait for them forever
                raise SourceFailed(f"the spool file {self.spool} ends at byte {self._position}, before the "
                                   f"{end} bytes the download reported")
            self._position += count
            return count

    def close(self) -> None:
        """Close the descriptor (the reader opens it again if read further)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()
