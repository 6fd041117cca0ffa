"""The SQLite ledger's file: its schema, and opening it to record (created owner-only when
missing) or to read only (no lock, nothing created, not even -wal/-shm files on a read-only
mount). The tool never changes the mode of a file it did not create; SQLite gives the -wal/-shm
files it creates the database file's own mode. Every SQLite or OS failure of the environment
becomes one line naming the path and what is wrong (`BookkeepingError`), never a traceback."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import BookkeepingError, blocking_file, os_reason, path_error
from pipeline.ledger.migrations import SQLITE_STEPS, migrate_sqlite, refuse_newer, sqlite_version
from pipeline.ledger.sqlite_schema import SCHEMA

log = logging.getLogger("rtk_archive.ledger")

LEDGER_TABLES = ("recordings", "files", "copies", "runs")
READ_ONLY_HINT = "status, list, report, verify and audit verify can still read it"


def exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()  # a dangling link is reported when opened


def open_for_writing(path: Path) -> sqlite3.Connection:
    """Open (or create, owner-only) the ledger to record in it."""
    if path.is_dir():
        raise BookkeepingError(f"ledger {path}: is a directory, not a file; point [ledger] path at a file")
    created = _create_owner_only(path)
    db = None
    try:
        with translated(path):
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            foreign = _foreign_tables(db)
            if foreign:
                raise BookkeepingError(
                    f"ledger {path}: an SQLite database of something else (tables {', '.join(foreign[:5])}); "
                    "rtk-archive adds its tables only to its own ledger: point [ledger] path at a new file")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            migrate_sqlite(db, f"ledger {path}")  # each version all or nothing; a newer one is refused
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


def open_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing ledger for reading only: no lock, nothing created or changed. A WAL
    ledger on a read-only mount whose -shm file is gone cannot be opened `mode=ro`; it is then
    read as immutable (its -wal file, if any, cannot be read there, and we say so)."""
    if path.is_dir():
        raise BookkeepingError(f"ledger {path}: is a directory, not a file; point [ledger] path at a file")
    uri = "file:" + quote(str(path.absolute()))
    with translated(path):
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
    missing = [t for t in LEDGER_TABLES if not has_table(db, t)]
    if missing:
        db.close()
        raise BookkeepingError(f"ledger {path}: not an rtk-archive ledger (no table {', '.join(missing)})")
    try:
        refuse_newer(f"ledger {path}", sqlite_version(db), SQLITE_STEPS)  # an older one reads fine
    except BookkeepingError:
        db.close()
        raise
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


def has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _foreign_tables(db: sqlite3.Connection) -> list[str]:
    """Tables of a database that is not an rtk-archive ledger (empty for a new or own file)."""
    names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                          "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return [] if set(names) & set(LEDGER_TABLES) else names


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """SQLite's failures of the environment (disk full, read-only, not a database...) as one
    line naming the ledger; anything else (a bug) propagates as it is."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        error = _ledger_error(path, exc)
        if error is None:
            raise
        raise error from exc


def leave_in_rollback_mode(db: sqlite3.Connection, path: Path) -> None:
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


def open_in_memory() -> sqlite3.Connection:
    """An empty ledger that exists nowhere: what a read-only command sees when there is none."""
    db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    db.executescript(SCHEMA)
    return db
