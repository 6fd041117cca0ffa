"""The rules a file server's answer must follow before its bytes join the spool: the status, a
Content-Range that starts where it was asked and belongs to the same file version (validator),
lengths that agree with each other and with the API's file_size, a resume that repeats the
spool's last bytes exactly, an encoding that can be undone. An answer that breaks them restarts
the file from byte 0 (`Restart`) or fails it with the reason (`DownloadError`); never are other
bytes kept under the recording's name. Mixins of `Download` and `RangedDownload`, which hold
the state they read."""

from __future__ import annotations

import logging

from pipeline.archive.bytepath import Answer
from pipeline.archive.checkpoints import Validator
from pipeline.errors import DownloadError, FileUnavailable
from storage import is_retryable_status

log = logging.getLogger("rtk_archive.download")

DECODABLE = ("gzip", "x-gzip", "deflate")  # Content-Encodings urllib3 decodes with the stdlib


class Retryable(Exception):
    """A transfer broke in a way that trying again (from the same offset) can fix."""


class Restart(Retryable):
    """What the spool holds cannot be continued with this server's bytes: start again from 0."""


class OneStream(Exception):
    """The server cannot serve this file in consistent ranges: download it over one stream."""


class UrlRefused(Exception):
    """The file server refused the URL (expired or revoked): refresh and go on."""


class Throttled(Retryable):
    """The file server asked to slow down (429/503); `wait`: its Retry-After, in seconds."""

    def __init__(self, message: str, wait: float | None):
        super().__init__(message)
        self.wait = wait


class AnswerRules:
    """Checks on one answer; `Download` provides the state (offset, validator, lengths...)."""

    def _range_not_satisfiable(self, response: Answer) -> None:
        """416: `bytes=0-` of an empty file (S3 answers so), or a resume past the end of a
        file that is shorter now (start again)."""
        _, _, total = content_range(response.headers.get("content-range"), unsatisfied=True)
        if not self.offset and total == 0:
            self.content_total = 0
            self._done = True
            return
        if self.offset:
            raise Restart("the file server refused the resume range (the file is shorter now); "
                           "restarting from byte 0")
        raise DownloadError(f"{self.label}: the file server refused to send the file from byte 0 "
                            f"(HTTP 416, {response.headers.get('content-range')!r})", retryable=False)

    def _check_status(self, response: Answer) -> None:
        status = response.status
        if status in (200, 206):
            return
        if is_retryable_status(status):
            raise Retryable(f"file server answered HTTP {status}")
        if status == 404:
            raise FileUnavailable(f"{self.label}: the file server answered 404: the file is gone")
        raise DownloadError(f"{self.label}: the file server answered HTTP {status}", retryable=False)

    def _position(self, response: Answer) -> None:
        """Line the answer up with what the spool holds, or start again; learn the file's length."""
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        self._decoding = encoding not in ("", "identity")
        if self._decoding:
            self._accept_encoding(encoding, response.status)
        if response.status == 200:
            if self.offset:
                # Range ignored, or If-Range found another version: the whole file, from byte 0.
                log.info("%s: the file server answered with the whole file (it ignored Range, or the file "
                         "changed since the download began); restarting from byte 0", self.label)
                self._reset()
            self.validator = Validator.of(response)
            length = None if self._decoding else int_header(response, "content-length")
            self._body_end = self.content_total = length
        else:
            self._position_partial(response)
        total = self.content_total
        if total is not None and self.expected_size is not None and total != self.expected_size:
            raise DownloadError(
                f"{self.label}: the file server announces {total} bytes but the API's file_size is "
                f"{self.expected_size}; not archived",
                retryable=False,
            )
        self._check_room(total if total is not None else self.expected_size)

    def _position_partial(self, response: Answer) -> None:
        """A 206 continues the spool only if it is the same file version and starts where asked."""
        start, end, total = content_range(response.headers.get("content-range"))
        if start is None:
            raise Restart(f"the file server's 206 has no usable Content-Range "
                           f"({response.headers.get('content-range')!r}); restarting from byte 0")
        if start != self._asked_from:
            raise Restart(f"the file server resumed at byte {start}, not at byte {self._asked_from} as "
                           "asked; restarting from byte 0")
        length = int_header(response, "content-length")
        if length is not None and not self._decoding and length != end + 1 - start:
            raise DownloadError(f"{self.label}: the file server's answer contradicts itself: Content-Length {length}, "
                                f"but its Content-Range covers {end + 1 - start} bytes; not archived", retryable=False)
        if not self.offset:
            self.validator = Validator.of(response)
        elif not self.validator.matches(response):
            found = response.headers.get(self.validator.header)
            raise Restart(f"the file changed since the download began (its {self.validator.header} was "
                           f"{self.validator.value}, now {found}); restarting from byte 0")
        else:
            self.resumed += 1
        self._body_end = end + 1
        if total is not None:
            self.content_total = total

    def _accept_encoding(self, encoding: str, status: int) -> None:
        """A server that compresses despite `Accept-Encoding: identity`: decode what can be
        decoded (the length is then checked on the decoded bytes); refuse the rest."""
        if encoding not in DECODABLE:
            raise DownloadError(f"{self.label}: the file server sent Content-Encoding {encoding!r}, which "
                                "cannot be decoded into the recording's bytes; not archived", retryable=False)
        if not self._whole_only:
            log.warning("%s: the file server compressed the body (Content-Encoding: %s) although identity "
                        "was asked; decoding it", self.label, encoding)
        self._whole_only = True
        if status == 206:
            raise Restart("a compressed answer cannot continue a transfer; restarting from byte 0")

    def _compare_overlap(self, chunk: bytes, expected: bytes) -> tuple[bytes, bytes]:
        """The first bytes of a resumed answer repeat the spool's last ones: compare, drop them."""
        n = min(len(chunk), len(expected))
        if chunk[:n] != expected[:n]:
            raise Restart(f"the file changed since the download began: the bytes before byte {self.offset} "
                           "are not the ones received before; restarting from byte 0")
        return chunk[n:], expected[n:]

    def _check_not_longer(self) -> None:
        """Stop a body at once when it runs past its answer's end or the file's size: an endless
        body never fills the spool."""
        if self._body_end is not None and self.offset > self._body_end:
            raise Restart(f"the answer runs past the end its Content-Range announced ({self._body_end}); "
                           "restarting from byte 0")
        if self.expected_size is not None and self.offset > self.expected_size:
            raise DownloadError(f"{self.label}: the body is longer than the API's file_size "
                                f"({self.expected_size} bytes); not archived", retryable=False)

    def _check_complete(self) -> None:
        """The last gate: the file as received has the API's file_size, whatever the answers said."""
        if self.expected_size is not None and self.offset != self.expected_size:
            raise DownloadError(
                f"{self.label}: received {self.offset} bytes but the API's file_size is "
                f"{self.expected_size}; not archived",
                retryable=False,
            )


class RangeRules:
    """Checks on one answer to a piece's Range request (pipeline.archive.ranged): the same file
    version, exactly the range asked, lengths that agree."""

    def _check_piece_answer(self, response: Answer, asked: int, piece) -> int:
        """Where the answer's body must end (exclusive), once it proved to be the range asked,
        of this file version; Restart or DownloadError otherwise."""
        status = response.status
        if status in (401, 403, 410):
            raise UrlRefused(f"HTTP {status}")
        self._check_answer_status(response)
        if status == 200 and self.validator.matches(response):  # the same version: Range ignored
            raise OneStream("the file server answered a range with the whole file")
        if status == 200:
            raise Restart("the file changed since the download began (a range was answered with the whole new "
                          "file); restarting from byte 0")
        if status == 416:
            raise Restart("the file server refused a range (the file is shorter now); restarting from byte 0")
        start, end, total = content_range(response.headers.get("content-range"))
        if start != asked or total != self.total or end > piece.end - 1:
            raise Restart(f"the file server answered bytes {asked}-{piece.end - 1} of {self.total} with "
                          f"{response.headers.get('content-range')!r}; restarting from byte 0")
        if not self.validator.matches(response):
            raise Restart(f"the file changed since the download began (its {self.validator.header} was "
                          f"{self.validator.value}, now {response.headers.get(self.validator.header)}); "
                          "restarting from byte 0")
        length = int_header(response, "content-length")
        if length is not None and length != end + 1 - start:
            raise DownloadError(f"{self.label}: the file server's answer contradicts itself: Content-Length {length}, "
                                f"but its Content-Range covers {end + 1 - start} bytes; not archived", retryable=False)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise Restart(f"the file server compressed a range ({encoding}); restarting from byte 0")
        return end + 1

    def _check_answer_status(self, response: Answer) -> None:
        status = response.status
        if status in (200, 206, 416):
            return
        if status in (429, 503):
            wait = response.headers.get("retry-after", "").strip()
            raise Throttled(f"the file server answered HTTP {status}",
                            min(60.0, float(wait)) if wait.isdigit() else None)
        if is_retryable_status(status):
            raise Retryable(f"the file server answered HTTP {status}")
        if status == 404:
            raise FileUnavailable(f"{self.label}: the file server answered 404: the file is gone")
        raise DownloadError(f"{self.label}: the file server answered HTTP {status}", retryable=False)


def int_header(response: Answer, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def content_range(value: str | None, *, unsatisfied: bool = False) -> tuple[int | None, int | None, int | None]:
    """"bytes 100-199/200" -> (100, 199, 200); the total is None for "*"; (None, None, None)
    when the header is missing, malformed or impossible (a range past the total). A 416's
    "bytes */200" (`unsatisfied`) -> (None, None, 200)."""
    try:
        unit, spec = value.split()
        span, total_text = spec.split("/")
        if unsatisfied:
            return None, None, int(total_text) if unit == "bytes" and span == "*" else None
        first, last = (int(n) for n in span.split("-"))
        total = None if total_text == "*" else int(total_text)
        if unit != "bytes" or first < 0 or last < first or (total is not None and last >= total):
            raise ValueError
        return first, last, total
    except (AttributeError, ValueError):
        return None, None, None


