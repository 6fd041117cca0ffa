"""Making up recordings and meetings as the API shows them: a seeded mix of statuses, sizes and
times for a new world, one recording at a time for tests, and what stopping one changes."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from pipeline.realtimekit import RETENTION, format_api_time, parse_api_time

# The World (world.py) these functions create recordings in: not imported (it imports this
# module); any object with its attributes (rng, now, meetings, sessions, recs...) does.
World = Any

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


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with milliseconds and Z, like the API (None stays None)."""
    return None if value is None else format_api_time(value)


def parse_time(value: Any) -> datetime | None:
    """A datetime or an ISO 8601 string as an aware datetime; None for anything else."""
    if not isinstance(value, (str, datetime)):
        return None
    try:
        return parse_api_time(value)
    except ValueError:
        return None


def to_ms(value: datetime) -> datetime:
    """Drop sub-millisecond digits so stored times equal what the JSON shows (filters compare them)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def slugify(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug or "meeting"


def new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def seeded_hex(label: str, seed: int, length: int) -> str:
    return hashlib.sha256(f"rtk-sim/{label}/{seed}".encode()).hexdigest()[:length]


def reason(why: str, app_id: str) -> dict[str, Any]:
    """A start_reason / stop_reason given by the app itself (an API call)."""
    caller = {"name": "RealtimeKit_test", "type": "ORGANIZATION", "user_Id": str(uuid.uuid5(uuid.NAMESPACE_URL, app_id))}
    return {"caller": caller, "reason": why}


@dataclasses.dataclass
class Rec:
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
    def meeting_id(self) -> Any:
        return (self.raw.get("meeting") or {}).get("id")

    @property
    def retention_end(self) -> datetime | None:
        return self.stopped + RETENTION if self.stopped else None

    def has_file(self, kind: str) -> bool:
        if self.raw.get("status") != "UPLOADED" or not self.bucket_enabled or self.stopped is None:
            return False
        return kind == "video" or (kind == "audio" and self.audio_size is not None)

    def file_length(self, kind: str) -> int:
        return self.size if kind == "video" else (self.audio_size or 0)


def generate(world: World, count: int) -> None:
    """`count` recordings: mostly UPLOADED, one of each other status per 20, spread over `days`."""
    if count <= 0:
        return
    rng = world.rng
    now = world.now()
    meeting_count = max(1, min(len(MEETING_TITLES), (count + 3) // 4))
    meetings = [_new_meeting(world, title, now) for title in MEETING_TITLES[:meeting_count]]
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
            invoked = now - timedelta(seconds=world.days * 86400 * (1 - fraction))
        else:
            invoked = now - timedelta(seconds=rng.uniform(120, 3600))
        extras: dict[str, Any] = {}
        if status == "UPLOADED":
            extras["audio"] = uploaded_rank % 3 == 1
            extras["bucket_enabled"] = uploaded_rank % 10 != 7
            if uploaded_rank % 4 == 3 or not extras["bucket_enabled"]:
                extras["storage_config"] = {"type": "aws", "bucket": "customer-recordings", "region": "us-east-1", "path": "rtk"}
            uploaded_rank += 1
        create(world, status=status, meeting_id=meeting["id"], invoked_time=invoked, **extras)


def create(
    world: World,
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
) -> Rec:
    """A new recording in `world` (see World.add_recording); call with the world's lock held."""
    rng = world.rng
    now = world.now()
    meeting = _meeting_for(world, meeting_id, meeting_title)
    finished = status in ("UPLOADED", "UPLOADING", "ERRORED")
    duration = rng.randint(1, 4) if status == "ERRORED" else rng.randint(60, 3600)
    invoked, started, stopped = _times(status, finished, duration, invoked_time, started_time, stopped_time, to_ms(now))
    if size is None:
        size = _size_from_override(raw_overrides.get("file_size"))
    if size is None:
        size = rng.randint(world.min_size, world.max_size) if status == "UPLOADED" else 0
    audio_size = (max(1, size // 8) if audio is True else int(audio)) if audio else None
    rid = str(raw_overrides.pop("id", None) or new_uuid(rng))
    raw: dict[str, Any] = {
        "id": rid,
        "audio_download_url": None,
        "download_url": None,
        "download_url_expiry": None,
        "file_size": _json_file_size(status, size, rng),
        "invoked_time": _time_field(invoked_time, invoked),
        "output_file_name": f"{slugify(meeting['title'])}_{invoked:%Y%m%dT%H%M%SZ}.mp4",
        "session_id": _session_for(world, meeting["id"]),
        "started_time": _time_field(started_time, started),
        "status": status,
        "stopped_time": _time_field(stopped_time, stopped),
        "meeting": meeting,
        "recording_duration": int((stopped - started).total_seconds()) if stopped and started else None,
        "start_reason": reason("API_CALL", world.app_id),
        "stop_reason": _stop_reason(status) if stopped else None,
        "storage_config": None,
    }
    raw.update(raw_overrides)
    rec = Rec(raw=raw, size=size, audio_size=audio_size, bucket_enabled=bucket_enabled, invoked=invoked, stopped=stopped)
    world.recs[rid] = rec
    world.order_changed()
    return rec


def finish(world: World, rec: Rec) -> None:
    """Stop: the file is "uploaded" at once, with a generated size; call with the lock held."""
    now = to_ms(world.now())
    rec.stopped = now
    rec.size = world.rng.randint(world.min_size, world.max_size)
    if rec.audio_size is not None:
        rec.audio_size = max(1, rec.size // 8)
    started = parse_time(rec.raw.get("started_time")) or rec.invoked
    rec.raw.update(
        status="UPLOADED",
        stopped_time=iso(now),
        file_size=rec.size,
        recording_duration=max(0, int((now - started).total_seconds())),
        stop_reason=reason("API_CALL", world.app_id),
    )


def _new_meeting(world: World, title: str, now: datetime) -> dict[str, Any]:
    created = now - timedelta(days=world.days + 1, seconds=world.rng.uniform(0, 86400))
    meeting = {
        "id": new_uuid(world.rng),
        "created_at": iso(created),
        "updated_at": iso(created + timedelta(hours=1)),
        "live_stream_on_start": False,
        "persist_chat": False,
        "record_on_start": world.rng.random() < 0.3,
        "session_keep_alive_time_in_secs": 60,
        "status": "ACTIVE",
        "summarize_on_end": False,
        "title": title,
    }
    world.meetings[str(meeting["id"])] = meeting
    world.sessions[str(meeting["id"])] = []
    return meeting


def _meeting_for(world: World, meeting_id: str | None, title: str | None) -> dict[str, Any]:
    if meeting_id and meeting_id in world.meetings:
        return world.meetings[meeting_id]
    if title and not meeting_id:
        for meeting in world.meetings.values():
            if meeting["title"] == title:
                return meeting
    meeting = _new_meeting(world, title or "Ad-hoc meeting", world.now())
    if meeting_id:  # keep the id the caller asked for
        world.meetings[meeting_id] = world.meetings.pop(meeting["id"])
        world.sessions[meeting_id] = world.sessions.pop(meeting["id"])
        meeting["id"] = meeting_id
    return meeting


def _session_for(world: World, meeting_id: str) -> str:
    sessions = world.sessions.setdefault(meeting_id, [])
    if sessions and world.rng.random() < 0.3:
        return sessions[-1]
    sessions.append(new_uuid(world.rng))
    return sessions[-1]


def _times(
    status: str,
    finished: bool,
    duration: int,
    invoked_in: datetime | str | None,
    started_in: datetime | str | None,
    stopped_in: datetime | str | None,
    now: datetime,
) -> tuple[datetime, datetime | None, datetime | None]:
    """Consistent invoked <= started <= stopped <= now, from whatever the caller fixed."""
    invoked = parse_time(invoked_in)
    invoked = to_ms(invoked) if invoked else None
    stopped = parse_time(stopped_in) if finished else None
    stopped = to_ms(stopped) if stopped else None
    if finished and stopped is None:
        stopped = (invoked + timedelta(seconds=duration + 5)) if invoked else now - timedelta(seconds=60)
        stopped = min(stopped, now - timedelta(seconds=5))
        if invoked is not None:
            stopped = max(stopped, invoked)
    if invoked is None:
        invoked = (stopped - timedelta(seconds=duration + 5)) if stopped else now - timedelta(seconds=300)
    started = parse_time(started_in)
    started = to_ms(started) if started else None
    if started is None and status != "INVOKED":
        started = invoked + timedelta(seconds=3)
        if stopped is not None and started > stopped:
            started = invoked
    return invoked, started, stopped


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


def _stop_reason(status: str) -> dict[str, Any]:
    if status == "ERRORED":
        return {"reason": "INTERNAL_ERROR"}
    return {"reason": "ALL_PEERS_LEFT"}
