"""`rtk-archive export --check DIR`: re-check bags written by `export --bagit` (or any BagIt
bag with SHA-256 manifests): every payload and tag file against its manifest, nothing unlisted in
data/, the Payload-Oxum; and in rtk-archive's bags, that the signed manifest describes exactly
the payload and that its signature verifies with the configured public keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import unquote

from pipeline.archive.evidence.signing import Keyring, SignatureProblem

CHUNK = 1 << 20


def find_bags(root: Path) -> list[Path]:
    if (root / "bagit.txt").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / "bagit.txt").is_file()) if root.is_dir() else []


def check_bag(bag: Path, keyring: Keyring) -> list[str]:
    """The bag's problems, one line each (none: it is whole)."""
    problems: list[str] = []
    payload = _check_manifest(bag, "manifest-sha256.txt", problems)
    _check_manifest(bag, "tagmanifest-sha256.txt", problems)
    listed = set(payload)
    for path in sorted((bag / "data").rglob("*")) if (bag / "data").is_dir() else []:
        name = path.relative_to(bag).as_posix()
        if path.is_file() and name not in listed:
            problems.append(f"{name}: in the payload but not in manifest-sha256.txt (added)")
    oxum = _info(bag).get("Payload-Oxum")
    sizes = [(bag / name).stat().st_size for name in payload if (bag / name).is_file()]
    if oxum and oxum != f"{sum(sizes)}.{len(sizes)}":
        problems.append(f"bag-info.txt: Payload-Oxum {oxum}, the payload is {sum(sizes)}.{len(sizes)}")
    _check_rtk_manifest(bag, payload, keyring, problems)
    return problems


def _check_manifest(bag: Path, name: str, problems: list[str]) -> dict[str, str]:
    """Each file a manifest lists, re-hashed; returns path -> listed digest."""
    listed: dict[str, str] = {}
    try:
        lines = (bag / name).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        problems.append(f"{name}: cannot read it ({exc.strerror})")
        return listed
    for line in filter(str.strip, lines):
        digest, _, path = line.partition("  ")
        path = unquote(path)
        listed[path] = digest
        target = bag / path
        if not target.is_file():
            problems.append(f"{path}: listed in {name} but missing")
        elif (found := _sha256(target)) != digest:
            problems.append(f"{path}: SHA-256 is {found}, {name} says {digest} (changed)")
    return listed


def _check_rtk_manifest(bag: Path, payload: dict[str, str], keyring: Keyring, problems: list[str]) -> None:
    manifest = bag / "rtk-archive" / "manifest.json"
    if not manifest.is_file():
        return
    data = manifest.read_bytes()
    try:
        described = {f["sha256"] for f in json.loads(data)["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"rtk-archive/manifest.json: not an rtk-archive manifest ({exc})")
        return
    if described != set(payload.values()):
        problems.append("rtk-archive/manifest.json: describes other files than the payload holds")
    signature = manifest.with_name("manifest.json.sig")
    if keyring.configured:
        if not signature.is_file():
            problems.append("rtk-archive/manifest.json: not signed (no manifest.json.sig)")
            return
        try:
            keyring.verify(data, signature.read_bytes())
        except SignatureProblem as exc:
            problems.append(f"rtk-archive/manifest.json: {exc}")


def _info(bag: Path) -> dict[str, str]:
    try:
        text = (bag / "bag-info.txt").read_text(encoding="utf-8")
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
