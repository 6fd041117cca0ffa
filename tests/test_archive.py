"""The archive pipeline against the simulator over real HTTP, with local targets. Docstrings
name the README rule (section "What rtk-archive guarantees") each test proves."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

from pipeline.archive import object_keys as keys
from pipeline.session import run_archive
from tests.helpers import expected_files, file_requests, ledger_rows, make_config, past_retention_files


def stored_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archived_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every recording file (not manifests) under a local target."""
    return {k: sha(v) for k, v in stored_files(root).items() if "/manifest-" not in k}


def test_archives_every_uploaded_file_verified_with_manifests(busy_sim, tmp_path):
    """Rules: "Nothing is marked archived before it is verified at the target" (every archived
    copy records what was compared, and its bytes are the recording's) and "Deadlines are
    surfaced" (recordings past retention are counted lost, exit 1); the Compliance manifest
    sits beside each archived recording and lists the right SHA-256 without a signed query."""
    config = make_config(tmp_path, busy_sim)
    expected = expected_files(busy_sim)
    assert len(expected) >= 10  # the generated mix has enough to mean something
    result = run_archive(config, command="test")
    summary = result.summary
    assert summary.failed == 0
    assert summary.archived == len(expected)
    assert summary.lost == past_retention_files(busy_sim) > 0
    assert result.exit_code == 1  # lost recordings are a failure the cron job must report
    assert sorted(archived_digests(tmp_path / "nas").values()) == sorted(expected.values())
    # The ledger says archived only for what is really there, with the right SHA-256.
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT recording_id, kind, sha256, state FROM files")
    assert {(r["recording_id"], r["kind"]): r["sha256"] for r in rows if r["state"] == "archived"} == expected
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies WHERE kind != 'manifest'")
    assert {c["state"] for c in copies} == {"archived"}
    assert all("sha256" in c["verified_by"] for c in copies)
    # A manifest beside each archived recording, listing each file with its correct checksum.
    manifests = [json.loads(v) for k, v in stored_files(tmp_path / "nas").items() if "/manifest-" in k]
    assert len(manifests) == len({rid for rid, _ in expected})
    for doc in manifests:
        for entry in doc["files"]:
            assert entry["sha256"] == expected[(doc["recording"]["id"], entry["kind"])]
            assert entry["copies"][0]["target"] == "nas"
            assert "X-Signature" not in json.dumps(doc)
    assert not any((tmp_path / "spool").iterdir())


def test_file_downloads_never_carry_the_api_token(sim, tmp_path):
    """Rule: "Secrets stay secret ... The presigned file URLs never receive the API token."
    Every API request carries it; no file request does."""
    sim.add_recording(audio=True)
    run_archive(make_config(tmp_path, sim), command="test")
    api = [r for r in sim.requests if r.kind == "api"]
    files = file_requests(sim)
    assert api and all(r.authorization for r in api)
    assert len(files) == 2 and not any(r.authorization for r in files)


def test_second_run_downloads_nothing(busy_sim, tmp_path):
    """Rule: "Every target gets every file, exactly once ... the next run redoes only what is
    missing": after a complete run nothing is missing, so nothing is fetched or archived again;
    every file archived, skipped or lost before is skipped now, and the lost are not
    re-reported."""
    config = make_config(tmp_path, busy_sim)
    first = run_archive(config, command="test").summary
    assert first.archived > 0 and first.lost > 0 and first.skipped > 0  # the mix means something
    before = len(file_requests(busy_sim))
    second = run_archive(config, command="test").summary
    assert second.archived == 0 and second.failed == 0 and second.lost == 0
    assert second.skipped == first.archived + first.skipped + first.lost
    assert len(file_requests(busy_sim)) == before  # not one byte downloaded again


def test_one_download_feeds_every_target(sim, tmp_path):
    """Rule: "Every target gets every file, exactly once. One download feeds all targets."
    (tests/test_guarantees.py checks the same per file and per request.)"""
    for _ in range(3):
        sim.add_recording(audio=True)
    targets = [{"name": f"t{i}", "type": "local", "path": str(tmp_path / f"t{i}")} for i in range(3)]
    config = make_config(tmp_path, sim, targets=targets)
    summary = run_archive(config, command="test").summary
    assert summary.archived == 6 and summary.failed == 0
    assert len(file_requests(sim)) == 6  # each file fetched once for three targets
    digests = [archived_digests(tmp_path / f"t{i}") for i in range(3)]
    assert digests[0] == digests[1] == digests[2] and len(digests[0]) == 6
    # One target may take the spool file by hard link, but every target holds its own file.
    media = [p for i in range(3) for p in (tmp_path / f"t{i}").rglob("*") if p.is_file() and "manifest" not in p.name]
    assert len({p.stat().st_ino for p in media}) == len(media) == 18
    assert all(p.stat().st_nlink == 1 for p in media)


def test_a_new_target_gets_only_what_it_lacks(sim, tmp_path):
    """Rule: "the next run redoes only what is missing, for that target only" (Every target
    gets every file, exactly once): a target added later gets every file; the first target's
    copies are not redone."""
    for _ in range(2):
        sim.add_recording()
    one = [{"name": "a", "type": "local", "path": str(tmp_path / "a")}]
    run_archive(make_config(tmp_path, sim, targets=one), command="test")
    (tmp_path / "a-before").write_text(json.dumps(sorted(stored_files(tmp_path / "a"))))
    requests_before = len(file_requests(sim))
    two = one + [{"name": "b", "type": "local", "path": str(tmp_path / "b")}]
    summary = run_archive(make_config(tmp_path, sim, targets=two), command="test").summary
    assert summary.archived == 2
    assert len(file_requests(sim)) == requests_before + 2  # downloaded again for b only
    assert archived_digests(tmp_path / "a") == archived_digests(tmp_path / "b")
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT target, attempts FROM copies WHERE target='a' AND kind='video'")
    assert all(r["attempts"] == 1 for r in rows)  # nothing was redone at a


def test_recordings_without_realtimekit_copy_are_skipped_with_reason(sim, tmp_path):
    """Rule: "Recordings with no RealtimeKit copy (bucket disabled) are skipped with that
    reason" (Deadlines are surfaced)."""
    kept = sim.add_recording()
    own_storage = sim.add_recording(bucket_enabled=False)
    config = make_config(tmp_path, sim)
    summary = run_archive(config, command="test").summary
    assert summary.archived == 1 and summary.skipped == 1 and summary.failed == 0
    row = ledger_rows(tmp_path / "ledger.db", "SELECT state, reason FROM recordings WHERE id=?", (own_storage["id"],))[0]
    assert row["state"] == "skipped" and "bucket was disabled" in row["reason"]
    assert ledger_rows(tmp_path / "ledger.db", "SELECT state FROM recordings WHERE id=?", (kept["id"],))[0]["state"] == "archived"


def test_recording_past_retention_is_reported_lost_once(sim, tmp_path):
    """Rule: "A recording whose files can no longer be obtained is reported lost (once, then in
    `status`), never silently skipped" (Deadlines are surfaced)."""
    old = sim.add_recording(stopped_time=sim.now() - timedelta(days=8))
    config = make_config(tmp_path, sim)
    result = run_archive(config, command="test")
    assert result.summary.lost == 1 and result.exit_code == 1
    assert any("cannot be obtained" in p for p in result.summary.problems)
    row = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM recordings WHERE id=?", (old["id"],))[0]
    assert row["state"] == "lost"
    again = run_archive(config, command="test")  # not retried nor re-reported every night
    assert again.summary.lost == 0 and again.exit_code == 0


def test_at_risk_recordings_go_first_and_are_reported(sim, tmp_path):
    """Rule: "Deadlines are surfaced. Recordings closest to RealtimeKit's 7-day deletion go
    first; those within deadline_margin_hours are reported at risk." Four recordings whose
    deadline order (C, A, D, B) is neither the API's listing order nor its reverse: with one
    worker the file server sees them in deadline order; the two within 24 h are at risk."""
    now = sim.now()
    day, hour = timedelta(days=1), timedelta(hours=1)
    a = sim.add_recording(invoked_time=now - 6 * day - 22 * hour, stopped_time=now - 6 * day - 10 * hour)  # 14 h left
    b = sim.add_recording(invoked_time=now - 6 * day - 21 * hour, stopped_time=now - hour)  # 6 d 23 h left
    c = sim.add_recording(invoked_time=now - 6 * day - 20 * hour, stopped_time=now - 6 * day - 19 * hour)  # 5 h left
    d = sim.add_recording(invoked_time=now - 6 * day - 19 * hour, stopped_time=now - 3 * day)  # 4 d left
    config = make_config(tmp_path, sim, archive={"concurrency": 1, "deadline_margin_hours": 24})
    plan = run_archive(config, command="test", dry_run=True)
    assert plan.summary.at_risk == 2 and sorted(plan.summary.at_risk_ids) == sorted([a["id"], c["id"]])
    summary = run_archive(config, command="test").summary
    assert summary.archived == 4
    assert summary.at_risk == 0 and summary.at_risk_ids == []  # archived now: no longer at risk
    order = [r.path.split("/")[2] for r in file_requests(sim)]
    assert order == [c["id"], a["id"], d["id"], b["id"]]


def test_time_window_and_meeting_filters(sim, tmp_path):
    """`--since` and `--meeting-id` archive exactly the recordings they select."""
    now = sim.now()
    early = sim.add_recording(invoked_time=now - timedelta(days=3))
    late = sim.add_recording(invoked_time=now - timedelta(hours=5), meeting_title="Board")
    config = make_config(tmp_path, sim)
    summary = run_archive(config, command="test", since=now - timedelta(days=1)).summary
    assert summary.archived == 1
    assert ledger_rows(tmp_path / "ledger.db", "SELECT id FROM recordings") == [{"id": late["id"]}]
    summary = run_archive(config, command="test", meeting_id=early["meeting"]["id"]).summary
    assert summary.archived == 1
    archived = ledger_rows(tmp_path / "ledger.db", "SELECT id FROM recordings WHERE state='archived'")
    assert sorted(r["id"] for r in archived) == sorted([early["id"], late["id"]])


def test_hostile_file_names_stay_inside_the_target(sim, tmp_path):
    """Rule: "Hostile input is contained": file names that are absolute, contain `..`, NUL or
    control characters, or are too long, give a sanitised key inside the target's prefix.
    Each recording lands exactly once, in its own folder under the target, with a safe name."""
    names = ["../../../etc/passwd", "/abs/olute.mp4", "nul\x00byte.mp4", "ctl\x07\x1b[31m.mp4", "é" * 400 + ".mp4",
             "..", "con:*?<>|.mp4"]
    for name in names:
        sim.add_recording(output_file_name=name)
    root = tmp_path / "nas"
    summary = run_archive(make_config(tmp_path, sim), command="test").summary
    assert summary.archived == len(names) and summary.failed == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".mp4", "")]
    for path in files:
        if path.parent == tmp_path or "spool" in path.parts or path.name.startswith(("ledger", "audit")):
            continue
        assert root in path.parents, path
        assert len(path.name.encode()) <= 255
        assert not any(ord(c) < 32 for c in str(path))
    assert not (tmp_path / "etc").exists() and not Path("/abs/olute.mp4").exists()
    stored = [p for p in root.rglob("video-*") if p.is_file()]
    assert len(stored) == len(names)
    for path in stored:
        parts = path.relative_to(root).parts
        assert len(parts) == 5 and not any(part.startswith(".") for part in parts), parts
        assert len(path.name.encode()) <= len("video-") + keys.MAX_NAME_BYTES


def test_different_object_already_at_the_key_is_refused_not_overwritten(sim, tmp_path):
    """Rule: "An object that already sits under a key with different content is never
    overwritten (reported: move it away)" (Every target gets every file, exactly once)."""
    rec = sim.add_recording(output_file_name="clash.mp4")
    config = make_config(tmp_path, sim)
    run_archive(config, command="dry", dry_run=True)
    stranger = tmp_path / "nas"
    key_dir = stranger / rec["invoked_time"][:10].replace("-", "/") / rec["id"]
    key_dir.mkdir(parents=True)
    (key_dir / "video-clash.mp4").write_bytes(b"someone else's file")
    result = run_archive(config, command="test")
    assert result.summary.failed == 1 and result.exit_code == 1
    assert "never overwrites" in result.summary.problems[0]
    assert (key_dir / "video-clash.mp4").read_bytes() == b"someone else's file"
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies")
    assert copies == [{"state": "failed"}]


def _forget_manifest_copies(ledger: Path) -> None:
    """What a power cut before the manifest's ledger row reached the disk leaves (that row is
    not waited for, pipeline/archive/completion.py): the manifest at the target, no row."""
    import sqlite3

    with sqlite3.connect(ledger) as db:
        db.execute("DELETE FROM copies WHERE kind = ?", (keys.MANIFEST,))
        db.execute("UPDATE recordings SET state = 'pending'")


def test_a_manifest_stored_but_not_noted_is_taken_by_the_next_run(sim, tmp_path):
    """Rule: "A killed run loses nothing": a manifest whose ledger row was lost is met by the
    next run, which finds it lists the same files and takes it as it is (not rewritten, no
    failure); every other copy is left alone."""
    for _ in range(2):
        sim.add_recording()
    config = make_config(tmp_path, sim)
    assert run_archive(config, command="test").exit_code == 0
    before = {k: v for k, v in stored_files(tmp_path / "nas").items() if "/manifest-" in k}
    assert len(before) == 2
    _forget_manifest_copies(tmp_path / "ledger.db")
    result = run_archive(config, command="test")
    assert result.exit_code == 0 and result.summary.failed == 0, result.summary.problems
    assert {k: v for k, v in stored_files(tmp_path / "nas").items() if "/manifest-" in k} == before
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT state, verified_by FROM copies WHERE kind = 'manifest'")
    assert [r["state"] for r in rows] == ["archived", "archived"]
    assert {r["verified_by"] for r in rows} == {"existing manifest lists the same files"}
    states = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM recordings")
    assert [r["state"] for r in states] == ["archived", "archived"]


def test_a_manifest_listing_other_files_is_never_taken_or_overwritten(sim, tmp_path):
    """Rule: "An object that already sits under a key with different content is never
    overwritten": where the row was lost and the manifest under its key lists other files
    (someone else's, or altered), the next run reports it and leaves it as found."""
    sim.add_recording()
    config = make_config(tmp_path, sim)
    assert run_archive(config, command="test").exit_code == 0
    [path] = [p for p in (tmp_path / "nas").rglob("manifest-*")]
    doc = json.loads(path.read_bytes())
    doc["files"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    _forget_manifest_copies(tmp_path / "ledger.db")
    result = run_archive(config, command="test")
    assert result.exit_code == 1 and result.summary.copies_failed == 1
    assert "manifest" in result.summary.problems[0] and "never overwrites" in result.summary.problems[0]
    assert json.loads(path.read_bytes()) == doc
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies WHERE kind = 'manifest'")
    assert [r["state"] for r in rows] == ["failed"]


def test_dry_run_changes_nothing(busy_sim, tmp_path):
    """`--dry-run` plans without downloading, storing or recording anything."""
    config = make_config(tmp_path, busy_sim)
    result = run_archive(config, command="test", dry_run=True)
    assert result.planned and not (tmp_path / "nas").exists()
    assert not file_requests(busy_sim)
    assert not (tmp_path / "ledger.db").exists()  # nothing recorded: not even a ledger
