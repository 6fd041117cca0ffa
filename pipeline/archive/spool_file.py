"""A download's file in the spool: reading back what is on disk, syncing it and noting the
durable length in its marker, and what to do when the spool's file system is full (a mixin of
pipeline.archive.download.Download: it provides `label`, `spool`, `marker`, `space`, `offset`,
`validator`, `content_total`, `expected_size` and `_reset`)."""

from __future__ import annotations

import errno
import logging
import os

from pipeline.archive.answers import Retryable
from pipeline.archive.checkpoints import write_marker
from pipeline.errors import DownloadError

log = logging.getLogger("rtk_archive.download")


class NoSpace(Retryable):
    """The spool's file system is full for now: other downloads will give space back."""


class SpoolFile:
    def _spool_bytes(self, start: int, end: int) -> bytes:
        if start >= end:
            return b""
        with open(self.spool, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def _sync(self, fh) -> None:
        os.fdatasync(fh.fileno())
        self._note_durable(self.offset)

    def _sync_on_stop(self, fh) -> None:
        try:
            self._sync(fh)
        except OSError as exc:  # the marker keeps the last durable length: nothing wrong is trusted
            log.warning("%s: could not sync the spool file on stop (%s); the next run resumes from the last "
                        "checkpoint", self.label, exc.strerror or exc)

    def _note_durable(self, offset: int) -> None:
        write_marker(self.marker, offset, self.validator)

    def _check_room(self, needed: int | None) -> None:
        """Refuse at once a file the spool's file system cannot hold even when every other
        spool file is gone, instead of filling the disk to fail anyway."""
        if needed is None or needed - self.offset <= self.space.free():  # fits in what is free now
            return
        room = self.space.survey(self.spool)
        if needed - self.offset > room.at_most:
            raise DownloadError(f"{self.label}: no space left on the spool file system at {self.spool.parent}: "
                                f"the file is {needed} bytes, at most {self.offset + room.at_most} can be free "
                                "there; not archived", retryable=False)

    def _spool_failed(self, exc: OSError) -> Exception:
        """A spool write that failed. A full disk: partial downloads earlier runs left are
        removed to make room; else, while other downloads hold space, the one holding the most
        keeps its bytes and waits, the others give theirs back and start again later (no two
        wait on each other); a file that cannot fit even alone fails, its bytes removed.
        Anything else fails this file."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return DownloadError(f"{self.label}: the spool file {self.spool} cannot be written: "
                                 f"{exc.strerror or exc}", retryable=False)
        where = f"no space left on the spool file system at {self.spool.parent}"
        room = self.space.survey(self.spool)
        if room.leftovers:
            removed = self.space.remove_leftovers(room)
            return NoSpace(f"{where}; removed {removed} partial download(s) an earlier run left, to make room")
        needed = self.content_total if self.content_total is not None else self.expected_size
        if not room.in_flight or (needed is not None and needed - self.offset > room.free + room.held_by_others):
            size = f" (the file is {needed} bytes)" if needed is not None else ""
            return DownloadError(f"{self.label}: {where}{size}; not archived", retryable=False)
        largest = max((size, path.name) for path, size in room.in_flight.items())
        if (self.offset, self.spool.name) > largest:
            return NoSpace(f"{where}; waiting for other downloads to free space")
        given = self.offset
        try:
            self._reset()
        except OSError as reset_failed:
            return DownloadError(f"{self.label}: {where}; the spool file cannot be reset either: "
                                 f"{reset_failed.strerror or reset_failed}", retryable=False)
        return NoSpace(f"{where}; gave its {given} bytes to larger downloads and starts again when they finish")
