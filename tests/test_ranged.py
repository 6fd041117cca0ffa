"""Parallel ranged downloads of large files (pipeline.archive.ranged) against the simulator's
file server: the pieces come over several connections and are archived whole and unaltered
(SHA-256 compared with the simulator's), through drops of single ranges, short ranges, a server
that ignores Range, a file that changes between ranges (never mixed), 429/503 under parallel
load (fewer streams, no failure), and a SIGKILL in the middle followed by a resume."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import threading
import time

import pytest

from pipeline.session import run_archive
from tests.helpers import cli_command, cli_env, file_requests, ledger_rows, make_config, run_cli, stored_digest, \
    write_config
from tests.test_crash import wait_for
from tests.test_spool_env import small_spool  # noqa: F401 - a fixture: an 8 MiB tmpfs

pytestmark = pytest.mark.slow

MiB = 1 << 20
# Files of 1 MiB and up in ranges, over all four streams at once (the ramp, which starts with one
# and adds streams only where they raise the rate, has its own tests below).
RANGED = {"ranged_cutoff": MiB, "streams_per_file": 4, "ramp_streams": False}


def ranged_requests(sim, rid: str) -> list:
    return [r for r in file_requests(sim) if rid in r.path and r.range and r.range != "bytes=0-0"]


def archive(tmp_path, sim, **archive_settings):
    return run_archive(make_config(tmp_path, sim, archive={**RANGED, **archive_settings}), command="test")


def test_a_large_file_comes_in_ranges_over_several_connections_and_is_archived_whole(sim, tmp_path):
    """A 12 MB file above the cutoff: a `bytes=0-0` probe, then 1 MiB-and-up pieces each asked
    with its own Range and the file's validator as If-Range; the archived copy is the file,
    byte for byte, and the ledger's SHA-256 is the file's."""
    rec = sim.add_recording(size=12_000_000)
    result = archive(tmp_path, sim)
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    pieces = ranged_requests(sim, rec["id"])
    assert len(pieces) >= 4 and all(r.status == 206 and r.if_range for r in pieces)
    starts = sorted(int(r.range.removeprefix("bytes=").split("-")[0]) for r in pieces)
    assert starts[0] == 0 and len(set(starts)) == len(starts)
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])
    row = ledger_rows(tmp_path / "ledger.db", "SELECT sha256, size FROM files WHERE recording_id=?", (rec["id"],))
    assert row == [{"sha256": sim.expected_sha256(rec["id"]), "size": 12_000_000}]


def test_files_below_the_cutoff_use_one_stream(sim, tmp_path):
    """A file under `ranged_cutoff` is one `bytes=0-` request, as before."""
    rec = sim.add_recording(size=500_000)
    result = archive(tmp_path, sim)
    assert result.exit_code == 0 and result.summary.archived == 1
    assert [r.range for r in file_requests(sim)] == ["bytes=0-"]
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_dropped_and_short_ranges_are_continued_and_the_file_is_whole(sim, tmp_path):
    """Three answers cut mid-body and two that end early without an error: each piece is
    continued from where it stopped (its last bytes asked again and compared), the file is
    archived whole."""
    rec = sim.add_recording(size=10_000_000)
    sim.faults.set(drop_downloads=3, drop_after_bytes=300_000, end_early=2, end_early_after=200_000, chunked=False)
    result = archive(tmp_path, sim)
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    answers = file_requests(sim)
    assert sum(r.cut for r in answers) == 3 and sum("end_early" in r.faults for r in answers) == 2
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_a_server_that_ignores_range_is_downloaded_over_one_stream(sim, tmp_path):
    """The probe's `bytes=0-0` comes back 200 with the whole file: the probe's body is not
    read, and the file comes over one stream, archived whole."""
    rec = sim.add_recording(size=6_000_000)
    sim.faults.set(ignore_range=True)
    result = archive(tmp_path, sim)
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    answers = file_requests(sim)
    assert answers[0].range == "bytes=0-0" and answers[0].status == 200
    assert [r.range for r in answers[1:]] == ["bytes=0-"]
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_a_server_whose_later_ranges_answer_200_falls_back_to_one_stream(sim, tmp_path):
    """The probe and the first piece get 206, every piece not starting at byte 0 gets 200 with
    the whole file (same ETag: Range ignored, the file unchanged): no 200 body is written, the
    file is downloaded again over one stream, and archived whole."""
    rec = sim.add_recording(size=8_000_000)
    sim.faults.set(ignore_later_ranges=True)
    result = archive(tmp_path, sim)
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    answers = file_requests(sim)
    assert any(r.status == 200 and "ignore_later_ranges" in r.faults for r in answers)
    assert answers[-1].range == "bytes=0-" and answers[-1].status == 206
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_a_file_that_changes_between_ranges_is_never_mixed(sim, tmp_path):
    """A drop that also changes the file (new bytes, same size, new ETag): the next range is
    asked with the old ETag as If-Range and answered 200, so the pieces already held are thrown
    away and the file starts again; what is archived is the new version whole, never a mix."""
    rec = sim.add_recording(size=8_000_000)
    old = sim.expected_sha256(rec["id"])
    sim.faults.set(drop_downloads=1, drop_after_bytes=500_000, change_on_drop=True)
    result = archive(tmp_path, sim)
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    new = sim.expected_sha256(rec["id"])
    assert new != old and stored_digest(tmp_path / "nas", rec["id"]) == new
    assert any(r.status == 200 and r.if_range for r in file_requests(sim))


def test_a_file_that_changes_size_between_ranges_fails_and_nothing_is_kept(sim, tmp_path):
    """The file grows by 1000 bytes after the download began: its ETag changes, a range comes
    back 200, the restart finds a length other than the API's file_size: the file fails with
    that reason, nothing is archived and the spool is emptied."""
    rec = sim.add_recording(size=40_000_000)  # (ten 4 MiB pieces: some are asked after the change)
    sim.faults.set(throttle_bps=8_000_000)
    changer = threading.Thread(target=lambda: (
        wait_for(lambda: sum(r.bytes_sent for r in file_requests(sim)) > 1_000_000),
        sim.faults.set(size_mismatch={rec["id"]: 1000})))
    changer.start()
    result = archive(tmp_path, sim)
    changer.join()
    assert result.exit_code == 1 and result.summary.failed == 1 and result.summary.archived == 0
    assert stored_digest(tmp_path / "nas", rec["id"]) is None
    row = ledger_rows(tmp_path / "ledger.db", "SELECT state, last_error FROM files WHERE recording_id=?", (rec["id"],))
    assert row[0]["state"] == "failed" and "40001000 bytes but the API's file_size is 40000000" in row[0]["last_error"]
    assert not any((tmp_path / "spool").iterdir())


def test_429_and_503_under_parallel_load_reduce_the_streams_instead_of_failing(sim, tmp_path):
    """Six answers in a row are 503 SlowDown while four streams fetch: the file uses fewer
    streams and backs off, and is archived whole without a failure."""
    rec = sim.add_recording(size=10_000_000)
    sim.faults.set(file_server_errors=6)
    result = archive(tmp_path, sim, download_attempts=3)
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    assert sum(r.status == 503 for r in file_requests(sim)) == 6
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_sigkill_during_a_multi_range_download_then_resume_continues_each_range(sim, tmp_path):
    """`rtk-archive run` is SIGKILLed while four streams fetch a 24 MB file (throttled per
    connection), after a durable checkpoint: the next run asks no probe and continues the
    pieces from where they were durable (no piece starts again from its beginning unless it
    had not begun), fetches less than the whole file, and archives it whole."""
    rec = sim.add_recording(size=24_000_000)
    sim.faults.set(throttle_bps=1_500_000)
    config = write_config(tmp_path, sim, archive=RANGED)
    proc = subprocess.Popen(cli_command("run", "--config", str(config)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=cli_env())
    marker = tmp_path / "spool" / f"{rec['id']}.video.part.ok"
    try:
        wait_for(lambda: (marker.exists() and sum(p[1] - p[0] for p in json.loads(marker.read_text())["pieces"])
                          > 4_000_000) or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.kill()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    held = json.loads(marker.read_text())
    durable = sum(done - start for start, done, _ in held["pieces"])
    since = len(sim.requests)
    sim.faults.set(throttle_bps=0)
    final = run_cli("run", "--config", str(config), "--json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["archived"] == 1
    after = [r for r in sim.requests[since:] if r.kind == "file"]
    assert all(r.range != "bytes=0-0" for r in after)  # resumed: no probe
    continued = {int(r.range.removeprefix("bytes=").split("-")[0]) for r in after}
    for start, done, end in held["pieces"]:
        if start < done < end:  # a piece under way continues where it was durable, its last 64 KiB asked again
            assert max(start, done - (64 << 10)) in continued, (start, done, continued)
    assert sum(r.bytes_sent for r in after) < 24_000_000 - durable + 4 * (64 << 10) + 1
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_a_ranged_file_larger_than_the_spool_fails_at_once_and_the_others_go_on(sim, tmp_path, small_spool):
    """A 12 MB file above the cutoff on an 8 MiB spool (tmpfs): refused once its length is
    known, before any piece is fetched, with the reason; the two 1 MB files are archived; the
    spool is left empty."""
    big = sim.add_recording(size=12_000_000)
    small = [sim.add_recording(size=1_000_000) for _ in range(2)]
    result = archive(tmp_path, sim, spool_dir=str(small_spool), concurrency=1)
    assert result.exit_code == 1 and result.summary.archived == 2 and result.summary.failed == 1
    assert [r.range for r in file_requests(sim) if big["id"] in r.path] == ["bytes=0-0"]
    [problem] = result.summary.problems
    assert f"no space left on the spool file system at {small_spool}: the file is 12000000 bytes" in problem
    for rec in small:
        assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])
    assert list(small_spool.iterdir()) == []


def test_with_each_connection_throttled_the_ramp_adds_streams_and_the_file_is_whole(sim, tmp_path, monkeypatch):
    """A long path (every connection limited to 4 MiB/s, as one TCP stream over a WAN is): the
    download starts over one connection and doubles them while that raises the file's rate, so
    more than one connection serves the pieces; the file is archived byte for byte. (The rule
    on a busy machine is the next test's: here the gauge has no /proc/stat, so it never says
    busy, whatever else the machine runs.)"""
    from pipeline.archive import cpu_gauge, ranged
    monkeypatch.setattr(ranged, "MACHINE", cpu_gauge.CpuGauge(stat=tmp_path / "no-proc-stat"))
    rec = sim.add_recording(size=16 * MiB)
    sim.faults.set(throttle_bps=4 * MiB)
    result = archive(tmp_path, sim, ramp_streams=True, streams_per_file=8)
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    pieces = ranged_requests(sim, rec["id"])
    assert len({r.connection for r in pieces}) > 1
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_on_a_machine_whose_cores_are_all_busy_the_ramp_adds_no_stream(sim, tmp_path):
    """The same long path, with every core of this machine kept busy (one spinning process per
    core, real load): another stream would only take CPU from the others, so the file stays on
    the one it started with (pipeline.archive.cpu_gauge) and is archived whole."""
    rec = sim.add_recording(size=6 * MiB)
    sim.faults.set(throttle_bps=4 * MiB)
    spinners = [multiprocessing.Process(target=_spin, args=(60.0,), daemon=True)
                for _ in range(len(os.sched_getaffinity(0)) + 1)]
    for spinner in spinners:
        spinner.start()
    try:
        result = archive(tmp_path, sim, ramp_streams=True, streams_per_file=8)
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    pieces = ranged_requests(sim, rec["id"])
    assert len(pieces) > 1 and len({r.connection for r in pieces}) == 1
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_the_cpu_gauge_reads_the_machines_busy_share(tmp_path, monkeypatch):
    """CpuGauge's arithmetic on /proc/stat's first line (idle and iowait are idle; the busy
    share since the last look, from BUSY_AT up is busy), asked at most every MIN_INTERVAL; with
    no /proc/stat (not Linux) it never says busy."""
    from pipeline.archive import cpu_gauge

    now = [100.0]
    monkeypatch.setattr(cpu_gauge.time, "monotonic", lambda: now[0])
    stat = tmp_path / "stat"

    def look(user: int, idle: int, iowait: int = 0) -> bool:
        stat.write_text(f"cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
        now[0] += 2 * cpu_gauge.MIN_INTERVAL
        return gauge.busy()

    stat.write_text("cpu  1000 0 0 1000 0 0 0 0 0 0\n")
    gauge = cpu_gauge.CpuGauge(stat=stat)  # (its first look: now)
    assert look(1095, 1005) is True  # 95 of 100 ticks busy
    assert look(1175, 1025) is False  # 80 of 100
    assert look(1180, 1025, iowait=95) is False  # waiting for the disk is idle CPU
    stat.write_text("cpu  9999 0 0 0 0 0 0 0 0 0\n")
    assert gauge.busy() is False  # asked again at once: the last verdict (no new look)
    assert cpu_gauge.CpuGauge(stat=tmp_path / "missing").busy() is False


def test_the_ramp_takes_a_stream_back_when_it_did_not_raise_the_rate(sim, tmp_path, monkeypatch):
    """Logic of the ramp alone (pipeline.archive.pieces.Ramp), on a clock it is given: twice
    the streams after an interval in which the last increase paid, back to the count before an
    increase that did not, and no change after that or after a 429/503 lowered what is allowed."""
    from pipeline.archive import pieces

    now = [0.0]
    monkeypatch.setattr(pieces.time, "monotonic", lambda: now[0])
    step = pieces.RAMP_SECONDS

    def after(ramp, position, streams, allowed=8):
        now[0] += step
        return ramp.streams_wanted(position, streams, allowed)

    ramp = pieces.Ramp(0)
    assert after(ramp, 10, 1) == 2  # the first interval: no rate to compare with yet
    assert after(ramp, 25, 2) == 4  # 15 per interval against 10: it paid
    assert after(ramp, 40, 4) == 2  # 15 against 15: it did not: back to two
    assert after(ramp, 90, 2) == 2  # settled
    settled_by_throttling = pieces.Ramp(0)
    assert after(settled_by_throttling, 10, 4, allowed=2) == 2  # a 429/503 lowered it: never more
    assert after(settled_by_throttling, 50, 2, allowed=8) == 2
    assert pieces.Ramp(0, settled=True).streams_wanted(0, 8, 8) == 8  # ramp_streams = false: all at once
    waiting = pieces.Ramp(0)
    assert after(waiting, 10, 1) == 2 and after(waiting, 25, 2) == 4
    # No gain while the run's connections are all in use: the streams wait for one, and stay.
    now[0] += step
    assert waiting.streams_wanted(40, 4, 8, saturated=True) == 4
    assert not waiting.settled
    assert after(waiting, 60, 4) == 8  # a connection came free and the four paid: on it goes
    # Streams added whose first answer has not come (a long path's connect, TLS, round trip):
    # the interval starts again when they have answered, so their setup is not taken for their rate.
    slow_start = pieces.Ramp(0)
    assert after(slow_start, 10, 1) == 2
    now[0] += step
    assert slow_start.streams_wanted(12, 2, 8, answered=False) == 2  # (10 then 2: it would be taken back)
    assert after(slow_start, 27, 2) == 4  # 15 in the interval after both answered, against 10: it paid
    # This machine's cores all busy: no stream added, none taken back, not settled; the ramp
    # goes on, judged afresh, once they are not.
    busy = pieces.Ramp(0)
    assert after(busy, 10, 1) == 2
    now[0] += step
    assert busy.streams_wanted(30, 2, 8, cpu_bound=True) == 2 and not busy.settled
    now[0] += step
    assert busy.streams_wanted(50, 2, 8, cpu_bound=True) == 2
    assert after(busy, 70, 2) == 4
    # Streams that each carried as much as those before (the path holds each one back): the
    # next increase is four times; one that did not pay still goes back to the count before it.
    leap = pieces.Ramp(0)
    assert after(leap, 10, 1, allowed=32) == 2
    assert after(leap, 29, 2, allowed=32) == 8  # 19 against 10: 0.95 of twice as much
    assert after(leap, 100, 8, allowed=32) == 32  # 71 against 19: 0.93 of four times
    assert after(leap, 180, 32, allowed=32) == 8  # 80 against 71: it did not pay: back to eight
    assert after(leap, 260, 8, allowed=32) == 8 and leap.settled
