"""Executing a plan: recordings in a bounded pool (`concurrency`), closest to deletion first;
per file, one download feeds every target that still needs it, the uploads to those targets
run in parallel (so the downloads of one recording overlap the uploads of another), and a
copy is recorded as archived only after it was verified at its target (pipeline.archive.store)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta

from pipeline.realtimekit import ApiError, ApiNotFound
from pipeline.archive import object_keys as keys
from pipeline.archive.bookkeeping import Book
from pipeline.archive.budget import run_budget
from pipeline.archive.completion import Completion
from pipeline.archive.download import Download, DownloadedFile, SignedUrl
from pipeline.archive.bytepath import file_connections
from pipeline.archive.ranged import RangedDownload
from pipeline.archive.plan import FilePlan, Planning, RecordingPlan, recording_metadata
from pipeline.archive.growing import SpoolFeed
from pipeline.archive.store import store_file, waits_for_finished_file
from pipeline.errors import DownloadError, FileUnavailable, Interrupted
from storage import SourceFailed, Target

log = logging.getLogger("rtk_archive.archive")


class Archiver:
    def __init__(self, book: Book, *, progress=None):
        self.book = book
        self.context = book.context
        self.config = book.context.config
        self.ledger = book.context.ledger
        self.targets: dict[str, Target] = book.context.targets
        self.stop = book.context.stop
        self.progress = progress
        self.summary = book.summary
        # Targets left out of this run by the preflight probe: name -> reason.
        self.unavailable: dict[str, str] = {}
        self.completion = Completion(book, self.targets, self.unavailable)
        # MD5, the slowest digest, only when a configured target checks it.
        self._md5 = any(target.uses_md5 for target in self.targets.values())
        # --max-duration, --max-transfer (no new file after them) and --bwlimit, for the whole run.
        self.budget = run_budget(self.config.archive, stop=self.stop)
        self.not_started = 0  # files a budget kept from starting: the next run does them
        self._budget_lock = threading.Lock()
        self.connections = file_connections(self.config)  # the run's bound on file connections

    def leave_out(self, name: str, reason: str) -> None:
        """Leave a target out of this run (its probe failed): reported once, here; its copies
        stay un-archived, so the next run does them."""
        self.unavailable[name] = reason
        self.book.problem(f"target '{name}' skipped for this run: {reason}")
        self.book.audit("target_skipped", target=name, reason=reason)

    def _reachable(self, file_plan: FilePlan) -> list[str]:
        return [name for name in file_plan.needed if name not in self.unavailable]

    # -------------------------------------------------------------- the plan's outcome, recorded

    def record(self, planning: Planning) -> None:
        """Record what the listing brought (one ledger write for all of it), its audit lines,
        the skips and the counts; complete at once the recordings with nothing left to do."""
        self.ledger.record_listing(planning.listed)
        skipped = dict(planning.skipped)
        for listed in planning.listed:
            self.book.audit("listed", recording_id=listed.id, status=listed.status)
            if listed.id in skipped:
                self.book.audit("skipped", recording_id=listed.id, reason=skipped[listed.id])
        self.count(planning)
        for plan in planning.plans:
            if not plan.work:
                self.completion.complete(plan.id, recording_metadata(plan.recording))

    def count(self, planning: Planning) -> None:
        """The plan's counts (also what a dry run reports), and its notes and skips logged."""
        for rid, note in planning.notes:
            log.warning("recording %s: %s", rid, note)
        for rid, reason in planning.skipped:
            log.info("recording %s: skipped: %s", rid, reason)
        nothing_to_do = sum(len(plan.files) - len(plan.work) for plan in planning.plans)
        at_risk = [plan.id for plan in planning.plans if plan.work and plan.at_risk]
        self.book.count(skipped=len(planning.skipped) + nothing_to_do, recordings_skipped=len(planning.skipped),
                        files_skipped=nothing_to_do, at_risk=len(at_risk))
        self.summary.at_risk_ids.extend(at_risk)

    # -------------------------------------------------------------- execution

    def execute(self, plans: list[RecordingPlan]) -> None:
        work = [p for p in plans if p.work]
        concurrency = self.config.archive.concurrency
        if self.progress:
            self.progress.start([f.expected_size for p in work for f in p.work if self._reachable(f)])
        with ThreadPoolExecutor(concurrency, thread_name_prefix="recording") as pool, \
                ThreadPoolExecutor(max(1, concurrency * len(self.targets)), thread_name_prefix="upload") as uploads:
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
                self.connections.close()
                if self.stop.is_set():
                    self.summary.interrupted = True

    def finish(self) -> None:
        """After the last batch: the recordings past their deadline are lost; at risk are only
        those still not archived."""
        self.completion.mark_lost_past_deadline()
        self._keep_only_still_at_risk()

    def _archive_recording(self, plan: RecordingPlan, uploads: ThreadPoolExecutor) -> None:
        if self.stop.is_set():
            return
        try:
            for index, file_plan in enumerate(plan.work):
                if self.stop.is_set():
                    return
                if self.budget.exhausted():  # soft cutoff: in-flight files finish, no new one starts
                    self._leave_for_next_run(len(plan.work) - index)
                    return
                self._archive_file(plan, file_plan, uploads)
            if not self.stop.is_set():
                self.completion.complete(plan.id, recording_metadata(plan.recording))
        except BaseException:
            self.stop.set()  # e.g. the ledger or the audit log failed: start nothing new
            raise

    def _leave_for_next_run(self, files: int) -> None:
        with self._budget_lock:
            self.not_started += files

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
            self.book.not_everywhere(rid, kind, left_out)
            return False
        # Targets that can upload while the file downloads start now, reading the spool as it
        # grows (pipeline.archive.growing); the others get the finished file.
        early = self._overlapping(rid, kind, file_plan, reachable)
        feed = SpoolFeed(self._spool_path(rid, kind), file_plan.expected_size, self.stop) if early else None
        outcomes = {name: uploads.submit(store_file, self.book, self.targets[name], rid, kind, file_plan.keys[name],
                                         feed.reader())
                    for name in early}
        fetched = None
        try:
            fetched = self._download(plan, file_plan, shown, feed)
        finally:
            if fetched is None and feed is not None:  # its failure is recorded: the uploads abort, unrecorded
                feed.failed(f"the download of recording {rid} {kind} did not complete")
                for future in outcomes.values():
                    _outcome(future)  # (waits for the upload to abort)
        if fetched is None:
            return False
        download, local = fetched
        try:
            self._downloaded(rid, kind, local, file_plan)  # recorded before any copy can be
            if feed is not None:
                feed.finished(local)

            submit = uploads.submit if len(reachable) > 1 else _here  # one target: no hand-off to the pool

            def store(name: str) -> Future:
                return submit(store_file, self.book, self.targets[name], rid, kind, file_plan.keys[name], local)
            outcomes.update({name: store(name) for name in reachable if name not in outcomes})
            # An upload that read the file as it downloaded and saw it start again from byte 0
            # stored nothing: it stores the finished file now (unless the run is stopping).
            again = {name: store(name) for name, future in outcomes.items()
                     if _aborted(future) and not self.stop.is_set()}
            for name in again:
                log.info("recording %s %s: the upload to %s read the file while it downloaded and stopped (%s); "
                         "storing the finished file", rid, kind, name, outcomes[name].exception())
            failures = {name: err for name, future in {**outcomes, **again}.items() if (err := _outcome(future))}
        finally:
            if feed is not None:  # (a no-op once finished: else the uploads abort before the spool goes)
                feed.failed(f"recording {rid} {kind} was not recorded as downloaded")
                wait(outcomes.values())
            download.discard()  # complete, and its copies verified or failed with a reason
        if failures or left_out:
            self.book.not_everywhere(rid, kind, {**failures, **left_out})
            return False
        self.ledger.set_file_state(rid, kind, "archived")
        self.book.count(archived=1)
        return True

    def _spool_path(self, rid: str, kind: str):
        return self.config.archive.spool_dir / f"{keys.sanitise_component(rid, fallback='recording')}.{kind}.part"

    def _overlapping(self, rid: str, kind: str, file_plan: FilePlan, reachable: list[str]) -> list[str]:
        """The targets that upload this file while it downloads: a file of at least
        overlap_cutoff, to a target that can, whose earlier copy is not in a problem state."""
        size = file_plan.expected_size
        if not size or size < self.config.archive.overlap_cutoff:
            return []
        return [name for name in reachable if self.targets[name].capabilities.overlapped_upload
                and not waits_for_finished_file(self.book, self.targets[name], rid, kind)]

    def _download(self, plan: RecordingPlan, file_plan: FilePlan, shown, feed: SpoolFeed | None = None
                  ) -> tuple[Download, DownloadedFile] | None:
        """The file in the spool, complete and hashed; None when it failed (recorded) or the
        run is stopping (its bytes stay for the next run). `feed` learns how far it got."""
        rid, kind = plan.id, file_plan.kind
        archive = self.config.archive
        spool = self._spool_path(rid, kind)

        def received(n: int) -> None:
            self.budget.received(n)  # counts --max-transfer; waits for --bwlimit
            if shown:
                shown.update(n, download.held, download.content_total)

        ranged = (file_plan.expected_size or 0) >= archive.ranged_cutoff
        download = (RangedDownload if ranged else Download)(
            self.connections, self._url_provider(plan, kind), spool, expected_size=file_plan.expected_size,
            label=f"recording {rid} {kind}", refresh_margin=timedelta(seconds=archive.url_refresh_margin_seconds),
            attempts=archive.download_attempts, max_seconds=archive.retry_max_seconds, stop=self.stop,
            progress=received, md5=self._md5, feed=feed,
            **({"streams": archive.streams_per_file, "ramp": archive.ramp_streams} if ranged else {}))
        try:
            return download, download.run()
        except Interrupted:
            return None  # the spool stays: the next run resumes it
        except FileUnavailable as exc:
            self.book.file_lost(rid, kind, str(exc))
            download.discard()
            return None
        except DownloadError as exc:
            self.book.file_failed(rid, kind, str(exc))
            if not exc.retryable:
                download.discard()  # a retryable failure keeps its bytes for the next run
            return None
        finally:
            self.book.count(bytes_downloaded=download.fetched)  # what this run fetched, whatever became of it

    def _url_provider(self, plan: RecordingPlan, kind: str) -> Callable[[bool], SignedUrl]:
        if plan.urls is not None:  # announced by a webhook: no API record to fetch again
            return plan.urls

        def provide(refresh: bool) -> SignedUrl:
            if refresh:
                try:
                    plan.recording = self.context.api.get_recording(plan.id)
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
        self.book.audit("downloaded", recording_id=rid, kind=kind, size=local.size, sha256=sums.sha256,
                        source_host=local.source_host, resumed=local.resumed, refreshed=local.refreshed,
                        fetched=local.fetched, note=file_plan.size_note)

    def _keep_only_still_at_risk(self) -> None:
        """The at-risk list names the recordings still not archived everywhere after the run
        (a recording found lost is reported as lost instead)."""
        still = []
        for rid in self.summary.at_risk_ids:
            row = self.ledger.recording(rid)
            if row is None or row.state not in ("archived", "lost"):
                still.append(rid)
        self.summary.at_risk_ids, self.summary.at_risk = still, len(still)


def _here(function, *args) -> Future:
    """`function(*args)` run on this thread, as a done future."""
    future: Future = Future()
    future.set_result(function(*args))
    return future


def _aborted(future: Future) -> bool:
    """Did this upload abort because the file it read while downloading failed or changed?"""
    return isinstance(future.exception(), SourceFailed)


def _outcome(future: Future) -> str | None:
    """A copy's failure reason, or None once archived. An upload that read the file while it
    downloaded and was stopped with it (the run is stopping) recorded nothing: not archived."""
    try:
        return future.result()
    except SourceFailed as exc:
        return f"not stored: {exc}"
