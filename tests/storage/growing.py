"""A test-side GrowingFile (storage/stream.py): a file that "arrives" only as fast as the test
releases it, so a test decides exactly how much of it an upload can have read, and whether the
download ends verified (`finish`) or fails (`fail`).

The bytes are written to a temporary file first (any size, memory stays flat); `deliver(n)`
releases the first n bytes (never the last one), `finish()` releases the rest and makes the
result a LocalFile with the file's real digests, `fail(reason)` makes every waiting and later
read raise SourceFailed. Like the pipeline's, the read that reaches the end waits for `finish`.
`feed(rate)` releases it from a thread at a steady rate instead (a stand-in for a download).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from storage import LocalFile
from storage.stream import SourceFailed
from tests.storage.files import local_file

WAIT = 120.0  # seconds a test waits for an upload to read what it expects (never a timing check)


class _Feed:
    """What all readers of one growing file share: how much of it is released, and its end."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size
        self.released = 0  # bytes readers may have
        self.finished: LocalFile | None = None
        self.failure: SourceFailed | None = None
        self.most_read = 0  # the furthest any reader got
        self.read_before_finish = 0  # the furthest any reader got before `finish` was called
        self.largest_request = 0  # the most bytes one read asked for (-1: all the rest)
        self.changed = threading.Condition()


class GrowingSource:
    """One reader of a growing file from byte 0 (`reader()` makes another over the same feed)."""

    def __init__(self, path: Path, *, feed: _Feed | None = None):
        self._feed = feed or _Feed(Path(path), os.path.getsize(path))
        self.size = self._feed.size
        self._position = 0

    @classmethod
    def of(cls, tmp_path: Path, size: int, name: str = "growing.bin") -> GrowingSource:
        """A growing file of `size` random bytes, written in pieces (flat memory)."""
        path = tmp_path / name
        with open(path, "wb") as out:
            left = size
            while left:
                piece = min(left, 4 << 20)
                out.write(os.urandom(piece))
                left -= piece
        return cls(path)

    # -- the test's side ----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._feed.path

    @property
    def most_read(self) -> int:
        return self._feed.most_read

    @property
    def read_before_finish(self) -> int:
        return self._feed.read_before_finish

    @property
    def largest_request(self) -> int:
        return self._feed.largest_request

    @property
    def ended(self) -> bool:
        """finish or fail was called."""
        return self._feed.finished is not None or self._feed.failure is not None

    @property
    def failure(self) -> SourceFailed | None:
        return self._feed.failure

    def deliver(self, upto: int) -> None:
        """Release the bytes before `upto` (at most all but the last: that one waits for finish)."""
        feed = self._feed
        with feed.changed:
            feed.released = max(feed.released, min(upto, feed.size - 1 if feed.size else 0))
            feed.changed.notify_all()

    def finish(self) -> LocalFile:
        """The download ended and was verified: release the rest; the result is the file."""
        feed = self._feed
        result = local_file(feed.path)
        with feed.changed:
            feed.read_before_finish = feed.most_read
            feed.released = feed.size
            feed.finished = result
            feed.changed.notify_all()
        return result

    def fail(self, reason: str) -> SourceFailed:
        """The download failed (or the file changed): readers and `result` raise SourceFailed."""
        feed = self._feed
        with feed.changed:
            feed.failure = SourceFailed(reason)
            feed.changed.notify_all()
        return feed.failure

    def wait_read(self, at_least: int, upload: Future | None = None) -> None:
        """Block until a reader has read `at_least` bytes. Raises what `upload` (the put reading
        it) raised if it ended first, AssertionError after WAIT seconds."""
        feed = self._feed
        deadline = time.monotonic() + WAIT
        with feed.changed:
            while feed.most_read < at_least:
                if upload is not None and upload.done():
                    upload.result()
                    raise AssertionError(f"the upload ended after reading {feed.most_read} bytes")
                if time.monotonic() > deadline:
                    raise AssertionError(f"the upload read only {feed.most_read} of the {at_least} bytes "
                                         f"released within {WAIT:.0f} s")
                feed.changed.wait(0.1)

    def feed(self, rate: float, step: int = 1 << 20) -> threading.Thread:
        """Release the file at `rate` bytes/s from a thread, then `finish` (a throttled download)."""
        def run():
            start = time.monotonic()
            sent = 0
            while sent < self.size - 1:
                sent = min(sent + step, self.size - 1)
                time.sleep(max(0.0, start + sent / rate - time.monotonic()))
                self.deliver(sent)
            self.finish()

        thread = threading.Thread(target=run, name="growing-feed", daemon=True)
        thread.start()
        return thread

    # -- the GrowingFile protocol (the upload's side) ---------------------------------------

    def read(self, n: int = -1) -> bytes:
        feed = self._feed
        with feed.changed:
            feed.largest_request = -1 if n is None or n < 0 or feed.largest_request < 0 else max(n, feed.largest_request)
            feed.changed.wait_for(lambda: feed.failure is not None or feed.released > self._position
                                  or (feed.finished is not None and self._position >= feed.size))
            if feed.failure is not None:
                raise feed.failure
            available = feed.released - self._position
            count = available if n is None or n < 0 else min(n, available)
        with open(feed.path, "rb") as stream:
            stream.seek(self._position)
            data = stream.read(count)
        with feed.changed:
            self._position += len(data)
            if self._position > feed.most_read:
                feed.most_read = self._position
                feed.changed.notify_all()
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._position

    def result(self) -> LocalFile:
        feed = self._feed
        with feed.changed:
            feed.changed.wait_for(lambda: feed.failure is not None or feed.finished is not None)
            if feed.failure is not None:
                raise feed.failure
            return feed.finished

    def reader(self) -> GrowingSource:
        return GrowingSource(self._feed.path, feed=self._feed)
