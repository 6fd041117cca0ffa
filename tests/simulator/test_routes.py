"""The simulator's API routes over real HTTP on 127.0.0.1, seen from a plain HTTP client: shapes
and envelopes as in the API reference, filters, paging, and the generated data."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

import httpx

from pipeline.simulator import SHAPES, Simulator
from tests.simulator.helpers import (
    ACTIVE_KEYS,
    DETAIL_KEYS,
    ISO_MS_Z,
    LIST_ITEM_KEYS,
    MEETING_KEYS,
    list_all,
    rec_url,
    sim_detail,
    web,
)


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
