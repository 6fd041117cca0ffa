"""The ledger protocol's behaviour, the same on both backends: every test here runs against an
SQLite file and against a real PostgreSQL database (a throw-away cluster the tests start).
Then the command line on a PostgreSQL ledger (run, status, verify, audit verify), migrations
(newer refused, older told to migrate) and moving an SQLite ledger into PostgreSQL losslessly."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from pipeline.errors import BookkeepingError
from pipeline.ledger import ListedFile, ListedRecording, StoredCopy, open_ledger
from pipeline.ledger.migrations import POSTGRES_STEPS, SQLITE_STEPS
from pipeline.ledger.postgres import migrate
from tests.helpers import config_dict, run_cli, to_toml


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    """Where a fresh ledger is: an SQLite path or a migrated PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "ledger.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def ledger(location):
    opened = open_ledger(location, command="run")
    yield opened
    opened.close()


def listed(rid: str, *, invoked: str = "2026-11-01T10:00:00.000Z", deadline: str | None = "2026-11-08T10:00:00.000Z",
           kinds=("video",), skipped: str | None = None) -> ListedRecording:
    return ListedRecording(id=rid, meeting_id="m-" + rid, meeting_title="Weekly ✓ sync", session_id="s",
                           output_file_name=f"{rid}.mp4", status="UPLOADED", invoked_time=invoked,
                           stopped_time=invoked, url_expiry=deadline, deadline=deadline,
                           metadata={"id": rid, "nested": {"n": 1}},
                           files=tuple(ListedFile(kind, f"{rid}-{kind}.mp4", 1000) for kind in kinds), skipped=skipped)


def stored(key: str, size: int = 1000) -> StoredCopy:
    return StoredCopy(key=key, uri=f"file:///nas/{key}", size=size, sha256="ab" * 32, native={"etag": "x"},
                      version=None, retention_mode=None, retention_until=None, legal_hold=False)


def test_a_listing_is_known_in_batches_with_its_files(ledger):
    """record_listing stores recordings and files; known() returns them typed, metadata intact,
    for more ids than one batch holds, and nothing for ids it never saw."""
    ledger.record_listing([listed(f"r{i:04d}", kinds=("video", "audio")) for i in range(620)])
    known = ledger.known([f"r{i:04d}" for i in range(620)] + ["unknown"])
    assert known["unknown"].recording is None
    assert sorted(known["r0617"].files) == ["audio", "video"]
    assert known["r0001"].recording.metadata == {"id": "r0001", "nested": {"n": 1}}
    assert known["r0001"].recording.meeting_title == "Weekly ✓ sync"
    assert ledger.state_counts()["files"] == {"pending": 1240}


def test_a_skipped_recording_is_a_problem_and_listed_again_keeps_its_state(ledger):
    """A recording skipped at listing is recorded skipped with its reason (a problem); listed
    again, it stays what it was."""
    ledger.record_listing([listed("a", skipped="not on RealtimeKit's bucket")])
    ledger.record_listing([listed("a")])
    assert ledger.recording("a").state == "skipped"
    assert [p.reason for p in ledger.problems()] == ["not on RealtimeKit's bucket"]


def test_download_copy_and_failure_are_recorded_and_an_archived_copy_stays_archived(ledger):
    """record_download keeps the digests; record_copy marks a copy archived; a later failure
    to the same target does not turn it back into failed (it counts the attempt)."""
    ledger.record_listing([listed("a")])
    ledger.record_download("a", "video", size=1000, sha256="ab" * 32, md5=None, crc32c="c", source_host="h")
    ledger.record_copy("a", "video", "nas", stored("k/a"), verified_by="sha256")
    ledger.record_copy_failure("a", "video", "nas", key="k/a", error="disk full")
    ledger.record_copy_failure("a", "video", "s3", key="k/a", error="denied")
    copies = ledger.copies("a")
    assert copies[("video", "nas")].state == "archived" and copies[("video", "nas")].attempts == 2
    assert copies[("video", "s3")].state == "failed" and copies[("video", "s3")].last_error == "denied"
    assert copies[("video", "nas")].native == {"etag": "x"} and copies[("video", "nas")].legal_hold is False
    assert ledger.files("a")[0].digests == {"sha256": "ab" * 32, "crc32c": "c"}
    assert ledger.files("a")[0].attempts == 1


def test_verification_problems_are_cleared_only_by_a_deep_check_that_cascades(ledger):
    """A copy verify found missing is a problem; clear_problem turns it, its failed file and
    its failed recording back into archived."""
    ledger.record_listing([listed("a")])
    ledger.record_copy("a", "video", "nas", stored("k/a"), verified_by="sha256")
    ledger.record_verification("a", "video", "nas", state="missing", result="gone")
    ledger.set_file_state("a", "video", "failed", "copy missing", count_attempt=True)
    ledger.set_recording_state("a", "failed", "a copy is missing")
    assert [c.state for c in ledger.copies_to_verify()] == ["missing"]
    assert {p.state for p in ledger.problems()} == {"failed", "missing"}
    ledger.clear_problem("a", "video", "nas", stored("k/a"), result="bytes match")
    assert ledger.copies("a")[("video", "nas")].state == "archived"
    assert ledger.files("a")[0].state == "archived"
    assert ledger.recording("a").state == "archived"


def test_windows_manifests_and_deadlines(ledger):
    """copies_to_verify and recordings() honour target and time windows; a recording with a
    file archived but no manifest there is found; at_risk lists unarchived recordings whose
    deadline is before the given time, soonest first."""
    ledger.record_listing([listed("old", invoked="2026-10-01T00:00:00.000Z", deadline="2026-10-08T00:00:00.000Z"),
                           listed("new", invoked="2026-11-20T00:00:00.000Z", deadline="2026-11-27T00:00:00.000Z")])
    for rid in ("old", "new"):
        ledger.record_copy(rid, "video", "nas", stored(f"k/{rid}"), verified_by="sha256")
    ledger.record_copy("old", "manifest", "nas", stored("k/old.json"), verified_by="sha256")
    ledger.record_copy("new", "video", "s3", stored("k/new"), verified_by="sha256")
    assert [c.recording_id for c in ledger.copies_to_verify(target="s3")] == ["new"]
    assert [c.recording_id for c in ledger.copies_to_verify(since="2026-11-01T00:00:00.000Z")] == ["new", "new"]
    assert [r.id for r in ledger.recordings(until="2026-11-01T00:00:00.000Z")] == ["old"]
    ledger.record_listing([listed("undated", invoked=None, deadline=None)])
    assert [r.id for r in ledger.recordings()] == ["undated", "old", "new"]  # NULL first, as SQLite sorts
    assert ledger.recordings_without_manifest() == ["new"]
    assert [r.id for r in ledger.at_risk("2026-12-01T00:00:00.000Z")] == ["old", "new"]
    ledger.set_recording_state("old", "archived")
    assert [r.id for r in ledger.at_risk("2026-12-01T00:00:00.000Z")] == ["new"]


def test_runs_and_audit_heads(ledger, tmp_path):
    """Runs are recorded with their outcome, newest first; audit heads per log path, oldest
    first, with a run's legacy head included once; other logs' paths are named."""
    ledger.start_run("r1", "run", "host-a")
    ledger.finish_run("r1", counts={"archived": 3}, exit_code=0, audit_head="h1")
    ledger.start_run("r2", "verify", "host-a")
    log = tmp_path / "audit.jsonl"
    ledger.record_audit_head(audit_path=log, lines=7, head="h1", command="run", run_id="r1")
    ledger.record_audit_head(audit_path=log, lines=9, head="h2", command="verify", run_id="r2")
    ledger.record_audit_head(audit_path=tmp_path / "other.jsonl", lines=1, head="h9", command="run", run_id=None)
    runs = ledger.last_runs()
    assert [r.id for r in runs] == ["r2", "r1"] and runs[1].archived == 3 and runs[0].finished_at is None
    assert [(h.lines, h.head) for h in ledger.audit_heads(log)] == [(7, "h1"), (9, "h2")]
    assert ledger.audit_logs_elsewhere(log) == [str(tmp_path / "other.jsonl")]


def test_a_read_only_ledger_reads_what_was_recorded(location):
    """What one command recorded, a read-only open (no command) reads back."""
    writer = open_ledger(location, command="run")
    writer.record_listing([listed("a")])
    writer.close()
    reader = open_ledger(location)
    try:
        assert reader.read_only and reader.recording("a").id == "a"
    finally:
        reader.close()


# --------------------------------------------------------------------------- versions


def test_a_ledger_newer_than_the_code_is_refused_in_one_line(location):
    """A schema version above what this code knows: refused, saying to upgrade rtk-archive."""
    open_ledger(location, command="run").close()
    if isinstance(location, Path):
        db = sqlite3.connect(location)
        db.execute(f"PRAGMA user_version = {SQLITE_STEPS[-1].version + 1}")
        db.close()
    else:
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations (version, adds) VALUES (%s, 'future')",
                         (POSTGRES_STEPS[-1].version + 1,))
    for command in ("run", None):
        with pytest.raises(BookkeepingError, match="newer than this rtk-archive knows.*upgrade rtk-archive"):
            open_ledger(location, command=command)


def test_an_older_postgres_ledger_says_to_migrate_and_migrate_brings_it_up(postgres):
    """A PostgreSQL ledger at an older version is refused with the advice to migrate; `ledger
    migrate` applies the missing steps once (a second time changes nothing)."""
    url = postgres.new_database()
    with pytest.raises(BookkeepingError, match="version 0.*rtk-archive ledger migrate"):
        open_ledger(url, command="run")
    assert migrate(url) == (0, POSTGRES_STEPS[-1].version)
    assert migrate(url) == (POSTGRES_STEPS[-1].version,) * 2
    open_ledger(url, command="run").close()


def test_a_postgres_password_never_shows(postgres, tmp_path, sim):
    """A wrong password: one line naming the ledger with the password hidden; status with the
    right one prints the URL without it."""
    url = postgres.new_database()
    wrong = url.replace("secret-pw", "wrong-pw-123")
    data = config_dict(tmp_path, sim)
    data["ledger"] = {"url": wrong}
    (tmp_path / "c.toml").write_text(to_toml(data))
    result = run_cli("status", "--config", str(tmp_path / "c.toml"))
    assert result.returncode == 74
    assert "wrong-pw-123" not in result.stdout + result.stderr and "postgres:***@" in result.stderr
    data["ledger"] = {"url": url.replace("secret-pw", "${PGPW}")}
    (tmp_path / "c.toml").write_text(to_toml(data))
    migrated = run_cli("ledger", "migrate", "--config", str(tmp_path / "c.toml"), env={"PGPW": "secret-pw"})
    assert migrated.returncode == 0, migrated.stderr
    status = run_cli("status", "--json", "--config", str(tmp_path / "c.toml"), env={"PGPW": "secret-pw"})
    assert status.returncode == 0, status.stderr
    assert "secret-pw" not in status.stdout + status.stderr and json.loads(status.stdout)["archived"] == 0


def test_ledger_path_and_url_together_are_a_config_error(tmp_path, sim):
    """[ledger] takes exactly one of path and url."""
    data = config_dict(tmp_path, sim)
    data["ledger"]["url"] = "postgresql://u:pw@localhost/db"
    (tmp_path / "c.toml").write_text(to_toml(data))
    result = run_cli("status", "--config", str(tmp_path / "c.toml"))
    assert result.returncode == 2 and "not both" in result.stderr and "pw@" not in result.stderr


# --------------------------------------------------------------------------- the command line on both


def _config(tmp_path: Path, sim, location) -> Path:
    data = config_dict(tmp_path, sim)
    data["ledger"] = {"path": str(location)} if isinstance(location, Path) else {"url": location}
    path = tmp_path / "config.toml"
    path.write_text(to_toml(data))
    return path


def test_run_status_verify_and_audit_verify_on_either_ledger(sim, tmp_path, location):
    """The same commands, the same results on both backends: a run archives every recording,
    a second run does nothing, verify finds every copy intact, the audit chain verifies with
    the heads the ledger recorded."""
    for _ in range(3):
        sim.add_recording(size=40_000)
    config = _config(tmp_path, sim, location)
    if not isinstance(location, Path):
        dry = run_cli("run", "--dry-run", "--json", "--config", str(config))
        assert dry.returncode == 0 and json.loads(dry.stdout)["files_to_archive"] == 3, dry.stderr
    first = run_cli("run", "--json", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["files_archived"] == 3
    again = run_cli("run", "--json", "--config", str(config))
    assert again.returncode == 0 and json.loads(again.stdout)["files_archived"] == 0
    verify = run_cli("verify", "--json", "--config", str(config))
    assert verify.returncode == 0 and json.loads(verify.stdout)["copies_ok"] == 6  # 3 files + 3 manifests
    audit = run_cli("audit", "verify", "--json", "--config", str(config))
    assert audit.returncode == 0, audit.stdout
    assert json.loads(audit.stdout)["heads_checked"] >= 4


def test_an_sqlite_ledger_moves_into_postgres_losslessly(sim, tmp_path, postgres):
    """`ledger export --to URL` copies every row (audit heads included); pointed at the new
    ledger, status says the same, audit verify checks the same heads of the same log, and a
    further run archives nothing twice. A second export into the now non-empty database is
    refused; the password never shows."""
    for _ in range(4):
        sim.add_recording(size=20_000)
    sqlite_path = tmp_path / "ledger.db"
    config = _config(tmp_path, sim, sqlite_path)
    assert run_cli("run", "--config", str(config)).returncode == 0
    before = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    heads_before = json.loads(run_cli("audit", "verify", "--json", "--config", str(config)).stdout)["heads_checked"]
    url = postgres.new_database()
    moved = run_cli("ledger", "export", "--to", url.replace(":secret-pw", ""), "--json", "--config", str(config),
                    env={"PGPASSWORD": "secret-pw"})
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["rows"]["audit_heads"] == heads_before
    again = run_cli("ledger", "export", "--to", url, "--config", str(config))
    assert again.returncode == 74 and "already holds" in again.stderr and "secret-pw" not in again.stderr
    config = _config(tmp_path, sim, url)
    after = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert {k: after[k] for k in ("counts", "archived", "last_runs")} == \
        {k: before[k] for k in ("counts", "archived", "last_runs")}
    audit = json.loads(run_cli("audit", "verify", "--json", "--config", str(config)).stdout)
    assert audit["ok"] and audit["heads_checked"] == heads_before
    rerun = run_cli("run", "--json", "--config", str(config))
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["files_archived"] == 0


def test_ledger_migrate_on_an_sqlite_ledger_from_before_versions(sim, tmp_path):
    """An SQLite ledger from before schema versions were kept (user_version 0) is version 1 after
    `ledger migrate`, its rows untouched; a newer one is refused by every command in one line."""
    for _ in range(2):
        sim.add_recording(size=10_000)
    path = tmp_path / "ledger.db"
    config = _config(tmp_path, sim, path)
    assert run_cli("run", "--config", str(config)).returncode == 0
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 0")
    db.close()
    migrated = run_cli("ledger", "migrate", "--json", "--config", str(config))
    assert migrated.returncode == 0, migrated.stderr
    assert (json.loads(migrated.stdout)["version_before"], json.loads(migrated.stdout)["version"]) == (0, 1)
    assert json.loads(run_cli("status", "--json", "--config", str(config)).stdout)["files_archived"] == 2
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    for command in (["run"], ["status"]):
        refused = run_cli(*command, "--config", str(config))
        errors = [line for line in refused.stderr.splitlines() if line.startswith("rtk-archive: error:")]
        assert refused.returncode == 74 and len(errors) == 1 and "newer than this rtk-archive" in errors[0]


def test_sslmode_in_the_url_works_as_in_libpq(postgres):
    """The URL's parameters go to libpq as they are: sslmode=require against a server without
    TLS is refused in one line (password hidden); sslmode=disable connects."""
    url = postgres.new_database()
    migrate(url)
    with pytest.raises(BookkeepingError, match="SSL") as refused:
        open_ledger(url + "?sslmode=require", command="run")
    assert "secret-pw" not in str(refused.value) and "\n" not in str(refused.value)
    open_ledger(url + "?sslmode=disable", command="run").close()


def test_evidence_scrub_metrics_and_webhook_work_on_either_ledger(ledger, tmp_path):
    """What later features record behaves alike on both backends: manifest signatures (one per
    recording and target, replaced when signed again), audit-head timestamps with their token
    bytes, the scrub's order (never verified first, then oldest), copies with no good sibling,
    the metrics' tallies, and webhook work recorded once and finished."""
    ledger.record_listing([listed("a"), listed("b")])
    for rid in ("a", "b"):
        ledger.record_download(rid, "video", size=1000, sha256="ab" * 32, md5=None, crc32c="c", source_host="h")
        ledger.record_copy(rid, "video", "nas", stored(f"k/{rid}"), verified_by="sha256")
        ledger.record_copy(rid, "video", "s3", stored(f"k/{rid}"), verified_by="sha256")
    # A stored copy counts as verified when stored; the checks below must come later, and
    # timestamps have millisecond resolution (on a fast machine all of this fits in one).
    time.sleep(0.002)
    ledger.record_verification("a", "video", "nas", state="archived", result="ok")
    ledger.record_verification("b", "video", "nas", state="missing", result="not found")
    ledger.record_verification("b", "video", "s3", state="mismatch", result="size is 1, expected 1000")

    ledger.record_signature("a", "nas", manifest_key="k/m.json", signature_key="k/m.json.sig", key_id="old")
    ledger.record_signature("a", "nas", manifest_key="k/m.json", signature_key="k/m.json.sig", key_id="new")
    assert [row.key_id for row in ledger.signatures().values()] == ["new"]

    log = tmp_path / "audit.jsonl"
    ledger.record_timestamp(audit_path=log, lines=3, head="h3", tsa_url="http://tsa", token=b"\x30\x82\x00",
                            gen_time="2026-11-30T00:00:00.000Z", error=None)
    ledger.record_timestamp(audit_path=log, lines=5, head="h5", tsa_url="http://tsa", token=None, gen_time=None,
                            error="TSA down")
    stamps = ledger.timestamps(log)
    assert [(s.lines, s.token, s.error) for s in stamps] == [(3, b"\x30\x82\x00", None), (5, None, "TSA down")]

    order = [(c.recording_id, c.target) for c in ledger.copies_verified_before()]
    assert order[:1] == [("a", "s3")] and set(order) == {("a", "s3"), ("a", "nas"), ("b", "nas"), ("b", "s3")}
    assert [(p.recording_id, p.target) for p in ledger.copies_without_good_sibling()] == [("b", "nas"), ("b", "s3")]
    tallies = {(t.target, t.state): (t.copies, t.bytes) for t in ledger.copy_tallies()}
    assert tallies[("nas", "archived")] == (1, 1000) and tallies[("s3", "mismatch")][0] == 1

    assert ledger.record_hint("a", "UPLOADED", "recording", received_at="2026-11-30T00:00:00.000Z", delivery_id="u1")
    assert not ledger.record_hint("a", "UPLOADED", "recording", received_at="2026-11-30T00:00:01.000Z",
                                  delivery_id="u2")
    due = ledger.pending_hints(10, now="2026-11-30T00:00:02.000Z")
    assert [(h.subject_id, h.delivery_id) for h in due] == [("a", "u1")]
    ledger.finish_hint("a", "UPLOADED", "recording", state="done")
    assert ledger.pending_hints(10, now="2026-12-01T00:00:00.000Z") == []
