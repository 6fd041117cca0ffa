"""Compliance: verify catches tampering, the audit chain catches edits, report lists the ledger."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.audit import AuditLog, verify_chain
from pipeline.ledger import AuditHead
from pipeline.runner import run_archive
from pipeline.verify import verify_archive
from tests.forgery import same_crc32c_alteration
from tests.helpers import ledger_rows, make_config, run_cli, write_config


def videos(root: Path) -> list[Path]:
    return sorted(root.rglob("video-*"))


@pytest.fixture
def archived(sim, tmp_path):
    for _ in range(3):
        sim.add_recording(size=60_000)
    config = make_config(tmp_path, sim)
    assert run_archive(config, command="test").exit_code == 0
    return config


def test_verify_passes_on_an_intact_archive(archived):
    outcome = verify_archive(archived, target=None, since=None, until=None, deep=True)
    assert outcome.problems == [] and outcome.ok == outcome.checked == 6  # 3 videos + 3 manifests


def test_verify_catches_a_deleted_copy_and_the_next_run_puts_it_back(archived, sim, tmp_path):
    victim = videos(tmp_path / "nas")[0]
    victim.unlink()
    outcome = verify_archive(archived, target=None, since=None, until=None, deep=False)
    assert [p["state"] for p in outcome.problems] == ["missing"]
    assert victim.name.split("-", 1)[1] in outcome.problems[0]["key"]
    states = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies WHERE state != 'archived'")
    assert states == [{"state": "missing"}]
    rerun = run_archive(archived, command="test")
    assert rerun.summary.archived == 1 and victim.exists()
    assert verify_archive(archived, target=None, since=None, until=None, deep=False).problems == []


def test_deep_verify_catches_altered_bytes_of_the_same_size(archived, tmp_path):
    """README, Compliance: "`--deep` re-reads and re-hashes the bytes (catches altered content of
    the same size)". The alteration keeps size, CRC32C and the stored SHA-256, so the shallow
    check cannot see it: only the re-hash can, and the report quotes both hashes."""
    victim = videos(tmp_path / "nas")[1]
    original = victim.read_bytes()
    forged = same_crc32c_alteration(original)
    victim.chmod(0o644)
    with open(victim, "r+b") as fh:  # same inode: the SHA-256 in its xattr stays as archived
        fh.write(forged)
    assert verify_archive(archived, target=None, since=None, until=None, deep=False).problems == []
    outcome = verify_archive(archived, target=None, since=None, until=None, deep=True)
    assert len(outcome.problems) == 1 and outcome.problems[0]["state"] == "mismatch"
    detail = outcome.problems[0]["detail"]
    assert hashlib.sha256(forged).hexdigest() in detail and hashlib.sha256(original).hexdigest() in detail
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(e["action"] == "verify_failed" and e["state"] == "mismatch" for e in audit)


def test_verify_cli_exit_codes_and_json(sim, tmp_path):
    sim.add_recording(size=30_000)
    config = write_config(tmp_path, sim)
    run_cli("run", "--config", str(config))
    ok = run_cli("verify", "--config", str(config), "--deep", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["problems"] == []
    videos(tmp_path / "nas")[0].unlink()
    bad = run_cli("verify", "--config", str(config), "--json")
    assert bad.returncode == 1
    assert [p["state"] for p in json.loads(bad.stdout)["problems"]] == ["missing"]


# --------------------------------------------------------------------------- audit chain


def write_log(path: Path, n: int = 6) -> None:
    log = AuditLog(path, "run-1")
    for i in range(n):
        log.event("stored", recording_id=f"r{i}", key=f"k{i}")
    log.close()


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def put_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def test_an_intact_chain_verifies_and_appending_continues_it(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    write_log(path, 2)  # a second run appends to the same chain
    report = verify_chain(path)
    assert report.ok and report.lines == 5
    assert [json.loads(line)["seq"] for line in lines_of(path)] == [1, 2, 3, 4, 5]


def test_an_edited_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)
    lines = lines_of(path)
    lines[3] = lines[3].replace('"k3"', '"k-forged"')
    put_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok and report.broken_line == 4 and "edited" in report.reason


def test_an_edited_line_with_a_recomputed_hash_is_caught_by_the_next_line(tmp_path):
    from pipeline.audit import _self_hash

    path = tmp_path / "audit.jsonl"
    write_log(path)
    lines = lines_of(path)
    entry = json.loads(lines[2])
    entry["key"] = "forged"
    entry["hash"] = _self_hash(entry)
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    put_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok and report.broken_line == 4


def test_an_inserted_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)
    lines = lines_of(path)
    lines.insert(2, lines[1])  # a replayed copy of a real line
    put_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok and report.broken_line == 3


def test_a_deleted_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path)
    lines = lines_of(path)
    del lines[2]
    put_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok and report.broken_line == 3 and "deleted" in report.reason


def test_a_cut_off_tail_is_caught_against_the_ledgers_head(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "run-1")
    for i in range(4):
        log.event("stored", key=f"k{i}")
    head = AuditHead(log.lines, log.head, "run", "2026-01-01T00:00:00.000Z")
    log.close()
    put_lines(path, lines_of(path)[:2])
    assert verify_chain(path).ok  # the chain alone cannot see it
    report = verify_chain(path, [head])
    assert not report.ok and "cut short" in report.reason and report.broken_line == 3


def test_audit_log_is_shipped_to_a_target(sim, tmp_path):
    sim.add_recording(size=10_000)
    config = make_config(tmp_path, sim, audit={"ship_to": ["nas"]})
    result = run_archive(config, command="test")
    assert result.exit_code == 0
    shipped = list((tmp_path / "nas" / "audit").rglob("*.jsonl"))
    assert len(shipped) == 1
    assert verify_chain(shipped[0]).ok
    assert any(json.loads(line)["action"] == "audit_shipped" for line in lines_of(tmp_path / "audit.jsonl"))


# --------------------------------------------------------------------------- report


def test_report_lists_every_file_and_target_from_the_ledger(sim, tmp_path):
    recs = [sim.add_recording(size=20_000, audio=True) for _ in range(2)]
    targets = [{"name": "a", "type": "local", "path": str(tmp_path / "a"), "retention_mode": "READ_ONLY"},
               {"name": "b", "type": "local", "path": str(tmp_path / "b")}]
    config = write_config(tmp_path, sim, targets=targets)
    run_cli("run", "--config", str(config))
    result = run_cli("report", "--config", str(config), "--format", "json")
    rows = json.loads(result.stdout)["rows"]
    media = [r for r in rows if r["kind"] in ("video", "audio")]
    assert len(media) == 2 * 2 * 2  # recordings x kinds x targets
    assert {r["recording_id"] for r in rows} == {r["id"] for r in recs}
    assert all(r["state"] == "archived" and len(r["sha256"]) == 64 for r in media)
    assert {r["retention_mode"] for r in media if r["target"] == "a"} == {"READ_ONLY"}
    table = run_cli("report", "--config", str(config))
    assert table.returncode == 0 and recs[0]["id"] in table.stdout
