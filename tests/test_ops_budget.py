"""Budgets for a nightly window (issue 12): `--max-duration` and `--max-transfer` stop starting
new files (files in flight finish), exit 5 with the reason and how many files remain, leave no
partial state, and the next run finishes; `--bwlimit` holds the total download rate of all
concurrent transfers (a token bucket, optionally on a schedule)."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from pipeline import errors
from pipeline.archive.budget import (BURST_SECONDS, RateLimiter, RunBudget, parse_bwlimit, parse_duration,
                                     parse_size)
from pipeline.config import parse_config
from pipeline.errors import ConfigError
from tests.helpers import config_dict, expected_files, ledger_rows, run_cli, write_config


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text, size", [("500G", 500 * 1024 ** 3), ("50M", 50 * 1024 ** 2), ("512K", 512 * 1024),
                                        ("1.5G", int(1.5 * 1024 ** 3)), ("100", 100), ("10MiB", 10 * 1024 ** 2)])
def test_sizes_take_rclone_suffixes(text, size):
    """Sizes in bytes with K/M/G/T suffixes (powers of 1024, as rclone)."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text, seconds", [("5h", 18_000), ("90m", 5_400), ("1h30m", 5_400), ("45s", 45),
                                           ("2d", 172_800), ("3600", 3_600), ("250ms", 0.25)])
def test_durations(text, seconds):
    """Durations as 5h, 90m, 1h30m, 45s, 2d or plain seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5x", "-1h", "0", "h", "1h-", "5 hours"])
def test_bad_durations_are_refused(bad):
    """Anything else is a clear error, never a silent 0 or forever."""
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_a_bandwidth_schedule_follows_the_time_of_day():
    """`08:00,10M 19:00,off`: 10 MiB/s from 08:00, no limit from 19:00 until 08:00 the next day."""
    schedule = parse_bwlimit("08:00,10M 19:00,off")
    assert schedule.rate_at(datetime(2026, 11, 30, 7, 59)) is None
    assert schedule.rate_at(datetime(2026, 11, 30, 8, 0)) == 10 * 1024 ** 2
    assert schedule.rate_at(datetime(2026, 11, 30, 18, 59)) == 10 * 1024 ** 2
    assert schedule.rate_at(datetime(2026, 11, 30, 23, 0)) is None
    assert parse_bwlimit("off").rate_at(datetime(2026, 1, 1)) is None
    for bad in ("25:00,1M", "08:00,1X", "08:00,1M 08:00,off", "fast"):
        with pytest.raises(ValueError):
            parse_bwlimit(bad)


def test_budget_settings_in_the_configuration(sim, tmp_path):
    """[archive] max_duration, max_transfer and bwlimit are parsed when the file is loaded; a
    bad value is one line naming the key."""
    config = parse_config(config_dict(tmp_path, sim, archive={"max_duration": "90m", "max_transfer": "2G",
                                                              "bwlimit": "08:00,10M 19:00,off"}), environ={})
    assert (config.archive.max_duration, config.archive.max_transfer) == (5_400, 2 * 1024 ** 3)
    with pytest.raises(ConfigError, match=r"archive\.max_duration"):
        parse_config(config_dict(tmp_path, sim, archive={"max_duration": "soon"}), environ={})
    with pytest.raises(ConfigError, match=r"archive\.bwlimit"):
        parse_config(config_dict(tmp_path, sim, archive={"bwlimit": "08:00,lots"}), environ={})


def test_bad_budget_flags_are_usage_errors(sim, tmp_path):
    """--max-duration soon: exit 2 and one line, nothing done."""
    config = write_config(tmp_path, sim)
    result = run_cli("run", "--config", str(config), "--max-duration", "soon")
    assert result.returncode == errors.EXIT_USAGE and "is not a duration" in result.stderr


# ------------------------------------------------------------------ the logic, on a fake clock


class FakeClock:
    """Time that moves only when a wait is made (no test depends on the wall clock's speed)."""

    def __init__(self):
        self.now = 1000.0
        self.waited = 0.0

    def __call__(self):
        return self.now

    def wait(self, seconds):
        self.now += seconds
        self.waited += seconds
        return False


def test_the_token_bucket_holds_the_rate_and_bounds_bursts():
    """Taking 10 MiB in 64 KiB chunks at 1 MiB/s waits 10 s in all (the bucket starts empty);
    after a long pause, at most BURST_SECONDS of the rate passes without waiting."""
    clock = FakeClock()
    limiter = RateLimiter(parse_bwlimit("1M"), clock=clock, now=lambda: datetime(2026, 1, 1, 12))
    limiter.stop.wait = clock.wait
    for _ in range(160):
        limiter.take(64 * 1024)
    assert clock.waited == pytest.approx(10.0, rel=1e-6)
    clock.now += 3600  # an idle hour is not saved up
    before = clock.waited
    for _ in range(16):
        limiter.take(64 * 1024)
    assert clock.waited - before == pytest.approx(1.0 - BURST_SECONDS, rel=1e-6)


def test_run_budgets_stop_after_their_time_or_bytes():
    """The time budget counts from the start; the transfer budget from the bytes received."""
    clock = FakeClock()
    by_time = RunBudget(max_duration=60, clock=clock)
    assert by_time.exhausted() is None
    clock.now += 60
    assert "time budget (1m)" in by_time.exhausted()
    by_bytes = RunBudget(max_transfer=1024 ** 3, clock=clock)
    by_bytes.received(1024 ** 3 - 1)
    assert by_bytes.exhausted() is None
    by_bytes.received(1)
    assert "transfer budget (1G)" in by_bytes.exhausted()


# ------------------------------------------------------------------ real runs against the simulator


def _no_partial_state(tmp_path):
    """Nothing half-done: no spool file, no temporary at the target, no file recorded archived
    without its copy, no recording archived with a file still pending."""
    spool = tmp_path / "spool"
    assert not spool.exists() or not [p for p in spool.rglob("*") if p.is_file()]
    assert not [p for p in (tmp_path / "nas").rglob("*") if p.is_file() and ".tmp" in p.name]
    orphans = ledger_rows(tmp_path / "ledger.db", "SELECT f.recording_id FROM files f WHERE f.state='archived' AND "
                          "NOT EXISTS (SELECT 1 FROM copies c WHERE c.recording_id=f.recording_id AND c.kind=f.kind "
                          "AND c.state='archived')")
    assert orphans == []
    early = ledger_rows(tmp_path / "ledger.db", "SELECT r.id FROM recordings r WHERE r.state='archived' AND EXISTS "
                        "(SELECT 1 FROM files f WHERE f.recording_id=r.id AND f.state!='archived')")
    assert early == []


def _everything_archived(tmp_path, sim):
    stored = {p.name: p for p in (tmp_path / "nas").rglob("*") if p.is_file()}
    import hashlib

    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in stored.values()}
    assert set(expected_files(sim).values()) <= digests


def test_max_transfer_lets_the_file_in_flight_finish_and_starts_no_other(sim, tmp_path):
    """--max-transfer 1 (one byte) with one recording at a time: the first file, started within
    the budget, finishes and is archived; no other starts; exit 5 with the reason and how many
    remain; `status` says so; nothing is half-done; the next run archives the rest (exit 0)."""
    for _ in range(3):
        sim.add_recording(size=40_000, audio=True)
    config = write_config(tmp_path, sim, archive={"concurrency": 1})
    result = run_cli("run", "--config", str(config), "--json", "--max-transfer", "1")
    assert result.returncode == errors.EXIT_BUDGET, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_archived"] == 1 and summary["files_not_started"] == 5
    assert "transfer budget" in summary["budget_stop"] and "5 files not started" in summary["error"]
    _no_partial_state(tmp_path)
    status = run_cli("status", "--config", str(config))
    assert "STOPPED at its budget (exit 5)" in status.stdout and "5 file(s) not started" in status.stdout
    again = run_cli("run", "--config", str(config), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["files_archived"] == 5
    _no_partial_state(tmp_path)
    _everything_archived(tmp_path, sim)


def test_max_duration_spent_starts_nothing_and_the_next_run_finishes(sim, tmp_path):
    """A time budget spent before the first file (--max-duration 1ms): nothing starts, exit 5,
    nothing half-done; the next run archives everything."""
    for _ in range(2):
        sim.add_recording(size=30_000, audio=True)
    config = write_config(tmp_path, sim)
    result = run_cli("run", "--config", str(config), "--json", "--max-duration", "1ms")
    assert result.returncode == errors.EXIT_BUDGET, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_archived"] == 0 and summary["files_not_started"] == 4
    assert "time budget" in summary["budget_stop"]
    assert not [p for p in (tmp_path / "nas").rglob("*") if p.is_file()]
    _no_partial_state(tmp_path)
    again = run_cli("run", "--config", str(config), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["files_archived"] == 4
    _everything_archived(tmp_path, sim)


def test_bwlimit_holds_the_total_rate_of_concurrent_downloads(sim, tmp_path):
    """--bwlimit 256K with three downloads at once: the measured rate over the whole run (a few
    seconds) is at most the limit plus 10% (it includes start-up, so it can only look slower),
    and not starved (a generous lower bound: a quarter of the limit)."""
    for _ in range(6):
        sim.add_recording(size=180_000, audio=False)
    config = write_config(tmp_path, sim, archive={"concurrency": 3})
    limit = 256 * 1024
    started = time.monotonic()
    result = run_cli("run", "--config", str(config), "--json", "--bwlimit", "256K")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    downloaded = json.loads(result.stdout)["bytes_downloaded"]
    assert downloaded == 6 * 180_000
    rate = downloaded / elapsed
    assert rate <= limit * 1.10, f"{rate:.0f} B/s over a limit of {limit}"
    assert rate >= limit * 0.25, f"{rate:.0f} B/s: starved under a limit of {limit}"
