"""Work shared by many workers on one PostgreSQL ledger: a work item is one recording (its files,
each downloaded once and fed to every target that still needs it). A worker claims items with a
lease (`SELECT … FOR UPDATE SKIP LOCKED`: concurrent claims get disjoint rows), keeps them by a
heartbeat that pushes the expiry on, and gives them back when done; a worker that dies loses
them when they expire and another takes them over. Each claim gets a fresh fencing token from
one sequence; the ledger refuses a result for a recording whose lease no longer carries the
token of the worker recording it (pipeline.ledger.postgres: `LeaseLost`).

Listing the API is done by one worker at a time, at most once per interval across all of them
(an advisory lock plus the time of the last listing), so N workers do not multiply API calls."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pipeline.ledger.postgres import LISTING_LOCK, PostgresLedger

log = logging.getLogger("rtk_archive.leases")


@dataclass(frozen=True)
class WorkerRow:
    id: str
    host: str
    pid: int
    command: str
    started_at: str
    heartbeat_at: str
    alive: bool
    items: tuple[str, ...]  # recordings it holds leases on now


class WorkQueue:
    def __init__(self, ledger: PostgresLedger, worker_id: str, *, lease_seconds: float):
        self.ledger = ledger
        self.worker_id = worker_id
        self.lease_seconds = float(lease_seconds)

    # ------------------------------------------------------------------ the worker's membership

    def join(self, host: str, pid: int, command: str) -> None:
        with self.ledger._tx() as db:
            db.execute("INSERT INTO workers (id, host, pid, command, lease_seconds) VALUES (?,?,?,?,?)",
                       (self.worker_id, host, pid, command, self.lease_seconds))
            # Workers silent for a day are gone (their leases expired long ago): keep status readable.
            db.execute("DELETE FROM workers WHERE heartbeat_at < now() - interval '1 day'")

    def heartbeat(self) -> int:
        """Say this worker is alive and push its leases' expiry on; returns how many it holds."""
        with self.ledger._tx() as db:
            db.execute("UPDATE workers SET heartbeat_at=now() WHERE id=?", (self.worker_id,))
            renewed = db.execute("UPDATE leases SET expires_at = now() + make_interval(secs => ?) "
                                 "WHERE worker_id=? AND expires_at > now() RETURNING recording_id",
                                 (self.lease_seconds, self.worker_id)).fetchall()
        return len(renewed)

    def leave(self) -> None:
        """Give every lease back (unfinished work is claimable at once) and leave the table."""
        with self.ledger._tx() as db:
            db.execute("UPDATE leases SET worker_id=NULL, not_before=NULL WHERE worker_id=?", (self.worker_id,))
            db.execute("DELETE FROM workers WHERE id=?", (self.worker_id,))

    # ------------------------------------------------------------------ claiming and giving back

    def claim(self, limit: int, *, only: list[str] | None = None) -> list[str]:
        """Up to `limit` recordings with work left (pending, or failed and due for a retry) that no
        live lease holds, soonest deadline first; returns their ids, fenced for this worker.
        The conditional upsert makes a claim safe even when two transactions saw the same
        free row: only the first one's lease stands."""
        if limit <= 0:
            return []
        where_only = "AND r.id = ANY(?)" if only is not None else ""
        args: tuple = ((only,) if only is not None else ()) + (limit, self.worker_id, self.lease_seconds)
        with self.ledger._tx() as db:
            # Leases of workers that died are released (their late results are then refused):
            # nothing stays held by a worker that is gone, even for a recording finished since.
            # SKIP LOCKED: workers sweeping at once never wait for (or deadlock on) each other.
            db.execute("UPDATE leases SET worker_id=NULL, not_before=NULL WHERE recording_id IN ("
                       "SELECT recording_id FROM leases WHERE worker_id IS NOT NULL AND expires_at < now() "
                       "FOR UPDATE SKIP LOCKED)")
            rows = db.execute(
                f"""WITH free AS (
                        SELECT r.id FROM recordings r LEFT JOIN leases l ON l.recording_id = r.id
                        WHERE r.state IN ('pending', 'failed') {where_only}
                          AND (l.recording_id IS NULL
                               OR (l.worker_id IS NULL AND (l.not_before IS NULL OR l.not_before <= now())))
                        ORDER BY r.deadline NULLS LAST, r.id LIMIT ?
                        FOR UPDATE OF r SKIP LOCKED)
                    INSERT INTO leases (recording_id, worker_id, token, expires_at)
                    SELECT id, ?, nextval('lease_tokens'), now() + make_interval(secs => ?) FROM free
                    ON CONFLICT (recording_id) DO UPDATE SET worker_id = excluded.worker_id,
                        token = excluded.token, expires_at = excluded.expires_at, claimed_at = now(),
                        not_before = NULL, claims = leases.claims + 1
                      WHERE leases.worker_id IS NULL AND (leases.not_before IS NULL OR leases.not_before <= now())
                    RETURNING recording_id, token""", args).fetchall()
        for row in rows:
            self.ledger.hold(row["recording_id"], self.worker_id, row["token"])
        return [row["recording_id"] for row in rows]

    def release(self, recording_id: str, *, retry_after: float | None = None) -> None:
        """Give a lease back: finished (retry_after None), or unfinished and not to be claimed
        again for `retry_after` seconds (a failure should not be retried in a tight loop)."""
        token = self.ledger._fences.get(recording_id, (None, None))[1]
        with self.ledger._tx() as db:
            db.execute("UPDATE leases SET worker_id=NULL, expires_at=now(), "
                       "not_before = CASE WHEN ?::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => ?) END "
                       "WHERE recording_id=? AND worker_id=? AND token=?",
                       (retry_after, retry_after, recording_id, self.worker_id, token))
        self.ledger.let_go(recording_id)

    # ------------------------------------------------------------------ listing, one worker at a time

    @contextmanager
    def listing_turn(self, every: float, *, wait: bool = False) -> Iterator[bool]:
        """True when this worker should list now: it holds the listing lock and nobody listed in
        the last `every` seconds (0: list whatever the time). `wait`: wait for the lock (a `run`
        lists its own window) instead of leaving the turn to the worker listing now."""
        with self.ledger._pool.connection() as conn:
            conn.autocommit = True
            if wait:
                conn.execute("SELECT pg_advisory_lock(%s)", (LISTING_LOCK,))
            elif not conn.execute("SELECT pg_try_advisory_lock(%s)", (LISTING_LOCK,)).fetchone()["pg_try_advisory_lock"]:
                yield False
                return
            try:
                row = conn.execute("SELECT listed_at > now() - make_interval(secs => %s) AS recent FROM listing",
                                   (float(every),)).fetchone()
                due = every <= 0 or row is None or not row["recent"]
                yield due
                if due:
                    conn.execute("INSERT INTO listing (id, listed_at, worker_id) VALUES (1, now(), %s) "
                                 "ON CONFLICT (id) DO UPDATE SET listed_at = now(), worker_id = excluded.worker_id",
                                 (self.worker_id,))
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LISTING_LOCK,))
                conn.autocommit = False


def workers(ledger: PostgresLedger) -> list[WorkerRow]:
    """Every worker in the table, alive or not (alive: its last heartbeat is within its lease)."""
    rows = ledger._query(
        """SELECT w.id, w.host, w.pid, w.command, to_char(w.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                  AS started_at, to_char(w.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS heartbeat_at,
                  w.heartbeat_at > now() - make_interval(secs => w.lease_seconds) AS alive,
                  COALESCE(array_agg(l.recording_id ORDER BY l.recording_id)
                           FILTER (WHERE l.recording_id IS NOT NULL), '{}') AS items
           FROM workers w LEFT JOIN leases l ON l.worker_id = w.id AND l.expires_at > now()
           GROUP BY w.id ORDER BY w.host, w.pid""")
    return [WorkerRow(r["id"], r["host"], r["pid"], r["command"], r["started_at"], r["heartbeat_at"], r["alive"],
                      tuple(r["items"])) for r in rows]


def leases_held(ledger: PostgresLedger) -> int:
    """Leases a worker holds now (0 once every worker finished or gave its work back)."""
    return ledger._query("SELECT count(*) AS n FROM leases WHERE worker_id IS NOT NULL AND expires_at > now()")[0]["n"]
