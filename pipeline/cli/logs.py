"""Logging for the command line: one handler on the root logger with the redacting filter on
it, so every record, the libraries' included, is redacted; rich's console on a terminal (the
one the progress bars draw on), plain lines otherwise."""

from __future__ import annotations

import logging
import sys

from pipeline.redact import REDACTOR, RedactingFilter

log = logging.getLogger("rtk_archive")

# Loggers of the libraries underneath: their DEBUG shows requests and headers, so they speak
# only at -vvv (and their records pass through the same redacting handler as ours).
THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3", "azure", "paramiko",
                       "google", "filelock")


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


