"""`repair` and `verify --scrub` with two local folders as targets (the cross-backend cases,
against the real storage servers, are in tests/storage/test_repair_backends.py)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import ledger_rows, run_cli, write_config


def two_folders(tmp_path: Path) -> list[dict]:
    return [{"name": "nas", "type": "local", "path": str(tmp_path / "nas")},
            {"name": "backup", "type": "local", "path": str(tmp_path / "backup")}]


def video(root: Path) -> Path:
    return next(p for p in sorted(root.rglob("video-*")) if "quarantine" not in p.parts)


def audit_actions(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def archive(sim, tmp_path):
    """Two recordings archived at two local folders; returns the config file's path."""
    for _ in range(2):
        sim.add_recording(size=40_000)
    config = write_config(tmp_path, sim, targets=two_folders(tmp_path))
    assert run_cli("run", "--config", str(config)).returncode == 0
    return config


def test_repair_puts_back_a_deleted_copy_from_the_other_target(archive, tmp_path):
    """A copy deleted behind the tool's back (and found by `verify`) is put back from the other
    target's copy, byte for byte; the ledger says archived again, the audit log says repaired."""
    victim = video(tmp_path / "nas")
    original = victim.read_bytes()
    victim.unlink()
    assert run_cli("verify", "--config", str(archive)).returncode == 1
    result = run_cli("repair", "--config", str(archive), "--json")
    payload = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert payload["repaired"] == 1 and payload["left"] == 0
    assert payload["items"][0]["source"] == "backup" and payload["items"][0]["found"] == "missing"
    assert victim.read_bytes() == original
    assert ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies WHERE state != 'archived'") == []
    assert any(e["action"] == "repaired" and e["source"] == "backup" for e in audit_actions(tmp_path))
    assert run_cli("verify", "--config", str(archive), "--deep").returncode == 0
    assert run_cli("audit", "verify", "--config", str(archive)).returncode == 0


def test_an_altered_copy_is_moved_aside_then_put_back(archive, tmp_path):
    """An altered copy is never overwritten: it is copied to quarantine/<key> first (the altered
    bytes kept, for an auditor), then removed, then the good bytes are put back from the other
    target; the output and the audit trail name the quarantine key."""
    victim = video(tmp_path / "nas")
    original = victim.read_bytes()
    altered = original[:-5] + b"XXXXX"
    victim.chmod(0o644)
    victim.write_bytes(altered)
    assert run_cli("verify", "--config", str(archive), "--deep").returncode == 1
    result = run_cli("repair", "--config", str(archive))
    assert result.returncode == 0, result.stdout + result.stderr
    key = str(victim.relative_to(tmp_path / "nas"))
    assert f"moved to quarantine/{key}" in result.stdout
    assert victim.read_bytes() == original
    assert (tmp_path / "nas" / "quarantine" / key).read_bytes() == altered
    events = audit_actions(tmp_path)
    quarantined = [e for e in events if e["action"] == "quarantined"]
    assert quarantined and quarantined[0]["sha256"] == hashlib.sha256(altered).hexdigest()
    assert run_cli("verify", "--config", str(archive), "--deep").returncode == 0


def test_dry_run_changes_nothing(archive, tmp_path):
    """`repair --dry-run` says what it would do and changes nothing: the folders, the ledger and
    the audit log are exactly as before."""
    victim = video(tmp_path / "nas")
    victim.chmod(0o644)
    victim.write_bytes(b"not the recording")
    run_cli("verify", "--config", str(archive))
    before = (tree(tmp_path / "nas"), tree(tmp_path / "backup"), (tmp_path / "ledger.db").read_bytes(),
              (tmp_path / "audit.jsonl").read_bytes())
    result = run_cli("repair", "--config", str(archive), "--dry-run", "--json")
    payload = json.loads(result.stdout)
    assert result.returncode == 0 and payload["would_repair"] == 1 and payload["repaired"] == 0
    assert "quarantine" in payload["items"][0]["detail"] and payload["items"][0]["source"] == "backup"
    after = (tree(tmp_path / "nas"), tree(tmp_path / "backup"), (tmp_path / "ledger.db").read_bytes(),
             (tmp_path / "audit.jsonl").read_bytes())
    assert after == before


def test_no_good_source_is_reported_and_exits_1(archive, tmp_path):
    """Both copies of a file gone or altered: nothing to repair from. repair exits 1 and says
    so, each bad source is reported (and recorded as the problem it is), nothing is changed;
    `status` and `report` show the file as having no good copy anywhere, the most serious problem."""
    nas, backup = video(tmp_path / "nas"), video(tmp_path / "backup")
    nas.unlink()
    backup.chmod(0o644)
    backup.write_bytes(backup.read_bytes()[:-1] + b"!")
    result = run_cli("repair", "--config", str(archive), "--json")
    payload = json.loads(result.stdout)
    assert result.returncode == 1 and payload["no_good_copy"] == 2 and payload["repaired"] == 0, result.stdout
    item = next(i for i in payload["items"] if i["target"] == "nas")
    assert item["outcome"] == "no source" and "no good copy at any other target" in item["detail"]
    assert any(s.startswith("backup: re-read") for s in item["skipped_sources"])
    assert not nas.exists()
    status = run_cli("status", "--config", str(archive), "--json")
    assert status.returncode == 1
    assert {p["target"] for p in json.loads(status.stdout)["no_good_copy"]} == {"nas", "backup"}
    text = run_cli("status", "--config", str(archive)).stdout
    assert "NO GOOD COPY ANYWHERE" in text
    report = run_cli("report", "--config", str(archive))
    assert report.stdout.startswith("NO GOOD COPY ANYWHERE")


def set_verified_at(ledger: Path, stamps: dict[tuple[str, str], str]) -> None:
    """Age the copies' last verification (the time a scrub orders by), as time passing would."""
    db = sqlite3.connect(ledger)
    with db:
        for (key, target), stamp in stamps.items():
            db.execute("UPDATE copies SET verified_at=? WHERE key=? AND target=?", (stamp, key, target))
    db.close()


def test_scrub_checks_the_oldest_first_and_the_next_scrub_continues(archive, tmp_path):
    """With a budget too small for more than the first check, `verify --scrub` checks the copy
    verified longest ago; the next scrub checks the next oldest (each check is recorded), and
    copies last verified longer ago than max_age are reported overdue (exit 1) until checked."""
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT key, target FROM copies ORDER BY key, target")
    stamps = {(c["key"], c["target"]): f"2020-01-{i + 1:02d}T00:00:00.000Z" for i, c in enumerate(copies)}
    set_verified_at(tmp_path / "ledger.db", stamps)
    order = sorted(stamps, key=stamps.get)
    first = run_cli("verify", "--config", str(archive), "--scrub", "--budget", "0s", "--json")
    payload = json.loads(first.stdout)
    assert payload["checked"] == 1 and payload["not_started"] == len(copies) - 1
    assert first.returncode == 1 and payload["overdue"] == len(copies) - 1
    fresh = {(r["key"], r["target"]) for r in ledger_rows(
        tmp_path / "ledger.db", "SELECT key, target FROM copies WHERE verified_at > '2021'")}
    assert fresh == {order[0]}
    second = json.loads(run_cli("verify", "--config", str(archive), "--scrub", "--budget", "0s", "--json").stdout)
    assert second["checked"] == 1
    fresh = {(r["key"], r["target"]) for r in ledger_rows(
        tmp_path / "ledger.db", "SELECT key, target FROM copies WHERE verified_at > '2021'")}
    assert fresh == {order[0], order[1]}
    status = json.loads(run_cli("status", "--config", str(archive), "--json").stdout)
    assert status["copies_overdue"] == len(copies) - 2
    everything = run_cli("verify", "--config", str(archive), "--scrub", "--json")
    assert everything.returncode == 0 and json.loads(everything.stdout)["overdue"] == 0


def test_scrub_rehashes_local_copies(archive, tmp_path):
    """A scrub re-reads the bytes of a folder's copies (`stat` reads them anyway): an alteration
    that keeps the size, CRC32C and stored SHA-256 is caught, which a plain `verify` misses."""
    from tests.forgery import same_crc32c_alteration

    victim = video(tmp_path / "nas")
    forged = same_crc32c_alteration(victim.read_bytes())
    victim.chmod(0o644)
    with open(victim, "r+b") as fh:
        fh.write(forged)
    assert run_cli("verify", "--config", str(archive)).returncode == 0
    scrub = run_cli("verify", "--config", str(archive), "--scrub", "--json")
    assert scrub.returncode == 1
    assert [p["state"] for p in json.loads(scrub.stdout)["problems"]] == ["mismatch"]


def test_scrub_options_need_scrub(archive):
    """--budget without --scrub is a usage error (exit 2), one line."""
    result = run_cli("verify", "--config", str(archive), "--budget", "2h")
    assert result.returncode == 2 and "--scrub" in result.stderr


def test_repair_finds_a_missing_copy_itself(archive, tmp_path):
    """Without a `verify` first, repair's own look (size and checksums of every archived copy)
    finds a deleted copy and puts it back."""
    victim = video(tmp_path / "backup")
    original = victim.read_bytes()
    victim.unlink()
    result = run_cli("repair", "--config", str(archive), "--target", "backup", "--json")
    payload = json.loads(result.stdout)
    assert result.returncode == 0 and payload["repaired"] == 1 and payload["items"][0]["source"] == "nas"
    assert victim.read_bytes() == original
    clean = run_cli("repair", "--config", str(archive), "--json")
    assert clean.returncode == 0 and json.loads(clean.stdout)["items"] == []


def test_repair_and_scrub_refuse_bad_input_in_one_line(archive, tmp_path):
    """An unknown --target, a --budget that is no length of time and a [verify] max_age that is
    none are each one line naming it, exit 2, nothing done."""
    unknown = run_cli("repair", "--config", str(archive), "--target", "nowhere")
    assert unknown.returncode == 2 and "no target named 'nowhere'" in unknown.stderr
    budget = run_cli("verify", "--config", str(archive), "--scrub", "--budget", "soon")
    assert budget.returncode == 2 and "--budget" in budget.stderr
    config = archive.read_text() + '\n[verify]\nmax_age = "a while"\n'
    bad = tmp_path / "bad.toml"
    bad.write_text(config)
    result = run_cli("status", "--config", str(bad))
    assert result.returncode == 2 and "verify.max_age" in result.stderr and len(result.stderr.splitlines()) == 1


def test_repair_before_anything_was_archived_creates_nothing(sim, tmp_path):
    """`repair` with no ledger yet: nothing to repair, exit 0, and no ledger or audit log made."""
    config = write_config(tmp_path, sim, targets=two_folders(tmp_path))
    result = run_cli("repair", "--config", str(config), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["items"] == []
    assert not (tmp_path / "ledger.db").exists() and not (tmp_path / "audit.jsonl").exists()
