"""`repair` across backends, each against its real server: a copy gone or altered at one
target is put back from another target's copy (local -> S3, S3 -> SFTP, GCS -> Azure); an
altered copy is moved aside to quarantine/ first; one whose Object Lock retention forbids
removal is reported and left as it is."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import run_cli, write_config

LOCK_BUCKET = "rtk-repair-object-lock"


def video_key(rig, prefix: str) -> str:
    return next(k for k in rig.list_keys(prefix) if "video-" in k and "quarantine/" not in k)


@pytest.mark.parametrize(("source", "dest", "damage"), [
    ("local", "aws", "missing"),
    ("local", "aws", "altered"),
    ("aws", "sftp", "altered"),
    ("aws", "sftp", "missing"),
    ("gcs", "azure", "altered"),
])
def test_repair_from_another_backend(request, sim, tmp_path, prefix, source, dest, damage):
    """The damaged copy at `dest` (found by `verify --deep`) is put back from `source`, byte for
    byte, under the same key; an altered one is first copied aside to quarantine/<key> at `dest`
    (its bytes kept) and removed; afterwards `verify --deep` passes at both targets."""
    src_rig, dst_rig = request.getfixturevalue(f"rig_{source}"), request.getfixturevalue(f"rig_{dest}")
    sim.add_recording(size=150_000)
    config = write_config(tmp_path, sim, targets=[src_rig.target_settings("src", prefix),
                                                  dst_rig.target_settings("dst", prefix)])
    assert run_cli("run", "--config", str(config)).returncode == 0
    key = video_key(dst_rig, prefix)
    original = dst_rig.raw_read(key)
    altered = original[:1000] + b"tampered" + original[1008:]
    if damage == "missing":
        dst_rig.raw_delete(key)
    else:
        dst_rig.raw_write(key, altered)
    assert run_cli("verify", "--config", str(config), "--deep").returncode == 1

    result = run_cli("repair", "--config", str(config), "--json")
    payload = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    [item] = payload["items"]
    assert (item["outcome"], item["source"], item["target"]) == ("repaired", "src", "dst")
    assert dst_rig.raw_read(key) == original
    quarantined = [k for k in dst_rig.list_keys(prefix) if "quarantine/" in k]
    if damage == "altered":
        assert item["quarantined"] and len(quarantined) == 1
        assert dst_rig.raw_read(quarantined[0]) == altered
    else:
        assert item["quarantined"] is None and quarantined == []
    assert run_cli("verify", "--config", str(config), "--deep").returncode == 0


def test_a_retention_locked_altered_copy_is_reported_and_left(rig_aws, rig_local, sim, tmp_path, prefix):
    """An altered object under an S3 Object Lock retention cannot be moved aside: repair reports
    it (exit 1) and leaves it exactly as it is; nothing is copied to quarantine/."""
    rig_aws.server.ensure_bucket(LOCK_BUCKET, object_lock=True)
    locked = {**rig_aws.target_settings("locked", prefix), "bucket": LOCK_BUCKET,
              "retention_mode": "GOVERNANCE", "retention_days": 1}
    sim.add_recording(size=50_000)
    config = write_config(tmp_path, sim, targets=[rig_local.target_settings("nas", prefix), locked])
    assert run_cli("run", "--config", str(config)).returncode == 0
    s3 = rig_aws.s3
    listing = s3.list_objects_v2(Bucket=LOCK_BUCKET, Prefix=prefix)["Contents"]
    key = next(item["Key"] for item in listing if "video-" in item["Key"])
    head = s3.head_object(Bucket=LOCK_BUCKET, Key=key)
    altered = b"not the recording" * 100
    s3.put_object(Bucket=LOCK_BUCKET, Key=key, Body=altered, Metadata=head["Metadata"],
                  ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1))
    assert run_cli("verify", "--config", str(config)).returncode == 1

    result = run_cli("repair", "--config", str(config), "--json")
    payload = json.loads(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    [item] = payload["items"]
    assert item["outcome"] == "left" and "forbids moving it aside" in item["detail"]
    assert s3.get_object(Bucket=LOCK_BUCKET, Key=key)["Body"].read() == altered
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LOCK_BUCKET, Prefix=prefix).get("Contents", [])]
    assert not any("quarantine/" in k for k in keys)


def test_dry_run_stores_nothing_at_a_cloud_target(rig_gcs, rig_local, sim, tmp_path):
    """`repair --dry-run` re-reads the source and names it, and stores nothing at the target."""
    prefix = f"repair/{uuid.uuid4().hex[:12]}"
    sim.add_recording(size=40_000)
    config = write_config(tmp_path, sim, targets=[rig_local.target_settings("nas", prefix),
                                                  rig_gcs.target_settings("cloud", prefix)])
    assert run_cli("run", "--config", str(config)).returncode == 0
    key = video_key(rig_gcs, prefix)
    rig_gcs.raw_delete(key)
    before = rig_gcs.list_keys(prefix)
    result = run_cli("repair", "--config", str(config), "--dry-run", "--json")
    payload = json.loads(result.stdout)
    assert result.returncode == 0 and payload["would_repair"] == 1 and payload["items"][0]["source"] == "nas"
    assert rig_gcs.list_keys(prefix) == before
