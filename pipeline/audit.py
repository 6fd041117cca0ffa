"""The audit trail: an append-only JSON-lines log of every action, hash-chained.

Each line is a JSON object with sorted keys carrying `prev` (the SHA-256 of the previous line's
bytes) and `hash` (the SHA-256 of its own content without `hash`). An edited line fails its own
hash; an inserted or deleted line breaks the next line's `prev`; a cut-off tail is caught by
comparing with the last head the ledger recorded. `verify_chain` names the first broken line."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from pipeline.ledger import utcnow

GENESIS = "0" * 64
ACTIONS = {"run_started", "run_finished", "listed", "downloaded", "stored", "verified", "failed",
           "skipped", "lost", "verify_ok", "verify_failed", "manifest_stored", "audit_shipped",
           "target_skipped"}


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _self_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    """Thread-safe appender. Lines are flushed as written and fsynced by `sync()`."""

    def __init__(self, path: Path, run_id: str, redact=lambda text: text):
        self.path = Path(path)
        self.run_id = run_id
        self.redact = redact
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.prev, self.seq = _tail(self.path)
        fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._fh = os.fdopen(fd, "ab")

    @property
    def head(self) -> str:
        """The hash of the last line written: the ledger keeps it to detect a cut-off tail."""
        return self.prev

    def event(self, action: str, **fields) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        with self._lock:
            entry = {"seq": self.seq + 1, "ts": utcnow(), "run_id": self.run_id, "action": action,
                     "prev": self.prev,
                     **{k: (self.redact(v) if isinstance(v, str) else v) for k, v in fields.items() if v is not None}}
            entry["hash"] = _self_hash(entry)
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            self._fh.write(line + b"\n")
            self._fh.flush()
            self.prev = _line_hash(line)
            self.seq += 1

    def sync(self) -> None:
        with self._lock:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()


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


def verify_chain(path: Path, expected_head: str | None = None) -> ChainReport:
    """Check every line's own hash and its link to the previous line."""
    prev = GENESIS
    count = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            count = number
            line = raw.rstrip(b"\n")
            try:
                entry = json.loads(line)
            except ValueError:
                return ChainReport(count, False, number, "not valid JSON", prev)
            if not isinstance(entry, dict) or entry.get("hash") != _self_hash(entry):
                return ChainReport(count, False, number, "the line's content does not match its hash (edited)", prev)
            if entry.get("prev") != prev:
                return ChainReport(count, False, number,
                                   "does not follow the line before it (a line was inserted or deleted here)", prev)
            prev = _line_hash(line)
    if expected_head and expected_head != prev and not _contains_head(path, expected_head):
        return ChainReport(count, False, count + 1,
                           "lines recorded by the ledger's last run are missing (the log was cut short)", prev)
    return ChainReport(count, True, head=prev)


def _contains_head(path: Path, head: str) -> bool:
    with open(path, "rb") as fh:
        return any(_line_hash(raw.rstrip(b"\n")) == head for raw in fh)
