"""A local stand-in for the RealtimeKit recordings API, its presigned file URLs and their faults.

It is a real HTTP/1.1 server (stdlib only) so the client, the downloader and the whole archive
run can be tested over sockets exactly as against Cloudflare: same paths, same envelopes, same
JSON shapes as the API reference, presigned URLs that really expire, Range requests, and
switchable faults (rate limits, 5xx, HTML pages, dropped connections, lying sizes, ...).

File bodies are never stored: each (recording, kind) has a ~1 MiB pseudo-random block of prime
length, repeated. The prime length keeps the pattern from lining up with power-of-two chunk
sizes, so a resume at a wrong offset produces different bytes and a wrong checksum.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import email.utils
import gzip
import hashlib
import hmac
import json
import logging
import math
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "Faults",
    "SimRequest",
    "Simulator",
    "add_arguments",
    "run",
]

log = logging.getLogger("rtk_archive.simulator")

API_PREFIX = "/client/v4"
RETENTION = timedelta(days=7)
STATUSES = ("INVOKED", "RECORDING", "UPLOADING", "UPLOADED", "ERRORED", "PAUSED")
KINDS = ("video", "audio")
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
FILE_BYTES_LIMIT = 64 * 1024 * 1024  # file_bytes() is for tests: refuse to build huge buffers

MEETING_TITLES = (
    "Weekly Sync",
    "Design Review",
    "Customer Call: ACME Corp",
    "Daily Standup",
    "All Hands",
    "Interview – Backend",
    "Über-Planung Q3",
    "1:1 Alex / Sam",
)

# Key order of each answer shape, as in the API reference's examples.
_BASE_KEYS = (
    "id",
    "audio_download_url",
    "download_url",
    "download_url_expiry",
    "file_size",
    "invoked_time",
    "output_file_name",
    "session_id",
    "started_time",
    "status",
    "stopped_time",
)
SHAPES: dict[str, tuple[str, ...]] = {
    "list": _BASE_KEYS + ("meeting", "recording_duration", "storage_config"),
    "detail": _BASE_KEYS + ("recording_duration", "start_reason", "stop_reason", "storage_config"),
    "active": _BASE_KEYS + ("recording_duration",),
}
_KNOWN_KEYS = frozenset(SHAPES["list"]) | frozenset(SHAPES["detail"])
_WRITE_ONLY_STORAGE_KEYS = ("access_key", "secret", "secret_key")


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with milliseconds and Z, like the API."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _to_ms(value: datetime) -> datetime:
    """Drop sub-millisecond digits so stored times equal what the JSON shows (filters compare them)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def slugify(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug or "meeting"


def _is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def _primes_from(start: int, count: int) -> tuple[int, ...]:
    found: list[int] = []
    n = start
    while len(found) < count:
        if _is_prime(n):
            found.append(n)
        n += 1
    return tuple(found)


BLOCK_PRIMES = _primes_from(1 << 20, 16)  # all a little over 1 MiB


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _seeded_hex(label: str, seed: int, length: int) -> str:
    return hashlib.sha256(f"rtk-sim/{label}/{seed}".encode()).hexdigest()[:length]


# ---------------------------------------------------------------------------------------------
# Faults and the request log
# ---------------------------------------------------------------------------------------------

FOREVER = -1


@dataclasses.dataclass
class Faults:
    """Switchable misbehaviour. Count fields hit the next N matching requests (-1 = until reset).

    API faults (checked in this order, after the token check): forbidden, rate_limit,
    server_errors, html_answers, unsuccessful, broken_json, drop_answers; slow_answers delays.
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
    kind: str  # "api", "file" or "control"
    status: int | None = None
    bytes_sent: int = 0
    authorization: bool = False  # whether an Authorization header came (never its value)
    if_range: str | None = None  # the If-Range header a file request carried
    headers_sent: dict[str, str] = dataclasses.field(default_factory=dict)  # the answer's headers
    cut: bool = False  # the connection was cut with the body incomplete (a drop)
    faults: list[str] = dataclasses.field(default_factory=list)  # the faults that shaped this answer


# ---------------------------------------------------------------------------------------------
# Deterministic file contents
# ---------------------------------------------------------------------------------------------


class _Blocks:
    """Per (recording, kind) pseudo-random blocks, doubled so any window of a period is one slice."""

    def __init__(self, cache_size: int = 8) -> None:
        self._cache: OrderedDict[tuple[str, str], memoryview] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def get(self, recording_id: str, kind: str) -> tuple[memoryview, int]:
        """(block twice over, period)."""
        key = (recording_id, kind)
        with self._lock:
            doubled = self._cache.get(key)
            if doubled is not None:
                self._cache.move_to_end(key)
                return doubled, len(doubled) // 2
        digest = hashlib.sha256(f"{recording_id}/{kind}".encode()).digest()
        period = BLOCK_PRIMES[digest[0] % len(BLOCK_PRIMES)]
        block = random.Random(int.from_bytes(digest[:16], "big")).randbytes(period)
        doubled = memoryview(block + block)
        with self._lock:
            self._cache[key] = doubled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return doubled, period

    def windows(self, recording_id: str, kind: str, start: int, end: int, max_chunk: int) -> Iterator[memoryview]:
        """The bytes [start, end) as memoryview slices of at most max_chunk bytes."""
        doubled, period = self.get(recording_id, kind)
        max_chunk = max(1, min(max_chunk, period))
        pos = start
        while pos < end:
            phase = pos % period
            n = min(end - pos, max_chunk)
            yield doubled[phase : phase + n]
            pos += n


# ---------------------------------------------------------------------------------------------
# Stored recordings
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Rec:
    raw: dict[str, Any]  # what the API shows (URLs are signed per answer, so None here)
    size: int  # bytes the video file really has
    audio_size: int | None  # bytes of the audio file, None when there is none
    bucket_enabled: bool
    invoked: datetime
    stopped: datetime | None

    @property
    def id(self) -> str:
        return str(self.raw["id"])

    @property
    def retention_end(self) -> datetime | None:
        return self.stopped + RETENTION if self.stopped else None

    def has_file(self, kind: str) -> bool:
        if self.raw.get("status") != "UPLOADED" or not self.bucket_enabled or self.stopped is None:
            return False
        return kind == "video" or (kind == "audio" and self.audio_size is not None)

    def file_length(self, kind: str) -> int:
        return self.size if kind == "video" else (self.audio_size or 0)


class _BadRequest(Exception):
    """Turns into a 400 with RealtimeKit's error envelope."""


# ---------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------


class Simulator:
    """RealtimeKit recordings API + presigned file server on one local port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        recordings: int = 20,
        seed: int = 1,
        url_lifetime: float = 3600,
        account_id: str | None = None,
        app_id: str | None = None,
        token: str | None = None,
        min_size: int = 64 * 1024,
        max_size: int = 4 * 1024 * 1024,
        days: float = 10,
        max_per_page: int = MAX_PER_PAGE,
        **faults: Any,
    ) -> None:
        if min_size < 0 or max_size < min_size:
            raise ValueError("need 0 <= min_size <= max_size")
        self.host = host
        self.port = port
        self.seed = seed
        self.url_lifetime = url_lifetime
        self.account_id = account_id or _seeded_hex("account", seed, 32)
        self.app_id = app_id or _seeded_hex("app", seed, 32)
        self.token = token or "sim_" + _seeded_hex("token", seed, 36)
        self.min_size = min_size
        self.max_size = max_size
        self.days = days
        self.max_per_page = max_per_page
        self.faults = Faults(**faults)
        self.requests: list[SimRequest] = []
        self.track_recordings: list[dict[str, Any]] = []
        self.meetings: dict[str, dict[str, Any]] = {}
        self._recs: dict[str, _Rec] = {}
        self._sessions: dict[str, list[str]] = {}  # meeting id -> its session ids
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._url_key = secrets.token_bytes(32)
        self._blocks = _Blocks()
        self._sha_cache: dict[tuple[str, str, int], str] = {}
        self._versions: dict[tuple[str, str], int] = {}  # files changed since created (change_file)
        self._time_offset = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._generate(recordings)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        # A short poll interval keeps stop() quick: tests start and stop many simulators.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="rtk-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    # -- time ----------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now_ts(), tz=timezone.utc)

    def _now_ts(self) -> float:
        return time.time() + self._time_offset

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward (URL expiry, retention, `expired`) without sleeping."""
        with self._lock:
            self._time_offset += seconds

    # -- data --------------------------------------------------------------------------------

    @property
    def recordings(self) -> list[dict[str, Any]]:
        """The stored raw dicts (live objects; URLs are null here, they are signed per answer)."""
        with self._lock:
            return [rec.raw for rec in self._recs.values()]

    def recording(self, recording_id: str) -> dict[str, Any]:
        with self._lock:
            return self._recs[recording_id].raw

    def add_recording(self, **overrides: Any) -> dict[str, Any]:
        """Create one recording directly. Special keys: status, size, audio (bool or bytes),
        bucket_enabled, meeting_id, meeting_title, invoked_time/started_time/stopped_time
        (datetime, or a string stored as is). Any other key is written into the raw JSON as is
        (e.g. file_size="2044680", output_file_name="../../etc/passwd", unknown extra fields)."""
        with self._lock:
            return self._create(**overrides).raw

    def remove_recording(self, recording_id: str) -> None:
        with self._lock:
            del self._recs[recording_id]

    def download_url(self, recording_id: str, kind: str = "video", *, lifetime: float | None = None) -> str | None:
        """A freshly signed URL (for tests), capped at the retention end like the API's; None
        when the recording has no such file on RealtimeKit's bucket."""
        with self._lock:
            rec = self._recs[recording_id]
            if not rec.has_file(kind):
                return None
            url, _ = self._sign(rec, kind, self.origin.split("//", 1)[1], lifetime=lifetime)
        return url

    def has_file(self, recording_id: str, kind: str = "video") -> bool:
        """True if RealtimeKit's bucket holds this file (UPLOADED, bucket enabled, audio exported)."""
        with self._lock:
            return self._recs[recording_id].has_file(kind)

    def retention_end(self, recording_id: str) -> datetime | None:
        """stopped_time + 7 days: no URL of this recording is valid after it."""
        with self._lock:
            return self._recs[recording_id].retention_end

    def file_size(self, recording_id: str, kind: str = "video") -> int:
        with self._lock:
            return self._recs[recording_id].file_length(kind)

    def expected_sha256(self, recording_id: str, kind: str = "video", version: int | None = None) -> str:
        """SHA-256 of the true file (file_size bytes, whatever size_mismatch serves) as it is now
        (or as it was at `version`: 0 is the file as created; see change_file)."""
        length = self.file_size(recording_id, kind)
        variant = self._variant(recording_id, kind, version)
        key = (recording_id, variant, length)
        with self._lock:
            cached = self._sha_cache.get(key)
        if cached is None:
            digest = hashlib.sha256()
            for window in self._blocks.windows(recording_id, variant, 0, length, 1 << 20):
                digest.update(window)
            cached = digest.hexdigest()
            with self._lock:
                self._sha_cache[key] = cached
        return cached

    def file_bytes(self, recording_id: str, kind: str = "video", start: int = 0, end: int | None = None,
                   version: int | None = None) -> bytes:
        """Bytes [start, end) of the true file (now, or at `version`). For tests: at most 64 MiB."""
        length = self.file_size(recording_id, kind)
        end = length if end is None else min(end, length)
        if end - start > FILE_BYTES_LIMIT:
            raise ValueError("file_bytes() is for small files; use expected_sha256() for big ones")
        variant = self._variant(recording_id, kind, version)
        return b"".join(bytes(w) for w in self._blocks.windows(recording_id, variant, start, end, 1 << 20))

    def change_file(self, recording_id: str, kind: str = "video") -> int:
        """Replace the file's bytes under the same URL (same size, other bytes), as an overwritten
        object or a CDN serving another origin would; its ETag and Last-Modified change too
        unless the stale_validators fault is on. Returns the new version."""
        with self._lock:
            version = self._versions.get((recording_id, kind), 0) + 1
            self._versions[(recording_id, kind)] = version
        return version

    def file_version(self, recording_id: str, kind: str = "video") -> int:
        with self._lock:
            return self._versions.get((recording_id, kind), 0)

    def _variant(self, recording_id: str, kind: str, version: int | None = None) -> str:
        """The content key of a file version (version 0 keeps the original bytes)."""
        if version is None:
            version = self.file_version(recording_id, kind)
        return kind if version == 0 else f"{kind}#v{version}"

    # -- generation ----------------------------------------------------------------------------

    def _generate(self, count: int) -> None:
        """`count` recordings: mostly UPLOADED, one of each other status per 20, spread over `days`."""
        if count <= 0:
            return
        rng = self._rng
        now = self.now()
        meeting_count = max(1, min(len(MEETING_TITLES), (count + 3) // 4))
        meetings = [self._new_meeting(title, now) for title in MEETING_TITLES[:meeting_count]]
        pattern = ["UPLOADED"] * 14 + ["UPLOADING", "ERRORED", "RECORDING", "INVOKED", "PAUSED", "UPLOADED"]
        statuses = [pattern[i % len(pattern)] for i in range(count)]
        rng.shuffle(statuses)
        finished = [i for i, s in enumerate(statuses) if s in ("UPLOADED", "ERRORED")]
        # Finished recordings are spread evenly (with jitter) over the window, so a fixed share
        # is past the 7-day retention whatever the seed.
        slot = {index: rank for rank, index in enumerate(finished)}
        uploaded_rank = 0
        for index, status in enumerate(statuses):
            meeting = meetings[rng.randrange(len(meetings))]
            if status in ("UPLOADED", "ERRORED"):
                fraction = (slot[index] + rng.random()) / len(finished)
                invoked = now - timedelta(seconds=self.days * 86400 * (1 - fraction))
            else:
                invoked = now - timedelta(seconds=rng.uniform(120, 3600))
            extras: dict[str, Any] = {}
            if status == "UPLOADED":
                extras["audio"] = uploaded_rank % 3 == 1
                extras["bucket_enabled"] = uploaded_rank % 10 != 7
                if uploaded_rank % 4 == 3 or not extras["bucket_enabled"]:
                    extras["storage_config"] = {"type": "aws", "bucket": "customer-recordings", "region": "us-east-1", "path": "rtk"}
                uploaded_rank += 1
            self._create(status=status, meeting_id=meeting["id"], invoked_time=invoked, **extras)

    def _new_meeting(self, title: str, now: datetime) -> dict[str, Any]:
        created = now - timedelta(days=self.days + 1, seconds=self._rng.uniform(0, 86400))
        meeting = {
            "id": _uuid(self._rng),
            "created_at": iso(created),
            "updated_at": iso(created + timedelta(hours=1)),
            "live_stream_on_start": False,
            "persist_chat": False,
            "record_on_start": self._rng.random() < 0.3,
            "session_keep_alive_time_in_secs": 60,
            "status": "ACTIVE",
            "summarize_on_end": False,
            "title": title,
        }
        self.meetings[str(meeting["id"])] = meeting
        self._sessions[str(meeting["id"])] = []
        return meeting

    def _meeting_for(self, meeting_id: str | None, title: str | None) -> dict[str, Any]:
        if meeting_id and meeting_id in self.meetings:
            return self.meetings[meeting_id]
        if title and not meeting_id:
            for meeting in self.meetings.values():
                if meeting["title"] == title:
                    return meeting
        meeting = self._new_meeting(title or "Ad-hoc meeting", self.now())
        if meeting_id:  # keep the id the caller asked for
            self.meetings[meeting_id] = self.meetings.pop(meeting["id"])
            self._sessions[meeting_id] = self._sessions.pop(meeting["id"])
            meeting["id"] = meeting_id
        return meeting

    def _session_for(self, meeting_id: str) -> str:
        sessions = self._sessions.setdefault(meeting_id, [])
        if sessions and self._rng.random() < 0.3:
            return sessions[-1]
        sessions.append(_uuid(self._rng))
        return sessions[-1]

    def _create(
        self,
        *,
        status: str = "UPLOADED",
        size: int | None = None,
        audio: bool | int = False,
        bucket_enabled: bool = True,
        meeting_id: str | None = None,
        meeting_title: str | None = None,
        invoked_time: datetime | str | None = None,
        started_time: datetime | str | None = None,
        stopped_time: datetime | str | None = None,
        **raw_overrides: Any,
    ) -> _Rec:
        rng = self._rng
        now = self.now()
        meeting = self._meeting_for(meeting_id, meeting_title)
        finished = status in ("UPLOADED", "UPLOADING", "ERRORED")
        duration = rng.randint(1, 4) if status == "ERRORED" else rng.randint(60, 3600)
        invoked, started, stopped = self._times(status, finished, duration, invoked_time, started_time, stopped_time, _to_ms(now))
        if size is None:
            size = _size_from_override(raw_overrides.get("file_size"))
        if size is None:
            size = rng.randint(self.min_size, self.max_size) if status == "UPLOADED" else 0
        audio_size = (max(1, size // 8) if audio is True else int(audio)) if audio else None
        rid = str(raw_overrides.pop("id", None) or _uuid(rng))
        raw: dict[str, Any] = {
            "id": rid,
            "audio_download_url": None,
            "download_url": None,
            "download_url_expiry": None,
            "file_size": _json_file_size(status, size, rng),
            "invoked_time": _time_field(invoked_time, invoked),
            "output_file_name": f"{slugify(meeting['title'])}_{invoked:%Y%m%dT%H%M%SZ}.mp4",
            "session_id": self._session_for(meeting["id"]),
            "started_time": _time_field(started_time, started),
            "status": status,
            "stopped_time": _time_field(stopped_time, stopped),
            "meeting": meeting,
            "recording_duration": int((stopped - started).total_seconds()) if stopped and started else None,
            "start_reason": _reason("API_CALL", self.app_id),
            "stop_reason": _stop_reason(status) if stopped else None,
            "storage_config": None,
        }
        raw.update(raw_overrides)
        rec = _Rec(raw=raw, size=size, audio_size=audio_size, bucket_enabled=bucket_enabled, invoked=invoked, stopped=stopped)
        self._recs[rid] = rec
        return rec

    def _times(
        self,
        status: str,
        finished: bool,
        duration: int,
        invoked_in: datetime | str | None,
        started_in: datetime | str | None,
        stopped_in: datetime | str | None,
        now: datetime,
    ) -> tuple[datetime, datetime | None, datetime | None]:
        """Consistent invoked <= started <= stopped <= now, from whatever the caller fixed."""
        invoked = _parse_time(invoked_in)
        invoked = _to_ms(invoked) if invoked else None
        stopped = _parse_time(stopped_in) if finished else None
        stopped = _to_ms(stopped) if stopped else None
        if finished and stopped is None:
            stopped = (invoked + timedelta(seconds=duration + 5)) if invoked else now - timedelta(seconds=60)
            stopped = min(stopped, now - timedelta(seconds=5))
            if invoked is not None:
                stopped = max(stopped, invoked)
        if invoked is None:
            invoked = (stopped - timedelta(seconds=duration + 5)) if stopped else now - timedelta(seconds=300)
        started = _parse_time(started_in)
        started = _to_ms(started) if started else None
        if started is None and status != "INVOKED":
            started = invoked + timedelta(seconds=3)
            if stopped is not None and started > stopped:
                started = invoked
        return invoked, started, stopped

    # -- URL signing -------------------------------------------------------------------------

    def _signature(self, recording_id: str, kind: str, expires: int) -> str:
        message = f"{recording_id}\n{kind}\n{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def _sign(self, rec: _Rec, kind: str, hostport: str, *, lifetime: float | None = None, expired: bool = False) -> tuple[str, int]:
        """(URL, expiry as unix seconds): `lifetime` from now, never past the retention end."""
        now = self._now_ts()
        if lifetime is None:
            override = self.faults.url_lifetime
            lifetime = override if override is not None else self.url_lifetime
        expires = math.ceil(now + lifetime)
        if expired:
            expires = math.floor(now) - 60
        retention_end = rec.retention_end
        if retention_end is not None:
            expires = min(expires, math.floor(retention_end.timestamp()))
        signature = self._signature(rec.id, kind, expires)
        url = f"http://{hostport}/files/{quote(rec.id, safe='')}/{kind}?X-Expires={expires}&X-Signature={signature}"
        return url, expires

    def _urls(self, rec: _Rec, hostport: str, expired: bool) -> dict[str, Any]:
        if not rec.has_file("video"):
            return {"download_url": None, "audio_download_url": None, "download_url_expiry": None}
        video, expires = self._sign(rec, "video", hostport, expired=expired)
        audio = self._sign(rec, "audio", hostport, expired=expired)[0] if rec.has_file("audio") else None
        expiry = iso(datetime.fromtimestamp(expires, tz=timezone.utc))
        return {"download_url": video, "audio_download_url": audio, "download_url_expiry": expiry}

    def _render(self, rec: _Rec, shape: str, hostport: str, *, expired_urls: bool = False) -> dict[str, Any]:
        merged = {**rec.raw, **self._urls(rec, hostport, expired_urls)}
        keys = SHAPES[shape] + tuple(k for k in rec.raw if k not in _KNOWN_KEYS)
        return {key: merged.get(key) for key in keys}

    # -- HTTP dispatch -------------------------------------------------------------------------

    def _dispatch(self, h: _Handler, method: str) -> None:
        split = urlsplit(h.path)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        kind = "file" if path.startswith("/files/") else "control" if path.startswith("/__sim__/") else "api"
        entry = SimRequest(method, path, query, h.headers.get("Range"), kind,
                           authorization="Authorization" in h.headers, if_range=h.headers.get("If-Range"))
        with self._lock:
            self.requests.append(entry)
        h.sim_entry = entry
        self.faults.answering(entry)
        body = h.read_body()
        if kind == "file":
            self._serve_file(h, method, path, query)
        elif kind == "control":
            self._control(h, method, path, body)
        else:
            self._api(h, method, path, query, body)

    # -- API ---------------------------------------------------------------------------------

    def _api(self, h: _Handler, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        if self.faults.consume("slow_answers"):
            time.sleep(self.faults.slow_seconds)
        if not self._authorized(h.headers.get("Authorization")):
            h.send_json(401, _cf_error(10000, "Authentication error"))
            return
        if self._api_fault(h):
            return
        status, payload = self._route(method, path, query, body, h.headers.get("Host") or self.origin.split("//", 1)[1])
        data = json.dumps(payload, ensure_ascii=False).encode()
        if status == 200 and self.faults.consume("broken_json"):
            data = data[: len(data) // 2]
        if self.faults.consume("drop_answers"):
            h.send_bytes(status, data, "application/json; charset=utf-8", drop_after=len(data) // 2)
            return
        h.send_bytes(status, data, "application/json; charset=utf-8")

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), self.token.encode())

    def _api_fault(self, h: _Handler) -> bool:
        """Answer with the first armed API fault; True if one was sent."""
        faults = self.faults
        if faults.consume("forbidden"):
            h.send_json(403, _cf_error(10000, "Authentication error"))
        elif faults.consume("rate_limit"):
            headers = {} if faults.retry_after is None else {"Retry-After": str(faults.retry_after)}
            h.send_json(429, _cf_error(971, "Please wait and consider throttling your request speed"), headers)
        elif faults.consume("server_errors"):
            status = faults.server_error_status
            if faults.server_error_html:
                h.send_bytes(status, _gateway_page(status), "text/html; charset=utf-8")
            else:
                h.send_json(status, _cf_error(10002, "An unknown error has occurred"))
        elif faults.consume("html_answers"):
            h.send_bytes(faults.html_status, _challenge_page(), "text/html; charset=utf-8")
        elif faults.consume("unsuccessful"):
            h.send_json(200, _rtk_error(500, "Simulated failure: the request could not be processed"))
        else:
            return False
        return True

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes, hostport: str) -> tuple[int, dict[str, Any]]:
        base = f"{API_PREFIX}/accounts/{self.account_id}/realtime/kit/{self.app_id}/recordings"
        if path != base and not path.startswith(base + "/"):
            return 404, _cf_error(7003, "Could not route to " + path + ", perhaps your object identifier is invalid?")
        rest = path[len(base) :].strip("/")
        try:
            payload = _json_body(body) if method in ("POST", "PUT") else {}
            with self._lock:
                return self._route_recordings(method, rest, query, payload, hostport)
        except _BadRequest as exc:
            return 400, _rtk_error(400, str(exc))

    def _route_recordings(self, method: str, rest: str, query: dict[str, list[str]], payload: dict[str, Any], hostport: str) -> tuple[int, dict[str, Any]]:
        if rest == "" and method == "GET":
            return 200, self._list(query, hostport)
        if rest == "" and method == "POST":
            return self._start(payload, hostport)
        if rest == "track" and method == "POST":
            return self._start_track(payload)
        if rest.startswith("active-recording/") and method == "GET":
            return self._active(rest.split("/", 1)[1], hostport)
        if rest and "/" not in rest and method == "GET":
            rec = self._recs.get(rest)
            if rec is None:
                return 404, _rtk_error(404, "Recording not found")
            return 200, {"success": True, "data": self._render(rec, "detail", hostport)}
        if rest and "/" not in rest and method == "PUT":
            return self._change_status(rest, payload, hostport)
        return 404, _cf_error(7003, f"No route for {method} {API_PREFIX}/.../recordings/{rest}")

    def _list(self, query: dict[str, list[str]], hostport: str) -> dict[str, Any]:
        matches = sorted(self._filtered(query), key=lambda r: (r.invoked, r.id))
        if _one(query, "sort_order", "DESC").upper() == "DESC":
            matches.reverse()
        page_no = max(1, _int_param(query, "page_no", 1))
        per_page = _int_param(query, "per_page", DEFAULT_PER_PAGE) or DEFAULT_PER_PAGE
        per_page = min(per_page, self.max_per_page)
        offset = (page_no - 1) * per_page
        page = matches[offset : offset + per_page]
        expired_urls = self.faults.consume("expired_list_urls")
        return {
            "data": [self._render(r, "list", hostport, expired_urls=expired_urls) for r in page],
            "paging": {"end_offset": offset + len(page), "start_offset": offset + 1, "total_count": len(matches)},
            "success": True,
        }

    def _filtered(self, query: dict[str, list[str]]) -> list[_Rec]:
        statuses = {s.strip().upper() for v in query.get("status", []) for s in v.split(",") if s.strip()}
        bad = statuses - set(STATUSES)
        if bad:
            raise _BadRequest(f"invalid status: {', '.join(sorted(bad))}")
        sort_by = _one(query, "sort_by", "invokedTime")
        if sort_by != "invokedTime":
            raise _BadRequest("sort_by must be invokedTime")
        if _one(query, "sort_order", "DESC").upper() not in ("ASC", "DESC"):
            raise _BadRequest("sort_order must be ASC or DESC")
        start, end = _time_param(query, "start_time"), _time_param(query, "end_time")
        meeting_id = _one(query, "meeting_id", "")
        search = _one(query, "search", "").strip().lower()
        expired = _bool_param(query, "expired")
        now = self.now()
        result = []
        for rec in self._recs.values():
            meeting = rec.raw.get("meeting") or {}
            if statuses and rec.raw.get("status") not in statuses:
                continue
            if meeting_id and meeting.get("id") != meeting_id:
                continue
            if start and rec.invoked < start or end and rec.invoked > end:
                continue
            if search and search not in str(meeting.get("id", "")).lower() and search not in str(meeting.get("title", "")).lower():
                continue
            is_expired = rec.retention_end is not None and rec.retention_end < now
            if expired is not None and is_expired != expired:
                continue
            result.append(rec)
        return result

    def _start(self, payload: dict[str, Any], hostport: str) -> tuple[int, dict[str, Any]]:
        meeting_id = payload.get("meeting_id")
        if not isinstance(meeting_id, str) or not meeting_id:
            raise _BadRequest("meeting_id is required")
        running = [r for r in self._recs.values() if (r.raw.get("meeting") or {}).get("id") == meeting_id and r.raw.get("status") in ("INVOKED", "RECORDING", "PAUSED")]
        if running and not payload.get("allow_multiple_recordings"):
            return 409, _rtk_error(409, "A recording is already running for this meeting")
        bucket = payload.get("realtimekit_bucket_config") or {}
        audio = payload.get("audio_config") or {}
        storage = payload.get("storage_config")
        rec = self._create(
            status="RECORDING",
            meeting_id=meeting_id,
            invoked_time=self.now(),
            audio=bool(isinstance(audio, dict) and audio.get("export_file")),
            bucket_enabled=not (isinstance(bucket, dict) and bucket.get("enabled") is False),
        )
        if isinstance(storage, dict):
            rec.raw["storage_config"] = {k: v for k, v in storage.items() if k not in _WRITE_ONLY_STORAGE_KEYS}
        prefix = payload.get("file_name_prefix")
        if isinstance(prefix, str) and prefix:
            rec.raw["output_file_name"] = f"{prefix}_{rec.invoked:%Y%m%dT%H%M%SZ}.mp4"
        return 200, {"success": True, "data": self._render(rec, "detail", hostport)}

    def _active(self, meeting_id: str, hostport: str) -> tuple[int, dict[str, Any]]:
        running = [r for r in self._recs.values() if (r.raw.get("meeting") or {}).get("id") == meeting_id and r.raw.get("status") in ("INVOKED", "RECORDING", "PAUSED")]
        if not running:
            return 404, _rtk_error(404, "No active recording found for this meeting")
        latest = max(running, key=lambda r: r.invoked)
        return 200, {"data": self._render(latest, "active", hostport), "success": True}

    def _change_status(self, recording_id: str, payload: dict[str, Any], hostport: str) -> tuple[int, dict[str, Any]]:
        rec = self._recs.get(recording_id)
        if rec is None:
            return 404, _rtk_error(404, "Recording not found")
        action = payload.get("action")
        allowed = {"pause": ("RECORDING",), "resume": ("PAUSED",), "stop": ("INVOKED", "RECORDING", "PAUSED")}
        if action not in allowed:
            raise _BadRequest("action must be one of stop, pause, resume")
        if rec.raw.get("status") not in allowed[action]:
            raise _BadRequest(f"cannot {action} a recording in status {rec.raw.get('status')}")
        if action == "pause":
            rec.raw["status"] = "PAUSED"
        elif action == "resume":
            rec.raw["status"] = "RECORDING"
        else:
            self._finish(rec)
        return 200, {"success": True, "data": self._render(rec, "detail", hostport)}

    def _finish(self, rec: _Rec) -> None:
        """Stop: the file is "uploaded" at once, with a generated size."""
        now = _to_ms(self.now())
        rec.stopped = now
        rec.size = self._rng.randint(self.min_size, self.max_size)
        if rec.audio_size is not None:
            rec.audio_size = max(1, rec.size // 8)
        started = _parse_time(rec.raw.get("started_time")) or rec.invoked
        rec.raw.update(
            status="UPLOADED",
            stopped_time=iso(now),
            file_size=rec.size,
            recording_duration=max(0, int((now - started).total_seconds())),
            stop_reason=_reason("API_CALL", self.app_id),
        )

    def _start_track(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        meeting_id = payload.get("meeting_id")
        layers = payload.get("layers")
        if not isinstance(meeting_id, str) or not meeting_id:
            raise _BadRequest("meeting_id is required")
        if not isinstance(layers, dict) or not layers:
            raise _BadRequest("layers must be a non-empty object")
        track = {
            "id": _uuid(self._rng),
            "meeting_id": meeting_id,
            "status": "INVOKED",
            "layers": sorted(layers),
            "invoked_time": iso(self.now()),
        }
        self.track_recordings.append(track)
        return 200, {"success": True, "data": track}

    # -- files ---------------------------------------------------------------------------------

    def _serve_file(self, h: _Handler, method: str, path: str, query: dict[str, list[str]]) -> None:
        match = re.fullmatch(r"/files/([^/]+)/(video|audio)", path)
        if method not in ("GET", "HEAD") or match is None:
            h.send_xml(404 if match is None else 405, "NoSuchKey" if match is None else "MethodNotAllowed", "Not found", head=method == "HEAD")
            return
        head = method == "HEAD"
        recording_id, kind = match.group(1), match.group(2)
        expires_text, signature = _one(query, "X-Expires", ""), _one(query, "X-Signature", "")
        if not expires_text.isdigit() or not signature:
            h.send_xml(403, "AccessDenied", "Query-string authentication requires the Signature and Expires parameters", head=head)
            return
        expires = int(expires_text)
        if not hmac.compare_digest(signature, self._signature(recording_id, kind, expires)):
            h.send_xml(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.", head=head)
            return
        if self._now_ts() > expires:
            h.send_xml(403, "AccessDenied", "Request has expired", head=head)
            return
        with self._lock:
            rec = self._recs.get(recording_id)
            available = rec is not None and rec.has_file(kind)
            mismatch = self.faults.size_mismatch.get(recording_id, 0) if rec and available else 0
            length = max(0, rec.file_length(kind) + mismatch) if rec and available else 0
            created = (rec.stopped or rec.invoked) if rec and available else None
        if not available:
            h.send_xml(404, "NoSuchKey", "The specified key does not exist.", head=head)
            return
        if mismatch:
            self.faults.note("size_mismatch")
        if not head and self.faults.consume("file_server_errors"):
            h.send_xml(503, "SlowDown", "Please reduce your request rate.", head=head)
            return
        if not head and self.faults.consume("slow_first_byte"):
            time.sleep(self.faults.first_byte_seconds)  # nothing at all is sent meanwhile
        self._send_file(h, recording_id, kind, length, created, head)

    def _validators(self, recording_id: str, kind: str, length: int, created: datetime, version: int) -> dict[str, str]:
        """ETag and Last-Modified as an object store gives them: both change when the file does."""
        faults = self.faults
        if faults.stale_validators:
            version = 0
        tag = hashlib.md5(f"{recording_id}/{kind}/{length}/{version}".encode(), usedforsecurity=False).hexdigest()
        modified = created + timedelta(minutes=version)
        headers = {"ETag": f'"{tag}"', "Last-Modified": email.utils.format_datetime(modified.astimezone(timezone.utc), usegmt=True)}
        wanted = {"both": ("ETag", "Last-Modified"), "etag": ("ETag",), "last-modified": ("Last-Modified",), "none": ()}
        return {name: headers[name] for name in wanted[faults.validators]}

    def _send_file(self, h: _Handler, recording_id: str, kind: str, length: int, created: datetime, head: bool) -> None:
        faults = self.faults
        version = self.file_version(recording_id, kind)
        variant = self._variant(recording_id, kind, version)
        validators = self._validators(recording_id, kind, length, created, version)
        content_type = "video/mp4" if kind == "video" else "audio/mpeg"
        if version and faults.stale_validators:
            faults.note("stale_validators")
        if faults.gzip_bodies and not head:
            faults.note("gzip_bodies")
            self._send_gzip(h, recording_id, variant, length, content_type, validators)
            return
        status, start, end = 200, 0, length
        range_header = h.headers.get("Range")
        if range_header and faults.ignore_range:
            faults.note("ignore_range")
            range_header = None
        # If-Range: the Range holds only while the file is the one the client began (RFC 9110 13.1.5).
        if_range_holds = _if_range_holds(h.headers.get("If-Range"), validators)
        if range_header and not if_range_holds and faults.ignore_if_range:
            faults.note("ignore_if_range")
        if range_header and (faults.ignore_if_range or if_range_holds):
            parsed = _parse_range(range_header, length)
            if parsed == "unsatisfiable":
                h.send_xml(416, "InvalidRange", "The requested range is not satisfiable", head=head, headers={"Content-Range": f"bytes */{length}"})
                return
            if isinstance(parsed, tuple):
                status, (start, end) = 206, parsed
        headers = {"Accept-Ranges": "bytes", **validators}
        if status == 206:
            if start > 0 and faults.consume("shift_ranges"):  # the same length, from elsewhere
                span = end - start
                start = min(max(0, start + faults.range_shift), max(0, length - 1))
                end = min(length, start + span)
            total = "*" if faults.total_unknown else str(length)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        size = end - start
        # One fault per answer: a drop, or else a clean early end.
        drop_at = None
        if not head and size > faults.drop_after_bytes and faults.consume("drop_downloads"):
            drop_at = faults.drop_after_bytes
        early = not head and drop_at is None and size > faults.end_early_after and faults.consume("end_early")
        declared = None if faults.chunked or early else max(0, size + faults.wrong_content_length)
        extra = faults.extra_bytes if declared is None and drop_at is None and not early else 0
        for name in ("total_unknown", "chunked", "wrong_content_length", "throttle_bps", "extra_bytes"):
            if getattr(faults, name) and (name != "total_unknown" or status == 206) and (name != "extra_bytes" or extra):
                faults.note(name)
        h.start_body(status, declared, content_type, headers, chunked=faults.chunked)
        if head:
            return
        if faults.wrong_content_length:
            h.close_connection = True  # the client cannot know where this body ends
        stop = min(x for x in (size, drop_at, faults.end_early_after if early else None) if x is not None)
        if drop_at is not None and faults.change_on_drop:
            # Changed before the cut (this answer keeps the old bytes): a retry always sees it.
            faults.note("change_on_drop")
            self.change_file(recording_id, kind)
        chunk = max(1024, faults.throttle_bps // 20) if faults.throttle_bps > 0 else 1 << 20
        h.stream(self._blocks.windows(recording_id, variant, start, start + stop + extra, chunk), throttle_bps=faults.throttle_bps,
                 chunked=faults.chunked, cut=drop_at is not None)

    def _send_gzip(self, h: _Handler, recording_id: str, variant: str, length: int, content_type: str,
                   validators: dict[str, str]) -> None:
        """The whole file gzip-encoded (200, Range ignored), as a misconfigured CDN sends it."""
        if length > FILE_BYTES_LIMIT:
            raise ValueError("gzip_bodies is for small files")
        raw = b"".join(bytes(w) for w in self._blocks.windows(recording_id, variant, 0, length, 1 << 20))
        body = gzip.compress(raw, compresslevel=1, mtime=0)
        headers = {"Accept-Ranges": "bytes", "Content-Encoding": "gzip", "Vary": "Accept-Encoding", **validators}
        h.start_body(200, None if self.faults.chunked else len(body), content_type, headers, chunked=self.faults.chunked)
        chunk = max(1024, self.faults.throttle_bps // 20) if self.faults.throttle_bps > 0 else 1 << 20
        view = memoryview(body)
        h.stream((view[i : i + chunk] for i in range(0, len(body), chunk)), throttle_bps=self.faults.throttle_bps,
                 chunked=self.faults.chunked, cut=False)

    # -- control endpoints -----------------------------------------------------------------------

    def _control(self, h: _Handler, method: str, path: str, body: bytes) -> None:
        try:
            payload = _json_body(body) if method == "POST" else {}
            result = self._control_action(method, path, payload)
        except (_BadRequest, TypeError, ValueError, KeyError) as exc:
            h.send_json(400, {"success": False, "error": {"code": 400, "message": str(exc)}})
            return
        if result is None:
            h.send_json(404, {"success": False, "error": {"code": 404, "message": "unknown control endpoint"}})
        else:
            h.send_json(200, {"success": True, **result})

    def _control_action(self, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if path == "/__sim__/state" and method == "GET":
            return {"state": self.state()}
        if path == "/__sim__/faults" and method == "POST":
            if payload.pop("reset", False):
                self.faults.reset()
            self.faults.set(**payload)
            return {"faults": self.faults.to_dict()}
        if path == "/__sim__/recordings" and method == "POST":
            return {"data": self.add_recording(**payload)}
        if path == "/__sim__/advance" and method == "POST":
            self.advance(float(payload["seconds"]))
            return {"now": iso(self.now())}
        return None

    def state(self) -> dict[str, Any]:
        with self._lock:
            by_status: dict[str, int] = {}
            for rec in self._recs.values():
                by_status[str(rec.raw.get("status"))] = by_status.get(str(rec.raw.get("status")), 0) + 1
            return {
                "base_url": self.base_url,
                "now": iso(self.now()),
                "recordings": len(self._recs),
                "by_status": by_status,
                "requests": len(self.requests),
                "faults": self.faults.to_dict(),
            }


# ---------------------------------------------------------------------------------------------
# Bodies and parameters
# ---------------------------------------------------------------------------------------------


def _cf_error(code: int, message: str) -> dict[str, Any]:
    """Cloudflare's API envelope (auth, routing, rate limits, gateway)."""
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def _rtk_error(code: int, message: str) -> dict[str, Any]:
    """RealtimeKit's own envelope."""
    return {"success": False, "error": {"code": code, "message": message}}


def _gateway_page(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def _challenge_page() -> bytes:
    return (
        "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title>"
        "<style>body{font-family:sans-serif}</style><script>window._cf_chl_opt={cvId:'3'};</script>"
        "</head><body><h1>Checking your browser before accessing the API</h1>"
        "<p>This process is automatic. Your browser will redirect to your requested content shortly.</p>"
        "</body></html>"
    ).encode()


def _json_body(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise _BadRequest("the JSON body must be an object")
    return payload


def _one(query: dict[str, list[str]], name: str, default: str) -> str:
    values = query.get(name)
    return values[-1] if values else default


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    text = _one(query, name, "")
    if text == "":
        return default
    try:
        return int(float(text))
    except ValueError:
        raise _BadRequest(f"{name} must be a number") from None


def _bool_param(query: dict[str, list[str]], name: str) -> bool | None:
    text = _one(query, name, "").lower()
    if text == "":
        return None
    if text not in ("true", "false"):
        raise _BadRequest(f"{name} must be true or false")
    return text == "true"


def _time_param(query: dict[str, list[str]], name: str) -> datetime | None:
    text = _one(query, name, "")
    if not text:
        return None
    parsed = _parse_time(text)
    if parsed is None:
        raise _BadRequest(f"{name} must be an ISO 8601 timestamp")
    return parsed


def _parse_range(header: str, length: int) -> tuple[int, int] | str | None:
    """(start, end-exclusive), "unsatisfiable", or None to ignore the header (as RFC 9110 allows)."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if match is None or match.group(1) == match.group(2) == "":
        return None  # multi-range or garbage: serve the whole body
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or length == 0:
            return "unsatisfiable"
        return max(0, length - suffix), length
    start = int(first)
    end = length if last == "" else min(int(last) + 1, length)
    if start >= length or (last != "" and int(last) < start):
        return "unsatisfiable"
    return start, end


def _if_range_holds(value: str | None, validators: dict[str, str]) -> bool:
    """True when there is no If-Range, or it names the file as it is now (a strong ETag, or the
    exact Last-Modified date); a weak ETag never matches."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith(("W/", '"')):
        return not value.startswith("W/") and value == validators.get("ETag")
    return value == validators.get("Last-Modified")


def _size_from_override(file_size: Any) -> int | None:
    """The true size when a test only gave the JSON file_size (number or numeric string)."""
    if isinstance(file_size, bool):
        return None
    try:
        value = float(file_size)
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) and value >= 0 else None


def _json_file_size(status: str, size: int, rng: random.Random) -> int | None:
    if status == "UPLOADED":
        return size
    if status == "UPLOADING":
        return rng.choice((0, None))  # not known until the upload is done
    return None


def _time_field(given: datetime | str | None, computed: datetime | None) -> str | None:
    return given if isinstance(given, str) else iso(computed)


def _reason(reason: str, app_id: str) -> dict[str, Any]:
    caller = {"name": "RealtimeKit_test", "type": "ORGANIZATION", "user_Id": str(uuid.uuid5(uuid.NAMESPACE_URL, app_id))}
    return {"caller": caller, "reason": reason}


def _stop_reason(status: str) -> dict[str, Any]:
    if status == "ERRORED":
        return {"reason": "INTERNAL_ERROR"}
    return {"reason": "ALL_PEERS_LEFT"}


# ---------------------------------------------------------------------------------------------
# The HTTP server
# ---------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], simulator: Simulator) -> None:
        self.simulator = simulator
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    """Transport only: parses and writes; all decisions are the Simulator's."""

    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = "rtk-sim"
    sys_version = ""
    server: _Server
    sim_entry: SimRequest | None = None

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle plus the peer's delayed ACK each
        # keep-alive answer would stall ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError) as exc:
            # A keep-alive client closed its socket while we waited for its next request.
            log.debug("client connection reset: %s", exc)

    def _handle(self, method: str) -> None:
        try:
            self.server.simulator._dispatch(self, method)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The client went away mid-answer (timeouts, aborted downloads): normal in tests.
            log.debug("client disconnected: %s", exc)
            self.close_connection = True
        except Exception:
            # A bug in the simulator: log it and answer 500 so the test sees a clear failure.
            log.exception("simulator failed on %s %s", method, self.path.split("?", 1)[0])
            self.close_connection = True
            if self.sim_entry is not None and self.sim_entry.status is None:
                self.send_json(500, _cf_error(10002, "simulator internal error (see its log)"))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True  # not supported: don't misread the next request
            return b""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _note(self, status: int, sent: int = 0) -> None:
        if self.sim_entry is not None:
            self.sim_entry.status = status
            self.sim_entry.bytes_sent += sent

    def start_body(self, status: int, length: int | None, content_type: str, headers: dict[str, str] | None = None,
                   *, chunked: bool = False) -> None:
        """Status and headers. The body is framed by Content-Length, by chunked coding, or (length
        None, not chunked) by closing the connection after it."""
        sent = {"Content-Type": content_type, **(headers or {})}
        if chunked:
            sent["Transfer-Encoding"] = "chunked"
        elif length is None:
            sent["Connection"] = "close"
            self.close_connection = True
        else:
            sent["Content-Length"] = str(length)
        self.send_response(status)
        for name, value in sent.items():
            self.send_header(name, value)
        self.end_headers()
        self._note(status)
        if self.sim_entry is not None:
            self.sim_entry.headers_sent = sent

    def send_bytes(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None, *, drop_after: int | None = None, head: bool = False) -> None:
        self.start_body(status, len(data), content_type, headers)
        if head:
            return
        if drop_after is not None:
            self.wfile.write(data[:drop_after])
            self._note(status, drop_after)
            self._drop()
            return
        self.wfile.write(data)
        self._note(status, len(data))

    def send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload, ensure_ascii=False).encode(), "application/json; charset=utf-8", headers)

    def send_xml(self, status: int, code: str, message: str, *, head: bool = False, headers: dict[str, str] | None = None) -> None:
        """An S3-style error document."""
        request_id = secrets.token_hex(8).upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        self.send_bytes(status, body, "application/xml", headers, head=head)

    def stream(self, buffers: Iterable[memoryview | bytes], *, throttle_bps: int, chunked: bool, cut: bool) -> None:
        """Write the body's buffers, optionally throttled and in chunked coding; `cut`: then cut the
        connection as if it broke (the chunked terminator is never sent)."""
        status = self.sim_entry.status if self.sim_entry and self.sim_entry.status else 200
        for window in buffers:
            if chunked:
                self.wfile.write(b"%x\r\n" % len(window) + bytes(window) + b"\r\n")
            else:
                self.wfile.write(window)
            self._note(status, len(window))
            if throttle_bps > 0:
                time.sleep(len(window) / throttle_bps)
        if cut:
            self._drop()
        elif chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        """Cut the connection with the body incomplete: the client sees a broken read."""
        self.close_connection = True
        if self.sim_entry is not None:
            self.sim_entry.cut = True
        # The peer may already be gone; either way the socket is finished.
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------------------------
# CLI: `rtk-archive simulate`
# ---------------------------------------------------------------------------------------------


MAX_GENERATED_SIZE = 1 << 40  # 1 TiB: file bodies are computed, never stored, but stay sane


def _size_arg(text: str) -> int:
    """Bytes, optionally with a unit: 65536, 64KiB, 4MiB, 2GiB, 10MB (at most 1 TiB)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?i?B?)?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 65536, 64KiB, 4MiB)")
    unit = (match.group(2) or "").upper().rstrip("B")
    factors = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}
    if unit not in factors:
        raise argparse.ArgumentTypeError(f"unknown unit in {text!r}")
    value = float(match.group(1)) * factors[unit]
    if not value <= MAX_GENERATED_SIZE:  # also refuses inf and nan
        raise argparse.ArgumentTypeError(f"{text!r} is too large: at most 1TiB")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.cli.parser import bounded

    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=bounded(int, 0, 65535, "a port number"), default=8787,
                        help="port to listen on, 0 for any free one (default 8787)")
    parser.add_argument("--recordings", type=bounded(int, 0, 100_000, "a whole number"), default=20, metavar="N",
                        help="recordings to generate, 0 to 100000 (default 20)")
    parser.add_argument("--seed", type=bounded(int, 0, 2**63 - 1, "a whole number"), default=1,
                        help="seed for the generated data, ids and token (default 1)")
    parser.add_argument("--url-lifetime", type=bounded(float, 1, 7 * 86400, "a number of seconds"), default=3600,
                        metavar="SECONDS", help="lifetime of presigned URLs, 1 s to 7 days (default 3600)")
    parser.add_argument("--min-size", type=_size_arg, default=64 * 1024, metavar="BYTES", help="smallest generated file (default 64KiB)")
    parser.add_argument("--max-size", type=_size_arg, default=4 * 1024 * 1024, metavar="BYTES", help="largest generated file (default 4MiB)")
    parser.add_argument("--days", type=bounded(float, 0, 3650, "a number of days"), default=10,
                        help="spread recordings over this many past days, 0 to 3650 (default 10)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; print a [source] block to paste into a config."""
    from pipeline.errors import ConfigError

    if args.min_size > args.max_size:
        raise ConfigError(f"--min-size ({args.min_size} bytes) is larger than --max-size ({args.max_size} bytes)")
    simulator = Simulator(
        host=args.host,
        port=args.port,
        recordings=args.recordings,
        seed=args.seed,
        url_lifetime=args.url_lifetime,
        min_size=args.min_size,
        max_size=args.max_size,
        days=getattr(args, "days", 10),
    )
    try:
        simulator.start()
    except OSError as exc:  # the port is taken, the address is not this machine's, ...
        raise ConfigError(f"simulate: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    previous = _install_stop_handlers(stop)
    try:
        with simulator:
            print(_source_block(simulator), flush=True)
            state = simulator.state()
            print(
                f"RealtimeKit simulator: {state['recordings']} recordings {state['by_status']} at "
                f"{simulator.base_url}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            while not stop.wait(0.5):
                pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _source_block(simulator: Simulator) -> str:
    return "\n".join(
        [
            "[source]",
            f'base_url = "{simulator.base_url}"',
            f'account_id = "{simulator.account_id}"',
            f'app_id = "{simulator.app_id}"',
            f'api_token = "{simulator.token}"',
        ]
    )


def _install_stop_handlers(stop: threading.Event) -> dict[int, Any]:
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous  # signals can only be handled on the main thread
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    return previous
