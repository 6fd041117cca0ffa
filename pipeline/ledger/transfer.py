"""Moving an SQLite ledger into PostgreSQL, losslessly: every row of every table, column for
column (the audit heads with their ids, so `audit verify` checks the same ends of the same
chain afterwards), in one transaction, into a database migrated to this code's schema that holds
no ledger rows yet; then each table is read back from both sides and compared, row for row.

The SQLite ledger's run lock is held throughout, so no run changes it while it is copied. The
audit log itself is a file and stays where it is: the heads refer to it by its path."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BookkeepingError
from pipeline.ledger import sqlite_files
from pipeline.ledger.lock import RunLock
from pipeline.ledger.postgres import _translated, migrate, redact_url

log = logging.getLogger("rtk_archive.ledger")

# Parents before children (files reference recordings).
# Every table, where the SQLite file has it (hints: `serve`'s; signatures, timestamps: evidence).
TABLES = ("recordings", "files", "copies", "runs", "audit_heads", "hints", "signatures", "timestamps")


@dataclass(frozen=True)
class Copied:
    rows: dict[str, int]  # table -> rows copied (and compared equal)
    schema_version: int


def sqlite_to_postgres(path: Path, url: str, *, command: str = "ledger export") -> Copied:
    import psycopg

    path = Path(path)
    where = f"ledger {redact_url(url)}"
    if not sqlite_files.exists(path):
        raise BookkeepingError(f"ledger {path}: does not exist; nothing to move")
    lock = RunLock(path).acquire(command)
    try:
        source = sqlite_files.open_read_only(path)
        try:
            _, version = migrate(url)
            with _translated(where, url), psycopg.connect(url, connect_timeout=15) as target:
                _refuse_non_empty(target, where)
                with target.transaction():
                    rows = {table: _copy_table(source, target, table) for table in TABLES}
                    for table in ("audit_heads", "timestamps"):  # identities continue after the copied ids
                        target.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                       f"GREATEST((SELECT max(id) FROM {table}), 1))")
                for table in TABLES:
                    if _digest(_sqlite_rows(source, table)) != _digest(_pg_rows(target, table)):
                        raise BookkeepingError(f"{where}: table {table} differs from {path} after the copy")
        finally:
            source.close()
    finally:
        lock.release()
    log.info("moved %s into %s: %s", path, where, rows)
    return Copied(rows, version)


def _refuse_non_empty(conn, where: str) -> None:
    for table in TABLES:
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if count:
            raise BookkeepingError(f"{where}: already holds {count} row(s) in {table}; "
                                   "a ledger is moved only into an empty database")


def _sqlite_rows(db, table: str) -> tuple[list[str], list[tuple]]:
    if not sqlite_files.has_table(db, table):
        return [], []
    cursor = db.execute(f"SELECT * FROM {table}")
    return [d[0] for d in cursor.description], [tuple(row) for row in cursor.fetchall()]


def _pg_rows(conn, table: str) -> tuple[list[str], list[tuple]]:
    cursor = conn.execute(f"SELECT * FROM {table}")
    return [d.name for d in cursor.description], [tuple(row) for row in cursor.fetchall()]


def _copy_table(source, target, table: str) -> int:
    columns, rows = _sqlite_rows(source, table)
    if not rows:
        return 0
    names = ", ".join(columns)
    with target.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})", rows)
    return len(rows)


def _digest(table: tuple[list[str], list[tuple]]) -> str:
    """The rows as {column: value}, hashed in a fixed order: equal on both sides when nothing
    was lost or changed."""
    columns, rows = table
    lines = sorted(json.dumps(dict(zip(columns, row)), sort_keys=True, default=str) for row in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
