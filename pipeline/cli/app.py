"""The `rtk-archive` command line's entry point: parse, set up logging, run the command, print
its Outcome once; every failure becomes one line and a documented exit code, never a traceback.

Exit codes (pipeline.errors, README "Exit codes"): 0 all done; 1 some items failed, are lost,
or a check found a problem; 2 bad configuration or usage; 3 another run holds the ledger;
4 the RealtimeKit API refused or could not be reached; 5 stopped at a time or transfer
budget, work remains; 70 internal error (a bug: one line, the details in a private crash
file); 74 the ledger, its lock or the audit log cannot be used; 130 interrupted by SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pipeline
from pipeline import errors
from pipeline.cli.logs import setup_logging
from pipeline.cli.output import Outcome, emit, failure
from pipeline.cli.parser import UsageError, build_parser, command_name, wants_json
from pipeline.redact import REDACTOR

# command -> "module:function" in pipeline.cli, imported when that command runs.
HANDLERS = {
    "run": "run:cmd_run", "backfill": "run:cmd_run", "check": "check:cmd_check", "status": "inspect:cmd_status",
    "list": "inspect:cmd_list", "report": "inspect:cmd_report", "verify": "compliance:cmd_verify",
    "audit": "compliance:cmd_audit", "simulate": "sim:cmd_simulate", "demo": "sim:cmd_demo",
    "keys": "evidence:cmd_keys", "export": "evidence:cmd_export",
    "serve": "serve:cmd_serve", "repair": "repair:cmd_repair",
    "ledger": "ledger:cmd_ledger", "worker": "worker:cmd_worker",
}


def dispatch(args) -> Outcome:
    module, function = HANDLERS[args.command].split(":")
    return getattr(importlib.import_module(f"pipeline.cli.{module}"), function)(args)


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
    """Run the command, then tell the operator's tooling (heartbeat, metrics textfile)."""
    from pipeline.cli.ops import after_command

    outcome = _command_outcome(args, argv)
    after_command(args, outcome)
    return outcome


def _command_outcome(args, argv: list[str]) -> Outcome:
    """Run the command; every exception becomes an Outcome with its documented exit code."""
    from pipeline.realtimekit import ApiError

    try:
        args.console = setup_logging(args)
        return dispatch(args)
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
