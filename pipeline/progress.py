"""Progress: a rich progress bar on a terminal, periodic plain log lines otherwise (cron)."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("rtk_archive.progress")


class PlainProgress:
    """For logs: one line every `interval` seconds at most."""

    def __init__(self, interval: float = 30.0):
        self.interval = interval
        self._lock = threading.Lock()
        self.total_bytes = self.total_files = self.bytes = self.files = 0
        self._last = time.monotonic()

    def start(self, *, total_bytes: int, total_files: int) -> None:
        self.total_bytes, self.total_files = total_bytes, total_files
        log.info("%d file(s) to archive, %.1f MB announced", total_files, total_bytes / 1e6)

    def advance(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
        log.info("progress: %d/%d files, %.1f MB downloaded", self.files, self.total_files, self.bytes / 1e6)

    def file_done(self) -> None:
        with self._lock:
            self.files += 1

    def close(self) -> None:
        pass


class RichProgress:
    def __init__(self, console):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self._task = None
        self._files = 0
        self._total_files = 0
        self._lock = threading.Lock()

    def start(self, *, total_bytes: int, total_files: int) -> None:
        self._total_files = total_files
        self._progress.start()
        self._task = self._progress.add_task(self._label(), total=total_bytes or None)

    def _label(self) -> str:
        return f"archiving {self._files}/{self._total_files} files"

    def advance(self, n: int) -> None:
        self._progress.update(self._task, advance=n)

    def file_done(self) -> None:
        with self._lock:
            self._files += 1
            self._progress.update(self._task, description=self._label())

    def close(self) -> None:
        self._progress.stop()
