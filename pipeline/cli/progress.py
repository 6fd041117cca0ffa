"""Progress: a rich display on a terminal (the whole run, plus one bar per file in flight),
periodic plain log lines otherwise (cron).

Both read one `Tally`. A file's progress is its position in the spool, so bytes a previous
run left there count as done from the first chunk on, and a download that restarts from
byte 0 goes back instead of counting twice. The run's byte total is shown only when every
file's size is known: an audio export has no size until its download announces one, and an
unknown total is shown as unknown, never as a wrong fraction. A file that fails leaves the
total, so a run with failures still ends at 100% of what it could do. Speed and time left
count only the bytes fetched now."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

log = logging.getLogger("rtk_archive.progress")
SPEED_WINDOW = 10.0  # seconds of transfer the speed is averaged over
SAMPLE_EVERY = 0.1  # seconds between two speed samples


@dataclass
class _File:
    label: str
    size: int | None
    position: int = 0
    resumed: int = 0
    started: bool = False


class Tally:
    """The run's numbers, fed by the download threads; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total_files = 0
        self.files_done = 0
        self.files_failed = 0
        self.unknown_sizes = 0  # files whose size nobody has announced yet
        self.known_bytes = 0  # sum of the sizes known so far (failed files left out)
        self.done_bytes = 0  # finished files, plus the position of each file in flight
        self.resumed = 0  # bytes found in the spool, left by a previous run
        self.fetched = 0  # bytes received in this run
        self._samples: deque[tuple[float, int]] = deque()

    def start(self, sizes: list[int | None]) -> None:
        """Files to come; called again for each batch of a long listing: the totals grow."""
        with self._lock:
            self.total_files += len(sizes)
            self.unknown_sizes += sum(1 for size in sizes if size is None)
            self.known_bytes += sum(size for size in sizes if size is not None)

    @property
    def total_bytes(self) -> int | None:
        """The bytes the run will have on disk at the end; None while a size is unknown."""
        return None if self.unknown_sizes else self.known_bytes

    def begin(self, label: str, size: int | None) -> _File:
        return _File(label=label, size=size)

    def update(self, file: _File, received: int, position: int, announced: int | None) -> None:
        """`received` new bytes, the file now `position` bytes long; `announced`: the size the
        file server gave, if any."""
        with self._lock:
            if not file.started:
                file.started = True
                file.resumed = max(0, position - received)
                self.resumed += file.resumed
            if file.size is None and announced is not None:
                file.size = announced
                self.unknown_sizes -= 1
                self.known_bytes += announced
            self.done_bytes += position - file.position
            file.position = position
            self.fetched += received
            now = time.monotonic()
            if not self._samples or now - self._samples[-1][0] >= SAMPLE_EVERY:
                self._samples.append((now, self.fetched))
                while len(self._samples) > 2 and self._samples[0][0] < now - SPEED_WINDOW:
                    self._samples.popleft()

    def finish(self, file: _File, archived: bool) -> None:
        with self._lock:
            self.files_done += 1
            size = file.size if file.size is not None else file.position
            if file.size is None:
                self.unknown_sizes -= 1
            if archived:
                self.known_bytes += 0 if file.size is not None else size
                self.done_bytes += size - file.position
            else:
                # What will never arrive leaves both sides: the bar still ends full.
                self.files_failed += 1
                self.known_bytes -= file.size if file.size is not None else 0
                self.done_bytes -= file.position
            file.position = size if archived else 0

    def speed(self) -> float | None:
        """Bytes per second fetched over the last SPEED_WINDOW seconds; None before two samples."""
        with self._lock:
            if len(self._samples) < 2:
                return None
            (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None

    def describe(self) -> str:
        parts = [f"{self.files_done}/{self.total_files} files"]
        if self.files_failed:
            parts.append(f"{self.files_failed} failed")
        if self.resumed:
            parts.append(f"{self.resumed / 1e6:.1f} MB resumed")
        if self.unknown_sizes:
            parts.append(f"{self.unknown_sizes} size{'s' if self.unknown_sizes > 1 else ''} not yet known")
        return ", ".join(parts)


class FileProgress:
    """One file in flight: `update` per chunk from the download, `done` once."""

    def __init__(self, display: "_Display", file: _File):
        self._display, self._file = display, file
        self._finished = False

    def update(self, received: int, position: int, announced: int | None = None) -> None:
        self._display.tally.update(self._file, received, position, announced)
        self._display.file_changed(self._file)

    def done(self, archived: bool) -> None:
        if self._finished:
            return
        self._finished = True
        self._display.tally.finish(self._file, archived)
        self._display.file_finished(self._file)


class _Display:
    def __init__(self) -> None:
        self.tally = Tally()

    def start(self, sizes: list[int | None]) -> None:
        self.tally.start(sizes)

    def file(self, label: str, size: int | None) -> FileProgress:
        file = self.tally.begin(label, size)
        self.file_started(file)
        return FileProgress(self, file)

    def file_started(self, file: _File) -> None: ...

    def file_changed(self, file: _File) -> None: ...

    def file_finished(self, file: _File) -> None: ...

    def close(self) -> None: ...


class PlainProgress(_Display):
    """For logs (cron, a pipe): one INFO line every `interval` seconds at most."""

    def __init__(self, interval: float = 30.0):
        super().__init__()
        self.interval = interval
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def start(self, sizes: list[int | None]) -> None:
        super().start(sizes)
        t = self.tally
        unknown = f" (+{t.unknown_sizes} of unknown size)" if t.unknown_sizes else ""
        log.info("%d file(s) to archive, %.1f MB announced%s", t.total_files, t.known_bytes / 1e6, unknown)

    def file_changed(self, file: _File) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
        log.info("progress: %s", self.line())

    def line(self) -> str:
        t = self.tally
        total = t.total_bytes
        if total:
            amount = f"{t.done_bytes / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * t.done_bytes / total:.0f}%)"
        else:
            amount = f"{t.done_bytes / 1e6:.1f} MB of a total not known yet"
        return f"{t.describe()}; {amount}"


class RichProgress(_Display):
    """A live display on the terminal's rich Console: the run's bar on top, one bar per file
    in flight below it (removed when the file is done). Log records go through the same
    Console (cli.setup_logging), so they print above the bars instead of breaking them."""

    def __init__(self, console):
        super().__init__()
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), _SpeedColumn(),
                             _TimeLeftColumn(), console=console, transient=False)
        self._run_task = None
        self._tasks: dict[int, list] = {}  # id(_File) -> [rich task id, started]
        self._lock = threading.Lock()

    def start(self, sizes: list[int | None]) -> None:
        super().start(sizes)
        if self._run_task is not None:  # the next batch of a long listing
            self._refresh_run()
            return
        self._bar.start()
        self._run_task = self._bar.add_task(self._label(), total=self.tally.total_bytes, speed=None)

    def _label(self) -> str:
        return f"[bold]archiving {self.tally.describe()}"

    def file_started(self, file: _File) -> None:
        # The label holds the API's recording id: escaped, so "[/]" in it is text, not markup.
        task = self._bar.add_task(f"  {escape(file.label)}", total=file.size, start=False)
        with self._lock:
            self._tasks[id(file)] = [task, False]

    def file_changed(self, file: _File) -> None:
        with self._lock:
            entry = self._tasks.get(id(file))
            if entry is None:
                return
            first, entry[1] = not entry[1], True
        if first:  # resumed bytes are there from the start: done, but not speed
            self._bar.reset(entry[0], total=file.size, completed=file.position)
        else:
            self._bar.update(entry[0], total=file.size, completed=file.position)
        self._refresh_run()

    def file_finished(self, file: _File) -> None:
        with self._lock:
            entry = self._tasks.pop(id(file), None)
        if entry is not None:
            self._bar.remove_task(entry[0])
        self._refresh_run()

    def _refresh_run(self) -> None:
        t = self.tally
        self._bar.update(self._run_task, description=self._label(), completed=t.done_bytes, speed=t.speed(),
                         total=t.total_bytes)

    def close(self) -> None:
        self._bar.stop()


class _SpeedColumn(ProgressColumn):
    """A file's row: rich's own speed. The run's row: the speed of the bytes fetched now."""

    def render(self, task) -> Text:
        speed = task.fields["speed"] if "speed" in task.fields else task.speed
        return Text("?" if speed is None else f"{speed / 1e6:.1f} MB/s", style="progress.data.speed")


class _TimeLeftColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.fields["speed"] if "speed" in task.fields else task.speed
        if task.total is None or not speed:
            return Text("-:--:--", style="progress.remaining")
        seconds = max(0, int((task.total - task.completed) / speed))
        return Text(f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}", style="progress.remaining")
