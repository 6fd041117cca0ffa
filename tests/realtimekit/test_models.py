"""The API models: a malformed field becomes None plus a note in `problems` (never an
exception), unknown fields are kept, secrets and presigned signatures never shown; and the
package face stays free of HTTP libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest

import pipeline
from pipeline.realtimekit import RealtimeKitClient, Recording, StorageConfig, redact_url


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
