"""The `rtk-archive` command line. Thin: parsing, logging, output; the work is elsewhere.

Exit codes: 0 all done; 1 some items failed, are lost, or a verification found a problem;
2 bad configuration or usage; 3 another run holds the ledger; 4 the RealtimeKit API refused
or could not be reached; 74 the ledger, its lock or the audit log cannot be used; 130
interrupted by SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from datetime import datetime, timedelta, timezone

import pipeline
from pipeline import errors
from pipeline.config import Config, load_config
from pipeline.redact import REDACTOR, RedactingFilter

log = logging.getLogger("rtk_archive")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage already; keep its one-line message."""


def parse_when(value: str) -> datetime:
    """ISO 8601 date or date-time (UTC when no zone), or a relative age: 36h, 7d, 2w."""
    match = re.fullmatch(r"(\d+)([hdw])", value.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        delta = {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]
        return datetime.now(timezone.utc) - delta
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date: use 2026-11-01, 2026-11-01T08:00:00Z, or an age like 36h / 7d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rtk-archive", description="Archive Cloudflare RealtimeKit recordings to storage you own.")
    parser.add_argument("--version", action="version", version=f"rtk-archive {pipeline.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, *, config=True, json_flag=True):
        if config:
            p.add_argument("--config", "-c", required=True, metavar="PATH", help="the TOML configuration file")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.add_argument("-v", "--verbose", action="count", default=0, help="more log detail (-vv: debug)")
        p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")

    def window(p, *, required=False):
        p.add_argument("--since", type=parse_when, required=required, help="recordings invoked at or after")
        p.add_argument("--until", type=parse_when, required=required, help="recordings invoked before")

    run = sub.add_parser("run", help="archive every UPLOADED recording not archived yet")
    common(run)
    window(run)
    run.add_argument("--meeting-id", help="only this meeting's recordings")
    run.add_argument("--dry-run", action="store_true", help="show what would be done; change nothing")
    run.add_argument("--concurrency", type=int, help="recordings processed at once (default: config)")

    backfill = sub.add_parser("backfill", help="the same as run, over an explicit time window")
    common(backfill)
    window(backfill, required=True)
    backfill.add_argument("--meeting-id")
    backfill.add_argument("--dry-run", action="store_true")
    backfill.add_argument("--concurrency", type=int)

    check = sub.add_parser("check", help="preflight: config, API token, spool, ledger and every target "
                                         "(reachable, credentials, retention, writable); changes nothing")
    common(check)

    status = sub.add_parser("status", help="counts per state, failures with reasons, deadlines at risk")
    common(status)

    listing = sub.add_parser("list", help="what the API has, with each recording's archive state")
    common(listing)
    window(listing)
    listing.add_argument("--meeting-id")
    listing.add_argument("--all-statuses", action="store_true", help="not only UPLOADED")

    verify = sub.add_parser("verify", help="check every archived copy at its target")
    common(verify)
    window(verify)
    verify.add_argument("--target", help="only this target")
    verify.add_argument("--deep", action="store_true", help="re-read and re-hash the stored bytes")

    report = sub.add_parser("report", help="per recording: where each file is, its SHA-256, retention, last check")
    common(report, json_flag=False)
    window(report)
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_verify = audit_sub.add_parser("verify", help="check the hash chain; name the first broken line")
    common(audit_verify)

    simulate = sub.add_parser("simulate", help="run the built-in RealtimeKit API simulator")
    from pipeline import simulator

    simulator.add_arguments(simulate)
    simulate.add_argument("-v", "--verbose", action="count", default=0)
    simulate.add_argument("-q", "--quiet", action="store_true")

    demo = sub.add_parser("demo", help="simulator + local folder + SQLite ledger: a full run to try the tool")
    demo.add_argument("--dir", default="rtk-archive-demo", help="where the demo writes (default: ./rtk-archive-demo)")
    demo.add_argument("--recordings", type=int, default=12)
    demo.add_argument("--json", action="store_true")
    demo.add_argument("-v", "--verbose", action="count", default=0)
    demo.add_argument("-q", "--quiet", action="store_true")
    return parser


def setup_logging(args) -> None:
    level = logging.WARNING if getattr(args, "quiet", False) else (
        logging.DEBUG if getattr(args, "verbose", 0) > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(RedactingFilter(REDACTOR))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDKs are chatty at INFO (every request); their failures reach us as exceptions.
    for noisy in ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3", "azure", "paramiko",
                  "google", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level > logging.DEBUG else logging.DEBUG)


def load(args) -> Config:
    config = load_config(args.config)
    REDACTOR.add(config.secret_values())
    return config


def emit(args, payload: dict, text: str) -> None:
    if getattr(args, "json", False):
        print(REDACTOR(json.dumps(payload, indent=2, sort_keys=True, default=str)))
    elif text:
        print(REDACTOR(text))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    from pipeline import commands
    from pipeline.api import ApiAuthError, ApiError

    try:
        return commands.dispatch(args)
    except errors.ConfigError as exc:
        _fail(str(exc))
        return errors.EXIT_USAGE
    except errors.LockedError as exc:
        _fail(str(exc))
        return errors.EXIT_LOCKED
    except errors.BookkeepingError as exc:
        _fail(str(exc))
        return errors.EXIT_BOOKKEEPING
    except ApiAuthError as exc:
        _fail(f"RealtimeKit API: {exc}")
        return errors.EXIT_API
    except ApiError as exc:
        _fail(f"RealtimeKit API: {exc}")
        return errors.EXIT_API
    except KeyboardInterrupt:
        _fail("interrupted")
        return errors.EXIT_INTERRUPTED


def _fail(message: str) -> None:
    for line in message.splitlines():
        print(f"rtk-archive: error: {REDACTOR(line)}", file=sys.stderr)

