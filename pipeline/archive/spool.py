"""The spool folder, where downloads land before upload: prepared once per run (created
owner-only and proven writable, or one clear line before anything is downloaded), and shared by
the run's downloads, which a full disk must not set against each other.

When the spool's file system fills up, a download asks `SpoolSpace.survey` what holds the
space: other downloads in flight (they give it back when they finish), and partial downloads an
earlier run left that nobody is resuming now (only a head start: they are removed to make room,
so they never block a run)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError

PARTIAL_SUFFIX = ".part"  # a download in the spool
MARKER_SUFFIXES = (".ok", ".ok.tmp")  # its durable-length marker (pipeline.download)
HINTS_FOLDER = "hints"  # webhooks' download URLs kept until used (pipeline.service.artifacts); never cleared


class SpoolUnusable(ConfigError):
    """The spool folder cannot be created or written: nothing can be downloaded."""


def prepare_spool(folder: Path) -> None:
    """Create the spool folder (owner-only) and prove it takes a file, before anything is
    downloaded: a spool that cannot be used is one line naming it, not a failure per file."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".rtk-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SpoolUnusable(f"spool folder {folder} cannot be used: {_why_not(folder, exc)}; "
                            "nothing was downloaded") from None


def _why_not(folder: Path, exc: OSError) -> str:
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for part in (folder, *folder.parents):  # the first part that exists: a file in the way
            if part.exists() and not part.is_dir():
                return f"{part} is a file, not a folder"
    return exc.strerror or type(exc).__name__


@dataclass(frozen=True)
class Room:
    """What the spool's file system holds, as seen by one download."""

    free: int  # bytes free now
    in_flight: dict[Path, int] = field(default_factory=dict)  # other work in progress -> bytes it holds
    leftovers: dict[Path, int] = field(default_factory=dict)  # earlier runs' partial downloads -> bytes

    @property
    def held_by_others(self) -> int:
        return sum(self.in_flight.values())

    @property
    def at_most(self) -> int:
        """Free bytes once every other spool file is gone."""
        return self.free + self.held_by_others + sum(self.leftovers.values())


class SpoolSpace:
    """One spool folder as this process's downloads share it: which partial downloads are in
    flight now. One instance per folder (`of`), so every download of a run sees the others."""

    _instances: dict[Path, SpoolSpace] = {}
    _instances_lock = threading.Lock()

    def __init__(self, folder: Path):
        self.folder = folder
        self._active: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, folder: Path) -> SpoolSpace:
        key = Path(os.path.abspath(folder))
        with cls._instances_lock:
            if key not in cls._instances:
                cls._instances[key] = cls(key)
            return cls._instances[key]

    @contextlib.contextmanager
    def using(self, spool_file: Path) -> Iterator[None]:
        """Mark a partial download as in flight while it runs."""
        with self._lock:
            self._active.add(spool_file.name)
        try:
            yield
        finally:
            with self._lock:
                self._active.discard(spool_file.name)

    def free(self) -> int:
        """Bytes free on the spool's file system now (for root too: it may use the reserve)."""
        stats = os.statvfs(self.folder)
        return (stats.f_bfree if os.geteuid() == 0 else stats.f_bavail) * stats.f_frsize

    def survey(self, mine: Path) -> Room:
        """The room as `mine` sees it: free bytes, and what every other spool file holds."""
        free = self.free()
        in_flight: dict[Path, int] = {}
        leftovers: dict[Path, int] = {}
        with self._lock:
            active = set(self._active)
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name.startswith(mine.name) or entry.name.endswith(MARKER_SUFFIXES) \
                        or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # another download finished and removed it meanwhile
                    continue
                if info.st_nlink > 1:  # a target links to it too: removing it frees nothing
                    continue
                path = Path(entry.path)
                if entry.name.endswith(PARTIAL_SUFFIX) and entry.name not in active:
                    leftovers[path] = info.st_size
                else:  # a download, manifest or audit snapshot in progress: given back soon
                    in_flight[path] = info.st_size
        return Room(free=free, in_flight=in_flight, leftovers=leftovers)

    def remove_leftovers(self, room: Room) -> int:
        """Remove the partial downloads earlier runs left (and their markers); how many."""
        removed = 0
        with self._lock:  # a download starting now registers first: never remove a live one
            for path in room.leftovers:
                if path.name in self._active:
                    continue
                for name in (path.name, *(path.name + suffix for suffix in MARKER_SUFFIXES)):
                    (path.parent / name).unlink(missing_ok=True)
                removed += 1
        return removed
