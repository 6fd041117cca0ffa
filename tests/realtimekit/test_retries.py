"""The API client's retries and errors, each simulator fault switch seen through the client:
what is retried and how long it waits, and one clear line (without the token) when it gives up."""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest

from pipeline.realtimekit import ApiAuthError, ApiError, RealtimeKitClient
from pipeline.realtimekit.answers import parse_retry_after
from tests.realtimekit.helpers import TOKEN_LOGGER, api_requests, ids_with, make_client, mock_client


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
