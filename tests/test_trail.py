"""The compliance trail cannot be fooled, through the CLI against the simulator and a local
target: a cut audit log is caught after any command that appended to it; a problem `verify`
recorded stays one until it is really resolved; manifests missing at a target are put back
and altered ones are reported, never overwritten."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from pipeline import errors
from tests.forgery import same_crc32c_alteration
from tests.helpers import ledger_rows, run_cli, write_config


def cli(config: Path, *args: str):
    return run_cli(*args, "--config", str(config))


def cli_json(config: Path, *args: str) -> tuple[int, dict]:
    result = run_cli(*args, "--config", str(config), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def log_lines(tmp_path: Path) -> list[bytes]:
    return (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)


def cut_log(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(log_lines(tmp_path)[:keep]))


def only(root: Path, pattern: str) -> Path:
    found = sorted(root.rglob(pattern))
    assert len(found) == 1, found
    return found[0]


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Change a stored file's bytes, keeping its inode (and so the SHA-256 in its xattr)."""
    path.chmod(0o644)
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archived_config(sim, tmp_path: Path, n: int = 1) -> Path:
    for _ in range(n):
        sim.add_recording(size=50_000)
    config = write_config(tmp_path, sim)
    result = cli(config, "run")
    assert result.returncode == 0, result.stderr
    return config


# --------------------------------------------------------------------------- a cut audit log


def test_audit_verify_catches_a_cut_tail_through_the_cli(sim, tmp_path):
    """README: "a log cut short is caught against the head the ledger recorded" (issue 9 row
    "`audit verify` catches a cut tail (CLI)"). The chain alone cannot see a cut: this fails if
    `audit verify` stops passing the ledger's recorded heads, or the check ignores them."""
    config = archived_config(sim, tmp_path)
    total = len(log_lines(tmp_path))
    assert cli(config, "audit", "verify").returncode == 0
    cut_log(tmp_path, total - 2)
    result = cli(config, "audit", "verify")
    assert result.returncode == errors.EXIT_FAILURES
    assert f"BROKEN at line {total - 1}" in result.stdout and "cut short" in result.stdout
    assert f"the ledger recorded {total}" in result.stdout


def test_audit_verify_catches_a_log_cut_after_verify(sim, tmp_path):
    """Every command that appends records where the log ends, not only `run`: cutting exactly
    the lines `verify` appended is caught and named."""
    config = archived_config(sim, tmp_path)
    after_run = len(log_lines(tmp_path))
    assert cli(config, "verify").returncode == 0
    after_verify = len(log_lines(tmp_path))
    assert after_verify > after_run
    cut_log(tmp_path, after_run)
    result = cli(config, "audit", "verify")
    assert result.returncode == errors.EXIT_FAILURES
    assert "cut short" in result.stdout and f"recorded {after_verify} after `verify`" in result.stdout


def test_a_log_cut_and_then_continued_by_a_run_is_caught(sim, tmp_path):
    """A cut followed by a run that appends on top of it (the chain is whole again) is still
    caught: each head the ledger recorded must still be in the log."""
    config = archived_config(sim, tmp_path)
    total = len(log_lines(tmp_path))
    cut_log(tmp_path, total - 3)
    sim.add_recording(size=20_000)
    assert cli(config, "run").returncode == 0
    result = cli(config, "audit", "verify")
    assert result.returncode == errors.EXIT_FAILURES
    assert f"line {total} is not the line the ledger recorded after `run`" in result.stdout


def test_a_deleted_audit_log_is_caught_even_after_a_new_one_starts(sim, tmp_path):
    """A deleted log is reported, and so is one that a later run started afresh."""
    config = archived_config(sim, tmp_path)
    (tmp_path / "audit.jsonl").unlink()
    missing = cli(config, "audit", "verify")
    assert missing.returncode == errors.EXIT_FAILURES and "the log is missing" in missing.stdout
    sim.add_recording(size=20_000)
    assert cli(config, "run").returncode == 0
    assert json.loads(log_lines(tmp_path)[0])["seq"] == 1  # a new chain from the start
    again = cli(config, "audit", "verify")
    assert again.returncode == errors.EXIT_FAILURES and "BROKEN" in again.stdout


# --------------------------------------------------------------------------- problems stay problems


def test_a_recorded_alteration_stays_a_problem_until_a_deep_verify_clears_it(sim, tmp_path):
    """A copy altered so that its size and CRC32C stay the same (only a re-hash can tell):
    once `verify --deep` found it, a shallow `verify`, `status`, `report` and the next `run`
    all keep it a problem; putting the original bytes back is not enough for a shallow check;
    only a deep verify that re-reads identical bytes clears it. Messages quote both hashes."""
    config = archived_config(sim, tmp_path)
    video = only(tmp_path / "nas", "video-*")
    original = video.read_bytes()
    forged = same_crc32c_alteration(original)
    rewrite_in_place(video, forged)

    code, deep = cli_json(config, "verify", "--deep")
    assert code == 1 and [p["state"] for p in deep["problems"]] == ["mismatch"]
    detail = deep["problems"][0]["detail"]
    assert f"SHA-256 {sha(forged)}, expected {len(original)} bytes with SHA-256 {sha(original)}" in detail

    code, shallow = cli_json(config, "verify")
    assert code == 1 and [p["state"] for p in shallow["problems"]] == ["mismatch"]
    assert "only `verify --deep`" in shallow["problems"][0]["detail"]
    status = cli(config, "status")
    assert status.returncode == 1 and "mismatch" in status.stdout
    report = json.loads(cli(config, "report", "--format", "json").stdout)["rows"]
    assert [r["state"] for r in report if r["kind"] == "video"] == ["mismatch"]

    code, run = cli_json(config, "run")  # never takes the forged object for the file, never overwrites it
    assert code == 1 and any(sha(forged) in line for line in run["problems"])
    assert video.read_bytes() == forged

    rewrite_in_place(video, original)
    code, shallow = cli_json(config, "verify")
    assert code == 1 and len(shallow["problems"]) == 1
    code, deep = cli_json(config, "verify", "--deep")
    assert code == 0 and deep["problems"] == [] and deep["ok"] == 2
    assert cli(config, "status").returncode == 1  # the last run failed (on the alteration)...
    assert cli_json(config, "run")[0] == 0
    assert cli(config, "status").returncode == 0  # ...until a run succeeds
    code, shallow = cli_json(config, "verify")
    assert code == 0 and shallow["problems"] == []


def test_a_missing_copy_put_back_by_hand_needs_a_deep_verify(sim, tmp_path):
    """A copy found missing and then put back by a person: a shallow verify still reports it
    (the recorded problem stays), a deep verify that re-reads the same bytes clears it."""
    config = archived_config(sim, tmp_path)
    video = only(tmp_path / "nas", "video-*")
    saved = tmp_path / "saved"
    shutil.copy2(video, saved)
    video.unlink()
    code, found = cli_json(config, "verify")
    assert code == 1 and [p["state"] for p in found["problems"]] == ["missing"]
    shutil.copy2(saved, video)
    os.setxattr(video, "user.rtk_sha256", sha(saved.read_bytes()).encode())
    code, shallow = cli_json(config, "verify")
    assert code == 1 and [p["state"] for p in shallow["problems"]] == ["missing"]
    code, deep = cli_json(config, "verify", "--deep")
    assert code == 0 and deep["ok"] == 2


def test_verify_rechecks_a_failed_copy_that_has_an_object(sim, tmp_path):
    """A copy the run could not store because another object sat under its key is checked by
    `verify` too (copies in every state, not only archived): it reports what is there, with
    the found and expected size and hashes, until the run puts the real file there."""
    rec = sim.add_recording(size=40_000)
    config = write_config(tmp_path, sim)
    plan = json.loads(cli(config, "run", "--dry-run", "--json").stdout)
    key = plan["would_archive"][0]["keys"]["nas"]
    squatter = tmp_path / "nas" / key
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"somebody else's file\n")
    assert cli(config, "run").returncode == 1
    assert ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies WHERE kind='video'") == [{"state": "failed"}]
    code, found = cli_json(config, "verify")
    assert code == 1 and [p["state"] for p in found["problems"]] == ["mismatch"]
    assert f"size is 21, expected {rec['file_size']}" in found["problems"][0]["detail"]
    squatter.unlink()
    assert cli(config, "run").returncode == 0
    code, clean = cli_json(config, "verify", "--deep")
    assert code == 0 and clean["problems"] == []


# --------------------------------------------------------------------------- manifests


def test_a_deleted_manifest_is_put_back_by_the_next_run(sim, tmp_path):
    """A manifest deleted at a target, found missing by verify, is put back by the next run
    like any other copy."""
    config = archived_config(sim, tmp_path)
    manifest = only(tmp_path / "nas", "manifest-*")
    manifest.unlink()
    code, found = cli_json(config, "verify")
    assert code == 1 and [(p["kind"], p["state"]) for p in found["problems"]] == [("manifest", "missing")]
    assert cli(config, "run").returncode == 0
    doc = json.loads(manifest.read_text())
    assert [f["kind"] for f in doc["files"]] == ["video"]
    code, clean = cli_json(config, "verify", "--deep")
    assert code == 0 and clean["ok"] == 2


def test_a_manifest_is_put_back_when_realtimekit_no_longer_lists_the_recording(sim, tmp_path):
    """Past RealtimeKit's 7 days the API no longer lists a recording; its manifest is built
    from the ledger alone, so a deleted one is still put back."""
    config = archived_config(sim, tmp_path)
    manifest = only(tmp_path / "nas", "manifest-*")
    manifest.unlink()
    assert cli(config, "verify").returncode == 1
    for raw in list(sim.recordings):
        sim.remove_recording(raw["id"])
    assert cli(config, "run").returncode == 0
    assert manifest.exists() and json.loads(manifest.read_text())["files"][0]["kind"] == "video"


def test_a_manifest_whose_put_failed_is_put_back(sim, tmp_path):
    """A manifest that could not be stored (something in the way at its key) is retried by the
    next run once the way is clear."""
    sim.add_recording(size=30_000)
    config = write_config(tmp_path, sim)
    plan = json.loads(cli(config, "run", "--dry-run", "--json").stdout)
    video_key = plan["would_archive"][0]["keys"]["nas"]
    blocker = (tmp_path / "nas" / video_key).parent / f"manifest-{plan['would_archive'][0]['recording_id']}.json"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a manifest\n")
    manifest_state = "SELECT state FROM copies WHERE kind='manifest'"
    cli(config, "run")
    assert ledger_rows(tmp_path / "ledger.db", manifest_state) == [{"state": "failed"}]
    assert blocker.read_text() == "not a manifest\n"
    blocker.unlink()
    assert cli(config, "run").returncode == 0
    assert json.loads(blocker.read_text())["format"] == "rtk-archive-manifest/1"
    assert ledger_rows(tmp_path / "ledger.db", manifest_state) == [{"state": "archived"}]


def test_an_altered_manifest_is_reported_and_never_overwritten(sim, tmp_path):
    """A manifest someone edited is found by verify, reported by every later run and by
    status, and left exactly as found; moved away, a new one is written."""
    config = archived_config(sim, tmp_path)
    manifest = only(tmp_path / "nas", "manifest-*")
    edited = manifest.read_bytes().replace(b'"kind": "video"', b'"kind": "VIDEO"')
    rewrite_in_place(manifest, edited)
    code, found = cli_json(config, "verify")
    assert code == 1 and [(p["kind"], p["state"]) for p in found["problems"]] == [("manifest", "mismatch")]
    code, run = cli_json(config, "run")
    assert any("never overwritten" in line for line in run["problems"])
    assert manifest.read_bytes() == edited
    assert cli(config, "status").returncode == 1
    report = json.loads(cli(config, "report", "--format", "json").stdout)["rows"]
    assert [r["state"] for r in report if r["kind"] == "manifest"] == ["mismatch"]
    manifest.rename(tmp_path / "evidence.json")
    assert cli(config, "run").returncode == 0
    assert json.loads(manifest.read_text())["files"][0]["kind"] == "video"
    code, clean = cli_json(config, "verify", "--deep")
    assert code == 0 and clean["problems"] == []
