"""The `rtk-archive` command line. Thin: parsing, logging, output; the work is elsewhere.

Exit codes (pipeline.errors, README "Exit codes"): 0 all done; 1 some items failed, are lost,
or a check found a problem; 2 bad configuration or usage; 3 another run holds the ledger;
4 the RealtimeKit API refused or could not be reached; 70 internal error (a bug: one line, the
details in a private crash file); 74 the ledger, its lock or the audit log cannot be used;
130 interrupted by SIGINT/SIGTERM.

Output: each command returns an `Outcome`; `main` prints it once, at the end: text, or with
`--json` exactly one JSON object whatever happened (the README's `--json` contract). Every
failure is one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pipeline
from pipeline import errors
from pipeline.config import Config, load_config
from pipeline.redact import REDACTOR, RedactingFilter, printable

log = logging.getLogger("rtk_archive")

# Loggers of the libraries underneath: their DEBUG shows requests and headers, so they speak
# only at -vvv (and their records pass through the same redacting handler as ours).
THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3", "azure", "paramiko",
                       "google", "filelock")
COMMANDS = ("run", "backfill", "check", "status", "list", "verify", "report", "audit", "simulate", "demo")
MAX_CONCURRENCY = 64  # as [archive] concurrency


# --------------------------------------------------------------------------- results


@dataclass
class Outcome:
    """What a command did: its exit code, a one-line reason when it is not 0, the JSON
    fields (counts included) and the text a person reads on stdout."""

    exit_code: int
    payload: dict = field(default_factory=dict)
    text: str = ""
    error: str | None = None
    summary: bool = False  # the text is a run summary: -q leaves it out


# Counts every --json object carries, zero when nothing ran: `archived`, `failed`, `skipped`
# (the old keys, kept for scripts) and the same in their units.
BASE_COUNTS = {"archived": 0, "failed": 0, "skipped": 0}
RUN_COUNTS = {**BASE_COUNTS, "lost": 0, "at_risk": 0, "files_archived": 0, "files_failed": 0, "files_lost": 0,
              "files_skipped": 0, "recordings_skipped": 0, "recordings_lost": 0, "recordings_at_risk": 0,
              "copies_stored": 0, "copies_failed": 0, "bytes_downloaded": 0}
COUNTS = {
    "run": RUN_COUNTS, "backfill": RUN_COUNTS, "demo": RUN_COUNTS,
    "status": {**BASE_COUNTS, "files_archived": 0, "files_failed": 0, "files_lost": 0, "recordings_skipped": 0,
               "recordings_at_risk": 0, "copies_problems": 0},
    "list": {**BASE_COUNTS, "recordings_listed": 0},
    "verify": {**BASE_COUNTS, "copies_checked": 0, "copies_ok": 0, "copies_problems": 0},
    "report": {**BASE_COUNTS, "rows_count": 0},
    "audit verify": {**BASE_COUNTS, "audit_lines": 0},
    "check": {**BASE_COUNTS, "passed": 0},
}


# --------------------------------------------------------------------------- parsing


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


def build_parser() -> argparse.ArgumentParser:
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

    report = sub.add_parser("report", help="per recording: where each file is, its SHA-256, retention, last check")
    common(report)
    window(report)
    report.add_argument("--format", choices=("table", "json", "csv"), default=None,
                        help="table (default), json (the same as --json) or csv")

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_verify = audit_sub.add_parser("verify", help="check the hash chain; name the first broken line")
    common(audit_verify)

    simulate = sub.add_parser("simulate", help="run the built-in RealtimeKit API simulator")
    from pipeline import simulator

    simulator.add_arguments(simulate)
    verbosity(simulate)

    demo = sub.add_parser("demo", help="simulator + local folder + SQLite ledger: a full run to try the tool")
    demo.add_argument("--dir", default="rtk-archive-demo", metavar="PATH",
                      help="where the demo writes (default: ./rtk-archive-demo)")
    demo.add_argument("--recordings", type=bounded(int, 1, 500, "a whole number"), default=12, metavar="N",
                      help="recordings the simulator makes up, 1 to 500 (default 12)")
    demo.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout, whatever the outcome")
    verbosity(demo)
    return parser


def command_name(args_or_argv) -> str | None:
    """`run`, `audit verify`, ...: from parsed arguments, or guessed from a raw command line
    (for a usage error, where nothing was parsed)."""
    if isinstance(args_or_argv, argparse.Namespace):
        name = args_or_argv.command
        return f"audit {args_or_argv.audit_command}" if name == "audit" else name
    words = [word for word in args_or_argv if not word.startswith("-")]
    name = next((word for word in words if word in COMMANDS), None)
    if name == "audit" and "verify" in words:
        return "audit verify"
    return name


def wants_json(argv: list[str]) -> bool:
    """Did the command line ask for JSON (for errors found before it could be parsed)?"""
    if "--json" in argv or "--format=json" in argv:
        return True
    return any(word == "--format" and argv[i + 1:i + 2] == ["json"] for i, word in enumerate(argv))


# --------------------------------------------------------------------------- logging


def setup_logging(args):
    """Levels: -q and the default: warnings and errors (the default also prints a summary on
    stdout); -v: INFO, one line per archived file; -vv: DEBUG for rtk-archive; -vvv: DEBUG for
    the libraries too. One handler on the root logger, with the redacting filter on it, so every
    record, the libraries' included, is redacted. On a terminal it is rich's Console, the same
    one the progress bars draw on; returned so they can share it (None otherwise)."""
    verbose = 0 if getattr(args, "quiet", False) else getattr(args, "verbose", 0)
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    console = None
    if _is_terminal(sys.stderr):
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(stderr=True)
        handler: logging.Handler = RichHandler(console=console, show_path=False, markup=False,
                                               rich_tracebacks=False, log_time_format="%H:%M:%S")
    else:
        handler = logging.StreamHandler(sys.stderr)
        # From -vv on, which logger spoke (rtk_archive.download, botocore, ...) helps.
        source = " %(name)s:" if verbose >= 2 else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s{source} %(message)s", "%Y-%m-%dT%H:%M:%S"))
    redacting = RedactingFilter(REDACTOR)
    handler.addFilter(redacting)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)
    log.setLevel(level)
    for name in THIRD_PARTY_LOGGERS:
        library = logging.getLogger(name)
        library.setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)
        library.disabled, library.propagate = False, True  # through our handler and its redaction
    # A handler a library attached to its own logger redacts too (it would print around ours).
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in THIRD_PARTY_LOGGERS:
            for own in logger.handlers:
                if not isinstance(own, logging.NullHandler) and redacting not in own.filters:
                    own.addFilter(redacting)
    # warnings.warn() from a library goes through the same handler (and its redaction).
    logging.captureWarnings(True)
    return console


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed
        return False


# --------------------------------------------------------------------------- output


def load(args) -> Config:
    config = load_config(args.config)
    REDACTOR.add(config.secret_values())
    return config


def emit(args, outcome: Outcome, command: str | None) -> None:
    """Print the outcome: one JSON object with --json, else the text (unless -q leaves a run
    summary out). Everything printed passes through the redactor."""
    if getattr(args, "json", False) or getattr(args, "format", None) == "json":
        document = {"command": command, **COUNTS.get(command or "", BASE_COUNTS), **outcome.payload,
                    "exit_code": outcome.exit_code, "error": outcome.error}
        print(REDACTOR(json.dumps(document, indent=2, sort_keys=True, default=str)))
    elif outcome.text and not (outcome.summary and getattr(args, "quiet", False)):
        # CSV is data and goes out as it is; everything else is read on a terminal.
        text = REDACTOR(outcome.text)
        print(text if getattr(args, "format", None) == "csv" else printable(text))
    sys.stdout.flush()  # a closed pipe or a full disk shows here, not at exit


def failure(exit_code: int, message: str) -> Outcome:
    """An error raised before the command produced anything: its one line goes to stderr."""
    first = printable(REDACTOR(message)).splitlines() or [""]
    for line in first:
        print(f"rtk-archive: error: {line}", file=sys.stderr)
    return Outcome(exit_code=exit_code, error="; ".join(first))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _reopen_closed_std_streams()
    previous_sigterm = _sigterm_raises_interrupt()
    try:
        return _main(argv)
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _main(argv: list[str]) -> int:
    args = argparse.Namespace(json=wants_json(argv), quiet=False)
    command = command_name(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        outcome = failure(errors.EXIT_USAGE, str(exc))
    except SystemExit as exc:  # --help / --version printed what was asked
        return _flushed(exc.code if isinstance(exc.code, int) else errors.EXIT_OK)
    except BrokenPipeError:  # --help into `head`
        _silence_stdout()
        return errors.EXIT_OK
    else:
        command = command_name(args)
        try:
            outcome = _run_command(args, argv)
        except BrokenPipeError:  # `simulate | head`: its reader went away
            _silence_stdout()
            return errors.EXIT_OK
    try:
        emit(args, outcome, command)
    except BrokenPipeError:
        # The reader went away (`| head`): it has what it wanted; leave quietly. stdout now
        # points at /dev/null, so the interpreter's last flush does not complain either.
        _silence_stdout()
    except OSError as exc:  # stdout is a file on a full disk, or its device failed
        _silence_stdout()
        print(f"rtk-archive: error: cannot write the result to stdout: {exc.strerror or exc}", file=sys.stderr)
        return outcome.exit_code or errors.EXIT_FAILURES
    return outcome.exit_code


def _flushed(code: int) -> int:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    return code


def _run_command(args, argv: list[str]) -> Outcome:
    """Run the command; every exception becomes an Outcome with its documented exit code."""
    from pipeline.realtimekit import ApiError

    try:
        args.console = setup_logging(args)
        from pipeline import commands

        return commands.dispatch(args)
    except (errors.ConfigError, UsageError) as exc:
        return failure(errors.EXIT_USAGE, str(exc))
    except errors.LockedError as exc:
        return failure(errors.EXIT_LOCKED, str(exc))
    except errors.BookkeepingError as exc:
        return failure(errors.EXIT_BOOKKEEPING, str(exc))
    except ApiError as exc:
        return failure(errors.EXIT_API, f"RealtimeKit API: {exc}")
    except (KeyboardInterrupt, errors.Interrupted):
        return failure(errors.EXIT_INTERRUPTED, "interrupted; run the same command again to finish")
    except BrokenPipeError:
        raise
    except Exception as exc:  # the last resort: a bug. One line here, the details in a file.
        return _internal_error(exc, argv)


def _internal_error(exc: BaseException, argv: list[str]) -> Outcome:
    details = _write_crash_file(exc, argv)
    message = REDACTOR(str(exc)).splitlines()
    line = f"internal error: {type(exc).__name__}: {message[0] if message else ''}; {details}"
    print(f"rtk-archive: {line}", file=sys.stderr)
    return Outcome(exit_code=errors.EXIT_INTERNAL, error=line)


def crash_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "rtk-archive"


def _write_crash_file(exc: BaseException, argv: list[str]) -> str:
    """The redacted traceback in a new file only the owner can read; returns where it is."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    text = REDACTOR(
        f"rtk-archive {pipeline.__version__} internal error at {stamp}\n"
        f"command line: rtk-archive {' '.join(argv)}\npython {sys.version.split()[0]} on {sys.platform}\n\n"
        + "".join(traceback.format_exception(exc)))
    reasons = []
    for folder in (crash_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            # A new file (O_EXCL), mode 0600, a name no other crash has.
            fd, path = tempfile.mkstemp(prefix=f"rtk-archive-crash-{stamp}-", suffix=".txt", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return f"details in {path}"
        except OSError as error:
            reasons.append(f"{folder}: {error.strerror or error}")
    return "the details could not be written (" + "; ".join(reasons) + ")"


def _sigterm_raises_interrupt():
    """SIGTERM outside a run's own handler ends a command like Ctrl-C: exit 130, and --json
    still prints its object (a run installs its own, gentler handler)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _reopen_closed_std_streams() -> None:
    """A closed stdin/stdout/stderr (`>&-`) becomes /dev/null: output is dropped quietly, and
    no file the tool opens later (the ledger!) can take descriptor 1 and receive it."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, mode, closefd=False))


def _silence_stdout() -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError):
        sys.stdout = open(os.devnull, "w")
    finally:
        os.close(null)
