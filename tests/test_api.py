"""The API client against the simulator over real HTTP on 127.0.0.1 (plus a few MockTransport
cases for answers the simulator never gives, like a page without paging)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

import pipeline
from pipeline.realtimekit import (
    ApiAuthError,
    ApiError,
    ApiNotFound,
    RealtimeKitClient,
    Recording,
    StorageConfig,
    redact_url,
)
from pipeline.realtimekit.answers import parse_retry_after
from pipeline.simulator import Simulator

TOKEN_LOGGER = "rtk_archive.api"


@pytest.fixture
def sim():
    with Simulator(recordings=20, seed=11) as simulator:
        yield simulator


def make_client(sim: Simulator, *, token: str | None = None, **options) -> RealtimeKitClient:
    """A client with fast retries; `sleeps` records every wait instead of sleeping it."""
    options.setdefault("backoff_initial", 0.001)
    options.setdefault("backoff_max", 0.01)
    client = RealtimeKitClient(
        base_url=sim.base_url,
        account_id=sim.account_id,
        app_id=sim.app_id,
        api_token=token or sim.token,
        **options,
    )
    client.sleeps = []  # type: ignore[attr-defined]
    client.sleep = client.sleeps.append  # type: ignore[attr-defined]
    return client


@pytest.fixture
def client(sim):
    with make_client(sim) as api_client:
        yield api_client


def api_requests(sim: Simulator) -> list:
    return [r for r in sim.requests if r.kind == "api"]


def ids_with(sim: Simulator, *statuses: str) -> set[str]:
    return {r["id"] for r in sim.recordings if r["status"] in statuses}


# ---------------------------------------------------------------------------------------------
# Listing and paging
# ---------------------------------------------------------------------------------------------


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


def mock_client(handler, **options) -> RealtimeKitClient:
    options.setdefault("backoff_initial", 0.001)
    options.setdefault("backoff_max", 0.01)
    client = RealtimeKitClient(
        base_url="https://api.example.test/client/v4",
        account_id="acc",
        app_id="app",
        api_token="tok-SECRET-123",
        transport=httpx.MockTransport(handler),
        **options,
    )
    client.sleep = lambda seconds: None
    return client


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


# ---------------------------------------------------------------------------------------------
# The other endpoints
# ---------------------------------------------------------------------------------------------


def test_get_recording_and_not_found(sim, client):
    raw = next(r for r in sim.recordings if r["status"] == "UPLOADED")
    rec = client.get_recording(raw["id"])
    assert rec.id == raw["id"] and rec.file_size == raw["file_size"]
    assert rec.start_reason.reason == "API_CALL" and rec.start_reason.caller.user_Id
    with pytest.raises(ApiNotFound) as caught:
        client.get_recording("missing-id")
    assert caught.value.status_code == 404 and not caught.value.retryable
    assert "Recording not found" in str(caught.value)
    assert len([r for r in api_requests(sim) if r.path.endswith("missing-id")]) == 1


def test_start_pause_resume_stop_active_and_track(sim, client):
    meeting_id = "9f1e0a4c-0000-4000-8000-00000000beef"
    started = client.start_recording(meeting_id=meeting_id, audio_config={"export_file": True})
    assert started.status == "RECORDING" and started.download_url is None

    active = client.get_active_recording(meeting_id)
    assert active is not None and active.id == started.id
    assert client.pause_resume_stop(started.id, "pause").status == "PAUSED"
    assert client.pause_resume_stop(started.id, "resume").status == "RECORDING"
    stopped = client.pause_resume_stop(started.id, "stop")
    assert stopped.status == "UPLOADED" and stopped.file_size and stopped.download_url and stopped.audio_download_url
    assert stopped.stopped_time is not None and stopped.stop_reason.reason == "API_CALL"

    with pytest.raises(ApiNotFound):
        client.get_active_recording(meeting_id)
    with pytest.raises(ApiError) as caught:
        client.pause_resume_stop(started.id, "stop")
    assert caught.value.status_code == 400 and "cannot stop" in str(caught.value)
    with pytest.raises(ValueError):
        client.pause_resume_stop(started.id, "rewind")

    # The answer's shape is the official SDK's: {success, data: {recording: {...}}}.
    track = client.start_track_recording(meeting_id=meeting_id, layers={"default": {"media_kind": "audio"}})
    assert track.success is True and track.problems == [] and track.data.recording.status == "INVOKED"
    assert client.get_recording(track.data.recording.id).output_file_name == track.data.recording.output_file_name


def test_post_is_not_retried_on_a_server_error_but_is_on_429(sim, client):
    sim.faults.server_errors = 1
    with pytest.raises(ApiError) as caught:
        client.start_recording(meeting_id="m-post")
    assert caught.value.status_code == 500 and len(api_requests(sim)) == 1
    sim.faults.rate_limit = 1
    assert client.start_recording(meeting_id="m-post").status == "RECORDING"


# ---------------------------------------------------------------------------------------------
# Retries and errors, each fault switch seen through the client
# ---------------------------------------------------------------------------------------------


def test_429_retry_after_is_honoured(sim, client, caplog):
    sim.faults.set(rate_limit=2, retry_after=1)
    with caplog.at_level(logging.WARNING, logger=TOKEN_LOGGER):
        assert client.get_recording(sim.recordings[0]["id"]).id
    assert client.sleeps == [1.0, 1.0]
    retries = [r for r in caplog.records if r.name == TOKEN_LOGGER]
    assert len(retries) == 2
    line = retries[0].getMessage()
    assert "GET /accounts/" in line and "HTTP 429" in line and "retry 1 of 6" in line and "\n" not in line


def test_retry_after_as_http_date_and_cap():
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 30, timezone.utc), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30, abs=1)
    assert parse_retry_after("120", now) == 60.0
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after("soon", now) is None


def test_long_retry_after_is_capped_at_60_seconds(sim, client):
    sim.faults.set(rate_limit=1, retry_after=600)
    client.get_recording(sim.recordings[0]["id"])
    assert client.sleeps == [60.0]


def test_retry_budget_in_seconds_stops_early(sim):
    sim.faults.set(rate_limit=-1, retry_after=30)
    with make_client(sim, max_retry_seconds=10) as client:
        with pytest.raises(ApiError) as caught:
            client.get_recording(sim.recordings[0]["id"])
        assert client.sleeps == []  # waiting 30 s would exceed the 10 s budget
    assert caught.value.status_code == 429 and caught.value.retryable
    assert "gave up after 1 attempt" in str(caught.value)


def test_5xx_is_retried_then_given_up(sim):
    sim.faults.set(server_errors=-1, server_error_status=503)
    with make_client(sim, max_retries=3, backoff_initial=0.5, backoff_max=1.5) as client:
        with pytest.raises(ApiError) as caught:
            list(client.iter_recordings())
        waits = client.sleeps
    assert len(api_requests(sim)) == 4
    assert caught.value.status_code == 503 and caught.value.retryable
    assert "gave up after 4 attempts" in str(caught.value) and "An unknown error has occurred" in str(caught.value)
    assert len(waits) == 3 and all(0.375 <= w <= 1.5 for w in waits) and waits[0] < waits[2]


def test_5xx_then_success(sim, client):
    sim.faults.set(server_errors=2, server_error_status=500)
    assert len(list(client.iter_recordings())) == len(ids_with(sim, "UPLOADED"))
    assert len(client.sleeps) == 2


def test_409_and_408_are_retried():
    answers = iter([httpx.Response(409, json={}), httpx.Response(408, text=""), httpx.Response(200, json={"success": True, "data": {"id": "x"}})])
    with mock_client(lambda request: next(answers)) as client:
        assert client.get_recording("x").id == "x"


def test_gateway_html_page_becomes_a_clear_error(sim):
    sim.faults.set(server_errors=-1, server_error_status=502, server_error_html=True)
    with make_client(sim, max_retries=1) as client, pytest.raises(ApiError) as caught:
        client.get_recording(sim.recordings[0]["id"])
    message = str(caught.value)
    assert caught.value.status_code == 502 and "502 Bad Gateway" in message and "<" not in message
    assert len(message) < 400


def test_html_answer_on_200_becomes_a_clear_error(sim):
    sim.faults.html_answers = -1
    with make_client(sim, max_retries=1) as client, pytest.raises(ApiError) as caught:
        list(client.iter_recordings())
    message = str(caught.value)
    assert "not JSON" in message and "Checking your browser" in message
    assert "<" not in message and "_cf_chl_opt" not in message and len(message) < 400


def test_broken_json_is_retried_then_a_clear_error(sim):
    sim.faults.broken_json = 1
    with make_client(sim) as client:
        assert client.get_recording(sim.recordings[0]["id"]).id
    sim.faults.broken_json = -1
    with make_client(sim, max_retries=2) as client, pytest.raises(ApiError) as caught:
        client.get_recording(sim.recordings[0]["id"])
    assert "not JSON" in str(caught.value) and caught.value.status_code == 200


def test_success_false_on_200_is_an_error_without_retry(sim, client):
    sim.faults.unsuccessful = 1
    with pytest.raises(ApiError) as caught:
        list(client.iter_recordings())
    assert "success=false" in str(caught.value) and "Simulated failure" in str(caught.value) and "(code 500)" in str(caught.value)
    assert not caught.value.retryable and len(api_requests(sim)) == 1


def test_dropped_answer_is_retried(sim, client):
    sim.faults.drop_answers = 1
    assert client.get_recording(sim.recordings[0]["id"]).id
    assert len(api_requests(sim)) == 2


def test_timeout_is_retried(sim, caplog):
    sim.faults.set(slow_answers=1, slow_seconds=1.0)
    with make_client(sim, timeout=0.2) as client, caplog.at_level(logging.WARNING, logger=TOKEN_LOGGER):
        assert client.get_recording(sim.recordings[0]["id"]).id
    assert "timed out" in caplog.text


def test_connection_refused_is_retried_then_given_up():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = RealtimeKitClient(
        base_url=f"http://127.0.0.1:{port}/client/v4", account_id="a", app_id="b", api_token="t0ken-xyz",
        max_retries=2, backoff_initial=0.001, backoff_max=0.002,
    )  # fmt: skip
    with client, pytest.raises(ApiError) as caught:
        client.get_recording("r")
    assert caught.value.status_code is None and caught.value.retryable
    assert "cannot connect" in str(caught.value) and "3 attempts" in str(caught.value)


@pytest.mark.parametrize("fault", ["wrong_token", "forbidden"])
def test_auth_errors_fail_at_once(sim, fault):
    sim.faults.forbidden = 1 if fault == "forbidden" else 0
    token = "definitely-wrong-token" if fault == "wrong_token" else None
    with make_client(sim, token=token) as client, pytest.raises(ApiAuthError) as caught:
        list(client.iter_recordings())
    assert len(api_requests(sim)) == 1 and client.sleeps == []
    message = str(caught.value)
    assert caught.value.status_code == (401 if fault == "wrong_token" else 403) and not caught.value.retryable
    assert "Realtime" in message and "Realtime Admin" in message and "Authentication error" in message
    assert "definitely-wrong-token" not in message and sim.token not in message


def test_the_token_never_appears_in_errors_logs_or_reprs(sim, caplog):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log at DEBUG too
    failures: list[str] = []
    scenarios = [
        {"rate_limit": 1},
        {"server_errors": -1},
        {"html_answers": -1},
        {"unsuccessful": 1},
        {"forbidden": 1},
        {"broken_json": -1},
    ]
    with make_client(sim, max_retries=1) as client:
        for faults in scenarios:
            sim.faults.reset()
            sim.faults.set(**faults)
            try:
                list(client.iter_recordings())
                client.get_recording("missing")
            except ApiError as exc:
                failures.append(f"{exc} {exc!r} {exc.args}")
        assert sim.token not in repr(client)
    assert len(failures) == len(scenarios)
    everything = caplog.text + " ".join(failures) + " ".join(r.getMessage() for r in caplog.records)
    assert sim.token not in everything


def test_a_server_echoing_the_token_is_scrubbed():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"success": False, "errors": [{"code": 1, "message": "bad token tok-SECRET-123"}]})

    with mock_client(handler) as client, pytest.raises(ApiError) as caught:
        client.get_recording("x")
    assert "tok-SECRET-123" not in str(caught.value) and "[redacted]" in str(caught.value)


def test_realtimekit_error_envelope_and_non_object_answers():
    answers = iter(
        [
            httpx.Response(422, json={"success": False, "error": {"code": 422, "message": "meeting_id is invalid"}}),
            httpx.Response(200, json=["not", "an", "object"]),
            httpx.Response(200, json={"success": True, "data": {"no": "id"}}),
        ]
    )
    with mock_client(lambda request: next(answers), max_retries=0) as client:
        with pytest.raises(ApiError, match=r"HTTP 422: meeting_id is invalid \(code 422\)"):
            client.get_recording("x")
        with pytest.raises(ApiError, match="not JSON"):
            client.get_recording("x")
        with pytest.raises(ApiError, match="has no id"):
            client.get_recording("x")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected", "has_problem"),
    [
        (2044680, 2044680, False),
        ("2044680", 2044680, False),
        (" 2044680 ", 2044680, False),
        (123.0, 123, False),
        ("123.0", 123, False),
        (0, 0, False),
        (None, None, False),
        (-1, None, True),
        ("-5", None, True),
        (12.5, None, True),
        ("12 MB", None, True),
        (True, None, True),
        (float("nan"), None, True),
        ([1], None, True),
    ],
)
def test_file_size_parsing(raw, expected, has_problem):
    rec = Recording.model_validate({"id": "r", "status": "UPLOADED", "file_size": raw})
    assert rec.file_size == expected
    assert bool(rec.problems) == has_problem
    if has_problem:
        assert rec.problems[0].startswith("file_size:")


def test_timestamps_malformed_become_none_with_a_problem():
    rec = Recording.model_validate(
        {
            "id": "r",
            "status": "UPLOADED",
            "invoked_time": "2019-12-27T18:11:19.117Z",
            "started_time": "2019-12-27T20:11:19+02:00",
            "stopped_time": "yesterday",
            "download_url_expiry": "2019-13-45T99:00:00Z",
            "meeting": {"id": "m", "created_at": 12, "updated_at": "nope"},
        }
    )
    assert rec.invoked_time == datetime(2019, 12, 27, 18, 11, 19, 117000, tzinfo=timezone.utc)
    assert rec.started_time == datetime(2019, 12, 27, 18, 11, 19, tzinfo=timezone.utc)
    assert rec.started_time.tzinfo == timezone.utc
    assert rec.stopped_time is None and rec.download_url_expiry is None and rec.meeting.updated_at is None
    assert any(p.startswith("stopped_time: malformed timestamp 'yesterday'") for p in rec.problems)
    assert any(p.startswith("download_url_expiry:") for p in rec.problems)
    assert any(p.startswith("meeting.updated_at:") for p in rec.problems)
    dumped = rec.model_dump(mode="json")
    assert "problems" not in dumped and "problems" not in dumped["meeting"]


def test_malformed_values_through_http(sim, client):
    raw = sim.add_recording(status="UPLOADED", size=2044680, file_size="2044680", stopped_time="soon-ish", surprise=[1, 2])
    rec = client.get_recording(raw["id"])
    assert rec.file_size == 2044680 and rec.stopped_time is None
    assert rec.problems and "stopped_time" in rec.problems[0]
    assert rec.model_extra["surprise"] == [1, 2]


def test_unknown_status_extra_fields_and_nulls_are_kept():
    rec = Recording.model_validate(
        {
            "id": "r",
            "status": "ARCHIVED_SOMEWHERE",
            "brand_new_field": {"a": 1},
            "meeting": None,
            "download_url": None,
            "recording_duration": "61",
            "start_reason": {"caller": {"user_id": "u-1", "type": "USER"}, "reason": "RECORD_ON_START"},
            "storage_config": "not an object",
        }
    )
    assert rec.status == "ARCHIVED_SOMEWHERE" and rec.brand_new_field == {"a": 1}
    assert rec.meeting is None and rec.meeting_id is None and rec.recording_duration == 61
    assert rec.start_reason.caller.user_Id == "u-1"
    assert rec.storage_config is None and rec.problems == ["storage_config: expected an object, got 'not an object'"]
    assert Recording.model_validate({"id": "r"}).problems == ["status: missing"]


def test_storage_config_secrets_stay_out_of_repr_and_dumps():
    config = {
        "type": "sftp", "host": "h", "username": "u", "password": "pw-123", "private_key": "KEY-456",
        "access_key": "AK-789", "secret_key": "SK-000", "bucket": "b", "mystery_credential": "MC-111",
    }  # fmt: skip
    rec = Recording.model_validate({"id": "r", "status": "UPLOADED", "storage_config": config, "download_url": "https://cdn.example/f.mp4?X-Signature=SIG-222"})
    assert rec.storage_config.secret == "SK-000" and rec.storage_config.password == "pw-123"
    shown = repr(rec) + str(rec) + repr(rec.storage_config) + json.dumps(rec.model_dump(mode="json"))
    for secret in ("pw-123", "KEY-456", "AK-789", "SK-000", "MC-111"):
        assert secret not in shown
    assert "SIG-222" not in repr(rec) and "https://cdn.example/f.mp4" in repr(rec)
    assert isinstance(rec.storage_config, StorageConfig) and rec.storage_config.type == "sftp"


def test_redact_url():
    assert redact_url("https://bucket.example/a/b.mp4?X-Amz-Signature=abc&X-Amz-Expires=1#frag") == "https://bucket.example/a/b.mp4"
    assert redact_url("https://user:pass@host.example:8443/x?y=1") == "https://host.example:8443/x"
    assert redact_url("http://[::1]:8080/f?s=1") == "http://[::1]:8080/f"
    assert redact_url("") == ""
    assert redact_url("http://bad:port/x?sig=1") == "http://bad:port/x"


def test_loading_the_config_or_the_models_imports_no_http_library():
    """Issue 10: the config reads DEFAULT_BASE_URL and RETENTION from pipeline.realtimekit, and
    start-up must stay fast for `status`: neither the package face, its models nor the config
    may import httpx or tenacity (only the client does, when first used)."""
    code = ("import sys, pipeline.config, pipeline.realtimekit.models\n"
            "from pipeline.realtimekit import DEFAULT_BASE_URL, RETENTION, ApiError, Recording\n"
            "print(sorted(m for m in ('httpx', 'tenacity') if m in sys.modules))\n"
            "from pipeline.realtimekit import RealtimeKitClient\n"
            "print(sorted(m for m in ('httpx', 'tenacity') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=pipeline.__path__[0] + "/..")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "['httpx', 'tenacity']"]


def test_client_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        RealtimeKitClient(base_url="http://x", account_id="a", app_id="b", api_token="")
    with pytest.raises(ValueError):
        RealtimeKitClient(base_url="http://x", account_id="a", app_id="b", api_token="t", per_page=0)


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
