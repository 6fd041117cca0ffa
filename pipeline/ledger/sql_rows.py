"""Rows of the ledger's SQL tables as the typed rows of pipeline.ledger.rows, and back: shared by
every query module (the same SQL runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json

from pipeline.ledger.rows import CopyRow, RecordingRow, StoredCopy


def typed_row(cls, row: dict):
    return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})


def recording_row(row: dict) -> RecordingRow:
    values = {f.name: row[f.name] for f in dataclasses.fields(RecordingRow)}
    values["metadata"] = json.loads(row["metadata"] or "{}")
    return RecordingRow(**values)


def copy_row(row: dict) -> CopyRow:
    values = {f.name: row[f.name] for f in dataclasses.fields(CopyRow)}
    values["legal_hold"] = bool(row["legal_hold"])
    values["native"] = json.loads(row["native"] or "{}")
    return CopyRow(**values)


def copy_values(copy: StoredCopy) -> tuple:
    """The columns of a stored copy, in the order record_copy and clear_problem write them."""
    return (copy.key, copy.uri, copy.size, copy.sha256, json.dumps(copy.native, sort_keys=True), copy.version,
            copy.retention_mode, copy.retention_until, int(copy.legal_hold))

