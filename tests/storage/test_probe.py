"""The preflight probe per backend, where backends differ: retention as each bucket reports it,
write checks that store nothing on a bucket whose objects may not be removable, unreachable
servers, missing buckets and refused deletes. Every case runs against the backend's real server."""

from __future__ import annotations

import json
import uuid

import pytest

from storage.target import PROBE_PREFIX
from tests.servers.process import free_port
from tests.storage.files import make_target


def make(rig, prefix: str, **overrides):
    return make_target(rig, prefix, name="probe", **overrides)


def probe(rig, prefix: str, **overrides) -> dict:
    with make(rig, prefix, **overrides) as target:
        return {result.check: result for result in target.probe()}


def new_prefix() -> str:
    return f"probe/{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- S3 Object Lock


@pytest.fixture
def lock_bucket(rig_aws):
    """A bucket with Object Lock and a default retention, as a compliance archive has."""
    name = "rtk-probe-locked"
    rig_aws.server.ensure_bucket(name, object_lock=True)
    rig_aws.s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}}})
    return name


@pytest.mark.parametrize("retention", [{"retention_mode": "GOVERNANCE", "retention_days": 30}, {}],
                         ids=["target-asks-retention", "bucket-default-only"])
def test_s3_object_lock_bucket_is_reported_and_probed_without_storing_anything(rig_aws, lock_bucket, retention):
    """README "Preflight": on an Object Lock bucket every version it takes is kept (a default
    retention locks it even when the target asks for none), so the write check starts a
    multipart upload with the target's settings and aborts it: no version, no open upload."""
    prefix = new_prefix()
    results = probe(rig_aws, prefix, bucket=lock_bucket, **retention)
    assert results["retention"].status == "ok"
    assert results["retention"].detail == "Object Lock: enabled, default GOVERNANCE 30d"
    assert results["write"].status == "ok"
    assert "started and aborted" in results["write"].detail and "nothing was stored" in results["write"].detail
    s3 = rig_aws.s3
    assert "Versions" not in s3.list_object_versions(Bucket=lock_bucket, Prefix=prefix)
    assert "DeleteMarkers" not in s3.list_object_versions(Bucket=lock_bucket, Prefix=prefix)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=lock_bucket, Prefix=prefix)


def test_s3_retention_on_a_bucket_without_object_lock_fails_the_retention_check(rig_aws):
    """A retention_mode the bucket cannot honour would make every upload fail all night: the
    retention check fails and says what to do."""
    results = probe(rig_aws, new_prefix(), retention_mode="COMPLIANCE", retention_days=7)
    assert results["retention"].status == "fail"
    assert results["retention"].detail.startswith("Object Lock: not enabled; retention_mode needs Object Lock")


def test_s3_missing_bucket_fails_access_and_names_the_bucket(rig_aws):
    """A bucket name with a typo fails the first check, naming the bucket; nothing else is tried."""
    results = probe(rig_aws, new_prefix(), bucket="rtk-no-such-bucket")
    assert list(results) == ["access"]
    assert results["access"].status == "fail" and "'rtk-no-such-bucket' does not exist" in results["access"].detail


def test_s3_unreachable_endpoint_fails_access_as_retryable(rig_aws):
    """Nothing listening at the endpoint: a failed access check the pipeline may try again."""
    results = probe(rig_aws, new_prefix(), endpoint=f"http://127.0.0.1:{free_port()}")
    assert list(results) == ["access"]
    assert results["access"].status == "fail" and results["access"].retryable
    assert "connection to http://127.0.0.1:" in results["access"].detail


def test_s3_credentials_that_may_not_delete_leave_the_probe_object_and_say_so(rig_aws):
    """A write-only archive key (no s3:DeleteObject) is a sound set-up: the probe still passes,
    with a warning naming the object left under the reserved prefix."""
    iam = rig_aws.server.client("iam")
    user = f"no-delete-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="archive-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"], "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    prefix = new_prefix()
    with rig_aws.server.auth_enforced():
        results = probe(rig_aws, prefix, access_key=key["AccessKeyId"], secret=key["SecretAccessKey"])
    assert results["write"].status == "warn"
    assert "could not be removed" in results["write"].detail and "AccessDenied" in results["write"].detail
    left = rig_aws.list_keys(prefix)
    assert len(left) == 1 and left[0].startswith(f"{prefix}/{PROBE_PREFIX}/")


# --------------------------------------------------------------------------- Azure, GCS


def test_azure_retention_without_version_level_immutability_fails_and_stages_only_a_block(rig_azure):
    """Azurite has no version-level immutability: retention_mode there fails the retention
    check. The write check stages a block and never commits it: no blob appears."""
    before = rig_azure.everything()
    results = probe(rig_azure, new_prefix(), retention_mode="LOCKED", retention_days=1)
    assert results["retention"].status == "fail"
    assert "version-level immutability not enabled" in results["retention"].detail
    assert "retention_mode needs version-level immutability" in results["retention"].detail
    assert results["write"].status == "ok" and "staged and never committed" in results["write"].detail
    assert rig_azure.everything() == before


def test_azure_missing_container_fails_access(rig_azure):
    """A missing container fails the access check, naming it."""
    results = probe(rig_azure, new_prefix(), bucket="rtk-no-such-container")
    assert list(results) == ["access"] and results["access"].status == "fail"
    assert "rtk-no-such-container" in results["access"].detail


@pytest.mark.parametrize("server", ["rig_gcs", "rig_gcs_fake"])
def test_gcs_retention_without_object_retention_fails_and_writes_nothing(request, server):
    """Neither emulator has object retention enabled on its bucket: retention_mode fails the
    retention check. The write check opens a resumable upload session and cancels it."""
    rig = request.getfixturevalue(server)
    before = rig.everything()
    results = probe(rig, new_prefix(), retention_mode="UNLOCKED", retention_days=1)
    assert results["retention"].status == "fail"
    assert results["retention"].detail.startswith("no retention policy, object retention not enabled")
    assert results["write"].status == "ok" and "resumable upload session was opened" in results["write"].detail
    if server == "rig_gcs_fake":  # gcp-storage-emulator answers 501 to the cancellation
        assert "opened and cancelled" in results["write"].detail
    assert rig.everything() == before


def test_gcs_missing_bucket_fails(rig_gcs_fake):
    """A missing bucket fails the probe, naming it (GCS answers a bare 404 for the object)."""
    results = probe(rig_gcs_fake, new_prefix(), bucket="rtk-no-such-bucket")
    failed = [r for r in results.values() if r.status == "fail"]
    assert failed and "bucket rtk-no-such-bucket does not exist" in failed[0].detail


# --------------------------------------------------------------------------- folders


@pytest.mark.parametrize("server", ["rig_local", "rig_sftp"])
def test_read_only_retention_probe_writes_and_removes_a_probe_file(request, server):
    """READ_ONLY is a chmod after the rename: nothing is locked, so the probe writes its file
    (made read-only like any other) and removes it."""
    rig = request.getfixturevalue(server)
    prefix = new_prefix()
    results = probe(rig, prefix, retention_mode="READ_ONLY")
    assert [r.status for r in results.values()] == ["ok"] * len(results), results
    assert "READ_ONLY" in results["retention"].detail
    assert "removed" in results["write"].detail
    assert rig.list_keys(prefix) == []


def test_local_probe_reports_free_space(rig_local):
    """A local target reports the free space where files will land."""
    results = probe(rig_local, new_prefix())
    assert results["space"].status in ("ok", "warn") and "GB free under" in results["space"].detail


def test_sftp_unreachable_host_fails_access_as_retryable(rig_sftp):
    """An SFTP host with nothing listening: a failed access check that may pass later."""
    results = probe(rig_sftp, new_prefix(), port=free_port(), timeout=5)
    assert list(results) == ["access"]
    assert results["access"].status == "fail" and results["access"].retryable


def test_a_server_that_never_answers_costs_the_time_limit_not_more(rig_sftp):
    """`run` probes in bounded time: a host that accepts the connection and then says nothing
    (a hung NAS) gets one failed result when the limit is reached, while the other targets'
    results are there."""
    import socket
    import time

    from pipeline.archive.preflight import probe_targets

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = make(rig_sftp, new_prefix(), port=silent.getsockname()[1], timeout=60)
        fine = make(rig_sftp, new_prefix())
        started = time.monotonic()
        results = probe_targets({"hung": hung, "fine": fine}, seconds=3)
        assert time.monotonic() - started < 30  # far below the 60 s the SSH client would wait
    assert [(r.check, r.status) for r in results["hung"]] == [("access", "fail")]
    assert results["hung"][0].detail == "no answer within 3 s"
    assert [r.status for r in results["fine"]] == ["ok", "ok", "ok"]
    fine.close()


def test_a_probe_whose_read_back_fails_leaves_no_probe_object(rig_local, monkeypatch):
    """The write step stored its object, then reading it back failed (a timeout: a failure that
    may pass, so `run` probes again, with a new key): the step fails with that reason, and the
    object it stored is removed, so no retry leaves one behind. (A real local target; only its
    read back is made to fail.)"""
    from storage import RetryableStorageError
    from storage.local import LocalTarget

    def timed_out(self, full_key):
        raise RetryableStorageError("read timed out", target=self.name)
    monkeypatch.setattr(LocalTarget, "_open_read", timed_out)
    prefix = new_prefix()
    results = probe(rig_local, prefix)
    assert results["write"].status == "fail" and results["write"].retryable
    assert "read timed out" in results["write"].detail
    assert [key for key in rig_local.list_keys(prefix) if PROBE_PREFIX in key] == []
