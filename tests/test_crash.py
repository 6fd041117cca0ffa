"""Real processes killed and stopped mid-run: the next run must finish the job with every
file archived exactly once, the ledger consistent, nothing partial visible, no spool left."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline import errors
from tests.helpers import cli_command, cli_env, expected_files, ledger_rows, run_cli, write_config

pytestmark = pytest.mark.slow


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), stdin=subprocess.DEVNULL)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def some_bytes_downloaded(sim) -> bool:
    return any(r.kind == "file" and r.bytes_sent > 0 for r in sim.requests)


def check_archive_complete(tmp_path: Path, sim, targets: list[str]) -> None:
    expected = expected_files(sim)
    for name in targets:
        root = tmp_path / name
        found: dict[tuple[str, str], list[str]] = {}
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            assert ".rtk-partial-" not in path.name, f"temporary left visible: {path}"
            kind = path.name.split("-", 1)[0]
            if kind == "manifest":
                continue
            rid = path.parent.name
            found.setdefault((rid, kind), []).append(hashlib.sha256(path.read_bytes()).hexdigest())
        # Every file exactly once, complete and unaltered.
        assert {k: v for k, v in found.items()} == {k: [v] for k, v in expected.items()}, name
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT recording_id, kind, state, sha256 FROM files")
    assert {(r["recording_id"], r["kind"]): r["sha256"] for r in rows if r["state"] == "archived"} == expected
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies")
    assert {c["state"] for c in copies} == {"archived"}
    spool = tmp_path / "spool"
    assert not spool.exists() or not any(spool.iterdir()), "spool files left behind"


def test_sigkill_at_random_points_then_rerun_archives_everything_exactly_once(sim, tmp_path):
    for i in range(8):
        sim.add_recording(size=1_500_000 + i * 10_000, audio=(i % 3 == 0))
    targets = [{"name": "a", "type": "local", "path": str(tmp_path / "a")},
               {"name": "b", "type": "local", "path": str(tmp_path / "b")}]
    config = write_config(tmp_path, sim, targets=targets, archive={"concurrency": 3})
    sim.faults.set(throttle_bps=1_500_000)
    rng = random.Random(20261121)
    kills = 0
    for _ in range(5):
        proc = start_cli("run", "--config", str(config))
        time.sleep(rng.uniform(0.4, 3.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
    assert kills >= 3  # the runs really were killed mid-way
    sim.faults.set(throttle_bps=0)
    final = run_cli("run", "--config", str(config), "--json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["failed"] == 0
    check_archive_complete(tmp_path, sim, ["a", "b"])
    again = run_cli("run", "--config", str(config), "--json")
    assert json.loads(again.stdout)["archived"] == 0 and again.returncode == 0


def test_sigterm_stops_cleanly_and_the_next_run_finishes(sim, tmp_path):
    for _ in range(4):
        sim.add_recording(size=2_000_000)
    config = write_config(tmp_path, sim, archive={"concurrency": 2})
    sim.faults.set(throttle_bps=500_000)
    proc = start_cli("run", "--config", str(config))
    wait_for(lambda: some_bytes_downloaded(sim))
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == errors.EXIT_INTERRUPTED, err
    assert "SIGTERM received" in err and "interrupted" in out
    runs = ledger_rows(tmp_path / "ledger.db", "SELECT exit_code, finished_at FROM runs")
    assert runs == [{"exit_code": errors.EXIT_INTERRUPTED, "finished_at": runs[0]["finished_at"]}]
    assert runs[0]["finished_at"]
    # The partial download stays in the spool so the next run resumes it with Range.
    assert any((tmp_path / "spool").glob("*.part"))
    sim.faults.set(throttle_bps=0)
    before = len(sim.requests)
    final = run_cli("run", "--config", str(config))
    assert final.returncode == 0, final.stderr
    assert any(r.range not in (None, "bytes=0-") for r in sim.requests[before:] if r.kind == "file"), \
        "resumed with Range"
    check_archive_complete(tmp_path, sim, ["nas"])


def test_overlapping_run_is_refused_and_a_killed_runs_lock_does_not_block(sim, tmp_path):
    sim.add_recording(size=3_000_000)
    config = write_config(tmp_path, sim)
    sim.faults.set(throttle_bps=300_000)
    first = start_cli("run", "--config", str(config))
    wait_for(lambda: some_bytes_downloaded(sim))
    second = run_cli("run", "--config", str(config))
    assert second.returncode == errors.EXIT_LOCKED
    assert "another rtk-archive run" in second.stderr and f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    sim.faults.set(throttle_bps=0)
    third = run_cli("run", "--config", str(config))
    assert third.returncode == 0, third.stderr
    check_archive_complete(tmp_path, sim, ["nas"])
