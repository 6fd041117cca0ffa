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

import httpx
import tenacity

import pipeline
from pipeline import keys, manifest
from pipeline.api import RETENTION, ApiError, ApiNotFound
from pipeline.audit import AuditLog
from pipeline.config import Config
from pipeline.download import Download, DownloadedFile, SignedUrl
from pipeline.errors import DownloadError, FileUnavailable, Interrupted, VerificationError
from pipeline.ledger import Ledger, iso_utc, utcnow
from storage.base import LocalFile, ObjectConflict, StorageError, StoredObject, Target

log = logging.getLogger("rtk_archive.archive")



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
    failed: int = 0  # files that could not be archived at one or more targets
    skipped: int = 0  # files already archived everywhere, or recordings that cannot be archived
    lost: int = 0  # files RealtimeKit no longer serves and no target holds
    at_risk: int = 0  # recordings within the deadline margin when the run started
    bytes_downloaded: int = 0  # bytes fetched from the file server by this run (resumed spool bytes excluded)
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)  # one line per failure, lost or skipped item
    at_risk_ids: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        return {"archived": self.archived, "failed": self.failed, "skipped": self.skipped,
                "lost": self.lost, "at_risk": self.at_risk}


def deadline_of(recording) -> datetime | None:
    """When RealtimeKit deletes the recording: stopped_time + 7 days (the URL's expiry or
    invoked_time + 7 days when stopped_time is missing)."""
    if recording.stopped_time:
        return recording.stopped_time + RETENTION
    if recording.download_url_expiry:
        return recording.download_url_expiry
    if recording.invoked_time:
        return recording.invoked_time + RETENTION
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
        if not plan.work:
            with self._summary_lock:
                self.summary.skipped += len(plan.files)
            if record:
                self._complete_recording(plan)
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
            self.progress.start(total_bytes=sum(f.expected_size or 0 for p in work for f in p.work),
                                total_files=sum(len(p.work) for p in work))
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
        return self.summary

    def _archive_recording(self, plan: RecordingPlan, uploads: ThreadPoolExecutor) -> None:
        if self.stop.is_set():
            return
        for file_plan in plan.work:
            if self.stop.is_set():
                return
            self._archive_file(plan, file_plan, uploads)
        if not self.stop.is_set():
            self._complete_recording(plan)

    def _archive_file(self, plan: RecordingPlan, file_plan: FilePlan, uploads: ThreadPoolExecutor) -> None:
        rid, kind = plan.id, file_plan.kind
        label = f"recording {rid} {kind}"
        spool = self.config.archive.spool_dir / f"{keys.sanitise_component(rid, fallback='recording')}.{kind}.part"
        download = Download(
            self._http, self._url_provider(plan, kind), spool, expected_size=file_plan.expected_size,
            label=label, refresh_margin=timedelta(seconds=self.config.archive.url_refresh_margin_seconds),
            attempts=self.config.archive.download_attempts, max_seconds=self.config.archive.retry_max_seconds,
            stop=self.stop, progress=self.progress.advance if self.progress else None,
            md5=self._md5,
        )
        try:
            local = download.run()
        except Interrupted:
            return  # the spool stays: the next run resumes it
        except FileUnavailable as exc:
            self._file_lost(rid, kind, str(exc))
            download.discard()
            return
        except DownloadError as exc:
            self._file_failed(rid, kind, None, str(exc))
            if not exc.retryable:
                download.discard()  # a retryable failure keeps its bytes for the next run
            return
        finally:
            with self._summary_lock:  # what this run fetched, whatever became of it
                self.summary.bytes_downloaded += download.fetched
        try:
            self._downloaded(rid, kind, local, file_plan)
            outcomes = {name: uploads.submit(self._store, rid, kind, self.targets[name], file_plan.keys[name], local)
                        for name in file_plan.needed}
            failures = {name: err for name, future in outcomes.items() if (err := future.result())}
        finally:
            download.discard()  # complete, and its copies verified or failed with a reason
        if failures:
            self.ledger.set_file_state(rid, kind, "failed", "; ".join(failures.values()))
            with self._summary_lock:
                self.summary.failed += 1
        else:
            self.ledger.set_file_state(rid, kind, "archived")
            with self._summary_lock:
                self.summary.archived += 1
        if self.progress:
            self.progress.file_done()

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
            stored = self.put_with_retries(target, key, local, {"rtk_recording_id": _ascii(rid), "rtk_kind": kind})
            self._audit("stored", recording_id=rid, kind=kind, target=target.name, key=key, uri=stored.uri)
            verified_by = verify_copy(local, stored, target.name, retention=target.settings.retention_mode)
        except (StorageError, VerificationError) as exc:
            reason = str(exc)
            self.ledger.record_copy_failure(rid, kind, target.name, key=key, error=reason)
            self.problem(f"recording {rid} {kind} -> {target.name}: {reason}")
            self._audit("failed", recording_id=rid, kind=kind, target=target.name, key=key, reason=reason)
            return reason
        retention = stored.retention
        self.ledger.record_copy(
            rid, kind, target.name, key=key, uri=stored.uri, size=stored.size, sha256=stored.sha256,
            native=dict(stored.native), version=stored.version,
            retention_mode=retention.mode if retention else None,
            retention_until=retention.until if retention else None,
            legal_hold=bool(retention and retention.legal_hold), verified_by=verified_by,
        )
        self._audit("verified", recording_id=rid, kind=kind, target=target.name, key=key,
                    sha256=local.checksums.sha256, size=local.size, verified_by=verified_by,
                    version=stored.version)
        return None

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

    def _complete_recording(self, plan: RecordingPlan) -> None:
        """When every file is archived at every target: manifests, then the recording's state."""
        files = self.ledger.files(plan.id)
        copies = self.ledger.copies(plan.id)
        if self.config.archive.manifest:
            for name, target in self.targets.items():
                if all((f["kind"], name) in copies and copies[(f["kind"], name)].state == "archived" for f in files) \
                        and (keys.MANIFEST, name) not in copies and files:
                    self._write_manifest(plan, target, files, copies)
            copies = self.ledger.copies(plan.id)
        states = {f["state"] for f in files}
        complete = files and all(
            (f["kind"], name) in copies and copies[(f["kind"], name)].state == "archived"
            for f in files for name in self.targets
        )
        if complete:
            self.ledger.set_recording_state(plan.id, "archived")
        elif "lost" in states:
            self.ledger.set_recording_state(plan.id, "lost", "RealtimeKit no longer serves the files")
        elif "failed" in states:
            self.ledger.set_recording_state(plan.id, "failed", "see the files' errors")

    def _write_manifest(self, plan: RecordingPlan, target: Target, files: list[dict], copies) -> None:
        record = self.ledger.recording(plan.id) or {}
        meta = json.loads(record.get("metadata") or "{}")
        body = manifest.build_manifest(recording=meta, files=files, copies=copies,
                                       target_types={n: t.type for n, t in self.targets.items()},
                                       run_id=self.run_id)
        rec = plan.recording
        key = self._manifest_key(target, rec)
        spool = self.config.archive.spool_dir / f"{keys.sanitise_component(plan.id, fallback='r')}.{target.name}.manifest"
        try:
            local = manifest.write_local(body, spool)
            try:
                stored = self.put_with_retries(target, key, local, {"rtk_recording_id": _ascii(plan.id),
                                                                      "rtk_kind": keys.MANIFEST})
                verified_by = verify_copy(local, stored, target.name)
            except ObjectConflict:
                # A killed run may have stored it without noting it: accept it if it lists the same files.
                with target.open_read(key) as stream:
                    existing = json.loads(stream.read())
                if not manifest.manifest_files_match(existing, body):
                    raise
                stored, verified_by = target.stat(key), "existing manifest lists the same files"
        except (StorageError, VerificationError, ValueError) as exc:
            reason = f"manifest: {exc}"
            self.ledger.record_copy_failure(plan.id, keys.MANIFEST, target.name, key=key, error=reason)
            self.problem(f"recording {plan.id} manifest -> {target.name}: {exc}")
            self._audit("failed", recording_id=plan.id, kind=keys.MANIFEST, target=target.name, reason=reason)
            return
        finally:
            spool.unlink(missing_ok=True)
        self.ledger.record_copy(plan.id, keys.MANIFEST, target.name, key=key, uri=stored.uri, size=stored.size,
                                sha256=stored.sha256, native=dict(stored.native), version=stored.version,
                                retention_mode=None, retention_until=None, legal_hold=False,
                                verified_by=verified_by)
        self._audit("manifest_stored", recording_id=plan.id, target=target.name, key=key, uri=stored.uri,
                    sha256=stored.sha256)

    def _manifest_key(self, target: Target, rec) -> str:
        template = target.settings.key_template or self.config.archive.key_template
        return keys.manifest_key(template, recording_id=rec.id, meeting_id=rec.meeting_id,
                                 session_id=rec.session_id, when=rec.invoked_time)

    def _mark_lost_past_deadline(self) -> None:
        """A recording the ledger knows, not archived, whose 7 days are over, is lost: say so."""
        now = utcnow()
        for row in self.ledger.at_risk(now):
            reason = "RealtimeKit's 7-day retention ended before every file was archived"
            self.ledger.set_recording_state(row["id"], "lost", reason)
            with self._summary_lock:
                self.summary.lost += 1
            self._audit("lost", recording_id=row["id"], reason=reason)
            self.problem(f"recording {row['id']}: lost: {reason}")

    # -------------------------------------------------------------- bookkeeping

    def _skip(self, rid: str, kind: str | None, reason: str, record: bool) -> None:
        with self._summary_lock:
            self.summary.skipped += 1
        if record:
            self.ledger.set_recording_state(rid, "skipped", reason)
            self._audit("skipped", recording_id=rid, kind=kind, reason=reason)
        log.info("recording %s: skipped: %s", rid, reason)

    def _file_failed(self, rid: str, kind: str, target: str | None, reason: str) -> None:
        self.ledger.set_file_state(rid, kind, "failed", reason, count_attempt=True)
        with self._summary_lock:
            self.summary.failed += 1
        self.problem(reason)
        self._audit("failed", recording_id=rid, kind=kind, target=target, reason=reason)

    def _file_lost(self, rid: str, kind: str, reason: str) -> None:
        self.ledger.set_file_state(rid, kind, "lost", reason, count_attempt=True)
        with self._summary_lock:
            self.summary.lost += 1
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
    problems = []
    if retention and (stored.retention is None or stored.retention.mode != retention):
        found = stored.retention.mode if stored.retention else "none"
        problems.append(f"retention {retention} was requested but the object carries {found}")
    if stored.size != local.size:
        problems.append(f"size {stored.size} != {local.size}")
    compared = ["size"]
    if stored.sha256 is not None:
        compared.append("sha256(metadata)")
        if stored.sha256 != local.checksums.sha256:
            problems.append("the stored SHA-256 differs")
    expected = local.checksums.as_dict()  # only the digests that were computed
    for name, value in sorted(stored.native.items()):
        if name in expected:
            compared.append(f"{name}(backend)")
            if value.lower() != expected[name]:
                problems.append(f"the backend's {name} differs")
    if problems:
        raise VerificationError(f"target '{target_name}': copy at {stored.uri} does not match the download: "
                                + ", ".join(problems) + "; it was not marked archived")
    return "+".join(compared)


def _ascii(value: str) -> str:
    """Object metadata must be ASCII on S3: ids from the API are, but never trust them."""
    return value.encode("ascii", "backslashreplace").decode("ascii")[:256]
