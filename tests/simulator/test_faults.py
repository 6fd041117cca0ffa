"""The simulator's API fault switches seen raw, its control endpoints, constructor faults and
request log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from pipeline.simulator import Simulator
from tests.simulator.helpers import list_all, rec_url, uploaded, web


def test_api_faults_seen_raw(sim, http):
    sim.faults.set(rate_limit=1, retry_after=3)
    limited = http.get(rec_url(sim))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3" and limited.json()["errors"]

    sim.faults.set(server_errors=1, server_error_status=502, server_error_html=True)
    gateway = http.get(rec_url(sim))
    assert gateway.status_code == 502 and "<h1>502 Bad Gateway</h1>" in gateway.text

    sim.faults.set(html_answers=1)
    page = http.get(rec_url(sim))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")

    sim.faults.set(broken_json=1)
    broken = http.get(rec_url(sim))
    assert broken.status_code == 200 and broken.text.startswith('{"data"')
    with pytest.raises(ValueError):
        broken.json()

    sim.faults.set(unsuccessful=1)
    failed = http.get(rec_url(sim))
    assert failed.status_code == 200 and failed.json()["success"] is False and failed.json()["error"]["message"]

    sim.faults.set(forbidden=1)
    assert http.get(rec_url(sim)).status_code == 403

    sim.faults.set(drop_answers=1)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(rec_url(sim))

    assert http.get(rec_url(sim)).status_code == 200  # every count used up


def test_forever_count_and_reset(sim, http):
    sim.faults.server_errors = -1
    assert [http.get(rec_url(sim)).status_code for _ in range(3)] == [500, 500, 500]
    sim.faults.reset()
    assert http.get(rec_url(sim)).status_code == 200


def test_slow_answers_fault(sim):
    sim.faults.set(slow_answers=1, slow_seconds=1.0)
    with httpx.Client(headers={"Authorization": f"Bearer {sim.token}"}, timeout=0.2) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.get(rec_url(sim))
        assert impatient.get(rec_url(sim)).status_code == 200


def test_faults_over_http_and_state(sim, http):
    answer = web.post(f"{sim.origin}/__sim__/faults", json={"rate_limit": 2, "retry_after": 5})
    assert answer.status_code == 200 and answer.json()["faults"]["rate_limit"] == 2
    assert sim.faults.rate_limit == 2
    assert http.get(rec_url(sim)).status_code == 429
    state = web.get(f"{sim.origin}/__sim__/state").json()["state"]
    assert state["faults"]["rate_limit"] == 1 and state["recordings"] == 20
    assert web.post(f"{sim.origin}/__sim__/faults", json={"reset": True}).json()["faults"]["rate_limit"] == 0
    assert web.post(f"{sim.origin}/__sim__/faults", json={"no_such_fault": 1}).status_code == 400

    added = web.post(f"{sim.origin}/__sim__/recordings", json={"status": "UPLOADED", "size": 1234}).json()["data"]
    assert sim.recording(added["id"])["file_size"] == 1234
    web.post(f"{sim.origin}/__sim__/advance", json={"seconds": 3600})
    assert sim.now() > datetime.now(timezone.utc) + timedelta(minutes=59)


def test_faults_as_constructor_kwargs():
    with Simulator(recordings=1, rate_limit=1, retry_after=None) as sim:
        answer = web.get(rec_url(sim), headers={"Authorization": f"Bearer {sim.token}"})
        assert answer.status_code == 429 and "retry-after" not in answer.headers
    with pytest.raises(TypeError):
        Simulator(recordings=1, no_such_fault=1)


def test_request_log_has_ranges_and_never_the_token(sim, http):
    item = uploaded(sim)
    web.get(item["download_url"], headers={"Range": "bytes=5-"})
    list_all(http, sim, status=["UPLOADED", "ERRORED"], page_no=2)
    api = [r for r in sim.requests if r.kind == "api" and r.query.get("page_no") == ["2"]][-1]
    assert api.method == "GET" and api.query["status"] == ["UPLOADED", "ERRORED"] and api.status == 200
    assert [r for r in sim.requests if r.kind == "file"][-1].range == "bytes=5-"
    assert sim.token not in repr(sim.requests)
