"""A long listing is archived in batches (pipeline.archive.run.LISTING_BATCH): the listing's
pages are fetched as the batches need them, so memory stays flat in the number of recordings,
and every recording is still archived exactly once, the ledger and the counts whole."""

from __future__ import annotations

import pytest

from pipeline.archive import run as archive_run
from pipeline.session import run_archive
from tests.helpers import ledger_rows, make_config, stored_digest

pytestmark = pytest.mark.slow


def test_the_listing_is_read_batch_by_batch_and_everything_is_archived(sim, tmp_path, monkeypatch):
    """Seven recordings, pages of 3, batches of 3: the third page is asked only after the first
    batch's files were downloaded (the listing is not held whole: one batch is listed and planned
    ahead while the one before is archived), and all seven are archived, once each, with one
    manifest each and the run's counts covering every batch."""
    monkeypatch.setattr(archive_run, "LISTING_BATCH", 3)
    recs = [sim.add_recording(size=20_000 + i) for i in range(7)]
    result = run_archive(make_config(tmp_path, sim, source={"per_page": 3}), command="test")
    assert result.exit_code == 0 and result.summary.archived == 7, result.summary.problems
    order = [r for r in sim.requests if r.kind in ("api", "file")]
    third_page = next(i for i, r in enumerate(order) if r.kind == "api" and r.query.get("page_no") == ["3"])
    assert any(r.kind == "file" for r in order[:third_page])
    for rec in recs:
        assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM recordings")
    assert [r["state"] for r in rows] == ["archived"] * 7
