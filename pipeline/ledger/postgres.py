"""The PostgreSQL ledger: one ledger shared by any number of workers on any number of machines.

It runs the very statements of the SQLite ledger (written once, in `SqliteLedger`; `?` becomes
psycopg's `%s`) over a psycopg 3 connection pool, so both backends behave alike and one test
suite runs on both. What differs: there is no run lock (workers cooperate through leases,
pipeline.ledger.leases, instead of refusing each other), the schema is migrated only by
`rtk-archive ledger migrate`, and a result recorded for a recording this worker holds a lease
on is fenced: it is refused (`LeaseLost`) when the lease went to another worker meanwhile.

The URL is libpq's (`sslmode` and every other parameter work as in psql); its password is never
shown: every message names the ledger by `redact_url(url)`."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import BookkeepingError
from pipeline.ledger import migrations
from pipeline.ledger.sqlite import SqliteLedger

log = logging.getLogger("rtk_archive.ledger")


class LeaseLost(BookkeepingError):
    """A result for a recording whose lease this worker no longer holds: not recorded."""


def redact_url(url: str) -> str:
    """The URL with its password (and any password= parameter) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = "&".join(("password=***" if item.lower().startswith("password=") else item)
                     for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (the ledger's SQL has no literal ? or %)."""
    return sql.replace("?", "%s")


class _Connection:
    """A psycopg connection that takes the SQLite ledger's statements."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, args: Iterable = ()):
        return self.conn.execute(_pg(sql), tuple(args))


class PostgresLedger(SqliteLedger):
    def __init__(self, url: str, pool, *, read_only: bool, version: int):
        self.url = url
        self.where = f"ledger {redact_url(url)}"
        self.path = self.where  # what the SQLite ledger's messages name
        self.read_only = read_only
        self.exists = True
        self.version = version
        self._pool = pool
        self._local = threading.local()  # the transaction open in this thread, if any
        self._has_audit_heads = True
        self._fences: dict[str, tuple[str, int]] = {}  # recording id -> (worker id, token) held

    def _has_table(self, name: str) -> bool:
        return True  # the schema's version was checked when it was opened: every table is there

    @classmethod
    def open(cls, url: str, *, command: str | None = None, pool_size: int = 8) -> PostgresLedger:
        """Connect (one line naming the ledger, password hidden, when it cannot be reached),
        check the schema's version, then keep a pool of connections (read-only ones when no
        command records)."""
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        where = f"ledger {redact_url(url)}"
        with _translated(where, url):
            with psycopg.connect(url, connect_timeout=15) as conn:
                version = schema_version(conn)
            migrations.check(where, version, migrations.POSTGRES_STEPS)
            read_only = command is None

            def configure(conn) -> None:
                conn.read_only = read_only

            pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, timeout=60,
                                  kwargs={"row_factory": dict_row, "connect_timeout": 15}, configure=configure,
                                  name="rtk-archive-ledger")
            pool.open(wait=True, timeout=30)
        return cls(url, pool, read_only=read_only, version=version)

    def lock_holder(self) -> str | None:
        return None  # no run lock: workers share this ledger through leases

    def close(self) -> None:
        self._pool.close()

    # ------------------------------------------------------------------ the statements' plumbing

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[_Connection]:
        """One transaction; a nested one (a fenced write around a statement) joins it. Every
        commit is durable when it returns (PostgreSQL's own): `durable` changes nothing here."""
        current = getattr(self._local, "tx", None)
        if current is not None:
            yield current
            return
        with _translated(self.where, self.url), self._pool.connection() as conn, conn.transaction():
            self._local.tx = _Connection(conn)
            try:
                yield self._local.tx
            finally:
                self._local.tx = None

    def _query(self, sql: str, args: Iterable = ()) -> list[dict]:
        with self._tx() as db:
            return db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ fencing

    def hold(self, recording_id: str, worker_id: str, token: int) -> None:
        """Results for this recording are recorded only while this lease is still ours."""
        self._fences[recording_id] = (worker_id, token)

    def let_go(self, recording_id: str) -> None:
        self._fences.pop(recording_id, None)

    @contextmanager
    def _fenced(self, recording_id: str) -> Iterator[None]:
        with self._tx() as db:
            fence = self._fences.get(recording_id)
            if fence is not None:
                row = db.execute("SELECT token FROM leases WHERE recording_id=? AND worker_id=? AND token=? "
                                 "FOR UPDATE", (recording_id, *fence)).fetchone()
                if row is None:
                    raise LeaseLost(f"{self.where}: the lease on recording {recording_id} (token {fence[1]}) "
                                    "expired and was released or taken over; its result was not recorded")
            yield

    def set_recording_state(self, recording_id, *args, **kwargs):
        with self._fenced(recording_id):
            super().set_recording_state(recording_id, *args, **kwargs)

    def record_download(self, recording_id, *args, **kwargs):
        with self._fenced(recording_id):
            super().record_download(recording_id, *args, **kwargs)

    def set_file_state(self, recording_id, *args, **kwargs):
        with self._fenced(recording_id):
            super().set_file_state(recording_id, *args, **kwargs)

    def record_copy(self, recording_id, *args, **kwargs):
        with self._fenced(recording_id):
            super().record_copy(recording_id, *args, **kwargs)

    def record_copy_failure(self, recording_id, *args, **kwargs):
        with self._fenced(recording_id):
            super().record_copy_failure(recording_id, *args, **kwargs)


def schema_version(conn) -> int:
    """The version a PostgreSQL ledger is at (0: an empty database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(url: str) -> tuple[int, int]:
    """Apply the missing steps (each in its own transaction, under an advisory lock so two
    `ledger migrate` at once do not collide). Returns (version before, version after)."""
    import psycopg

    where = f"ledger {redact_url(url)}"
    with _translated(where, url), psycopg.connect(url, connect_timeout=15, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(migrations.MIGRATIONS_TABLE)
            before = schema_version(conn)
            migrations.refuse_newer(where, before, migrations.POSTGRES_STEPS)
            for step in migrations.pending(migrations.POSTGRES_STEPS, before):
                with conn.transaction():
                    conn.execute(step.sql)
                    conn.execute("INSERT INTO schema_migrations (version, adds) VALUES (%s, %s)",
                                 (step.version, step.adds))
            return before, schema_version(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


MIGRATION_LOCK = 0x72746B01  # advisory lock keys: "rtk" + 1 (migrations), + 2 (listing)
LISTING_LOCK = 0x72746B02


@contextmanager
def _translated(where: str, url: str) -> Iterator[None]:
    """PostgreSQL's failures of the environment (unreachable, refused, authentication) as one
    line naming the ledger, its password never shown; a programming error propagates."""
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise BookkeepingError(f"{where}: {_reason(exc, url)}") from None
    except psycopg.errors.ReadOnlySqlTransaction:
        raise BookkeepingError(f"{where}: opened to read only; this command cannot record in it") from None


def _reason(exc: BaseException, url: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return text.replace(url, redact_url(url))
