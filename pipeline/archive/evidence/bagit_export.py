"""`rtk-archive export --bagit DIR`: one BagIt bag (RFC 8493) per archived recording, for hand-off
to auditors and long-term preservation systems. The payload is read back from a target that
holds a verified copy, its SHA-256 and size re-checked while reading (a copy that is not the
file is passed over for the next target, and said); the rtk-archive manifest (with its
signature, when there is one) and the recording's audit lines are tag files. A bag is written
in a `.partial` folder and renamed when whole; an existing bag is never overwritten."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pipeline
from pipeline.archive import object_keys as keys
from pipeline.clock import utcnow
from pipeline.archive.evidence.signing import signature_key
from pipeline.ledger import CopyRow, FileRow
from storage import NotFound, StorageError

log = logging.getLogger("rtk_archive.export")
TAG_DIR = "rtk-archive"
CHUNK = 1 << 20


class _NotExported(Exception):
    """This recording gets no bag: the one-line reason."""


@dataclass
class ExportResult:
    bags: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def export_bags(context, out_dir: Path, *, since: str | None, until: str | None,
                recording_id: str | None) -> ExportResult:
    ledger = context.ledger
    recordings = [r for r in ledger.recordings(since=since, until=until) if recording_id in (None, r.id)]
    result = ExportResult()
    if recording_id is not None and not recordings:
        result.problems.append(f"recording {recording_id}: not in the ledger (in this window)")
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    known = ledger.known([r.id for r in recordings])
    excerpts = _audit_excerpts(context.config.audit.path, {r.id for r in recordings})
    for rec in recordings:
        bag = out_dir / keys.sanitise_component(rec.id, fallback="recording")
        try:
            _export_one(context, bag, rec, known[rec.id].files, known[rec.id].copies, excerpts.get(rec.id, []))
        except _NotExported as exc:
            result.problems.append(f"recording {rec.id}: {exc}")
            log.error("recording %s: not exported: %s", rec.id, exc)
            continue
        result.bags.append(bag)
    return result


def _export_one(context, bag: Path, rec, files: dict[str, FileRow], copies: dict[tuple[str, str], CopyRow],
                audit_lines: list[bytes]) -> None:
    if not files:
        raise _NotExported(f"no files recorded ({rec.state}{': ' + rec.reason if rec.reason else ''})")
    if bag.exists():
        raise _NotExported(f"{bag} already exists; a bag is never overwritten")
    partial = bag.with_name(f".{bag.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an export that was killed
    (partial / "data").mkdir(parents=True)
    try:
        payload = {}
        for file in sorted(files.values(), key=lambda f: f.kind):
            name = keys.sanitise_component(f"{file.kind}-{file.file_name}", fallback=file.kind)
            payload[f"data/{name}"] = _fetch_verified(context, file, copies, partial / "data" / name)
        tags = _tag_files(context, rec.id, copies, audit_lines)
        _write_bag(partial, rec, payload, tags)
        os.rename(partial, bag)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _fetch_verified(context, file: FileRow, copies, dest: Path) -> tuple[str, int]:
    """The file read from the first target whose copy is archived and, re-hashed while read, is
    the file (size and SHA-256 as downloaded)."""
    tried = []
    for (kind, name), copy in sorted(copies.items()):
        target = context.targets.get(name)
        if kind != file.kind or not copy.archived or target is None:
            continue
        try:
            digest, size = _copy_out(target, copy.key, dest)
        except StorageError as exc:
            tried.append(f"{name}: {exc}")
            continue
        if digest == file.sha256 and size == file.size:
            return digest, size
        tried.append(f"{name}: read {size} bytes with SHA-256 {digest}, expected {file.size} bytes with {file.sha256}")
    raise _NotExported(f"{file.kind}: no target holds a verified copy ({'; '.join(tried) or 'none archived'})")


def _copy_out(target, key: str, dest: Path) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    with target.open_read(key) as stream, open(dest, "wb") as out:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return hasher.hexdigest(), size


def _tag_files(context, rid: str, copies, audit_lines: list[bytes]) -> dict[str, bytes]:
    """The rtk-archive manifest (checked against the ledger's SHA-256; with its signature when
    there is one) and the recording's audit lines."""
    tags = {f"{TAG_DIR}/audit-excerpt.jsonl": b"".join(line + b"\n" for line in audit_lines)}
    for (kind, name), copy in sorted(copies.items()):
        target = context.targets.get(name)
        if kind != keys.MANIFEST or not copy.archived or target is None:
            continue
        try:
            with target.open_read(copy.key) as stream:
                data = stream.read()
        except StorageError:
            continue
        if hashlib.sha256(data).hexdigest() != copy.sha256:
            continue
        tags[f"{TAG_DIR}/manifest.json"] = data
        try:
            with target.open_read(signature_key(copy.key)) as stream:
                tags[f"{TAG_DIR}/manifest.json.sig"] = stream.read()
        except (NotFound, StorageError):
            pass  # not signed (no [signing] key when it was written): the bag says nothing of it
        break
    return tags


def _write_bag(bag: Path, rec, payload: dict[str, tuple[str, int]], tags: dict[str, bytes]) -> None:
    octets = sum(size for _digest, size in payload.values())
    info = {"Bag-Software-Agent": f"rtk-archive {pipeline.__version__}", "Bagging-Date": utcnow()[:10],
            "External-Identifier": rec.id, "External-Description": _one_line(
                f"Cloudflare RealtimeKit recording {rec.id} of meeting {rec.meeting_title or rec.meeting_id or '-'}"
                f", invoked {rec.invoked_time or '-'}"),
            "Payload-Oxum": f"{octets}.{len(payload)}"}
    files = {
        "bagit.txt": b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n",
        "bag-info.txt": "".join(f"{k}: {v}\n" for k, v in info.items()).encode(),
        "manifest-sha256.txt": "".join(f"{digest}  {_encode(path)}\n"
                                       for path, (digest, _size) in sorted(payload.items())).encode(),
        **tags,
    }
    for name, data in files.items():
        (bag / name).parent.mkdir(parents=True, exist_ok=True)
        (bag / name).write_bytes(data)
    tag_manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {_encode(name)}\n"
                           for name, data in sorted(files.items()))
    (bag / "tagmanifest-sha256.txt").write_text(tag_manifest)


def _encode(path: str) -> str:
    """RFC 8493 2.1.3: CR, LF and % in a manifest's file names are percent-encoded."""
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _audit_excerpts(path: Path, ids: set[str]) -> dict[str, list[bytes]]:
    """The audit log's lines about each recording, as written (each keeps its hashes)."""
    excerpts: dict[str, list[bytes]] = {}
    if not path.exists():
        return excerpts
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\n")
            try:
                rid = json.loads(line).get("recording_id")
            except (ValueError, AttributeError):
                continue  # `audit verify` reports a damaged line; the excerpt keeps the readable ones
            if rid in ids:
                excerpts.setdefault(rid, []).append(line)
    return excerpts
