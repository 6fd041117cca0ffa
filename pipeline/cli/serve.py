"""`rtk-archive serve`: the webhook service (pipeline.service) until SIGTERM/SIGINT, then exit 0."""

from __future__ import annotations

from pipeline import errors
from pipeline.cli.output import Outcome, load
from pipeline.redact import REDACTOR


def cmd_serve(args) -> Outcome:
    from pipeline.service.server import run_service

    config = load(args)
    settings = config.serve
    workers = settings.workers if args.workers is None else args.workers
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    run_service(config, workers=workers, host=host, port=port, redact=REDACTOR)
    return Outcome(errors.EXIT_OK, {"stopped": True}, "serve: stopped")
