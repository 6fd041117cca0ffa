"""The command line's grammar: every command, option and argument type, each with its help
text. Usage errors are one line (`UsageError`), never argparse's exit."""

from __future__ import annotations

import argparse
import math
import re
from datetime import datetime, timedelta, timezone

import pipeline
from pipeline.clock import parse_duration

COMMANDS = ("run", "backfill", "check", "status", "list", "verify", "repair", "report", "audit", "ledger", "worker",
            "simulate", "demo", "keys", "export", "serve")
MAX_CONCURRENCY = 64  # as [archive] concurrency


class UsageError(Exception):
    """The command line is wrong: argparse's message, as one line."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--js` is not `--json`: cron lines say what they mean
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see: {self.prog} --help)")


def parse_when(value: str) -> datetime:
    """ISO 8601 date or date-time (UTC when no zone), or a relative age: 36h, 7d, 2w."""
    match = re.fullmatch(r"([0-9]+)([hdw])", value.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        try:
            delta = {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]
            return datetime.now(timezone.utc) - delta
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{value!r} reaches back before the year 1") from None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date: use 2026-11-01, 2026-11-01T08:00:00Z, or an age like 36h / 7d") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        parsed.astimezone(timezone.utc)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{value!r} is out of range") from None
    return parsed


def bounded(kind: type, low: float, high: float, what: str):
    """An argparse type: a number of `kind` within [low, high] (never inf or nan)."""

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: {what} from {low} to {high}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def budget_value(parse, what: str, *, as_text: bool = False):
    """An argparse type from one of pipeline.archive.budget's parsers (sizes, durations, rates):
    the parsed value, or the text itself once it parsed (`as_text`)."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text if as_text else value

    convert.__name__ = what
    return convert
def duration(text: str):
    """An argparse type: a length of time (90s, 45m, 2h, 30d, 2w)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from pipeline import quantities as budget

    parser = _Parser(prog="rtk-archive", description="Archive Cloudflare RealtimeKit recordings to storage you own.")
    parser.add_argument("--version", action="version", version=f"rtk-archive {pipeline.__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def verbosity(p):
        group = p.add_mutually_exclusive_group()
        group.add_argument("-v", "--verbose", action="count", default=0,
                           help="more detail on stderr: -v each archived file, -vv debug, -vvv the libraries' "
                                "debug too")
        group.add_argument("-q", "--quiet", action="store_true",
                           help="only warnings and errors on stderr; no summary on stdout (--json still prints)")
        p.add_argument("--log-format", choices=("text", "json"), default=None,
                       help="stderr log lines as text (default) or one JSON object per line (also [logging] format)")
        p.add_argument("--log-file", metavar="PATH", default=None,
                       help="also append the log to PATH (created 0600, reopened after logrotate; "
                            "also [logging] file)")

    def common(p, *, config=True, json_flag=True):
        if config:
            p.add_argument("--config", "-c", required=True, metavar="PATH", help="the TOML configuration file")
        if json_flag:
            p.add_argument("--json", action="store_true",
                           help="print exactly one JSON object on stdout, whatever the outcome")
        verbosity(p)

    def window(p, *, since_required=False):
        p.add_argument("--since", type=parse_when, required=since_required, metavar="WHEN",
                       help="recordings invoked at or after WHEN (2026-11-01, 2026-11-01T08:00Z, or an age: 36h, 7d)")
        p.add_argument("--until", type=parse_when, metavar="WHEN", help="recordings invoked before WHEN (default: now)")

    def archiving(p):
        p.add_argument("--meeting-id", metavar="ID", help="only this meeting's recordings")
        p.add_argument("--dry-run", action="store_true", help="show what would be done; change nothing")
        p.add_argument("--concurrency", type=bounded(int, 1, MAX_CONCURRENCY, "a whole number"), metavar="N",
                       help=f"recordings processed at once, 1 to {MAX_CONCURRENCY} (default: [archive] concurrency)")
        p.add_argument("--max-duration", type=budget_value(budget.parse_duration, "a duration"), metavar="TIME",
                       help="start no new file after TIME (5h, 90m); files in flight finish; exit 5 "
                            "(default: [archive] max_duration)")
        p.add_argument("--max-transfer", type=budget_value(budget.parse_size, "a size"), metavar="SIZE",
                       help="start no new file after SIZE was downloaded (500G); exit 5 "
                            "(default: [archive] max_transfer)")
        p.add_argument("--bwlimit", type=budget_value(budget.parse_bwlimit, "a rate", as_text=True), metavar="RATE",
                       help="total download rate in bytes/s (50M, 512K, off) or a schedule "
                            "\"08:00,10M 19:00,off\" (default: [archive] bwlimit)")

    run = sub.add_parser("run", help="archive every UPLOADED recording not archived yet")
    common(run)
    window(run)
    archiving(run)

    backfill = sub.add_parser("backfill", help="the same as run, over an explicit time window")
    common(backfill)
    window(backfill, since_required=True)
    archiving(backfill)

    check = sub.add_parser("check", help="preflight: config, API token, spool, ledger and every target "
                                         "(reachable, credentials, retention, writable); changes nothing")
    common(check)

    status = sub.add_parser("status", help="counts per state, the last run, failures with reasons, deadlines at risk")
    common(status)

    listing = sub.add_parser("list", help="what the API has, with each recording's archive state")
    common(listing)
    window(listing)
    listing.add_argument("--meeting-id", metavar="ID", help="only this meeting's recordings")
    listing.add_argument("--all-statuses", action="store_true",
                         help="every status (INVOKED, RECORDING, UPLOADING, UPLOADED, ERRORED, PAUSED), "
                              "not only UPLOADED")

    verify = sub.add_parser("verify", help="check every archived copy at its target")
    common(verify)
    window(verify)
    verify.add_argument("--target", metavar="NAME", help="only this target")
    verify.add_argument("--deep", action="store_true", help="re-read and re-hash the stored bytes")
    verify.add_argument("--scrub", action="store_true",
                        help="re-check the copies verified longest ago first (re-hashing local and SFTP copies), "
                             "within --budget; each check is recorded, so the next scrub continues from there")
    verify.add_argument("--budget", type=duration, metavar="TIME",
                        help="with --scrub: start no new check after TIME (90m, 2h); default: check every copy")
    verify.add_argument("--max-age", type=duration, metavar="TIME",
                        help="with --scrub: copies last verified longer ago are overdue (default: [verify] max_age, 30d)")

    repair = sub.add_parser("repair", help="put back missing or altered copies from a good copy at another target")
    common(repair)
    repair.add_argument("--target", metavar="NAME", help="only repair the copies at this target")
    repair.add_argument("--dry-run", action="store_true",
                        help="check the copies and the sources, say what would be done; change nothing")

    report = sub.add_parser("report", help="per recording: where each file is, its SHA-256, retention, last check")
    common(report)
    window(report)
    report.add_argument("--format", choices=("table", "json", "csv", "html"), default=None,
                        help="table (default), json (the same as --json), csv, or html (the auditor's report: "
                             "one self-contained file; needs --output)")
    report.add_argument("--output", "-o", metavar="PATH", help="write the report to PATH instead of stdout")

    keys = sub.add_parser("keys", help="the Ed25519 keys that sign the manifests")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_generate = keys_sub.add_parser("generate", help="write a new private key (owner-only) and PATH.pub")
    keys_generate.add_argument("--out", required=True, metavar="PATH", help="where the private key goes")
    common(keys_generate, config=False)

    export = sub.add_parser("export", help="BagIt bags (RFC 8493) of archived recordings, read from a verified target")
    common(export)
    window(export)
    action = export.add_mutually_exclusive_group(required=True)
    action.add_argument("--bagit", metavar="DIR", help="write one bag per recording under DIR")
    action.add_argument("--check", metavar="DIR", help="re-check the bags under DIR (or the bag DIR): every file "
                                                       "against its manifest, and the signed rtk-archive manifest")
    export.add_argument("--recording-id", metavar="ID", help="only this recording")

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_verify = audit_sub.add_parser("verify", help="check the hash chain; name the first broken line")
    common(audit_verify)

    serve = sub.add_parser("serve", help="receive RealtimeKit webhooks and archive recordings as they finish "
                                         "(until SIGTERM)")
    common(serve)
    serve.add_argument("--workers", type=bounded(int, 0, MAX_CONCURRENCY, "a whole number"), metavar="N",
                       help="recordings archived at once by the in-process worker; 0: receive only "
                            "(default: [serve] workers)")
    serve.add_argument("--host", metavar="ADDRESS", help="address to listen on (default: [serve] host)")
    serve.add_argument("--port", type=bounded(int, 0, 65535, "a port number"), metavar="PORT",
                       help="port to listen on (default: [serve] port)")
    ledger = sub.add_parser("ledger", help="the ledger's schema, and moving an SQLite ledger into PostgreSQL")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    common(ledger_sub.add_parser("migrate", help="bring the configured ledger to this version's schema"))
    export = ledger_sub.add_parser("export", help="copy the configured SQLite ledger into an empty PostgreSQL "
                                                  "database, losslessly")
    common(export)
    export.add_argument("--to", required=True, metavar="URL",
                        help="postgresql://user@host/db (leave the password out: libpq reads PGPASSWORD)")
    imported = ledger_sub.add_parser("import", help="copy an SQLite ledger into the configured (empty) "
                                                    "PostgreSQL ledger, losslessly")
    common(imported)
    imported.add_argument("--from", dest="source", required=True, metavar="PATH", help="the SQLite ledger file")

    worker = sub.add_parser("worker", help="a long-running worker on a PostgreSQL ledger: claims work, lists "
                                           "the API in turn with the other workers; SIGTERM stops it cleanly")
    common(worker)
    worker.add_argument("--list-every", type=bounded(float, 1, 86_400, "a number of seconds"), default=600.0,
                        metavar="SECONDS", help="list the API at most this often, across all workers (default 600)")
    worker.add_argument("--poll", type=bounded(float, 0.1, 3600, "a number of seconds"), default=5.0,
                        metavar="SECONDS", help="look for unclaimed work this often when idle (default 5)")
    worker.add_argument("--lease", type=bounded(float, 2, 3600, "a number of seconds"), default=60.0,
                        metavar="SECONDS", help="a claim expires this long after its last heartbeat (default 60)")
    worker.add_argument("--once", action="store_true", help="list, do what can be claimed, then exit")

    simulate = sub.add_parser("simulate", help="run the built-in RealtimeKit API simulator")
    from pipeline import simulator

    simulator.add_arguments(simulate)
    verbosity(simulate)

    demo = sub.add_parser("demo", help="simulator + local folder + SQLite ledger: a full run to try the tool")
    demo.add_argument("--dir", default="rtk-archive-demo", metavar="PATH",
                      help="where the demo writes (default: ./rtk-archive-demo)")
    demo.add_argument("--recordings", type=bounded(int, 1, 500, "a whole number"), default=12, metavar="N",
                      help="recordings the simulator makes up, 1 to 500 (default 12)")
    demo.add_argument("--serve", action="store_true",
                      help="the webhook service instead: serve archives new recordings as the simulator's "
                           "signed webhooks announce them")
    demo.add_argument("--new", type=bounded(int, 1, 50, "a whole number"), default=3, metavar="N",
                      help="with --serve: stop after N announced recordings are archived (default 3)")
    demo.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout, whatever the outcome")
    verbosity(demo)
    return parser


def command_name(args_or_argv) -> str | None:
    """`run`, `audit verify`, ...: from parsed arguments, or guessed from a raw command line
    (for a usage error, where nothing was parsed)."""
    if isinstance(args_or_argv, argparse.Namespace):
        name = args_or_argv.command
        if name in ("audit", "ledger"):
            return f"{name} {getattr(args_or_argv, name + '_command')}"
        return name
    words = [word for word in args_or_argv if not word.startswith("-")]
    name = next((word for word in words if word in COMMANDS), None)
    if name == "audit" and "verify" in words:
        return "audit verify"
    if name == "ledger":
        return next((f"ledger {word}" for word in words if word in ("migrate", "export", "import")), name)
    return name


def wants_json(argv: list[str]) -> bool:
    """Did the command line ask for JSON (for errors found before it could be parsed)?"""
    if "--json" in argv or "--format=json" in argv:
        return True
    return any(word == "--format" and argv[i + 1:i + 2] == ["json"] for i, word in enumerate(argv))


