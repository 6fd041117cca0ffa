"""`rtk-archive report`: one row per recording file and target, from the ledger: where it is
archived, its SHA-256, its retention and its last verification. The document an auditor asks for."""

from __future__ import annotations

import posixpath

from pipeline.archive.object_keys import MANIFEST
from pipeline.ledger.sqlite import Ledger

COLUMNS = ("recording_id", "meeting_id", "meeting_title", "invoked_time", "recording_state", "kind", "file_name",
           "size", "sha256", "target", "state", "key", "uri", "version", "retention_mode", "retention_until",
           "legal_hold", "archived_at", "verified_at", "verify_result")


def report_rows(ledger: Ledger, *, since: str | None = None, until: str | None = None) -> list[dict]:
    rows = []
    for rec in ledger.recordings(since=since, until=until):
        base = {"recording_id": rec["id"], "meeting_id": rec["meeting_id"], "meeting_title": rec["meeting_title"],
                "invoked_time": rec["invoked_time"], "recording_state": rec["state"]}
        copies = ledger.copies(rec["id"])
        files = ledger.files(rec["id"])
        for file in files:
            file_copies = [c for (kind, _t), c in sorted(copies.items()) if kind == file["kind"]]
            for copy in file_copies or [None]:
                rows.append(_row(base, file, copy))
        for (kind, _t), copy in sorted(copies.items()):  # manifests are copies an auditor checks too
            if kind == MANIFEST:
                rows.append(_row(base, {"kind": kind, "file_name": posixpath.basename(copy.key), "size": copy.size,
                                        "sha256": copy.sha256, "state": copy.state, "last_error": None}, copy))
        if not files:
            rows.append(_row(base, None, None, note=rec["reason"]))
    return rows


def _row(base: dict, file: dict | None, copy, note: str | None = None) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(base)
    if file:
        row.update(kind=file["kind"], file_name=file["file_name"], size=file["size"], sha256=file["sha256"],
                   state=file["state"], verify_result=file["last_error"])
    if copy:
        row.update(target=copy.target, state=copy.state, key=copy.key, uri=copy.uri, version=copy.version,
                   retention_mode=copy.retention_mode, retention_until=copy.retention_until,
                   legal_hold=copy.legal_hold, archived_at=copy.archived_at, verified_at=copy.verified_at,
                   verify_result=copy.verify_result if copy.state != "failed" else copy.last_error)
    if note and not file:
        row.update(state=base["recording_state"], verify_result=note, kind="-", target="-")
    row["target"] = row["target"] or "-"
    row["kind"] = row["kind"] or "-"
    return row
