"""Real processes killed and stopped mid-run: the next run must finish the job with every
file archived exactly once, the ledger consistent, nothing partial visible, no spool left.

Rules proven (README, What rtk-archive guarantees): "A killed run loses nothing", "Stopping is
clean", "No overlapping runs". Kill and stop points are chosen from observed progress (bytes
the simulator has served), never from wall time, so they land mid-run on any machine."""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import socket
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


def bytes_served(sim, since: int = 0) -> int:
    """File bytes the simulator has sent since request number `since`."""
    return sum(r.bytes_sent for r in sim.requests[since:] if r.kind == "file")


def files_requested(sim, since: int = 0) -> set[str]:
    return {r.path for r in sim.requests[since:] if r.kind == "file"}


def bytes_still_needed(tmp_path: Path, sim, targets: list[str]) -> int:
    """Bytes the next run must download at least: every file some target does not hold yet,
    whole (spool bytes are trusted only once fsynced, every 256 MiB: none here)."""
    held = {name: {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / name).rglob("*")
                   if p.is_file() and ".rtk-partial-" not in p.name}
            for name in targets if (tmp_path / name).exists()}
    return sum(sim.file_size(rid, kind) for (rid, kind), digest in expected_files(sim).items()
               if any(digest not in held.get(name, set()) for name in targets))


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
    """Rule: "A killed run loses nothing ... Tested by SIGKILLing real runs at random points,
    repeatedly." Five runs are each SIGKILLed once the simulator has served a random share
    (20-70 %) of the bytes that run must still download, so every kill lands mid-run whatever
    the machine's speed; then one run finishes the job: every file exactly once at both
    targets, complete, no temporary visible, the ledger consistent, no spool left."""
    for i in range(8):
        sim.add_recording(size=1_500_000 + i * 10_000, audio=(i % 3 == 0))
    targets = [{"name": "a", "type": "local", "path": str(tmp_path / "a")},
               {"name": "b", "type": "local", "path": str(tmp_path / "b")}]
    config = write_config(tmp_path, sim, targets=targets, archive={"concurrency": 3})
    sim.faults.set(throttle_bps=1_500_000)
    rng = random.Random(20261121)
    kills = 0
    for _ in range(5):
        needed = bytes_still_needed(tmp_path, sim, ["a", "b"])
        if needed == 0:
            break
        kill_at = int(needed * rng.uniform(0.2, 0.7))
        since = len(sim.requests)
        proc = start_cli("run", "--config", str(config))
        wait_for(lambda: bytes_served(sim, since) >= kill_at or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, "the run ended before serving the bytes it needed: " + proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        kills += 1
    assert kills == 5  # every run was killed mid-way, none finished on its own
    sim.faults.set(throttle_bps=0)
    final = run_cli("run", "--config", str(config), "--json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["failed"] == 0
    check_archive_complete(tmp_path, sim, ["a", "b"])
    again = run_cli("run", "--config", str(config), "--json")
    assert json.loads(again.stdout)["archived"] == 0 and again.returncode == 0


def test_sigterm_stops_cleanly_and_the_next_run_finishes(sim, tmp_path):
    """Rule: "Stopping is clean. SIGTERM/SIGINT: no new work starts, downloads stop (their
    bytes are kept for the next run) ...; the ledger is consistent; exit code 130." SIGTERM
    once two downloads are under way (by bytes served): exit 130, the run recorded as finished
    with 130, no file requested after the signal that was not in flight before it, the partial
    download kept in the spool and resumed with Range by the next run, which finishes."""
    for _ in range(4):
        sim.add_recording(size=2_000_000)
    config = write_config(tmp_path, sim, archive={"concurrency": 2})
    sim.faults.set(throttle_bps=500_000)
    proc = start_cli("run", "--config", str(config))
    wait_for(lambda: len(files_requested(sim)) == 2 and bytes_served(sim) >= 300_000)
    in_flight = files_requested(sim)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == errors.EXIT_INTERRUPTED, err
    assert "SIGTERM received" in err and "interrupted" in out
    assert files_requested(sim) == in_flight, "new work started after SIGTERM"
    assert bytes_served(sim) < 4 * 2_000_000
    runs = ledger_rows(tmp_path / "ledger.db", "SELECT exit_code, finished_at FROM runs")
    assert runs == [{"exit_code": errors.EXIT_INTERRUPTED, "finished_at": runs[0]["finished_at"]}]
    assert runs[0]["finished_at"]
    assert ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies WHERE state='archived'") == []
    # The partial download stays in the spool so the next run resumes it with Range.
    assert any((tmp_path / "spool").glob("*.part"))
    sim.faults.set(throttle_bps=0)
    before = len(sim.requests)
    final = run_cli("run", "--config", str(config))
    assert final.returncode == 0, final.stderr
    assert any(r.range not in (None, "bytes=0-") for r in sim.requests[before:] if r.kind == "file"), \
        "resumed with Range"
    check_archive_complete(tmp_path, sim, ["nas"])


def test_a_second_signal_leaves_at_once(sim, tmp_path):
    """Rule: "Stopping is clean ... A second signal leaves at once." SIGTERM then SIGINT (two
    different signals, so the kernel cannot merge them) while downloads run: the process says
    so and exits 130 at once, without the clean-up of a first signal (its run is never
    recorded as finished); the next run still finishes the job."""
    for _ in range(2):
        sim.add_recording(size=2_000_000)
    config = write_config(tmp_path, sim, archive={"concurrency": 2})
    sim.faults.set(throttle_bps=300_000)
    proc = start_cli("run", "--config", str(config))
    wait_for(lambda: bytes_served(sim) >= 100_000)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == errors.EXIT_INTERRUPTED, err
    assert re.search(r"second SIG(TERM|INT): leaving now", err), err
    runs = ledger_rows(tmp_path / "ledger.db", "SELECT exit_code, finished_at FROM runs")
    assert runs == [{"exit_code": None, "finished_at": None}]
    sim.faults.set(throttle_bps=0)
    final = run_cli("run", "--config", str(config))
    assert final.returncode == 0, final.stderr
    check_archive_complete(tmp_path, sim, ["nas"])


def test_overlapping_run_is_refused_and_a_killed_runs_lock_does_not_block(sim, tmp_path):
    """Rule: "No overlapping runs. A second run on the same ledger is refused (exit 3, naming
    the running one's pid and host). The lock is an OS file lock: a killed run's lock never
    blocks the next run." The refused run changes nothing: it requests no file."""
    sim.add_recording(size=3_000_000)
    config = write_config(tmp_path, sim)
    sim.faults.set(throttle_bps=300_000)
    first = start_cli("run", "--config", str(config))
    wait_for(lambda: some_bytes_downloaded(sim))
    requests_before = len(sim.requests)
    second = run_cli("run", "--config", str(config))
    assert second.returncode == errors.EXIT_LOCKED
    assert "another rtk-archive run" in second.stderr and f"pid {first.pid}" in second.stderr
    assert f"on {socket.gethostname()}" in second.stderr
    assert not [r for r in sim.requests[requests_before:] if r.kind == "api"], "the refused run listed"
    assert "Traceback" not in second.stderr
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    sim.faults.set(throttle_bps=0)
    third = run_cli("run", "--config", str(config))
    assert third.returncode == 0, third.stderr
    check_archive_complete(tmp_path, sim, ["nas"])
