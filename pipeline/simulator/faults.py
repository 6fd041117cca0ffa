"""The simulator's switchable misbehaviour (Faults) and its log of the requests it answered."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

FOREVER = -1


@dataclasses.dataclass
class Faults:
    """Switchable misbehaviour. Count fields hit the next N matching requests (-1 = until reset).

    API faults (checked in this order, after the token check): forbidden, rate_limit,
    server_errors, html_answers, unsuccessful, broken_json, drop_answers; slow_answers delays;
    pages_from_zero makes the list endpoint count pages from 0 (page_no=1 is the second page).
    File faults: file_server_errors, drop_downloads, throttle_bps, ignore_range, size_mismatch.
    URL faults: expired_list_urls (list answers sign already-expired URLs), url_lifetime
    (a lifetime in seconds overriding the simulator's, e.g. to expire mid-transfer).

    Adversarial file server (what object stores and CDNs sometimes do): chunked (no
    Content-Length), end_early (a body that stops short with no error the client could see),
    wrong_content_length, extra_bytes (a body longer than its Content-Range), shift_ranges (a 206 starting elsewhere than asked), total_unknown
    (`Content-Range: bytes a-b/*`), change_on_drop (the file changes, same size, other bytes,
    after a drop) with stale_validators (it keeps its old ETag and Last-Modified),
    validators (which of ETag / Last-Modified are sent), ignore_if_range, slow_first_byte,
    gzip_bodies (Content-Encoding: gzip whatever Accept-Encoding asked).
    """

    forbidden: int = 0  # 403, token lacks permission
    rate_limit: int = 0  # 429
    retry_after: int | float | str | None = 1  # seconds (or an HTTP-date string); None: no header
    server_errors: int = 0
    server_error_status: int = 500
    server_error_html: bool = False  # a gateway-style HTML page instead of the JSON envelope
    html_answers: int = 0  # an HTML page instead of JSON
    html_status: int = 200
    unsuccessful: int = 0  # HTTP 200 with {success: false, error: {...}}
    broken_json: int = 0  # HTTP 200, the JSON cut in half
    drop_answers: int = 0  # connection closed half-way through an API answer
    slow_answers: int = 0
    slow_seconds: float = 1.0
    pages_from_zero: bool = False  # list pages counted from 0: page_no=1 answers the second page
    expired_list_urls: int = 0
    url_lifetime: float | None = None
    file_server_errors: int = 0  # 503 on file downloads
    drop_downloads: int = 0  # close the connection after drop_after_bytes of a file body
    drop_after_bytes: int = 64 * 1024
    throttle_bps: int = 0  # file bytes per second, 0 = unlimited
    ignore_range: bool = False  # file server answers 200 with the whole body whatever Range says
    size_mismatch: dict[str, int] = dataclasses.field(default_factory=dict)  # id -> extra bytes (+/-)
    chunked: bool = False  # file bodies in chunked transfer coding, without Content-Length
    end_early: int = 0  # the body ends cleanly after end_early_after bytes (no Content-Length)
    end_early_after: int = 64 * 1024
    wrong_content_length: int = 0  # Content-Length off by this many bytes; the body is unchanged
    extra_bytes: int = 0  # bodies without Content-Length run this many bytes past their announced range
    shift_ranges: int = 0  # answers to a resume (a Range not from 0) start elsewhere (and say so) ...
    range_shift: int = 1000  # ... this many bytes off the asked start (negative: before it), same length
    total_unknown: bool = False  # 206 answers say `bytes a-b/*`
    change_on_drop: bool = False  # a drop also changes the file (same size, other bytes)
    stale_validators: bool = False  # a changed file keeps the ETag and Last-Modified it had
    validators: str = "both"  # which validators files carry: both, etag, last-modified, none
    ignore_if_range: bool = False  # serve the Range even when If-Range does not match
    slow_first_byte: int = 0  # file answers wait first_byte_seconds before their first byte
    first_byte_seconds: float = 2.0
    gzip_bodies: bool = False  # Content-Encoding: gzip (whole body, 200) despite identity asked
    ignore_later_ranges: bool = False  # a Range not from byte 0 is answered 200 with the whole file

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._answering = threading.local()  # the request this thread is answering

    def answering(self, entry: SimRequest | None) -> None:
        """Faults applied on this thread from now on are noted in `entry.faults`."""
        self._answering.entry = entry

    def note(self, name: str) -> None:
        """Record that the fault `name` shaped the answer being sent (the request log shows it)."""
        entry = getattr(self._answering, "entry", None)
        if entry is not None:
            entry.faults.append(name)

    def consume(self, name: str) -> bool:
        """True if the fault `name` applies to this request (and count it, and note it)."""
        with self._lock:
            left = getattr(self, name)
            fired = left == FOREVER or left > 0
            if left > 0:
                setattr(self, name, left - 1)
        if fired:
            self.note(name)
        return fired

    def set(self, **values: Any) -> None:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)

    def reset(self) -> None:
        fresh = Faults()
        with self._lock:
            for f in dataclasses.fields(self):
                setattr(self, f.name, getattr(fresh, f.name))

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["size_mismatch"] = dict(values["size_mismatch"])
        return values


@dataclasses.dataclass
class SimRequest:
    """One request as the simulator saw it. Never holds the Authorization header."""

    method: str
    path: str
    query: dict[str, list[str]]
    range: str | None
    kind: str  # "api", "file", "control", "key" (the webhook public key) or "artifact"
    status: int | None = None
    bytes_sent: int = 0
    authorization: bool = False  # whether an Authorization header came (never its value)
    if_range: str | None = None  # the If-Range header a file request carried
    connection: int | None = None  # the client's port: requests on one connection share it
    headers_sent: dict[str, str] = dataclasses.field(default_factory=dict)  # the answer's headers
    cut: bool = False  # the connection was cut with the body incomplete (a drop)
    faults: list[str] = dataclasses.field(default_factory=list)  # the faults that shaped this answer
