"""The fault matrix: what the archiver does on a bad night. Each fault is switched on in the
simulator (a real HTTP server) and the run must still end with every file complete and
verified, or with the failure recorded and reported with its reason. Each test also checks in
the simulator's request log that its fault really fired (a fault that never fired proves
nothing)."""

from __future__ import annotations

import logging

import pytest

from pipeline.realtimekit import ApiAuthError, ApiError
from pipeline.session import run_archive
from pipeline.archive.download import RESUME_OVERLAP
from tests.helpers import file_requests, ledger_rows, make_config, stored_digest


def run(tmp_path, sim, **kwargs):
    return run_archive(make_config(tmp_path, sim, **kwargs), command="test")


def api_requests(sim) -> list:
    return [r for r in sim.requests if r.kind == "api"]


def fired(requests, fault: str) -> list:
    """The requests whose answer the simulator shaped with `fault`."""
    return [r for r in requests if fault in r.faults]


# --------------------------------------------------------------------------- API


def test_429_with_retry_after_is_honoured(sim, tmp_path):
    rec = sim.add_recording()
    sim.faults.set(rate_limit=2, retry_after=1)
    result = run(tmp_path, sim)
    assert result.summary.archived == 1 and result.exit_code == 0
    statuses = [r.status for r in api_requests(sim)]
    assert statuses[:3] == [429, 429, 200]
    assert len(fired(sim.requests, "rate_limit")) == 2
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_5xx_is_retried_then_the_run_goes_on(sim, tmp_path):
    sim.add_recording()
    sim.faults.set(server_errors=2, server_error_status=502, server_error_html=True)
    result = run(tmp_path, sim)
    assert result.summary.archived == 1
    first = api_requests(sim)[:3]
    assert [r.status for r in first] == [502, 502, 200]
    assert all(r.headers_sent["Content-Type"].startswith("text/html") for r in first[:2])  # gateway pages


def test_5xx_that_never_ends_gives_a_clear_api_error(sim, tmp_path):
    sim.add_recording()
    sim.faults.set(server_errors=-1, server_error_status=503)
    with pytest.raises(ApiError) as info:
        run(tmp_path, sim, source={"max_retries": 2, "max_retry_seconds": 5})
    assert "503" in str(info.value)
    assert [r.status for r in api_requests(sim)] == [503] * 3  # bounded: 1 + 2 retries
    runs = ledger_rows(tmp_path / "ledger.db", "SELECT exit_code, note FROM runs")
    assert runs[0]["exit_code"] == 4 and "503" in runs[0]["note"]


@pytest.mark.parametrize("fault", ["html_answers", "broken_json", "unsuccessful"])
def test_bad_api_answers_become_clear_errors(sim, tmp_path, fault):
    sim.add_recording()
    sim.faults.set(**{fault: -1})
    with pytest.raises(ApiError) as info:
        run(tmp_path, sim, source={"max_retries": 1, "max_retry_seconds": 3})
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert "Traceback" not in message
    answers = api_requests(sim)
    assert answers and fired(answers, fault) == answers  # every answer carried the fault


def test_wrong_token_stops_at_once(sim, tmp_path):
    sim.add_recording()
    with pytest.raises(ApiAuthError) as info:
        run(tmp_path, sim, source={"api_token": "wrong-token-value"})
    assert "token" in str(info.value).lower()
    assert "wrong-token-value" not in str(info.value)
    assert [r.status for r in api_requests(sim)] == [401]  # refused, and no retry


def test_token_without_permission_says_so(sim, tmp_path):
    sim.add_recording()
    sim.faults.set(forbidden=-1)
    with pytest.raises(ApiAuthError) as info:
        run(tmp_path, sim)
    assert "Realtime" in str(info.value)
    assert [r.status for r in fired(api_requests(sim), "forbidden")] == [403]


# --------------------------------------------------------------------------- download


def test_dropped_connection_resumes_with_range_and_checks_the_whole_file(sim, tmp_path):
    rec = sim.add_recording(size=900_000)
    sim.faults.set(drop_downloads=2, drop_after_bytes=200_000)
    result = run(tmp_path, sim)
    assert result.summary.archived == 1
    answers = file_requests(sim)
    # Both drops really cut a body after 200 000 bytes.
    assert [(r.cut, r.bytes_sent) for r in answers[:2]] == [(True, 200_000), (True, 200_000)]
    assert not answers[2].cut and len(answers) == 3
    # Each resume asks again for the last RESUME_OVERLAP bytes it holds, to compare them (so the
    # second answer's 200 000 bytes brought 200 000 - RESUME_OVERLAP new ones).
    second_break = 200_000 + 200_000 - RESUME_OVERLAP
    ranges = [r.range for r in answers]
    assert ranges == ["bytes=0-", f"bytes={200_000 - RESUME_OVERLAP}-", f"bytes={second_break - RESUME_OVERLAP}-"]
    assert answers[1].if_range == answers[0].headers_sent["ETag"]
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])
    row = ledger_rows(tmp_path / "ledger.db", "SELECT sha256 FROM files WHERE recording_id=?", (rec["id"],))[0]
    assert row["sha256"] == sim.expected_sha256(rec["id"])


def test_server_ignoring_range_restarts_cleanly(sim, tmp_path):
    rec = sim.add_recording(size=600_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=250_000, ignore_range=True)
    result = run(tmp_path, sim)
    assert result.summary.archived == 1
    answers = file_requests(sim)
    assert answers[0].cut
    ignored = fired(answers, "ignore_range")
    assert ignored and ignored[-1].range is not None and ignored[-1].status == 200  # a Range got the whole body
    assert answers[-1].status == 200  # the full body again, not appended
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_already_expired_url_is_refreshed(sim, tmp_path):
    rec = sim.add_recording()
    sim.faults.set(expired_list_urls=-1)
    result = run(tmp_path, sim)
    assert result.summary.archived == 1
    assert fired(api_requests(sim), "expired_list_urls")  # the listing signed dead URLs
    gets = [r for r in sim.requests if r.kind == "api" and r.path.endswith(rec["id"])]
    assert gets, "the recording was fetched again for a fresh URL"
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_url_expiring_during_the_transfer_is_refreshed_and_continued(sim, tmp_path):
    rec = sim.add_recording(size=1_000_000)
    # 3-second URLs, a slow body (5 s) and a break at 4 s: the resume request meets an expired
    # URL (403); the refreshed one is used at once, well within its 3 seconds.
    sim.faults.set(url_lifetime=3, throttle_bps=200_000, drop_downloads=1, drop_after_bytes=800_000)
    result = run(tmp_path, sim, archive={"url_refresh_margin_seconds": 0})
    assert result.summary.archived == 1
    answers = file_requests(sim)
    assert answers[0].cut and answers[0].bytes_sent == 800_000  # the break fired at 4 s ...
    assert answers[1].status == 403  # ... and the resume met the expired URL
    resumed = [r for r in answers if r.status == 206]
    assert resumed and resumed[-1].range == f"bytes={800_000 - RESUME_OVERLAP}-"
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


@pytest.mark.parametrize("extra", [+5000, -5000])
def test_body_not_matching_file_size_is_never_archived(sim, tmp_path, extra):
    rec = sim.add_recording(size=100_000)
    sim.faults.set(size_mismatch={rec["id"]: extra})
    result = run(tmp_path, sim)
    assert result.summary.archived == 0 and result.summary.failed == 1 and result.exit_code == 1
    assert "file_size" in result.summary.problems[0]
    served = fired(file_requests(sim), "size_mismatch")
    assert served and served[0].headers_sent["Content-Length"] == str(100_000 + extra)
    assert result.summary.bytes_downloaded == 0  # refused on the announced length, before the body
    assert not (tmp_path / "nas").exists() or not any((tmp_path / "nas").rglob("video-*"))
    row = ledger_rows(tmp_path / "ledger.db", "SELECT state, last_error FROM files")[0]
    assert row["state"] == "failed" and "file_size" in row["last_error"]


@pytest.mark.parametrize("file_size", [None, 0])
def test_missing_file_size_is_checked_against_content_length_and_flagged(sim, tmp_path, caplog, file_size):
    rec = sim.add_recording(size=50_000, file_size=file_size)
    with caplog.at_level(logging.WARNING):
        result = run(tmp_path, sim)
    assert result.summary.archived == 1
    assert "checked against Content-Length only" in caplog.text
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "Content-Length only" in audit


def test_file_size_as_a_numeric_string_is_accepted(sim, tmp_path):
    rec = sim.add_recording(size=12_345, file_size="12345")
    assert run(tmp_path, sim).summary.archived == 1
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


def test_file_server_errors_are_retried(sim, tmp_path):
    rec = sim.add_recording()
    sim.faults.set(file_server_errors=2)
    assert run(tmp_path, sim).summary.archived == 1
    assert [r.status for r in file_requests(sim)] == [503, 503, 206]  # 206: the whole file, asked as bytes=0-
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


# --------------------------------------------------------------------------- targets


def test_a_failing_target_does_not_stop_the_others_and_is_redone_alone(sim, tmp_path):
    for _ in range(2):
        sim.add_recording()
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where a folder should be")
    targets = [{"name": "good", "type": "local", "path": str(tmp_path / "good")},
               {"name": "bad", "type": "local", "path": str(blocker / "sub")}]
    first = run(tmp_path, sim, targets=targets)
    assert first.summary.failed == 2 and first.exit_code == 1
    assert [p.split(":")[0] for p in first.summary.problems] == ["target 'bad' skipped for this run"]  # once
    assert len(list((tmp_path / "good").rglob("video-*"))) == 2
    downloads = len(file_requests(sim))
    blocker.unlink()
    second = run(tmp_path, sim, targets=targets)
    assert second.summary.archived == 2 and second.exit_code == 0
    assert len(file_requests(sim)) == downloads + 2
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT target, attempts FROM copies WHERE kind='video'")
    # The first run left 'bad' out before any upload (its probe failed): its one attempt is the second run's.
    assert sorted((r["target"], r["attempts"]) for r in rows) == [("bad", 1), ("bad", 1), ("good", 1), ("good", 1)]



def plan_then(tmp_path, sim, between, **config_kwargs):
    """List and plan, then change the world (`between`), then download: the fresh-URL fetch
    meets the change."""
    from pipeline.archive.bookkeeping import Book
    from pipeline.archive.execute import Archiver
    from pipeline.archive.plan import list_uploaded, plan
    from pipeline.session import open_session

    config = make_config(tmp_path, sim, **config_kwargs)
    with open_session(config, "test", record=True, targets=True, api=True) as context:
        book = Book(context)
        archiver = Archiver(book)
        planning = plan(context, list_uploaded(context, None, None, None))
        archiver.record(planning)
        between(planning.plans, context.api)
        archiver.execute(planning.plans)
        return book.summary


def test_recording_deleted_before_its_url_is_refreshed_is_lost(sim, tmp_path):
    gone = sim.add_recording(size=30_000)
    sim.faults.set(expired_list_urls=1)
    summary = plan_then(tmp_path, sim, lambda plans, api: sim.remove_recording(gone["id"]))
    assert summary.lost == 1 and "no longer knows the recording" in summary.problems[0]
    refetch = [r for r in api_requests(sim) if r.path.endswith(gone["id"])]
    assert [r.status for r in refetch] == [404] and not file_requests(sim)


def test_url_refresh_failing_fails_that_file_only(sim, tmp_path):
    flaky = sim.add_recording(size=30_000)
    fine = sim.add_recording(size=30_000)
    sim.faults.set(expired_list_urls=1)

    def api_breaks(plans, api):
        for plan in plans:  # `fine` gets a fresh URL now; `flaky` will need one later
            if plan.id == fine["id"]:
                plan.recording = api.get_recording(fine["id"])
        sim.faults.set(server_errors=-1)

    summary = plan_then(tmp_path, sim, api_breaks, source={"max_retries": 1, "max_retry_seconds": 3})
    assert summary.failed == 1 and summary.archived == 1
    refetch = [r for r in api_requests(sim) if r.path.endswith(flaky["id"])]
    assert refetch and all(r.status == 500 and "server_errors" in r.faults for r in refetch)
    assert flaky["id"] in summary.problems[0] and "fetching a fresh URL failed" in summary.problems[0]
    sim.faults.reset()
    again = run(tmp_path, sim)  # the next run finishes the job
    assert again.summary.archived == 1 and again.exit_code == 0
    assert stored_digest(tmp_path / "nas", flaky["id"]) == sim.expected_sha256(flaky["id"])


# --------------------------------------------------------------------------- hostile API data


def test_missing_null_unknown_and_malformed_fields_are_archived_safely(sim, tmp_path, caplog):
    odd = sim.add_recording(size=20_000, output_file_name=None, session_id=None, meeting=None,
                            invoked_time="not-a-date", started_time=None, surprise_field={"nested": [1, 2]},
                            recording_duration="ninety")
    with caplog.at_level(logging.WARNING):
        result = run(tmp_path, sim)
    assert result.summary.archived == 1 and result.summary.failed == 0
    stored = [p for p in (tmp_path / "nas").rglob("video-*")]
    assert len(stored) == 1
    # No date to file it under and no name: safe fallbacks, inside the target.
    assert stored[0].relative_to(tmp_path / "nas").parts[:3] == ("unknown", "unknown", "unknown")
    assert stored[0].name == f"video-{odd['id']}.mp4"
    assert "invoked_time" in caplog.text  # the malformed value is reported, not fatal
