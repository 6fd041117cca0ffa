"""The ledger: what rtk-archive knows and did, per recording, per file and per target.

SQLite (WAL, synchronous=FULL: a copy marked archived survives a crash). A copy is marked
`archived` only after its bytes were verified at the target; everything else is redone by the
next run. The file is created readable by its owner only."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    meeting_id TEXT, meeting_title TEXT, session_id TEXT, output_file_name TEXT,
    status TEXT, invoked_time TEXT, stopped_time TEXT, url_expiry TEXT, deadline TEXT,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | archived | failed | skipped | lost
    reason TEXT,
    metadata TEXT,                          -- the API record as JSON, minus URLs and storage_config
    first_seen TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    recording_id TEXT NOT NULL REFERENCES recordings(id),
    kind TEXT NOT NULL,                     -- video | audio
    file_name TEXT NOT NULL,
    expected_size INTEGER,
    size INTEGER, sha256 TEXT, md5 TEXT, crc32c TEXT,
    source_host TEXT, downloaded_at TEXT,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | archived | failed | skipped | lost
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (recording_id, kind)
);
CREATE TABLE IF NOT EXISTS copies (
    recording_id TEXT NOT NULL,
    kind TEXT NOT NULL,                     -- video | audio | manifest
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,                    -- archived | failed | missing | mismatch
    uri TEXT, size INTEGER, sha256 TEXT, native TEXT, version TEXT,
    retention_mode TEXT, retention_until TEXT, legal_hold INTEGER,
    verified_by TEXT,                       -- which digests the verification compared
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    archived_at TEXT, verified_at TEXT, verify_result TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (recording_id, kind, target)
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL, host TEXT, pid INTEGER,
    started_at TEXT NOT NULL, finished_at TEXT,
    archived INTEGER, failed INTEGER, skipped INTEGER, lost INTEGER, at_risk INTEGER,
    exit_code INTEGER, note TEXT,
    audit_head TEXT                         -- hash of the audit log's last line after this run
);
CREATE INDEX IF NOT EXISTS copies_state ON copies(state);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
"""


def iso_utc(value: datetime | None) -> str | None:
    """The one timestamp format of the ledger, manifests and audit log: UTC, ms, 'Z'."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> str:
    return iso_utc(datetime.now(timezone.utc))


@dataclass(frozen=True)
class CopyRow:
    recording_id: str
    kind: str
    target: str
    key: str
    state: str
    uri: str | None
    size: int | None
    sha256: str | None
    version: str | None
    retention_mode: str | None
    retention_until: str | None
    legal_hold: bool
    verified_by: str | None
    attempts: int
    last_error: str | None
    archived_at: str | None
    verified_at: str | None
    verify_result: str | None
    native: dict


class Ledger:
    """Thread-safe: one connection behind a lock (writes are small and rare next to I/O)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(self.path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        for suffix in ("-wal", "-shm"):  # SQLite creates these with the umask's mode
            sidecar = Path(str(self.path) + suffix)
            if sidecar.exists():
                os.chmod(sidecar, 0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            committed = False
            try:
                yield self._db
                self._db.execute("COMMIT")
                committed = True
            finally:
                if not committed:  # any failure, the error propagating: nothing half-written
                    self._db.execute("ROLLBACK")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ runs

    def start_run(self, run_id: str, command: str, host: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (id, command, host, pid, started_at) VALUES (?,?,?,?,?)",
                (run_id, command, host, os.getpid(), utcnow()),
            )

    def finish_run(self, run_id: str, *, counts: dict, exit_code: int, note: str | None = None,
                   audit_head: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, archived=?, failed=?, skipped=?, lost=?, at_risk=?,"
                " exit_code=?, note=?, audit_head=? WHERE id=?",
                (utcnow(), counts.get("archived", 0), counts.get("failed", 0), counts.get("skipped", 0),
                 counts.get("lost", 0), counts.get("at_risk", 0), exit_code, note, audit_head, run_id),
            )

    def last_audit_head(self) -> str | None:
        rows = self._query("SELECT audit_head FROM runs WHERE audit_head IS NOT NULL "
                           "ORDER BY finished_at DESC LIMIT 1")
        return rows[0]["audit_head"] if rows else None

    def last_runs(self, limit: int = 5) -> list[dict]:
        rows = self._query("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,))
        return [dict(row) for row in rows]

    # ------------------------------------------------------------------ recordings

    def upsert_recording(self, *, recording_id: str, meeting_id: str | None, meeting_title: str | None,
                         session_id: str | None, output_file_name: str | None, status: str | None,
                         invoked_time: str | None, stopped_time: str | None, url_expiry: str | None,
                         deadline: str | None, metadata: dict) -> None:
        now = utcnow()
        with self._tx() as db:
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
                (recording_id, meeting_id, meeting_title, session_id, output_file_name, status,
                 invoked_time, stopped_time, url_expiry, deadline, json.dumps(metadata, sort_keys=True),
                 now, now),
            )

    def set_recording_state(self, recording_id: str, state: str, reason: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE recordings SET state=?, reason=?, updated_at=? WHERE id=?",
                       (state, reason, utcnow(), recording_id))

    def recording(self, recording_id: str) -> dict | None:
        rows = self._query("SELECT * FROM recordings WHERE id=?", (recording_id,))
        return dict(rows[0]) if rows else None

    def recordings(self, *, since: str | None = None, until: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM recordings WHERE 1=1", []
        if since:
            sql += " AND invoked_time >= ?"
            args.append(since)
        if until:
            sql += " AND invoked_time < ?"
            args.append(until)
        return [dict(r) for r in self._query(sql + " ORDER BY invoked_time, id", tuple(args))]

    # ------------------------------------------------------------------ files

    def ensure_file(self, recording_id: str, kind: str, file_name: str, expected_size: int | None) -> dict:
        with self._tx() as db:
            db.execute(
                """INSERT INTO files (recording_id, kind, file_name, expected_size, updated_at)
                   VALUES (?,?,?,?,?)
                   ON CONFLICT(recording_id, kind) DO UPDATE SET file_name=excluded.file_name,
                       expected_size=excluded.expected_size""",
                (recording_id, kind, file_name, expected_size, utcnow()),
            )
            row = db.execute("SELECT * FROM files WHERE recording_id=? AND kind=?", (recording_id, kind)).fetchone()
        return dict(row)

    def file(self, recording_id: str, kind: str) -> dict | None:
        rows = self._query("SELECT * FROM files WHERE recording_id=? AND kind=?", (recording_id, kind))
        return dict(rows[0]) if rows else None

    def files(self, recording_id: str) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM files WHERE recording_id=? ORDER BY kind", (recording_id,))]

    def record_download(self, recording_id: str, kind: str, *, size: int, sha256: str, md5: str, crc32c: str,
                        source_host: str) -> None:
        with self._tx() as db:
            db.execute(
                """UPDATE files SET size=?, sha256=?, md5=?, crc32c=?, source_host=?, downloaded_at=?,
                       attempts=attempts+1, updated_at=? WHERE recording_id=? AND kind=?""",
                (size, sha256, md5, crc32c, source_host, utcnow(), utcnow(), recording_id, kind),
            )

    def set_file_state(self, recording_id: str, kind: str, state: str, error: str | None = None,
                       *, count_attempt: bool = False) -> None:
        with self._tx() as db:
            db.execute(
                f"""UPDATE files SET state=?, last_error=?, updated_at=?
                    {', attempts=attempts+1' if count_attempt else ''}
                    WHERE recording_id=? AND kind=?""",
                (state, error, utcnow(), recording_id, kind),
            )

    # ------------------------------------------------------------------ copies

    def copies(self, recording_id: str, kind: str | None = None) -> dict[tuple[str, str], CopyRow]:
        sql, args = "SELECT * FROM copies WHERE recording_id=?", [recording_id]
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        return {(row["kind"], row["target"]): _copy(row) for row in self._query(sql, tuple(args))}

    def archived_copies(self, *, target: str | None = None, since: str | None = None,
                        until: str | None = None) -> list[CopyRow]:
        sql = ("SELECT c.* FROM copies c JOIN recordings r ON r.id = c.recording_id "
               "WHERE c.state IN ('archived','missing','mismatch')")
        args: list = []
        if target:
            sql += " AND c.target=?"
            args.append(target)
        if since:
            sql += " AND r.invoked_time >= ?"
            args.append(since)
        if until:
            sql += " AND r.invoked_time < ?"
            args.append(until)
        return [_copy(row) for row in self._query(sql + " ORDER BY c.recording_id, c.kind, c.target", tuple(args))]

    def record_copy(self, recording_id: str, kind: str, target: str, *, key: str, uri: str, size: int,
                    sha256: str | None, native: dict, version: str | None, retention_mode: str | None,
                    retention_until: str | None, legal_hold: bool, verified_by: str) -> None:
        """A copy whose bytes were verified at the target."""
        now = utcnow()
        with self._tx() as db:
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
                (recording_id, kind, target, key, uri, size, sha256, json.dumps(native, sort_keys=True),
                 version, retention_mode, retention_until, int(legal_hold), verified_by, now, now, now),
            )

    def record_copy_failure(self, recording_id: str, kind: str, target: str, *, key: str, error: str) -> None:
        now = utcnow()
        with self._tx() as db:
            db.execute(
                """INSERT INTO copies (recording_id, kind, target, key, state, attempts, last_error, updated_at)
                   VALUES (?,?,?,?,'failed',1,?,?)
                   ON CONFLICT(recording_id, kind, target) DO UPDATE SET
                       state=CASE WHEN copies.state='archived' THEN 'archived' ELSE 'failed' END,
                       attempts=copies.attempts+1, last_error=excluded.last_error, updated_at=excluded.updated_at""",
                (recording_id, kind, target, key, error, now),
            )

    def record_verification(self, recording_id: str, kind: str, target: str, *, state: str, result: str) -> None:
        """Outcome of `verify`: state stays 'archived' when the copy is intact, else
        'missing' / 'mismatch' so the next run puts it back."""
        with self._tx() as db:
            db.execute(
                "UPDATE copies SET state=?, verify_result=?, verified_at=?, updated_at=? "
                "WHERE recording_id=? AND kind=? AND target=?",
                (state, result, utcnow(), utcnow(), recording_id, kind, target),
            )

    # ------------------------------------------------------------------ reports

    def state_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {"recordings": {}, "files": {}, "copies": {}}
        for table in counts:
            for row in self._query(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state"):
                counts[table][row["state"]] = row["n"]
        return counts

    def failures(self, limit: int = 50) -> list[dict]:
        rows = self._query(
            """SELECT recording_id, kind, NULL AS target, state, last_error AS reason, updated_at FROM files
                   WHERE state IN ('failed','lost')
               UNION ALL
               SELECT recording_id, kind, target, state, COALESCE(last_error, verify_result), updated_at FROM copies
                   WHERE state IN ('failed','missing','mismatch')
               UNION ALL
               SELECT id, NULL, NULL, state, reason, updated_at FROM recordings r
                   WHERE state IN ('skipped','lost','failed') AND reason IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM files f WHERE f.recording_id = r.id
                                   AND f.state IN ('failed','lost'))  -- the files say it better
               ORDER BY updated_at DESC LIMIT ?""",
            (limit,),
        )
        return [dict(r) for r in rows]

    def at_risk(self, before: str) -> list[dict]:
        """Recordings not yet archived whose RealtimeKit deadline falls before `before`."""
        rows = self._query(
            "SELECT id, meeting_title, deadline, state FROM recordings "
            "WHERE state NOT IN ('archived','skipped','lost') AND deadline IS NOT NULL AND deadline < ? "
            "ORDER BY deadline",
            (before,),
        )
        return [dict(r) for r in rows]


def _copy(row: sqlite3.Row) -> CopyRow:
    return CopyRow(
        recording_id=row["recording_id"], kind=row["kind"], target=row["target"], key=row["key"],
        state=row["state"], uri=row["uri"], size=row["size"], sha256=row["sha256"], version=row["version"],
        retention_mode=row["retention_mode"], retention_until=row["retention_until"],
        legal_hold=bool(row["legal_hold"]), verified_by=row["verified_by"], attempts=row["attempts"],
        last_error=row["last_error"], archived_at=row["archived_at"], verified_at=row["verified_at"],
        verify_result=row["verify_result"], native=json.loads(row["native"] or "{}"),
    )


def _create_private(path: Path) -> None:
    """Create the file owner-only before SQLite opens it (SQLite would use the umask)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
