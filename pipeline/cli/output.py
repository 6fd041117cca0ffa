"""What a command prints: each command returns an `Outcome`; `emit` prints it once, at the end:
text, or with `--json` exactly one JSON object whatever happened (the README's `--json`
contract). Everything printed passes through the redactor."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from pipeline.cli.logs import apply_config
from pipeline.config import Config, load_config
from pipeline.redact import REDACTOR, printable


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
              "copies_stored": 0, "copies_failed": 0, "bytes_downloaded": 0, "files_not_started": 0}
COUNTS = {
    "run": RUN_COUNTS, "backfill": RUN_COUNTS, "demo": RUN_COUNTS, "worker": RUN_COUNTS,
    "status": {**BASE_COUNTS, "files_archived": 0, "files_failed": 0, "files_lost": 0, "recordings_skipped": 0,
               "recordings_at_risk": 0, "copies_problems": 0},
    "list": {**BASE_COUNTS, "recordings_listed": 0},
    "verify": {**BASE_COUNTS, "copies_checked": 0, "copies_ok": 0, "copies_problems": 0},
    "report": {**BASE_COUNTS, "rows_count": 0},
    "audit verify": {**BASE_COUNTS, "audit_lines": 0},
    "check": {**BASE_COUNTS, "passed": 0},
}


def load(args) -> Config:
    config = load_config(args.config)
    REDACTOR.add(config.secret_values())
    args.loaded_config = config  # for what follows the command (pipeline.cli.ops)
    apply_config(args, config)
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




def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def check_window(args) -> None:
    """--since must come before --until, for every command with a window."""
    from pipeline.errors import ConfigError

    if getattr(args, "since", None) and getattr(args, "until", None) and args.since >= args.until:
        raise ConfigError(f"--since ({args.since.isoformat()}) must be earlier than --until ({args.until.isoformat()})")
