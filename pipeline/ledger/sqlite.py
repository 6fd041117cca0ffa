"""The ledger: what rtk-archive knows and did, per recording, per file and per target.

SQLite (WAL while a command writes, synchronous=FULL: a copy marked archived survives a crash). A copy is marked
`archived` only after its bytes were verified at the target; everything else is redone by the
next run.

Opening it: a command that records opens it for writing and creates it, owner-only, when it
is missing; a command that only reads (`status`, `list`, `report`, `audit verify`, a dry run,
`verify` when it cannot record) opens it read-only, takes no lock and creates nothing, not even
a missing ledger. The tool never changes the mode of a file it did not create; SQLite gives the
`-wal`/`-shm` files it creates the database file's own mode. Every SQLite or OS failure becomes
one line naming the path and what is wrong (`BookkeepingError`), never a traceback."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import BookkeepingError, blocking_file, os_reason, path_error

log = logging.getLogger("rtk_archive.ledger")

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
CREATE TABLE IF NOT EXISTS audit_heads (    -- every command that appended to the audit log
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- records where the log ended, so `audit verify`
    recorded_at TEXT NOT NULL,              -- catches a log cut short after any of them
    command TEXT NOT NULL,
    run_id TEXT,
    audit_path TEXT NOT NULL,
    lines INTEGER NOT NULL,                 -- the log's line count at that moment
    head TEXT NOT NULL                      -- SHA-256 of its last line
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
class AuditHead:
    """Where the audit log ended when a command finished appending to it."""

    lines: int | None  # None for heads an older ledger kept in `runs` only
    head: str
    command: str
    recorded_at: str | None


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
    """Thread-safe: one connection behind a lock (writes are small and rare next to I/O).

    `Ledger(path)` opens it to record, creating it when missing; `Ledger(path, read_only=True)`
    only reads (a missing ledger reads as an empty one and nothing is created)."""

    def __init__(self, path: Path, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self.exists = True
        self._lock = threading.RLock()
        if not read_only:
            self._db = _open_for_writing(self.path)
        elif _exists(self.path):
            self._db = _open_read_only(self.path)
        else:
            log.warning("no ledger at %s: nothing archived yet", self.path)
            self.exists = False
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._db.executescript(SCHEMA)
        self._db.row_factory = sqlite3.Row
        self._has_audit_heads = _has_table(self._db, "audit_heads")  # False in a read-only older ledger

    def close(self) -> None:
        with self._lock:
            if not self.read_only:
                _leave_in_rollback_mode(self._db, self.path)
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            committed = False
            try:
                yield self._db
                self._db.execute("COMMIT")
                committed = True
            finally:
                if not committed and self._db.in_transaction:  # nothing half-written
                    self._db.execute("ROLLBACK")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock, _translated(self.path):
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

    def copies_to_verify(self, *, target: str | None = None, since: str | None = None,
                         until: str | None = None) -> list[CopyRow]:
        """Copies in every state: archived ones to check, and recorded problems (missing,
        mismatch, failed) to check again: a problem stays one until it is really resolved."""
        sql = ("SELECT c.* FROM copies c JOIN recordings r ON r.id = c.recording_id "
               "WHERE c.state IN ('archived','missing','mismatch','failed')")
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

    def recordings_without_manifest(self) -> list[str]:
        """Recordings with a file archived at a target where no verified manifest is (the caller
        checks that every file is there)."""
        rows = self._query(
            """SELECT DISTINCT c.recording_id FROM copies c WHERE c.kind != 'manifest' AND c.state = 'archived'
               AND NOT EXISTS (SELECT 1 FROM copies m WHERE m.recording_id = c.recording_id
                               AND m.kind = 'manifest' AND m.target = c.target AND m.state = 'archived')
               ORDER BY c.recording_id""")
        return [row["recording_id"] for row in rows]

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
        """Outcome of `verify`: 'archived' stays when the copy is intact, else 'missing' /
        'mismatch' so the next run deals with it. Only `clear_problem` (a deep check) or
        `record_copy` (a fresh verified put) turn a recorded problem back into 'archived'."""
        with self._tx() as db:
            db.execute(
                "UPDATE copies SET state=?, verify_result=?, verified_at=?, updated_at=? "
                "WHERE recording_id=? AND kind=? AND target=?",
                (state, result, utcnow(), utcnow(), recording_id, kind, target),
            )

    def clear_problem(self, recording_id: str, kind: str, target: str, *, uri: str, size: int,
                      sha256: str | None, native: dict, version: str | None, retention_mode: str | None,
                      retention_until: str | None, legal_hold: bool, result: str) -> None:
        """A deep verification re-read the object of a copy recorded as missing, mismatch or
        failed and found the archived file's exact bytes: the copy is archived, as found."""
        now = utcnow()
        with self._tx() as db:
            db.execute(
                """UPDATE copies SET state='archived', uri=?, size=?, sha256=?, native=?, version=?,
                       retention_mode=?, retention_until=?, legal_hold=?, verified_by='deep verify: bytes re-read',
                       last_error=NULL, archived_at=COALESCE(archived_at, ?), verified_at=?, verify_result=?,
                       updated_at=? WHERE recording_id=? AND kind=? AND target=?""",
                (uri, size, sha256, json.dumps(native, sort_keys=True), version, retention_mode, retention_until,
                 int(legal_hold), now, now, result, now, recording_id, kind, target),
            )
            # The file, and then the recording, are archived again once none of their copies is a problem.
            db.execute("""UPDATE files SET state='archived', last_error=NULL, updated_at=?
                          WHERE recording_id=? AND kind=? AND state='failed' AND NOT EXISTS (
                              SELECT 1 FROM copies WHERE recording_id=? AND kind=? AND state != 'archived')""",
                       (now, recording_id, kind, recording_id, kind))
            db.execute("""UPDATE recordings SET state='archived', reason=NULL, updated_at=?
                          WHERE id=? AND state='failed' AND NOT EXISTS (
                              SELECT 1 FROM files WHERE recording_id=? AND state != 'archived')""",
                       (now, recording_id, recording_id))

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


# --------------------------------------------------------------------------- opening

LEDGER_TABLES = ("recordings", "files", "copies", "runs")
READ_ONLY_HINT = "status, list, report, verify and audit verify can still read it"


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()  # a dangling link is reported when opened


def _open_for_writing(path: Path) -> sqlite3.Connection:
    """Open (or create, owner-only) the ledger to record in it."""
    if path.is_dir():
        raise BookkeepingError(f"ledger {path}: is a directory, not a file; point [ledger] path at a file")
    created = _create_owner_only(path)
    db = None
    try:
        with _translated(path):
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            foreign = _foreign_tables(db)
            if foreign:
                raise BookkeepingError(
                    f"ledger {path}: an SQLite database of something else (tables {', '.join(foreign[:5])}); "
                    "rtk-archive adds its tables only to its own ledger: point [ledger] path at a new file")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(f"BEGIN; {SCHEMA} COMMIT;")  # all of the schema or none of it
            return db
    except BaseException:
        if db is not None:
            db.close()
        if created:  # ours, and unusable: leave nothing behind
            path.unlink(missing_ok=True)
        raise


def _create_owner_only(path: Path) -> bool:
    """Create the ledger file 0600 if it does not exist (SQLite would use the umask, and gives
    its -wal/-shm files the database file's mode). An existing file is left exactly as it is.
    Returns whether this call created it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise path_error(f"ledger {path}: cannot create its folder", path.parent, exc,
                         read_only_hint=READ_ONLY_HINT) from None
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise path_error(f"ledger {path}: cannot create it", path, exc, read_only_hint=READ_ONLY_HINT) from None
    os.close(fd)
    return True


def _open_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing ledger for reading only: no lock, nothing created or changed. A WAL
    ledger on a read-only mount whose -shm file is gone cannot be opened `mode=ro`; it is then
    read as immutable (its -wal file, if any, cannot be read there, and we say so)."""
    if path.is_dir():
        raise BookkeepingError(f"ledger {path}: is a directory, not a file; point [ledger] path at a file")
    uri = "file:" + quote(str(path.absolute()))
    with _translated(path):
        try:
            db = _connect_checked(f"{uri}?mode=ro")
        except sqlite3.OperationalError as exc:
            if not str(getattr(exc, "sqlite_errorname", "")).startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")):
                raise
            log.debug("ledger %s: cannot be opened mode=ro (%s; a WAL ledger on a read-only mount): "
                      "reading it as immutable", path, exc)
            wal = Path(f"{path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                log.warning("ledger %s: its write-ahead log %s cannot be read on this read-only mount; "
                            "the latest changes it holds are not shown", path, wal)
            db = _connect_checked(f"{uri}?immutable=1")
    missing = [t for t in LEDGER_TABLES if not _has_table(db, t)]
    if missing:
        db.close()
        raise BookkeepingError(f"ledger {path}: not an rtk-archive ledger (no table {', '.join(missing)})")
    return db


def _connect_checked(uri: str) -> sqlite3.Connection:
    """Connect and read the schema once: SQLite opens files lazily, so this is where a file
    that is not a database, or cannot be opened, says so."""
    db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _foreign_tables(db: sqlite3.Connection) -> list[str]:
    """Tables of a database that is not an rtk-archive ledger (empty for a new or own file)."""
    names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                          "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return [] if set(names) & set(LEDGER_TABLES) else names


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """SQLite's failures of the environment (disk full, read-only, not a database...) as one
    line naming the ledger; anything else (a bug) propagates as it is."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        error = _ledger_error(path, exc)
        if error is None:
            raise
        raise error from exc


def _leave_in_rollback_mode(db: sqlite3.Connection, path: Path) -> None:
    """WAL while a command runs (readers never block the writer); back to a rollback journal
    when it ends, so a read-only command later reads the file without creating -wal/-shm
    files beside it. Not possible while another connection has it open: it then stays in WAL
    mode, which is just as safe."""
    try:
        db.execute("PRAGMA busy_timeout=200")
        db.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.OperationalError as exc:
        log.debug("ledger %s stays in WAL mode: %s", path, exc)


def _ledger_error(path: Path, exc: sqlite3.DatabaseError) -> BookkeepingError | None:
    """A failure of the environment, in one line; None for anything else (a bug: let it show)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    where = f"ledger {path}"
    if name == "SQLITE_NOTADB":
        return BookkeepingError(f"{where}: not an SQLite database (is [ledger] path pointing at another file?)")
    if name.startswith("SQLITE_READONLY"):
        return BookkeepingError(f"{where}: cannot be written ({_why_not_writable(path)}); {READ_ONLY_HINT}")
    if name.startswith("SQLITE_CANTOPEN"):
        return _cannot_open(path)
    if name == "SQLITE_FULL":
        return BookkeepingError(f"{where}: no space left on the device; the last change was not recorded")
    if name.startswith("SQLITE_CORRUPT"):
        return BookkeepingError(f"{where}: the database is damaged ({exc}); restore it from a backup")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return BookkeepingError(f"{where}: locked by another process for more than 30 s ({exc})")
    if name.startswith(("SQLITE_IOERR", "SQLITE_PERM", "SQLITE_AUTH")):
        return BookkeepingError(f"{where}: {exc}")
    return None


def _cannot_open(path: Path) -> BookkeepingError:
    """SQLite only says 'unable to open database file': find out why."""
    where = f"ledger {path}"
    blocker = blocking_file(path.parent)
    if blocker is not None:
        return BookkeepingError(f"{where}: {blocker} is a file, not a folder")
    if not path.parent.exists():
        return BookkeepingError(f"{where}: its folder {path.parent} does not exist")
    if path.is_dir():
        return BookkeepingError(f"{where}: is a directory, not a file; point [ledger] path at a file")
    if path.exists() and not os.access(path, os.R_OK):
        return BookkeepingError(f"{where}: cannot be read (permission denied)")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return BookkeepingError(f"{where}: cannot be written ({_why_not_writable(path)}); {READ_ONLY_HINT}")
    return BookkeepingError(f"{where}: SQLite cannot open it (unable to open database file)")


def _why_not_writable(path: Path) -> str:
    folder = path if path.is_dir() else path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError as exc:
        return os_reason(exc)
    return "permission denied"
