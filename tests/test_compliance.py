"""Compliance: verify catches tampering, the audit chain catches edits, report lists the ledger."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.audit import AuditLog, verify_chain
from pipeline.errors import BookkeepingError
from pipeline.ledger import AuditHead
from pipeline.session import run_archive
from pipeline.session import verify_archive
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
    """`verify --deep` on an untouched archive: every copy (videos and manifests) is ok."""
    outcome = verify_archive(archived, target=None, since=None, until=None, deep=True)
    assert outcome.problems == [] and outcome.ok == outcome.checked == 6  # 3 videos + 3 manifests


def test_verify_catches_a_deleted_copy_and_the_next_run_puts_it_back(archived, sim, tmp_path):
    """README, Compliance: "the ledger marks them `missing`/`mismatch`. ... The next `run` puts a
    missing copy back"."""
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
    """README, Compliance: "Problems are reported one per line (and in `--json`) ..., exit 1"."""
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
    """A second writer appends to the same chain: sequence numbers and links continue."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    write_log(path, 2)  # a second run appends to the same chain
    report = verify_chain(path)
    assert report.ok and report.lines == 5
    assert [json.loads(line)["seq"] for line in lines_of(path)] == [1, 2, 3, 4, 5]


def test_an_edited_line_is_named(tmp_path):
    """README, Compliance: "`audit verify` names the first edited ... line" (its own hash)."""
    path = tmp_path / "audit.jsonl"
    write_log(path)
    lines = lines_of(path)
    lines[3] = lines[3].replace('"k3"', '"k-forged"')
    put_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok and report.broken_line == 4 and "edited" in report.reason


def test_an_edited_line_with_a_recomputed_hash_is_caught_by_the_next_line(tmp_path):
    """An edit that also recomputes the line's own hash breaks the next line's link, named."""
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
    """README, Compliance: "`audit verify` names the first ... inserted ... line"."""
    path = tmp_path / "audit.jsonl"
    write_log(path)
    lines = lines_of(path)
    lines.insert(2, lines[1])  # a replayed copy of a real line
    put_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok and report.broken_line == 3


def test_a_deleted_line_is_named(tmp_path):
    """README, Compliance: "`audit verify` names the first ... deleted line"."""
    path = tmp_path / "audit.jsonl"
    write_log(path)
    lines = lines_of(path)
    del lines[2]
    put_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok and report.broken_line == 3 and "deleted" in report.reason


def test_a_cut_off_tail_is_caught_against_the_ledgers_head(tmp_path):
    """The chain alone cannot see a cut tail; the head the ledger recorded can."""
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
    """README, Compliance: "`[audit] ship_to` copies the log to targets after each run"."""
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
    """README, Compliance: "`report`: per recording file and target — where it is, its SHA-256,
    retention, state and last verification — as a table, JSON or CSV"."""
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


# --------------------------------------------------------------------------- manifests


def test_a_manifest_describes_each_file_and_every_copy_without_secrets(sim, tmp_path):
    """README, Compliance: the manifest holds "the recording's metadata, and for each file its
    name, size, SHA-256, MD5 (when computed), CRC32C, when and from which host it was downloaded, and every copy
    (target, URI, key, version..., the backend's checksums, retention) ... No secret, no
    presigned query string"; its values are the ledger's."""
    rec = sim.add_recording(size=40_000, audio=True, meeting_title="Board meeting")
    targets = [{"name": "a", "type": "local", "path": str(tmp_path / "a"), "retention_mode": "READ_ONLY"},
               {"name": "b", "type": "local", "path": str(tmp_path / "b")}]
    config = make_config(tmp_path, sim, targets=targets)
    assert run_archive(config, command="test").exit_code == 0
    files = {f["kind"]: f for f in ledger_rows(tmp_path / "ledger.db", "SELECT * FROM files")}
    for target in ("a", "b"):
        raw = next((tmp_path / target).rglob("manifest-*")).read_text()
        assert sim.token not in raw and "X-Signature" not in raw and "X-Expires" not in raw
        doc = json.loads(raw)
        assert doc["recording"]["id"] == rec["id"] and doc["recording"]["meeting_title"] == "Board meeting"
        assert sorted(f["kind"] for f in doc["files"]) == ["audio", "video"]
        for entry in doc["files"]:
            row = files[entry["kind"]]
            for name in ("file_name", "size", "sha256", "md5", "crc32c", "downloaded_at"):
                assert entry[name] == row[name], name
                assert entry[name] or name == "md5", name  # MD5 only when a target checks it (not local)
            assert entry["downloaded_from_host"] == "127.0.0.1"
            copies = {c["target"]: c for c in entry["copies"]}
            assert set(copies) == {"a", "b"}
            assert all(c["uri"].startswith("file://") and c["key"] and c["backend_checksums"]["crc32c"]
                       for c in copies.values())
            assert copies["a"]["retention"]["mode"] == "READ_ONLY" and copies["b"]["retention"] is None


def test_a_manifest_is_written_only_where_every_file_is_verified(sim, tmp_path):
    """README, Compliance: a manifest is "Written after the files are verified, so its presence
    means the recording is complete there": none at a target that failed, one there as soon as
    a later run completes it."""
    sim.add_recording(size=30_000)
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where a folder should be")
    targets = [{"name": "good", "type": "local", "path": str(tmp_path / "good")},
               {"name": "bad", "type": "local", "path": str(blocker / "sub")}]
    config = make_config(tmp_path, sim, targets=targets)
    assert run_archive(config, command="test").exit_code == 1
    assert len(list((tmp_path / "good").rglob("manifest-*"))) == 1
    assert ledger_rows(tmp_path / "ledger.db", "SELECT target FROM copies WHERE kind='manifest'") == [
        {"target": "good"}]
    blocker.unlink()
    assert run_archive(config, command="test").exit_code == 0
    assert len(list((blocker / "sub").rglob("manifest-*"))) == 1


class _AuditThatFailsOn:
    """An audit log whose disk fills exactly when `action` is written (unit test of ordering)."""

    def __init__(self, action: str):
        self.action = action

    def event(self, action: str, **_fields) -> None:
        if action == self.action:
            raise BookkeepingError("audit log: cannot append: no space left on the device")


@pytest.mark.parametrize("action", ["verified", "manifest_stored"])
def test_the_ledger_never_says_archived_without_the_audit_line(sim, tmp_path, action):
    """README, guarantees: "the ledger never says `archived` without the audit line that says
    so": when that line cannot be written, the copy is not marked archived and the run stops."""
    from pipeline.archive.bookkeeping import Book
    from pipeline.archive.execute import Archiver
    from pipeline.archive.plan import list_uploaded, plan
    from pipeline.session import open_session

    sim.add_recording(size=20_000)
    config = make_config(tmp_path, sim)
    with open_session(config, "test", record=True, targets=True, api=True) as context:
        context.audit = _AuditThatFailsOn(action)
        archiver = Archiver(Book(context))
        planning = plan(context, list_uploaded(context, None, None, None))
        archiver.record(planning)
        with pytest.raises(BookkeepingError):
            archiver.execute(planning.plans)
    kind = "manifest" if action == "manifest_stored" else "video"
    states = [r["state"] for r in ledger_rows(config.ledger.path, "SELECT state FROM copies WHERE kind=?", (kind,))]
    assert "archived" not in states
