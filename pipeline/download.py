"""Download one recording file to a spool file: streamed (memory stays flat whatever the
size), hashed as the bytes arrive, resumed with `Range` after a break, refreshed when the
presigned URL expires, and checked against `file_size` and Content-Length.

A spool file survives a killed run: the next run resumes it. Bytes are fsynced every
`SYNC_EVERY` and the durable length noted in a `.ok` sidecar, so after a power cut only bytes
known to be on disk are trusted."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import tenacity

from pipeline.errors import DownloadError, FileUnavailable, Interrupted
from pipeline.hashing import BackgroundHasher, Hasher, hash_file
from storage.base import LocalFile

log = logging.getLogger("rtk_archive.download")

SYNC_EVERY = 256 << 20
MAX_URL_REFRESHES = 3


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


class _UrlExpired(Exception):
    """The file server refused the URL (expired or revoked): refresh and go on."""


class _Retryable(Exception):
    """A transfer broke in a way that trying again (from the same offset) can fix."""


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


class Download:
    """One file's transfer. `run()` returns the finished spool file, or raises DownloadError
    (FileUnavailable when RealtimeKit no longer serves it)."""

    def __init__(self, client: httpx.Client, urls: UrlProvider, spool: Path, *, expected_size: int | None,
                 label: str, refresh_margin: timedelta = timedelta(minutes=5), attempts: int = 5,
                 max_seconds: float = 600.0, stop: threading.Event | None = None,
                 progress: Callable[[int], None] | None = None, backoff: float = 1.0, md5: bool = True):
        self.client = client
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
        self.hasher = Hasher(md5=md5)
        self.offset = 0
        self.resumed = 0
        self.refreshed = 0
        self.content_total: int | None = None  # the size the file server announced
        self._url: SignedUrl | None = None

    # ----------------------------------------------------------------- public

    def run(self) -> DownloadedFile:
        self.spool.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._resume_from_spool()
        self._url = self._fresh_enough(self.urls(False))
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.max_seconds),
            wait=tenacity.wait_exponential_jitter(initial=self.backoff, max=30),
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._transfer()
        except _Retryable as exc:
            raise DownloadError(f"{self.label}: gave up after {self.attempts} attempts: {exc}") from None
        self._check_complete()
        return DownloadedFile(
            path=self.spool, size=self.offset, checksums=self.hasher.checksums(), disposable=True,
            source_host=host_of(self._url.url), resumed=self.resumed, refreshed=self.refreshed,
        )

    def discard(self) -> None:
        """Remove the spool file and its marker (after the copies are verified, or on failure
        that makes the partial bytes useless)."""
        for path in (self.spool, self.marker):
            path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- steps

    def _resume_from_spool(self) -> None:
        """Continue a spool file a previous (killed) run left, trusting only synced bytes."""
        durable = _read_marker(self.marker)
        if not self.spool.exists() or durable <= 0 or self.spool.stat().st_nlink > 1:
            # (A spool with other links was already taken by a local target: never write to it.)
            self._reset()
            return
        if self.expected_size is not None and durable > self.expected_size:
            self._reset()
            return
        with open(self.spool, "r+b") as fh:
            fh.truncate(durable)
        self.hasher = hash_file(self.spool, md5=self.md5)
        self.offset = self.hasher.size
        self.resumed += 1
        log.info("%s: resuming a previous run's download at byte %d", self.label, self.offset)

    def _reset(self) -> None:
        # Unlink, then create: a fresh inode, so a target holding the old one by hard link
        # is never truncated.
        self.spool.unlink(missing_ok=True)
        fd = os.open(self.spool, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.close(fd)
        self.marker.unlink(missing_ok=True)
        self.hasher = Hasher(md5=self.md5)
        self.offset = 0

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
        if self.refreshed >= MAX_URL_REFRESHES:
            raise DownloadError(f"{self.label}: the download URL keeps being refused after "
                                f"{self.refreshed} refreshes ({why})")
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
        """Transfer from the current offset to the end; a refused URL is refreshed and used at
        once (no backoff: a short-lived fresh URL must not expire while we wait)."""
        while True:
            try:
                self._request()
                return
            except _UrlExpired as exc:
                self._url = self._refresh(f"the file server refused the URL ({exc})")

    def _request(self) -> None:
        """One request from the current offset to the end (or until it breaks)."""
        headers = {"Accept-Encoding": "identity"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        try:
            with self.client.stream("GET", self._url.url, headers=headers) as response:
                if response.status_code in (401, 403, 410):
                    raise _UrlExpired(f"HTTP {response.status_code}")
                if self.offset and response.status_code == 416:
                    self._range_not_satisfiable(response)
                    return
                self._check_status(response)
                self._position(response)
                self._receive(response)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__}) at byte {self.offset}") from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _Retryable(f"connection broke at byte {self.offset} ({type(exc).__name__})") from None

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        if status in (408, 429) or status >= 500:
            raise _Retryable(f"file server answered HTTP {status}")
        if status == 404:
            raise FileUnavailable(f"{self.label}: the file server answered 404: the file is gone")
        raise DownloadError(f"{self.label}: the file server answered HTTP {status}", retryable=False)

    def _position(self, response: httpx.Response) -> None:
        """Line the response up with what the spool already holds."""
        length = _int_header(response, "content-length")
        if self.offset and response.status_code == 200:
            # The server ignored Range: start over cleanly rather than append a second copy.
            log.info("%s: the file server ignored Range; restarting from byte 0", self.label)
            self._reset()
        elif response.status_code == 206:
            start = _content_range_start(response.headers.get("content-range"))
            if start != self.offset:
                self._reset()
                raise _Retryable(f"server resumed at byte {start}, expected {self.offset}; restarting")
            self.resumed += 1
        self.content_total = self.offset + length if length is not None else None
        if self.content_total is not None and self.expected_size is not None \
                and self.content_total != self.expected_size:
            raise DownloadError(
                f"{self.label}: the file server announces {self.content_total} bytes but the API's "
                f"file_size is {self.expected_size}; not archived",
                retryable=False,
            )

    def _receive(self, response: httpx.Response) -> None:
        hasher = BackgroundHasher(self.hasher)
        try:
            self._receive_into(response, hasher)
        finally:
            hasher.finish()  # the digests cover exactly the bytes written, whatever happened

    def _receive_into(self, response: httpx.Response, hasher: BackgroundHasher) -> None:
        requested = self.offset
        with open(self.spool, "r+b") as fh, _Syncer(fh, self.marker) as syncer:
            fh.seek(self.offset)
            fh.truncate()
            # No chunk_size: httpx would hold bytes back until a chunk fills, and lose them
            # when the connection breaks; as received, every byte that arrived is kept.
            for chunk in response.iter_raw():
                if self.stop.is_set():
                    self._sync(fh)  # what arrived is kept: the next run resumes from here
                    raise Interrupted(f"{self.label}: stopped at byte {self.offset}")
                fh.write(chunk)
                hasher.update(chunk)
                self.offset += len(chunk)
                self.progress(len(chunk))
                if self.expected_size is not None and self.offset > self.expected_size:
                    raise DownloadError(
                        f"{self.label}: the body is longer than the API's file_size "
                        f"({self.expected_size} bytes); not archived",
                        retryable=False,
                    )
                if self.offset - requested >= SYNC_EVERY:
                    fh.flush()
                    syncer.request(self.offset)
                    requested = self.offset
            syncer.close()
            self._sync(fh)
        if self.content_total is not None and self.offset < self.content_total:
            raise _Retryable(f"body ended at byte {self.offset} of {self.content_total}")

    def _sync(self, fh) -> int:
        fh.flush()
        os.fdatasync(fh.fileno())
        _write_marker(self.marker, self.offset)
        return self.offset

    def _range_not_satisfiable(self, response: httpx.Response) -> None:
        total = _content_range_total(response.headers.get("content-range"))
        if total is not None and total == self.offset:
            return  # the spool already holds the whole file
        self._reset()
        raise _Retryable("the server refused the resume range; restarting from byte 0")

    def _check_complete(self) -> None:
        if self.content_total is not None and self.offset != self.content_total:
            raise DownloadError(f"{self.label}: received {self.offset} bytes, the server announced "
                                f"{self.content_total}")
        if self.expected_size is not None and self.offset != self.expected_size:
            raise DownloadError(
                f"{self.label}: received {self.offset} bytes but the API's file_size is "
                f"{self.expected_size}; not archived",
                retryable=False,
            )

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: %s; retrying from byte %d (attempt %d of %d)", self.label, exc, self.offset,
                    state.attempt_number + 1, self.attempts)


class _Syncer:
    """fdatasync in the background: the download goes on while earlier bytes reach the disk.
    The marker records only offsets whose bytes a finished sync covered. Requests arriving
    while a sync runs are merged into the next one."""

    def __init__(self, fh, marker: Path):
        self._fd = fh.fileno()
        self._marker = marker
        self._wanted: int | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._work, name="spool-sync", daemon=True)
        self._thread.start()

    def request(self, offset: int) -> None:
        with self._cond:
            self._wanted = offset
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._wanted is None and not self._closed:
                    self._cond.wait()
                offset, self._wanted = self._wanted, None
                if offset is None:
                    return
            try:
                os.fdatasync(self._fd)
                _write_marker(self._marker, offset)
            except OSError as exc:
                self._error = exc
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._closed:
            with self._cond:
                self._closed = True
                self._wanted = None
                self._cond.notify()
            self._thread.join()


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0]) if value else None
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    # "bytes */200"
    try:
        return int(value.rsplit("/", 1)[1]) if value else None
    except (IndexError, ValueError):
        return None


def _read_marker(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def _write_marker(path: Path, offset: int) -> None:
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(offset))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)
