"""Overlapped upload (issue 11): a large file is uploaded to every target that can while it is
still downloading, and committed only once the whole download is verified.

Proven against the real pipeline, the simulator's file server and real targets (a local folder
on another file system than the spool, OpenSSH's sshd, and every other target type whose
capabilities declare overlapped_upload): the upload really starts before the download ends
(seen at the target while the simulator has not yet served the whole file); a size mismatch
found at the end, or a file that changes mid-way, aborts it with nothing visible and no copy
recorded; a SIGKILL mid-upload leaves nothing visible and the next run archives the file; and
the crash tests of tests/test_crash.py, test_ranged.py's changes, drops and kill, and
test_trail.py's altered copy (never overlapped, never overwritten) hold with every file
overlapped (re-run below)."""

from __future__ import annotations

import hashlib
import json
import signal
import threading

import pytest

import tests.helpers as helpers
import tests.storage.conftest as storage_rigs
from pipeline.archive.growing import SpoolReader
from pipeline.session import run_archive
from storage import settings_model
from storage.target import PROBE_PREFIX
from tests.helpers import ledger_rows, make_config, write_config
from tests.mounts import fill, needs_root, tmpfs
from tests.test_crash import bytes_served, start_cli, wait_for
# The crash tests, collected here again: the autouse fixture below runs them with every file
# overlapped and the spool on its own file system (so local targets overlap too).
from tests.test_crash import (  # noqa: F401
    test_a_second_signal_leaves_at_once,
    test_sigkill_at_random_points_then_rerun_archives_everything_exactly_once,
    test_sigterm_stops_cleanly_and_the_next_run_finishes,
)
# A copy verify found altered is never overlapped: the finished file is compared with it first.
from tests.test_trail import test_a_recorded_alteration_stays_a_problem_until_a_deep_verify_clears_it  # noqa: F401
from tests.test_ranged import (  # noqa: F401
    test_a_file_that_changes_between_ranges_is_never_mixed,
    test_a_file_that_changes_size_between_ranges_fails_and_nothing_is_kept,
    test_dropped_and_short_ranges_are_continued_and_the_file_is_whole,
    test_sigkill_during_a_multi_range_download_then_resume_continues_each_range,
)

pytestmark = [pytest.mark.slow, needs_root]

MiB = 1 << 20
SIZE = 12 * MiB + 12_345  # (more than two of S3's smallest parts: the first is seen before the end)
OVERLAP = {"overlap_cutoff": 1, "streams_per_file": 1}  # every file, over one stream

# The storage rigs' server fixtures (tests/storage/conftest.py), usable here.
for _fixture in {*storage_rigs.RIG_FIXTURES.values(), "prefix"}:
    globals()[_fixture] = getattr(storage_rigs, _fixture)

# Every server of every target type that uploads while it downloads.
OVERLAPPING = [server for server, rig in storage_rigs.RIGS.items()
               if settings_model(rig.type).capabilities.overlapped_upload]


@pytest.fixture(autouse=True)
def spool_elsewhere(tmp_path):
    """The spool on a tmpfs of its own: a local target elsewhere cannot take the spool file by
    hard link (which costs nothing and is preferred), so it overlaps; every file overlaps."""
    original = helpers.config_dict

    def overlapped(*args, archive=None, **kwargs):
        return original(*args, archive={**OVERLAP, **(archive or {})}, **kwargs)

    helpers.config_dict = overlapped
    try:
        with tmpfs(tmp_path / "spool", size="128m"):
            yield
    finally:
        helpers.config_dict = original


@pytest.fixture(params=OVERLAPPING)
def overlapping_rig(request):
    return request.getfixturevalue(storage_rigs.RIG_FIXTURES[request.param])


# ---------------------------------------------------------------------- looking at a target


def upload_in_progress(rig, prefix: str) -> bool | None:
    """Does the target hold bytes of an upload not yet committed? None: no way to look. The
    start-up probe's object (and its temporary) is never the recording's upload: taken for one,
    the test killed the run during its probe, which left the probe object behind (seen in CI
    at SFTP and at Azure)."""
    if rig.type in ("local", "sftp"):
        where = (lambda key: rig.folder / key) if rig.type == "local" else rig.local_path
        return any(".rtk-partial-" in key and PROBE_PREFIX not in key and _size(where(key)) > 0
                   for key in _existing(rig.list_keys, prefix))
    if hasattr(rig, "s3"):  # S3 and its kin: a multipart upload with a part
        return any(rig.s3.list_parts(Bucket=rig.bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts")
                   for up in open_multipart_uploads(rig, prefix))
    if hasattr(rig, "container"):  # Azure: blocks staged, not committed (the listing shows committed blobs too)
        return any(PROBE_PREFIX not in blob.name
                   for blob in rig.container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"]))
    return None


def _size(path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a temporary renamed or removed since it was listed
        return 0


def _existing(list_keys, prefix: str) -> list[str]:
    try:
        return list_keys(prefix)
    except FileNotFoundError:  # a temporary renamed between the listing and the look
        return []


def open_multipart_uploads(rig, prefix: str) -> list[dict]:
    return rig.s3.list_multipart_uploads(Bucket=rig.bucket, Prefix=prefix).get("Uploads", [])


def assert_nothing_at(rig, prefix: str) -> None:
    """No object, no temporary and (at S3) no multipart upload left open under `prefix`."""
    assert rig.list_keys(prefix) == []
    if hasattr(rig, "s3"):
        assert open_multipart_uploads(rig, prefix) == []


def media_keys(rig, prefix: str) -> list[str]:
    return [key for key in rig.list_keys(prefix) if "manifest" not in key]


def committed(rig, prefix: str) -> list[str]:
    """The recording files under their final names (no temporary, no open multipart upload,
    which the S3 rig lists as leftovers too)."""
    if hasattr(rig, "s3"):
        keys = [item["Key"] for item in rig.s3.list_objects_v2(Bucket=rig.bucket, Prefix=prefix).get("Contents", [])]
    else:
        keys = rig.list_keys(prefix)
    return [key for key in keys if ".rtk-partial-" not in key and "manifest" not in key]


def started(rig, prefix: str, sim, rid: str, size: int, read_from_spool=None) -> None:
    """Wait until the target holds uploaded bytes while the simulator has served less than the
    whole file: the upload is running before the download ended (an ordering, not a time).
    Where an upload in progress cannot be seen at the target (a GCS resumable upload), the
    bytes uploads have read from the spool (`read_from_spool`, in-process runs) stand in; a
    run in another process is then only waited for until half the file was served."""
    seen = []

    def overlapping() -> bool:
        served = sum(r.bytes_sent for r in sim.requests if r.kind == "file" and rid in r.path)
        progress = upload_in_progress(rig, prefix)
        if progress is None:
            progress = read_from_spool() if read_from_spool is not None else served >= size // 2
        if served >= size:
            seen.append("downloaded")
        return bool(progress) and served < size and not seen

    wait_for(lambda: overlapping() or bool(seen), timeout=120)
    assert not seen, "the simulator served the whole file before any byte reached the target"


@pytest.fixture
def read_from_spool(monkeypatch):
    """Whether an upload has read bytes from the spool yet (seen from the reader's side)."""
    most = [0]
    original = SpoolReader._read_some

    def counting(self, view):
        count = original(self, view)
        most[0] = max(most[0], self.tell())
        return count

    monkeypatch.setattr(SpoolReader, "_read_some", counting)
    return lambda: most[0] > 0


def run_watched(tmp_path, sim, rig, prefix: str, rid: str, read_from_spool, **archive):
    """An in-process run to the rig's target, watched until its upload is seen running before
    the download ended (`started`); its result."""
    config = make_config(tmp_path, sim, targets=[{**rig.target_settings("t", prefix), **rig.small_parts()}],
                         archive=archive)
    outcome = {}
    run = threading.Thread(target=lambda: outcome.update(result=run_archive(config, command="test")))
    run.start()
    try:
        started(rig, prefix, sim, rid, SIZE, read_from_spool)
    finally:
        run.join(timeout=300)
    return outcome["result"]


# ---------------------------------------------------------------------- the tests


@pytest.mark.parametrize("streams", [1, 4], ids=["one-stream", "ranged"])
def test_the_upload_runs_while_the_file_downloads(sim, tmp_path, overlapping_rig, prefix, streams, read_from_spool):
    """The target holds bytes of the copy's upload while the simulator has not yet served the
    whole (throttled) file, downloaded over one stream or in ranges (then the uploads follow
    the hashed prefix); the copy is committed only after the download was recorded (audit:
    downloaded before stored and verified), and it is the file, byte for byte."""
    rig = overlapping_rig
    rec = sim.add_recording(size=SIZE)
    sim.faults.set(throttle_bps=(2 if streams == 1 else 1) * MiB)
    ranged = {"streams_per_file": streams, "ranged_cutoff": MiB} if streams > 1 else {}  # (else under the cutoff)
    result = run_watched(tmp_path, sim, rig, prefix, rec["id"], read_from_spool, **ranged)
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    [key] = [k for k in media_keys(rig, prefix) if "video-" in k]
    assert hashlib.sha256(rig.raw_read(key)).hexdigest() == sim.expected_sha256(rec["id"])
    assert not [k for k in rig.list_keys(prefix) if ".rtk-partial-" in k]
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    order = [e["action"] for e in events if e.get("recording_id") == rec["id"] and e.get("kind") == "video"]
    assert order.index("downloaded") < order.index("stored") < order.index("verified")
    if hasattr(rig, "s3"):
        assert open_multipart_uploads(rig, prefix) == []


@pytest.mark.parametrize("served", [-300_000, +300_000], ids=["fewer-bytes", "more-bytes"])
def test_a_size_mismatch_found_at_the_end_aborts_the_upload(sim, tmp_path, overlapping_rig, prefix, served,
                                                           read_from_spool):
    """The server hides the file's length (chunked, `Content-Range: .../*`) and sends fewer or
    more bytes than file_size: the mismatch is found only at the end, after the upload took
    what it could. The upload aborts: nothing at the target (no object, no temporary, no open
    multipart upload), no copy recorded, the download's failure recorded once with its
    reason. The next run, with an honest server, archives the file."""
    rig = overlapping_rig
    rec = sim.add_recording(size=SIZE)
    sim.faults.set(throttle_bps=3 * MiB, chunked=True, total_unknown=True, size_mismatch={rec["id"]: served})
    result = run_watched(tmp_path, sim, rig, prefix, rec["id"], read_from_spool)
    assert result.exit_code != 0 and result.summary.archived == 0
    assert_nothing_at(rig, prefix)
    assert ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies") == []
    [row] = ledger_rows(tmp_path / "ledger.db", "SELECT state, last_error AS error FROM files WHERE recording_id=?",
                        (rec["id"],))
    assert row["state"] == "failed" and "file_size" in row["error"]
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["action"] == "failed" and e.get("recording_id") == rec["id"]]
    assert len(failed) == 1 and "target" not in failed[0] and "file_size" in failed[0]["reason"]

    sim.faults.reset()
    config = make_config(tmp_path, sim, targets=[{**rig.target_settings("t", prefix), **rig.small_parts()}])
    again = run_archive(config, command="test")
    assert again.exit_code == 0 and again.summary.archived == 1, again.summary.problems
    [key] = [k for k in media_keys(rig, prefix) if "video-" in k]
    assert hashlib.sha256(rig.raw_read(key)).hexdigest() == sim.expected_sha256(rec["id"])


def test_a_file_that_changes_mid_download_is_stored_as_its_new_version(sim, tmp_path, overlapping_rig, prefix,
                                                                       caplog):
    """The connection drops after 3 MiB and the file changes meanwhile: the resume finds other
    bytes and the download starts again from byte 0. The upload that read the old bytes
    aborts (its partial copy never becomes visible); the copy stored, in the same run, is the
    new version, whole, and nothing else is left at the target."""
    rig = overlapping_rig
    rec = sim.add_recording(size=SIZE)
    old = sim.expected_sha256(rec["id"])
    sim.faults.set(throttle_bps=2 * MiB, drop_downloads=1, drop_after_bytes=3 * MiB, change_on_drop=True)
    config = make_config(tmp_path, sim, targets=[{**rig.target_settings("t", prefix), **rig.small_parts()}])
    with caplog.at_level("INFO", logger="rtk_archive.archive"):
        result = run_archive(config, command="test")
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    assert "the file changed while it was downloaded" in caplog.text  # the first upload aborted
    new = sim.expected_sha256(rec["id"])
    assert new != old
    [key] = [k for k in media_keys(rig, prefix) if "video-" in k]
    assert hashlib.sha256(rig.raw_read(key)).hexdigest() == new
    assert not [k for k in rig.list_keys(prefix) if ".rtk-partial-" in k]
    if hasattr(rig, "s3"):
        assert open_multipart_uploads(rig, prefix) == []
    [row] = ledger_rows(tmp_path / "ledger.db", "SELECT sha256 FROM files WHERE recording_id=?", (rec["id"],))
    assert row["sha256"] == new


def test_a_run_killed_during_an_overlapped_upload_leaves_nothing_visible(sim, tmp_path, overlapping_rig, prefix):
    """SIGKILL while the copy is being uploaded and the file is still downloading: no object
    under its final name (at most a marked temporary, or an open multipart upload at S3); the
    next run sweeps those, resumes the download and archives the file, whole, with no
    temporary and no open multipart upload left."""
    rig = overlapping_rig
    rec = sim.add_recording(size=SIZE)
    sim.faults.set(throttle_bps=2 * MiB)
    config = write_config(tmp_path, sim, targets=[{**rig.target_settings("t", prefix), **rig.small_parts()}])
    proc = start_cli("run", "--config", str(config))
    try:
        started(rig, prefix, sim, rec["id"], SIZE)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert committed(rig, prefix) == []
    assert ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies") == []

    sim.faults.set(throttle_bps=0)
    final = helpers.run_cli("run", "--config", str(config), "--json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["archived"] == 1
    [key] = [k for k in committed(rig, prefix) if "video-" in k]
    assert hashlib.sha256(rig.raw_read(key)).hexdigest() == sim.expected_sha256(rec["id"])
    assert not [k for k in rig.list_keys(prefix) if ".rtk-partial-" in k]
    if hasattr(rig, "s3"):
        assert open_multipart_uploads(rig, prefix) == []


def test_a_local_target_on_the_spools_file_system_still_takes_the_spool_file_by_link(sim, tmp_path):
    """Overlap on, but the local target shares the spool's file system: the finished spool
    file becomes the archived file (same inode, a hard link: no byte written twice), which no
    overlapped copy could beat."""
    rec = sim.add_recording(size=SIZE)
    sim.faults.set(throttle_bps=4 * MiB)
    spool, target = tmp_path / "spool" / "files", tmp_path / "spool" / "nas"  # (both on the spool's tmpfs)
    config = make_config(tmp_path, sim, targets=[{"name": "nas", "type": "local", "path": str(target)}],
                         archive={"spool_dir": str(spool)})
    inodes = set()
    outcome = {}
    run = threading.Thread(target=lambda: outcome.update(result=run_archive(config, command="test")))
    run.start()
    try:
        wait_for(lambda: inodes.update(p.stat().st_ino for p in spool.glob("*.part")) or bool(inodes))
    finally:
        run.join(timeout=300)
    assert outcome["result"].summary.archived == 1, outcome["result"].summary.problems
    [copy] = [p for p in target.rglob("video-*")]
    assert copy.stat().st_ino in inodes
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == sim.expected_sha256(rec["id"])


def test_a_target_failure_mid_upload_is_retried_with_the_finished_file(sim, tmp_path, caplog):
    """The target's file system fills up while the overlapped upload writes (a real full
    tmpfs): that upload fails with a failure that may pass, its temporary is removed, and the
    retry, once the file is downloaded (and room is made), stores the finished file: archived,
    whole, no copy failure recorded, no temporary left."""
    rec = sim.add_recording(size=SIZE)
    sim.faults.set(throttle_bps=2 * MiB)
    with tmpfs(tmp_path / "small", size="32m") as folder:
        config = make_config(tmp_path, sim, targets=[{"name": "nas", "type": "local", "path": str(folder / "nas")}])
        audit = tmp_path / "audit.jsonl"
        outcome = {}
        run = threading.Thread(target=lambda: outcome.update(result=run_archive(config, command="test")))
        with caplog.at_level("WARNING", logger="rtk_archive.store"):
            run.start()
            try:
                wait_for(lambda: any(_size(p) > 0 for p in folder.rglob(".*.rtk-partial-*")
                                     if PROBE_PREFIX not in p.parts), timeout=120)  # not the probe's own
                filler = fill(folder)  # the upload's next write fails: no space left
                wait_for(lambda: audit.exists() and '"action":"downloaded"' in audit.read_text(), timeout=120)
                filler.unlink()
            finally:
                run.join(timeout=300)
        result = outcome["result"]
        assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
        assert "no space left" in caplog.text and "trying again once the file is downloaded" in caplog.text
        [copy] = list((folder / "nas").rglob("video-*"))
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == sim.expected_sha256(rec["id"])
        assert not list(folder.rglob(".*.rtk-partial-*"))
        copies = ledger_rows(tmp_path / "ledger.db", "SELECT state, last_error FROM copies")
        assert copies and {c["state"] for c in copies} == {"archived"}
