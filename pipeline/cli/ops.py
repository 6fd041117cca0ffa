"""What an operator's tooling sees of a command, after it: the heartbeat (`[notify] ping_url`:
/start when a run starts, its exit code when it ends) and the Prometheus textfile
(`[metrics] textfile`, rewritten after every command that records: run, backfill, verify).
Neither ever changes a command's outcome: a failure is one warning line."""

from __future__ import annotations

import logging

from pipeline.cli.output import Outcome
from pipeline.errors import RtkArchiveError

log = logging.getLogger("rtk_archive.ops")

HEARTBEAT_COMMANDS = ("run", "backfill")
METRICS_COMMANDS = ("run", "backfill", "verify")


def start_heartbeat(args, config) -> None:
    """A run starts: `<ping_url>/start` (kept on `args` for the end of the command)."""
    from pipeline.notify import heartbeat_for

    if args.command in HEARTBEAT_COMMANDS and not getattr(args, "dry_run", False):
        args.heartbeat = heartbeat_for(config)
        if args.heartbeat is not None:
            args.heartbeat.start(f"rtk-archive {args.command} started")


def after_command(args, outcome: Outcome) -> None:
    """The command ended (whatever its outcome): the heartbeat's last ping, then the metrics.
    The outcome is decided: a Ctrl-C now only cuts these short (said in a warning)."""
    try:
        heartbeat = getattr(args, "heartbeat", None)
        if heartbeat is not None:
            from pipeline.notify import one_line

            heartbeat.finish(outcome.exit_code, outcome.error or one_line(outcome.text) or f"exit {outcome.exit_code}")
        config = getattr(args, "loaded_config", None)
        if config is None or config.metrics.textfile is None or args.command not in METRICS_COMMANDS \
                or getattr(args, "dry_run", False):
            return
        write_metrics(config, outcome)
    except KeyboardInterrupt:
        log.warning("interrupted after the command ended: the heartbeat or the metrics may not be updated")


def write_metrics(config, outcome: Outcome) -> None:
    from pipeline.metrics import build_registry, write_textfile
    from pipeline.session import open_session

    path = config.metrics.textfile
    downloaded = outcome.payload.get("bytes_downloaded") if "run_id" in outcome.payload else None
    try:
        with open_session(config, "metrics", record=False) as context:
            registry = build_registry(context.ledger, deadline_margin_hours=config.archive.deadline_margin_hours,
                                      last_run_bytes=downloaded)
            write_textfile(path, registry)
    except OSError as exc:
        log.warning("metrics: cannot write %s: %s", path, exc.strerror or exc)
    except RtkArchiveError as exc:  # e.g. the ledger cannot be read: the command already said why
        log.warning("metrics: not written to %s: %s", path, exc)
