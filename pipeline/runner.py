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

from pipeline import errors
from pipeline.api import ApiAuthError, ApiError, RealtimeKitClient
from pipeline.archive import Archiver, RunSummary
from pipeline.audit import AuditLog
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.hashing import hash_file
from pipeline.ledger import Ledger, iso_utc
from pipeline.lock import RunLock
from pipeline.spool import prepare_spool
from storage.base import LocalFile, StorageError, Target
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


def run_archive(config: Config, *, command: str, since: datetime | None = None, until: datetime | None = None,
                meeting_id: str | None = None, dry_run: bool = False, concurrency: int | None = None,
                progress=None, redact=lambda s: s, stop: threading.Event | None = None) -> RunResult:
    stop = stop or threading.Event()
    run_id = uuid.uuid4().hex
    lock = RunLock(config.ledger.path)
    if not dry_run:
        lock.acquire(command)
    try:
        ledger = Ledger(config.ledger.path)
        audit = None if dry_run else AuditLog(config.audit.path, run_id, redact=redact)
        try:
            with open_targets(config) as targets, make_client(config) as api:
                archiver = Archiver(config, api=api, ledger=ledger, targets=targets, audit=audit, run_id=run_id,
                                    stop=stop, concurrency=concurrency, progress=progress)
                try:
                    return _run(archiver, config, ledger, audit, targets, command=command, since=since,
                                until=until, meeting_id=meeting_id, dry_run=dry_run, stop=stop)
                finally:
                    archiver.close()
        finally:
            if audit is not None:
                audit.close()
            ledger.close()
    finally:
        lock.release()


def _run(archiver: Archiver, config: Config, ledger: Ledger, audit: AuditLog | None, targets, *, command: str,
         since, until, meeting_id, dry_run: bool, stop: threading.Event) -> RunResult:
    summary = archiver.summary
    if dry_run:
        plans = archiver.plan(archiver.list_recordings(since=since, until=until, meeting_id=meeting_id), record=False)
        return RunResult(summary, errors.EXIT_OK, plans)

    ledger.start_run(archiver.run_id, command, socket.gethostname())
    audit.event("run_started", command=command, since=iso_utc(since), until=iso_utc(until), meeting_id=meeting_id,
                targets=sorted(targets), host=socket.gethostname())
    exit_code = errors.EXIT_INTERNAL  # until the run decides otherwise: an unexpected error is a bug
    note = None
    try:
        prepare_spool(config.archive.spool_dir)  # before anything is downloaded
        _sweep(targets)
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
        if summary.interrupted:
            exit_code = errors.EXIT_INTERRUPTED
            note = "interrupted; in-flight downloads were abandoned and resume on the next run"
        else:
            _clear_spool(config.archive.spool_dir)
            _ship_audit_log(config, audit, targets, archiver)
            exit_code = errors.EXIT_FAILURES if (summary.failed or summary.lost) else errors.EXIT_OK
        return RunResult(summary, exit_code, plans)
    except BaseException as exc:  # noted in the runs row as the CLI will exit; re-raised
        exit_code = _exit_code_for(exc)
        note = note or (str(exc) if exit_code != errors.EXIT_INTERNAL else f"internal error: {type(exc).__name__}")
        raise
    finally:
        audit.event("run_finished", exit_code=exit_code, note=note, **summary.counts())
        audit.sync()
        ledger.finish_run(archiver.run_id, counts=summary.counts(), exit_code=exit_code, note=note,
                          audit_head=audit.head)


def _exit_code_for(exc: BaseException) -> int:
    """The exit code the command line gives for an exception that ends a run."""
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
    """Copy the audit log, as it stands, to the targets named in [audit] ship_to."""
    if not config.audit.ship_to:
        return
    audit.sync()
    snapshot = config.archive.spool_dir / f"audit-{archiver.run_id}.jsonl"
    snapshot.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(config.audit.path, snapshot)
    os.chmod(snapshot, 0o600)
    try:
        hasher = hash_file(snapshot)
        local = LocalFile(path=snapshot, size=hasher.size, checksums=hasher.checksums())
        day = datetime.now().strftime("%Y/%m/%d")
        key = f"audit/{day}/rtk-archive-audit-{archiver.run_id}.jsonl"
        for name in config.audit.ship_to:
            try:
                stored = archiver.put_with_retries(targets[name], key, local, {"rtk_kind": "audit"})
            except StorageError as exc:
                archiver.problem(f"audit log -> {name}: {exc}")
                archiver.summary.failed += 1
                continue
            audit.event("audit_shipped", target=name, key=key, uri=stored.uri, sha256=local.checksums.sha256,
                        lines=audit.seq)
    finally:
        snapshot.unlink(missing_ok=True)

