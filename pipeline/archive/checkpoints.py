"""What a resumed download may trust of a spool file a previous run left: durable checkpoints
(fdatasync, then a `.ok` marker noting the length and the validator of the file version the
bytes belong to), taken in the background every SYNC_EVERY bytes or SYNC_SECONDS, whichever
comes first, so after a kill or a power cut only bytes known to be on disk are trusted."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.archive.bytepath import Answer

SYNC_EVERY = 256 << 20  # a durable checkpoint at least every this many bytes ...
SYNC_SECONDS = 2.0  # ... and at least this often while bytes flow ...
SYNC_MIN = 1 << 20  # ... once this many arrived (tiny files are not synced per chunk)


@dataclass(frozen=True)
class Validator:
    """What identifies one version of the file at the server: a strong ETag, else Last-Modified."""

    header: str  # "etag" or "last-modified"
    value: str

    @classmethod
    def of(cls, response: Answer) -> Validator | None:
        etag = response.headers.get("etag")
        if etag and not etag.startswith("W/"):  # a weak ETag may not be used for ranges (RFC 9110 13.1.5)
            return cls("etag", etag)
        modified = response.headers.get("last-modified")
        return cls("last-modified", modified) if modified else None

    def matches(self, response: Answer) -> bool:
        return response.headers.get(self.header) == self.value


class Checkpoints:
    """Durable checkpoints in the background: fdatasync, then the marker notes the length, so
    a killed run resumes close to where it stopped while the download goes on. One is due every
    SYNC_EVERY bytes, or every SYNC_SECONDS once SYNC_MIN bytes arrived; requests arriving while
    a sync runs are merged into the next one. The thread starts with the first checkpoint due:
    a small file, done before one is, never starts one."""

    def __init__(self, fh, note_durable: Callable[[Any], None], start: int):
        self._fd = fh.fileno()
        self._note_durable = note_durable
        self._last = start
        self._last_at = time.monotonic()
        self._wanted: int | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def progress(self, offset: int, mark: Callable[[], Any] | None = None) -> None:
        """`offset`: bytes written so far. When a checkpoint is due, `note_durable` is later given
        `mark()` (taken now, before the sync: what it describes is then on disk), else `offset`."""
        moved = offset - self._last
        if moved >= SYNC_EVERY or (moved >= SYNC_MIN and time.monotonic() - self._last_at >= SYNC_SECONDS):
            self._last, self._last_at = offset, time.monotonic()
            wanted = mark() if mark is not None else offset
            with self._cond:
                self._wanted = wanted
                self._cond.notify()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="spool-sync", daemon=True)
                    self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._wanted is None and not self._closed:
                    self._cond.wait()
                offset, self._wanted = self._wanted, None
                if offset is None:
                    return
            try:
                os.fdatasync(self._fd)
                self._note_durable(offset)
            except OSError as exc:  # handed to the download by close()
                self._error = exc
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error

    def halt(self) -> None:
        """Stop without a last sync (pending requests are dropped) and without raising."""
        if not self._closed:
            with self._cond:
                self._closed = True
                self._wanted = None
                self._cond.notify()
            if self._thread is not None:
                self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.halt()


def read_marker(path: Path) -> tuple[int, Validator | None]:
    """(durable length, validator); a marker of an older version (a bare number) has no validator."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0, None
    try:
        data = json.loads(text)
    except ValueError:
        return 0, None
    if isinstance(data, int):
        return data, None
    try:
        header, value = data.get("validator") or (None, None)
        validator = Validator(header, value) if header in ("etag", "last-modified") and value else None
        return int(data["offset"]), validator
    except (AttributeError, KeyError, TypeError, ValueError):
        return 0, None


def read_pieces(path: Path) -> tuple[int, list[list[int]]] | None:
    """A ranged download's durable progress: (the file's length, [start, done, end] per piece),
    or None when the marker holds none (a single-stream download, or nothing usable)."""
    try:
        data = json.loads(path.read_text())
        total, pieces = int(data["total"]), [[int(n) for n in piece] for piece in data["pieces"]]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    position = 0
    for start, done, end in pieces:  # pieces in order, touching, each within itself
        if start != position or not start <= done <= end:
            return None
        position = end
    return (total, pieces) if position == total else None


def write_marker(path: Path, offset: int, validator: Validator | None, *, total: int | None = None,
                 pieces: list[list[int]] | None = None) -> None:
    """`offset`: the durable contiguous prefix (what a single-stream resume continues from);
    a ranged download adds the file's `total` length and every piece's durable progress."""
    temp = path.with_name(path.name + ".tmp")
    record = {"offset": offset, "validator": [validator.header, validator.value] if validator else None}
    if pieces is not None:
        record.update(total=total, pieces=pieces)
    fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(record))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)
