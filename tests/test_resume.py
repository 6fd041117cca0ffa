"""Resumption that does not give up on long files: durable checkpoints by time as well as by
size (a killed run resumes close to where it stopped), retry and URL-refresh budgets counted
per lack of progress (a long transfer that keeps advancing through breaks and expiring URLs
finishes; one that stops advancing is abandoned), a resume after a killed run that is safe
when the file changed meanwhile, and "downloaded" counting only the bytes this run fetched."""

from __future__ import annotations

import json
import signal
import subprocess
import threading

import pytest

from pipeline import errors
from pipeline.archive.download import RESUME_OVERLAP
from pipeline.session import run_archive
from tests.helpers import cli_command, cli_env, file_requests, ledger_rows, make_config, run_cli, stored_digest, \
    write_config
from tests.test_crash import wait_for

pytestmark = pytest.mark.slow

MiB = 1 << 20


def sent(sim, rid: str) -> int:
    return sum(r.bytes_sent for r in file_requests(sim) if rid in r.path)


def start_of(range_header: str) -> int:
    return int(range_header.removeprefix("bytes=").split("-")[0])


# One stream per file, so a file's progress is the throttle's rate (the ranged download, and its
# resume piece by piece, have their own tests in tests/test_ranged.py).
ONE_STREAM = {"ranged_cutoff": 1 << 39}


def kill_mid_download(sim, tmp_path, rid: str, ready):
    """Start `rtk-archive run` as a process, SIGKILL it once `ready()` (observed progress);
    returns the config and the bytes of the file the server had sent at the kill."""
    config = write_config(tmp_path, sim, archive=ONE_STREAM)
    proc = subprocess.Popen(cli_command("run", "--config", str(config)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=cli_env())
    try:
        wait_for(lambda: ready() or proc.poll() is not None)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        killed_at = sent(sim, rid)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return config, killed_at


def test_a_killed_download_resumes_close_to_where_it_stopped_whatever_the_size(sim, tmp_path):
    """A 40 MB file (far below the 256 MiB size checkpoint) is SIGKILLed 12 MB in: checkpoints
    by time (every few seconds) mean the next run's first request resumes a few seconds' worth
    of bytes before the kill point, not at 0; the file is then archived whole, and the run's
    bytes_downloaded is exactly what it fetched (the resumed bytes excluded)."""
    rec = sim.add_recording(size=40_000_000)
    sim.faults.set(throttle_bps=2_000_000)
    config, killed_at = kill_mid_download(sim, tmp_path, rec["id"], lambda: sent(sim, rec["id"]) >= 12_000_000)
    sim.faults.set(throttle_bps=0)
    before = len(file_requests(sim))
    done = run_cli("run", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    first = file_requests(sim)[before]
    resumed_from = start_of(first.range)
    assert killed_at - 8 * MiB <= resumed_from <= killed_at, (resumed_from, killed_at)
    assert first.if_range and first.status == 206
    out = json.loads(done.stdout)
    assert out["archived"] == 1 and out["bytes_downloaded"] == 40_000_000 - resumed_from
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


@pytest.mark.parametrize("etag", ["changed", "unchanged"])
def test_a_file_changed_after_a_killed_run_is_never_spliced(sim, tmp_path, etag):
    """A run is SIGKILLed mid-download; before the next run, the file server's file changes
    (same URL, same size, other bytes), with a new ETag or (a store that lies) the old one. The
    validator kept beside the spool goes out as If-Range (a new ETag: the whole new file comes
    back), and the overlap comparison catches the unchanged-ETag case: the new version is
    archived whole, never a splice of the two."""
    rec = sim.add_recording(size=10_000_000)
    sim.faults.set(throttle_bps=2_000_000, stale_validators=etag == "unchanged")
    config, _ = kill_mid_download(sim, tmp_path, rec["id"], lambda: any((tmp_path / "spool").glob("*.part.ok")))
    first_etag = file_requests(sim)[0].headers_sent["ETag"]
    original = sim.expected_sha256(rec["id"])
    sim.change_file(rec["id"])
    sim.faults.set(throttle_bps=0)
    before = len(file_requests(sim))
    done = run_cli("run", "--config", str(config))
    assert done.returncode == 0, done.stderr
    answers = file_requests(sim)[before:]
    assert answers[0].if_range == first_etag and answers[0].range != "bytes=0-"  # a resume was tried
    if etag == "changed":
        assert answers[0].status == 200 and len(answers) == 1
    else:
        assert answers[0].status == 206 and answers[1].range == "bytes=0-"
    assert sim.expected_sha256(rec["id"]) != original
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_a_long_transfer_whose_url_keeps_expiring_finishes(sim, tmp_path):
    """1-second URLs, and a transfer broken four times, each piece longer than a URL lives:
    every resume meets an expired URL and fetches a fresh one. The refresh budget counts
    refreshes without progress, so four refreshes (more than the three in a row allowed) that
    each brought bytes do not stop the transfer."""
    rec = sim.add_recording(size=3_600_000)
    sim.faults.set(url_lifetime=1, throttle_bps=300_000, drop_downloads=4, drop_after_bytes=700_000)
    result = run_archive(make_config(tmp_path, sim, archive={"url_refresh_margin_seconds": 0}), command="test")
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    answers = file_requests(sim)
    assert sum(r.cut for r in answers) == 4 and [r.status for r in answers].count(403) == 4
    refreshes = [r for r in sim.requests if r.kind == "api" and r.path.endswith(rec["id"])]
    assert len(refreshes) == 4
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_more_breaks_than_attempts_finish_while_each_brings_bytes(sim, tmp_path):
    """With two download attempts allowed, a transfer broken four times finishes: each break
    came after new bytes, and the attempt budget counts failures without progress."""
    rec = sim.add_recording(size=1_200_000)
    sim.faults.set(drop_downloads=4, drop_after_bytes=200_000)
    result = run_archive(make_config(tmp_path, sim, archive={"download_attempts": 2}), command="test")
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    assert sum(r.cut for r in file_requests(sim)) == 4
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_a_transfer_that_stops_advancing_is_abandoned(sim, tmp_path):
    """Every answer breaks after 30 000 bytes, less than a resume asks again to compare: no
    attempt after the first gets past the furthest byte already held, so three attempts after
    the last progress the file fails with the reason, and the run exits 1."""
    rec = sim.add_recording(size=500_000)
    sim.faults.set(drop_downloads=-1, drop_after_bytes=30_000)
    result = run_archive(make_config(tmp_path, sim, archive={"download_attempts": 3}), command="test")
    assert result.exit_code == 1 and result.summary.failed == 1
    answers = file_requests(sim)
    assert len(answers) == 3 and all(r.cut for r in answers) and answers[1].range == answers[2].range == "bytes=0-"
    row = ledger_rows(tmp_path / "ledger.db", "SELECT state, last_error FROM files WHERE recording_id=?", (rec["id"],))
    assert row[0]["state"] == "failed"
    assert "gave up after 3 attempts without getting past byte 30000" in row[0]["last_error"]


def test_downloaded_counts_the_bytes_this_run_fetched(sim, tmp_path):
    """A run stopped mid-download keeps its bytes; the next run resumes, and its
    bytes_downloaded is what it fetched (from its resume point, the compared overlap included),
    not the file's size. The stopped run counts what it fetched before stopping."""
    rec = sim.add_recording(size=1_000_000)
    sim.faults.set(throttle_bps=400_000)
    stop = threading.Event()
    watcher = threading.Thread(target=lambda: (wait_for(lambda: sent(sim, rec["id"]) >= 400_000), stop.set()))
    watcher.start()
    config = make_config(tmp_path, sim)
    first = run_archive(config, command="test", stop=stop)
    watcher.join()
    assert first.exit_code == errors.EXIT_INTERRUPTED
    # The server may have sent bytes the client had not read yet when it stopped: fetched is at
    # most what was sent, and some of it (the watcher waits for 400 kB sent).
    assert 0 < first.summary.bytes_downloaded <= sent(sim, rec["id"])
    sim.faults.set(throttle_bps=0)
    before = len(file_requests(sim))
    second = run_archive(config, command="test")
    resumed_from = start_of(file_requests(sim)[before].range)
    assert first.summary.bytes_downloaded - RESUME_OVERLAP == resumed_from  # the stop synced every byte
    assert second.exit_code == 0 and second.summary.bytes_downloaded == 1_000_000 - resumed_from
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])
