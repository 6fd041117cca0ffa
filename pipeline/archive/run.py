"""One archive run over an opened Context: record its start, prepare the spool, probe the
targets (a failing one is left out), list the app's UPLOADED recordings, plan against what the
ledger knows (read in batches), record the plan, execute it, complete what the ledger alone
still owes (manifests), clear the spool, ship the audit log, record the run's end. The exit
code it records in the ledger is the one the command line returns."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pipeline import errors
from pipeline.realtimekit import ApiAuthError, ApiError
from pipeline.archive import preflight, workers
from pipeline.archive.bookkeeping import Book, RunSummary
from pipeline.archive.context import Context
from pipeline.archive.execute import Archiver
from pipeline.archive.plan import Planning, RecordingPlan, list_uploaded, plan
from pipeline.archive.shipping import ship_audit_log
from pipeline.archive.spool import HINTS_FOLDER, prepare_spool
from pipeline.clock import iso_utc
from storage import StorageError, Target

log = logging.getLogger("rtk_archive.run")

# Recordings listed, planned and archived at a time: memory stays flat however many the window
# holds. Within a batch, closest to deletion first; the listing itself comes oldest first.
LISTING_BATCH = 1000


@dataclass
class RunResult:
    summary: RunSummary
    exit_code: int
    planned: list[RecordingPlan] = field(default_factory=list)  # for --dry-run


def execute_run(context: Context, *, since: datetime | None = None, until: datetime | None = None,
                meeting_id: str | None = None, progress=None, recordings: list | None = None,
                planner: Callable[[Context], Planning] | None = None, work=None,
                lease_seconds: float = 60.0) -> RunResult:
    """An archive run, or a dry run when the context does not record (it reads the ledger only
    and creates and changes nothing). `recordings`: these (fetched by the caller, e.g. the ones
    webhooks announced) instead of a listing; `planner`: the plan itself, for files no API lists
    (a meeting's transcript, summary or chat export announced by webhook). On a shared
    (PostgreSQL) ledger the run is a worker among others (pipeline.archive.workers): it archives
    what it can claim; `work` replaces listing and archiving what was listed with a worker's loop."""
    book = Book(context)
    archiver = Archiver(book, progress=progress)
    if not context.recording:
        planning = plan(context, list_uploaded(context, since, until, meeting_id))
        archiver.count(planning)
        return RunResult(book.summary, errors.EXIT_OK, planning.plans)

    ledger, audit, summary = context.ledger, context.audit, book.summary
    ledger.start_run(context.run_id, context.command, socket.gethostname())
    exit_code = errors.EXIT_INTERNAL  # until the run decides otherwise: an unexpected error is a bug
    note = None
    failure: BaseException | None = None
    try:
        audit.event("run_started", command=context.command, since=iso_utc(since), until=iso_utc(until),
                    meeting_id=meeting_id, targets=sorted(context.targets), host=socket.gethostname())
        context.note_audit_head()
        prepare_spool(context.config.archive.spool_dir)  # before anything is downloaded
        # Before anything is downloaded: a target that fails its probe is left out of this run.
        preflight.leave_out_failing_targets(context.targets, archiver.leave_out)
        listing = recordings is None and planner is None and work is None
        if listing or work is not None:  # a run or a worker's start, not announced work: a sweep walks every target
            _sweep({name: t for name, t in context.targets.items() if name not in archiver.unavailable},
                   shared=context.config.ledger.shared)
        with stop_on_signals(context.stop), workers.membership(context, lease_seconds=lease_seconds) as member:
            planned: set[str] = set()
            try:
                if work is not None:
                    planned.update(plan.id for plan in work(member)(archiver))
                plannings = _plannings(context, member, since, until, meeting_id, recordings, planner, work)
                for planning in (ahead(plannings) if member is None else plannings):
                    archiver.record(planning)
                    workers.execute_claimed(archiver, planning.plans, member)
                    planned.update(plan.id for plan in planning.plans)
                    if context.stop.is_set():
                        break
            except ApiAuthError as exc:
                note = str(exc)
                raise
            except ApiError as exc:
                note = f"listing recordings failed: {exc}"
                raise
            archiver.finish()
            if member is None:  # on a shared ledger, other workers may be completing the others now
                archiver.completion.complete_from_ledger(done=planned)
        if summary.interrupted:
            exit_code = errors.EXIT_INTERRUPTED
            note = "interrupted; in-flight downloads were abandoned and resume on the next run"
        else:
            _clear_spool(context.config.archive.spool_dir)
            ship_audit_log(book, archiver.unavailable)
            problems = summary.failed or summary.lost or summary.copies_failed or archiver.unavailable
            exit_code = errors.EXIT_FAILURES if problems else errors.EXIT_OK
            if archiver.budget.reason:  # a failure still wins: it needs a person, the rest the next run
                summary.budget_stop, summary.files_not_started = archiver.budget.reason, archiver.not_started
                note = f"{archiver.budget.reason}: {archiver.not_started} file(s) not started"
                exit_code = exit_code or errors.EXIT_BUDGET
        return RunResult(summary, exit_code)
    except BaseException as exc:  # noted in the runs row as the CLI will exit; re-raised
        failure = exc
        exit_code = _exit_code_for(exc)
        note = note or (str(exc) if exit_code != errors.EXIT_INTERNAL else f"internal error: {type(exc).__name__}")
        raise
    finally:
        try:
            _finish_run(context, summary, exit_code=exit_code, note=note)
        except errors.BookkeepingError as exc:
            if failure is None:
                raise
            if str(exc) != str(failure):  # the run already failed (reported); its end cannot be recorded either
                log.error("%s", exc)


def _plannings(context: Context, member, since, until, meeting_id, recordings, planner, work) -> Iterator[Planning]:
    """What a run archives, planned a batch at a time: the plan given (announced work), the
    recordings given, or the listing of the window in batches of LISTING_BATCH read as they are
    needed, so memory stays flat in the number of recordings. On a shared ledger the window is
    read whole in this worker's listing turn (one worker lists at a time), then planned."""
    if work is not None:
        return
    if planner is not None:
        yield planner(context)
    elif recordings is not None:
        yield plan(context, recordings)
    elif member is None:
        for batch in batches(list_uploaded(context, since, until, meeting_id), LISTING_BATCH):
            yield plan(context, batch)
    else:
        with workers.listing_turn(member):
            listed = list(batches(list_uploaded(context, since, until, meeting_id), LISTING_BATCH))
        for batch in listed:
            yield plan(context, batch)


_END = object()


def ahead(items: Iterator) -> Iterator:
    """`items`, the next one made in a thread of its own while the caller works on this one (the
    next batch is listed and planned while this one is archived; planning only reads the ledger).
    An exception making the next one is raised where the caller takes it."""
    with ThreadPoolExecutor(1, thread_name_prefix="planning") as pool:
        coming = pool.submit(next, items, _END)
        while (item := coming.result()) is not _END:
            coming = pool.submit(next, items, _END)
            yield item


def batches(items: Iterable, size: int) -> Iterator[list]:
    """`items` in lists of at most `size`, each taken from the iterator only when wanted."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _finish_run(context: Context, summary: RunSummary, *, exit_code: int, note: str | None) -> None:
    """The run's last audit line, synced, then its outcome and the log's head in the ledger.
    An audit log that cannot take that line makes the run a failure (exit 74) with the reason,
    recorded in the ledger, then raised."""
    audit = context.audit
    counts = summary.counts()
    trail_error = None
    try:
        if audit.failure is None:
            audit.event("run_finished", exit_code=exit_code, note=note, **counts)
            audit.sync()  # before the ledger says how the run ended
    except errors.BookkeepingError as exc:
        trail_error = exc
    if audit.failure is not None and exit_code != errors.EXIT_BOOKKEEPING:
        exit_code, note = errors.EXIT_BOOKKEEPING, audit.failure
    context.ledger.finish_run(context.run_id, counts=counts, exit_code=exit_code, note=note, audit_head=audit.head)
    context.note_audit_head()
    if trail_error is not None:
        raise trail_error


def _exit_code_for(exc: BaseException) -> int:
    """The exit code the command line gives for an exception that ends a run."""
    if isinstance(exc, errors.BookkeepingError):  # the ledger or audit log failed: nothing new was started
        return errors.EXIT_BOOKKEEPING
    if isinstance(exc, ApiError):
        return errors.EXIT_API
    if isinstance(exc, errors.ConfigError):
        return errors.EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return errors.EXIT_INTERRUPTED
    return errors.EXIT_INTERNAL


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop starting work, abandon downloads (their spool files stay for
    the next run), let in-flight uploads finish. A second one: leave at once (the ledger is
    consistent at every step, so nothing is corrupted)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received = itertools.count()  # next() is one C call: two signals at once still count 0, then 1

    def handle(signum, _frame):
        if next(received):
            log.error("second %s: leaving now", signal.Signals(signum).name)
            os._exit(errors.EXIT_INTERRUPTED)
        stop.set()  # before the log line: a second signal may arrive while it is written
        log.warning("%s received: finishing in-flight uploads, abandoning downloads; "
                    "send it again to quit at once", signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


SHARED_SWEEP_AGE = 900.0  # seconds: on a shared ledger, a temporary not written for this long is abandoned


def _sweep(targets: dict[str, Target], *, shared: bool = False) -> None:
    """Remove temporaries (and probe objects) a killed run left at targets where they are
    visible (local, sftp) and abort the multipart uploads it left open at S3; on a shared
    ledger only those not written for a while (other workers upload now)."""
    for target in targets.values():
        try:
            removed = target.sweep_partials(older_than=SHARED_SWEEP_AGE if shared else None)
        except StorageError as exc:
            log.warning("could not clean up unfinished uploads at %s: %s", target.name, exc)
            continue
        if removed:
            log.info("removed %d unfinished upload(s) or probe object(s) a previous run left at %s",
                     removed, target.name)


def _clear_spool(spool_dir: Path) -> None:
    """After a run that was not interrupted, nothing in the spool is resumable any more."""
    if spool_dir.exists():
        for path in spool_dir.iterdir():
            if path.name == HINTS_FOLDER:  # webhooks' URLs still to be used, not this run's files
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
