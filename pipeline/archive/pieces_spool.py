"""The spool file of a ranged download (a mixin of pipeline.archive.ranged.RangedDownload):
the whole file's space reserved at once, each piece's durable end noted in the `.ok` marker at
every checkpoint, and a killed run's pieces continued from there."""

from __future__ import annotations

import logging
import os

from pipeline.archive.checkpoints import read_marker, read_pieces, write_marker
from pipeline.archive.pieces import Piece
from pipeline.errors import DownloadError

log = logging.getLogger("rtk_archive.download")


class PiecesSpool:
    def _resume_pieces(self) -> bool:
        """Continue the pieces a killed run left, as far as they were durable."""
        found = read_pieces(self.marker)
        _, validator = read_marker(self.marker)
        if found is None or validator is None or not self.spool.exists() or self.spool.stat().st_nlink > 1:
            return False
        total, pieces = found
        if (self.expected_size is not None and total != self.expected_size) or self.spool.stat().st_size != total:
            return False
        self.total, self.validator, self.content_total = total, validator, total
        self.pieces = [Piece(*piece) for piece in pieces]
        self.resumed += 1
        log.info("%s: resuming a previous run's ranged download (%d of %d bytes held)", self.label,
                 self._done_bytes(), total)
        return True

    def _reset_spool(self) -> None:
        try:
            self._reset()
        except OSError as exc:
            raise self._spool_error(exc) from None
        self.pieces, self.total = [], 0

    def _allocate(self) -> None:
        """The whole file's space, reserved at once: the pieces' writes land in place (not in a
        sparse file's scattered extents), and a spool that fills up fails here, not mid-way."""
        try:
            fd = os.open(self.spool, os.O_WRONLY)
            try:
                os.posix_fallocate(fd, 0, self.total)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._spool_error(exc) from None

    def _spool_error(self, exc: OSError) -> DownloadError:
        """A spool failure as this file's DownloadError (a spool full for now: the bytes other
        downloads hold are not waited for here; the next run retries the file)."""
        failure = self._spool_failed(exc)
        return failure if isinstance(failure, DownloadError) else DownloadError(f"{self.label}: {failure}")

    def _snapshot(self) -> tuple[int, list[list[int]]]:
        return self._prefix(), [[p.start, p.done, p.end] for p in self.pieces]

    def _note_pieces(self, mark) -> None:
        if isinstance(mark, tuple):
            prefix, pieces = mark
            write_marker(self.marker, prefix, self.validator, total=self.total, pieces=pieces)

    def _sync_pieces(self, fh) -> None:
        with self._lock:
            mark = self._snapshot()
        os.fdatasync(fh.fileno())
        self._note_pieces(mark)
