"""The simulator over real HTTP on 127.0.0.1: shapes as in the API reference, filters, paging,
presigned files (Range, expiry, HEAD) and every fault switch, seen from a plain HTTP client."""

from __future__ import annotations

import hashlib
from http.client import HTTPConnection
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pipeline.simulator import SHAPES, SimulateError, Simulator, serve

REPO = Path(__file__).resolve().parents[1]

# Key sets copied from the API reference's examples.
LIST_ITEM_KEYS = [
    "id", "audio_download_url", "download_url", "download_url_expiry", "file_size", "invoked_time",
    "output_file_name", "session_id", "started_time", "status", "stopped_time", "meeting",
    "recording_duration", "storage_config",
]  # fmt: skip
DETAIL_KEYS = [
    "id", "audio_download_url", "download_url", "download_url_expiry", "file_size", "invoked_time",
    "output_file_name", "session_id", "started_time", "status", "stopped_time", "recording_duration",
    "start_reason", "stop_reason", "storage_config",
]  # fmt: skip
ACTIVE_KEYS = DETAIL_KEYS[:12]
MEETING_KEYS = [
    "id", "created_at", "updated_at", "live_stream_on_start", "persist_chat", "record_on_start",
    "session_keep_alive_time_in_secs", "status", "summarize_on_end", "title",
]  # fmt: skip
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# One client without credentials for file URLs and control endpoints (building a client per call
# costs tens of milliseconds in TLS setup, even for plain HTTP).
web = httpx.Client(timeout=30, trust_env=False)


@pytest.fixture(scope="module", autouse=True)
def _close_web_client():
    yield
    web.close()


@pytest.fixture
def sim():
    with Simulator(recordings=20, seed=7) as simulator:
        yield simulator


@pytest.fixture
def http(sim):
    with httpx.Client(headers={"Authorization": f"Bearer {sim.token}"}, timeout=10, trust_env=False) as client:
        yield client


def rec_url(sim: Simulator, suffix: str = "") -> str:
    return f"{sim.base_url}/accounts/{sim.account_id}/realtime/kit/{sim.app_id}/recordings{suffix}"


def list_all(http: httpx.Client, sim: Simulator, **params) -> dict:
    params.setdefault("per_page", 100)
    response = http.get(rec_url(sim), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def fresh_items(sim: Simulator, count: int = 1) -> list[dict]:
    """get-one answers of UPLOADED recordings whose URLs work (bucket enabled, not expired)."""
    found = []
    for raw in sim.recordings:
        if raw["status"] != "UPLOADED":
            continue
        answer = sim_detail(sim, raw["id"])
        expiry = answer["download_url_expiry"]
        if answer["download_url"] and datetime.fromisoformat(expiry) > sim.now():
            found.append(answer)
            if len(found) == count:
                return found
    raise AssertionError("not enough downloadable recordings")


def uploaded(sim: Simulator) -> dict:
    return fresh_items(sim, 1)[0]


def sim_detail(sim: Simulator, recording_id: str) -> dict:
    answer = web.get(rec_url(sim, f"/{recording_id}"), headers={"Authorization": f"Bearer {sim.token}"})
    return answer.json()["data"]


# ---------------------------------------------------------------------------------------------
# Shapes and envelopes
# ---------------------------------------------------------------------------------------------


def test_list_answer_has_the_documented_shape(sim, http):
    body = list_all(http, sim)
    assert list(body) == ["data", "paging", "success"]
    assert body["success"] is True
    assert list(body["paging"]) == ["end_offset", "start_offset", "total_count"]
    assert body["paging"] == {"total_count": 20, "start_offset": 1, "end_offset": 20}
    for item in body["data"]:
        assert list(item) == LIST_ITEM_KEYS
        assert list(item["meeting"]) == MEETING_KEYS
        assert ISO_MS_Z.match(item["invoked_time"])
        assert item["file_size"] is None or isinstance(item["file_size"], int)
    assert SHAPES["list"] == tuple(LIST_ITEM_KEYS)


def test_get_one_answer_has_the_documented_shape(sim, http):
    raw = next(r for r in sim.recordings if r["status"] == "UPLOADED")
    body = http.get(rec_url(sim, f"/{raw['id']}")).json()
    assert list(body) == ["success", "data"]
    assert list(body["data"]) == DETAIL_KEYS
    reason = body["data"]["start_reason"]
    assert set(reason) == {"caller", "reason"} and set(reason["caller"]) == {"name", "type", "user_Id"}
    assert body["data"]["stop_reason"]["reason"] in ("API_CALL", "INTERNAL_ERROR", "ALL_PEERS_LEFT")


def test_start_pause_resume_stop_and_active(sim, http):
    meeting_id = next(iter(sim.meetings))
    # Meetings of the generated data may already have a running recording.
    started = http.post(rec_url(sim), json={"meeting_id": meeting_id, "allow_multiple_recordings": True}).json()
    assert list(started) == ["success", "data"] and list(started["data"]) == DETAIL_KEYS
    rid = started["data"]["id"]
    assert started["data"]["status"] == "RECORDING" and started["data"]["download_url"] is None

    active = http.get(rec_url(sim, f"/active-recording/{meeting_id}")).json()
    assert list(active) == ["data", "success"] and list(active["data"]) == ACTIVE_KEYS

    assert http.put(rec_url(sim, f"/{rid}"), json={"action": "pause"}).json()["data"]["status"] == "PAUSED"
    assert http.put(rec_url(sim, f"/{rid}"), json={"action": "resume"}).json()["data"]["status"] == "RECORDING"
    stopped = http.put(rec_url(sim, f"/{rid}"), json={"action": "stop"}).json()["data"]
    assert stopped["status"] == "UPLOADED" and stopped["file_size"] > 0
    assert ISO_MS_Z.match(stopped["stopped_time"]) and stopped["download_url"]
    assert stopped["audio_download_url"] is None and stopped["stop_reason"]["reason"] == "API_CALL"
    assert hashlib.sha256(http.get(stopped["download_url"]).content).hexdigest() == sim.expected_sha256(rid)

    again = http.put(rec_url(sim, f"/{rid}"), json={"action": "stop"})
    assert again.status_code == 400 and set(again.json()) == {"success", "error"}


def test_start_honours_bucket_and_audio_config(sim, http):
    meeting_id = next(iter(sim.meetings))
    no_bucket = http.post(
        rec_url(sim),
        json={
            "meeting_id": meeting_id,
            "allow_multiple_recordings": True,
            "realtimekit_bucket_config": {"enabled": False},
            "storage_config": {"type": "aws", "bucket": "b", "access_key": "AK", "secret": "SK"},
        },
    ).json()["data"]
    assert no_bucket["storage_config"] == {"type": "aws", "bucket": "b"}  # write-only keys never read back
    stopped = http.put(rec_url(sim, f"/{no_bucket['id']}"), json={"action": "stop"}).json()["data"]
    assert stopped["status"] == "UPLOADED"
    assert (stopped["download_url"], stopped["audio_download_url"], stopped["download_url_expiry"]) == (None, None, None)

    with_audio = http.post(
        rec_url(sim),
        json={"meeting_id": meeting_id, "allow_multiple_recordings": True, "audio_config": {"export_file": True}},
    ).json()["data"]
    stopped = http.put(rec_url(sim, f"/{with_audio['id']}"), json={"action": "stop"}).json()["data"]
    audio = http.get(stopped["audio_download_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
    assert hashlib.sha256(audio.content).hexdigest() == sim.expected_sha256(with_audio["id"], "audio")


def test_second_recording_of_a_meeting_is_refused_without_allow_multiple(sim, http):
    meeting_id = "5d5e3c8e-0000-4000-8000-000000000001"
    assert http.post(rec_url(sim), json={"meeting_id": meeting_id}).status_code == 200
    second = http.post(rec_url(sim), json={"meeting_id": meeting_id})
    assert second.status_code == 409 and second.json()["success"] is False


def test_track_recording(sim, http):
    """The track endpoint as the current API reference and the official SDK have it: meeting_id
    required, layers and user_ids optional; the answer is {success, data: {recording: {...}}}
    with an active recording's keys, and that recording is a real one (get one finds it)."""
    body = {"meeting_id": "m-1", "layers": {"default": {"file_name_prefix": "desk", "media_kind": "audio"}}}
    answer = http.post(rec_url(sim, "/track"), json=body).json()
    assert list(answer) == ["success", "data"] and list(answer["data"]) == ["recording"]
    recording = answer["data"]["recording"]
    assert list(recording) == ACTIVE_KEYS and recording["status"] == "INVOKED"
    assert recording["output_file_name"].startswith("desk_") and ISO_MS_Z.match(recording["invoked_time"])
    assert http.get(rec_url(sim, f"/{recording['id']}")).json()["data"]["id"] == recording["id"]
    assert sim.track_recordings[-1] == {"id": recording["id"], "meeting_id": "m-1", "layers": ["default"],
                                        "user_ids": None, "invoked_time": recording["invoked_time"]}

    no_layers = http.post(rec_url(sim, "/track"), json={"meeting_id": "m-2", "user_ids": ["u-1", "u-2"]})
    assert no_layers.status_code == 200 and no_layers.json()["data"]["recording"]["status"] == "INVOKED"
    for bad_body in ({"layers": {"default": {}}}, {"meeting_id": "m-3", "layers": ["default"]},
                     {"meeting_id": "m-3", "user_ids": [f"u-{n}" for n in range(101)]}):
        bad = http.post(rec_url(sim, "/track"), json=bad_body)
        assert bad.status_code == 400 and bad.json()["error"]["message"], bad_body


def test_errors_use_the_documented_envelopes(sim, http):
    missing = http.get(rec_url(sim, "/no-such-recording"))
    assert missing.status_code == 404
    assert missing.json() == {"success": False, "error": {"code": 404, "message": "Recording not found"}}

    unknown = http.get(sim.base_url + "/nothing/here")
    assert unknown.status_code == 404 and unknown.json()["success"] is False and unknown.json()["errors"]

    wrong_app = http.get(f"{sim.base_url}/accounts/{sim.account_id}/realtime/kit/other-app/recordings")
    assert wrong_app.status_code == 404

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": sim.token}):
        denied = web.get(rec_url(sim), headers=headers)
        assert denied.status_code == 401
        assert denied.json() == {
            "success": False,
            "errors": [{"code": 10000, "message": "Authentication error"}],
            "messages": [],
            "result": None,
        }


def test_bad_query_values_are_400(sim, http):
    for params in ({"status": "BOGUS"}, {"sort_order": "UP"}, {"sort_by": "size"}, {"expired": "maybe"},
                   {"start_time": "yesterday"}, {"page_no": "x"}):  # fmt: skip
        answer = http.get(rec_url(sim), params=params)
        assert answer.status_code == 400, params
        assert answer.json()["success"] is False and answer.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Filters and paging
# ---------------------------------------------------------------------------------------------


def test_status_filter_repeated_and_comma_joined(sim, http):
    expected = {r["id"] for r in sim.recordings if r["status"] in ("UPLOADED", "ERRORED")}
    repeated = list_all(http, sim, status=["UPLOADED", "ERRORED"])
    joined = list_all(http, sim, status="UPLOADED,ERRORED")
    assert {r["id"] for r in repeated["data"]} == expected == {r["id"] for r in joined["data"]}
    assert repeated["paging"]["total_count"] == len(expected)


def test_meeting_search_and_time_filters(sim, http):
    meeting = sim.recordings[0]["meeting"]
    by_meeting = list_all(http, sim, meeting_id=meeting["id"])["data"]
    assert by_meeting and all(r["meeting"]["id"] == meeting["id"] for r in by_meeting)

    by_title = list_all(http, sim, search=meeting["title"].upper()[:6])["data"]
    assert {r["meeting"]["title"].lower()[:6] for r in by_title} == {meeting["title"].lower()[:6]}
    assert {r["id"] for r in list_all(http, sim, search=meeting["id"][:8])["data"]} == {r["id"] for r in by_meeting}

    times = sorted(datetime.fromisoformat(r["invoked_time"]) for r in sim.recordings)
    start, end = times[5], times[12]
    window = list_all(http, sim, start_time=start.isoformat(), end_time=end.isoformat().replace("+00:00", "Z"))
    assert len(window["data"]) == 8
    assert all(start <= datetime.fromisoformat(r["invoked_time"]) <= end for r in window["data"])


def test_expired_filter_and_sort_order(sim, http):
    expired = list_all(http, sim, expired="true")["data"]
    fresh = list_all(http, sim, expired="false")["data"]
    assert expired and fresh and len(expired) + len(fresh) == 20
    now = datetime.now(timezone.utc)
    for item in expired:
        assert datetime.fromisoformat(item["stopped_time"]) + timedelta(days=7) < now

    asc = [r["invoked_time"] for r in list_all(http, sim, sort_by="invokedTime", sort_order="ASC")["data"]]
    desc = [r["invoked_time"] for r in list_all(http, sim, sort_order="DESC")["data"]]
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True)


def test_paging_offsets_and_an_empty_page_past_the_end(sim, http):
    pages = [list_all(http, sim, per_page=6, page_no=n, sort_order="ASC") for n in (1, 2, 3, 4, 5)]
    assert [p["paging"] for p in pages[:4]] == [
        {"total_count": 20, "start_offset": 1, "end_offset": 6},
        {"total_count": 20, "start_offset": 7, "end_offset": 12},
        {"total_count": 20, "start_offset": 13, "end_offset": 18},
        {"total_count": 20, "start_offset": 19, "end_offset": 20},
    ]
    assert pages[4]["data"] == [] and pages[4]["success"] is True
    ids = [r["id"] for p in pages for r in p["data"]]
    assert len(ids) == len(set(ids)) == 20


def test_pages_from_zero_fault_answers_page_one_with_the_second_page(sim, http):
    sim.faults.pages_from_zero = True
    first = list_all(http, sim, per_page=6, page_no=1, sort_order="ASC")
    assert first["paging"] == {"total_count": 20, "start_offset": 7, "end_offset": 12}
    assert [r.faults for r in sim.requests if r.kind == "api"][-1] == ["pages_from_zero"]


def test_per_page_is_capped_by_the_server():
    with Simulator(recordings=9, max_per_page=4) as sim, httpx.Client(headers={"Authorization": f"Bearer {sim.token}"}) as http:
        body = list_all(http, sim, per_page=50)
        assert len(body["data"]) == 4 and body["paging"]["total_count"] == 9


# ---------------------------------------------------------------------------------------------
# Generated data
# ---------------------------------------------------------------------------------------------


def test_generated_data_is_mixed_and_deterministic():
    with Simulator(recordings=40, seed=3) as a, Simulator(recordings=40, seed=3) as b, Simulator(recordings=40, seed=4) as c:
        statuses = [r["status"] for r in a.recordings]
        assert set(statuses) == {"UPLOADED", "UPLOADING", "ERRORED", "RECORDING", "INVOKED", "PAUSED"}
        assert statuses.count("UPLOADED") >= 28
        assert [r["id"] for r in a.recordings] == [r["id"] for r in b.recordings]
        assert [r["file_size"] for r in a.recordings] == [r["file_size"] for r in b.recordings]
        assert [r["id"] for r in a.recordings] != [r["id"] for r in c.recordings]
        assert (a.account_id, a.app_id, a.token) == (b.account_id, b.app_id, b.token) != (c.account_id, c.app_id, c.token)

        done = [r for r in a.recordings if r["status"] == "UPLOADED"]
        assert all(64 * 1024 <= r["file_size"] <= 4 * 1024 * 1024 for r in done)
        audio = [r for r in done if a.file_size(r["id"], "audio")]
        assert len(done) // 4 <= len(audio) <= len(done) // 2
        assert all(re.fullmatch(r"[a-z0-9-]+_\d{8}T\d{6}Z\.mp4", r["output_file_name"]) for r in done)
        assert len({r["meeting"]["id"] for r in a.recordings}) >= 3
        assert all(r["file_size"] in (0, None) for r in a.recordings if r["status"] == "UPLOADING")

        with httpx.Client(headers={"Authorization": f"Bearer {a.token}"}) as http:
            items = list_all(http, a, status="UPLOADED")["data"]
        no_bucket = [i for i in items if i["download_url"] is None]
        assert no_bucket and all(i["download_url_expiry"] is None and i["storage_config"] for i in no_bucket)
        now = datetime.now(timezone.utc)
        past = [i for i in items if datetime.fromisoformat(i["stopped_time"]) + timedelta(days=7) < now]
        assert 0 < len(past) < len(items)


def test_custom_sizes_and_a_2gib_recording(sim):
    raw = sim.add_recording(size=2 * 1024**3)
    assert raw["file_size"] == 2 * 1024**3
    url = sim_detail(sim, raw["id"])["download_url"]
    head = web.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == 2 * 1024**3
    tail = web.get(url, headers={"Range": "bytes=-1024"})
    assert tail.status_code == 206 and tail.headers["content-range"] == f"bytes {2 * 1024**3 - 1024}-{2 * 1024**3 - 1}/{2 * 1024**3}"
    assert tail.content == sim.file_bytes(raw["id"], "video", 2 * 1024**3 - 1024)

    with Simulator(recordings=10, min_size=1000, max_size=2000) as small:
        assert all(1000 <= r["file_size"] <= 2000 for r in small.recordings if r["status"] == "UPLOADED")


def test_file_pattern_does_not_repeat_at_power_of_two_offsets(sim):
    rid = sim.add_recording(size=3 * 1024 * 1024)["id"]
    assert sim.file_bytes(rid, "video", 0, 4096) != sim.file_bytes(rid, "video", 1 << 20, (1 << 20) + 4096)
    other = sim.add_recording(size=4096)["id"]
    assert sim.file_bytes(rid, "video", 0, 4096) != sim.file_bytes(other, "video")


# ---------------------------------------------------------------------------------------------
# Presigned files
# ---------------------------------------------------------------------------------------------


def test_file_download_head_and_ranges(sim):
    item = uploaded(sim)
    rid, size, url = item["id"], item["file_size"], item["download_url"]
    full = web.get(url)
    assert full.status_code == 200 and int(full.headers["content-length"]) == size == len(full.content)
    assert hashlib.sha256(full.content).hexdigest() == sim.expected_sha256(rid)
    assert full.content == sim.file_bytes(rid)

    head = web.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(size) and head.content == b""
    assert head.headers["accept-ranges"] == "bytes"

    part = web.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.content == full.content[100:200] and part.headers["content-length"] == "100"
    rest = web.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert rest.status_code == 206 and rest.content == full.content[-10:]
    clipped = web.get(url, headers={"Range": f"bytes={size - 5}-{size + 100}"})
    assert clipped.status_code == 206 and clipped.content == full.content[-5:]

    beyond = web.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"


def test_keep_alive_serves_several_requests_on_one_connection(sim):
    item = uploaded(sim)
    parts = urlsplit(item["download_url"])
    conn = HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", f"{parts.path}?{parts.query}", headers={"Range": "bytes=0-9"})
            answer = conn.getresponse()
            assert answer.version == 11 and answer.status == 206 and len(answer.read()) == 10
    finally:
        conn.close()
    # The same socket served all three: one connection seen by the server's log is not
    # observable directly, but a closed connection would have raised on the 2nd request.


def test_bad_signature_missing_params_and_unknown_file(sim):
    url = uploaded(sim)["download_url"]
    tampered = re.sub(r"X-Signature=[0-9a-f]{4}", "X-Signature=0000", url)
    answer = web.get(tampered)
    assert answer.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in answer.text
    assert web.get(url.split("?")[0]).status_code == 403
    other_kind = url.replace("/video?", "/audio?")
    assert web.get(other_kind).status_code == 403  # a signature is for one file only
    assert sim.has_file(item_id := urlsplit(url).path.split("/")[2]) and sim.retention_end(item_id) > sim.now()
    gone = sim.add_recording(size=100)
    gone_url = sim.download_url(gone["id"])
    sim.remove_recording(gone["id"])
    assert web.get(gone_url).status_code == 404 and "<Code>NoSuchKey</Code>" in web.get(gone_url).text


def test_urls_really_expire_and_never_outlive_retention(sim):
    item = uploaded(sim)
    expires = int(parse_qs(urlsplit(item["download_url"]).query)["X-Expires"][0])
    assert item["download_url_expiry"] == datetime.fromtimestamp(expires, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert abs(expires - (time.time() + 3600)) < 5

    sim.advance(3601)
    answer = web.get(item["download_url"])
    assert answer.status_code == 403
    assert "<Code>AccessDenied</Code>" in answer.text and "<Message>Request has expired</Message>" in answer.text
    assert answer.headers["content-type"] == "application/xml"

    # Stopped 7 days minus 10 minutes ago: the URL lives 10 minutes, not an hour.
    stopped = datetime.now(timezone.utc) - timedelta(days=7) + timedelta(minutes=10) + timedelta(seconds=3601)
    near = sim.add_recording(stopped_time=stopped)
    detail = sim_detail(sim, near["id"])
    deadline = datetime.fromisoformat(near["stopped_time"]) + timedelta(days=7)
    assert datetime.fromisoformat(detail["download_url_expiry"]) == deadline.replace(microsecond=0)


def test_expired_recordings_have_dead_urls(sim, http):
    expired = list_all(http, sim, expired="true", status="UPLOADED")["data"]
    with_url = [i for i in expired if i["download_url"]]
    assert with_url
    for item in with_url:
        assert datetime.fromisoformat(item["download_url_expiry"]) < datetime.now(timezone.utc)
        assert web.get(item["download_url"]).status_code == 403


# ---------------------------------------------------------------------------------------------
# Fault switches
# ---------------------------------------------------------------------------------------------


def test_expired_list_urls_fault_but_get_one_re_signs(sim, http):
    sim.faults.expired_list_urls = 1
    item = next(i for i in list_all(http, sim, status="UPLOADED", expired="false")["data"] if i["download_url"])
    assert web.get(item["download_url"]).status_code == 403
    fresh = http.get(rec_url(sim, f"/{item['id']}")).json()["data"]
    assert web.get(fresh["download_url"]).status_code == 200
    again = next(i for i in list_all(http, sim, status="UPLOADED", expired="false")["data"] if i["id"] == item["id"])
    assert web.get(again["download_url"]).status_code == 200  # the count was 1


def test_short_url_lifetime_fault(sim):
    sim.faults.url_lifetime = 30
    item = uploaded(sim)
    expiry = datetime.fromisoformat(item["download_url_expiry"])
    assert expiry - datetime.now(timezone.utc) < timedelta(seconds=32)
    assert web.get(item["download_url"], headers={"Range": "bytes=0-0"}).status_code == 206
    sim.advance(31)  # e.g. while a download was paused half-way
    assert web.get(item["download_url"], headers={"Range": "bytes=1-"}).status_code == 403


def test_drop_download_after_k_bytes(sim):
    item = uploaded(sim)
    sim.faults.set(drop_downloads=1, drop_after_bytes=10_000)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with web.stream("GET", item["download_url"]) as answer:
            assert answer.headers["content-length"] == str(item["file_size"])
            for chunk in answer.iter_raw():
                received += chunk
    assert len(received) == 10_000 and bytes(received) == sim.file_bytes(item["id"], "video", 0, 10_000)
    resumed = web.get(item["download_url"], headers={"Range": f"bytes={len(received)}-"})
    assert resumed.status_code == 206 and bytes(received) + resumed.content == sim.file_bytes(item["id"])
    log = [r for r in sim.requests if r.kind == "file"]
    assert log[-1].range == f"bytes={len(received)}-" and log[-2].range is None


def test_size_mismatch_fault(sim):
    longer, shorter = fresh_items(sim, 2)
    sim.faults.size_mismatch = {longer["id"]: 17, shorter["id"]: -100}
    body = web.get(longer["download_url"]).content
    assert len(body) == longer["file_size"] + 17
    assert len(web.get(shorter["download_url"]).content) == shorter["file_size"] - 100
    assert sim.expected_sha256(longer["id"]) == hashlib.sha256(body[: longer["file_size"]]).hexdigest()


def test_ignore_range_fault(sim):
    item = uploaded(sim)
    sim.faults.ignore_range = True
    answer = web.get(item["download_url"], headers={"Range": "bytes=10-19"})
    assert answer.status_code == 200 and len(answer.content) == item["file_size"]


def test_throttled_download_is_still_correct(sim):
    raw = sim.add_recording(size=50_000)
    sim.faults.throttle_bps = 2_000_000
    url = sim_detail(sim, raw["id"])["download_url"]
    assert web.get(url).content == sim.file_bytes(raw["id"])


def test_file_server_errors_fault(sim):
    item = uploaded(sim)
    sim.faults.file_server_errors = 1
    assert web.get(item["download_url"]).status_code == 503
    assert web.get(item["download_url"]).status_code == 200


def test_files_carry_validators_and_honour_if_range(sim):
    """ETag and Last-Modified as S3/R2 send them; If-Range keeps a Range only while the file is
    the one it names (a strong ETag or the exact date), else the whole file comes back (200)."""
    item = uploaded(sim)
    rid, url, size = item["id"], item["download_url"], item["file_size"]
    first = web.get(url, headers={"Range": "bytes=0-9"})
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('"') and modified.endswith("GMT")
    for validator in (etag, modified):
        kept = web.get(url, headers={"Range": "bytes=10-19", "If-Range": validator})
        assert kept.status_code == 206 and kept.content == sim.file_bytes(rid, start=10, end=20)
    for stale in ('"not-it"', "W/" + etag, "Mon, 01 Jan 2001 00:00:00 GMT"):
        whole = web.get(url, headers={"Range": "bytes=10-19", "If-Range": stale})
        assert whole.status_code == 200 and len(whole.content) == size
    log = [r for r in sim.requests if r.kind == "file"]
    assert log[-1].if_range == "Mon, 01 Jan 2001 00:00:00 GMT" and log[-1].headers_sent["ETag"] == etag


def test_change_file_serves_other_bytes_under_the_same_url(sim):
    """change_file: same URL, same size, other bytes, new validators (unless stale_validators)."""
    item = uploaded(sim)
    rid, url = item["id"], item["download_url"]
    before = web.get(url)
    assert sim.change_file(rid) == 1 and sim.file_version(rid) == 1
    after = web.get(url)
    assert len(after.content) == len(before.content) and after.content != before.content
    assert after.content == sim.file_bytes(rid) == sim.file_bytes(rid, version=1)
    assert before.content == sim.file_bytes(rid, version=0)
    assert hashlib.sha256(after.content).hexdigest() == sim.expected_sha256(rid) != sim.expected_sha256(rid, version=0)
    assert after.headers["etag"] != before.headers["etag"]
    assert after.headers["last-modified"] != before.headers["last-modified"]
    sim.faults.set(stale_validators=True)
    lying = web.get(url)
    assert lying.content == after.content and lying.headers["etag"] == before.headers["etag"]
    sim.faults.set(validators="none")
    assert not {"etag", "last-modified"} & set(web.get(url).headers)


def test_change_on_drop_changes_the_file_after_the_cut(sim):
    item = uploaded(sim)
    sim.faults.set(drop_downloads=1, drop_after_bytes=1000, change_on_drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        web.get(item["download_url"])
    assert sim.file_version(item["id"]) == 1
    assert [r.faults for r in sim.requests if r.kind == "file"] == [["drop_downloads", "change_on_drop"]]


def test_framing_faults_seen_raw(sim):
    """chunked, end_early (a clean early end), wrong_content_length, extra_bytes, total_unknown."""
    item = uploaded(sim)
    rid, url, size = item["id"], item["download_url"], item["file_size"]
    sim.faults.set(chunked=True)
    chunked = web.get(url)
    assert chunked.headers["transfer-encoding"] == "chunked" and "content-length" not in chunked.headers
    assert chunked.content == sim.file_bytes(rid)

    sim.faults.set(chunked=False, end_early=1, end_early_after=1000)
    early = web.get(url)  # no error: the connection closes where a normal body would end
    assert early.content == sim.file_bytes(rid, end=1000) and "content-length" not in early.headers
    assert early.headers["connection"] == "close"

    sim.faults.set(wrong_content_length=-10)
    with httpx.Client(timeout=10) as fresh:  # the lying answer closes its connection
        short = fresh.get(url)
    assert short.headers["content-length"] == str(size - 10) and short.content == sim.file_bytes(rid, end=size - 10)

    sim.faults.set(wrong_content_length=0, chunked=True, extra_bytes=7, total_unknown=True)
    longer = web.get(url, headers={"Range": "bytes=0-"})
    assert longer.headers["content-range"] == f"bytes 0-{size - 1}/*" and len(longer.content) == size + 7
    assert [r.faults for r in sim.requests if r.kind == "file"][-1] == ["total_unknown", "chunked", "extra_bytes"]


def test_shift_ranges_answers_a_resume_from_elsewhere(sim):
    item = uploaded(sim)
    rid, url, size = item["id"], item["download_url"], item["file_size"]
    sim.faults.set(shift_ranges=1, range_shift=-100)
    assert web.get(url, headers={"Range": "bytes=0-9"}).headers["content-range"] == f"bytes 0-9/{size}"  # not a resume
    shifted = web.get(url, headers={"Range": "bytes=1000-1009"})
    assert shifted.headers["content-range"] == f"bytes 900-909/{size}"
    assert shifted.content == sim.file_bytes(rid, start=900, end=910)
    assert web.get(url, headers={"Range": "bytes=1000-1009"}).headers["content-range"] == f"bytes 1000-1009/{size}"


def test_gzip_bodies_and_a_slow_first_byte(sim):
    item = uploaded(sim)
    rid, url = item["id"], item["download_url"]
    sim.faults.set(gzip_bodies=True)
    with httpx.Client(timeout=10) as client:
        answer = client.get(url, headers={"Accept-Encoding": "identity", "Range": "bytes=5-"})
    assert answer.status_code == 200 and answer.headers["content-encoding"] == "gzip"
    assert answer.content == sim.file_bytes(rid)  # httpx decodes it: the whole file
    sim.faults.set(gzip_bodies=False, slow_first_byte=1, first_byte_seconds=1.0)
    with httpx.Client(timeout=0.2) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.get(url)
        assert impatient.get(url).status_code == 200


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


def test_add_recording_overrides(sim, http):
    raw = sim.add_recording(
        status="UPLOADED", size=4096, audio=True, output_file_name="../../etc/passwd",
        file_size="4096", invoked_time="not a date", custom_field={"x": 1},
    )  # fmt: skip
    detail = http.get(rec_url(sim, f"/{raw['id']}")).json()["data"]
    assert detail["output_file_name"] == "../../etc/passwd" and detail["file_size"] == "4096"
    assert detail["invoked_time"] == "not a date" and detail["custom_field"] == {"x": 1}
    assert len(web.get(detail["download_url"]).content) == 4096
    assert len(web.get(detail["audio_download_url"]).content) == 512

    disabled = sim.add_recording(bucket_enabled=False)
    assert http.get(rec_url(sim, f"/{disabled['id']}")).json()["data"]["download_url"] is None


def test_streams_fast_enough(sim):
    """A coarse guard against per-byte Python in the file path (it streams at >1 GB/s locally)."""
    raw = sim.add_recording(size=256 * 1024 * 1024)
    parts = urlsplit(sim.download_url(raw["id"]))
    conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
    buffer = memoryview(bytearray(1 << 20))
    started = time.perf_counter()
    conn.request("GET", f"{parts.path}?{parts.query}")
    answer = conn.getresponse()
    total = 0
    while chunk := answer.readinto(buffer):
        total += chunk
    conn.close()
    assert total == 256 * 1024 * 1024
    assert time.perf_counter() - started < 10


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_prints_a_source_block_and_stops_on_sigterm():
    code = (
        "import argparse, sys\n"
        "from pipeline import simulator\n"
        "parser = argparse.ArgumentParser()\n"
        "simulator.add_arguments(parser)\n"
        "sys.exit(simulator.run(parser.parse_args(sys.argv[1:])))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--recordings", "5", "--seed", "9", "--max-size", "128KiB"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        lines = [process.stdout.readline() for _ in range(5)]
        config = tomllib.loads("".join(lines))["source"]
        assert set(config) == {"base_url", "account_id", "app_id", "api_token"}
        url = f"{config['base_url']}/accounts/{config['account_id']}/realtime/kit/{config['app_id']}/recordings"
        answer = web.get(url, headers={"Authorization": f"Bearer {config['api_token']}"})
        assert answer.status_code == 200 and answer.json()["paging"]["total_count"] == 5
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()


def test_serve_checks_its_settings_calls_on_ready_and_stops_on_request():
    """serve() is what the CLI's `simulate` calls (no CLI imports): bad settings are one
    SimulateError line naming the option, on_ready gets the listening simulator, and setting
    `stop` ends it (off the main thread, where signals cannot)."""
    for settings, option in (({"port": 70000}, "--port"), ({"min_size": 10, "max_size": 5}, "--min-size"),
                             ({"url_lifetime": float("nan")}, "--url-lifetime"), ({"days": -1}, "--days")):
        with pytest.raises(SimulateError, match=option):
            serve(**settings)
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=serve, kwargs={"port": 0, "recordings": 3, "on_ready": ready.put, "stop": stop})
    thread.start()
    try:
        sim = ready.get(timeout=10)
        with httpx.Client(timeout=10) as client:
            answer = client.get(rec_url(sim), headers={"Authorization": f"Bearer {sim.token}"})
        assert answer.json()["paging"]["total_count"] == 3
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.ConnectError):
        client.get(rec_url(sim))
