"""The README's "What rtk-archive guarantees", one situation per rule, provoked for real
against the simulator and real local targets. Each docstring names the rule it proves; each
test fails when that rule is removed from the code (tests/mutation/guarantees checks it)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from pipeline import errors
from pipeline.archive import object_keys as keys
from pipeline.session import run_archive
from tests.helpers import expected_files, file_requests, ledger_rows, make_config


def media_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "manifest" not in p.name)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def audit_events(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def marker_offset(spool: Path) -> int:
    """The durable length a spool file's `.ok` marker records (a bare number, or a JSON record
    with `offset` in later versions)."""
    data = json.loads(spool.with_name(spool.name + ".ok").read_text())
    return data if isinstance(data, int) else data["offset"]


def set_marker_offset(spool: Path, offset: int) -> None:
    """Rewrite the marker's durable length, keeping whatever else the product wrote in it."""
    marker = spool.with_name(spool.name + ".ok")
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps(offset if isinstance(data, int) else {**data, "offset": offset}))


def first_byte(request) -> int:
    """Where a file request starts: 0 without Range (or with `bytes=0-`)."""
    return int(request.range.split("=")[1].split("-")[0]) if request.range else 0


class ProgressSink:
    """The run's progress hook, in both of its shapes: `advance(n)` per chunk, or
    `file(label, size)` whose `update(received, position, ...)` gives each file's position.
    Subclasses act on `seen(position)`: the bytes of the file in flight so far."""

    def __init__(self):
        self.received = 0

    def start(self, *_args, **_kwargs) -> None:
        pass

    def advance(self, n: int) -> None:
        self.received += n
        self.seen(self.received)

    def file(self, _label, _size):
        return self

    def update(self, _received: int, position: int, _announced=None) -> None:
        self.seen(position)

    def done(self, _archived: bool) -> None:
        pass

    def file_done(self) -> None:
        pass

    def close(self) -> None:
        pass

    def seen(self, position: int) -> None:
        raise NotImplementedError


def spool_path(tmp_path: Path, recording_id: str, kind: str = "video") -> Path:
    """Where the run keeps a file while it downloads it (pipeline/archive.py's naming)."""
    return tmp_path / "spool" / f"{keys.sanitise_component(recording_id, fallback='recording')}.{kind}.part"


class CorruptSpoolOnceReceived(ProgressSink):
    """The run's own progress sink, which, the moment the whole body has been received, flips
    one byte of the spool file on disk through a second file descriptor (or, with
    `append=True`, adds one at its end): the bytes the run hashed as they arrived and the
    bytes it then stores differ, as when the spool's disk corrupts data or another process
    writes into it. Nothing in the pipeline is replaced."""

    def __init__(self, spool: Path, size: int, offset: int, original: int, append: bool = False):
        super().__init__()
        self.spool, self.size, self.offset, self.original = spool, size, offset, original
        self.append = append
        self.fired = False

    def seen(self, position: int) -> None:
        if position >= self.size and not self.fired:
            fd = os.open(self.spool, os.O_WRONLY | (os.O_APPEND if self.append else 0))
            try:
                if self.append:
                    os.write(fd, b"\x00")
                else:
                    os.pwrite(fd, bytes([self.original ^ 0xFF]), self.offset)
            finally:
                os.close(fd)
            self.fired = True


def test_a_copy_that_differs_from_the_download_is_never_marked_archived(sim, tmp_path):
    """Rule: "Nothing is marked archived before it is verified at the target" (README, What
    rtk-archive guarantees): every copy is compared with the download after upload, and "a copy
    that does not match is reported and not marked". The local target stores bytes that differ
    from the ones the run downloaded and hashed (one byte flipped in the spool after the body
    arrived); the copy must fail verification, with its reason, and never be `archived`.
    Skipping verify_copy's result in archive.py `_store` turns this red. It also proves "A
    download is complete and unaltered. Bytes are hashed as they arrive": digests taken from
    the spool on disk instead would match the altered copy and archive it."""
    rec = sim.add_recording(size=300_000)
    offset = 1000
    original = sim.file_bytes(rec["id"], start=offset, end=offset + 1)[0]
    fault = CorruptSpoolOnceReceived(spool_path(tmp_path, rec["id"]), rec["file_size"], offset, original)
    config = make_config(tmp_path, sim, archive={"concurrency": 1})

    result = run_archive(config, command="test", progress=fault)

    assert fault.fired, "the spool was never altered: the test did not provoke its situation"
    stored = media_files(tmp_path / "nas")
    # The altered bytes really reached the target: this is the situation the rule is for.
    assert len(stored) == 1 and sha(stored[0]) != sim.expected_sha256(rec["id"])
    summary = result.summary
    assert (summary.archived, summary.failed, result.exit_code) == (0, 1, 1)
    assert len(summary.problems) == 1
    assert "does not match the download" in summary.problems[0] and "crc32c" in summary.problems[0]
    assert "not marked archived" in summary.problems[0]
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT kind, state, last_error FROM copies")
    assert copies == [{"kind": "video", "state": "failed", "last_error": copies[0]["last_error"]}]
    assert "does not match the download" in copies[0]["last_error"]
    files = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM files")
    recording = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM recordings")
    assert files == [{"state": "failed"}] and recording == [{"state": "failed"}]
    events = [e for e in audit_events(tmp_path) if e.get("recording_id") == rec["id"]]
    assert "verified" not in [e["action"] for e in events]
    failed = [e for e in events if e["action"] == "failed"]
    assert [(e["kind"], e["target"], e["key"], e["reason"]) for e in failed] == \
        [("video", "nas", str(stored[0].relative_to(tmp_path / "nas")), copies[0]["last_error"])]
    assert not any("manifest" in p.name for p in (tmp_path / "nas").rglob("*")), \
        "a manifest claims the recording is complete there"


def test_a_copy_of_another_size_than_the_download_is_refused_quoting_both_sizes(sim, tmp_path):
    """Rule: "Nothing is marked archived before it is verified at the target ... its size ...
    compared with the download's": the stored copy is one byte longer than what the run
    downloaded (the spool grew after the body arrived); it is refused, the reason quoting the
    copy's size and the download's, and nothing is marked archived."""
    rec = sim.add_recording(size=200_000)
    fault = CorruptSpoolOnceReceived(spool_path(tmp_path, rec["id"]), 200_000, 0, 0, append=True)

    result = run_archive(make_config(tmp_path, sim, archive={"concurrency": 1}), command="test", progress=fault)

    stored = media_files(tmp_path / "nas")
    assert fault.fired and stored[0].stat().st_size == 200_001
    assert (result.summary.archived, result.summary.failed) == (0, 1)
    uri = "file://" + quote(str(stored[0]))
    [problem] = result.summary.problems
    assert problem.startswith(f"recording {rec['id']} video -> nas: target 'nas': copy at {uri} does not match "
                              "the download: size ")
    assert "200001" in problem and "200000" in problem and "crc32c" in problem
    assert problem.endswith("; it was not marked archived")
    assert ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies") == [{"state": "failed"}]


def test_one_download_feeds_every_target_and_each_gets_each_file_exactly_once(sim, tmp_path):
    """Rule: "Every target gets every file, exactly once. One download feeds all targets."
    Three local targets, three recordings with audio: the file server serves each file once,
    whole, and each target holds each file once (its own inode), verified, attempted once."""
    recs = [sim.add_recording(size=120_000 + i, audio=True) for i in range(3)]
    targets = [{"name": f"t{i}", "type": "local", "path": str(tmp_path / f"t{i}")} for i in range(3)]
    result = run_archive(make_config(tmp_path, sim, targets=targets), command="test")
    expected = expected_files(sim)
    assert len(expected) == 6 and result.summary.archived == 6 and result.exit_code == 0

    served = Counter(tuple(r.path.split("/")[2:4]) for r in file_requests(sim))
    assert served == Counter({(rid, kind): 1 for rid, kind in expected})
    assert all(r.status in (200, 206) and first_byte(r) == 0 and r.bytes_sent == sim.file_size(*r.path.split("/")[2:4])
               for r in file_requests(sim))
    for i in range(3):
        stored = Counter(sha(p) for p in media_files(tmp_path / f"t{i}"))
        assert stored == Counter(expected.values()), f"t{i} must hold each file exactly once"
    inodes = [p.stat().st_ino for i in range(3) for p in media_files(tmp_path / f"t{i}")]
    assert len(set(inodes)) == len(inodes) == 18
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT target, state, attempts FROM copies WHERE kind != 'manifest'")
    assert sorted((c["target"], c["state"], c["attempts"]) for c in copies) == \
        sorted((f"t{i}", "archived", 1) for i in range(3) for _ in expected)
    assert {r["id"] for r in recs} == {rid for rid, _ in expected}


def test_an_identical_object_already_at_the_key_is_accepted_as_it_is(sim, tmp_path):
    """Rule: "An object that already sits under a key with different content is never
    overwritten; an identical one is accepted as is" (Every target gets every file, exactly
    once). A run whose ledger was lost meets its own earlier copies: it accepts and verifies
    them without rewriting them and without reporting a conflict."""
    for _ in range(2):
        sim.add_recording(size=80_000, audio=True)
    config = make_config(tmp_path, sim)
    assert run_archive(config, command="test").exit_code == 0
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in media_files(tmp_path / "nas")}
    assert len(before) == 4
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "audit.jsonl"):
        (tmp_path / name).unlink(missing_ok=True)

    again = run_archive(config, command="test")

    assert again.summary.problems == [] and again.exit_code == 0
    assert again.summary.archived == 4 and again.summary.failed == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in media_files(tmp_path / "nas")} == before
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies WHERE kind != 'manifest'")
    assert [c["state"] for c in copies] == ["archived"] * 4


def test_an_object_whose_bytes_differ_is_never_accepted_as_identical_whatever_its_metadata(sim, tmp_path):
    """Rule: "An object that already sits under a key with different content is never
    overwritten ...; an identical one is accepted as is" (Every target gets every file, exactly
    once). An earlier copy rotted in place (one byte flipped, same size) while its metadata
    still carries the file's SHA-256: the checksum the target computes from the bytes
    contradicts it, so it is refused as a different object (left untouched), never accepted."""
    sim.add_recording(size=50_000)
    config = make_config(tmp_path, sim)
    assert run_archive(config, command="test").exit_code == 0
    victim = media_files(tmp_path / "nas")[0]
    data = bytearray(victim.read_bytes())
    data[777] ^= 0xFF
    victim.write_bytes(bytes(data))  # same inode: the xattr with the old SHA-256 stays
    assert os.getxattr(victim, "user.rtk_sha256").decode() == sim.expected_sha256(victim.parent.name)
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "audit.jsonl"):
        (tmp_path / name).unlink(missing_ok=True)

    again = run_archive(config, command="test")

    assert (again.summary.archived, again.summary.failed, again.exit_code) == (0, 1, 1)
    rid, sha256 = victim.parent.name, sim.expected_sha256(victim.parent.name)
    assert again.summary.problems == [
        f"recording {rid} video -> nas: target 'nas': a different object already exists at "
        f"file://{quote(str(victim))} (size 50000, sha256 {sha256}); rtk-archive never overwrites: "
        "move it away or change key_template"]
    assert victim.read_bytes() == bytes(data)
    assert ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies") == [{"state": "failed"}]


def test_temporaries_a_killed_run_left_at_a_local_target_are_removed_by_the_next_run(sim, tmp_path, caplog):
    """Rule: "A killed run loses nothing ... temporaries a killed run leaves at local/SFTP
    targets are removed by the next run." A temporary as a run killed between its write and
    its link leaves it (hidden name with the partial marker) is gone after the next run; a
    file of someone else's that merely starts with a dot is left alone."""
    sim.add_recording(size=20_000)
    folder = tmp_path / "nas" / "2026" / "11" / "20" / "rec-killed"
    folder.mkdir(parents=True)
    leftover = folder / ".video-talk.mp4.rtk-partial-0123456789abcdef"
    leftover.write_bytes(b"half a file")
    second = folder / ".audio-talk.mp3.rtk-partial-fedcba9876543210"
    second.write_bytes(b"another half")
    bystander = folder / ".keep"
    bystander.write_bytes(b"not ours")

    targets = [{"name": "nas", "type": "local", "path": str(tmp_path / "nas")},
               {"name": "new", "type": "local", "path": str(tmp_path / "new")}]  # not created yet
    with caplog.at_level(logging.INFO, logger="rtk_archive"):
        result = run_archive(make_config(tmp_path, sim, targets=targets), command="test")

    assert result.exit_code == 0 and result.summary.archived == 1
    assert not leftover.exists() and not second.exists(), "the killed run's temporaries are still there"
    assert "removed 2 unfinished upload(s) or probe object(s) a previous run left at nas" in caplog.text
    assert "left at new" not in caplog.text  # nothing to sweep in a folder that did not exist
    assert bystander.read_bytes() == b"not ours"


class StopAfter(ProgressSink):
    """The run's own progress sink that sets the run's stop event (what SIGTERM does) once
    `limit` bytes have arrived: the in-process twin of tests/test_crash.py's SIGTERM test."""

    def __init__(self, stop: threading.Event, limit: int):
        super().__init__()
        self.stop, self.limit = stop, limit

    def seen(self, position: int) -> None:
        if position >= self.limit:
            self.stop.set()


def stop_mid_download(tmp_path: Path, sim, rec: dict, limit: int):
    """Run until `limit` bytes of the recording arrived, then stop as SIGTERM would: what a
    stopped (or killed after its last checkpoint) run leaves in the spool."""
    sim.faults.set(throttle_bps=2_000_000)
    stop = threading.Event()
    config = make_config(tmp_path, sim, archive={"concurrency": 1})
    result = run_archive(config, command="test", stop=stop, progress=StopAfter(stop, limit))
    sim.faults.set(throttle_bps=0)
    return config, result


def test_a_resumed_download_trusts_only_the_bytes_that_were_synced(sim, tmp_path):
    """Rules: "A killed run loses nothing ... Downloads are resumed from the spool, trusting
    only bytes that were fsynced" and "Broken transfers resume ... (the full SHA-256 is still
    computed over the whole file)". A stopped run left a spool file whose durable marker
    records what reached the disk; beyond it lie bytes that never did (here: 100 000 bytes of
    garbage, as a crash leaves them). The next run resumes at the marker's length, not the
    file's, and archives the true file, its SHA-256 (ledger, audit) that of the whole file."""
    rec = sim.add_recording(size=400_000)
    config, first = stop_mid_download(tmp_path, sim, rec, 150_000)
    assert first.exit_code == errors.EXIT_INTERRUPTED
    spool = spool_path(tmp_path, rec["id"])
    synced = marker_offset(spool)
    assert 0 < synced <= spool.stat().st_size < 400_000
    with open(spool, "ab") as fh:
        fh.write(b"\xff" * 100_000)
    before = len(file_requests(sim))

    result = run_archive(config, command="test")

    assert result.exit_code == 0 and result.summary.archived == 1
    [resumed] = file_requests(sim)[before:]
    # A resume, from the durable length at the latest (a version may ask for some bytes before
    # it again, to check they match): never from beyond it, where the garbage lies.
    assert 0 < first_byte(resumed) <= synced and resumed.bytes_sent == 400_000 - first_byte(resumed)
    stored = media_files(tmp_path / "nas")
    assert len(stored) == 1 and sha(stored[0]) == sim.expected_sha256(rec["id"])
    downloaded = [e for e in audit_events(tmp_path) if e["action"] == "downloaded"]
    assert downloaded[-1]["resumed"] >= 1 and downloaded[-1]["sha256"] == sim.expected_sha256(rec["id"])
    assert ledger_rows(tmp_path / "ledger.db", "SELECT size, sha256 FROM files") == \
        [{"size": 400_000, "sha256": sim.expected_sha256(rec["id"])}]


def test_a_stopped_download_keeps_its_bytes_durably_and_the_next_run_resumes_there(sim, tmp_path):
    """Rule: "Stopping is clean. SIGTERM/SIGINT: ... downloads stop (their bytes are kept for
    the next run) ...; exit code 130", with "A killed run loses nothing ... trusting only bytes
    that were fsynced": a run stopped mid-download syncs what arrived and records it as
    durable; the next run asks for exactly the rest and archives the true file."""
    rec = sim.add_recording(size=600_000)

    config, first = stop_mid_download(tmp_path, sim, rec, 100_000)

    assert first.exit_code == errors.EXIT_INTERRUPTED and first.summary.archived == 0
    spool = spool_path(tmp_path, rec["id"])
    assert 100_000 <= spool.stat().st_size < 600_000
    kept = marker_offset(spool)  # what is known to be on disk: the next run starts there
    assert 0 < kept <= spool.stat().st_size
    # "The ledger, audit log, lock and spool files are owner-only" (Secrets stay secret).
    assert [stat.S_IMODE(p.stat().st_mode) for p in sorted(spool.parent.iterdir())] == [0o600, 0o600]
    assert spool.read_bytes()[:kept] == sim.file_bytes(rec["id"], end=kept)
    before = len(file_requests(sim))

    second = run_archive(config, command="test")

    assert second.exit_code == 0 and second.summary.archived == 1
    [resumed] = file_requests(sim)[before:]
    assert 0 < first_byte(resumed) <= kept  # resumed (never from 0), from what was durable
    assert sha(media_files(tmp_path / "nas")[0]) == sim.expected_sha256(rec["id"])


def test_a_download_completed_before_the_kill_is_not_fetched_again(sim, tmp_path):
    """Rule: "A killed run loses nothing ... Downloads are resumed from the spool": a run killed
    after its download was complete and synced (before the upload) left the whole file in the
    spool. The next run asks only for what lies beyond it (the server answers 416 with the
    file's length; a version that re-checks the last bytes before it gets just those), and the
    spool is archived as it is, the file not downloaded again.
    (The spool is made from a stopped run's, completed with the true bytes and its marker's
    length set to the whole file, as the kill after the last checkpoint leaves it.)"""
    rec = sim.add_recording(size=120_000)
    config, first = stop_mid_download(tmp_path, sim, rec, 30_000)
    assert first.exit_code == errors.EXIT_INTERRUPTED
    spool = spool_path(tmp_path, rec["id"])
    spool.write_bytes(sim.file_bytes(rec["id"]))
    set_marker_offset(spool, 120_000)
    before = len(file_requests(sim))

    result = run_archive(config, command="test")

    assert result.exit_code == 0 and result.summary.archived == 1
    [request] = file_requests(sim)[before:]
    assert first_byte(request) > 0 and request.bytes_sent < 120_000  # not fetched again from byte 0
    assert sha(media_files(tmp_path / "nas")[0]) == sim.expected_sha256(rec["id"])


def test_a_spool_file_without_a_durable_marker_is_downloaded_again_from_zero(sim, tmp_path):
    """Rule: "Downloads are resumed from the spool, trusting only bytes that were fsynced"
    (A killed run loses nothing): a spool file with no marker has no byte known to be on disk,
    so none of it is trusted, however long it is."""
    rec = sim.add_recording(size=200_000)
    spool = spool_path(tmp_path, rec["id"])
    spool.parent.mkdir(mode=0o700)
    spool.write_bytes(b"\x00" * 120_000)  # never synced: could be anything

    result = run_archive(make_config(tmp_path, sim), command="test")

    assert result.exit_code == 0
    assert [first_byte(r) for r in file_requests(sim)] == [0]
    assert sha(media_files(tmp_path / "nas")[0]) == sim.expected_sha256(rec["id"])


def test_hostile_meeting_and_session_ids_stay_inside_the_target(sim, tmp_path):
    """Rule: "Hostile input is contained": API values used in the key (here a meeting id and a
    session id that try to climb out, with a template that puts them first) give a sanitised
    key inside the target's prefix, never a write outside it."""
    hostile = [
        {"meeting_id": "../../../outside", "session_id": "..", "output_file_name": "../x.mp4"},
        {"meeting_id": "/etc", "session_id": "a/../../b", "output_file_name": "..\\..\\y.mp4"},
        {"meeting_id": "\x00", "session_id": "\n", "output_file_name": "."},
    ]
    for values in hostile:
        sim.add_recording(size=10_000, **values)
    template = "{meeting_id}/{session_id}/{recording_id}/{kind}-{file_name}"
    root = tmp_path / "nas"
    config = make_config(tmp_path, sim, archive={"key_template": template})

    result = run_archive(config, command="test")

    assert result.exit_code == 0 and result.summary.archived == len(hostile)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    outside = [p for p in written if root not in p.parents
               and p.name not in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "ledger.db.lock", "audit.jsonl")]
    assert outside == []
    for path in media_files(root):
        parts = path.relative_to(root).parts
        assert len(parts) == 4 and not any(part in ("", ".", "..") or part.startswith(".") for part in parts)
    keys_in_ledger = [r["key"] for r in ledger_rows(tmp_path / "ledger.db", "SELECT key FROM copies")]
    assert keys_in_ledger and all(not k.startswith("/") and ".." not in k.split("/") for k in keys_in_ledger)


# --------------------------------------------------------------------------- keys (Hostile input is contained)

TEMPLATE = "{meeting_id}/{session_id}/{recording_id}/{kind}-{file_name}"


def render(template: str = TEMPLATE, **values) -> str:
    base = {"recording_id": "rec-1", "kind": "video", "file_name": "talk.mp4", "meeting_id": "m-1",
            "session_id": "s-1", "when": None}
    return keys.render_key(template, **{**base, **values})


@pytest.mark.parametrize("template", ["{recording_id}/../{kind}", "{recording_id}/a/../../{kind}",
                                      "../{recording_id}/{kind}", "{recording_id}/./../{kind}"])
def test_a_template_that_climbs_is_refused(template):
    """Rule: "Hostile input is contained ... a key never leaves the target's prefix": a key
    template with a `..` component gives no key at all, whatever the values."""
    with pytest.raises(ValueError, match="unsafe key"):
        render(template)


def test_empty_and_dot_components_of_a_template_are_dropped():
    """Rule: "Hostile input is contained": the only separators in a key are the template's,
    and empty or `.` components never reach a backend (which would refuse them or climb)."""
    assert render("/{recording_id}//./{kind}-{file_name}/") == "rec-1/video-talk.mp4"


def test_every_api_value_lands_in_its_own_component():
    """Rule: "Hostile input is contained": meeting id, session id, recording id and file name
    each fill their own component, sanitised (separators, control characters, leading dots)."""
    key = render(meeting_id="../m/x", session_id=".hidden", recording_id="r\x00/1", file_name="a\tb/c.mp4")
    assert key.split("/") == ["_m_x", "hidden", "r__1", "video-a_b_c.mp4"]
    assert render(meeting_id="m-9", session_id="s-9").split("/")[:2] == ["m-9", "s-9"]


@pytest.mark.parametrize("value", ["", "   ", "..", "...", "///", "/ /", "/./", "_ ._", "\x00\x01", "\n"])
def test_a_value_with_nothing_usable_left_gets_the_fallback(value):
    """Rule: "Hostile input is contained": a value made only of separators, dots, spaces or
    control characters is no name at all; the component gets the fallback, never `_`, `.` or
    an empty part."""
    assert keys.sanitise_component(value, fallback="fb") == "fb"


def test_sanitising_keeps_an_ordinary_name_as_it_is_and_collapses_runs_of_spaces():
    """Rule: "Hostile input is contained" without mangling honest names: an ordinary name
    keeps its letters (capital X too) and extension; only runs of spaces shrink to one."""
    assert keys.sanitise_component("Xray  report.mp4", fallback="fb") == "Xray report.mp4"
    assert keys.sanitise_component("X.mp4", fallback="fb") == "X.mp4"


@pytest.mark.parametrize("stem, ext", [("X" * 300, ".mp4"), ("a" * 175 + "." + "b" * 60, ".mp4"),
                                       ("a" * 174 + " . " + "b" * 60, ".mp3"), ("n" * 300, "")])
def test_a_long_name_is_cut_to_the_limit_without_a_trailing_dot_or_space(stem, ext):
    """Rule: "Hostile input is contained ... no leading dots, at most 180 bytes": a cut never
    leaves a name ending in a dot or space before its extension (`a..mp4`, `a .mp4`), keeps a
    prefix of the original, and an extension-less name is cut whole."""
    name = keys.sanitise_component(stem + ext, fallback="fb")
    assert len(name.encode()) <= keys.MAX_NAME_BYTES and name.endswith(ext)
    kept = name[: len(name) - len(ext)]
    assert stem.startswith(kept) and kept and kept[-1] not in " ."
    assert len(kept) >= keys.MAX_NAME_BYTES - len(ext) - 3  # cut at the limit, not far below it


def test_the_manifest_sits_beside_the_files_of_its_recording_whatever_the_values():
    """Compliance rule: "Manifest beside every archived recording at every target": with any
    template and hostile or missing values, the manifest's key has the same folder as the
    recording's files, and its name is that folder's recording component."""
    for values in ({"meeting_id": "m-1", "session_id": "s-1", "recording_id": "rec-1"},
                   {"meeting_id": None, "session_id": None, "recording_id": ".."},
                   {"meeting_id": "../x", "session_id": "\x00", "recording_id": None}):
        media = render(**values)
        manifest = keys.manifest_key(TEMPLATE, when=None, **values)
        assert manifest.rsplit("/", 1)[0] == media.rsplit("/", 1)[0]
        assert manifest.rsplit("/", 1)[1] == f"manifest-{media.split('/')[2]}.json"


def test_unknown_dates_and_names_get_readable_fallbacks():
    """Rule: "Hostile input is contained": without a date the key files under unknown/unknown/
    unknown, and a file without a usable name or id is still named (never `None`)."""
    date_key = render("{yyyy}/{mm}/{dd}/{recording_id}/{kind}-{file_name}")
    assert date_key.split("/")[:3] == ["unknown"] * 3
    assert render(file_name="..").endswith("/video-video.bin")
    assert keys.video_file_name(None, "..") == "recording.mp4"
    assert "None" not in render(recording_id=None, file_name=None, meeting_id=None, session_id=None)


def test_an_audio_file_never_takes_the_video_files_name():
    """Rule: "Every target gets every file, exactly once": the audio export whose URL has the
    video's extension (in any case) gets `.audio`, so it never shadows the video file."""
    assert keys.audio_file_name("talk.mp4", "https://x/y/a.MP4?sig=1") == "talk.audio"
    assert keys.audio_file_name("talk.MP4", "https://x/y/a.mp4?sig=1") == "talk.audio"


def test_a_recording_left_unarchived_past_its_deadline_is_reported_lost_not_left_pending(sim, tmp_path):
    """Rule: "Deadlines are surfaced ... A recording whose files can no longer be obtained is
    reported lost ..., never silently skipped." A run that is stopped before it reaches a
    recording whose 7 days are over (it was listed and recorded, never downloaded) still
    reports it lost at the end, and the ledger says so; it is not left `pending` for ever."""
    old = sim.add_recording(size=10_000, stopped_time=sim.now() - timedelta(days=8))
    stop = threading.Event()
    stop.set()  # as if SIGTERM came right after listing

    result = run_archive(make_config(tmp_path, sim), command="test", stop=stop)

    assert result.exit_code == errors.EXIT_INTERRUPTED and not file_requests(sim)
    assert result.summary.lost == 1
    assert any(old["id"] in p and "7-day retention ended" in p for p in result.summary.problems)
    row = ledger_rows(tmp_path / "ledger.db", "SELECT state, reason FROM recordings WHERE id=?", (old["id"],))[0]
    assert row["state"] == "lost" and "7-day retention" in row["reason"]


def test_a_copy_without_the_requested_write_once_protection_is_not_marked_archived(sim, tmp_path):
    """Rule: "Nothing is marked archived before it is verified at the target", write-once part
    (Compliance, Retention): a target configured READ_ONLY meets identical copies that an
    earlier configuration left writable (its ledger lost). They are the right bytes, but not
    protected as asked: verification refuses them, with the reason, and marks nothing."""
    sim.add_recording(size=30_000)
    plain = [{"name": "nas", "type": "local", "path": str(tmp_path / "nas")}]
    assert run_archive(make_config(tmp_path, sim, targets=plain), command="test").exit_code == 0
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "audit.jsonl"):
        (tmp_path / name).unlink(missing_ok=True)
    locked = [{**plain[0], "retention_mode": "READ_ONLY"}]

    result = run_archive(make_config(tmp_path, sim, targets=locked), command="test")

    assert (result.summary.archived, result.summary.failed, result.exit_code) == (0, 1, 1)
    assert "write-once protection missing: retention READ_ONLY (the object carries none)" in result.summary.problems[0]
    assert ledger_rows(tmp_path / "ledger.db", "SELECT state FROM copies") == [{"state": "failed"}]
    # Where the copy is new, it is protected, verified as such, and the ledger records it.
    fresh = run_archive(make_config(tmp_path / "fresh", sim, targets=[{**locked[0], "path": str(tmp_path / "ro")}]),
                        command="test")
    assert fresh.exit_code == 0
    assert ledger_rows(tmp_path / "fresh" / "ledger.db", "SELECT retention_mode, legal_hold FROM copies "
                       "WHERE kind != 'manifest'") == [{"retention_mode": "READ_ONLY", "legal_hold": 0}]
    assert [stat.S_IMODE(p.stat().st_mode) for p in media_files(tmp_path / "ro")] == [0o440]  # read-only, readable


def test_each_archived_copy_records_every_check_that_was_made(sim, tmp_path):
    """Rule: "Nothing is marked archived before it is verified at the target ... its size, the
    SHA-256 stored with it and every checksum the backend computed itself are compared": the
    ledger's record of a local copy names all three, the evidence an auditor reads."""
    sim.add_recording(size=30_000, audio=True)
    assert run_archive(make_config(tmp_path, sim), command="test").exit_code == 0
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT verified_by FROM copies WHERE kind != 'manifest'")
    assert [r["verified_by"] for r in rows] == ["size+sha256(metadata)+crc32c(backend)"] * 2


def test_the_audit_trail_records_each_copy_stored_then_verified_with_its_facts(sim, tmp_path):
    """Rules: "Nothing is marked archived before it is verified at the target" and Compliance,
    "Audit trail: an append-only JSON-lines log of every action (... stored, verified ...)":
    for every archived copy the log holds a `stored` event and, after it, a `verified` event,
    both naming the recording, kind, target and key; the verified one carries the file's
    SHA-256 and size and what was compared, as the ledger does."""
    sim.add_recording(size=40_000, audio=True)
    targets = [{"name": f"t{i}", "type": "local", "path": str(tmp_path / f"t{i}")} for i in range(2)]
    assert run_archive(make_config(tmp_path, sim, targets=targets), command="test").exit_code == 0
    events = audit_events(tmp_path)
    copies = ledger_rows(tmp_path / "ledger.db", "SELECT c.recording_id, c.kind, c.target, c.key, c.uri, "
                         "c.verified_by, f.sha256, f.size FROM copies c JOIN files f "
                         "ON f.recording_id = c.recording_id AND f.kind = c.kind")
    assert len(copies) == 4
    for copy in copies:  # the ledger keeps what was read back from the target
        assert copy["uri"] == "file://" + quote(str(tmp_path / copy["target"] / copy["key"]))
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT c.size, c.sha256, c.native, c.retention_mode, c.legal_hold, "
                       "f.size AS file_size, f.sha256 AS file_sha256, f.crc32c FROM copies c JOIN files f "
                       "ON f.recording_id = c.recording_id AND f.kind = c.kind")
    assert [(r["size"], r["sha256"], json.loads(r["native"]), r["retention_mode"], r["legal_hold"]) for r in rows] == \
        [(r["file_size"], r["file_sha256"], {"crc32c": r["crc32c"]}, None, 0) for r in rows]
    for copy in copies:
        where = {k: copy[k] for k in ("recording_id", "kind", "target", "key")}
        stored = [i for i, e in enumerate(events) if e["action"] == "stored" and where.items() <= e.items()]
        verified = [i for i, e in enumerate(events) if e["action"] == "verified" and where.items() <= e.items()]
        assert len(stored) == 1 and len(verified) == 1 and stored[0] < verified[0], where
        assert events[stored[0]]["uri"] == copy["uri"]
        downloaded = [e for e in events if e["action"] == "downloaded" and e["kind"] == copy["kind"]]
        assert [e["source_host"] for e in downloaded] == ["127.0.0.1"]  # where it came from, no query
        done = events[verified[0]]
        assert (done["sha256"], done["size"], done["verified_by"]) == (copy["sha256"], copy["size"], copy["verified_by"])


def test_the_ledger_records_each_run_with_its_counts_and_exit_code(sim, tmp_path):
    """Rule: "A killed run loses nothing ... the ledger commits each step durably" and what
    `status` reports from it: each finished run is in the ledger with the same counts the run
    printed, its exit code and the audit head; a file that failed counts its attempt."""
    sim.add_recording(size=20_000)
    broken = sim.add_recording(size=20_000)
    sim.add_recording(size=20_000, stopped_time=sim.now() - timedelta(days=8))
    sim.faults.set(size_mismatch={broken["id"]: 10})
    config = make_config(tmp_path, sim)

    results = [run_archive(config, command="test") for _ in range(2)]

    runs = ledger_rows(tmp_path / "ledger.db", "SELECT command, archived, failed, skipped, lost, at_risk, exit_code, "
                       "finished_at, audit_head FROM runs ORDER BY started_at")
    columns = ("archived", "failed", "skipped", "lost", "at_risk")
    assert [{k: r[k] for k in (*columns, "exit_code")} for r in runs] == \
        [{**{k: res.summary.counts()[k] for k in columns}, "exit_code": res.exit_code} for res in results]
    assert [(r["archived"], r["failed"], r["lost"]) for r in runs] == [(1, 1, 1), (0, 1, 0)]
    assert all(r["command"] == "test" and r["finished_at"] and len(r["audit_head"]) == 64 for r in runs)
    attempts = ledger_rows(tmp_path / "ledger.db", "SELECT attempts FROM files WHERE recording_id=?", (broken["id"],))
    assert attempts == [{"attempts": 2}]
