"""`rtk-archive` called in this process (fast, for sweeps): `main(argv)` with stdout and stderr
captured, and the logging set-up it installs undone afterwards."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

from pipeline.cli.app import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_main(*argv: str) -> Result:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {name: logging.getLogger(name).level for name in _LOGGERS})
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        handlers, level, levels = saved
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
        logging.captureWarnings(False)
    return Result(code, out.getvalue(), err.getvalue())


_LOGGERS = ("rtk_archive", "httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3", "azure", "paramiko",
            "google", "filelock")
