"""The API client's other endpoints against the simulator: get one, start, active,
pause/resume/stop and track recordings, and which of them may be retried."""

from __future__ import annotations

import pytest

from pipeline.realtimekit import ApiError, ApiNotFound
from tests.realtimekit.helpers import api_requests


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
