"""The archive run: list → plan → download → put → verify → record.

One download feeds every target that still needs the file; recordings are processed by a
bounded pool (`concurrency`), and each file's uploads to its targets run in parallel, so
downloads of one recording overlap uploads of another. A copy is recorded as archived only
after `verify_copy` compared it at the target. Recordings closest to RealtimeKit's 7-day
deletion go first."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import tenacity

import pipeline
from pipeline import keys, manifest
from pipeline.api import RETENTION, ApiError, ApiNotFound
from pipeline.audit import AuditLog
from pipeline.comparison import compare_bytes, compare_copy, read_back
from pipeline.config import Config
from pipeline.download import Download, DownloadedFile, SignedUrl
from pipeline.errors import DownloadError, FileUnavailable, Interrupted, VerificationError, os_reason
from pipeline.ledger import CopyRow, Ledger, iso_utc, utcnow
from storage import LocalFile, NotFound, ObjectConflict, StorageError, StoredObject, Target

log = logging.getLogger("rtk_archive.archive")
# Copy states `verify` records; only a deep verify or a fresh verified put clears them.
PROBLEM_STATES = ("missing", "mismatch")



# --------------------------------------------------------------------------- plan


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
    recording: object  # pipeline.api.Recording
    deadline: datetime | None
    at_risk: bool
    files: list[FilePlan] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.recording.id

    @property
    def work(self) -> list[FilePlan]:
        return [f for f in self.files if f.needed]


@dataclass
class RunSummary:
    run_id: str
    archived: int = 0  # files newly archived (verified at every target) by this run
    failed: int = 0  # files that could not be archived at one or more targets (+ audit log copies)
    skipped: int = 0  # files_skipped + recordings_skipped (the key scripts already read)
    lost: int = 0  # files_lost + recordings_lost
    at_risk: int = 0  # recordings near RealtimeKit's deletion and still not archived everywhere
    bytes_downloaded: int = 0  # bytes fetched from the file server by this run (resumed spool bytes excluded)
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)  # one line per failure, lost or skipped item
    at_risk_ids: list[str] = field(default_factory=list)
    # The same, each in one unit.
    files_failed: int = 0
    files_lost: int = 0  # RealtimeKit no longer serves them and no target holds them
    files_skipped: int = 0  # nothing to do: archived at every target, or lost in an earlier run
    recordings_skipped: int = 0  # not UPLOADED yet, or RealtimeKit holds no copy
    recordings_lost: int = 0  # their 7 days ended before every file was archived
    copies_stored: int = 0  # recording files stored and verified at a target
    copies_failed: int = 0  # copies (files, manifests, audit logs) that could not be stored

    def counts(self) -> dict:
        return {"archived": self.archived, "failed": self.failed, "skipped": self.skipped,
                "lost": self.lost, "at_risk": self.at_risk,
                "files_archived": self.archived, "files_failed": self.files_failed,
                "files_lost": self.files_lost, "files_skipped": self.files_skipped,
                "recordings_skipped": self.recordings_skipped, "recordings_lost": self.recordings_lost,
                "recordings_at_risk": self.at_risk, "copies_stored": self.copies_stored,
                "copies_failed": self.copies_failed, "bytes_downloaded": self.bytes_downloaded}


def deadline_of(recording) -> datetime | None:
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


# --------------------------------------------------------------------------- the run


class Archiver:
    def __init__(self, config: Config, *, api, ledger: Ledger, targets: dict[str, Target],
                 audit: AuditLog | None, run_id: str | None = None, stop: threading.Event | None = None,
                 concurrency: int | None = None, progress=None):
        self.config = config
        self.api = api
        self.ledger = ledger
        self.targets = targets
        self.audit = audit
        self.run_id = run_id or uuid.uuid4().hex
        self.stop = stop or threading.Event()
        self.concurrency = concurrency or config.archive.concurrency
        self.progress = progress
        self.summary = RunSummary(run_id=self.run_id)
        # Targets left out of this run by the preflight probe: name -> reason.
        self.unavailable: dict[str, str] = {}
        # MD5, the slowest digest, only when a configured target checks it.
        self._md5 = any(target.uses_md5 for target in targets.values())
        self._summary_lock = threading.Lock()
        self._http = httpx.Client(
            timeout=httpx.Timeout(config.source.timeout, connect=10.0),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency),
            headers={"User-Agent": f"rtk-archive/{pipeline.__version__}"},
        )

    def close(self) -> None:
        self._http.close()

    def leave_out(self, name: str, reason: str) -> None:
        """Leave a target out of this run (its probe failed): reported once, here; its copies
        stay un-archived, so the next run does them."""
        self.unavailable[name] = reason
        self.problem(f"target '{name}' skipped for this run: {reason}")
        self._audit("target_skipped", target=name, reason=reason)

    def _reachable(self, file_plan: FilePlan) -> list[str]:
        return [name for name in file_plan.needed if name not in self.unavailable]

    # -------------------------------------------------------------- listing and planning

    def list_recordings(self, *, since=None, until=None, meeting_id=None) -> list:
        return list(self.api.iter_recordings(status=("UPLOADED",), start_time=since, end_time=until,
                                             meeting_id=meeting_id))

    def plan(self, recordings: Iterable, *, record: bool = True) -> list[RecordingPlan]:
        now = datetime.now(timezone.utc)
        margin = timedelta(hours=self.config.archive.deadline_margin_hours)
        plans = []
        for recording in recordings:
            plan = self._plan_one(recording, now, margin, record)
            if plan is not None:
                plans.append(plan)
        # Closest to deletion first; recordings without a known deadline last.
        far = datetime.max.replace(tzinfo=timezone.utc)
        plans.sort(key=lambda p: (p.deadline or far, p.id))
        return plans

    def _plan_one(self, recording, now: datetime, margin: timedelta, record: bool) -> RecordingPlan | None:
        deadline = deadline_of(recording)
        if record:
            self._remember(recording, deadline)
            self._audit("listed", recording_id=recording.id, status=recording.status)
        for problem in getattr(recording, "problems", []) or []:
            log.warning("recording %s: %s", recording.id, problem)
        if recording.status != "UPLOADED":
            self._skip(recording.id, None, f"status is {recording.status}, not UPLOADED; not final yet", record)
            return None
        if not recording.download_url and not recording.audio_download_url:
            self._skip(recording.id, None, "RealtimeKit holds no copy (its bucket was disabled for this "
                       "recording; the file went straight to your own storage_config)", record)
            return None
        plan = RecordingPlan(recording=recording, deadline=deadline,
                             at_risk=deadline is not None and deadline - now < margin)
        video_name = keys.video_file_name(recording.output_file_name, recording.id)
        sources = [(keys.VIDEO, recording.download_url, video_name, recording.file_size)]
        if recording.audio_download_url:
            sources.append((keys.AUDIO, recording.audio_download_url,
                            keys.audio_file_name(video_name, recording.audio_download_url), None))
        for kind, url, file_name, size in sources:
            if not url:
                continue
            plan.files.append(self._plan_file(recording, kind, file_name, size, record))
        if plan.work and plan.at_risk:
            with self._summary_lock:
                self.summary.at_risk += 1
                self.summary.at_risk_ids.append(recording.id)
        nothing_to_do = len(plan.files) - len(plan.work)
        with self._summary_lock:
            self.summary.skipped += nothing_to_do
            self.summary.files_skipped += nothing_to_do
        if not plan.work and record:
            self._complete_recording(plan.id)
        return plan

    def _plan_file(self, recording, kind: str, file_name: str, size: int | None, record: bool) -> FilePlan:
        expected = size if size else None
        note = None
        if kind == keys.VIDEO and not size:
            note = f"file_size is {size!r}: checked against Content-Length only"
        file_keys = {name: self._key(target, recording, kind, file_name) for name, target in self.targets.items()}
        done = {target for (_kind, target), copy in self.ledger.copies(recording.id, kind).items()
                if copy.state == "archived"}
        known = self.ledger.file(recording.id, kind)
        if record:
            self.ledger.ensure_file(recording.id, kind, file_name, expected)
        # A file found lost by an earlier run stays reported by `status`; it is not retried nightly.
        lost = known is not None and known["state"] == "lost"
        needed = [] if lost else [name for name in self.targets if name not in done]
        return FilePlan(kind=kind, file_name=file_name, expected_size=expected, keys=file_keys,
                        needed=needed, size_note=note)

    def _key(self, target: Target, recording, kind: str, file_name: str) -> str:
        template = target.settings.key_template or self.config.archive.key_template
        return keys.render_key(template, recording_id=recording.id, kind=kind, file_name=file_name,
                               meeting_id=recording.meeting_id, session_id=recording.session_id,
                               when=recording.invoked_time)

    def _remember(self, recording, deadline: datetime | None) -> None:
        meta = recording.model_dump(mode="json", exclude={"download_url", "audio_download_url",
                                                          "storage_config", "problems"})
        meta["meeting_id"] = recording.meeting_id
        meta["meeting_title"] = recording.meeting.title if recording.meeting else None
        self.ledger.upsert_recording(
            recording_id=recording.id, meeting_id=recording.meeting_id, meeting_title=meta["meeting_title"],
            session_id=recording.session_id, output_file_name=recording.output_file_name,
            status=recording.status, invoked_time=iso_utc(recording.invoked_time),
            stopped_time=iso_utc(recording.stopped_time), url_expiry=iso_utc(recording.download_url_expiry),
            deadline=iso_utc(deadline), metadata=meta,
        )

    # -------------------------------------------------------------- execution

    def execute(self, plans: list[RecordingPlan]) -> RunSummary:
        work = [p for p in plans if p.work]
        if self.progress:
            self.progress.start([f.expected_size for p in work for f in p.work if self._reachable(f)])
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="recording") as pool, \
                ThreadPoolExecutor(max(1, self.concurrency * len(self.targets)), thread_name_prefix="upload") as uploads:
            futures: list[Future] = [pool.submit(self._archive_recording, plan, uploads) for plan in work]
            try:
                while futures:
                    done, pending = wait(futures, timeout=0.5)
                    for future in done:
                        future.result()  # re-raise programming errors, never swallow them
                    futures = list(pending)
                    if self.stop.is_set():
                        for future in futures:
                            future.cancel()
            finally:
                if self.stop.is_set():
                    self.summary.interrupted = True
        self._mark_lost_past_deadline()
        self._keep_only_still_at_risk()
        return self.summary

    def _archive_recording(self, plan: RecordingPlan, uploads: ThreadPoolExecutor) -> None:
        if self.stop.is_set():
            return
        try:
            for file_plan in plan.work:
                if self.stop.is_set():
                    return
                self._archive_file(plan, file_plan, uploads)
            if not self.stop.is_set():
                self._complete_recording(plan.id)
        except BaseException:
            self.stop.set()  # e.g. the ledger or the audit log failed: start nothing new
            raise

    def _archive_file(self, plan: RecordingPlan, file_plan: FilePlan, uploads: ThreadPoolExecutor) -> None:
        shown = self.progress.file(f"{plan.id} {file_plan.kind}", file_plan.expected_size) \
            if self.progress and self._reachable(file_plan) else None
        archived = False
        try:
            archived = self._archive_one_file(plan, file_plan, uploads, shown)
        finally:
            if shown:
                shown.done(archived)

    def _archive_one_file(self, plan: RecordingPlan, file_plan: FilePlan, uploads: ThreadPoolExecutor,
                          shown) -> bool:
        rid, kind = plan.id, file_plan.kind
        reachable = self._reachable(file_plan)
        left_out = {name: f"target '{name}' skipped for this run: {self.unavailable[name]}"
                    for name in file_plan.needed if name not in reachable}
        if not reachable:  # nothing this run can store: no download (the skip was reported once)
            self._not_everywhere(rid, kind, left_out)
            return False
        label = f"recording {rid} {kind}"
        spool = self.config.archive.spool_dir / f"{keys.sanitise_component(rid, fallback='recording')}.{kind}.part"

        def received(n: int) -> None:
            if shown:
                shown.update(n, download.offset, download.content_total)

        download = Download(
            self._http, self._url_provider(plan, kind), spool, expected_size=file_plan.expected_size,
            label=label, refresh_margin=timedelta(seconds=self.config.archive.url_refresh_margin_seconds),
            attempts=self.config.archive.download_attempts, max_seconds=self.config.archive.retry_max_seconds,
            stop=self.stop, progress=received, md5=self._md5,
        )
        try:
            local = download.run()
        except Interrupted:
            return False  # the spool stays: the next run resumes it
        except FileUnavailable as exc:
            self._file_lost(rid, kind, str(exc))
            download.discard()
            return False
        except DownloadError as exc:
            self._file_failed(rid, kind, None, str(exc))
            if not exc.retryable:
                download.discard()  # a retryable failure keeps its bytes for the next run
            return False
        finally:
            with self._summary_lock:  # what this run fetched, whatever became of it
                self.summary.bytes_downloaded += download.fetched
        try:
            self._downloaded(rid, kind, local, file_plan)
            outcomes = {name: uploads.submit(self._store, rid, kind, self.targets[name], file_plan.keys[name], local)
                        for name in reachable}
            failures = {name: err for name, future in outcomes.items() if (err := future.result())}
        finally:
            download.discard()  # complete, and its copies verified or failed with a reason
        if failures or left_out:
            self._not_everywhere(rid, kind, {**failures, **left_out})
        else:
            self.ledger.set_file_state(rid, kind, "archived")
            with self._summary_lock:
                self.summary.archived += 1
        return not (failures or left_out)

    def _not_everywhere(self, rid: str, kind: str, reasons: dict[str, str]) -> None:
        """A file still missing at some target after this run: failed, with every reason."""
        self.ledger.set_file_state(rid, kind, "failed", "; ".join(reasons.values()))
        with self._summary_lock:
            self.summary.failed += 1
            self.summary.files_failed += 1

    def _url_provider(self, plan: RecordingPlan, kind: str) -> Callable[[bool], SignedUrl]:
        def provide(refresh: bool) -> SignedUrl:
            if refresh:
                try:
                    plan.recording = self.api.get_recording(plan.id)
                except ApiNotFound:
                    raise FileUnavailable(f"recording {plan.id} {kind}: RealtimeKit no longer knows the "
                                          "recording (404)") from None
                except ApiError as exc:  # this file fails; the rest of the run goes on
                    raise DownloadError(f"recording {plan.id} {kind}: fetching a fresh URL failed: {exc}") from None
            rec = plan.recording
            url = rec.download_url if kind == keys.VIDEO else rec.audio_download_url
            return SignedUrl(url=url or "", expiry=rec.download_url_expiry)
        return provide

    def _downloaded(self, rid: str, kind: str, local: DownloadedFile, file_plan: FilePlan) -> None:
        sums = local.checksums
        self.ledger.record_download(rid, kind, size=local.size, sha256=sums.sha256, md5=sums.md5,
                                    crc32c=sums.crc32c, source_host=local.source_host)
        if file_plan.size_note:
            log.warning("recording %s %s: %s", rid, kind, file_plan.size_note)
        self._audit("downloaded", recording_id=rid, kind=kind, size=local.size, sha256=sums.sha256,
                    source_host=local.source_host, resumed=local.resumed, refreshed=local.refreshed,
                    fetched=local.fetched, note=file_plan.size_note)

    def _store(self, rid: str, kind: str, target: Target, key: str, local: LocalFile) -> str | None:
        """Put one file at one target, verify it there, record it. Returns the failure reason."""
        try:
            # put returns the object read back from the backend after the upload: verify that.
            self._refuse_altered(target, rid, kind, key, local)
            stored = self.put_with_retries(target, key, local, {"rtk_recording_id": _ascii(rid), "rtk_kind": kind})
            self._audit("stored", recording_id=rid, kind=kind, target=target.name, key=key, uri=stored.uri)
            verified_by = verify_copy(local, stored, target.name, retention=target.settings.retention_mode)
        except (StorageError, VerificationError) as exc:
            reason = str(exc)
            self.ledger.record_copy_failure(rid, kind, target.name, key=key, error=reason)
            self.problem(f"recording {rid} {kind} -> {target.name}: {reason}")
            self._audit("failed", recording_id=rid, kind=kind, target=target.name, key=key, reason=reason)
            with self._summary_lock:
                self.summary.copies_failed += 1
            return reason
        # The trail first: the ledger never says archived without the audit line that says so.
        self._audit("verified", recording_id=rid, kind=kind, target=target.name, key=key,
                    sha256=local.checksums.sha256, size=local.size, verified_by=verified_by,
                    version=stored.version)
        retention = stored.retention
        self.ledger.record_copy(
            rid, kind, target.name, key=key, uri=stored.uri, size=stored.size, sha256=stored.sha256,
            native=dict(stored.native), version=stored.version,
            retention_mode=retention.mode if retention else None,
            retention_until=retention.until if retention else None,
            legal_hold=bool(retention and retention.legal_hold), verified_by=verified_by,
        )
        with self._summary_lock:
            self.summary.copies_stored += 1
        log.info("archived recording %s %s -> %s %s (%d bytes, sha256 %s)", rid, kind, target.name, key,
                 local.size, local.checksums.sha256)
        return None

    def _refuse_altered(self, target: Target, rid: str, kind: str, key: str, local: LocalFile) -> None:
        """A copy `verify` found missing or altered: an object now under its key is taken as the
        copy only if its bytes, re-read, are the file's (`put` alone would accept an object whose
        size and checksums match, which is what an alteration that verify --deep found can do)."""
        prior = self.ledger.copies(rid, kind).get((kind, target.name))
        if prior is None or prior.state not in PROBLEM_STATES:
            return
        try:
            existing = target.stat(key)
        except NotFound:
            return
        if existing.size != local.size:  # plainly not the file: no need to read it
            problems = [f"size is {existing.size}, expected {local.size}"]
        else:
            problems = compare_bytes(read_back(target, key), size=local.size, sha256=local.checksums.sha256)
        if problems:
            raise ObjectConflict(f"the object at {existing.uri}, found {prior.state} by verify, is still not the "
                                 f"file: {problems[0]}; rtk-archive never overwrites: move it away",
                                 target=target.name)

    def put_with_retries(self, target: Target, key: str, local: LocalFile, metadata: dict) -> StoredObject:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.config.archive.upload_attempts)
            | tenacity.stop_after_delay(self.config.archive.retry_max_seconds),
            wait=tenacity.wait_exponential_jitter(initial=1, max=30),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, StorageError) and e.retryable),
            before_sleep=lambda state: log.warning("%s; retrying (attempt %d of %d)",
                                                   state.outcome.exception(), state.attempt_number + 1,
                                                   self.config.archive.upload_attempts),
            reraise=True,
        )
        return retrying(target.put, local, key, metadata)

    # -------------------------------------------------------------- completion

    def complete_from_ledger(self, *, done: set[str]) -> None:
        """Revisit, from the ledger alone, the recordings this run did not plan (RealtimeKit may
        no longer list them) that lack a verified manifest at a target: a manifest that is
        missing there (deleted, or its put failed) is put back like any other copy."""
        if self.stop.is_set() or not self.config.archive.manifest:
            return
        for rid in self.ledger.recordings_without_manifest():
            if self.stop.is_set():
                return
            if rid not in done:
                self._complete_recording(rid)

    def _complete_recording(self, rid: str) -> None:
        """At each target that holds every file of the recording: its manifest, written or put
        back (an altered one is reported, never overwritten); then the recording's state."""
        files = self.ledger.files(rid)
        copies = self.ledger.copies(rid)
        if self.config.archive.manifest and files:
            for name, target in self.targets.items():
                if name in self.unavailable:
                    continue
                complete_here = all(_archived(copies, f["kind"], name) for f in files)
                if complete_here and not _archived(copies, keys.MANIFEST, name):
                    self._write_manifest(rid, target, files, copies, copies.get((keys.MANIFEST, name)))
            copies = self.ledger.copies(rid)
        states = {f["state"] for f in files}
        complete = files and all(_archived(copies, f["kind"], name) for f in files for name in self.targets)
        if complete:
            self.ledger.set_recording_state(rid, "archived")
        elif "lost" in states:
            self.ledger.set_recording_state(rid, "lost", "RealtimeKit no longer serves the files")
        elif "failed" in states:
            self.ledger.set_recording_state(rid, "failed", "see the files' errors")

    def _write_manifest(self, rid: str, target: Target, files: list[dict], copies, existing: CopyRow | None) -> None:
        record = self.ledger.recording(rid) or {}
        # Where it was (a missing or failed one goes back there), else where the template puts it.
        key = existing.key if existing else self._manifest_key(target, record)
        if existing is not None and existing.state in PROBLEM_STATES and not self._manifest_gone(target, existing):
            return
        meta = json.loads(record.get("metadata") or "{}")
        body = manifest.build_manifest(recording=meta, files=files, copies=copies,
                                       target_types={n: t.type for n, t in self.targets.items()},
                                       run_id=self.run_id)
        spool = self.config.archive.spool_dir / f"{keys.sanitise_component(rid, fallback='r')}.{target.name}.manifest"
        try:
            local = _spool_manifest(body, spool)
            stored, verified_by = self._put_manifest(target, key, local, body, rid)
        except (StorageError, VerificationError, ValueError, OSError) as exc:
            detail = str(exc)
            if isinstance(exc, OSError) and not isinstance(exc, StorageError):  # the spool cannot take it
                detail = f"cannot write it in the spool folder {spool.parent}: {os_reason(exc)}"
            reason = f"manifest: {detail}"
            with self._summary_lock:
                self.summary.copies_failed += 1
            self._audit("failed", recording_id=rid, kind=keys.MANIFEST, target=target.name, reason=reason)
            self.ledger.record_copy_failure(rid, keys.MANIFEST, target.name, key=key, error=reason)
            self.problem(f"recording {rid} manifest -> {target.name}: {detail}")
            return
        finally:
            spool.unlink(missing_ok=True)
        # The trail first: the ledger never says archived without the audit line that says so.
        self._audit("manifest_stored", recording_id=rid, target=target.name, key=key, uri=stored.uri,
                    sha256=stored.sha256)
        self.ledger.record_copy(rid, keys.MANIFEST, target.name, key=key, uri=stored.uri, size=stored.size,
                                sha256=stored.sha256, native=dict(stored.native), version=stored.version,
                                retention_mode=None, retention_until=None, legal_hold=False,
                                verified_by=verified_by)

    def _put_manifest(self, target: Target, key: str, local: LocalFile, body: dict, rid: str
                      ) -> tuple[StoredObject, str]:
        try:
            stored = self.put_with_retries(target, key, local, {"rtk_recording_id": _ascii(rid),
                                                                  "rtk_kind": keys.MANIFEST})
            return stored, verify_copy(local, stored, target.name)
        except ObjectConflict:
            # A killed run may have stored it without noting it: accept it if it lists the same files.
            with target.open_read(key) as stream:
                found = json.loads(stream.read())
            if not manifest.manifest_files_match(found, body):
                raise
            return target.stat(key), "existing manifest lists the same files"

    def _manifest_gone(self, target: Target, existing: CopyRow) -> bool:
        """A manifest `verify` found missing or altered is written again only where nothing is
        under its key any more; an object there is left as found and reported."""
        try:
            found = target.stat(existing.key)
        except NotFound:
            return True
        except StorageError as exc:
            self.problem(f"recording {existing.recording_id} manifest -> {target.name}: {exc}")
            return False
        self.problem(f"recording {existing.recording_id} manifest -> {target.name}: {found.uri} was found "
                     f"{existing.state} by verify ({existing.verify_result}); it is left as found, never overwritten: "
                     "`verify --deep` clears it if it is the original again; move it away to have a new one written")
        return False

    def _manifest_key(self, target: Target, record: dict) -> str:
        template = target.settings.key_template or self.config.archive.key_template
        when = datetime.fromisoformat(record["invoked_time"]) if record.get("invoked_time") else None
        return keys.manifest_key(template, recording_id=record["id"], meeting_id=record.get("meeting_id"),
                                 session_id=record.get("session_id"), when=when)

    def _mark_lost_past_deadline(self) -> None:
        """A recording the ledger knows, not archived, whose 7 days are over, is lost: say so."""
        now = utcnow()
        for row in self.ledger.at_risk(now):
            reason = "RealtimeKit's 7-day retention ended before every file was archived"
            self.ledger.set_recording_state(row["id"], "lost", reason)
            with self._summary_lock:
                self.summary.lost += 1
                self.summary.recordings_lost += 1
            self._audit("lost", recording_id=row["id"], reason=reason)
            self.problem(f"recording {row['id']}: lost: {reason}")

    def _keep_only_still_at_risk(self) -> None:
        """The at-risk list names the recordings still not archived everywhere after the run
        (a recording found lost is reported as lost instead)."""
        still = [rid for rid in self.summary.at_risk_ids
                 if (self.ledger.recording(rid) or {}).get("state") not in ("archived", "lost")]
        with self._summary_lock:
            self.summary.at_risk_ids, self.summary.at_risk = still, len(still)

    # -------------------------------------------------------------- bookkeeping

    def _skip(self, rid: str, kind: str | None, reason: str, record: bool) -> None:
        with self._summary_lock:
            self.summary.skipped += 1
            self.summary.recordings_skipped += 1
        if record:
            self.ledger.set_recording_state(rid, "skipped", reason)
            self._audit("skipped", recording_id=rid, kind=kind, reason=reason)
        log.info("recording %s: skipped: %s", rid, reason)

    def _file_failed(self, rid: str, kind: str, target: str | None, reason: str) -> None:
        self.ledger.set_file_state(rid, kind, "failed", reason, count_attempt=True)
        with self._summary_lock:
            self.summary.failed += 1
            self.summary.files_failed += 1
        self.problem(reason)
        self._audit("failed", recording_id=rid, kind=kind, target=target, reason=reason)

    def _file_lost(self, rid: str, kind: str, reason: str) -> None:
        self.ledger.set_file_state(rid, kind, "lost", reason, count_attempt=True)
        with self._summary_lock:
            self.summary.lost += 1
            self.summary.files_lost += 1
        self.problem(f"lost: {reason}")
        self._audit("lost", recording_id=rid, kind=kind, reason=reason)

    def problem(self, line: str) -> None:
        with self._summary_lock:
            self.summary.problems.append(line)
        log.error("%s", line)

    def _audit(self, action: str, **fields) -> None:
        if self.audit is not None:
            self.audit.event(action, **fields)


def verify_copy(local: LocalFile, stored: StoredObject, target_name: str, *, retention: str | None = None) -> str:
    """Compare a stored copy with the file it came from (and, when the target asks for
    write-once protection, check the copy carries it); returns what was compared.
    Raises VerificationError on any difference. Written once, for every backend."""
    problems, compared = compare_copy(stored, size=local.size, digests=local.checksums.as_dict(),
                                      retention=retention)
    if problems:
        raise VerificationError(f"target '{target_name}': copy at {stored.uri} does not match the download: "
                                + "; ".join(problems) + "; it was not marked archived")
    return "+".join(compared)


def _archived(copies: dict, kind: str, target: str) -> bool:
    copy = copies.get((kind, target))
    return copy is not None and copy.state == "archived"


def _spool_manifest(body: dict, spool: Path) -> LocalFile:
    """The manifest as a private spool file (the spool folder may not exist yet when this run
    downloaded nothing)."""
    spool.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return manifest.write_local(body, spool)


def _ascii(value: str) -> str:
    """Object metadata must be ASCII on S3: ids from the API are, but never trust them."""
    return value.encode("ascii", "backslashreplace").decode("ascii")[:256]
