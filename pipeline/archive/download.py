"""Download one recording file to a spool file: streamed (memory stays flat whatever the
size), hashed as the bytes arrive, resumed with `Range` after a break, refreshed when the
presigned URL expires, and checked against `file_size` and what the server announced.

A resume never splices two versions of a file. The first answer's validator (a strong ETag,
else Last-Modified) is remembered and sent as `If-Range`: a server whose file changed answers
with the whole new file. A 206 must carry the same validator and start where it was asked to,
and it must repeat the last `RESUME_OVERLAP` bytes the spool already holds, byte for byte (this
catches a changed file even behind an unchanged ETag). Anything else restarts from byte 0. A
server that gives no validator at all is never resumed: a break restarts the file.

A spool file survives a killed run: the next run resumes it. Durable checkpoints (fdatasync,
then a `.ok` marker noting the length and the validator) are taken every `SYNC_EVERY` bytes or
`SYNC_SECONDS`, whichever comes first, so after a kill or a power cut only bytes known to be on
disk are trusted, and little is fetched twice whatever the file's size.

Retries, and URL refreshes, are budgeted per lack of progress: a long transfer that keeps
advancing through breaks and expiring URLs is never abandoned; one that stops advancing is."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import urllib3

from pipeline import retry
from pipeline.archive.answers import AnswerRules, Restart, Retryable, UrlRefused
from pipeline.archive.bytepath import READ_SIZE, Answer, FileConnections
from pipeline.archive.checkpoints import SYNC_MIN, Checkpoints, Validator, read_marker
from pipeline.archive.hashing import BackgroundHasher, Hasher, InlineHasher, hash_file
from pipeline.archive.spool import SpoolSpace
from pipeline.archive.spool_file import SpoolFile, NoSpace
from pipeline.errors import DownloadError, FileUnavailable, Interrupted
from storage import LocalFile

log = logging.getLogger("rtk_archive.download")

RESUME_OVERLAP = 64 << 10  # bytes before the resume point fetched again and compared
MAX_URL_REFRESHES = 3  # refreshes in a row without progress before the URL counts as dead


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expiry: datetime | None


# Gives the file's current presigned URL; `refresh=True` asks the API for a fresh record.
UrlProvider = Callable[[bool], SignedUrl]


@dataclass(frozen=True)
class DownloadedFile(LocalFile):
    source_host: str = ""
    resumed: int = 0
    refreshed: int = 0
    fetched: int = 0  # bytes received from the network by this run (bytes resumed from the spool excluded)


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


class Download(AnswerRules, SpoolFile):
    """One file's transfer. `run()` returns the finished spool file, or raises DownloadError
    (FileUnavailable when RealtimeKit no longer serves it). `fetched` counts the bytes this
    run received, whatever the outcome."""

    def __init__(self, connections: FileConnections, urls: UrlProvider, spool: Path, *, expected_size: int | None,
                 label: str, refresh_margin: timedelta = timedelta(minutes=5), attempts: int = 5,
                 max_seconds: float = 600.0, stop: threading.Event | None = None,
                 progress: Callable[[int], None] | None = None, backoff: float = 1.0, md5: bool = True,
                 overlap: int = RESUME_OVERLAP, space: SpoolSpace | None = None, feed=None):
        self.connections = connections
        self.urls = urls
        self.spool = spool
        self.marker = spool.with_name(spool.name + ".ok")
        self.expected_size = expected_size
        self.label = label
        self.refresh_margin = refresh_margin
        self.attempts = attempts
        self.max_seconds = max_seconds
        self.stop = stop or threading.Event()
        self.progress = progress or (lambda n: None)
        self.backoff = backoff
        self.md5 = md5
        self.overlap = overlap
        self.space = space or SpoolSpace.of(spool.parent)
        # Told how far the file's bytes reached in order, and of restarts from byte 0, for the
        # uploads that read it while it downloads (pipeline.archive.growing.SpoolFeed).
        self.feed = feed
        self.hasher = Hasher(md5=md5)
        self.offset = 0  # bytes the spool holds, hashed
        self.fetched = 0
        self.high_water = 0  # the furthest offset reached: passing it is progress
        self.written = 0  # bytes written to the spool by this run
        self.resumed = 0
        self.refreshed = 0
        self.validator: Validator | None = None
        self.content_total: int | None = None  # the file's length as the server announced it
        self._body_end: int | None = None  # where the current answer's body must end
        self._asked_from = 0  # where the current answer must start
        self._decoding = False  # the current answer is Content-Encoded: read it decoded
        self._whole_only = False  # the server encodes bodies: a break restarts from byte 0
        self._done = False
        self._failures = 0  # failed attempts since the last progress
        self._progress_mark = 0
        self._last_progress = time.monotonic()
        self._refreshes_in_a_row = 0  # URL refreshes since the last progress
        self._refresh_mark = 0
        self._url: SignedUrl | None = None

    # ----------------------------------------------------------------- public

    def run(self) -> DownloadedFile:
        with self.space.using(self.spool):
            return self._run()

    def _run(self) -> DownloadedFile:
        try:
            self.spool.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._resume_from_spool()
        except OSError as exc:
            failure = self._spool_failed(exc)
            raise (failure if isinstance(failure, DownloadError) else
                   DownloadError(f"{self.label}: {failure}", retryable=False)) from None
        self._progress_mark = self._refresh_mark = self.high_water = self.offset
        self._url = self._fresh_enough(self.urls(False))
        self._last_progress = time.monotonic()
        # Budgets counted from the last progress (_give_up, _pause), not from the first attempt.
        retrying = retry.policy(retry=retry.on_exception_type(Retryable), stop=self._give_up, wait=self._pause,
                                before_sleep=self._log_retry)
        try:
            for attempt in retrying:
                with attempt:
                    self._transfer()
        except Retryable as exc:
            # A spool that stayed full: its bytes are given back so the other files can go on.
            raise DownloadError(f"{self.label}: gave up after {self._failures} attempts without getting past "
                                f"byte {self.high_water}: {exc}", retryable=not isinstance(exc, NoSpace)) from None
        self._check_complete()
        return DownloadedFile(
            path=self.spool, size=self.offset, checksums=self.hasher.checksums(), disposable=True,
            source_host=host_of(self._url.url), resumed=self.resumed, refreshed=self.refreshed,
            fetched=self.fetched,
        )

    @property
    def held(self) -> int:
        """Bytes of the file the spool holds now (for progress)."""
        return self.offset

    def discard(self) -> None:
        """Remove the spool file and its marker (after the copies are verified, or on failure
        that makes the partial bytes useless)."""
        for path in (self.spool, self.marker):
            path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- budgets

    def _give_up(self, state: retry.State) -> bool:
        """After a failed attempt: give up after `attempts` failures, or `max_seconds`, in a
        row without progress. Progress (passing the furthest byte reached so far) renews both,
        so a long file is never abandoned while it advances; restarting from 0 is no progress."""
        now = time.monotonic()
        if self.high_water > self._progress_mark:
            self._progress_mark = self.high_water
            self._failures = 0
            self._last_progress = now
        self._failures += 1
        return self._failures >= self.attempts or now - self._last_progress >= self.max_seconds

    def _pause(self, state: retry.State) -> float:
        """Exponential backoff with jitter, counted from the last progress."""
        return min(30.0, self.backoff * 2 ** (self._failures - 1) + random.uniform(0, self.backoff))

    def _log_retry(self, state: retry.State) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: %s; retrying from byte %d (attempt %d of %d since the last progress)", self.label, exc,
                    self.offset, self._failures + 1, self.attempts)

    # ----------------------------------------------------------------- steps

    def _resume_from_spool(self) -> None:
        """Continue a spool file a previous (killed) run left, trusting only synced bytes, and
        only with the validator that identifies the file version they belong to."""
        durable, validator = read_marker(self.marker)
        if not self.spool.exists() or durable <= 0 or self.spool.stat().st_nlink > 1:
            # (A spool with other links was already taken by a local target: never write to it.)
            self._reset()
            return
        if (self.expected_size is not None and durable > self.expected_size) or validator is None:
            if validator is None:
                log.info("%s: a previous run's bytes carry no ETag or Last-Modified to check a resume "
                         "against; starting again from byte 0", self.label)
            self._reset()
            return
        with open(self.spool, "r+b") as fh:
            fh.truncate(durable)
        self.hasher = hash_file(self.spool, md5=self.md5)
        self.offset = self.hasher.size
        self.validator = validator
        self.resumed += 1
        self._tell_feed(self.offset)
        log.info("%s: resuming a previous run's download at byte %d", self.label, self.offset)

    def _reset(self) -> None:
        # Unlink, then create: a fresh inode, so a target holding the old one by hard link
        # is never truncated.
        if self.feed is not None:  # (before the file goes: its readers must not take the new one for it)
            self.feed.restarted()
        self.spool.unlink(missing_ok=True)
        fd = os.open(self.spool, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.close(fd)
        self.marker.unlink(missing_ok=True)
        self.hasher = Hasher(md5=self.md5)
        self.offset = 0
        self.validator = None

    def _fresh_enough(self, signed: SignedUrl) -> SignedUrl:
        """Refresh a URL that expires within the margin; a fresh one already expired means
        RealtimeKit no longer serves the file."""
        if not signed.url:
            raise FileUnavailable(f"{self.label}: RealtimeKit gives no download URL for this file")
        now = datetime.now(timezone.utc)
        if signed.expiry is not None and signed.expiry - now < self.refresh_margin:
            signed = self._refresh("the download URL expires at " + signed.expiry.isoformat())
        return signed

    def _refresh(self, why: str) -> SignedUrl:
        if self.high_water > self._refresh_mark:  # bytes arrived since the last refresh: a new budget
            self._refresh_mark = self.high_water
            self._refreshes_in_a_row = 0
        if self._refreshes_in_a_row >= MAX_URL_REFRESHES:
            raise DownloadError(f"{self.label}: the download URL keeps being refused after "
                                f"{self._refreshes_in_a_row} refreshes without progress ({why})")
        self._refreshes_in_a_row += 1
        self.refreshed += 1
        log.info("%s: fetching the recording again for a fresh URL (%s)", self.label, why)
        signed = self.urls(True)
        now = datetime.now(timezone.utc)
        if not signed.url:
            raise FileUnavailable(f"{self.label}: RealtimeKit no longer gives a download URL for this file")
        if signed.expiry is not None and signed.expiry <= now:
            raise FileUnavailable(
                f"{self.label}: the download URL expired at {signed.expiry.isoformat()} and RealtimeKit "
                "issues no fresh one: the recording is past its retention and cannot be obtained"
            )
        return signed

    def _transfer(self) -> None:
        """Request from the current offset until the file is complete. A refused URL is
        refreshed and used at once (no backoff: a short-lived fresh URL must not expire while
        we wait); an answer that covers only part of what was asked is continued at once."""
        self._done = False
        while not self._done:
            before = self.written
            try:
                self._request()
            except UrlRefused as exc:
                self._url = self._refresh(f"the file server refused the URL ({exc})")
                continue
            if not self._done and self.written == before:
                raise Retryable(f"the file server's answer brought nothing past byte {self.offset}")

    def _request(self) -> None:
        """One request from the current offset to the end (or until it breaks)."""
        headers = {"Accept-Encoding": "identity"}
        try:
            self._asked_from = self._resume_point()
            # Even from byte 0 a Range is asked: a 206 states the file's length in Content-Range,
            # a second witness beside Content-Length (files without file_size have no other).
            if not self._whole_only:
                headers["Range"] = f"bytes={self._asked_from}-"
            if self.offset:
                headers["If-Range"] = self.validator.value
            with self.connections.get(self._url.url, headers) as response:
                if response.status in (401, 403, 410):
                    raise UrlRefused(f"HTTP {response.status}")
                if response.status == 416:
                    self._range_not_satisfiable(response)
                    return
                self._check_status(response)
                self._position(response)
                self._receive(response)
        except Restart:
            try:
                self._reset()
            except OSError as exc:
                raise self._spool_failed(exc) from None
            raise
        except urllib3.exceptions.DecodeError:
            raise Restart("the compressed body could not be decoded; restarting from byte 0") from None
        except urllib3.exceptions.HTTPError as exc:
            if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
                exc = exc.reason  # (the connection could not be made: say why)
            if isinstance(exc, TimeoutError):
                raise Retryable(f"timed out ({type(exc).__name__}) at byte {self.offset}") from None
            raise Retryable(f"connection broke at byte {self.offset} ({type(exc).__name__})") from None
        except OSError as exc:  # urllib3 turns network OSErrors into its own: this is the spool
            raise self._spool_failed(exc) from None

    def _resume_point(self) -> int:
        """Where to ask the next answer to start. A resume asks again for the last `overlap`
        bytes the spool holds, to compare them; without a validator it starts again from 0."""
        if not self.offset:
            return 0
        if self._whole_only or self.validator is None:
            why = ("the server compresses its answers, which cannot be resumed" if self._whole_only else
                   "the server gives no ETag or Last-Modified, so a resume could not be checked")
            log.info("%s: restarting from byte 0: %s", self.label, why)
            self._reset()
            return 0
        return self.offset - min(self.overlap, self.offset)

    def _receive(self, response: Answer) -> None:
        small = self.expected_size is not None and self.expected_size < BackgroundHasher.BATCH
        # A small file is hashed as it arrives, on this thread: starting hashing threads would
        # cost more than the hashing.
        hasher = InlineHasher(self.hasher) if small else BackgroundHasher(self.hasher)
        try:
            self._receive_into(response, hasher)
        finally:
            hasher.finish()  # the digests cover exactly the bytes written, whatever happened

    def _receive_into(self, response: Answer, hasher: BackgroundHasher) -> None:
        overlap = self._spool_bytes(self._asked_from, self.offset)  # what the answer must repeat first
        chunks = self._chunks(response)
        # Unbuffered: a write that fails (a full disk) has written exactly what it reports.
        with open(self.spool, "r+b", buffering=0) as fh, Checkpoints(fh, self._note_durable, self.offset) as checkpoints:
            fh.seek(self.offset)
            fh.truncate()
            for chunk in chunks:
                if self.stop.is_set():
                    checkpoints.halt()
                    self._sync_on_stop(fh)  # what arrived is kept: the next run resumes from here
                    raise Interrupted(f"{self.label}: stopped at byte {self.offset}")
                self.fetched += len(chunk)
                if overlap:
                    chunk, overlap = self._compare_overlap(chunk, overlap)
                self._write(fh, chunk, hasher)
                self._check_not_longer()
                checkpoints.progress(self.offset)
            checkpoints.close()
            if self.offset >= SYNC_MIN:  # a smaller file is not worth a sync to resume it: fetched again
                self._sync(fh)
        if overlap:
            raise Retryable(f"the answer ended before byte {self.offset}, inside the bytes asked again")
        # The body must reach the end its answer announced; short of it, resume from here.
        if self._body_end is not None and self.offset < self._body_end:
            raise Retryable(f"body ended at byte {self.offset} of {self._body_end}")
        self._done = self.content_total is None or self.offset >= self.content_total

    def _chunks(self, response: Answer) -> Iterator[bytes]:
        """The body as received (read1: what arrived, up to READ_SIZE, never waiting for a full
        buffer, so every byte that arrived before a break is kept), counted through the one
        byte hook; decoded when the server compressed it."""
        while chunk := response.read1(READ_SIZE, decode_content=self._decoding):
            self.connections.on_bytes(len(chunk))
            yield chunk

    def _write(self, fh, chunk: bytes, hasher: BackgroundHasher) -> None:
        written = 0
        try:
            while written < len(chunk):
                written += fh.write(chunk[written:] if written else chunk)
        finally:
            if written:  # exactly the bytes now in the file are hashed and counted
                hasher.update(chunk if written == len(chunk) else chunk[:written])
                self.offset += written
                self.written += written
                self.high_water = max(self.high_water, self.offset)
                self._tell_feed(self.offset)
                self.progress(written)

    def _tell_feed(self, prefix: int) -> None:
        if self.feed is not None:
            self.feed.grown(prefix)
