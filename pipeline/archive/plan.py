"""Planning, pure: from the recordings the API listed and what the ledger already knows of them
(read in batches by the caller), decide per file which targets still need it and under which
key, which recordings are skipped and why, and in what order to go (closest to RealtimeKit's
7-day deletion first). Nothing is read or written here; the caller records the outcome."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from pipeline.archive import object_keys as keys
from pipeline.clock import iso_utc
from pipeline.ledger import Known, ListedFile, ListedRecording
from pipeline.realtimekit import RETENTION, Recording

if TYPE_CHECKING:  # annotations only: planning reads the ledger and the API through the context
    from pipeline.archive.context import Context


@dataclass
class FilePlan:
    kind: str
    file_name: str
    expected_size: int | None
    keys: dict[str, str]  # target name -> key
    needed: list[str]  # target names that still need this file
    size_note: str | None = None  # why the size cannot be checked against file_size


@dataclass
class RecordingPlan:
    recording: Recording  # refreshed in place when a download needs a fresh URL
    deadline: datetime | None
    at_risk: bool
    files: list[FilePlan] = field(default_factory=list)
    # Where a file announced by a webhook is fetched from (no API gives its URL): called with
    # refresh=True when the URL was refused or nears its expiry. None: the API's record.
    urls: Callable | None = None

    @property
    def id(self) -> str:
        return self.recording.id

    @property
    def work(self) -> list[FilePlan]:
        return [f for f in self.files if f.needed]


@dataclass
class Planning:
    plans: list[RecordingPlan]  # archivable recordings, closest to deletion first
    listed: list[ListedRecording]  # every listed recording, as the ledger is to record it
    skipped: list[tuple[str, str]]  # (recording id, why it cannot be archived)
    notes: list[tuple[str, str]]  # (recording id, a problem with the API's record of it)


def deadline_of(recording: Recording) -> datetime | None:
    """When RealtimeKit deletes the recording: stopped_time + 7 days (the URL's expiry or
    invoked_time + 7 days when stopped_time is missing); None when unknown."""
    try:
        if recording.stopped_time:
            return recording.stopped_time + RETENTION
        if recording.download_url_expiry:
            return recording.download_url_expiry
        if recording.invoked_time:
            return recording.invoked_time + RETENTION
    except OverflowError:  # a time in the year 9999 from a misbehaving API: no deadline known
        return None
    return None


def plan_recordings(recordings: list[Recording], known: dict[str, Known], *, templates: dict[str, str],
                    margin: timedelta, now: datetime | None = None) -> Planning:
    """`templates`: target name -> its key template (every target of the run, in order)."""
    now = now or datetime.now(timezone.utc)
    planning = Planning(plans=[], listed=[], skipped=[], notes=[])
    for recording in recordings:
        planning.notes += [(recording.id, problem) for problem in recording.problems or ()]
        deadline = deadline_of(recording)
        skip = _why_not_archivable(recording)
        plan = None if skip else _plan_one(recording, deadline, known.get(recording.id) or Known(), templates, now,
                                           margin)
        files = tuple(ListedFile(f.kind, f.file_name, f.expected_size) for f in plan.files) if plan else ()
        planning.listed.append(_listed(recording, deadline, files, skip))
        if skip:
            planning.skipped.append((recording.id, skip))
        else:
            planning.plans.append(plan)
    far = datetime.max.replace(tzinfo=timezone.utc)
    planning.plans.sort(key=lambda p: (p.deadline or far, p.id))
    return planning


def plan_announced(recording: Recording, kind: str, file_name: str, deadline: datetime | None, known: Known, *,
                   templates: dict[str, str], margin: timedelta, urls: Callable,
                   now: datetime | None = None) -> Planning:
    """A file only a webhook announces (a meeting's transcript, summary or chat export): a unit
    of its own, planned as a recording with that one file, keyed by the same templates; `urls`
    gives its download URL (pipeline.archive.download.SignedUrl), since no API does."""
    now = now or datetime.now(timezone.utc)
    plan = RecordingPlan(recording=recording, deadline=deadline, urls=urls, at_risk=_at_risk(deadline, now, margin))
    plan.files.append(_plan_file(recording, kind, file_name, None, known, templates))
    return Planning(plans=[plan], listed=[announced_listing(recording, kind, file_name, deadline)],
                    skipped=[], notes=[])


def announced_listing(recording: Recording, kind: str, file_name: str, deadline: datetime | None) -> ListedRecording:
    """How the ledger records a unit a webhook announced (see plan_announced)."""
    return _listed(recording, deadline, (ListedFile(kind, file_name, None),), None)


def _at_risk(deadline: datetime | None, now: datetime, margin: timedelta) -> bool:
    """Deleted by RealtimeKit within the margin (`deadline_margin_hours`): reported at risk."""
    return deadline is not None and deadline - now < margin


def _why_not_archivable(recording: Recording) -> str | None:
    if recording.status != "UPLOADED":
        return f"status is {recording.status}, not UPLOADED; not final yet"
    if not recording.download_url and not recording.audio_download_url:
        return ("RealtimeKit holds no copy (its bucket was disabled for this recording; the file went "
                "straight to your own storage_config)")
    return None


def _plan_one(recording: Recording, deadline: datetime | None, known: Known, templates: dict[str, str],
              now: datetime, margin: timedelta) -> RecordingPlan:
    plan = RecordingPlan(recording=recording, deadline=deadline, at_risk=_at_risk(deadline, now, margin))
    video_name = keys.video_file_name(recording.output_file_name, recording.id)
    sources = [(keys.VIDEO, recording.download_url, video_name, recording.file_size)]
    if recording.audio_download_url:
        sources.append((keys.AUDIO, recording.audio_download_url,
                        keys.audio_file_name(video_name, recording.audio_download_url), None))
    for kind, url, file_name, size in sources:
        if url:
            plan.files.append(_plan_file(recording, kind, file_name, size, known, templates))
    return plan


def _plan_file(recording: Recording, kind: str, file_name: str, size: int | None, known: Known,
               templates: dict[str, str]) -> FilePlan:
    note = f"file_size is {size!r}: checked against Content-Length only" if kind == keys.VIDEO and not size else None
    file_keys = {name: keys.render_key(template, recording_id=recording.id, kind=kind, file_name=file_name,
                                       meeting_id=recording.meeting_id, session_id=recording.session_id,
                                       when=recording.invoked_time)
                 for name, template in templates.items()}
    done = {target for (copy_kind, target), copy in known.copies.items() if copy_kind == kind and copy.archived}
    # A file found lost by an earlier run stays reported by `status`; it is not retried nightly.
    lost = kind in known.files and known.files[kind].state == "lost"
    needed = [] if lost else [name for name in templates if name not in done]
    return FilePlan(kind=kind, file_name=file_name, expected_size=size or None, keys=file_keys, needed=needed,
                    size_note=note)


def _listed(recording: Recording, deadline: datetime | None, files: tuple[ListedFile, ...],
            skipped: str | None) -> ListedRecording:
    return ListedRecording(
        id=recording.id, meeting_id=recording.meeting_id, meeting_title=recording.meeting_title,
        session_id=recording.session_id, output_file_name=recording.output_file_name, status=recording.status,
        invoked_time=iso_utc(recording.invoked_time), stopped_time=iso_utc(recording.stopped_time),
        url_expiry=iso_utc(recording.download_url_expiry), deadline=iso_utc(deadline),
        metadata=recording_metadata(recording), files=files, skipped=skipped)


def recording_metadata(recording: Recording) -> dict:
    """The API's record as kept in the ledger and written in manifests: no URL (they carry
    signatures), no storage_config (it may carry credentials)."""
    meta = recording.model_dump(mode="json", exclude={"download_url", "audio_download_url", "storage_config",
                                                      "problems"})
    meta["meeting_id"] = recording.meeting_id
    meta["meeting_title"] = recording.meeting_title
    return meta


# --------------------------------------------------------------------------- for a run

def list_uploaded(context: Context, since, until, meeting_id) -> Iterator:
    """The app's UPLOADED recordings, page by page as they are needed (oldest first)."""
    return context.api.iter_recordings(status=("UPLOADED",), start_time=since, end_time=until, meeting_id=meeting_id)


def plan(context: Context, recordings: Iterable) -> Planning:
    config = context.config
    recordings = list(recordings)  # (a batch, or a whole listing as an iterator)
    templates = {name: target.settings.key_template or config.archive.key_template
                 for name, target in context.targets.items()}
    known = context.ledger.known([recording.id for recording in recordings])
    return plan_recordings(recordings, known, templates=templates,
                           margin=timedelta(hours=config.archive.deadline_margin_hours))
