"""The simulated account: its recordings and meetings, the simulator's clock, and the true bytes
of every file (including files changed later), behind one lock."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from .content import Blocks
from .records import Rec, create, generate

STATUSES = ("INVOKED", "RECORDING", "UPLOADING", "UPLOADED", "ERRORED", "PAUSED")
RUNNING = ("INVOKED", "RECORDING", "PAUSED")
KINDS = ("video", "audio")
FILE_BYTES_LIMIT = 64 * 1024 * 1024  # file_bytes() is for tests: refuse to build huge buffers


class World:
    """Recordings, meetings and the clock, behind one lock. Raw dicts are live objects."""

    def __init__(self, *, seed: int, app_id: str, recordings: int, min_size: int, max_size: int, days: float) -> None:
        if min_size < 0 or max_size < min_size:
            raise ValueError("need 0 <= min_size <= max_size")
        self.seed = seed
        self.app_id = app_id
        self.min_size = min_size
        self.max_size = max_size
        self.days = days
        self.meetings: dict[str, dict[str, Any]] = {}
        self.recs: dict[str, Rec] = {}
        self._in_order: list[Rec] | None = None  # self.recs in the API's order, until one comes or goes
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.sessions: dict[str, list[str]] = {}  # meeting id -> its session ids
        self._blocks = Blocks()
        self._sha_cache: dict[tuple[str, str, int], str] = {}
        self._versions: dict[tuple[str, str], int] = {}  # files changed since created (change_file)
        self._time_offset = 0.0
        generate(self, recordings)

    # -- time ----------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ts(), tz=timezone.utc)

    def now_ts(self) -> float:
        return time.time() + self._time_offset

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward (URL expiry, retention, `expired`) without sleeping."""
        with self.lock:
            self._time_offset += seconds

    # -- recordings ----------------------------------------------------------------------------

    @property
    def recordings(self) -> list[dict[str, Any]]:
        """The stored raw dicts (live objects; URLs are null here, they are signed per answer)."""
        with self.lock:
            return [rec.raw for rec in self.recs.values()]

    def recording(self, recording_id: str) -> dict[str, Any]:
        with self.lock:
            return self.recs[recording_id].raw

    def add_recording(self, **overrides: Any) -> dict[str, Any]:
        """Create one recording directly. Special keys: status, size, audio (bool or bytes),
        bucket_enabled, meeting_id, meeting_title, invoked_time/started_time/stopped_time
        (datetime, or a string stored as is). Any other key is written into the raw JSON as is
        (e.g. file_size="2044680", output_file_name="../../etc/passwd", unknown extra fields)."""
        with self.lock:
            return create(self, **overrides).raw

    def remove_recording(self, recording_id: str) -> None:
        with self.lock:
            del self.recs[recording_id]
            self.order_changed()

    def in_order(self) -> list[Rec]:
        """Every recording by invokedTime, then id (the list endpoint's order), sorted once per
        change of who is there, not per page: 100,000 recordings are a thousand pages."""
        with self.lock:
            if self._in_order is None:
                self._in_order = sorted(self.recs.values(), key=lambda r: (r.invoked, r.id))
            return self._in_order

    def order_changed(self) -> None:
        """A recording was added or removed (call with the lock held)."""
        self._in_order = None

    def has_file(self, recording_id: str, kind: str = "video") -> bool:
        """True if RealtimeKit's bucket holds this file (UPLOADED, bucket enabled, audio exported)."""
        with self.lock:
            return self.recs[recording_id].has_file(kind)

    def retention_end(self, recording_id: str) -> datetime | None:
        """stopped_time + 7 days: no URL of this recording is valid after it."""
        with self.lock:
            return self.recs[recording_id].retention_end

    def running(self, meeting_id: str) -> list[Rec]:
        """The meeting's recordings that are invoked, recording or paused."""
        return [r for r in self.recs.values() if r.meeting_id == meeting_id and r.raw.get("status") in RUNNING]

    # -- file contents -------------------------------------------------------------------------

    def file_size(self, recording_id: str, kind: str = "video") -> int:
        with self.lock:
            return self.recs[recording_id].file_length(kind)

    def expected_sha256(self, recording_id: str, kind: str = "video", version: int | None = None) -> str:
        """SHA-256 of the true file (file_size bytes, whatever size_mismatch serves) as it is now
        (or as it was at `version`: 0 is the file as created; see change_file)."""
        length = self.file_size(recording_id, kind)
        key = (recording_id, self.variant(recording_id, kind, version), length)
        with self.lock:
            cached = self._sha_cache.get(key)
        if cached is None:
            cached = self._blocks.sha256(key[0], key[1], length)
            with self.lock:
                self._sha_cache[key] = cached
        return cached

    def file_bytes(self, recording_id: str, kind: str = "video", start: int = 0, end: int | None = None,
                   version: int | None = None) -> bytes:
        """Bytes [start, end) of the true file (now, or at `version`). For tests: at most 64 MiB."""
        length = self.file_size(recording_id, kind)
        end = length if end is None else min(end, length)
        if end - start > FILE_BYTES_LIMIT:
            raise ValueError("file_bytes() is for small files; use expected_sha256() for big ones")
        return self._blocks.read(recording_id, self.variant(recording_id, kind, version), start, end)

    def file_windows(self, recording_id: str, variant: str, start: int, end: int, max_chunk: int) -> Iterator[memoryview]:
        """The bytes [start, end) of a file variant, as the file server streams them."""
        return self._blocks.windows(recording_id, variant, start, end, max_chunk)

    def change_file(self, recording_id: str, kind: str = "video") -> int:
        """Replace the file's bytes under the same URL (same size, other bytes), as an overwritten
        object or a CDN serving another origin would; its ETag and Last-Modified change too
        unless the stale_validators fault is on. Returns the new version."""
        with self.lock:
            version = self._versions.get((recording_id, kind), 0) + 1
            self._versions[(recording_id, kind)] = version
        return version

    def file_version(self, recording_id: str, kind: str = "video") -> int:
        with self.lock:
            return self._versions.get((recording_id, kind), 0)

    def variant(self, recording_id: str, kind: str, version: int | None = None) -> str:
        """The content key of a file version (version 0 keeps the original bytes)."""
        if version is None:
            version = self.file_version(recording_id, kind)
        return kind if version == 0 else f"{kind}#v{version}"

    def by_status(self) -> dict[str, int]:
        with self.lock:
            counts: dict[str, int] = {}
            for rec in self.recs.values():
                counts[str(rec.raw.get("status"))] = counts.get(str(rec.raw.get("status")), 0) + 1
            return counts
