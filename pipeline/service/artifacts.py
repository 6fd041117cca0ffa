"""Meeting artifacts: the transcript, summary and chat export of a session, which RealtimeKit
announces only by webhook (`meeting.transcript`, `meeting.summary`, `meeting.chatSynced`; no API
lists or gets them), each behind a presigned URL that expires like a recording's.

Each one is a unit of its own in the ledger, recorded like a recording: id `<sessionId>.<kind>`,
its one file of that kind, the meeting and session from the payload, the URL's expiry as its
deadline; the archive engine plans, downloads, verifies, keys (the targets' key templates, dated
by the session's start) and completes it (its own manifest) as any recording.

The presigned URL never goes into the ledger: the receiver keeps it in `<spool>/hints/<file>.url`
(owner-only, fsynced, before the ledger takes the hint and the webhook is answered 2xx); the hint
row names the unit, whose id gives that file. The file is removed when the unit is archived or
lost. A URL that expired before the file was fetched means the file is lost: nothing else can
bring it back."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.archive import object_keys as keys
from pipeline.archive.context import Context
from pipeline.archive.download import SignedUrl
from pipeline.archive.plan import Planning, announced_listing, plan_announced
from pipeline.archive.spool import HINTS_FOLDER
from pipeline.clock import from_iso, iso_utc, utcnow
from pipeline.errors import BookkeepingError, FileUnavailable, os_reason
from pipeline.ledger import Known, Ledger
from pipeline.ledger.rows import Hint, RecordingRow
from pipeline.realtimekit import Recording
from pipeline.realtimekit.wire import parse_api_time
from pipeline.service.webhooks import BadPayload

log = logging.getLogger("rtk_archive.serve")

# event -> (kind, the URL's field, the file's extension when the URL's path shows none)
ARTIFACTS: dict[str, tuple[str, str, str]] = {
    "meeting.transcript": ("transcript", "transcriptDownloadUrl", ".csv"),
    "meeting.summary": ("summary", "summaryDownloadUrl", ".txt"),
    "meeting.chatSynced": ("chat", "chatDownloadUrl", ".csv"),
}
ARTIFACT_KINDS = frozenset(kind for kind, _, _ in ARTIFACTS.values())
AVAILABLE = "AVAILABLE"  # the status of an artifact's hint and unit: the webhook says the file is there
FINISHED = ("archived", "lost")  # nothing more can be done for a unit in these states
MAX_ID = 200  # characters of a session id: longer is not an id RealtimeKit gives
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


@dataclass(frozen=True)
class Announcement:
    """What one artifact webhook says."""
    event: str
    kind: str
    session_id: str
    meeting_id: str | None
    title: str | None
    url: str = field(repr=False)  # presigned: never logged, never in the ledger
    expiry: datetime | None
    started_at: datetime | None
    created_at: datetime | None

    @property
    def unit_id(self) -> str:
        return f"{self.session_id}.{self.kind}"

    @property
    def file_name(self) -> str:
        ext = posixpath.splitext(urlsplit(self.url).path)[1]
        if not _EXTENSION.match(ext):
            ext = ARTIFACTS[self.event][2]
        return keys.sanitise_component(f"{self.session_id}{ext}", fallback=f"{self.kind}{ext}")


def read_announcement(event: str, body: bytes) -> Announcement:
    """The artifact a (verified) body announces; BadPayload, one line, when it cannot be used.
    `meeting.transcript` and `meeting.summary` carry the session under `meeting`,
    `meeting.chatSynced` flat."""
    kind, url_field, _ = ARTIFACTS[event]
    data = json.loads(body)
    where = data if event == "meeting.chatSynced" else data.get("meeting")
    if not isinstance(where, dict):
        raise BadPayload(f"{event}: no meeting object")
    session_id = _text(where.get("sessionId"))
    meeting_id = _text(where.get("meetingId") if event == "meeting.chatSynced" else where.get("id"))
    url = _text(data.get(url_field))
    if not session_id or len(session_id) > MAX_ID:
        raise BadPayload(f"{event}: no usable sessionId")
    if not url or urlsplit(url).scheme not in ("http", "https"):
        raise BadPayload(f"{event}: no usable {url_field}")
    return Announcement(event=event, kind=kind, session_id=session_id, meeting_id=meeting_id,
                        title=_text(where.get("title")), url=url,
                        expiry=_time(data.get(url_field.replace("Url", "UrlExpiry"))),
                        started_at=_time(where.get("startedAt")), created_at=_time(where.get("createdAt")))


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value).strip() or None


def _time(value: Any) -> datetime | None:
    try:
        return parse_api_time(value) if value not in (None, "") else None
    except (ValueError, OverflowError, OSError, TypeError):
        return None  # an unreadable time: unknown, as if absent


def unit_recording(announced: Announcement) -> Recording:
    """The unit as the engine handles a recording: dated by the session's start (so its key puts
    it beside the session's recordings), with its one file's name."""
    return Recording.model_validate({
        "id": announced.unit_id, "status": AVAILABLE, "session_id": announced.session_id,
        "meeting": {"id": announced.meeting_id, "title": announced.title},
        "invoked_time": iso_utc(announced.started_at or announced.created_at),
        "download_url_expiry": iso_utc(announced.expiry), "output_file_name": announced.file_name,
        "artifact": announced.kind, "event": announced.event})


# --------------------------------------------------------------------------- the URLs, in the spool


class HintFiles:
    """`<spool>/hints/`: one owner-only file per announced unit, holding its presigned URL."""

    def __init__(self, spool_dir: Path):
        self.folder = spool_dir / HINTS_FOLDER

    def path(self, unit_id: str) -> Path:
        name = keys.sanitise_component(unit_id, fallback="artifact")
        if name != unit_id:  # two ids that sanitise alike must not share a file
            name = f"{name[:150]}-{hashlib.sha256(unit_id.encode()).hexdigest()[:16]}"
        return self.folder / f"{name}.url"

    def keep(self, unit_id: str, url: str) -> None:
        """Write the URL durably (file and folder fsynced): BookkeepingError when it cannot be."""
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the spool, owner-only as a run makes it
            self.folder.mkdir(exist_ok=True, mode=0o700)
            fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")  # created 0600
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(url + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(temporary, self.path(unit_id))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            folder = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            raise BookkeepingError(f"cannot keep the webhook's URL in {self.folder}: {os_reason(exc)}") from None

    def read(self, unit_id: str) -> str | None:
        try:
            return self.path(unit_id).read_text().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BookkeepingError(f"cannot read {self.path(unit_id)}: {os_reason(exc)}") from None

    def drop(self, unit_id: str) -> None:
        try:
            self.path(unit_id).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: could not be removed: %s", self.path(unit_id), os_reason(exc))


# --------------------------------------------------------------------------- receiving


class ArtifactInbox:
    """What the receiver does with an artifact webhook: the URL in the spool, the unit and its
    hint in the ledger, in that order, all durable before the answer."""

    def __init__(self, ledger: Ledger, spool_dir: Path):
        self.ledger = ledger
        self.files = HintFiles(spool_dir)

    def accept(self, event: str, body: bytes, delivery: str | None) -> tuple[bool, Announcement]:
        """(new, what was announced); BadPayload for an unusable body, BookkeepingError when the
        spool or the ledger cannot take it (the webhook is then answered 5xx)."""
        announced = read_announcement(event, body)
        known = self.ledger.recording(announced.unit_id)
        if known is not None and known.state in FINISHED:
            return False, announced  # archived or lost: its URL is of no further use
        self.files.keep(announced.unit_id, announced.url)
        self.ledger.record_listing([announced_listing(unit_recording(announced), announced.kind,
                                                      announced.file_name, announced.expiry)])
        new = self.ledger.record_hint(announced.unit_id, AVAILABLE, announced.kind, received_at=utcnow(),
                                      delivery_id=delivery)
        return new, announced


# --------------------------------------------------------------------------- archiving


class ArtifactWork:
    """The worker's part for artifact hints: one archive run for a batch of them (the plan made
    from the ledger's unit and the URL file), then each hint settled."""

    def __init__(self, context: Context, *, retry: Callable[..., None], finish: Callable[..., None],
                 archived: Callable[[], None], hints_dir: Path):
        self.context = context
        self.ledger = context.ledger
        self.files = HintFiles(hints_dir)  # the configured spool (the receiver's), not a per-process one
        self._retry = retry  # (hint, reason, until=deadline): tried again later
        self._finish = finish  # (hint, state, reason)
        self._archived = archived

    def archive(self, hints: list[Hint], batch: Callable[..., str | None]) -> None:
        units: list[tuple[Hint, RecordingRow, str]] = []
        for hint in hints:
            row = self.ledger.recording(hint.subject_id)
            url = self.files.read(hint.subject_id)
            if row is not None and row.state in FINISHED:
                self._settle(hint, row)
            elif row is None or url is None:
                why = ("its unit is not in the ledger" if row is None
                       else f"its URL file {self.files.path(hint.subject_id)} is gone")
                log.error("%s %s: cannot be archived: %s", hint.kind, hint.subject_id, why)
                self._finish(hint, "failed", why)
            else:
                units.append((hint, row, url))
        if not units:
            return
        failure = batch(planner=lambda context: self._plan(context, units))
        for hint, _, _ in units:
            row = self.ledger.recording(hint.subject_id)
            if failure is None and row is not None and row.state in FINISHED:
                self._settle(hint, row)
            else:
                reason = failure or (row.reason if row else None) or _file_error(self.ledger, hint) \
                    or "not archived everywhere yet"
                self._retry(hint, reason, until=from_iso(row.deadline) if row and row.deadline else None)

    def _settle(self, hint: Hint, row: RecordingRow) -> None:
        self._finish(hint, "done", row.reason)
        self.files.drop(hint.subject_id)
        if row.state == "archived":
            self._archived()

    def _plan(self, context: Context, units: list[tuple[Hint, RecordingRow, str]]) -> Planning:
        config = context.config
        templates = {name: target.settings.key_template or config.archive.key_template
                     for name, target in context.targets.items()}
        known = self.ledger.known([row.id for _, row, _ in units])
        planning = Planning(plans=[], listed=[], skipped=[], notes=[])
        for hint, row, url in units:
            recording = Recording.model_validate(dict(row.metadata, id=row.id))
            expiry = from_iso(row.url_expiry) if row.url_expiry else None
            deadline = from_iso(row.deadline) if row.deadline else None
            one = plan_announced(recording, hint.kind, row.output_file_name or f"{hint.kind}.bin", deadline,
                                 known.get(row.id) or Known(), templates=templates,
                                 urls=webhook_url(row.id, hint.kind, url, expiry),
                                 margin=timedelta(hours=config.archive.deadline_margin_hours))
            planning.plans += one.plans
            planning.listed += one.listed
        far = datetime.max.replace(tzinfo=timezone.utc)
        planning.plans.sort(key=lambda p: (p.deadline or far, p.id))
        return planning


def webhook_url(unit_id: str, kind: str, url: str, expiry: datetime | None) -> Callable[[bool], SignedUrl]:
    """The URL a webhook gave, for the download: there is no fresh one to ask for, so a
    refresh gives the same URL until it expired, and then the file is lost."""

    def provide(refresh: bool) -> SignedUrl:
        if refresh and expiry is not None and expiry <= datetime.now(timezone.utc):
            raise FileUnavailable(f"{kind} {unit_id}: the webhook's download URL expired at {iso_utc(expiry)} and "
                                  "no RealtimeKit API gives another one: the file cannot be obtained")
        return SignedUrl(url=url, expiry=expiry)

    return provide


def _file_error(ledger: Ledger, hint: Hint) -> str | None:
    return next((f.last_error for f in ledger.files(hint.subject_id) if f.last_error), None)
