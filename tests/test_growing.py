"""The spool as a GrowingFile (pipeline.archive.growing), its rules checked on a real file with
the download's side driven by hand: the last byte and the end only once the download is
verified, a restart from byte 0 fails the readers that handed bytes out and not the others, a
failed download or a stopping run fails every read. (The pipeline tests are test_overlap.py.)"""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from pipeline.archive.growing import SpoolFeed
from storage import Checksums, GrowingFile, LocalFile, SourceFailed


def verified(path, data: bytes) -> LocalFile:
    return LocalFile(path=path, size=len(data), checksums=Checksums(sha256=hashlib.sha256(data).hexdigest(), md5=None,
                                                                   crc32c=""))


def grow(feed: SpoolFeed, data: bytes) -> None:
    with open(feed.path, "ab") as fh:
        fh.write(data)
    feed.grown(os.path.getsize(feed.path))


@pytest.fixture
def feed(tmp_path):
    path = tmp_path / "file.part"
    path.write_bytes(b"")
    feed = SpoolFeed(path, 10, threading.Event())
    yield feed
    feed.failed("the test ended")  # (a reader a failed test left waiting gives up)


def test_the_last_byte_and_the_end_come_only_once_the_download_is_verified(feed):
    """All ten bytes are in the spool, but a reader gets nine until `finished`; then the tenth
    and the end. `read(n)` waits for all n (an SDK cuts its parts from such reads)."""
    reader = feed.reader()
    assert isinstance(reader, GrowingFile)
    grow(feed, b"0123456789")
    buffer = bytearray(64)
    assert reader.readinto(buffer) == 9 and bytes(buffer[:9]) == b"012345678"
    whole = {}
    waiting = threading.Thread(target=lambda: whole.update(data=feed.reader().read(10)), daemon=True)
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive()  # still waiting for the verified end
    feed.finished(verified(feed.path, b"0123456789"))
    waiting.join(timeout=10)
    assert whole["data"] == b"0123456789"
    assert reader.read(5) == b"9" and reader.read(5) == b"" and reader.tell() == 10
    assert reader.result().size == 10


def test_a_restart_fails_the_readers_that_handed_bytes_out_and_not_the_others(feed):
    """A reader that gave out bytes of the first version fails; a reader that gave out none,
    and a fresh `reader()`, read the new file from byte 0."""
    early, idle = feed.reader(), feed.reader()
    grow(feed, b"old-")
    assert early.read(2) == b"ol"
    feed.restarted()
    feed.path.unlink()  # as Download._reset does: a new file
    feed.path.write_bytes(b"")
    grow(feed, b"new-bytes!")
    with pytest.raises(SourceFailed, match="changed"):
        early.read(2)
    feed.finished(verified(feed.path, b"new-bytes!"))
    assert idle.read() == b"new-bytes!" and early.reader().read() == b"new-bytes!"


@pytest.mark.parametrize("how", ["failed", "stopped"])
def test_a_failed_download_or_a_stopping_run_fails_every_read(feed, how):
    """Waiting readers and `result()` raise SourceFailed; a finished() after a failure changes
    nothing (the upload must abort)."""
    reader = feed.reader()
    grow(feed, b"0123")
    assert reader.read(4) == b"0123"
    if how == "failed":
        feed.failed("the download failed: reasons")
    else:
        feed.stop.set()
    with pytest.raises(SourceFailed):
        reader.read(1)
    with pytest.raises(SourceFailed):
        reader.result()
    if how == "failed":
        feed.finished(verified(feed.path, b"0123456789"))
        with pytest.raises(SourceFailed, match="reasons"):
            feed.reader().read()


def test_a_finished_file_of_another_size_is_never_handed_out(feed):
    """(The download checks its size itself; the feed refuses a wrong end anyway.)"""
    grow(feed, b"01234567890")
    feed.finished(verified(feed.path, b"01234567890"))
    with pytest.raises(SourceFailed, match="11 bytes"):
        feed.reader().read()
