"""The ledger, its lock and the audit log in broken environments, made for real: a file that is
not SQLite, a directory, a path under a regular file, read-only bind mounts, a full tmpfs.

Each failure is one line on stderr naming the path and what is wrong, exit 74, never a
traceback; nothing the tool did not create is touched; read-only commands work on a ledger
they may only read and create nothing; a run that cannot write its audit trail archives
nothing without one."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from pipeline import errors
from pipeline.ledger import open_ledger
from tests.helpers import config_dict, file_requests, ledger_rows, run_cli, to_toml
from tests.mounts import fill, needs_root, read_only, tmpfs

READ_COMMANDS = [["status"], ["list"], ["report"], ["verify"], ["verify", "--deep"], ["audit", "verify"],
                 ["run", "--dry-run"]]


def write(tmp_path: Path, sim, *, ledger: Path | None = None, audit: Path | None = None, **kwargs) -> Path:
    data = config_dict(tmp_path, sim, **kwargs)
    if ledger is not None:
        data["ledger"]["path"] = str(ledger)
    if audit is not None:
        data["audit"]["path"] = str(audit)
    path = tmp_path / "config.toml"
    path.write_text(to_toml(data))
    return path


def cli(*args: str, config: Path):
    return run_cli(*args, "--config", str(config))


def one_error_line(result, *expected: str) -> str:
    """The command failed with exactly one `rtk-archive: error:` line containing `expected`."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("rtk-archive: error:")]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path, *, skip: tuple[str, ...] = ("config.toml",)) -> dict[str, tuple]:
    """Every file and folder under `folder`: kind, mode, size, mtime and content hash."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if rel in skip:
            continue
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size if digest else None,
                    st.st_mtime_ns if digest else None, digest)
    return out


def archive(sim, config: Path, n: int = 2) -> None:
    for _ in range(n):
        sim.add_recording(size=30_000)
    result = cli("run", config=config)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- the ledger path


@pytest.mark.parametrize("command", [["run"], *READ_COMMANDS], ids=" ".join)
def test_a_ledger_that_is_not_sqlite_is_one_line_and_left_untouched(sim, tmp_path, command):
    """A ledger path pointing at another kind of file: every command says so in one line,
    exit 74, and the file keeps its bytes, mode and mtime."""
    ledger = tmp_path / "ledger.db"
    ledger.write_bytes(b"these are somebody's notes, not a database\n" * 200)
    ledger.chmod(0o644)
    theirs = ("config.toml", "ledger.db.lock")  # the lock file beside it is the tool's own
    before = snapshot(tmp_path, skip=theirs)
    result = cli(*command, config=write(tmp_path, sim))
    assert result.returncode == errors.EXIT_BOOKKEEPING
    one_error_line(result, f"ledger {ledger}", "not an SQLite database")
    assert snapshot(tmp_path, skip=theirs) == before


def test_another_applications_database_is_refused_and_left_untouched(sim, tmp_path):
    """A valid SQLite database that is not a ledger: rtk-archive does not add its tables to it."""
    ledger = tmp_path / "ledger.db"
    with sqlite3.connect(ledger) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    theirs = ("config.toml", "ledger.db.lock")
    before = snapshot(tmp_path, skip=theirs)
    config = write(tmp_path, sim)
    run = cli("run", config=config)
    assert run.returncode == errors.EXIT_BOOKKEEPING
    one_error_line(run, f"ledger {ledger}", "an SQLite database of something else", "users")
    status = cli("status", config=config)
    assert status.returncode == errors.EXIT_BOOKKEEPING
    one_error_line(status, f"ledger {ledger}", "not an rtk-archive ledger")
    assert snapshot(tmp_path, skip=theirs) == before


@pytest.mark.parametrize("command", [["run"], *READ_COMMANDS], ids=" ".join)
def test_a_ledger_path_that_is_a_directory_is_one_line(sim, tmp_path, command):
    """[ledger] path naming a folder: one line, exit 74, nothing created inside it."""
    ledger = tmp_path / "ledger.db"
    ledger.mkdir()
    result = cli(*command, config=write(tmp_path, sim))
    assert result.returncode == errors.EXIT_BOOKKEEPING
    one_error_line(result, f"ledger {ledger}", "is a directory")
    assert list(ledger.iterdir()) == []


def test_a_ledger_path_under_a_regular_file_is_one_line(sim, tmp_path):
    """A path whose folder is a file: `run` names the file in the way; a read-only command
    says there is no ledger yet and creates nothing."""
    blocker = tmp_path / "state"
    blocker.write_text("a file where a folder should be\n")
    config = write(tmp_path, sim, ledger=blocker / "ledger.db")
    sim.add_recording(size=10_000)
    run = cli("run", config=config)
    assert run.returncode == errors.EXIT_BOOKKEEPING
    one_error_line(run, f"{blocker} is a file, not a folder")
    assert file_requests(sim) == [] and not (tmp_path / "nas").exists()
    status = cli("status", config=config)
    assert "Traceback" not in status.stderr and f"no ledger at {blocker / 'ledger.db'}" in status.stderr
    assert blocker.read_text() == "a file where a folder should be\n"


# --------------------------------------------------------------------------- read-only ledgers


@needs_root
def test_a_read_only_ledger_folder_refuses_run_and_serves_every_read_only_command(sim, tmp_path):
    """A ledger on a read-only mount: `run` is refused in one line naming the read-only file
    system; status, list, report, audit verify and a dry run work; verify checks and reports,
    says in one warning line that it cannot record, and exits by what it found."""
    state = tmp_path / "state"
    config = write(tmp_path, sim, ledger=state / "ledger.db")
    archive(sim, config)
    victim = next((tmp_path / "nas").rglob("video-*"))
    with read_only(state):
        before = snapshot(state)
        sim.add_recording(size=10_000)
        run = cli("run", config=config)
        assert run.returncode == errors.EXIT_BOOKKEEPING
        one_error_line(run, str(state), "read-only file system")
        for command in (["status"], ["list"], ["report"], ["audit", "verify"], ["run", "--dry-run"]):
            result = cli(*command, config=config)
            assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)
        ok = run_cli("verify", "--config", str(config), "--deep", "--json")
        assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] == 4 and not json.loads(ok.stdout)["recorded"]
        assert ok.stderr.count("cannot record its results") == 1
        victim.unlink()
        bad = run_cli("verify", "--config", str(config), "--json")
        assert bad.returncode == 1 and [p["state"] for p in json.loads(bad.stdout)["problems"]] == ["missing"]
        assert snapshot(state) == before


@needs_root
def test_a_wal_ledger_on_a_read_only_mount_is_read_as_immutable(sim, tmp_path):
    """A ledger left in WAL mode (by a killed run, or an older version) whose -shm file cannot be
    created on a read-only mount: read-only commands still read it."""
    state = tmp_path / "state"
    config = write(tmp_path, sim, ledger=state / "ledger.db")
    archive(sim, config)
    with sqlite3.connect(state / "ledger.db") as db:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    db.close()
    assert sorted(p.name for p in state.iterdir()) == ["ledger.db", "ledger.db.lock"]
    with read_only(state):
        status = run_cli("status", "--config", str(config), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["counts"]["files"] == {"archived": 2}
        report = run_cli("report", "--config", str(config), "--format", "json")
        rows = json.loads(report.stdout)["rows"]
        assert report.returncode == 0 and sorted(r["kind"] for r in rows) == ["manifest"] * 2 + ["video"] * 2


def test_read_only_commands_create_and_change_nothing(sim, tmp_path):
    """status, list, report, audit verify and a dry run take no lock and create nothing: no lock
    file, no -wal/-shm beside the ledger; the ledger keeps its bytes, mode and mtime."""
    config = write(tmp_path, sim)
    archive(sim, config)
    (tmp_path / "ledger.db.lock").unlink()
    (tmp_path / "ledger.db").chmod(0o640)  # as its owner left it: not ours to change back
    sim.add_recording(size=10_000)
    before = snapshot(tmp_path)
    for command in (["status"], ["list"], ["report"], ["report", "--format", "csv"], ["audit", "verify"],
                    ["run", "--dry-run"]):
        result = cli(*command, config=config)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_a_missing_ledger_is_one_line_and_is_not_created(sim, tmp_path, command):
    """A read-only command before any run: one clear line, and no ledger, lock or audit log
    appears."""
    config = write(tmp_path, sim)
    result = cli(*command, config=config)
    assert "Traceback" not in result.stderr
    if command == ["audit", "verify"]:
        assert result.returncode == 0 and f"no audit log at {tmp_path / 'audit.jsonl'}" in result.stdout
    else:
        assert f"no ledger at {tmp_path / 'ledger.db'}: nothing archived yet" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


# --------------------------------------------------------------------------- the lock file


def test_a_lock_path_that_is_a_directory_is_one_line(sim, tmp_path):
    """`<ledger>.lock` is a folder: `run` and `verify` say so in one line (exit 74); read-only
    commands do not need the lock."""
    config = write(tmp_path, sim)
    archive(sim, config, n=1)
    lock = tmp_path / "ledger.db.lock"
    lock.unlink()
    lock.mkdir()
    run = cli("run", config=config)
    assert run.returncode == errors.EXIT_BOOKKEEPING
    one_error_line(run, f"lock file {lock}", "is a directory")
    assert cli("status", config=config).returncode == 0


@needs_root
def test_a_lock_file_on_a_read_only_mount_is_one_line(sim, tmp_path):
    """The lock file alone bind-mounted read-only (the ledger beside it writable): `run` is
    refused in one line naming the lock file; the ledger is not touched; status works."""
    config = write(tmp_path, sim)
    archive(sim, config, n=1)
    lock = tmp_path / "ledger.db.lock"
    ledger_before = snapshot(tmp_path, skip=("config.toml", "ledger.db.lock"))
    with read_only(lock):
        sim.add_recording(size=10_000)
        run = cli("run", config=config)
        assert run.returncode == errors.EXIT_BOOKKEEPING
        one_error_line(run, f"lock file {lock}", "read-only file system")
        assert cli("status", config=config).returncode == 0
    assert snapshot(tmp_path, skip=("config.toml", "ledger.db.lock")) == ledger_before


# --------------------------------------------------------------------------- file modes


def test_an_existing_ledger_keeps_its_mode_and_its_sidecars_follow_it(sim, tmp_path):
    """The tool never chmods a file it did not create: a ledger a person made 0640 (say, for a
    monitoring group) stays 0640 through runs, and SQLite gives -wal/-shm the same mode."""
    path = tmp_path / "ledger.db"
    open_ledger(path, command="test").close()
    path.chmod(0o640)
    ledger = open_ledger(path, command="test")
    try:
        ledger.start_run("r1", "test", "host")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("ledger.db*") if p.suffix != ".lock"}
    finally:
        ledger.close()
    assert modes == {"ledger.db": 0o640, "ledger.db-wal": 0o640, "ledger.db-shm": 0o640}
    config = write(tmp_path, sim)
    archive(sim, config, n=1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_new_ledger_and_audit_log_are_owner_only(sim, tmp_path):
    """What the tool creates it creates owner-only, whatever the umask: ledger, sidecars, lock
    and audit log."""
    old = os.umask(0o022)
    try:
        ledger = open_ledger(tmp_path / "fresh.db", command="test")
        try:
            ledger.start_run("r1", "test", "host")
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("fresh.db*") if p.suffix != ".lock"}
        finally:
            ledger.close()
    finally:
        os.umask(old)
    assert modes == {"fresh.db": 0o600, "fresh.db-wal": 0o600, "fresh.db-shm": 0o600}
    config = write(tmp_path, sim)
    archive(sim, config, n=1)
    for name in ("ledger.db", "ledger.db.lock", "audit.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


# --------------------------------------------------------------------------- dry run


def test_a_dry_run_in_an_empty_folder_creates_nothing(sim, tmp_path):
    """`run --dry-run` creates and changes nothing: no ledger, no lock, no spool, no audit log."""
    sim.add_recording(size=10_000)
    config = write(tmp_path, sim)
    result = cli("run", "--dry-run", config=config)
    assert result.returncode == 0 and "1 file(s) would be archived" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_a_dry_run_leaves_an_existing_ledger_unchanged(sim, tmp_path):
    """On an existing ledger a dry run leaves every byte, mode and mtime as it was."""
    config = write(tmp_path, sim)
    archive(sim, config, n=1)
    (tmp_path / "ledger.db").chmod(0o640)
    sim.add_recording(size=10_000)
    before = snapshot(tmp_path)
    result = cli("run", "--dry-run", config=config)
    assert result.returncode == 0 and "1 file(s) would be archived" in result.stdout
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- the audit log


def last_run(tmp_path: Path) -> dict:
    return ledger_rows(tmp_path / "ledger.db", "SELECT * FROM runs ORDER BY started_at DESC LIMIT 1")[0]


def test_an_audit_log_path_that_is_a_directory_refuses_the_run(sim, tmp_path):
    """No archiving without a trail: the run is refused before anything is downloaded, in one
    line naming the audit log, and the ledger records the refused run with the reason."""
    audit = tmp_path / "audit.jsonl"
    audit.mkdir()
    sim.add_recording(size=10_000)
    config = write(tmp_path, sim)
    result = cli("run", config=config)
    assert result.returncode == errors.EXIT_BOOKKEEPING
    one_error_line(result, f"audit log {audit}", "is a directory")
    assert file_requests(sim) == [] and not (tmp_path / "nas").exists()
    run = last_run(tmp_path)
    assert run["exit_code"] == errors.EXIT_BOOKKEEPING and "is a directory" in run["note"]


def test_verify_with_an_audit_log_it_cannot_write_checks_and_records_nothing(sim, tmp_path):
    """`verify` records its results only together with their audit lines: when the audit log
    cannot be opened it checks and reports, says so in one warning line, changes nothing in the
    ledger, and exits by what it found."""
    config = write(tmp_path, sim)
    archive(sim, config, n=1)
    audit = tmp_path / "audit.jsonl"
    audit.unlink()
    audit.mkdir()
    before = dump(tmp_path / "ledger.db")
    next((tmp_path / "nas").rglob("video-*")).unlink()
    result = run_cli("verify", "--config", str(config), "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [p["state"] for p in json.loads(result.stdout)["problems"]] == ["missing"]
    warnings = [line for line in result.stderr.splitlines() if "cannot record its results" in line]
    assert len(warnings) == 1 and f"audit log {audit}" in warnings[0]
    assert dump(tmp_path / "ledger.db") == before and list(audit.iterdir()) == []


def dump(ledger: Path) -> list[str]:
    """Everything the ledger records, as SQL."""
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()


@needs_root
def test_an_audit_log_on_a_read_only_mount_refuses_the_run(sim, tmp_path):
    """The audit log's folder mounted read-only: one line, exit 74, nothing downloaded."""
    logs = tmp_path / "logs"
    config = write(tmp_path, sim, audit=logs / "audit.jsonl")
    archive(sim, config, n=1)
    requests = len(file_requests(sim))
    with read_only(logs):
        sim.add_recording(size=10_000)
        result = cli("run", config=config)
    assert result.returncode == errors.EXIT_BOOKKEEPING
    one_error_line(result, f"audit log {logs / 'audit.jsonl'}", "read-only file system")
    assert len(file_requests(sim)) == requests
    assert last_run(tmp_path)["exit_code"] == errors.EXIT_BOOKKEEPING


@needs_root
def test_an_audit_log_on_a_full_disk_refuses_the_run(sim, tmp_path):
    """The audit log's disk is full when the run starts: its first line cannot be written, so
    nothing is downloaded, no half line is left, and the refused run is in the ledger."""
    logs = tmp_path / "logs"
    with tmpfs(logs, "1m"):
        config = write(tmp_path, sim, audit=logs / "audit.jsonl")
        fill(logs)
        sim.add_recording(size=10_000)
        result = cli("run", config=config)
        assert result.returncode == errors.EXIT_BOOKKEEPING
        one_error_line(result, f"audit log {logs / 'audit.jsonl'}", "no space left")
        assert file_requests(sim) == [] and not (tmp_path / "nas").exists()
        assert (logs / "audit.jsonl").read_bytes() == b""
        run = last_run(tmp_path)
        assert run["exit_code"] == errors.EXIT_BOOKKEEPING and "no space left" in run["note"]
        assert cli("audit", "verify", config=config).returncode == 0


@needs_root
def test_an_audit_disk_that_fills_mid_run_stops_new_work(sim, tmp_path):
    """The audit log's disk fills while the run archives: no new recording is started, the run
    is recorded as failed with the reason (exit 74), the log ends on a whole line that the
    ledger recorded, and nothing is marked archived in the ledger without its audit line."""
    logs = tmp_path / "logs"
    with tmpfs(logs, "64k"):
        for _ in range(12):
            sim.add_recording(size=20_000)
        config = write(tmp_path, sim, audit=logs / "audit.jsonl", archive={"concurrency": 1})
        fill(logs, leave=12 * 1024)
        result = cli("run", config=config)
        assert result.returncode == errors.EXIT_BOOKKEEPING, result.stderr
        one_error_line(result, f"audit log {logs / 'audit.jsonl'}", "no space left")
        assert 0 < len(file_requests(sim)) < 12  # some work was done, the rest was not started
        run = last_run(tmp_path)
        assert run["exit_code"] == errors.EXIT_BOOKKEEPING and "no space left" in run["note"]
        lines = (logs / "audit.jsonl").read_bytes()
        assert lines.endswith(b"\n")
        events = [json.loads(line) for line in lines.splitlines()]
        verified = {(e["recording_id"], e["kind"], e["target"]) for e in events if e["action"] == "verified"}
        archived = ledger_rows(tmp_path / "ledger.db", "SELECT recording_id, kind, target FROM copies "
                               "WHERE state='archived' AND kind != 'manifest'")
        assert archived and {(c["recording_id"], c["kind"], c["target"]) for c in archived} <= verified
        (logs / "filler").unlink()
        assert cli("audit", "verify", config=config).returncode == 0
        again = cli("run", config=config)  # with room again, the next run finishes the work
        assert again.returncode == 0, again.stderr
        assert len(ledger_rows(tmp_path / "ledger.db", "SELECT 1 FROM files WHERE state='archived'")) == 12


@needs_root
def test_a_ledger_on_a_full_disk_is_one_line(sim, tmp_path):
    """The ledger's disk is full: the run stops in one line naming the ledger, nothing is
    downloaded, and the ledger is still readable afterwards."""
    state = tmp_path / "state"
    with tmpfs(state, "1m"):
        config = write(tmp_path, sim, ledger=state / "ledger.db")
        archive(sim, config, n=1)
        requests = len(file_requests(sim))
        fill(state)
        sim.add_recording(size=10_000)
        result = cli("run", config=config)
        assert result.returncode == errors.EXIT_BOOKKEEPING
        one_error_line(result, str(state), "no space left")
        assert len(file_requests(sim)) == requests
        (state / "filler").unlink()
        status = run_cli("status", "--config", str(config), "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["counts"]["files"] == {"archived": 1}
