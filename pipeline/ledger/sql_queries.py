"""The ledger's reading queries (status, report, verify's scrub, metrics, the evidence and the
webhook work it keeps), written once for both backends: a mixin over `_query`/`_tx`, which
pipeline.ledger.sqlite and pipeline.ledger.postgres provide."""

from __future__ import annotations

from pathlib import Path

from pipeline.clock import utcnow
from pipeline.ledger.rows import (AtRisk, CopyRow, CopyTally, FileRow, Hint, Problem, RecordingRow, SignatureRow,
                                  TimestampRow)
from pipeline.ledger.sql_rows import copy_row, recording_row, typed_row


class LedgerQueries:
    """Mixed into the ledger classes: they provide `_query(sql, args)`, `_tx()` and `_has_table`."""

    # ------------------------------------------------------------------ reading, for reports

    def recording(self, recording_id: str) -> RecordingRow | None:
        rows = self._query("SELECT * FROM recordings WHERE id=?", (recording_id,))
        return recording_row(rows[0]) if rows else None

    def recordings(self, *, since: str | None = None, until: str | None = None) -> list[RecordingRow]:
        sql, args = "SELECT * FROM recordings WHERE 1=1", []
        for clause, value in ((" AND invoked_time >= ?", since), (" AND invoked_time < ?", until)):
            if value:
                sql += clause
                args.append(value)
        # Without invoked_time first, in both backends (PostgreSQL would sort NULLs last).
        return [recording_row(r) for r in self._query(sql + " ORDER BY invoked_time IS NOT NULL, invoked_time, id", args)]

    def files(self, recording_id: str) -> list[FileRow]:
        return [typed_row(FileRow, r)
                for r in self._query("SELECT * FROM files WHERE recording_id=? ORDER BY kind", (recording_id,))]

    def copies(self, recording_id: str, kind: str | None = None) -> dict[tuple[str, str], CopyRow]:
        sql, args = "SELECT * FROM copies WHERE recording_id=?", [recording_id]
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        return {(row["kind"], row["target"]): copy_row(row) for row in self._query(sql, args)}

    def recordings_without_manifest(self) -> list[str]:
        """Recordings with a file archived at a target where no verified manifest is (the caller
        checks that every file is there)."""
        rows = self._query(
            """SELECT DISTINCT c.recording_id FROM copies c WHERE c.kind != 'manifest' AND c.state = 'archived'
               AND NOT EXISTS (SELECT 1 FROM copies m WHERE m.recording_id = c.recording_id
                               AND m.kind = 'manifest' AND m.target = c.target AND m.state = 'archived')
               ORDER BY c.recording_id""")
        return [row["recording_id"] for row in rows]

    def state_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {"recordings": {}, "files": {}, "copies": {}}
        for table in counts:
            for row in self._query(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state"):
                counts[table][row["state"]] = row["n"]
        return counts

    def problems(self, limit: int = 50) -> list[Problem]:
        """Failed and lost files, failed, missing and altered copies, and recordings given up,
        newest first."""
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
               ORDER BY updated_at DESC LIMIT ?""", (limit,))
        return [typed_row(Problem, r) for r in rows]

    def at_risk(self, before: str) -> list[AtRisk]:
        """Recordings not yet archived whose RealtimeKit deadline falls before `before`."""
        rows = self._query(
            "SELECT id, meeting_title, deadline, state FROM recordings "
            "WHERE state NOT IN ('archived','skipped','lost') AND deadline IS NOT NULL AND deadline < ? "
            "ORDER BY deadline", (before,))
        return [typed_row(AtRisk, r) for r in rows]

    def copy_tallies(self) -> list[CopyTally]:
        rows = self._query("SELECT target, state, COUNT(*) AS copies, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes, "
                           "MAX(verified_at) AS last_verified_at, MIN(COALESCE(verified_at, archived_at)) AS oldest_check_at "
                           "FROM copies "
                           "GROUP BY target, state ORDER BY target, state")
        return [typed_row(CopyTally, r) for r in rows]

    def copies_verified_before(self, cutoff: str | None = None, *, target: str | None = None) -> list[CopyRow]:
        """Copies whose object should be at its target, last verified before `cutoff` (every
        one when None): never verified first, then oldest first (what a scrub checks next)."""
        sql, args = "SELECT * FROM copies WHERE state IN ('archived','missing','mismatch')", []
        for clause, value in ((" AND (verified_at IS NULL OR verified_at < ?)", cutoff), (" AND target=?", target)):
            if value:
                sql += clause
                args.append(value)
        order = " ORDER BY verified_at IS NOT NULL, verified_at, recording_id, kind, target"
        return [copy_row(row) for row in self._query(sql + order, args)]

    def copies_without_good_sibling(self) -> list[Problem]:
        rows = self._query(
            """SELECT c.recording_id, c.kind, c.target, c.state, COALESCE(c.verify_result, c.last_error) AS reason,
                      c.updated_at FROM copies c
               WHERE c.kind != 'manifest' AND c.state IN ('missing','mismatch') AND NOT EXISTS (
                   SELECT 1 FROM copies s WHERE s.recording_id = c.recording_id AND s.kind = c.kind
                   AND s.state = 'archived')
               ORDER BY c.recording_id, c.kind, c.target""")
        return [typed_row(Problem, r) for r in rows]

    # ------------------------------------------------------------------ evidence: signatures and timestamps

    def record_signature(self, recording_id: str, target: str, *, manifest_key: str, signature_key: str,
                         key_id: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO signatures (recording_id, target, manifest_key, signature_key, key_id, signed_at)"
                       " VALUES (?,?,?,?,?,?) ON CONFLICT(recording_id, target) DO UPDATE SET"
                       " manifest_key=excluded.manifest_key, signature_key=excluded.signature_key,"
                       " key_id=excluded.key_id, signed_at=excluded.signed_at",
                       (recording_id, target, manifest_key, signature_key, key_id, utcnow()))

    def signatures(self) -> dict[tuple[str, str], SignatureRow]:
        if not self._has_table("signatures"):  # a read-only older ledger
            return {}
        return {(r["recording_id"], r["target"]): typed_row(SignatureRow, r)
                for r in self._query("SELECT * FROM signatures")}

    def record_timestamp(self, *, audit_path: Path, lines: int, head: str, tsa_url: str, token: bytes | None,
                         gen_time: str | None, error: str | None) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO timestamps (audit_path, lines, head, requested_at, tsa_url, token, gen_time, error)"
                       " VALUES (?,?,?,?,?,?,?,?)",
                       (str(audit_path), lines, head, utcnow(), tsa_url, token, gen_time, error))

    def timestamps(self, audit_path: Path) -> list[TimestampRow]:
        if not self._has_table("timestamps"):
            return []
        rows = self._query("SELECT lines, head, requested_at, tsa_url, token, gen_time, error FROM timestamps "
                           "WHERE audit_path=? ORDER BY id", (str(audit_path),))
        return [typed_row(TimestampRow, r) for r in rows]

    # ------------------------------------------------------------------ work announced by webhooks

    def record_hint(self, subject_id: str, status: str, kind: str, *, received_at: str,
                    delivery_id: str | None) -> bool:
        """Once per (subject_id, status, kind): a redelivery, with or without a new rtk-uuid,
        is not new work."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO hints (subject_id, status, kind, received_at, delivery_id, next_attempt_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(subject_id, status, kind) DO NOTHING",
                (subject_id, status, kind, received_at, delivery_id, received_at, received_at))
            return cursor.rowcount == 1

    def pending_hints(self, limit: int, *, now: str) -> list[Hint]:
        if not self._has_table("hints"):  # a read-only ledger older than serve
            return []
        rows = self._query("SELECT * FROM hints WHERE state='pending' AND next_attempt_at <= ? "
                           "ORDER BY next_attempt_at, received_at LIMIT ?", (now, limit))
        return [typed_row(Hint, r) for r in rows]

    def finish_hint(self, subject_id: str, status: str, kind: str, *, state: str, error: str | None = None,
                    retry_at: str | None = None) -> None:
        now = utcnow()
        with self._tx() as db:
            db.execute("UPDATE hints SET state=?, last_error=?, attempts=attempts+1, next_attempt_at=?, updated_at=?"
                       " WHERE subject_id=? AND status=? AND kind=?",
                       (state, error, retry_at or now, now, subject_id, status, kind))
