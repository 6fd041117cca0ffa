"""`rtk-archive report`: one row per recording file and target, from the ledger: where it is
archived, its SHA-256, its retention and its last verification. The document an auditor asks for."""

from __future__ import annotations

import posixpath

from pipeline.archive.object_keys import MANIFEST
from pipeline.ledger import CopyRow, Ledger, RecordingRow

COLUMNS = ("recording_id", "meeting_id", "meeting_title", "invoked_time", "recording_state", "kind", "file_name",
           "size", "sha256", "target", "state", "key", "uri", "version", "retention_mode", "retention_until",
           "legal_hold", "archived_at", "verified_at", "verify_result", "signed_by")


def report_rows(ledger: Ledger, *, since: str | None = None, until: str | None = None) -> list[dict]:
    recordings = ledger.recordings(since=since, until=until)
    known = ledger.known([rec.id for rec in recordings])  # files and copies, in batches
    signatures = ledger.signatures()  # which key signed each manifest, per target
    rows = []
    for rec in recordings:
        files, copies = known[rec.id].files, known[rec.id].copies
        for file in sorted(files.values(), key=lambda f: f.kind):
            file_copies = [c for (kind, _t), c in sorted(copies.items()) if kind == file.kind]
            facts = {"kind": file.kind, "file_name": file.file_name, "size": file.size, "sha256": file.sha256,
                     "state": file.state, "verify_result": file.last_error}
            rows += [_row(rec, facts, copy) for copy in file_copies or [None]]
        for (kind, _t), copy in sorted(copies.items()):  # manifests are copies an auditor checks too
            if kind == MANIFEST:
                facts = {"kind": kind, "file_name": posixpath.basename(copy.key), "size": copy.size,
                         "sha256": copy.sha256, "state": copy.state, "verify_result": None}
                signature = signatures.get((rec.id, copy.target))
                rows.append(dict(_row(rec, facts, copy), signed_by=signature.key_id if signature else None))
        if not files:
            note = {"kind": "-", "state": rec.state, "verify_result": rec.reason} if rec.reason else {}
            rows.append(_row(rec, note, None))
    return rows


def _row(rec: RecordingRow, file: dict, copy: CopyRow | None) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(recording_id=rec.id, meeting_id=rec.meeting_id, meeting_title=rec.meeting_title,
               invoked_time=rec.invoked_time, recording_state=rec.state, **file)
    if copy:
        row.update(target=copy.target, state=copy.state, key=copy.key, uri=copy.uri, version=copy.version,
                   retention_mode=copy.retention_mode, retention_until=copy.retention_until,
                   legal_hold=copy.legal_hold, archived_at=copy.archived_at, verified_at=copy.verified_at,
                   verify_result=copy.verify_result if copy.state != "failed" else copy.last_error)
    row["target"] = row["target"] or "-"
    row["kind"] = row["kind"] or "-"
    return row
