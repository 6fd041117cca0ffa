"""The API client's listing against the simulator over real HTTP on 127.0.0.1 (plus a few
MockTransport cases for answers the simulator never gives, like a page without paging): every
page, each id once, filters, and the check that pages count from 1."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import httpx
import pytest

import pipeline
from pipeline.realtimekit import ApiError
from pipeline.simulator import Simulator
from tests.realtimekit.helpers import TOKEN_LOGGER, api_requests, ids_with, make_client, mock_client


def test_iter_recordings_returns_every_uploaded_recording_once(sim, client):
    recordings = list(client.iter_recordings())
    assert {r.id for r in recordings} == ids_with(sim, "UPLOADED")
    assert len(recordings) == len({r.id for r in recordings})
    for rec in recordings:
        assert rec.status == "UPLOADED" and rec.file_size and rec.file_size > 0
        assert rec.invoked_time.tzinfo is not None and rec.invoked_time.utcoffset() == timedelta(0)
        assert rec.meeting_id == rec.meeting.id and rec.meeting.title
        assert rec.problems == []
    times = [r.invoked_time for r in recordings]
    assert times == sorted(times)  # ASC by default


def test_paging_walks_all_pages_and_stops_at_total_count(sim):
    with make_client(sim, per_page=4) as client:
        got = list(client.iter_recordings(status=None))
    assert len(got) == 20
    pages = [int(r.query["page_no"][0]) for r in api_requests(sim)]
    assert pages == [1, 2, 3, 4, 5]  # total_count reached: no sixth request for an empty page
    assert all(r.query["per_page"] == ["4"] for r in api_requests(sim))


def test_pages_shorter_than_asked_are_not_taken_as_the_end():
    with Simulator(recordings=11, max_per_page=3) as sim, make_client(sim, per_page=50) as client:
        got = list(client.iter_recordings(status=None))
    assert len(got) == 11
    assert len(api_requests(sim)) == 4


def test_records_shifting_between_pages_are_not_repeated(sim):
    original = ids_with(sim, "UPLOADED")
    with make_client(sim, per_page=3) as client:
        iterator = client.iter_recordings()
        seen = [next(iterator).id]
        # A late-arriving older recording shifts everything after it down by one.
        sim.add_recording(status="UPLOADED", invoked_time=datetime.now(timezone.utc) - timedelta(days=9, hours=23))
        seen += [r.id for r in iterator]
    assert len(seen) == len(set(seen))
    assert original <= set(seen)


def test_status_and_other_filters_reach_the_server(sim, client):
    meeting = sim.recordings[0]["meeting"]
    start = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    list(
        client.iter_recordings(
            status=("UPLOADED", "ERRORED"),
            start_time=start,
            end_time=datetime(2100, 1, 1),
            meeting_id=meeting["id"],
            search="x",
            expired=False,
            sort_order="DESC",
        )
    )
    query = api_requests(sim)[-1].query
    assert query["status"] == ["UPLOADED", "ERRORED"]
    assert query["start_time"] == ["2020-01-02T01:04:05.000Z"] and query["end_time"] == ["2100-01-01T00:00:00.000Z"]
    assert query["meeting_id"] == [meeting["id"]] and query["search"] == ["x"] and query["expired"] == ["false"]
    assert query["sort_by"] == ["invokedTime"] and query["sort_order"] == ["DESC"]


def test_filters_select_the_right_recordings(sim, client):
    both = {r.id for r in client.iter_recordings(status=["UPLOADED", "ERRORED"])}
    assert both == ids_with(sim, "UPLOADED", "ERRORED")

    meeting = sim.recordings[0]["meeting"]
    mine = list(client.iter_recordings(status=None, meeting_id=meeting["id"]))
    assert mine and {r.meeting_id for r in mine} == {meeting["id"]}
    assert {r.id for r in client.iter_recordings(status=None, search=meeting["title"].lower())} >= {r.id for r in mine}

    expired = list(client.iter_recordings(expired=True))
    fresh = list(client.iter_recordings(expired=False))
    assert expired and fresh and len(expired) + len(fresh) == len(ids_with(sim, "UPLOADED"))
    cutoff = datetime.now(timezone.utc) - timedelta(days=7)
    assert all(r.stopped_time < cutoff for r in expired)

    newest_first = [r.invoked_time for r in client.iter_recordings(sort_order="DESC")]
    assert newest_first == sorted(newest_first, reverse=True)
    recent = list(client.iter_recordings(start_time=datetime.now(timezone.utc) - timedelta(days=3)))
    assert recent and all(r.invoked_time >= datetime.now(timezone.utc) - timedelta(days=3, minutes=1) for r in recent)


def test_malformed_list_items_are_skipped_and_reported():
    items = ["just a string", {"status": "UPLOADED"}, {"id": None}, {"id": "  "}, 42, {"id": "good", "status": "UPLOADED"}]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "data": items, "paging": {"total_count": 6, "end_offset": 6}})

    reasons: list[str] = []
    with mock_client(handler) as client:
        client.on_bad_record = reasons.append
        assert [r.id for r in client.iter_recordings()] == ["good"]
    assert len(reasons) == 5 and all("page 1" in reason for reason in reasons)


def test_bad_records_are_logged_by_default(caplog):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "data": [{"no_id": 1}], "paging": {"total_count": 1}})

    with caplog.at_level(logging.WARNING, logger=TOKEN_LOGGER), mock_client(handler) as client:
        assert list(client.iter_recordings()) == []
    assert "without a usable id" in caplog.text


def test_listing_without_paging_stops_on_an_empty_page():
    pages = {1: [{"id": "a"}, {"id": "b"}], 2: [{"id": "b"}, {"id": "c"}], 3: []}
    seen_pages: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page_no"])
        seen_pages.append(page)
        return httpx.Response(200, json={"success": True, "data": pages.get(page, [])})

    with mock_client(handler, per_page=2) as client:
        assert [r.id for r in client.iter_recordings()] == ["a", "b", "c"]
    assert seen_pages == [1, 2, 3]


def test_a_server_ignoring_page_no_does_not_loop_forever():
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, json={"success": True, "data": [{"id": "a"}, {"id": "b"}]})

    with mock_client(handler, per_page=2) as client:
        assert [r.id for r in client.iter_recordings()] == ["a", "b"]
    assert len(calls) == 4  # the first page, then three pages of nothing new


def test_a_whole_page_of_repeats_is_not_the_end():
    # Between page 1 and page 2, two newer recordings pushed page 1 down whole (DESC order).
    pages = {1: [{"id": "a"}, {"id": "b"}], 2: [{"id": "a"}, {"id": "b"}], 3: [{"id": "c"}], 4: []}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "data": pages[int(request.url.params["page_no"])]})

    with mock_client(handler, per_page=2) as client:
        assert [r.id for r in client.iter_recordings(sort_order="DESC")] == ["a", "b", "c"]


def test_pages_counted_from_zero_fail_loudly(sim):
    """The first page must start at offset 1 (realtimekit-facts.md: the docs read as 1-based,
    the Go spec allows 0). A server counting pages from 0 answers page_no=1 with the second
    page; the client refuses to list (one line) instead of silently missing the first page,
    whether that page has items or is empty because everything fits on the real first one."""
    sim.faults.pages_from_zero = True
    for per_page in (3, 50):
        with make_client(sim, per_page=per_page) as client, pytest.raises(ApiError) as caught:
            list(client.iter_recordings(status=None))
        message = str(caught.value)
        assert f"starts at offset {per_page + 1}, not 1" in message and "count pages from 0" in message
        assert "\n" not in message and not caught.value.retryable
    with make_client(sim) as client, pytest.raises(ApiError, match="not 1"):
        client.list_page()
    assert [r.query["page_no"] for r in api_requests(sim)] == [["1"]] * 3  # never went on to page 2


def test_zero_based_offsets_fail_and_an_empty_listing_passes():
    """start_offset 0 on a first page with items fails; an empty listing may say 0 (nothing missed)."""
    answers = {"items": {"success": True, "data": [{"id": "a"}], "paging": {"start_offset": 0, "end_offset": 0, "total_count": 1}},
               "empty": {"success": True, "data": [], "paging": {"start_offset": 0, "end_offset": 0, "total_count": 0}}}
    which = ["items"]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[which[0]])

    with mock_client(handler) as client:
        with pytest.raises(ApiError, match="starts at offset 0, not 1"):
            list(client.iter_recordings())
        which[0] = "empty"
        assert list(client.iter_recordings()) == [] and client.list_page().data == []


def test_headers_sent():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"success": True, "data": {"id": "r1", "status": "UPLOADED"}})

    with mock_client(handler) as client:
        client.get_recording("r1/../x")
    request = seen[0]
    assert request.headers["Authorization"] == "Bearer tok-SECRET-123"
    assert request.headers["User-Agent"] == f"rtk-archive/{pipeline.__version__}"
    assert request.url.raw_path == b"/client/v4/accounts/acc/realtime/kit/app/recordings/r1%2F..%2Fx"


def test_a_run_against_pages_counted_from_zero_stops_with_one_line(sim, tmp_path):
    """The same check seen by a user: `run` ends with the API exit code and one line that says
    why, and archives nothing (rather than everything but the first page)."""
    from pipeline import errors
    from tests.helpers import write_config
    from tests.inprocess import run_main

    sim.faults.pages_from_zero = True
    result = run_main("run", "--config", str(write_config(tmp_path, sim)), "--json")
    payload = json.loads(result.stdout)
    assert result.returncode == errors.EXIT_API and payload["exit_code"] == errors.EXIT_API
    assert "count pages from 0" in payload["error"] and "\n" not in payload["error"]
    assert not [path for path in (tmp_path / "nas").rglob("*") if path.is_file()]
