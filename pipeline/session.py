"""The one composition root: every command opens what it needs here, once, in one order, and
closes it in the reverse order: the ledger (with its run lock when the command records), the
audit log, the targets and the RealtimeKit client.

Recording: the ledger is opened to record (created owner-only when missing; a second command
that records is refused), then the audit log; an audit log that cannot be opened refuses the
command (noted in the ledger as a failed run when `refusal_is_a_run`): nothing is archived
without its trail. Reading: the ledger read-only, no lock, no audit log, nothing created."""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Iterator

from pipeline import errors
from pipeline.archive.context import Context
from pipeline.audit import AuditLog
from pipeline.config import Config
from pipeline.ledger import open_ledger
from storage import Target, build_target

log = logging.getLogger("rtk_archive.session")


@contextlib.contextmanager
def open_session(config: Config, command: str, *, record: bool, targets: bool | str = False, api: bool = False,
                 redact=lambda text: text, refusal_is_a_run: bool = False,
                 or_read_only: bool = False) -> Iterator[Context]:
    """Open what `command` needs. `targets`: False, True (all) or one target's name. `api`: the
    RealtimeKit client (file downloads have their own connections, opened by the archive run:
    pipeline.archive.bytepath). `or_read_only`: when the ledger or audit log cannot be opened to
    record, read only (and say so) instead of failing."""
    run_id = uuid.uuid4().hex
    with contextlib.ExitStack() as stack:
        ledger, audit = _bookkeeping(stack, config, command, run_id, record=record, redact=redact,
                                     refusal_is_a_run=refusal_is_a_run, or_read_only=or_read_only)
        context = Context(config=config, command=command, run_id=run_id, ledger=ledger, audit=audit)
        if targets:
            context.targets = stack.enter_context(open_targets(config, None if targets is True else targets))
        if api:
            context.api = stack.enter_context(make_client(config))
        yield context


def _bookkeeping(stack: contextlib.ExitStack, config: Config, command: str, run_id: str, *, record: bool,
                 redact, refusal_is_a_run: bool, or_read_only: bool):
    if record and or_read_only and not config.ledger.shared and not config.ledger.path.exists():
        record = False  # nothing archived: nothing to record results against, nothing to create
    if record:
        try:
            return _to_record(stack, config, command, run_id, redact, refusal_is_a_run)
        except errors.BookkeepingError as exc:
            if not or_read_only:
                raise
            log.warning("%s cannot record its results (%s): checking and reporting only", command, exc)
    ledger = open_ledger(config.ledger.location)
    stack.callback(ledger.close)
    return ledger, None


def _to_record(stack: contextlib.ExitStack, config: Config, command: str, run_id: str, redact,
               refusal_is_a_run: bool):
    ledger = open_ledger(config.ledger.location, command=command, pool_size=config.archive.concurrency * 2 + 2)
    stack.callback(ledger.close)
    try:
        audit = AuditLog(config.audit.path, run_id, redact=redact)
    except errors.BookkeepingError as exc:
        if refusal_is_a_run:
            ledger.start_run(run_id, command, socket.gethostname())
            ledger.finish_run(run_id, counts={}, exit_code=errors.EXIT_BOOKKEEPING, note=f"{exc}; nothing was done")
        ledger.close()
        stack.pop_all()
        raise
    stack.callback(audit.close)
    return ledger, audit


@contextlib.contextmanager
def open_targets(config: Config, only: str | None = None) -> Iterator[dict[str, Target]]:
    selected = [t for t in config.targets if only is None or t.name == only]
    if only is not None and not selected:
        raise errors.ConfigError(f"no target named {only!r} in {config.path or '<config>'}")
    targets: dict[str, Target] = {}
    try:
        for settings in selected:
            targets[settings.name] = build_target(settings)
        yield targets
    finally:
        for target in targets.values():
            target.close()


def make_client(config: Config):
    """The RealtimeKit API client (imported here, not at start-up: commands that only read the
    ledger never load the HTTP stack)."""
    from pipeline.realtimekit import RealtimeKitClient

    if not config.api_token:
        raise errors.ConfigError(
            f"{config.path or '<config>'}: source.api_token: no API token; set api_token or the "
            "environment variable CLOUDFLARE_API_TOKEN")
    return RealtimeKitClient(base_url=config.base_url, account_id=config.source.account_id,
                             app_id=config.source.app_id, api_token=config.api_token,
                             timeout=config.source.timeout, per_page=config.source.per_page,
                             max_retries=config.source.max_retries,
                             max_retry_seconds=config.source.max_retry_seconds)


# --------------------------------------------------------------------------- the commands that archive


def run_archive(config: Config, *, command: str, since=None, until=None, meeting_id: str | None = None,
                dry_run: bool = False, concurrency: int | None = None, progress=None, redact=lambda text: text,
                stop=None, work=None, lease_seconds: float = 60.0):
    """An archive run (`run`, `backfill`, `demo`) from opening to closing; `dry_run` reads the
    ledger only and creates and changes nothing."""
    from pipeline.archive.run import execute_run
    from pipeline.archive.workers import per_process_spool

    if concurrency is not None:
        config = config.model_copy(update={"archive": config.archive.model_copy(update={"concurrency": concurrency})})
    if config.ledger.shared and not dry_run:
        config = per_process_spool(config)  # other workers on this host have spools of their own
    with open_session(config, command, record=not dry_run, targets=True, api=True,
                      redact=redact, refusal_is_a_run=True) as context:
        if stop is not None:
            context.stop = stop
        return execute_run(context, since=since, until=until, meeting_id=meeting_id, progress=progress, work=work,
                           lease_seconds=lease_seconds)


def run_worker(config: Config, *, list_every: float, poll: float, lease_seconds: float, once: bool,
               redact=lambda text: text):
    """`worker`: a long-running archive run on a shared (PostgreSQL) ledger that claims its work
    (pipeline.archive.workers); SIGTERM ends it cleanly."""
    from pipeline.archive.workers import worker_loop

    if not config.ledger.shared:
        raise errors.ConfigError(f"{config.path or '<config>'}: ledger: `worker` needs a shared ledger: set "
                                 "[ledger] url to a PostgreSQL database (an SQLite ledger takes one run at a time)")
    return run_archive(config, command="worker", redact=redact, lease_seconds=lease_seconds,
                       work=lambda member: worker_loop(member, list_every=list_every, poll=poll, once=once))


def verify_archive(config: Config, *, target: str | None, since, until, deep: bool, redact=lambda text: text):
    """`verify`: results recorded when the ledger and audit log can take them, otherwise
    checked and reported only (said in one warning line)."""
    from pipeline.archive.reverify import verify_archive as verify

    with open_session(config, "verify", record=True, or_read_only=True, targets=target or True,
                      redact=redact) as context:
        return verify(context, target=target, since=since, until=until, deep=deep)


def scrub_archive(config: Config, *, target: str | None, budget, max_age, deep: bool, redact=lambda text: text):
    """`verify --scrub`: recorded like `verify` (or checked and reported only, said in one line)."""
    from pipeline.archive.scrub import scrub_archive as scrub

    with open_session(config, "verify", record=True, or_read_only=True, targets=target or True,
                      redact=redact) as context:
        return scrub(context, target=target, budget=budget, max_age=max_age, deep=deep)


def repair_archive(config: Config, *, target: str | None, dry_run: bool, redact=lambda text: text):
    """`repair`: every target is opened (the good copies may be anywhere); it records what it
    does (a ledger or audit log that cannot be used refuses it), except with `dry_run`."""
    from pipeline.archive.repair import repair_archive as repair

    if target is not None and target not in {t.name for t in config.targets}:
        raise errors.ConfigError(f"no target named {target!r} in {config.path or '<config>'}")
    # No ledger yet: nothing was archived, nothing to repair, and nothing is created to say so.
    record = not dry_run and config.ledger.path.exists()
    with open_session(config, "repair", record=record, targets=True, redact=redact) as context:
        return repair(context, target=target, dry_run=not record)
