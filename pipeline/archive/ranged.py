"""A large file over several connections: split into pieces fetched by `streams` workers in
file order (each a `Range` GET through the lean byte path), written in place into the spool
(positional writes), hashed in file order by a follower that reads the contiguous prefix back
(from the page cache) as it grows, and resumable piece by piece after a crash.

As strict as one stream (pipeline.archive.download, whose rules it shares):
- the file's length is learnt from a first `bytes=0-0` answer and must be the API's file_size;
- every answer must be a 206 for exactly the range asked, of the same length and the same file
  version (validator; each request carries it as If-Range); a server whose file changed answers
  200 or another validator: nothing received is kept, the file starts again from byte 0, so two
  versions are never mixed. A piece continued after a break repeats its last RESUME_OVERLAP
  bytes, compared byte for byte, as one stream does;
- a server that ignores Range (200 to the first request) or gives no validator to hold the
  pieces together is downloaded over one stream instead;
- a piece that comes back short is continued from where it stopped;
- 429/503 from the file server halves the streams this file uses (never below one) and backs
  off, instead of failing;
- the whole file's size is checked at the end, and its digests cover every byte in order.

Durable progress: every checkpoint (fdatasync, then the `.ok` marker) notes each piece's
durable end; a killed run's successor continues every piece from there. The marker's `offset`
is the durable contiguous prefix, so a single-stream download could continue it too."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque

import urllib3

from pipeline.archive.answers import OneStream, RangeRules, Restart, Retryable, Throttled, UrlRefused, content_range
from pipeline.archive.bytepath import READ_SIZE
from pipeline.archive.checkpoints import Checkpoints, Validator
from pipeline.archive.cpu_gauge import MACHINE
from pipeline.archive.download import Download, DownloadedFile, host_of
from pipeline.archive.hashing import BackgroundHasher, Hasher
from pipeline.archive.pieces import FIRST_STREAMS, RAMP_SECONDS, Piece, Ramp, split
from pipeline.archive.pieces_spool import PiecesSpool
from pipeline.errors import DownloadError, Interrupted

log = logging.getLogger("rtk_archive.download")

HASH_BLOCK = 1 << 20  # the follower reads the prefix back in blocks this large (larger ones hash slower: cache)


class RangedDownload(PiecesSpool, RangeRules, Download):
    """`Download` over `streams` connections; falls back to one stream when ranges cannot be used."""

    def __init__(self, *args, streams: int, ramp: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams = streams
        self.ramp = ramp
        self.total = 0
        self.pieces: list[Piece] = []
        self._lock = threading.Lock()
        self._grown = threading.Condition(self._lock)  # the prefix grew, or the transfer ended
        self._queue: deque[Piece] = deque()
        self._allowed = streams  # streams this file may use now (429/503 lower it)
        self._answered: set[int] = set()  # the streams (slots) that have had an answer (the ramp waits for them)
        self._failure: BaseException | None = None
        self._finished = False
        self._prefix_index = 0
        self._announced = 0  # the prefix the hasher was last told about
        self._checkpoints: Checkpoints | None = None

    # ----------------------------------------------------------------- the whole file

    def _run(self) -> DownloadedFile:
        try:
            self.spool.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise self._spool_error(exc) from None
        self._url = self._fresh_enough(self.urls(False))
        self._last_progress = time.monotonic()
        for _ in range(self.attempts):
            try:
                return self._ranged()
            except OneStream as why:
                log.info("%s: %s; downloading over one stream", self.label, why)
                self._reset_spool()
                return super()._run()
            except Restart as why:
                log.warning("%s: %s", self.label, why)
                self._reset_spool()
        raise DownloadError(f"{self.label}: the file kept changing while it was downloaded "
                            f"({self.attempts} times); not archived")

    def _ranged(self) -> DownloadedFile:
        self._failure, self._finished, self._prefix_index, self._announced = None, False, 0, 0
        resumed = self._resume_pieces()
        if not resumed:
            self._probe()
        self._queue = deque(piece for piece in self.pieces if not piece.complete)
        self._progress_mark = self.high_water = self._done_bytes()
        self._check_room(self.total - self._done_bytes())
        if not resumed:
            self._allocate()
        hasher = Hasher(md5=self.md5)
        try:
            with open(self.spool, "r+b", buffering=0) as fh:
                with Checkpoints(fh, self._note_pieces, self.high_water) as self._checkpoints:
                    follower = threading.Thread(target=self._follow, args=(fh.fileno(), hasher),
                                                name="hash-prefix", daemon=True)
                    follower.start()
                    self._run_workers(fh.fileno())
                    with self._lock:
                        self._finished = True
                        self._grown.notify_all()
                    follower.join()
                    if self._failure is not None:
                        self._checkpoints.halt()
                        if not isinstance(self._failure, Restart):  # what arrived is kept for the next run
                            self._sync_pieces(fh)
                        raise self._failure
                    if self.offset != self.total:
                        raise Retryable(f"the pieces ended at byte {self.offset} of {self.total}")
                    self._checkpoints.close()
                    self._sync_pieces(fh)
        except OSError as exc:
            raise self._spool_error(exc) from None
        except Retryable as exc:
            if isinstance(exc, Restart):
                raise
            raise DownloadError(f"{self.label}: gave up after {self._failures} failed requests without getting "
                                f"further: {exc}") from None
        self._check_complete()
        return DownloadedFile(path=self.spool, size=self.offset, checksums=hasher.checksums(), disposable=True,
                              source_host=host_of(self._url.url), resumed=self.resumed, refreshed=self.refreshed,
                              fetched=self.fetched)

    def _probe(self) -> None:
        """A first `bytes=0-0`: the file's length and version, and whether ranges work at all."""
        self._reset_spool()
        while True:
            if self.stop.is_set():
                raise Interrupted(f"{self.label}: stopped before the download began")
            try:
                total, validator = self._probe_once()
                break
            except Retryable as exc:
                if isinstance(exc, Restart):
                    raise
                with self._lock:
                    failures = self._count_failure()
                wait = exc.wait if isinstance(exc, Throttled) and exc.wait is not None else \
                    min(30.0, self.backoff * 2 ** min(failures - 1, 5))
                log.warning("%s: %s; trying again", self.label, exc)
                self.stop.wait(wait * random.uniform(0.5, 1.0))
        if self.expected_size is not None and total != self.expected_size:
            raise DownloadError(f"{self.label}: the file server announces {total} bytes but the API's file_size "
                                f"is {self.expected_size}; not archived", retryable=False)
        self.total, self.validator, self.content_total = total, validator, total
        self.pieces = split(total, self.streams)

    def _probe_once(self) -> tuple[int, Validator]:
        while True:
            try:
                with self.connections.get(self._url.url, {"Range": "bytes=0-0"}) as response:
                    if response.status in (401, 403, 410):
                        raise UrlRefused(f"HTTP {response.status}")
                    if response.status == 416:  # an empty file: one stream handles it
                        raise OneStream("the file server refused a first range (an empty file?)")
                    self._check_answer_status(response)
                    if response.status == 200:
                        raise OneStream("the file server ignores Range")
                    _, _, total = content_range(response.headers.get("content-range"))
                    validator = Validator.of(response)
                    if total is None:
                        raise OneStream("the file server does not state the file's length in Content-Range")
                    if validator is None:
                        raise OneStream("the file server gives no ETag or Last-Modified to hold ranges together")
                    return total, validator
            except UrlRefused as exc:
                self._url = self._refresh(f"the file server refused the URL ({exc})")
            except urllib3.exceptions.HTTPError as exc:
                raise Retryable(f"the first range request failed ({type(exc).__name__})") from None

    def _run_workers(self, fd: int) -> None:
        """Workers take pieces in file order until none is left, started one at a time: a stream
        is added while the last one added raised the file's rate (a link whose connections are
        each limited, as over a long path, fills up; where one stream already takes all the
        CPU or the link, as on a near server, a second one is taken away again). A worker
        beyond the streams now allowed (after a 429/503, or a stream that did not pay) stops and
        puts nothing back unfinished: another round of workers then takes what is left, so no
        piece is stranded."""
        while True:
            with self._lock:
                if self._failure is not None or not self._queue:
                    return
            with self._lock:
                first = min(FIRST_STREAMS if self.ramp else self.streams, self._allowed)
                self._answered.clear()  # (this round's workers are new: none has answered yet)
            workers = [self._start_worker(slot, fd) for slot in range(first)]
            ramp, streams = Ramp(self.high_water, settled=not self.ramp), first
            MACHINE.busy()  # (a fresh look: the first interval is judged on itself, not on what came before)
            while any(worker.is_alive() for worker in workers):
                next(worker for worker in workers if worker.is_alive()).join(RAMP_SECONDS)
                cpu_bound = not ramp.settled and MACHINE.busy()  # (reads /proc/stat: not under the lock)
                with self._lock:
                    answered = all(slot in self._answered or not worker.is_alive()
                                   for slot, worker in enumerate(workers))
                    wanted = ramp.streams_wanted(self.high_water, len(workers), self._allowed,
                                                 saturated=self.connections.waiting > 0, answered=answered,
                                                 cpu_bound=cpu_bound)
                    if wanted < len(workers):  # the streams added last did not pay: they stop after their piece
                        self._allowed = wanted
                    add = wanted > len(workers) and bool(self._queue) and self._failure is None
                if wanted != streams:
                    log.info("%s: %d stream(s) now", self.label, wanted)
                    streams = wanted
                while add and len(workers) < wanted:
                    workers.append(self._start_worker(len(workers), fd))
            for worker in workers:
                worker.join()

    def _start_worker(self, slot: int, fd: int) -> threading.Thread:
        worker = threading.Thread(target=self._worker, args=(slot, fd), name=f"range-{slot}", daemon=True)
        worker.start()
        return worker

    def _worker(self, slot: int, fd: int) -> None:
        try:
            while True:
                with self._lock:
                    if self._failure is not None or slot >= self._allowed or not self._queue:
                        return
                    piece = self._queue.popleft()
                try:
                    self._fetch(piece, fd, slot)
                except Throttled as exc:
                    self._slow_down(piece, exc)
        except BaseException as exc:  # handed to _ranged, which raises it
            with self._lock:
                if self._failure is None:
                    self._failure = exc
                self._grown.notify_all()

    def _slow_down(self, piece: Piece, exc: Throttled) -> None:
        """429/503: this file uses fewer streams (never fewer than one), and waits."""
        with self._lock:
            self._queue.appendleft(piece)
            if self._allowed > 1:
                self._allowed = max(1, self._allowed // 2)
                log.warning("%s: %s; using %d stream(s) for this file", self.label, exc, self._allowed)
            failures = self._count_failure()
        if failures is not None:
            pause = exc.wait if exc.wait is not None else min(30.0, self.backoff * 2 ** min(failures, 5))
            self.stop.wait(pause + random.uniform(0, self.backoff / 2))  # (a stop ends the wait)

    def _count_failure(self) -> int | None:
        """Count one failed request (lock held); raise when the file stopped advancing for
        `attempts` failures per stream (streams fail together: a 503 often hits them all at
        once) or `max_seconds`. Progress renews both budgets."""
        now = time.monotonic()
        if self.high_water > self._progress_mark:
            self._progress_mark, self._failures, self._last_progress = self.high_water, 0, now
        self._failures += 1
        if self._failures >= self.attempts * self.streams or now - self._last_progress >= self.max_seconds:
            raise DownloadError(f"{self.label}: gave up after {self._failures} failed requests without getting "
                                f"past {self.high_water} of {self.total} bytes")
        return self._failures

    def _fetch(self, piece: Piece, fd: int, slot: int) -> None:
        """The piece, whole: continued after breaks and short answers, the URL refreshed when refused."""
        while not piece.complete:
            if self.stop.is_set():
                raise Interrupted(f"{self.label}: stopped with {self._done_bytes()} of {self.total} bytes")
            before, url = piece.done, self._url
            try:
                self._request_piece(url.url, piece, fd, slot)
                if piece.done == before and not piece.complete:
                    raise Retryable(f"the answer for bytes {piece.done}-{piece.end - 1} brought nothing")
            except UrlRefused as exc:
                with self._lock:
                    if url is self._url:  # not refreshed meanwhile by another stream
                        self._url = self._refresh(f"the file server refused the URL ({exc})")
                continue
            except (Retryable, urllib3.exceptions.HTTPError) as exc:
                if isinstance(exc, (Restart, Throttled)):
                    raise
                why = exc if isinstance(exc, Retryable) else f"connection broke ({type(exc).__name__})"
                with self._lock:
                    failures = self._count_failure()
                log.warning("%s: bytes %d-%d: %s; continuing from byte %d", self.label, piece.start, piece.end - 1,
                            why, piece.done)
                self.stop.wait(min(30.0, self.backoff * 2 ** min(failures - 1, 5)) * random.uniform(0.5, 1.0))

    def _request_piece(self, url: str, piece: Piece, fd: int, slot: int) -> None:
        """One Range GET for the rest of `piece`, written where it belongs."""
        asked = max(piece.start, piece.done - self.overlap)
        headers = {"Range": f"bytes={asked}-{piece.end - 1}", "If-Range": self.validator.value}
        with self.connections.get(url, headers) as response:
            end = self._check_piece_answer(response, asked, piece)  # a server may send less than asked
            with self._lock:
                self._answered.add(slot)
            expected = os.pread(fd, piece.done - asked, asked) if piece.done > asked else b""
            position = asked
            while position < end:
                if self.stop.is_set() or self._failure is not None:  # (another stream's failure ends this one)
                    raise Interrupted(f"{self.label}: stopped with {self._done_bytes()} of {self.total} bytes")
                data = memoryview(self.connections.read(response, min(READ_SIZE, end - position)))
                n = len(data)
                if not n:
                    break
                with self._lock:
                    self.fetched += n
                if position < piece.done:  # the bytes asked again: they must be the ones held
                    same = min(n, piece.done - position)
                    if data[:same] != expected[position - asked: position - asked + same]:
                        raise Restart(f"the file changed since the download began: bytes before {piece.done} are "
                                      "not the ones received before; restarting from byte 0")
                    position += same
                    data = data[same:]
                while data:
                    written = os.pwrite(fd, data, position)
                    position += written
                    data = data[written:]
                    self._advance(piece, position, written)
        if piece.done < end:
            raise Retryable(f"the answer for bytes {asked}-{end - 1} ended at byte {piece.done}")

    # ----------------------------------------------------------------- progress, hashing, checkpoints

    def _advance(self, piece: Piece, position: int, written: int) -> None:
        with self._lock:
            piece.done = position
            self.written += written
            self.high_water += written
            while self._prefix_index < len(self.pieces) and self.pieces[self._prefix_index].complete:
                self._prefix_index += 1
            prefix = self._prefix()
            # The hasher is woken once a block is ready, not for every write (waking it for
            # writes beyond the prefix only costs the GIL).
            if prefix - self._announced >= HASH_BLOCK or prefix == self.total:
                self._announced = prefix
                self._grown.notify_all()
            self._checkpoints.progress(self.high_water, self._snapshot)
        self.progress(written)

    @property
    def held(self) -> int:
        return self.high_water  # the pieces' bytes, wherever they are in the file

    def _prefix(self) -> int:
        """The end of the contiguous bytes from 0 (lock held)."""
        if self._prefix_index >= len(self.pieces):
            return self.total
        return self.pieces[self._prefix_index].done

    def _done_bytes(self) -> int:
        return sum(piece.done - piece.start for piece in self.pieces)

    def _follow(self, fd: int, hasher: Hasher) -> None:
        """Hash the contiguous prefix in file order as it grows, reading it back from the spool,
        on this thread (it is already off the receiving ones); MD5, when a target needs it, on a
        second thread beside SHA-256, one block behind at most."""
        background = BackgroundHasher(hasher, depth=1) if hasher.with_md5 else None
        hashed = 0
        try:
            while hashed < self.total:
                with self._lock:
                    while self._prefix() <= hashed and not self._finished and self._failure is None:
                        self._grown.wait()
                    if self._failure is not None:
                        return
                    prefix = self._prefix()
                    if prefix <= hashed:
                        return
                while hashed < prefix:
                    block = os.pread(fd, min(HASH_BLOCK, prefix - hashed), hashed)
                    (background or hasher).update(block)
                    n = len(block)
                    if not n:
                        raise OSError(f"the spool file ends at byte {hashed}")
                    hashed += n
                    self._tell_feed(hashed)  # (the hashed prefix: what overlapped uploads may read)
        except BaseException as exc:  # handed to _ranged
            with self._lock:
                if self._failure is None:
                    self._failure = exc
        finally:
            if background is not None:
                background.finish()
            self.offset = hashed
