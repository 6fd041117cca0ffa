"""Wiring for one archive run: the lock, the ledger, the audit log, the targets, the API
client, signal handling, spool clean-up and audit shipping. The CLI stays thin."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipeline import errors, preflight
from pipeline.api import ApiAuthError, ApiError, RealtimeKitClient
from pipeline.archive import Archiver, RunSummary, verify_copy
from pipeline.audit import AuditLog
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.hashing import hash_file
from pipeline.ledger import Ledger, iso_utc
from pipeline.lock import RunLock
from pipeline.spool import prepare_spool
from storage import LocalFile, StorageError, Target
from storage.registry import build_target

log = logging.getLogger("rtk_archive.run")


@dataclass
class RunResult:
    summary: RunSummary
    exit_code: int
    planned: list  # RecordingPlan, for --dry-run


def make_client(config: Config) -> RealtimeKitClient:
    if not config.api_token:
        raise ConfigError(
            f"{config.path or '<config>'}: source.api_token: no API token; set api_token or the "
            "environment variable CLOUDFLARE_API_TOKEN"
        )
    return RealtimeKitClient(base_url=config.base_url, account_id=config.source.account_id,
                             app_id=config.source.app_id, api_token=config.api_token,
                             timeout=config.source.timeout, per_page=config.source.per_page,
                             max_retries=config.source.max_retries,
                             max_retry_seconds=config.source.max_retry_seconds)


@contextlib.contextmanager
def open_targets(config: Config, only: str | None = None) -> Iterator[dict[str, Target]]:
    selected = [t for t in config.targets if only is None or t.name == only]
    if only is not None and not selected:
        raise ConfigError(f"no target named {only!r} in {config.path or '<config>'}")
    targets: dict[str, Target] = {}
    try:
        for settings in selected:
            targets[settings.name] = build_target(settings)
        yield targets
    finally:
        for target in targets.values():
            target.close()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop starting work, abandon downloads (their spool files stay for
    the next run), let in-flight uploads finish. A second one: leave at once (the ledger is
    consistent at every step, so nothing is corrupted)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, _frame):
        if stop.is_set():
            log.error("second %s: leaving now", signal.Signals(signum).name)
            os._exit(errors.EXIT_INTERRUPTED)
        log.warning("%s received: finishing in-flight uploads, abandoning downloads; "
                    "send it again to quit at once", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def bookkeeping(config: Config, command: str, run_id: str, *, redact=lambda s: s, read_only: bool = False,
                refusal_is_a_run: bool = False) -> Iterator[tuple[Ledger, AuditLog | None]]:
    """The ledger and audit log of one command, opened in this order. To record: the lock,
    the ledger (created, owner-only, if missing), then the audit log; an audit log that cannot
    be opened refuses the command (noted in the ledger as a failed run when `refusal_is_a_run`):
    nothing is archived without its trail. Read-only: the ledger opened for reading only, no
    lock, no audit log, nothing created. Each failure is one line (`BookkeepingError`)."""
    if read_only:
        ledger = Ledger(config.ledger.path, read_only=True)
        try:
            yield ledger, None
        finally:
            ledger.close()
        return
    lock = RunLock(config.ledger.path).acquire(command)
    try:
        ledger = Ledger(config.ledger.path)
        try:
            try:
                audit = AuditLog(config.audit.path, run_id, redact=redact)
            except errors.BookkeepingError as exc:
                if refusal_is_a_run:
                    ledger.start_run(run_id, command, socket.gethostname())
                    ledger.finish_run(run_id, counts={}, exit_code=errors.EXIT_BOOKKEEPING,
                                      note=f"{exc}; nothing was done")
                raise
            try:
                yield ledger, audit
            finally:
                audit.close()
        finally:
            ledger.close()
    finally:
        lock.release()


def run_archive(config: Config, *, command: str, since: datetime | None = None, until: datetime | None = None,
                meeting_id: str | None = None, dry_run: bool = False, concurrency: int | None = None,
                progress=None, redact=lambda s: s, stop: threading.Event | None = None) -> RunResult:
    """An archive run; `dry_run` reads the ledger only and creates and changes nothing."""
    stop = stop or threading.Event()
    run_id = uuid.uuid4().hex
    with bookkeeping(config, command, run_id, redact=redact, read_only=dry_run, refusal_is_a_run=True) \
            as (ledger, audit):
        with open_targets(config) as targets, make_client(config) as api:
            archiver = Archiver(config, api=api, ledger=ledger, targets=targets, audit=audit, run_id=run_id,
                                stop=stop, concurrency=concurrency, progress=progress)
            try:
                return _run(archiver, config, ledger, audit, targets, command=command, since=since,
                            until=until, meeting_id=meeting_id, dry_run=dry_run, stop=stop)
            finally:
                archiver.close()


def _run(archiver: Archiver, config: Config, ledger: Ledger, audit: AuditLog | None, targets, *, command: str,
         since, until, meeting_id, dry_run: bool, stop: threading.Event) -> RunResult:
    summary = archiver.summary
    if dry_run:
        plans = archiver.plan(archiver.list_recordings(since=since, until=until, meeting_id=meeting_id), record=False)
        return RunResult(summary, errors.EXIT_OK, plans)

    ledger.start_run(archiver.run_id, command, socket.gethostname())
    exit_code = errors.EXIT_INTERNAL  # until the run decides otherwise: an unexpected error is a bug
    note = None
    failure: BaseException | None = None
    try:
        audit.event("run_started", command=command, since=iso_utc(since), until=iso_utc(until),
                    meeting_id=meeting_id, targets=sorted(targets), host=socket.gethostname())
        note_audit_head(config, ledger, audit, command=command, run_id=archiver.run_id)
        prepare_spool(config.archive.spool_dir)  # before anything is downloaded
        # Before anything is downloaded: a target that fails its probe is left out of this run.
        preflight.leave_out_failing_targets(targets, archiver.leave_out)
        _sweep({name: t for name, t in targets.items() if name not in archiver.unavailable})
        with stop_on_signals(stop):
            try:
                recordings = archiver.list_recordings(since=since, until=until, meeting_id=meeting_id)
            except ApiAuthError as exc:
                note = str(exc)
                raise
            except ApiError as exc:
                note = f"listing recordings failed: {exc}"
                raise
            plans = archiver.plan(recordings)
            archiver.execute(plans)
            archiver.complete_from_ledger(done={plan.id for plan in plans})
        if summary.interrupted:
            exit_code = errors.EXIT_INTERRUPTED
            note = "interrupted; in-flight downloads were abandoned and resume on the next run"
        else:
            _clear_spool(config.archive.spool_dir)
            _ship_audit_log(config, audit, targets, archiver)
            exit_code = errors.EXIT_FAILURES \
                if (summary.failed or summary.lost or summary.copies_failed or archiver.unavailable) else errors.EXIT_OK
        return RunResult(summary, exit_code, plans)
    except BaseException as exc:  # noted in the runs row as the CLI will exit; re-raised
        failure = exc
        exit_code = _exit_code_for(exc)
        note = note or (str(exc) if exit_code != errors.EXIT_INTERNAL else f"internal error: {type(exc).__name__}")
        raise
    finally:
        try:
            _finish_run(config, ledger, audit, archiver, command=command, exit_code=exit_code, note=note)
        except errors.BookkeepingError as exc:
            if failure is None:
                raise
            if str(exc) != str(failure):  # the run already failed (reported); its end cannot be recorded either
                log.error("%s", exc)


def _finish_run(config: Config, ledger: Ledger, audit: AuditLog, archiver: Archiver, *, command: str,
                exit_code: int, note: str | None) -> None:
    """The run's last audit line, synced, then its outcome and the log's head in the ledger.
    An audit log that cannot take that line makes the run a failure (exit 74) with the reason,
    recorded in the ledger, then raised."""
    counts = archiver.summary.counts()
    trail_error = None
    try:
        if audit.failure is None:
            audit.event("run_finished", exit_code=exit_code, note=note, **counts)
            audit.sync()  # before the ledger says how the run ended
    except errors.BookkeepingError as exc:
        trail_error = exc
    if audit.failure is not None and exit_code != errors.EXIT_BOOKKEEPING:
        exit_code, note = errors.EXIT_BOOKKEEPING, audit.failure
    ledger.finish_run(archiver.run_id, counts=counts, exit_code=exit_code, note=note, audit_head=audit.head)
    note_audit_head(config, ledger, audit, command=command, run_id=archiver.run_id)
    if trail_error is not None:
        raise trail_error


def note_audit_head(config: Config, ledger: Ledger, audit: AuditLog, *, command: str, run_id: str) -> None:
    """Sync the audit log and record in the ledger where it ends now (its last whole line,
    also after a write failed), so `audit verify` catches a log cut short after this command."""
    if audit.failure is None:
        audit.sync()
    ledger.record_audit_head(audit_path=config.audit.path, lines=audit.lines, head=audit.head, command=command,
                             run_id=run_id)


def _exit_code_for(exc: BaseException) -> int:
    """The exit code the command line gives for an exception that ends a run."""
    if isinstance(exc, errors.BookkeepingError):  # the ledger or audit log failed: nothing new was started
        return errors.EXIT_BOOKKEEPING
    if isinstance(exc, ApiError):
        return errors.EXIT_API
    if isinstance(exc, ConfigError):
        return errors.EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return errors.EXIT_INTERRUPTED
    return errors.EXIT_INTERNAL


def _sweep(targets: dict[str, Target]) -> None:
    """Remove temporaries a killed run left at targets where they are visible (local, sftp)."""
    for target in targets.values():
        try:
            removed = target.sweep_partials()
        except StorageError as exc:
            log.warning("could not clean temporaries at %s: %s", target.name, exc)
            continue
        if removed:
            log.info("removed %d temporary file(s) a previous run left at %s", removed, target.name)


def _clear_spool(spool_dir: Path) -> None:
    """After a run that was not interrupted, nothing in the spool is resumable any more."""
    if spool_dir.exists():
        for path in spool_dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def _ship_audit_log(config: Config, audit: AuditLog, targets: dict[str, Target], archiver: Archiver) -> None:
    """Copy the audit log, as it stands, to the targets named in [audit] ship_to, verified there
    like any copy."""
    if not config.audit.ship_to:
        return
    audit.sync()
    snapshot = config.archive.spool_dir / f"audit-{archiver.run_id}.jsonl"
    try:
        try:
            local = _snapshot(config.audit.path, snapshot)
        except OSError as exc:
            archiver.problem(f"audit log: cannot copy it to {snapshot} to ship it: {errors.os_reason(exc)}")
            archiver.summary.failed += 1
            return
        day = datetime.now().strftime("%Y/%m/%d")
        key = f"audit/{day}/rtk-archive-audit-{archiver.run_id}.jsonl"
        for name in config.audit.ship_to:
            if name in archiver.unavailable:
                continue  # left out of this run, reported once already
            try:
                stored = archiver.put_with_retries(targets[name], key, local, {"rtk_kind": "audit"})
                verify_copy(local, stored, name)
            except (StorageError, errors.VerificationError) as exc:
                archiver.problem(f"audit log -> {name}: {exc}")
                archiver.summary.failed += 1
                archiver.summary.copies_failed += 1
                continue
            audit.event("audit_shipped", target=name, key=key, uri=stored.uri, sha256=local.checksums.sha256,
                        lines=audit.seq)
    finally:
        snapshot.unlink(missing_ok=True)


def _snapshot(source: Path, snapshot: Path) -> LocalFile:
    """A private copy of the log in the spool (the log keeps growing while it is shipped)."""
    snapshot.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(source, "rb") as src, os.fdopen(os.open(snapshot, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600),
                                              "wb") as dst:
        shutil.copyfileobj(src, dst)
    hasher = hash_file(snapshot)
    return LocalFile(path=snapshot, size=hasher.size, checksums=hasher.checksums())
