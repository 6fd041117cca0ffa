"""Prometheus metrics: what the ledger says now, and what the last run did, as a
prometheus_client registry (`build_registry`), written for node_exporter's textfile collector
(`write_textfile`: a temporary file in the same folder, then a rename, so a scrape never reads
half a file). The future `serve` mode exposes the same registry on /metrics.

Names follow Prometheus practice: base units (seconds, bytes), `_total` for counters,
`_timestamp_seconds` for times; labels are targets and states, never a recording id."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.clock import from_iso, iso_utc
from pipeline.ledger import Ledger, PROBLEM_STATES, RunRow

PREFIX = "rtk_archive"
# The commands whose runs rows are archive runs (`verify` records per copy, not as a run).
ARCHIVE_COMMANDS = ("run", "backfill", "demo")
RUNS_SEARCHED = 500  # how far back the last successful run is looked for


class LedgerCollector(Collector):
    """Reads the ledger once per collection: a registry built on it is current at every scrape."""

    def __init__(self, ledger: Ledger, *, deadline_margin_hours: float, last_run_bytes: int | None = None):
        self.ledger = ledger
        self.margin = timedelta(hours=deadline_margin_hours)
        self.last_run_bytes = last_run_bytes

    def collect(self) -> Iterator[Metric]:
        ledger = self.ledger
        runs = [run for run in ledger.last_runs(RUNS_SEARCHED) if run.command in ARCHIVE_COMMANDS]
        yield from _last_run(runs[0] if runs else None, self.last_run_bytes)
        success = next((run for run in runs if run.finished_at and run.exit_code == 0), None)
        yield _gauge("last_success_timestamp_seconds", "When the last archive run that exited 0 ended.",
                     _seconds(success.finished_at) if success else None)

        counts = ledger.state_counts()
        for table, noun in (("recordings", "Recordings"), ("files", "Recording files")):
            family = GaugeMetricFamily(f"{PREFIX}_{table}", f"{noun} in the ledger, by state.", labels=["state"])
            for state, n in sorted(counts.get(table, {}).items()):
                family.add_metric([state], n)
            yield family
        lost = CounterMetricFamily(f"{PREFIX}_recordings_lost", "Recordings RealtimeKit deleted before every "
                                   "file was archived (a recording never leaves this state).")
        lost.add_metric([], counts.get("recordings", {}).get("lost", 0))
        yield lost
        archived = CounterMetricFamily(f"{PREFIX}_files_archived", "Recording files archived and verified at "
                                       "every target, ever.")
        archived.add_metric([], counts.get("files", {}).get("archived", 0))
        yield archived
        soon = iso_utc(datetime.now(timezone.utc) + self.margin)
        yield _gauge("recordings_at_risk", "Recordings not archived yet that RealtimeKit deletes within the "
                     "deadline margin.", len(ledger.at_risk(soon)))
        yield from _copies(ledger)


def _last_run(run: RunRow | None, downloaded: int | None) -> Iterator[Metric]:
    started = _seconds(run.started_at) if run else None
    finished = _seconds(run.finished_at) if run and run.finished_at else None
    yield _gauge("last_run_start_timestamp_seconds", "When the last archive run started.", started)
    yield _gauge("last_run_end_timestamp_seconds", "When the last archive run ended (absent while it runs "
                 "or when it was killed).", finished)
    yield _gauge("last_run_duration_seconds", "How long the last archive run took.",
                 finished - started if finished is not None and started is not None else None)
    yield _gauge("last_run_exit_code", "The last archive run's exit code (README: Exit codes).",
                 run.exit_code if run and run.finished_at else None)
    for name, value, what in (("archived", run and run.archived, "archived"), ("failed", run and run.failed, "failed"),
                              ("skipped", run and run.skipped, "with nothing to do or not archivable"),
                              ("lost", run and run.lost, "lost")):
        yield _gauge(f"last_run_files_{name}", f"Files (and recordings, for skipped and lost) {what} in the last "
                     "archive run.", value if run and run.finished_at else None)
    yield _gauge("last_run_downloaded_bytes", "Bytes the last archive run downloaded (present when that run "
                 "wrote this file).", downloaded)


def _copies(ledger: Ledger) -> Iterator[Metric]:
    copies = GaugeMetricFamily(f"{PREFIX}_copies", "Copies at each target, by state.", labels=["target", "state"])
    sizes = GaugeMetricFamily(f"{PREFIX}_copies_bytes", "Bytes of the copies at each target, by state.",
                              labels=["target", "state"])
    verified = GaugeMetricFamily(f"{PREFIX}_last_verify_timestamp_seconds", "The latest check of a copy at "
                                 "each target (verify, or the check right after it was stored).", labels=["target"])
    problems = GaugeMetricFamily(f"{PREFIX}_verify_problems", "Copies found missing or altered at each target "
                                 "(until a deep verify or a fresh copy clears them).", labels=["target"])
    oldest = GaugeMetricFamily(f"{PREFIX}_oldest_verification_timestamp_seconds", "The check (verify, or "
                               "the one right after storing) of the copy checked longest ago at each target: "
                               "what `verify --scrub` brings forward.", labels=["target"])
    latest: dict[str, float] = {}
    first: dict[str, float] = {}
    found: dict[str, int] = {}
    for tally in ledger.copy_tallies():
        copies.add_metric([tally.target, tally.state], tally.copies)
        sizes.add_metric([tally.target, tally.state], tally.bytes)
        found[tally.target] = found.get(tally.target, 0) + (tally.copies if tally.state in PROBLEM_STATES else 0)
        if tally.last_verified_at:
            latest[tally.target] = max(latest.get(tally.target, 0.0), _seconds(tally.last_verified_at))
        if tally.oldest_check_at and tally.state == "archived":
            first[tally.target] = min(first.get(tally.target, float("inf")), _seconds(tally.oldest_check_at))
    for target, when in sorted(latest.items()):
        verified.add_metric([target], when)
    for target, when in sorted(first.items()):
        oldest.add_metric([target], when)
    for target, n in sorted(found.items()):
        problems.add_metric([target], n)
    yield from (copies, sizes, verified, oldest, problems)


def build_registry(ledger: Ledger, *, deadline_margin_hours: float = 48.0,
                   last_run_bytes: int | None = None) -> CollectorRegistry:
    """A registry whose metrics are read from `ledger` at each collection (`last_run_bytes`:
    what the run that just ended downloaded, which the ledger does not keep)."""
    registry = CollectorRegistry()
    registry.register(LedgerCollector(ledger, deadline_margin_hours=deadline_margin_hours,
                                      last_run_bytes=last_run_bytes))
    return registry


def write_textfile(path: Path, registry: CollectorRegistry) -> None:
    """The registry in the text exposition format at `path`, replaced atomically: written to a
    temporary file in the same folder (same file system), synced, renamed over it; readable by
    the node_exporter user (0644). Raises OSError."""
    text = generate_latest(registry)
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge without labels; no sample when the value is unknown (never a made-up 0)."""
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _seconds(text: str) -> float:
    return from_iso(text).timestamp()
