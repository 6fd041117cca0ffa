"""Logging for the command line: one handler on the root logger (two with --log-file) with the
redacting filter on it, so every record, the libraries' included, is redacted.

Formats: `text`, rich's console on a terminal (the one the progress bars draw on) and plain lines
otherwise; `json`, one object per line (`ts` RFC 3339 UTC, `level`, `logger`, `msg`, and the
structured fields a record carries: recording_id, file, target, bytes, sha256, attempt, error),
for log shippers. `--log-file PATH` appends the same records to a file created 0600, reopened
when logrotate moves it (WatchedFileHandler)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from datetime import datetime, timezone

from pipeline.errors import ConfigError
from pipeline.redact import REDACTOR, RedactingFilter, printable

log = logging.getLogger("rtk_archive")

# Loggers of the libraries underneath: their DEBUG shows requests and headers, so they speak
# only at -vvv (and their records pass through the same redacting handler as ours).
THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3", "azure", "paramiko",
                       "google", "filelock")
LOG_FORMATS = ("text", "json")
# Fields a record may carry (logging's `extra=`) that a json line names, in this order.
STRUCTURED_FIELDS = ("recording_id", "file", "target", "bytes", "sha256", "attempt", "error")


def setup_logging(args, settings=None):
    """Levels: -q and the default: warnings and errors (the default also prints a summary on
    stdout); -v: INFO, one line per archived file; -vv: DEBUG for rtk-archive; -vvv: DEBUG for
    the libraries too. Format and file: the command line's --log-format / --log-file, else the
    configuration's [logging] (`settings`, once it is loaded), else text on stderr only.
    On a terminal in text format, the handler is rich's Console, the same one the progress bars
    draw on; returned so they can share it (None otherwise)."""
    verbose = 0 if getattr(args, "quiet", False) else getattr(args, "verbose", 0)
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    log_format = getattr(args, "log_format", None) or getattr(settings, "format", None) or "text"
    log_file = getattr(args, "log_file", None) or getattr(settings, "file", None)
    console = None
    if log_format == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif _is_terminal(sys.stderr):
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(stderr=True)
        handler = RichHandler(console=console, show_path=False, markup=False,
                              rich_tracebacks=False, log_time_format="%H:%M:%S")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_text_formatter(verbose))
    redacting = RedactingFilter(REDACTOR)
    handlers = [handler]
    if log_file:
        to_file = open_log_file(log_file)
        to_file.setFormatter(JsonFormatter() if log_format == "json" else _text_formatter(verbose))
        handlers.append(to_file)
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, logging.FileHandler):
            old.close()  # set up again once the configuration is loaded: no descriptor left open
    for new in handlers:
        new.addFilter(redacting)
    root.handlers[:] = handlers
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
                if not isinstance(own, logging.NullHandler) and not any(
                        isinstance(f, RedactingFilter) for f in own.filters):
                    own.addFilter(redacting)
    # warnings.warn() from a library goes through the same handler (and its redaction).
    logging.captureWarnings(True)
    return console


def apply_config(args, config) -> None:
    """Once the configuration is loaded: its [logging] section takes effect (what the command
    line said still wins)."""
    settings = getattr(config, "logging", None)
    if settings is None or (settings.format in (None, "text") and settings.file is None):
        return
    args.console = setup_logging(args, settings)


def open_log_file(path) -> logging.Handler:
    """A handler appending to `path`, reopened when logrotate moves it away; the file is created
    0600 (the log names recordings, hosts and targets). A path that cannot be opened is a clear
    configuration error."""
    try:
        return PrivateWatchedFileHandler(os.fspath(path), mode="a", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"log file {path}: cannot open: {exc.strerror or exc}") from None


class PrivateWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """WatchedFileHandler semantics (reopen when the file was moved or deleted), and every file it
    creates, the first one or the one after a rotation, is created 0600, whatever the umask."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


class JsonFormatter(logging.Formatter):
    """One JSON object per record. The redacting filter already rewrote `msg`; the structured
    fields are redacted here too (an `error` may quote an SDK's message)."""

    def format(self, record: logging.LogRecord) -> str:
        document = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                    "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for name in STRUCTURED_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                continue
            if not isinstance(value, (int, float, bool)):
                value = printable(REDACTOR(str(value)))
            document[name] = value
        return json.dumps(document, ensure_ascii=False)


def _text_formatter(verbose: int) -> logging.Formatter:
    # From -vv on, which logger spoke (rtk_archive.download, botocore, ...) helps.
    source = " %(name)s:" if verbose >= 2 else ""
    return logging.Formatter(f"%(asctime)s %(levelname)s{source} %(message)s", "%Y-%m-%dT%H:%M:%S")


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed
        return False
