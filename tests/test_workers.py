"""Many processes on one PostgreSQL ledger: `run`s cooperate instead of refusing each other,
a `worker` stops cleanly on SIGTERM with its leases given back, `status` shows the workers
alive, and three workers SIGKILLed and restarted at random still archive every file to every
target exactly once, verified, downloading each file in full at most once per claim."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from tests.helpers import cli_command, cli_env, config_dict, expected_files, run_cli, to_toml
from tests.servers.moto import moto_server  # noqa: F401 - the session's moto server, a fixture


def write_config(tmp_path: Path, sim, url: str, *, targets: list[dict] | None = None, **archive) -> Path:
    data = config_dict(tmp_path, sim, targets=targets, archive={"concurrency": 2, **archive})
    data["ledger"] = {"url": url}
    path = tmp_path / "config.toml"
    path.write_text(to_toml(data))
    return path


def start(*args: str, config: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cli_command(*args, "--config", str(config)), stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, env=cli_env())


def leases_held(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM leases WHERE worker_id IS NOT NULL").fetchone()[0]


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def full_downloads(sim) -> Counter:
    """(recording id, kind) -> file requests answered with the whole body: from byte 0 (the
    downloader asks `Range: bytes=0-` to learn the length), to the end, not cut."""
    counts: Counter = Counter()
    for request in sim.requests:
        if request.kind != "file" or request.method != "GET" or request.range not in (None, "bytes=0-") \
                or request.cut:
            continue
        _, rid, kind = request.path.strip("/").split("/")  # files/<id>/<kind>
        if sim.has_file(rid, kind) and request.bytes_sent >= len(sim.file_bytes(rid, kind)):
            counts[(rid, kind)] += 1
    return counts


def test_two_runs_on_a_shared_ledger_cooperate(sim, tmp_path, pg_url):
    """Two `run`s started together on one PostgreSQL ledger both finish with 0 (neither is
    refused with 3), every file is archived exactly once, and no lease is left."""
    for _ in range(8):
        sim.add_recording(size=60_000)
    config = write_config(tmp_path, sim, pg_url)
    procs = [start("run", "--json", config=config, log=tmp_path / f"run{i}.log") for i in range(2)]
    codes = [p.wait(timeout=240) for p in procs]
    assert codes == [0, 0], [(tmp_path / f"run{i}.log").read_text()[-3000:] for i in range(2)]
    stored = sorted(p.name for p in (tmp_path / "nas").rglob("video-*"))
    assert len(stored) == 8 and len(set(stored)) == 8
    assert leases_held(pg_url) == 0
    verify = run_cli("verify", "--json", "--config", str(config))
    assert verify.returncode == 0 and json.loads(verify.stdout)["copies_ok"] == 16


def test_a_worker_shows_in_status_and_stops_cleanly_on_sigterm(sim, tmp_path, pg_url):
    """A worker lists, claims and archives; `status` shows it alive with its host, pid, last
    heartbeat and what it works on; SIGTERM: exit 0, its leases given back, no worker alive;
    a second worker then finishes what was left."""
    for _ in range(6):
        sim.add_recording(size=400_000)
    sim.faults.throttle_bps = 400_000  # about a second per file: there is work in flight to see
    config = write_config(tmp_path, sim, pg_url)
    worker = start("worker", "--poll", "0.5", "--lease", "6", config=config, log=tmp_path / "w1.log")

    def working() -> bool:
        status = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
        return any(w["items"] for w in status.get("workers", []))

    wait_for(working, timeout=90, what="the worker to hold work")
    status = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    (alive,) = status["workers"]
    assert alive["pid"] == worker.pid and alive["host"] and alive["heartbeat_at"]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0, (tmp_path / "w1.log").read_text()[-3000:]
    assert leases_held(pg_url) == 0
    assert json.loads(run_cli("status", "--json", "--config", str(config)).stdout)["workers"] == []
    sim.faults.throttle_bps = 0
    second = start("worker", "--once", config=config, log=tmp_path / "w2.log")
    assert second.wait(timeout=180) == 0, (tmp_path / "w2.log").read_text()[-3000:]
    assert len(list((tmp_path / "nas").rglob("video-*"))) == 6


@pytest.mark.slow
def test_three_workers_killed_at_random_archive_every_file_once(sim, tmp_path, pg_url, moto_server):  # noqa: F811
    """~100 recordings, a local and an S3 target, three workers on one PostgreSQL ledger, one of
    those holding work SIGKILLed every few seconds and started again. Afterwards: every file at
    every target exactly once and verified, no lease held, the audit chain (one log, appended by
    every worker) verifies, the API was listed once per interval whatever the number of
    workers, a killed worker's work was taken over, and no file was downloaded in full more
    often than its recording was claimed."""
    rng = random.Random(13)
    for _ in range(100):
        sim.add_recording(size=rng.randrange(20_000, 200_000))
    sim.faults.throttle_bps = 500_000  # a file takes a moment: kills land mid-transfer
    moto_server.ensure_bucket("rtk-workers")
    prefix = f"w-{os.getpid()}-{rng.randrange(10**6)}"
    targets = [{"name": "nas", "type": "local", "path": str(tmp_path / "nas")},
               {"name": "s3", "type": "aws", "bucket": "rtk-workers", "region": "us-east-1",
                "endpoint": moto_server.endpoint, "path": prefix, "access_key": moto_server.access_key,
                "secret": moto_server.secret}]
    config = write_config(tmp_path, sim, pg_url, targets=targets)
    expected = expected_files(sim)
    args = ("worker", "--poll", "0.5", "--lease", "4", "--list-every", "30")
    workers = [start(*args, config=config, log=tmp_path / f"w{i}.log") for i in range(3)]
    kills = 0

    def archived() -> int:
        with psycopg.connect(pg_url) as conn:
            return conn.execute("SELECT count(*) FROM copies WHERE state='archived' AND kind != 'manifest'"
                                ).fetchone()[0]

    def holding() -> list[int]:
        """The workers (by index) that hold leases now: killing one of them leaves work behind."""
        with psycopg.connect(pg_url) as conn:
            ids = [r[0] for r in conn.execute("SELECT worker_id FROM leases WHERE worker_id IS NOT NULL")]
        return [i for i, proc in enumerate(workers) if any(f"-{proc.pid}-" in worker for worker in ids)]

    started = time.monotonic()
    deadline = started + 600
    try:
        wait_for(lambda: archived() > 0, timeout=120, what="the first archived copy")
        while archived() < 2 * len(expected) and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 2.0))
            busy = holding()
            if kills < 8 and busy:
                victim = rng.choice(busy)
                workers[victim].kill()
                workers[victim].wait()
                kills += 1
                workers[victim] = start(*args, config=config, log=tmp_path / f"w{victim}.log")
        assert archived() == 2 * len(expected), "not every copy was archived in time"
        # The last recordings' manifests are written and their leases given back; a worker killed
        # in the last seconds keeps its leases until they expire, then the others' next claim
        # releases them (a fixed wait lost this race in a run on a loaded machine).
        wait_for(lambda: leases_held(pg_url) == 0, timeout=120, what="every lease given back or released")
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=120) for proc in workers]
    assert codes == [0, 0, 0], [(tmp_path / f"w{i}.log").read_text()[-2000:] for i in range(3)]
    assert kills >= 3
    # One listing per 30 s across all workers, however many started (3 + the restarts).
    listings = [r for r in sim.requests if r.kind == "api" and r.method == "GET" and r.path.endswith("/recordings")
                and r.query.get("page_no", ["1"]) == ["1"]]
    assert 1 <= len(listings) <= (time.monotonic() - started) / 30 + 2, len(listings)

    # every file at every target exactly once, with the right bytes
    local = Counter((p.parent.name, p.name.split("-", 1)[0]) for p in (tmp_path / "nas").rglob("*")
                    if p.is_file() and not p.name.endswith(".json"))
    assert sorted(local) == sorted(expected) and set(local.values()) == {1}
    s3 = moto_server.client()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="rtk-workers", Prefix=prefix)
            for o in page.get("Contents", []) if not o["Key"].endswith(".json")]
    assert len(keys) == len(expected) == len(set(keys))
    verify = run_cli("verify", "--deep", "--json", "--config", str(config), timeout=600)
    assert verify.returncode == 0, verify.stdout[-3000:]
    assert json.loads(verify.stdout)["copies_problems"] == 0

    assert leases_held(pg_url) == 0
    audit = run_cli("audit", "verify", "--json", "--config", str(config))
    assert audit.returncode == 0 and json.loads(audit.stdout)["ok"], audit.stdout

    with psycopg.connect(pg_url) as conn:
        claims = dict(conn.execute("SELECT recording_id, claims FROM leases").fetchall())
    assert any(n > 1 for n in claims.values()), "no lease of a killed worker was ever taken over"
    downloads = full_downloads(sim)
    for (rid, kind) in expected:
        assert 1 <= downloads[(rid, kind)] <= claims.get(rid, 0), (rid, kind, downloads[(rid, kind)], claims.get(rid))


# --------------------------------------------------------------------------- leases, on the ledger itself


def _queue(url: str, name: str, lease: float):
    from pipeline.ledger import open_ledger
    from pipeline.ledger.leases import WorkQueue

    ledger = open_ledger(url, command="worker")
    queue = WorkQueue(ledger, name, lease_seconds=lease)
    queue.join("host", os.getpid(), "worker")
    return ledger, queue


def _listing(n: int):
    from pipeline.ledger import ListedFile, ListedRecording

    return [ListedRecording(id=f"r{i:03d}", meeting_id=None, meeting_title=None, session_id=None,
                            output_file_name=None, status="UPLOADED", invoked_time=None, stopped_time=None,
                            url_expiry=None, deadline=f"2026-12-{1 + i % 9:02d}T00:00:00.000Z", metadata={},
                            files=(ListedFile("video", "v.mp4", 10),)) for i in range(n)]


def test_claims_are_disjoint_and_a_successor_fences_out_an_expired_holder(pg_url):
    """Two workers claiming at once get disjoint recordings; a lease that expired is taken over
    with a larger token, and the first holder's late result is refused (LeaseLost) while the
    successor's is recorded; a finished recording is not claimed again."""
    from pipeline.ledger import StoredCopy
    from pipeline.ledger.postgres import LeaseLost

    first_ledger, first = _queue(pg_url, "a", lease=1.0)
    second_ledger, second = _queue(pg_url, "b", lease=30.0)
    try:
        first_ledger.record_listing(_listing(10))
        mine, theirs = first.claim(4), second.claim(4)
        assert len(mine) == len(theirs) == 4 and not set(mine) & set(theirs)
        rid = mine[0]
        time.sleep(1.5)  # the first worker's leases expire (no heartbeat)
        taken = second.claim(10, only=[rid])
        assert taken == [rid]
        copy = StoredCopy(key="k", uri="file:///k", size=10, sha256="0" * 64, native={}, version=None,
                          retention_mode=None, retention_until=None, legal_hold=False)
        with pytest.raises(LeaseLost, match=f"lease on recording {rid}"):
            first_ledger.record_copy(rid, "video", "nas", copy, verified_by="sha256")
        second_ledger.record_copy(rid, "video", "nas", copy, verified_by="sha256")
        second_ledger.set_recording_state(rid, "archived")
        second.release(rid)
        assert rid not in second.claim(100) + first.claim(100)
        assert second_ledger.copies(rid)[("video", "nas")].archived
    finally:
        for queue, ledger in ((first, first_ledger), (second, second_ledger)):
            queue.leave()
            ledger.close()
    assert leases_held(pg_url) == 0


def test_a_failed_recording_waits_before_it_is_claimed_again(pg_url):
    """A lease given back unfinished with a retry delay is not claimed again before it."""
    ledger, queue = _queue(pg_url, "a", lease=30.0)
    try:
        ledger.record_listing(_listing(1))
        (rid,) = queue.claim(5)
        queue.release(rid, retry_after=2.0)
        assert queue.claim(5) == []
        time.sleep(2.5)
        assert queue.claim(5) == [rid]
    finally:
        queue.leave()
        ledger.close()


def test_check_on_a_postgres_ledger(sim, tmp_path, postgres):
    """`check` connects to a PostgreSQL ledger: ok when reachable and migrated, one failing line
    (password hidden) when the schema is not there yet."""
    url = postgres.new_database()
    config = write_config(tmp_path, sim, url)
    failing = run_cli("check", "--json", "--config", str(config))
    ledger = next(c for c in json.loads(failing.stdout)["checks"] if c["name"] == "ledger")
    assert ledger["status"] == "fail" and "ledger migrate" in ledger["detail"] and "secret-pw" not in failing.stdout
    assert run_cli("ledger", "migrate", "--config", str(config)).returncode == 0
    passing = run_cli("check", "--json", "--config", str(config))
    ledger = next(c for c in json.loads(passing.stdout)["checks"] if c["name"] == "ledger")
    assert ledger["status"] == "ok", ledger


def test_a_worker_takes_recordings_a_webhook_announced(sim, tmp_path, pg_url):
    """`serve --workers 0` records announced recordings as hints on the shared ledger; a `worker`
    fetches each from the API and archives it, also one its own listing does not reach (older
    than `lookback_days`), and marks the hint done; one the API does not know is given up."""
    from datetime import datetime, timedelta, timezone

    from pipeline.ledger import open_ledger
    from tests.helpers import stored_digest

    rec = sim.add_recording(status="UPLOADED", invoked_time=datetime.now(timezone.utc) - timedelta(days=3))
    config = write_config(tmp_path, sim, pg_url, lookback_days=1)
    ledger = open_ledger(pg_url, command="serve")
    try:
        assert ledger.record_hint(rec["id"], "UPLOADED", "recording", received_at="2026-01-01T00:00:00.000Z",
                                  delivery_id="u1")
        ledger.record_hint("no-such-recording", "UPLOADED", "recording", received_at="2026-01-01T00:00:00.000Z",
                           delivery_id="u2")
    finally:
        ledger.close()
    result = run_cli("worker", "--once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])
    with psycopg.connect(pg_url) as conn:
        states = dict(conn.execute("SELECT subject_id, state FROM hints").fetchall())
        archived = conn.execute("SELECT state FROM recordings WHERE id=%s", (rec["id"],)).fetchone()[0]
    assert states == {rec["id"]: "done", "no-such-recording": "failed"}
    assert archived == "archived"
