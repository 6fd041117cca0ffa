"""The spool folder in a broken environment, made for real: a file where the folder should be,
a read-only mount, a full disk (a small tmpfs). A spool that cannot be used is one line and
exit 2 before anything is downloaded; a full disk fails only the file that cannot fit (with its
reason) while every other file goes on, and the runs row records the same exit code as the
command line. The mounts need root (CI runs as root); they are always unmounted. Files go to
an S3 bucket (the session's moto server): the spool's small file system is then the only one
that fills up."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipeline import errors
from pipeline.session import run_archive
from tests.helpers import file_requests, ledger_rows, make_config, run_cli, write_config
from tests.servers.moto import moto_server  # noqa: F401 - the session's moto server, a fixture

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs or a read-only bind mount needs root")

MiB = 1 << 20


@contextlib.contextmanager
def mounted(where: Path, *args: str):
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *args, str(where)], check=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)]).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def small_spool(tmp_path):
    """An 8 MiB tmpfs as the spool: a file system of its own that fills up."""
    with mounted(tmp_path / "spool", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs") as spool:
        yield spool


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only bind mount (root ignores permission bits; a mount it cannot)."""
    source = tmp_path / "source"
    source.mkdir()
    where = tmp_path / "ro"
    with mounted(where, "--bind", str(source)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], check=True)
        yield where


class Bucket:
    """An S3 target on moto, under a prefix of its own."""

    def __init__(self, server):
        self.server = server
        self.prefix = f"spool-env-{uuid.uuid4().hex[:8]}"
        server.ensure_bucket("rtk-spool-env")
        self.s3 = server.client()

    def targets(self) -> list[dict]:
        return [{"name": "bucket", "type": "aws", "bucket": "rtk-spool-env", "region": "us-east-1",
                 "endpoint": self.server.endpoint, "path": self.prefix,
                 "access_key": self.server.access_key, "secret": self.server.secret}]

    def digest(self, rid: str) -> str | None:
        """SHA-256 of the one video object stored for the recording, or None."""
        listing = self.s3.list_objects_v2(Bucket="rtk-spool-env", Prefix=self.prefix).get("Contents", [])
        keys = [o["Key"] for o in listing if rid in o["Key"] and "/video-" in o["Key"]]
        assert len(keys) <= 1, keys
        if not keys:
            return None
        body = self.s3.get_object(Bucket="rtk-spool-env", Key=keys[0])["Body"].read()
        return hashlib.sha256(body).hexdigest()


@pytest.fixture
def bucket(moto_server):  # noqa: F811 - the fixture imported above
    return Bucket(moto_server)


def runs(tmp_path: Path) -> list[dict]:
    return ledger_rows(tmp_path / "ledger.db", "SELECT exit_code, note FROM runs")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


def oldest_first(days_ago: float) -> dict:
    """A stopped_time that puts a recording first in the run's deadline order."""
    return {"stopped_time": datetime.now(timezone.utc) - timedelta(days=days_ago)}


# --------------------------------------------------------------------------- a spool that cannot be used


def test_a_spool_folder_under_a_regular_file_is_one_line_and_exit_2_before_any_download(sim, tmp_path):
    """spool_dir lies under a regular file: one line naming both, exit 2, no request made to
    the API or the file server, the file left alone, and the runs row says exit 2 too."""
    sim.add_recording(size=50_000)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    spool = blocker / "spool"
    config = write_config(tmp_path, sim, archive={"spool_dir": str(spool)})
    done = run_cli("run", "--config", str(config))
    assert done.returncode == errors.EXIT_USAGE, done.stderr
    assert error_lines(done.stderr) == [f"rtk-archive: error: spool folder {spool} cannot be used: {blocker} is a "
                                        "file, not a folder; nothing was downloaded"]
    assert not [r for r in sim.requests if r.kind in ("api", "file")]
    assert blocker.read_text() == "a file where a folder should be"
    assert [r["exit_code"] for r in runs(tmp_path)] == [errors.EXIT_USAGE] and "spool folder" in runs(tmp_path)[0]["note"]


@needs_root
@pytest.mark.parametrize("inside", [False, True], ids=["the-mount-itself", "a-folder-to-create-in-it"])
def test_a_spool_on_a_read_only_mount_is_one_line_and_exit_2_before_any_download(sim, tmp_path, read_only_dir, inside):
    """The spool folder on a read-only mount (existing, or to be created there): one line
    naming it and the reason, exit 2, nothing requested from the file server."""
    sim.add_recording(size=50_000)
    spool = read_only_dir / "spool" if inside else read_only_dir
    config = write_config(tmp_path, sim, archive={"spool_dir": str(spool)})
    done = run_cli("run", "--config", str(config), "--json")
    assert done.returncode == errors.EXIT_USAGE, done.stderr
    assert error_lines(done.stderr) == [f"rtk-archive: error: spool folder {spool} cannot be used: Read-only file "
                                        "system; nothing was downloaded"]
    assert not file_requests(sim)
    assert [r["exit_code"] for r in runs(tmp_path)] == [errors.EXIT_USAGE]


# --------------------------------------------------------------------------- a full disk


@needs_root
def test_a_file_larger_than_the_spool_fails_at_once_and_the_others_go_on(sim, tmp_path, small_spool, bucket):
    """A 12 MB file (file_size known) on an 8 MiB spool: refused as soon as its length is
    announced, before its body is read, with the reason; the two files after it are archived;
    exit 1 on the command line and in the runs row; the spool is left empty."""
    big = sim.add_recording(size=12_000_000, **oldest_first(6))
    small = [sim.add_recording(size=1_000_000) for _ in range(2)]
    config = write_config(tmp_path, sim, archive={"spool_dir": str(small_spool), "concurrency": 1},
                          targets=bucket.targets())
    done = run_cli("run", "--config", str(config), "--json")
    assert done.returncode == errors.EXIT_FAILURES and "Traceback" not in done.stderr, done.stderr
    out = json.loads(done.stdout)
    assert (out["archived"], out["failed"], out["exit_code"]) == (2, 1, errors.EXIT_FAILURES)
    assert out["bytes_downloaded"] == 2_000_000  # nothing of the big file's body was fetched
    assert len(out["problems"]) == 1
    assert f"no space left on the spool file system at {small_spool}: the file is 12000000 bytes" in out["problems"][0]
    for rec in small:
        assert bucket.digest(rec["id"]) == sim.expected_sha256(rec["id"])
    assert bucket.digest(big["id"]) is None
    assert [r["exit_code"] for r in runs(tmp_path)] == [errors.EXIT_FAILURES]
    assert list(small_spool.iterdir()) == []


@needs_root
def test_a_disk_filling_up_during_a_download_fails_that_file_alone(sim, tmp_path, small_spool, bucket):
    """A 12 MB file whose size nobody announces (no file_size, chunked, `bytes a-b/*`) fills
    the 8 MiB spool mid-download: that file fails with "no space left on the spool file system
    at <spool>", its partial bytes are removed (they would block the rest), the files after it
    are archived, and the run exits 1, the runs row too (not 4, not a traceback)."""
    big = sim.add_recording(size=12_000_000, file_size=None, **oldest_first(6))
    small = [sim.add_recording(size=1_000_000) for _ in range(2)]
    sim.faults.set(chunked=True, total_unknown=True)
    config = write_config(tmp_path, sim, archive={"spool_dir": str(small_spool), "concurrency": 1},
                          targets=bucket.targets())
    done = run_cli("run", "--config", str(config), "--json")
    assert done.returncode == errors.EXIT_FAILURES and "Traceback" not in done.stderr, done.stderr
    big_answers = [r for r in file_requests(sim) if big["id"] in r.path]
    assert big_answers[0].bytes_sent > 7 * MiB  # the disk really filled up during the transfer
    out = json.loads(done.stdout)
    assert (out["archived"], out["failed"]) == (2, 1)
    assert out["problems"] == [f"recording {big['id']} video: no space left on the spool file system at "
                               f"{small_spool}; not archived"]
    for rec in small:
        assert bucket.digest(rec["id"]) == sim.expected_sha256(rec["id"])
    row = ledger_rows(tmp_path / "ledger.db", "SELECT state, last_error FROM files WHERE recording_id=?", (big["id"],))
    assert row[0]["state"] == "failed" and "no space left on the spool file system" in row[0]["last_error"]
    assert [r["exit_code"] for r in runs(tmp_path)] == [errors.EXIT_FAILURES]


@needs_root
def test_downloads_sharing_a_full_spool_take_turns_and_all_finish(sim, tmp_path, small_spool, bucket, caplog):
    """Three 3.5 MB files downloaded at once on an 8 MiB spool: any two fit, three do not. When
    the disk fills, the download holding the most keeps its bytes, the others give theirs back
    and start again when space is free: all three are archived, none waits on another forever."""
    recs = [sim.add_recording(size=3_500_000) for _ in range(3)]
    sim.faults.set(throttle_bps=2_000_000)  # all three in flight together
    config = make_config(tmp_path, sim, archive={"spool_dir": str(small_spool), "concurrency": 3},
                         targets=bucket.targets())
    with caplog.at_level(logging.WARNING, logger="rtk_archive.download"):
        result = run_archive(config, command="test")
    assert "no space left on the spool file system" in caplog.text  # the disk really filled up
    assert result.exit_code == 0 and result.summary.archived == 3, result.summary.problems
    for rec in recs:
        assert bucket.digest(rec["id"]) == sim.expected_sha256(rec["id"])


@needs_root
def test_a_partial_download_an_earlier_run_left_never_blocks_the_next_run(sim, tmp_path, small_spool, bucket,
                                                                         caplog):
    """A killed run left 6 MB of another recording's partial download in the 8 MiB spool; this
    run's 4 MB file does not fit beside it. The leftover is only a head start: it is removed to
    make room, and the file is archived."""
    rec = sim.add_recording(size=4_000_000)
    leftover = small_spool / "some-other-recording.video.part"
    leftover.write_bytes(b"\0" * 6_000_000)
    leftover.with_name(leftover.name + ".ok").write_text('{"offset": 6000000, "validator": ["etag", "\\"x\\""]}')
    config = make_config(tmp_path, sim, archive={"spool_dir": str(small_spool)}, targets=bucket.targets())
    with caplog.at_level(logging.WARNING, logger="rtk_archive.download"):
        result = run_archive(config, command="test")
    assert "removed 1 partial download(s) an earlier run left" in caplog.text
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    assert bucket.digest(rec["id"]) == sim.expected_sha256(rec["id"])
    assert not leftover.exists()


def test_a_spool_file_removed_while_the_space_is_surveyed_is_not_a_write_failure(tmp_path, monkeypatch):
    """Downloads finish (and remove their spool files) while another download surveys the spool's
    space: a file listed by the folder scan and gone by the time it is looked at is simply not
    counted. (It used to raise FileNotFoundError, which the survey's caller reported as "the
    spool file cannot be written" and failed a healthy download, about one run in six.)"""
    from pipeline.archive import spool as spool_module

    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "finishing.video.part").write_bytes(b"x" * 100)
    (folder / "staying.video.part").write_bytes(b"y" * 50)
    real_scandir = os.scandir

    def scandir_then_finish(path):
        entries = list(real_scandir(path))  # listed now ...
        (folder / "finishing.video.part").unlink()  # ... then that download finishes
        return contextlib.nullcontext(entries)

    monkeypatch.setattr(spool_module.os, "scandir", scandir_then_finish)
    room = spool_module.SpoolSpace(folder).survey(folder / "mine.video.part")
    assert room.leftovers == {folder / "staying.video.part": 50}
    assert room.in_flight == {}
