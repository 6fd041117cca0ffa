"""The SQLite ledger (the embedded default): WAL while a command writes, and no write returns
before it is on disk, so a copy marked archived survives a crash. Commits are made durable in
groups: each commit writes its WAL frames (synchronous=NORMAL), then waits for an fsync of the
WAL that covers it; one fsync covers every commit made while the previous one ran, so
concurrent recordings share fsyncs instead of queueing one each. One connection behind a lock
(writes are small and rare next to the I/O they record). It owns its run lock: a command that records holds the flock on
`<ledger>.lock` while the ledger is open, so two runs never write at once. Here: opening,
transactions, and what runs and verify record; the reading queries are the mixin of
pipeline.ledger.sql_queries, the same for PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.clock import utcnow
from pipeline.ledger import sqlite_files as files_on_disk
from pipeline.ledger.lock import RunLock
from pipeline.ledger.rows import AuditHead, CopyRow, FileRow, Known, ListedRecording, RunRow, StoredCopy
from pipeline.ledger.sql_queries import LedgerQueries
from pipeline.ledger.sql_rows import copy_row, copy_values, recording_row, typed_row
from pipeline.ledger.sqlite_sync import GroupSync

log = logging.getLogger("rtk_archive.ledger")
BATCH = 500  # ids per IN (...) query: well under SQLite's limit of bound parameters


class SqliteLedger(LedgerQueries):
    """`SqliteLedger.open(path, command=...)` records (creating the ledger when missing, holding
    the run lock); `SqliteLedger.open(path)` only reads: no lock, nothing created (a missing
    ledger reads as an empty one)."""

    def __init__(self, path: Path, db: sqlite3.Connection, *, read_only: bool, exists: bool = True,
                 lock: RunLock | None = None):
        self.path = Path(path)
        self.read_only = read_only
        self.exists = exists
        self._db = db
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._run_lock = lock
        self._has_audit_heads = files_on_disk.has_table(db, "audit_heads")  # False in a read-only older ledger
        self._durable = None if read_only else GroupSync(self.path)
        if self._durable is not None:
            self._db.execute("PRAGMA synchronous=NORMAL")  # commits write the WAL; GroupSync fsyncs it

    @classmethod
    def open(cls, path: Path, *, command: str | None = None) -> SqliteLedger:
        path = Path(path)
        if command is None:
            if files_on_disk.exists(path):
                return cls(path, files_on_disk.open_read_only(path), read_only=True)
            log.warning("no ledger at %s: nothing archived yet", path)
            return cls(path, files_on_disk.open_in_memory(), read_only=True, exists=False)
        lock = RunLock(path).acquire(command)
        try:
            return cls(path, files_on_disk.open_for_writing(path), read_only=False, lock=lock)
        except BaseException:
            lock.release()
            raise

    def lock_holder(self) -> str | None:
        """Who holds this ledger's run lock now, or None (a probe: never blocks)."""
        return RunLock(self.path).held_by()

    def close(self) -> None:
        with self._lock:
            if not self.read_only:
                self._db.execute("PRAGMA synchronous=FULL")  # the last checkpoint syncs the database
                files_on_disk.leave_in_rollback_mode(self._db, self.path)
                self._durable.close()
            self._db.close()
        if self._run_lock is not None:
            self._run_lock.release()

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A transaction; it returns once the commit is durable (see GroupSync). `durable=False`
        for a row whose loss in a power cut only makes the next run redo or re-check work (a
        download's digests, a file's or a recording's state, derived from its copies, which are
        always durable): it is written to the WAL now, and the next durable commit's fsync (the
        WAL is written in order) or the ledger's close makes it durable with everything before."""
        with self._lock, files_on_disk.translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            committed = False
            try:
                yield self._db
                self._db.execute("COMMIT")
                committed = True
            finally:
                if not committed and self._db.in_transaction:  # nothing half-written
                    self._db.execute("ROLLBACK")
            commit = self._durable.committed() if self._durable is not None else 0
        if self._durable is not None and durable:
            self._durable.wait_durable(commit)

    def _query(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock, files_on_disk.translated(self.path):
            return self._db.execute(sql, tuple(args)).fetchall()

    def _in_batches(self, sql: str, ids: list[str]) -> Iterator[sqlite3.Row]:
        """`sql` with one `IN ({})` placeholder, run over `ids` a batch at a time."""
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            yield from self._query(sql.format(",".join("?" * len(chunk))), chunk)

    # ------------------------------------------------------------------ runs and the audit log's heads

    def start_run(self, run_id: str, command: str, host: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO runs (id, command, host, pid, started_at) VALUES (?,?,?,?,?)",
                       (run_id, command, host, os.getpid(), utcnow()))

    def finish_run(self, run_id: str, *, counts: dict, exit_code: int, note: str | None = None,
                   audit_head: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, archived=?, failed=?, skipped=?, lost=?, at_risk=?,"
                " exit_code=?, note=?, audit_head=? WHERE id=?",
                (utcnow(), counts.get("archived", 0), counts.get("failed", 0), counts.get("skipped", 0),
                 counts.get("lost", 0), counts.get("at_risk", 0), exit_code, note, audit_head, run_id))

    def last_runs(self, limit: int = 5) -> list[RunRow]:
        # Of runs started in the same millisecond, the one still going or that ended last is the later.
        rows = self._query("SELECT * FROM runs ORDER BY started_at DESC, COALESCE(finished_at, '~') DESC LIMIT ?",
                           (limit,))
        return [typed_row(RunRow, r) for r in rows]

    def record_audit_head(self, *, audit_path: Path, lines: int, head: str, command: str,
                          run_id: str | None) -> None:
        """Where the audit log ends after a command appended to it: `audit verify` then
        catches a log cut short after any command, not only after the last `run`."""
        with self._tx() as db:
            db.execute("INSERT INTO audit_heads (recorded_at, command, run_id, audit_path, lines, head) "
                       "VALUES (?,?,?,?,?,?)", (utcnow(), command, run_id, str(audit_path), lines, head))

    def audit_heads(self, audit_path: Path) -> list[AuditHead]:
        """Every head recorded for this audit log, oldest first (heads older ledgers kept only
        in `runs` included, without their line count)."""
        heads: list[AuditHead] = []
        if self._has_audit_heads:
            rows = self._query("SELECT * FROM audit_heads WHERE audit_path=? ORDER BY id", (str(audit_path),))
            heads = [AuditHead(r["lines"], r["head"], r["command"], r["recorded_at"]) for r in rows]
        known = {h.head for h in heads}
        legacy = self._query("SELECT command, finished_at, audit_head FROM runs WHERE audit_head IS NOT NULL "
                             "ORDER BY finished_at")
        heads[:0] = [AuditHead(None, r["audit_head"], r["command"], r["finished_at"])
                     for r in legacy if r["audit_head"] not in known]
        return heads

    def audit_logs_elsewhere(self, audit_path: Path) -> list[str]:
        """Other audit logs this ledger recorded heads for (the configured path changed)."""
        if not self._has_audit_heads:
            return []
        rows = self._query("SELECT DISTINCT audit_path FROM audit_heads WHERE audit_path != ?", (str(audit_path),))
        return [r["audit_path"] for r in rows]

    def _has_table(self, name: str) -> bool:
        """Whether the ledger has a table that later versions added (a read-only older file may not)."""
        return files_on_disk.has_table(self._db, name)

    # ------------------------------------------------------------------ what a run reads and records

    def known(self, recording_ids: list[str]) -> dict[str, Known]:
        """What the ledger knows of these recordings, in three batched queries (not one per file)."""
        known = {rid: Known() for rid in recording_ids}
        for r in self._in_batches("SELECT * FROM recordings WHERE id IN ({})", recording_ids):
            known[r["id"]].recording = recording_row(r)
        for r in self._in_batches("SELECT * FROM files WHERE recording_id IN ({})", recording_ids):
            known[r["recording_id"]].files[r["kind"]] = typed_row(FileRow, r)
        for r in self._in_batches("SELECT * FROM copies WHERE recording_id IN ({})", recording_ids):
            known[r["recording_id"]].copies[(r["kind"], r["target"])] = copy_row(r)
        return known

    def record_listing(self, listed: list[ListedRecording]) -> None:
        """The recordings the API listed, with their files (and why a recording is skipped), in
        one transaction."""
        now = utcnow()
        with self._tx(durable=False) as db:
            for rec in listed:
                db.execute(
                    """INSERT INTO recordings (id, meeting_id, meeting_title, session_id, output_file_name,
                           status, invoked_time, stopped_time, url_expiry, deadline, metadata, first_seen, updated_at)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
                       ON CONFLICT(id) DO UPDATE SET meeting_id=excluded.meeting_id,
                           meeting_title=excluded.meeting_title, session_id=excluded.session_id,
                           output_file_name=excluded.output_file_name, status=excluded.status,
                           invoked_time=excluded.invoked_time, stopped_time=excluded.stopped_time,
                           url_expiry=excluded.url_expiry, deadline=excluded.deadline,
                           metadata=excluded.metadata, updated_at=excluded.updated_at""",
                    (rec.id, rec.meeting_id, rec.meeting_title, rec.session_id, rec.output_file_name, rec.status,
                     rec.invoked_time, rec.stopped_time, rec.url_expiry, rec.deadline,
                     json.dumps(rec.metadata, sort_keys=True), now, now))
                if rec.skipped:
                    db.execute("UPDATE recordings SET state='skipped', reason=?, updated_at=? WHERE id=?",
                               (rec.skipped, now, rec.id))
                for file in rec.files:
                    db.execute(
                        """INSERT INTO files (recording_id, kind, file_name, expected_size, updated_at)
                           VALUES (?,?,?,?,?)
                           ON CONFLICT(recording_id, kind) DO UPDATE SET file_name=excluded.file_name,
                               expected_size=excluded.expected_size""",
                        (rec.id, file.kind, file.file_name, file.expected_size, now))

    def set_recording_state(self, recording_id: str, state: str, reason: str | None = None) -> None:
        with self._tx(durable=False) as db:
            db.execute("UPDATE recordings SET state=?, reason=?, updated_at=? WHERE id=?",
                       (state, reason, utcnow(), recording_id))

    def record_download(self, recording_id: str, kind: str, *, size: int, sha256: str, md5: str | None,
                        crc32c: str, source_host: str) -> None:
        now = utcnow()
        with self._tx(durable=False) as db:
            db.execute("""UPDATE files SET size=?, sha256=?, md5=?, crc32c=?, source_host=?, downloaded_at=?,
                              attempts=attempts+1, updated_at=? WHERE recording_id=? AND kind=?""",
                       (size, sha256, md5, crc32c, source_host, now, now, recording_id, kind))

    def set_file_state(self, recording_id: str, kind: str, state: str, error: str | None = None,
                       *, count_attempt: bool = False) -> None:
        with self._tx(durable=False) as db:
            db.execute(f"""UPDATE files SET state=?, last_error=?, updated_at=?
                           {', attempts=attempts+1' if count_attempt else ''}
                           WHERE recording_id=? AND kind=?""",
                       (state, error, utcnow(), recording_id, kind))

    def record_copy(self, recording_id: str, kind: str, target: str, copy: StoredCopy, *, verified_by: str,
                    durable: bool = True) -> None:
        """A copy whose bytes were verified at the target. `durable=False` (see _tx) only for a
        copy whose loss in a power cut the next run repairs by itself (a manifest: stored
        again, it meets the one there, which lists the same files, and takes it)."""
        now = utcnow()
        with self._tx(durable=durable) as db:
            db.execute(
                """INSERT INTO copies (recording_id, kind, target, key, state, uri, size, sha256, native,
                       version, retention_mode, retention_until, legal_hold, verified_by, attempts,
                       archived_at, verified_at, verify_result, updated_at)
                   VALUES (?,?,?,?,'archived',?,?,?,?,?,?,?,?,?,1,?,?,'ok',?)
                   ON CONFLICT(recording_id, kind, target) DO UPDATE SET key=excluded.key,
                       state='archived', uri=excluded.uri, size=excluded.size, sha256=excluded.sha256,
                       native=excluded.native, version=excluded.version,
                       retention_mode=excluded.retention_mode, retention_until=excluded.retention_until,
                       legal_hold=excluded.legal_hold, verified_by=excluded.verified_by,
                       attempts=copies.attempts+1, last_error=NULL, archived_at=excluded.archived_at,
                       verified_at=excluded.verified_at, verify_result='ok', updated_at=excluded.updated_at""",
                (recording_id, kind, target, *copy_values(copy), verified_by, now, now, now))

    def record_copy_failure(self, recording_id: str, kind: str, target: str, *, key: str, error: str) -> None:
        now = utcnow()
        with self._tx() as db:
            db.execute(
                """INSERT INTO copies (recording_id, kind, target, key, state, attempts, last_error, updated_at)
                   VALUES (?,?,?,?,'failed',1,?,?)
                   ON CONFLICT(recording_id, kind, target) DO UPDATE SET
                       state=CASE WHEN copies.state='archived' THEN 'archived' ELSE 'failed' END,
                       attempts=copies.attempts+1, last_error=excluded.last_error, updated_at=excluded.updated_at""",
                (recording_id, kind, target, key, error, now))

    # ------------------------------------------------------------------ what verify reads and records

    def copies_to_verify(self, *, target: str | None = None, since: str | None = None,
                         until: str | None = None) -> list[CopyRow]:
        """Copies in every state: archived ones to check, and recorded problems (missing,
        mismatch, failed) to check again: a problem stays one until it is really resolved."""
        sql = ("SELECT c.* FROM copies c JOIN recordings r ON r.id = c.recording_id "
               "WHERE c.state IN ('archived','missing','mismatch','failed')")
        args: list = []
        for clause, value in ((" AND c.target=?", target), (" AND r.invoked_time >= ?", since),
                              (" AND r.invoked_time < ?", until)):
            if value:
                sql += clause
                args.append(value)
        return [copy_row(row) for row in self._query(sql + " ORDER BY c.recording_id, c.kind, c.target", args)]

    def record_verification(self, recording_id: str, kind: str, target: str, *, state: str, result: str) -> None:
        """Outcome of `verify`: 'archived' stays when the copy is intact, else 'missing' /
        'mismatch' so the next run deals with it. Only `clear_problem` (a deep check) or
        `record_copy` (a fresh verified put) turn a recorded problem back into 'archived'."""
        now = utcnow()
        with self._tx() as db:
            db.execute("UPDATE copies SET state=?, verify_result=?, verified_at=?, updated_at=? "
                       "WHERE recording_id=? AND kind=? AND target=?",
                       (state, result, now, now, recording_id, kind, target))

    def clear_problem(self, recording_id: str, kind: str, target: str, copy: StoredCopy, *, result: str,
                      verified_by: str = "deep verify: bytes re-read") -> None:
        """A deep verification re-read the object of a copy recorded as missing, mismatch or
        failed and found the archived file's exact bytes (or `repair` put them back and verified
        them, `verified_by` says how): the copy is archived, as found."""
        now = utcnow()
        with self._tx() as db:
            db.execute(
                """UPDATE copies SET state='archived', key=?, uri=?, size=?, sha256=?, native=?, version=?,
                       retention_mode=?, retention_until=?, legal_hold=?, verified_by=?,
                       last_error=NULL, archived_at=COALESCE(archived_at, ?), verified_at=?, verify_result=?,
                       updated_at=? WHERE recording_id=? AND kind=? AND target=?""",
                (*copy_values(copy), verified_by, now, now, result, now, recording_id, kind, target))
            # The file, and then the recording, are archived again once none of their copies is a problem.
            db.execute("""UPDATE files SET state='archived', last_error=NULL, updated_at=?
                          WHERE recording_id=? AND kind=? AND state='failed' AND NOT EXISTS (
                              SELECT 1 FROM copies WHERE recording_id=? AND kind=? AND state != 'archived')""",
                       (now, recording_id, kind, recording_id, kind))
            db.execute("""UPDATE recordings SET state='archived', reason=NULL, updated_at=?
                          WHERE id=? AND state='failed' AND NOT EXISTS (
                              SELECT 1 FROM files WHERE recording_id=? AND state != 'archived')""",
                       (now, recording_id, recording_id))
