"""serve's in-process worker: one thread that archives, one batch at a time, the recordings
webhooks announced (fetched again from the API, the source of truth: a webhook's URLs are only
hints) and the transcripts, summaries and chats they announced (no API has them: fetched from
their webhook's URL, pipeline.service.artifacts), and every `reconcile_every` an incremental
listing run that catches what no webhook announced. Each batch is an archive run of its own (a
`runs` row, its audit lines) through the archive engine, with `workers` recordings at once.
Batches never overlap: they share the spool.

Stopping: `stop` (set by the first SIGTERM/SIGINT) makes the batch in flight finish its
uploads and abandon its downloads, which resume later (the ledger is consistent at every
step); `shutdown()` then waits for it and starts no other."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline import errors
from pipeline.archive.context import Context
from pipeline.archive.run import execute_run
from pipeline.clock import iso_utc, utcnow
from pipeline.ledger.rows import Hint
from pipeline.realtimekit import ApiError, ApiNotFound
from pipeline.service.artifacts import ARTIFACT_KINDS, ArtifactWork
from pipeline.service.metrics import ServiceMetrics

log = logging.getLogger("rtk_archive.serve")

BATCH = 50  # announced recordings per archive run
FINISHED = ("archived", "skipped", "lost")  # recording states with nothing more to do
LEDGER_PAUSE = 5.0  # seconds: the ledger failed (a full disk...): wait before trying again
RETRY_MOST = 900.0  # seconds: the longest wait before an announced recording is tried again


class Worker:
    def __init__(self, context: Context, metrics: ServiceMetrics, *, concurrency: int, stop: threading.Event,
                 hints_dir: Path | None = None):
        self.context = context
        self.metrics = metrics
        self.concurrency = concurrency
        settings = context.config.serve
        self.reconcile_every = settings.reconcile_every
        self.hint_attempts = settings.hint_attempts
        self.hint_retry = settings.hint_retry
        self._closing = threading.Event()
        self._stop = stop
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_reconcile = time.monotonic()  # a first one at start-up: catch up on what was missed
        self.failure: str | None = None  # why the worker stopped by itself (a bug, or the audit log broke)
        self.artifacts = ArtifactWork(context, retry=self._retry, finish=self._finish,
                                      archived=self.metrics.archived.inc,
                                      hints_dir=hints_dir or context.config.archive.spool_dir)
        self.error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rtk-serve-worker", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def shutdown(self) -> None:
        """Start no new batch; wait for the one in flight."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        self.metrics.worker_alive.set(1)
        try:
            while not self._closing.is_set() and not self._stop.is_set():
                try:
                    busy = self._round()
                except errors.BookkeepingError as exc:
                    if self.context.audit is not None and self.context.audit.failure is not None:
                        raise  # the audit log takes no further line: nothing more can be archived
                    log.error("serve's worker: %s; trying again in %.0f s", exc, LEDGER_PAUSE)
                    self._closing.wait(LEDGER_PAUSE)
                    continue
                if not busy:
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
        except errors.BookkeepingError as exc:  # said once; /readyz turns 503 and serve exits 74 when stopped
            self.failure, self.error = str(exc), exc
            log.error("serve's worker stopped: %s", exc)
        except Exception as exc:  # a bug: said once, with its traceback, and /readyz turns 503
            self.failure, self.error = f"{type(exc).__name__}: {exc}", exc
            log.exception("serve's worker stopped: %s", self.failure)
        finally:
            self.metrics.worker_alive.set(0)

    def _round(self) -> bool:
        """Announced work first, then the reconcile when it is due; False when idle."""
        busy = self._archive_announced()
        if self._closing.is_set() or self._stop.is_set():
            return busy
        if self.reconcile_every and time.monotonic() >= self._next_reconcile:
            self._reconcile()
            self._next_reconcile = time.monotonic() + self.reconcile_every
            busy = True
        return busy

    def _archive_announced(self) -> bool:
        """One batch of due announced recordings; False when there was none."""
        hints = self.context.ledger.pending_hints(BATCH, now=utcnow())
        if not hints:
            return False
        announced = [hint for hint in hints if hint.kind in ARTIFACT_KINDS]
        if announced:  # transcripts, summaries, chats: their own batch (pipeline.service.artifacts)
            self.artifacts.archive(announced, self._batch)
        recordings = []
        for hint in hints:
            if hint.kind in ARTIFACT_KINDS:
                continue
            recording = self._fetch(hint)
            if recording is not None:
                recordings.append((hint, recording))
        if recordings:
            failure = self._batch(recordings=[recording for _, recording in recordings])
            for hint, _ in recordings:
                self._settle(hint, failure)
        return True

    def _fetch(self, hint: Hint):
        """The recording as the API has it now, or None (the hint is then settled here)."""
        try:
            recording = self.context.api.get_recording(hint.subject_id)
        except ApiNotFound:
            self._finish(hint, "failed", "the RealtimeKit API does not know this recording")
            return None
        except ApiError as exc:
            self._retry(hint, f"fetching it from the API failed: {exc}")
            return None
        if recording.status != "UPLOADED":  # the API may not show what the webhook said yet
            self._retry(hint, f"the API says its status is {recording.status or 'missing'}, not UPLOADED")
            return None
        return recording

    def _settle(self, hint: Hint, failure: str | None) -> None:
        row = self.context.ledger.recording(hint.subject_id)
        if failure is None and row is not None and row.state in FINISHED:
            self._finish(hint, "done", row.reason)
            if row.state == "archived":
                self.metrics.archived.inc()
        else:
            reason = failure or (row.reason if row else None) or "not archived everywhere yet"
            self._retry(hint, reason)

    def _retry(self, hint: Hint, reason: str, *, until: datetime | None = None) -> None:
        """Tried again later; given up after `hint_attempts`, unless `until` (a file only a
        webhook announced, no listing finds it again) is still ahead: tried until then."""
        self.metrics.worker_failures.inc()
        if hint.attempts + 1 >= self.hint_attempts and (until is None or until <= datetime.now(timezone.utc)):
            log.error("%s %s: given up after %d attempts: %s%s", hint.kind, hint.subject_id, hint.attempts + 1, reason,
                      " (the next reconcile or run still lists it)" if hint.kind == "recording" else "")
            self._finish(hint, "failed", reason)
            return
        delay = min(RETRY_MOST, self.hint_retry * 2 ** hint.attempts)
        log.warning("%s %s: %s; trying again in %.0f s", hint.kind, hint.subject_id, reason, delay)
        retry_at = iso_utc(datetime.now(timezone.utc) + timedelta(seconds=delay))
        self.context.ledger.finish_hint(hint.subject_id, hint.status, hint.kind, state="pending", error=reason,
                                        retry_at=retry_at)

    def _finish(self, hint: Hint, state: str, reason: str | None) -> None:
        self.context.ledger.finish_hint(hint.subject_id, hint.status, hint.kind, state=state, error=reason)

    def _reconcile(self) -> None:
        lookback = self.context.config.archive.lookback_days
        since = datetime.now(timezone.utc) - timedelta(days=lookback) if lookback else None
        log.info("reconcile: listing recordings%s", f" since {iso_utc(since)}" if since else "")
        self.metrics.reconciles.inc()
        self._batch(since=since)

    def _batch(self, **selection) -> str | None:
        """One archive run; the reason when it failed as a whole (the API or the bookkeeping),
        None when it ran (its files' outcomes are in the ledger)."""
        run_id = uuid.uuid4().hex
        config = self.context.config
        config = config.model_copy(update={"archive": config.archive.model_copy(update={"concurrency": self.concurrency})})
        batch = dataclasses.replace(self.context, config=config, run_id=run_id, stop=self._stop)
        if batch.audit is not None:
            batch.audit.run_id = run_id  # batches never overlap: each one's lines carry its own run id
        try:
            result = execute_run(batch, **selection)
        except (ApiError, errors.BookkeepingError) as exc:
            log.error("serve: archive run %s failed: %s", run_id, exc)
            if batch.audit is not None and batch.audit.failure is not None:
                raise  # the audit log refuses every further line: stop, /readyz says why
            return str(exc)
        counts = result.summary.counts()
        log.info("serve: archive run %s: %d file(s) archived, %d failed, %d lost", run_id,
                 counts["files_archived"], counts["files_failed"], counts["files_lost"])
        return None
