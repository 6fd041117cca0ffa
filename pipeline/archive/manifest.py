"""The manifest stored beside each archived recording at each target: what the recording is,
and for each file its size, digests, where it came from and where every copy lives. Its
presence at a target means the recording is complete and verified there. No secret and no
presigned query string ever goes in."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pipeline
from pipeline.archive.hashing import Hasher
from pipeline.audit import write_all
from pipeline.clock import utcnow
from pipeline.ledger import CopyRow, FileRow
from storage import LocalFile

FORMAT = "rtk-archive-manifest/1"
RECORDING_FIELDS = ("id", "meeting_id", "meeting_title", "session_id", "status", "output_file_name",
                    "invoked_time", "started_time", "stopped_time", "recording_duration",
                    "start_reason", "stop_reason")


def build_manifest(*, recording: dict, files: list[FileRow], copies: dict[tuple[str, str], CopyRow],
                   target_types: dict[str, str], run_id: str) -> dict:
    """`recording`: the API's record without URLs and storage_config (plan.recording_metadata);
    `files`: every file of the recording, each archived at the target the manifest goes to."""
    return {
        "format": FORMAT,
        "tool": {"name": "rtk-archive", "version": pipeline.__version__},
        "run_id": run_id,
        "written_at": utcnow(),
        "written_by_host": socket.gethostname(),
        "recording": {name: recording.get(name) for name in RECORDING_FIELDS},
        "files": [_file_entry(f, copies, target_types) for f in files],
    }


def _file_entry(file: FileRow, copies: dict[tuple[str, str], CopyRow], target_types: dict[str, str]) -> dict:
    return {
        "kind": file.kind,
        "file_name": file.file_name,
        "size": file.size,
        "sha256": file.sha256,
        "md5": file.md5,
        "crc32c": file.crc32c,
        "downloaded_at": file.downloaded_at,
        "downloaded_from_host": file.source_host,
        "copies": [
            {
                "target": copy.target,
                "type": target_types.get(copy.target),
                "uri": copy.uri,
                "key": copy.key,
                "version": copy.version,
                "backend_checksums": copy.native,
                "verified_by": copy.verified_by,
                "verified_at": copy.verified_at,
                "retention": {"mode": copy.retention_mode, "until": copy.retention_until,
                              "legal_hold": copy.legal_hold} if copy.retention_mode or copy.legal_hold else None,
            }
            for (kind, _target), copy in sorted(copies.items())
            if kind == file.kind and copy.archived
        ],
    }


def manifest_files_match(existing: dict, fresh: dict) -> bool:
    """An existing manifest (from a run killed before it noted it) describes the same files."""
    def digest(m: dict) -> set:
        return {(f.get("kind"), f.get("size"), f.get("sha256")) for f in m.get("files", [])}

    return existing.get("format") == FORMAT and digest(existing) == digest(fresh)


def write_local(manifest: dict, path: Path) -> tuple[LocalFile, bytes]:
    """Write the manifest to a private spool file and describe it for a put (digests of the
    bytes in hand: nothing is read back); also its bytes (what a signature signs). The spool
    file is the pipeline's own, discarded after the puts: a target on its file system may
    take it by hard link."""
    data = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    hasher = Hasher()
    hasher.update(data)
    return LocalFile(path=path, size=hasher.size, checksums=hasher.checksums(), disposable=True), data
