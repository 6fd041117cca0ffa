"""Many processes on one PostgreSQL ledger: `rtk-archive run` and `rtk-archive worker` cooperate
through leases (pipeline.ledger.leases) instead of refusing each other.

A `run` lists its window (waiting for its turn to list), records the listing, then archives
only the recordings it can claim; recordings another worker holds are that worker's. A `worker`
loops: when no worker listed within `--list-every`, it lists (one worker at a time), then claims
up to `concurrency` recordings, fetches each from the API (the source of truth, fresh URLs),
archives them, and gives the leases back. A heartbeat thread keeps its leases alive; a worker
killed outright loses them at their expiry and another takes the work over. The first SIGTERM
or SIGINT lets in-flight uploads finish, gives every lease back, and exits 0. Recordings a
webhook announced (`serve --workers 0` records them as hints) are fetched from the API and
recorded at each round, so they are claimed at once rather than at the next listing.

Each process has its own spool folder (`<spool_dir>/<host>-<pid>`): a run that clears its spool
never touches another worker's downloads; those left by processes that died on this host are
removed when the next one starts."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta, timezone

from pipeline.archive.context import Context
from pipeline.archive.plan import RecordingPlan, list_uploaded, plan
from pipeline.clock import iso_utc
from pipeline.config import Config
from pipeline.realtimekit import ApiAuthError, ApiError, ApiNotFound
from storage.target import process_alive

log = logging.getLogger("rtk_archive.workers")

RETRY_AFTER = 300.0  # seconds before a recording that failed is claimed again
HINT_RETRY = 30.0  # seconds before an announced recording the API does not show yet is fetched again


def per_process_spool(config: Config) -> Config:
    """The configuration with this process's own spool folder, after removing the folders
    of processes on this host that are gone."""
    base = config.archive.spool_dir
    host = socket.gethostname()
    if base.is_dir():
        for folder in base.glob(f"{host}-*"):
            pid = folder.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
    own = base / f"{host}-{os.getpid()}"
    return config.model_copy(update={"archive": config.archive.model_copy(update={"spool_dir": own})})


class Membership:
    """This process as a worker of a shared ledger: its row in `workers`, its work queue and
    the heartbeat thread that keeps its leases alive (every third of the lease)."""

    def __init__(self, context: Context, *, lease_seconds: float):
        from pipeline.ledger.leases import WorkQueue

        self.queue = WorkQueue(context.ledger, f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                               lease_seconds=lease_seconds)
        self.queue.join(socket.gethostname(), os.getpid(), context.command)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        from pipeline.errors import BookkeepingError

        while not self._stop.wait(self.queue.lease_seconds / 3):
            try:
                self.queue.heartbeat()
            except BookkeepingError as exc:  # the ledger is unreachable: the leases may expire; say so
                log.warning("heartbeat: %s", exc)

    def leave(self) -> None:
        self._stop.set()
        self._thread.join()
        self.queue.leave()


@contextmanager
def membership(context: Context, *, lease_seconds: float = 60.0) -> Iterator[Membership | None]:
    """A Membership while the block runs on a shared ledger (None on SQLite); leaves at the end,
    whatever happened (its leases go back at once)."""
    if not context.config.ledger.shared or not context.recording:
        yield None
        return
    member = Membership(context, lease_seconds=lease_seconds)
    try:
        yield member
    finally:
        member.leave()


def listing_turn(member: Membership | None):
    """A `run` lists its own window, one process at a time (it waits for its turn)."""
    return nullcontext(True) if member is None else member.queue.listing_turn(0, wait=True)


def execute_claimed(archiver, plans: list[RecordingPlan], member: Membership | None) -> None:
    """Execute the plans this process can claim (all of them on SQLite); the others are being
    archived by another worker."""
    if member is None:
        archiver.execute(plans)
        return
    work = [plan for plan in plans if plan.work]
    claimed = set(member.queue.claim(len(work), only=[plan.id for plan in work]))
    if len(claimed) < len(work):
        log.info("%d recording(s) are being archived by other workers", len(work) - len(claimed))
    try:
        archiver.execute([plan for plan in plans if plan.id in claimed])
    finally:
        _give_back(archiver, member, claimed)


def _give_back(archiver, member: Membership, claimed) -> None:
    """Leases back: a recording finished, or left because this worker was asked to stop, is
    free at once; one still not archived (failed, a target left out, the API could not give it)
    waits RETRY_AFTER, so no worker retries it in a tight loop."""
    stopped = archiver.context.stop.is_set()
    for rid in claimed:
        row = archiver.ledger.recording(rid)
        unfinished = row is not None and row.state in ("pending", "failed")
        member.queue.release(rid, retry_after=RETRY_AFTER if unfinished and not stopped else None)


def worker_loop(member: Membership, *, list_every: float, poll: float, once: bool):
    """The body of `rtk-archive worker` (pipeline.archive.run.execute_run's `work`): returns the
    plans it executed when stopped (a signal) or, with `once`, when nothing is left to claim."""

    def work(archiver) -> list[RecordingPlan]:
        context = archiver.context
        executed: list[RecordingPlan] = []
        while not context.stop.is_set():
            with member.queue.listing_turn(0 if once and not executed else list_every) as due:
                if due:  # the window `run` lists without --since: [archive] lookback_days
                    try:
                        archiver.record(plan(context, list_uploaded(context, _lookback(context.config), None, None)))
                    except ApiAuthError:
                        raise  # the token was refused: nothing will work until a person acts
                    except ApiError as exc:  # after the client's own retries: list again next time
                        log.warning("listing recordings failed: %s; claiming what the ledger has", exc)
            _record_announced(archiver, plan)
            claimed = member.queue.claim(context.config.archive.concurrency)
            if not claimed:
                if once:
                    break
                context.stop.wait(poll)
                continue
            plans = _fetch_and_plan(archiver, claimed, plan)
            try:
                archiver.execute(plans)
            finally:
                _give_back(archiver, member, claimed)
            executed += plans
        return executed

    return work


def _record_announced(archiver, plan) -> None:
    """Recordings webhooks announced (`serve` recorded them as hints): each fetched from the API,
    the source of truth, and recorded like a listing, so that claims take them now; the hint is
    then done (the work queue has the recording). Transcripts, summaries and chats are left to a
    `serve` with workers: their URLs are in its spool. Workers that take the same hint at once
    record the same recording twice, which changes nothing."""
    context = archiver.context
    now = datetime.now(timezone.utc)
    hints = [hint for hint in context.ledger.pending_hints(100, now=iso_utc(now)) if hint.kind == "recording"]
    fetched = []
    for hint in hints:
        try:
            recording = context.api.get_recording(hint.subject_id)
        except ApiNotFound:
            context.ledger.finish_hint(hint.subject_id, hint.status, hint.kind, state="failed",
                                       error="the RealtimeKit API does not know this recording")
            continue
        except ApiError as exc:
            recording, reason = None, f"fetching it from the API failed: {exc}"
        else:
            reason = f"the API says its status is {recording.status or 'missing'}, not UPLOADED"
        if recording is None or recording.status != "UPLOADED":  # the API may lag behind the webhook
            if hint.attempts + 1 >= context.config.serve.hint_attempts:  # the next listing still finds it
                log.error("announced recording %s: given up after %d attempts: %s", hint.subject_id,
                          hint.attempts + 1, reason)
                context.ledger.finish_hint(hint.subject_id, hint.status, hint.kind, state="failed", error=reason)
                continue
            log.warning("announced recording %s: %s; trying again in %.0f s", hint.subject_id, reason, HINT_RETRY)
            context.ledger.finish_hint(hint.subject_id, hint.status, hint.kind, state="pending", error=reason,
                                       retry_at=iso_utc(now + timedelta(seconds=HINT_RETRY)))
            continue
        fetched.append((hint, recording))
    if fetched:
        archiver.record(plan(context, [recording for _, recording in fetched]))
        for hint, _ in fetched:
            context.ledger.finish_hint(hint.subject_id, hint.status, hint.kind, state="done")


def _lookback(config: Config) -> datetime | None:
    days = config.archive.lookback_days
    return datetime.now(timezone.utc) - timedelta(days=days) if days else None


def _fetch_and_plan(archiver, claimed: list[str], plan) -> list[RecordingPlan]:
    """Each claimed recording as the API has it now (fresh URLs), planned against the ledger; one
    the API no longer has, or cannot give now, is given back for a later attempt."""
    context = archiver.context
    recordings = []
    for rid in claimed:
        try:
            recordings.append(context.api.get_recording(rid))
        except ApiNotFound:
            log.warning("recording %s: the API no longer has it; left for the next listing", rid)
        except ApiError as exc:
            log.warning("recording %s: cannot be fetched now (%s); retried later", rid, exc)
    planning = plan(context, recordings)
    archiver.record(planning)  # a recording no longer archivable is recorded as skipped, and why
    return planning.plans
