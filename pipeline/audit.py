"""The audit trail: an append-only JSON-lines log of every action, hash-chained.

Each line is a JSON object with sorted keys carrying `prev` (the SHA-256 of the previous line's
bytes) and `hash` (the SHA-256 of its own content without `hash`). An edited line fails its own
hash; an inserted or deleted line breaks the next line's `prev`; a cut-off tail is caught by
the heads the ledger recorded: every command that appends records where the log then ends, and
each of those lines must still be in the log. `verify_chain` names the first broken line.

Appending never leaves half a line: a write that fails (disk full, I/O error) is cut back to
the last whole line, and the log refuses further events, so the run that owns it stops and is
recorded as failed with the reason (`BookkeepingError`)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from pipeline.errors import BookkeepingError, os_reason, path_error
from pipeline.clock import utcnow
from pipeline.group_commit import GroupCommit
from pipeline.ledger.rows import AuditHead

log = logging.getLogger("rtk_archive.audit")

GENESIS = "0" * 64
ACTIONS = {"run_started", "run_finished", "listed", "downloaded", "stored", "verified", "failed",
           "skipped", "lost", "verify_started", "verify_ok", "verify_failed", "verify_finished", "manifest_stored",
           "audit_shipped", "target_skipped", "manifest_signed",
           # repair: a copy put back from another target, an altered one moved aside, one left
           "repair_started", "repaired", "quarantined", "repair_failed", "repair_finished"}
# Lines a ledger row saying a copy is archived (or signed, or repaired) follows: each is on disk
# before `event` returns, so the ledger never says so without the line, even after a power cut.
# The others are made durable by the next such line's fsync (the log is appended in order).
CLAIMS = {"verified", "manifest_stored", "manifest_signed", "repaired"}


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _self_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    """Thread-safe appender. Each line is written whole (one `write`); a claim's line (CLAIMS)
    and `sync()` wait for an fsync that covers every line written so far, shared by the threads
    waiting at the same time (pipeline.group_commit)."""

    def __init__(self, path: Path, run_id: str, redact=lambda text: text):
        self.path = Path(path)
        self.run_id = run_id
        self.redact = redact
        self.failure: str | None = None  # set when a write failed: no further event is taken
        self._lock = threading.Lock()
        where = f"audit log {self.path}"
        if self.path.is_dir():
            raise BookkeepingError(f"{where}: is a directory, not a file; point [audit] path at a file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise path_error(f"{where}: cannot create its folder", self.path.parent, exc) from None
        try:
            self.prev, self.seq = _tail(self.path)
            self._fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        except OSError as exc:
            raise path_error(f"{where}: cannot open it for appending", self.path, exc) from None
        self._size = os.fstat(self._fd).st_size
        self._durable = _LogSync(self)

    @property
    def head(self) -> str:
        """The hash of the last line written: the ledger keeps it to detect a cut-off tail."""
        return self.prev

    @property
    def lines(self) -> int:
        """Lines in the log after the last one written (the sequence number of the last line)."""
        return self.seq

    def event(self, action: str, **fields) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        with self._lock, _appending(self._fd):
            if self.failure:
                raise BookkeepingError(self.failure)
            if os.fstat(self._fd).st_size != self._size:  # another process (a worker) appended meanwhile
                self.prev, self.seq = _tail(self.path)
                self._size = os.fstat(self._fd).st_size
            entry = {"seq": self.seq + 1, "ts": utcnow(), "run_id": self.run_id, "action": action,
                     "prev": self.prev,
                     **{k: (self.redact(v) if isinstance(v, str) else v) for k, v in fields.items() if v is not None}}
            entry["hash"] = _self_hash(entry)
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            try:
                write_all(self._fd, line + b"\n")
            except OSError as exc:
                self._fail("cannot append", exc)
            self._size += len(line) + 1
            self.prev = _line_hash(line)
            self.seq += 1
            written = self._durable.committed()
        if action in CLAIMS:
            self._durable.wait_durable(written)

    def sync(self) -> None:
        """Every line written so far is on disk when this returns."""
        with self._lock:
            if self.failure:
                raise BookkeepingError(self.failure)
            written = self._durable.last
        self._durable.wait_durable(written)

    def _fsync(self) -> None:
        if self.failure:
            raise BookkeepingError(self.failure)
        try:
            os.fdatasync(self._fd)  # the appended lines and the new size; file times need no sync
        except OSError as exc:
            with self._lock:
                self._fail("cannot sync it to disk", exc)

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:  # sync() already raised for a run that checks; say it once more
                log.error("audit log %s: cannot sync it to disk: %s", self.path, os_reason(exc))
            finally:
                os.close(self._fd)
                self._fd = -1

    def _fail(self, what: str, exc: OSError) -> NoReturn:
        """Cut a partly written line back off (so the chain stays whole) and refuse what follows."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as again:
            log.error("audit log %s: cannot remove a partly written line: %s", self.path, os_reason(again))
        self.failure = (f"audit log {self.path}: {what}: {os_reason(exc)}; nothing more can be recorded "
                        f"(the log ends whole at line {self.seq})")
        raise BookkeepingError(self.failure) from None


class _LogSync(GroupCommit):
    def __init__(self, log: AuditLog):
        super().__init__()
        self._log = log

    def _fsync(self) -> None:
        self._log._fsync()


@contextlib.contextmanager
def _appending(fd: int) -> Iterator[None]:
    """Processes sharing one log (workers on one machine) append one at a time, each chaining
    from the line the last one wrote (an advisory lock on the log itself)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def write_all(fd: int, data: bytes) -> None:
    """All of `data` to `fd` with plain writes (no buffered file object: a write may be short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _tail(path: Path) -> tuple[str, int]:
    """Hash and sequence number of the log's last line (GENESIS, 0 for a new log)."""
    if not path.exists() or path.stat().st_size == 0:
        return GENESIS, 0
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        block = 1 << 16
        data = b""
        while end > 0 and data.count(b"\n") < 2:
            start = max(0, end - block)
            fh.seek(start)
            data = fh.read(end - start) + data
            end = start
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        seq = int(json.loads(last)["seq"])
    except (ValueError, KeyError, TypeError):
        seq = 0  # a damaged tail: keep chaining from its bytes; `audit verify` will say so
    return _line_hash(last), seq


@dataclass(frozen=True)
class ChainReport:
    lines: int
    ok: bool
    broken_line: int | None = None
    reason: str | None = None
    head: str = GENESIS


def verify_chain(path: Path, heads: Sequence[AuditHead] = ()) -> ChainReport:
    """Check every line's own hash and its link to the previous line, then that every head
    the ledger recorded (where the log ended after each command) is still in the log."""
    recorded = [h for h in heads if h.head != GENESIS]  # GENESIS: the log was still empty then
    if not path.exists() and recorded:
        last = recorded[-1]
        return ChainReport(0, False, 1, f"the log is missing: the ledger recorded {last.lines or 'some'} lines "
                           f"after `{last.command}` at {last.recorded_at}")
    prev = GENESIS
    count = 0
    wanted = {h.head for h in recorded}
    found: set[str] = set()
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                count = number
                line = raw.rstrip(b"\n")
                try:
                    entry = json.loads(line)
                except ValueError:
                    return ChainReport(count, False, number, "not valid JSON", prev)
                if not isinstance(entry, dict) or entry.get("hash") != _self_hash(entry):
                    return ChainReport(count, False, number, "the line's content does not match its hash (edited)",
                                       prev)
                if entry.get("prev") != prev:
                    return ChainReport(count, False, number,
                                       "does not follow the line before it (a line was inserted or deleted here)",
                                       prev)
                prev = _line_hash(line)
                if prev in wanted:
                    found.add(prev)
    except OSError as exc:
        raise path_error(f"audit log {path}: cannot read it", path, exc) from None
    for head in recorded:
        if head.head not in found:
            return _missing_head(head, count, prev)
    return ChainReport(count, True, head=prev)


def _missing_head(head: AuditHead, count: int, prev: str) -> ChainReport:
    after = f"after `{head.command}` at {head.recorded_at}"
    if head.lines is None:
        return ChainReport(count, False, count + 1, f"the line the ledger recorded as the log's end {after} "
                           f"(head {head.head[:16]}) is missing: the log was cut short or replaced", prev)
    if head.lines > count:
        return ChainReport(count, False, count + 1, f"the log was cut short: it has {count} lines, the ledger "
                           f"recorded {head.lines} {after} (head {head.head[:16]})", prev)
    return ChainReport(count, False, head.lines, f"line {head.lines} is not the line the ledger recorded {after} "
                       f"(head {head.head[:16]}): the log was cut short and continued, or replaced", prev)
