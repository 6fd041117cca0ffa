"""Local targets in the environments users really have, made for real (as root): a target on
another file system than the spool (a NAS mount, a second disk), the spool on another file
system than the target, a read-only target, a full one. Each runs `rtk-archive run` (and
`check`) as a process against the simulator and checks the bytes and the ledger."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from storage.target import PARTIAL_MARKER
from tests.helpers import expected_files, file_requests, ledger_rows, run_cli, write_config
from tests.mounts import ext4, fill, needs_root, read_only, tmpfs

pytestmark = needs_root


def other_file_system(kind: str, path: Path, work: Path):
    return tmpfs(path) if kind == "tmpfs" else ext4(path, work / "disk.img")


def archived_files(root: Path) -> dict[str, str]:
    """name -> SHA-256 of every media file under `root`."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and p.name.startswith(("video-", "audio-"))}


def assert_archived_everywhere_verified(tmp_path: Path, sim, root: Path, target: str) -> None:
    """Every file the simulator serves is at `root` with its SHA-256, a file of its own (not a
    link to the spool), no temporary left, and the ledger says archived and verified."""
    expected = expected_files(sim)
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies WHERE target = ? AND kind != 'manifest'",
                         (target,))
    assert len(copies) == len(expected)
    for copy in copies:
        assert copy["state"] == "archived" and "crc32c(backend)" in copy["verified_by"]
        path = root / copy["key"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected[(copy["recording_id"], copy["kind"])]
        assert copy["sha256"] == expected[(copy["recording_id"], copy["kind"])]
        assert path.stat().st_nlink == 1
    assert not [p for p in root.rglob("*") if PARTIAL_MARKER in p.name]


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_local_target_on_another_file_system_than_the_spool_gets_every_file(sim, tmp_path, kind):
    """The most common set-up, a NAS mount or a second disk: neither a hard link nor
    copy_file_range works across file systems (EXDEV), and the plain read/write copy must
    take over, still atomic (temporary name, fsync, link) and verified. A 9 MB file takes more
    than one copy buffer."""
    for i in range(3):
        sim.add_recording(size=200_000 + i, audio=(i == 0))
    sim.add_recording(size=9_000_000)
    with other_file_system(kind, tmp_path / "nas", tmp_path) as nas:
        archive = nas / "archive"
        config = write_config(tmp_path, sim, targets=[{"name": "nas", "type": "local", "path": str(archive)}])
        assert os.stat(tmp_path).st_dev != os.stat(nas).st_dev  # the situation this test is about
        check = run_cli("check", "--config", str(config))
        assert check.returncode == 0, check.stdout + check.stderr
        assert "spool and target 'nas': different file systems" in check.stdout
        result = run_cli("run", "--config", str(config), "--json")
        assert result.returncode == 0, result.stderr
        payload = json.loads(result.stdout)
        assert payload["archived"] == len(expected_files(sim)) == 5 and payload["failed"] == 0
        assert_archived_everywhere_verified(tmp_path, sim, archive, "nas")


def test_spool_on_another_file_system_than_the_target(sim, tmp_path):
    """The reverse: the spool on its own file system (a fast scratch disk), the archive on the
    main one."""
    for i in range(3):
        sim.add_recording(size=150_000 + i)
    with tmpfs(tmp_path / "scratch") as scratch:
        archive = tmp_path / "archive"
        config = write_config(tmp_path, sim, targets=[{"name": "nas", "type": "local", "path": str(archive)}],
                              archive={"spool_dir": str(scratch / "spool")})
        assert os.stat(tmp_path).st_dev != os.stat(scratch).st_dev
        result = run_cli("run", "--config", str(config), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["archived"] == 3
        assert_archived_everywhere_verified(tmp_path, sim, archive, "nas")


def test_read_only_target_is_left_out_once_and_done_by_the_next_run(sim, tmp_path):
    """A target folder on a read-only mount is found before anything is downloaded for it: one
    problem line for the target (not one per file), the other target gets every file, the run
    exits 1, its copies stay un-archived, and the next run, with the mount writable, does them."""
    for _ in range(2):
        sim.add_recording(size=120_000)
    targets = [{"name": "good", "type": "local", "path": str(tmp_path / "good")},
               {"name": "ro", "type": "local", "path": str(tmp_path / "ro" / "archive")}]
    config = write_config(tmp_path, sim, targets=targets)
    with read_only(tmp_path / "underlying", tmp_path / "ro"):
        check = run_cli("check", "--config", str(config), "--json")
        assert check.returncode == 1
        failed = [c for c in json.loads(check.stdout)["checks"] if c["status"] == "fail"]
        assert [c["name"] for c in failed] == ["target 'ro' write"]
        assert "read-only file system" in failed[0]["detail"]

        result = run_cli("run", "--config", str(config), "--json")
        assert result.returncode == 1, result.stderr
        payload = json.loads(result.stdout)
        assert len(payload["problems"]) == 1
        assert payload["problems"][0].startswith("target 'ro' skipped for this run: write check failed:")
        assert "read-only file system" in payload["problems"][0]
        assert result.stderr.count("target 'ro'") == 1
        assert payload["archived"] == 0 and payload["failed"] == 2  # not archived everywhere
    assert len(archived_files(tmp_path / "good")) == 2
    assert list((tmp_path / "underlying").iterdir()) == []
    assert ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies WHERE target = 'ro'") == []
    files = ledger_rows(tmp_path / "ledger.db", "SELECT state, last_error FROM files")
    assert all(f["state"] == "failed" and "target 'ro' skipped for this run" in f["last_error"] for f in files)
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["target"] for e in audit if e["action"] == "target_skipped"] == ["ro"]

    again = run_cli("run", "--config", str(config), "--json")  # the mount is gone: writable now
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["archived"] == 2
    assert archived_files(tmp_path / "ro" / "archive") == archived_files(tmp_path / "good")


def test_a_target_that_fails_its_probe_costs_no_download(sim, tmp_path):
    """When the only target is read-only, nothing is downloaded at all: a broken target costs
    seconds, not a night of downloads."""
    sim.add_recording(size=300_000)
    with read_only(tmp_path / "underlying", tmp_path / "ro"):
        config = write_config(tmp_path, sim, targets=[{"name": "ro", "type": "local", "path": str(tmp_path / "ro")}])
        result = run_cli("run", "--config", str(config), "--json")
    assert result.returncode == 1
    assert file_requests(sim) == []
    assert json.loads(result.stdout)["bytes_downloaded"] == 0


def test_full_target_file_system_is_left_out_before_any_download(sim, tmp_path):
    """A target whose file system is full fails its write check (after the retries a full disk
    deserves) and is left out; nothing is downloaded for it. `check` says the same."""
    sim.add_recording(size=200_000)
    with tmpfs(tmp_path / "full", size="2m") as full:
        fill(full)
        config = write_config(tmp_path, sim, targets=[{"name": "full", "type": "local", "path": str(full / "archive")}])
        check = run_cli("check", "--config", str(config))
        assert check.returncode == 1
        assert [line for line in check.stdout.splitlines() if line.startswith("FAIL")] == [
            line for line in check.stdout.splitlines() if line.startswith("FAIL  target 'full' write:")]
        assert "no space left" in check.stdout
        result = run_cli("run", "--config", str(config), "--json")
        assert result.returncode == 1
        problems = json.loads(result.stdout)["problems"]
        assert len(problems) == 1 and "no space left" in problems[0]
        assert file_requests(sim) == []
        assert sorted(p.name for p in full.iterdir()) == ["filler"]  # the probe cleaned up after itself


def test_spool_that_cannot_be_created_fails_the_check(sim, tmp_path):
    """A spool folder on a read-only mount: `check` names it before a run would fail."""
    with read_only(tmp_path / "underlying", tmp_path / "ro"):
        config = write_config(tmp_path, sim, archive={"spool_dir": str(tmp_path / "ro" / "spool")})
        check = run_cli("check", "--config", str(config), "--json")
    assert check.returncode == 1
    failed = [c for c in json.loads(check.stdout)["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["spool"]
    assert "Read-only file system" in failed[0]["detail"] and str(tmp_path / "ro" / "spool") in failed[0]["detail"]
    assert list((tmp_path / "underlying").iterdir()) == []
