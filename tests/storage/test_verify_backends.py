"""`verify` at every backend, each against its real server: a deep verify re-reads the bytes
and quotes what it found, and a problem it recorded stays one for a shallow verify."""

from __future__ import annotations

import hashlib
import json

from tests.forgery import same_crc32c_alteration
from tests.helpers import run_cli, write_config


def test_deep_verify_rereads_and_reports_a_same_size_alteration_at_every_backend(rig, sim, tmp_path, prefix):
    """README, Compliance: "`--deep` re-reads and re-hashes the bytes (catches altered content
    of the same size)", at every backend. The altered copy keeps its size and CRC32C; the report
    quotes the SHA-256 of the bytes read back and the archived one, which only the re-read
    knows; after it, a shallow verify still reports the copy (a recorded problem stays)."""
    rec = sim.add_recording(size=100_000)
    config = write_config(tmp_path, sim, targets=[rig.target_settings("t", prefix)])
    assert run_cli("run", "--config", str(config)).returncode == 0
    video = next(k for k in rig.list_keys(prefix) if "video-" in k)
    original = rig.raw_read(video)
    forged = same_crc32c_alteration(original)
    rig.raw_write(video, forged)

    deep = run_cli("verify", "--config", str(config), "--deep", "--json")
    problems = json.loads(deep.stdout)["problems"]
    assert deep.returncode == 1 and [p["state"] for p in problems] == ["mismatch"]
    assert (f"re-read {len(forged)} bytes with SHA-256 {hashlib.sha256(forged).hexdigest()}, expected "
            f"{rec['file_size']} bytes with SHA-256 {hashlib.sha256(original).hexdigest()}") in problems[0]["detail"]

    shallow = run_cli("verify", "--config", str(config), "--json")
    assert shallow.returncode == 1
    assert [p["state"] for p in json.loads(shallow.stdout)["problems"]] == ["mismatch"]
